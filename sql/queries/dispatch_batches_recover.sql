-- Dispatches again the events of dispatch batches whose lease ran out: their
-- relay died, or let them go at shutdown. Each of those events' deliveries
-- that was recorded meanwhile stays as it is; the next dispatch pass sends
-- the rest again (at least once). Returns how many events wait again.
-- Index: dispatch_batches_expiry_idx.
with expired as (
    delete from postbox.dispatch_batches b
    where b.leased_until < now()
    returning b.outbox_ids
),
reopened as (
    update postbox.outbox o
    set dispatched_at = null
    where o.id in (select unnest(e.outbox_ids) from expired e)
      and o.dispatched_at is not null
    returning 1
)
select count(*) as events from reopened
