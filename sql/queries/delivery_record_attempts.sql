-- Records a batch of finished attempts (parallel arrays, one element per
-- attempt) and moves each delivery to its next state, but only where the claim
-- token still matches: a relay whose lease ran out changes nothing. First
-- attempts sent straight from the outbox (an outbox_id, and their dispatch
-- batch's token) write their delivery here.
-- Then updates endpoint health, writing only on a change: a success clears
-- failing_since, a first failure sets it, and an endpoint is disabled when a
-- receiver answers 410 Gone ($13) or every attempt has failed for longer than
-- $14 seconds (0 = never). Returns the number of attempts recorded and the
-- endpoints disabled with their reasons. Index: deliveries_pkey, endpoints_pkey.
with result as (
    select *
    from unnest($1::uuid[], $2::uuid[], $3::int[], $4::float8[], $5::int[], $6::text[],
                $7::int[], $8::text[], $9::text[], $10::text[], $11::text[], $12::float8[], $13::bool[],
                $15::bool[], $16::uuid[], $17::uuid[], $18::int8[])
         as r(delivery_id, lease_token, attempt_number, started_at, duration_ms, request_headers,
              response_status, response_headers, response_body, error, status, retry_in, gone, operational,
              event_id, endpoint_id, outbox_id)
),
-- Claimed deliveries (no outbox_id): moved on, where the claim is still theirs.
updated as (
    update postbox.deliveries d
    set status = r.status,
        attempt_count = r.attempt_number,
        next_attempt_at = case when r.status <> 'pending' then null
                               when e.enabled then now() + make_interval(secs => r.retry_in)
                               else 'infinity' end,
        lease_token = null,
        leased_until = null,
        last_error = case when r.status <> 'succeeded'
                          then coalesce(r.error, 'HTTP ' || r.response_status) end,
        updated_at = now()
    from result r, postbox.endpoints e
    where r.outbox_id is null
      and d.id = r.delivery_id
      and d.lease_token = r.lease_token
      and e.id = d.endpoint_id
    returning d.id, d.endpoint_id, d.event_id, d.ordering_key is not null and d.status <> 'pending' as ended_in_order
),
-- First attempts sent straight from the outbox: each delivery is written now,
-- with its outcome, while their dispatch batch is still theirs (once its
-- lease ran out its events were dispatched again, and these outcomes are
-- stale). Never keyed: keyed deliveries are always claimed. A delivery that
-- appeared meanwhile and was never attempted (a replay while this request
-- was out) takes this outcome instead of being sent again.
inserted as (
    insert into postbox.deliveries as d (id, event_id, endpoint_id, outbox_id, status, attempt_count,
                                         next_attempt_at, last_error)
    select distinct on (r.event_id, r.endpoint_id)
           r.delivery_id, r.event_id, r.endpoint_id, r.outbox_id, r.status, r.attempt_number,
           case when r.status <> 'pending' then null
                when e.enabled then now() + make_interval(secs => r.retry_in)
                else 'infinity' end,
           case when r.status <> 'succeeded' then coalesce(r.error, 'HTTP ' || r.response_status) end
    from result r
    join postbox.endpoints e on e.id = r.endpoint_id
    where r.outbox_id is not null
      and exists (select 1 from postbox.dispatch_batches b where b.lease_token = r.lease_token)
    order by r.event_id, r.endpoint_id, r.started_at
    on conflict on constraint deliveries_event_endpoint_key do update
        set status = excluded.status,
            attempt_count = excluded.attempt_count,
            next_attempt_at = excluded.next_attempt_at,
            last_error = excluded.last_error,
            updated_at = now()
        where d.status = 'pending' and d.attempt_count = 0 and d.lease_token is null and not d.held
    returning d.id, d.endpoint_id, d.event_id, false as ended_in_order
),
-- The dispatch batches of these first attempts, counted down by the
-- outcomes written here (in this statement: a write a crash loses loses
-- its count-down with it). A batch whose every outcome is written is done.
written_per_batch as (
    select b.lease_token, b.remaining, count(*) as written
    from (select distinct r.lease_token, r.event_id, r.endpoint_id
          from result r
          join inserted i on i.event_id = r.event_id and i.endpoint_id = r.endpoint_id
          where r.outbox_id is not null) w
    join postbox.dispatch_batches b on b.lease_token = w.lease_token
    group by b.lease_token, b.remaining
),
finished_batches as (
    delete from postbox.dispatch_batches b
    using written_per_batch w
    where b.lease_token = w.lease_token
      and w.remaining <= w.written
),
counted_down as (
    update postbox.dispatch_batches b
    set remaining = b.remaining - w.written
    from written_per_batch w
    where b.lease_token = w.lease_token
      and w.remaining > w.written
),
-- Each settled delivery with the outcome that settled it (`outcome_of`, the
-- id the relay sent): a delivery taken over above has an id of its own.
settled as (
    select u.*, u.id as outcome_of from updated u
    union all
    (select distinct on (i.id) i.*, r.delivery_id
     from inserted i
     join result r on r.outbox_id is not null and r.event_id = i.event_id and r.endpoint_id = i.endpoint_id
     order by i.id, r.started_at)
),
-- The relay's own outbox inserts below wake no relay through NOTIFY (their
-- statement trigger fires even for none): this relay rings its own
-- dispatcher when it emitted events. Local to this transaction.
quiet as (
    select set_config('postbox.relay_writes', 'on', true) as relay_writes
),
written_attempts as (
    insert into postbox.attempts (delivery_id, attempt_number, started_at, duration_ms, request_headers,
                                  response_status, response_headers, response_body, error)
    select s.id, r.attempt_number, to_timestamp(r.started_at), r.duration_ms,
           -- The headers a reader cannot rebuild from the row (see the relay's
           -- webhook::sent_headers); the delivery id the request carried
           -- too, when a delivery taken over above has an id of its own.
           r.request_headers::jsonb
               || case when s.id <> r.delivery_id and r.request_headers::jsonb ? 'webhook-signature'
                       then jsonb_build_object('postbox-delivery-id', r.delivery_id)
                       else '{}' end,
           r.response_status, r.response_headers::jsonb, r.response_body, r.error
    from result r
    join settled s on s.outcome_of = r.delivery_id
    returning 1
),
health as (
    select s.endpoint_id,
           bool_or(r.status = 'succeeded') as succeeded,
           bool_or(r.gone) as gone,
           min(to_timestamp(r.started_at)) as first_failure,
           bool_and(r.operational) as only_operational,
           (array_agg(coalesce(r.error, 'HTTP ' || r.response_status) order by r.started_at desc)
               filter (where r.status <> 'succeeded'))[1] as last_error
    from result r
    join settled s on s.outcome_of = r.delivery_id
    group by s.endpoint_id
),
verdict as (
    select h.*, e.failing_since, e.enabled,
           case
               when h.gone then 'receiver answered 410 Gone'
               when not h.succeeded and $14::float8 > 0
                    and coalesce(e.failing_since, h.first_failure) < now() - make_interval(secs => $14::float8)
               then 'every attempt failed since '
                    || to_char(coalesce(e.failing_since, h.first_failure) at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS "UTC"')
           end as disable_reason
    from health h
    join postbox.endpoints e on e.id = h.endpoint_id
),
changed as (
    update postbox.endpoints e
    set failing_since = case when v.succeeded then null else coalesce(e.failing_since, v.first_failure) end,
        enabled = e.enabled and v.disable_reason is null,
        disabled_reason = case when e.enabled and v.disable_reason is not null
                               then v.disable_reason else e.disabled_reason end
    from verdict v
    where e.id = v.endpoint_id
      and ((v.succeeded and e.failing_since is not null)
           or (not v.succeeded and e.failing_since is null)
           or (e.enabled and v.disable_reason is not null))
    returning e.id, v.enabled as was_enabled, e.enabled, e.disabled_reason, e.url, e.tenant,
              v.failing_since is null and not v.succeeded as started_failing, v.only_operational, v.last_error
),
-- Operational events, through the outbox like any event, for endpoints that
-- subscribe to postbox.*: an endpoint disabled, an endpoint failing after it
-- last succeeded, a delivery that used its last attempt. Outcomes of
-- deliveries that carry operational events emit none (no loops).
endpoint_events as (
    insert into postbox.outbox (event_type, payload, tenant)
    select case when c.was_enabled and not c.enabled then 'postbox.endpoint.disabled'
                else 'postbox.endpoint.failing' end,
           case when c.was_enabled and not c.enabled
                then jsonb_build_object('endpoint_id', c.id, 'url', c.url, 'reason', c.disabled_reason)
                else jsonb_build_object('endpoint_id', c.id, 'url', c.url, 'last_error', c.last_error) end,
           c.tenant
    from changed c
    where not c.only_operational
      and ((c.was_enabled and not c.enabled) or c.started_failing)
    returning 1
),
exhausted_events as (
    insert into postbox.outbox (event_type, payload, tenant)
    select 'postbox.delivery.exhausted',
           jsonb_build_object('delivery_id', s.id, 'event_id', s.event_id, 'endpoint_id', s.endpoint_id,
                              'last_error', coalesce(r.error, 'HTTP ' || r.response_status)),
           e.tenant
    from result r
    join settled s on s.outcome_of = r.delivery_id
    join postbox.endpoints e on e.id = s.endpoint_id
    where r.status = 'failed' and not r.operational
    returning 1
)
select (select count(*) from written_attempts) as recorded,
       -- Keyed deliveries that ended: the next of each key is due now.
       (select count(*) from settled s where s.ended_in_order) as queues_moved,
       (select q.relay_writes from quiet q) as relay_writes,
       (select count(*) from endpoint_events) + (select count(*) from exhausted_events) as operational_events,
       array(select c.id from changed c where c.was_enabled and not c.enabled) as disabled,
       array(select c.disabled_reason from changed c where c.was_enabled and not c.enabled) as reasons
