-- Claims up to $1 undispatched outbox rows, creates one pending delivery per
-- matching endpoint that it does not send to at once (below; due after $2
-- seconds; parked at 'infinity' while the endpoint is paused, so a pause
-- loses nothing) and marks the rows
-- dispatched. One statement, one short transaction. Index:
-- outbox_undispatched_idx.
--
-- First attempts that this relay has room to send right away come back from
-- this statement as requests, with no delivery row: the relay writes each
-- delivery with its outcome. A dispatch batch row, leased to the relay ($3
-- seconds, claim token $4), stands for them until then: a first attempt
-- costs no claim, and its delivery one insert. The room is
-- $8 request slots in all, at most the free slots per endpoint ($5 endpoint
-- ids with $6 free slots; $7 for any other endpoint), as in a claim. The
-- rest are created as deliveries for any relay to claim; only then are the
-- deliverers woken.
--
-- Returns one row of counts, with the columns of one first attempt's
-- request; one more row per further first attempt.
with busy as (
    select * from unnest($5::uuid[], $6::int[]) as b(endpoint_id, free)
),
locked as (
    select o.id, o.event_id, o.event_type, o.payload, o.tenant, o.occurred_at, o.previous, o.actor,
           o.ordering_key
    from postbox.outbox o
    where o.dispatched_at is null
    order by o.id
    limit $1
    for no key update skip locked
),
-- Keys of which an earlier event is still undispatched and not ours: another
-- relay holds it (skipped above). Our events of such a key wait for a later
-- pass, so that one key's deliveries are always created in outbox order.
-- (Rows locked here stay undispatched and locked until this commits.)
deferred_keys as (
    select k.ordering_key
    from (select l.ordering_key, max(l.id) as last_id
          from locked l
          where l.ordering_key is not null
          group by l.ordering_key) k
    where exists (
        select 1
        from postbox.outbox o
        where o.ordering_key = k.ordering_key
          and o.dispatched_at is null
          and o.id < k.last_id
          and o.id not in (select l.id from locked l))
),
batch as (
    select l.*
    from locked l
    where l.ordering_key is null
       or l.ordering_key not in (select dk.ordering_key from deferred_keys dk)
),
marked as (
    update postbox.outbox o
    set dispatched_at = now()
    from batch
    where o.id = batch.id
    returning 1
),
-- The event types in the batch, each with every pattern that matches it.
-- Materialized, so that the patterns are computed once per type, not per
-- endpoint they are compared with.
types as materialized (
    select d.event_type, postbox.patterns_matching(d.event_type) as patterns
    from (select distinct batch.event_type from batch) d
),
-- The endpoints that want each of those types, paused ones too (their
-- deliveries wait, parked): once per type, not per event, and by array
-- overlap rather than a function call per endpoint.
subscribed as (
    select t.event_type, e.id, e.tenant, e.filter, e.rate_limit
    from types t
    join postbox.endpoints e
      on e.event_types && t.patterns
),
-- Endpoints for every tenant, and endpoints for the event's tenant: two
-- equality joins, so many tenants' endpoints cost a hash lookup per event.
wanted as (
    select batch.id as outbox_id, batch.event_id, batch.ordering_key, s.id as endpoint_id, s.rate_limit
    from batch
    join subscribed s on s.event_type = batch.event_type and s.tenant is null
    where s.filter is null or batch.payload @> s.filter
    union all
    select batch.id, batch.event_id, batch.ordering_key, s.id, s.rate_limit
    from batch
    join subscribed s on s.event_type = batch.event_type and s.tenant = batch.tenant
    where s.filter is null or batch.payload @> s.filter
),
matched as (
    select w.*, row_number() over (partition by w.endpoint_id order by w.outbox_id) as endpoint_rank
    from wanted w
),
-- Paused endpoints among them, as last committed and locked (FOR SHARE): a
-- resume waits for this pass, and its trigger then finds these deliveries
-- and makes them due; a resume that committed first is seen here.
paused as materialized (
    select e.id
    from postbox.endpoints e
    where not e.enabled
      and e.id in (select m.endpoint_id from matched m)
    for share of e
),
-- Within this endpoint's free slots, then within the room in all, in outbox
-- order. Nothing is leased while first attempts wait ($2 > 0). Keyed
-- deliveries are created held; the insert's trigger makes each queue's head
-- due, and a claim takes it. Deliveries to rate-limited endpoints are left
-- to a claim too, which takes their permits.
fitting as (
    select m.*,
           m.endpoint_id in (select p.id from paused p) as parked,
           $2::float8 = 0 and m.endpoint_rank <= coalesce(b.free, $7::int)
               and m.ordering_key is null
               and m.rate_limit is null
               and m.endpoint_id not in (select p.id from paused p) as fits
    from matched m
    left join busy b on b.endpoint_id = m.endpoint_id
),
chosen as (
    select f.*,
           f.fits and sum(f.fits::int) over (order by f.outbox_id, f.endpoint_id) <= $8::int as leased
    from fitting f
),
-- First attempts this relay sends at once: no delivery row until their
-- outcome is recorded (one insert then, with it); the dispatch batch row
-- stands for them meanwhile. Only pairs with no delivery yet: an event
-- dispatched again after its batch's lease ran out keeps the outcomes
-- recorded before that.
direct as materialized (
    select c.outbox_id, c.event_id, c.endpoint_id, gen_random_uuid() as delivery_id
    from chosen c
    where c.leased
      and not exists (select 1 from postbox.deliveries d
                      where d.event_id = c.event_id and d.endpoint_id = c.endpoint_id)
),
in_flight as (
    insert into postbox.dispatch_batches (lease_token, leased_until, outbox_ids, endpoint_ids, remaining)
    select $4, now() + make_interval(secs => $3::float8),
           array_agg(d.outbox_id order by d.outbox_id, d.endpoint_id),
           array_agg(d.endpoint_id order by d.outbox_id, d.endpoint_id),
           count(*)
    from direct d
    having count(*) > 0
    returning 1
),
created as (
    insert into postbox.deliveries (event_id, endpoint_id, next_attempt_at, ordering_key, outbox_id, held)
    select c.event_id, c.endpoint_id,
           case when c.parked or c.ordering_key is not null then 'infinity'
                else now() + make_interval(secs => $2::float8) end,
           c.ordering_key, c.outbox_id, c.ordering_key is not null
    from chosen c
    where not c.leased
    order by c.outbox_id
    on conflict on constraint deliveries_event_endpoint_key do nothing
    returning next_attempt_at < 'infinity' as due, held
),
counts as materialized (
    select (select count(*) from marked) as events,
           (select count(*) from created) + (select count(*) from direct) as deliveries,
           (select count(*) from created where due or held) as unleased,
           (select count(*) from locked) - (select count(*) from batch) as deferred
),
-- No caller reads `woke`: the CTE is there for its NOTIFY, which runs because
-- a CTE with a volatile call is always evaluated in full.
woken as (
    select counts.*,
           case when counts.unleased > 0
                then (select true from pg_notify('postbox', 'deliveries'))
           end as woke
    from counts
)
select w.events, w.deliveries, w.unleased, w.deferred,
       c.delivery_id as id,
       c.endpoint_id,
       1 as attempt_number,
       c.outbox_id,
       b.event_id,
       b.event_type,
       postbox.rfc3339(b.occurred_at) as occurred_at,
       -- Bigger than the relay sends ($9 bytes): not loaded, and why.
       case when body.bytes <= $9
            then body.payload end as payload,
       case when body.bytes <= $9
            then body.previous end as previous,
       case when body.bytes <= $9
            then body.actor end as actor,
       postbox.too_big_to_send(body.bytes, $9)
           as unsendable,
       e.url,
       postbox.signing_secrets(e) as secrets,
       e.headers
from woken w
left join direct c on true
left join batch b on b.id = c.outbox_id
left join lateral (select t.*, postbox.request_bytes(b.event_type, t.payload, t.previous, t.actor) as bytes
                   from (select b.payload::text as payload, b.previous::text as previous, b.actor::text as actor) t
                   offset 0) body on true -- computed once per row, not per reference (and planned once)
left join postbox.endpoints e on e.id = c.endpoint_id
