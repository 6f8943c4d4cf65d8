-- Claims up to $1 undispatched outbox rows, creates one pending delivery per
-- matching enabled endpoint (due after $2 seconds), marks the rows dispatched
-- and wakes the deliverers when it created any. One statement, one short
-- transaction. Index: outbox_undispatched_idx.
with batch as (
    select o.id, o.event_id, o.event_type, o.payload, o.tenant
    from postbox.outbox o
    where o.dispatched_at is null
    order by o.id
    limit $1
    for no key update skip locked
),
marked as (
    update postbox.outbox o
    set dispatched_at = now()
    from batch
    where o.id = batch.id
    returning 1
),
created as (
    insert into postbox.deliveries (event_id, endpoint_id, next_attempt_at)
    select batch.event_id, e.id, now() + make_interval(secs => $2::float8)
    from batch
    join postbox.endpoints e
      on e.enabled
     and (e.tenant is null or e.tenant = batch.tenant)
     and (e.filter is null or batch.payload @> e.filter)
     and postbox.event_type_matches(e.event_types, batch.event_type)
    on conflict on constraint deliveries_event_endpoint_key do nothing
    returning 1
),
counts as (
    select (select count(*) from marked) as events, (select count(*) from created) as deliveries
)
select counts.events, counts.deliveries,
       case when counts.deliveries > 0
            then (select true from pg_notify('postbox', 'deliveries'))
       end as woke
from counts
