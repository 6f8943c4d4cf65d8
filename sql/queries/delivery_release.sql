-- Hands leased deliveries back at once (shutdown): no holder, so they are
-- due again (they were due when leased), and the attempt their claim spent
-- is given back (it was not made, or not finished). First attempts sent
-- straight from the outbox have no row to hand back: they become pending
-- deliveries, and their dispatch batches' leases end now, so that the next
-- dispatch pass sends any other first attempt of theirs whose outcome was
-- never recorded.
-- One element per delivery in parallel arrays: id, claim token, event,
-- endpoint and, for a first attempt, outbox id. Index: deliveries_pkey,
-- deliveries_event_endpoint_key, dispatch_batches_pkey.
with held as (
    select *
    from unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::int8[])
         as r(id, lease_token, event_id, endpoint_id, outbox_id)
),
released as (
    update postbox.deliveries d
    set lease_token = null,
        leased_until = null,
        attempt_count = greatest(d.attempt_count - 1, 0)
    from held r
    where r.outbox_id is null
      and d.id = r.id
      and d.lease_token = r.lease_token
      and d.status = 'pending'
    returning 1
),
handed_back as (
    insert into postbox.deliveries (id, event_id, endpoint_id, outbox_id, next_attempt_at)
    select r.id, r.event_id, r.endpoint_id, r.outbox_id, case when e.enabled then now() else 'infinity' end
    from held r
    join postbox.endpoints e on e.id = r.endpoint_id
    where r.outbox_id is not null
      and exists (select 1 from postbox.dispatch_batches b where b.lease_token = r.lease_token)
    on conflict on constraint deliveries_event_endpoint_key do nothing
    returning 1
),
batches as (
    update postbox.dispatch_batches b
    set leased_until = '-infinity'
    where b.lease_token in (select r.lease_token from held r where r.outbox_id is not null)
)
select (select count(*) from released) + (select count(*) from handed_back) as released
