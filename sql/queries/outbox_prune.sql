-- Deletes the finished events among the next $3 outbox rows after id $1 that
-- occurred more than $2 seconds ago; their deliveries and attempts go by
-- cascade. Walks the primary key from the oldest row, so a pass costs what it
-- deletes plus the rows it must keep (pending or undispatched), not the table.
with head as (
    select o.id, o.event_id, o.occurred_at, o.dispatched_at
    from postbox.outbox o
    where o.id > $1
    order by o.id
    limit $3
), pruned as (
    delete from postbox.outbox o
    using head h
    where o.id = h.id
      and h.occurred_at < now() - make_interval(secs => $2)
      and h.dispatched_at is not null
      and not exists (select 1 from postbox.deliveries d
                      where d.event_id = h.event_id and d.status = 'pending')
    returning o.id
)
select (select max(id) from head) as last_id,
       (select count(*) from pruned) as pruned,
       -- ids follow insertion order: past the cutoff, the rest is newer still
       exists (select 1 from head where occurred_at >= now() - make_interval(secs => $2)) as reached_recent
