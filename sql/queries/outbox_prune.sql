-- Deletes the finished events among the next $3 outbox rows after id $1 that
-- were dispatched more than $2 seconds ago; their deliveries and attempts go
-- by the delete triggers. Walks the primary key from the oldest row, so a
-- pass costs what it deletes plus the rows it must keep (pending or
-- undispatched), not the table.
--
-- The age is dispatched_at, which the relay sets (and replay or redeliver
-- move to now), never occurred_at, which a writer chooses. It is read from
-- the row being deleted, not from `head`: a replay that updated the row while
-- this statement waited for it is seen, and the row kept.
with head as (
    select o.id, o.dispatched_at
    from postbox.outbox o
    where o.id > $1
    order by o.id
    limit $3
), pruned as (
    delete from postbox.outbox o
    using head h
    where o.id = h.id
      and o.dispatched_at < now() - make_interval(secs => $2)
      and not exists (select 1 from postbox.deliveries d
                      where d.event_id = o.event_id and d.status = 'pending')
      -- nor first attempts in flight, which have no delivery row yet
      and o.id not in (select unnest(b.outbox_ids) from postbox.dispatch_batches b)
    returning o.id
)
select (select max(id) from head) as last_id,
       (select count(*) from pruned) as pruned,
       -- Ids follow dispatch order: a batch with nothing old enough means the
       -- rest is newer still. A few recent rows (replayed, or dispatched
       -- late) among old ones do not end the walk.
       not exists (select 1 from head where dispatched_at < now() - make_interval(secs => $2)) as reached_recent
