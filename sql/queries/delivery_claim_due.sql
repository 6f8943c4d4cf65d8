-- Claims up to $1 due deliveries that no relay holds: a lease of $2 seconds
-- under claim token $3 (unindexed columns: a HOT update), then returns what
-- the request needs, unless its body would pass $7 bytes.
-- Per endpoint it claims at most the free slots this relay has for it ($4
-- endpoint ids with $5 free slots; $6 for any other endpoint), so one slow
-- receiver cannot take every slot. Index: deliveries_due_idx (ordered scan).
with busy as (
    select * from unnest($4::uuid[], $5::int[]) as b(endpoint_id, free)
),
-- Rate-limited endpoints with no permit free right now, and when the next is.
paced as materialized (
    select n.endpoint_id, n.next_permit_at
    from (select p.endpoint_id, postbox.next_permit_at(p.next_free, e.rate_limit) as next_permit_at
          from postbox.endpoint_pace p
          join postbox.endpoints e on e.id = p.endpoint_id
          where e.rate_limit is not null) n
    where n.next_permit_at > clock_timestamp()
),
-- The head of the due queue, straight off the index: no joins here, so the
-- planner keeps the ordered index scan with its limit. Deliveries of disabled
-- endpoints are parked at 'infinity' and never due; endpoints this relay has
-- no free slot for are skipped by a plain array filter.
candidate as (
    select d.id, d.endpoint_id, d.next_attempt_at
    from postbox.deliveries d
    where d.status = 'pending'
      and d.next_attempt_at <= now()
      and (d.leased_until is null or d.leased_until < now())
      and d.endpoint_id <> all (array(select b.endpoint_id from busy b where b.free <= 0))
      -- Their backlog must not fill this scan and starve other endpoints.
      and d.endpoint_id <> all (array(select p.endpoint_id from paced p))
    order by d.next_attempt_at
    limit $1::int8 * 4
),
within_cap as materialized (
    select ranked.id, ranked.endpoint_id, ranked.rank, ranked.next_attempt_at
    from (
        select c.id, c.endpoint_id, c.next_attempt_at,
               row_number() over (partition by c.endpoint_id order by c.next_attempt_at) as rank
        from candidate c
    ) ranked
    left join busy b on b.endpoint_id = ranked.endpoint_id
    where ranked.rank <= coalesce(b.free, $6::int)
    order by ranked.next_attempt_at
    limit $1::int8
),
-- Endpoints with a rate limit take permits from their shared pace, one per
-- request, for as many as they would send; the rest stay due for a later
-- claim. Once per endpoint (materialized: the call has effects), in
-- endpoint order, so that two claims lock paces in one order (no deadlock).
limited as materialized (
    select w.endpoint_id, e.rate_limit, count(*)::int as wanted
    from within_cap w
    join postbox.endpoints e on e.id = w.endpoint_id and e.rate_limit is not null
    group by w.endpoint_id, e.rate_limit
    order by w.endpoint_id
),
permits as materialized (
    select l.endpoint_id, l.wanted, t.granted, t.next_permit_at
    from limited l
    cross join lateral postbox.take_permits(l.endpoint_id, l.rate_limit, l.wanted) t
),
within_rate as (
    select w.id, w.next_attempt_at
    from within_cap w
    left join permits p on p.endpoint_id = w.endpoint_id
    where p.endpoint_id is null or w.rank <= p.granted
),
due as (
    select d.id
    from postbox.deliveries d
    join within_rate w on w.id = d.id
    where d.status = 'pending'
      and d.next_attempt_at <= now()
      and (d.leased_until is null or d.leased_until < now())
    order by d.next_attempt_at
    limit $1::int8
    for no key update of d skip locked
),
claimed as (
update postbox.deliveries d
set leased_until = now() + make_interval(secs => $2::float8),
    lease_token = $3,
    -- Spent at the claim: an attempt whose outcome is never recorded (the
    -- relay died, or its lease ran out) still counts against the schedule.
    attempt_count = d.attempt_count + 1
from due, postbox.outbox o, postbox.endpoints e,
     lateral (select t.*, postbox.request_bytes(o.event_type, t.payload, t.previous, t.actor) as bytes
              from (select o.payload::text as payload, o.previous::text as previous, o.actor::text as actor) t
              offset 0) body -- computed once per row, not per reference (and planned once)
where d.id = due.id
  and o.event_id = d.event_id
  and e.id = d.endpoint_id
returning d.id,
          d.endpoint_id,
          d.attempt_count as attempt_number,
          o.event_id,
          o.event_type,
          postbox.rfc3339(o.occurred_at) as occurred_at,
          -- Bigger than the relay sends ($7 bytes): not loaded, and why.
          case when body.bytes <= $7
               then body.payload end as payload,
          case when body.bytes <= $7
               then body.previous end as previous,
          case when body.bytes <= $7
               then body.actor end as actor,
          postbox.too_big_to_send(body.bytes, $7)
              as unsendable,
          e.url,
          postbox.signing_secrets(e) as secrets,
          e.headers
),
-- How long until a rate-limited endpoint that has more due can send again:
-- the deliverer claims again then. On every row, and on a row of its own
-- (no id) when nothing was claimed.
pace as (
    select extract(epoch from min(w.next_permit_at) - clock_timestamp())::float8 as rate_wait
    from (select p.next_permit_at from permits p where p.granted < p.wanted
          union all
          select p.next_permit_at from paced p) w
)
select c.*, pace.rate_wait
from pace
left join claimed c on true
