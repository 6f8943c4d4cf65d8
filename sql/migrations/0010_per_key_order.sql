-- postbox schema, version 10: per-key ordering.
--
-- Apply with `postbox migrate`, or by hand in one transaction:
--   psql -v ON_ERROR_STOP=1 --single-transaction -f sql/migrations/0010_per_key_order.sql
--
-- An event may carry an ordering key. For one endpoint and one key, a delivery
-- is sent only after the one before it (in outbox order) has succeeded, failed
-- or been cancelled; its retries hold back that key alone. Events without a
-- key are not ordered and take the same path as before.
--
-- How: each (endpoint, key) is a queue of pending deliveries in outbox order.
-- Deliveries behind the head of their queue are *held* (parked at 'infinity',
-- `held` set), so the claim never sees them and costs nothing more. Whatever
-- ends a queue's head (the relay recording an outcome, a cancel by hand, a
-- delete) or adds to a queue fires a trigger that makes the new head due.
-- Relays create one key's deliveries in outbox order (the dispatch pass leaves
-- a key for later while another relay dispatches an earlier event of it).
--
-- Relays of an earlier release ignore keys: run the new release everywhere
-- for ordering to hold.

insert into postbox.schema_migrations (version, name) values (10, 'per_key_order');

alter table postbox.outbox add column ordering_key text;
-- NOT VALID: no existing row has a key; new rows are checked.
alter table postbox.outbox add constraint outbox_ordering_key_at_most_1024_bytes
    check (octet_length(ordering_key) <= 1024) not valid;
grant insert (ordering_key) on postbox.outbox to postbox_writer;
-- The dispatch pass asks, per key in its batch, whether an earlier event of
-- that key is still undispatched (being dispatched by another relay).
create index outbox_ordering_undispatched_idx on postbox.outbox (ordering_key, id)
    where dispatched_at is null and ordering_key is not null;

-- The queue columns, copied from the event when the delivery is created:
-- its key, and its place in outbox order.
alter table postbox.deliveries
    add column ordering_key text,
    add column outbox_id bigint,
    add column held boolean not null default false;
comment on column postbox.deliveries.held is
    'pending behind an earlier delivery of the same endpoint and ordering key; sent when that one ends';
-- Each queue's head: the first pending delivery of an (endpoint, key).
create index deliveries_ordering_idx on postbox.deliveries (endpoint_id, ordering_key, outbox_id)
    where status = 'pending' and ordering_key is not null;

-- The queues with a delivery going out: pending and not held (due, in
-- flight, or waiting to retry). At most one per queue, so this stays small.
create index deliveries_ordering_active_idx on postbox.deliveries (endpoint_id, ordering_key)
    where status = 'pending' and ordering_key is not null and not held;

-- Makes due the head of each of these queues that is still held, when no
-- other delivery of its queue is going out, and returns how many. Whoever
-- changes a queue calls this after its change, within its transaction: the
-- lock serializes them per queue until commit, and the query after it reads
-- with a snapshot taken once the lock is held (read committed: each statement
-- in a function takes a new one). So a delivery created behind a head and
-- that head ending at the same moment cannot miss each other: the second to
-- take the lock sees the first's commit.
--
-- The locks are one of 64 buckets per endpoint and key, taken in order: a
-- bounded number per transaction however many keys it touches (the lock
-- table is shared by the whole server), and no deadlock between two callers.
-- A head another transaction is changing right now is skipped (that one calls
-- this too, after it). Endpoints are read FOR SHARE, so a pause or resume
-- committing meanwhile is seen, not missed.
create function postbox.advance_ordered_queues(endpoint_ids uuid[], ordering_keys text[]) returns int
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
    advanced int;
begin
    if coalesce(cardinality(endpoint_ids), 0) = 0 then
        return 0;
    end if;
    -- 1885499243: "pbok" in ASCII, postbox's advisory lock class for queues.
    perform pg_advisory_xact_lock(1885499243, q.bucket)
    from (select distinct abs(hashtext(p.endpoint_id::text || '/' || p.ordering_key) % 64) as bucket
          from unnest(endpoint_ids, ordering_keys) as p(endpoint_id, ordering_key)
          where p.ordering_key is not null
          order by 1) q;

    with queues as (
        select distinct p.endpoint_id, p.ordering_key
        from unnest(endpoint_ids, ordering_keys) as p(endpoint_id, ordering_key)
        where p.ordering_key is not null
    ),
    heads as (
        select head.id
        from queues q
        cross join lateral (
            select d.id, d.held
            from postbox.deliveries d
            where d.endpoint_id = q.endpoint_id
              and d.ordering_key = q.ordering_key
              and d.status = 'pending'
            order by d.outbox_id
            limit 1
        ) head
        where head.held
          and not exists (
              select 1
              from postbox.deliveries going
              where going.endpoint_id = q.endpoint_id
                and going.ordering_key = q.ordering_key
                and going.status = 'pending'
                and going.ordering_key is not null
                and not going.held)
    ),
    free as (
        select d.id, d.endpoint_id, d.created_at
        from postbox.deliveries d
        where d.id in (select h.id from heads h)
          and d.held
        for no key update of d skip locked
    ),
    endpoint as (
        select e.id, e.enabled
        from postbox.endpoints e
        where e.id in (select f.endpoint_id from free f)
        for share of e
    )
    update postbox.deliveries d
    set held = false,
        -- Due as of its creation: the claim takes the earliest first.
        next_attempt_at = case when e.enabled then least(now(), f.created_at) else 'infinity' end
    from free f, endpoint e
    where d.id = f.id
      and e.id = f.endpoint_id;
    get diagnostics advanced = row_count;
    if advanced > 0 then
        perform pg_notify('postbox', 'deliveries');
    end if;
    return advanced;
end;
$$;

-- The three changes to a queue. Statement triggers with transition tables:
-- one call per statement whatever its size, and a few microseconds for the
-- statements that touch no key (every unkeyed insert, claim and record).
create function postbox.deliveries_queued() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
    perform postbox.advance_ordered_queues(array_agg(n.endpoint_id), array_agg(n.ordering_key))
    from new_rows n
    where n.held;
    return null;
end;
$$;

create function postbox.deliveries_changed() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
    -- A head that ended, or deliveries put back in a queue (replay, recover).
    perform postbox.advance_ordered_queues(array_agg(n.endpoint_id), array_agg(n.ordering_key))
    from new_rows n
    where n.ordering_key is not null
      and (n.status <> 'pending' or n.held);
    return null;
end;
$$;

create function postbox.deliveries_removed() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
    perform postbox.advance_ordered_queues(array_agg(o.endpoint_id), array_agg(o.ordering_key))
    from old_rows o
    where o.ordering_key is not null
      and o.status = 'pending';
    return null;
end;
$$;

create trigger deliveries_queued after insert on postbox.deliveries
    referencing new table as new_rows
    for each statement execute function postbox.deliveries_queued();
create trigger deliveries_changed after update on postbox.deliveries
    referencing new table as new_rows
    for each statement execute function postbox.deliveries_changed();
create trigger deliveries_removed after delete on postbox.deliveries
    referencing old table as old_rows
    for each statement execute function postbox.deliveries_removed();

-- A safety net, run by the relay's retention round: makes due any held head
-- left so by a transaction that changed a queue under a snapshot taken before
-- the lock (repeatable read or serializable, which the relay never uses).
create function postbox.advance_stranded_queues() returns int
language sql
set search_path = pg_catalog, pg_temp
as $$
    select postbox.advance_ordered_queues(array_agg(h.endpoint_id), array_agg(h.ordering_key))
    from (
        select distinct on (d.endpoint_id, d.ordering_key) d.endpoint_id, d.ordering_key, d.held
        from postbox.deliveries d
        where d.status = 'pending'
          and d.ordering_key is not null
        order by d.endpoint_id, d.ordering_key, d.outbox_id
    ) h
    where h.held;
$$;

-- Pause and resume move what waits, never what is held behind a head.
create or replace function postbox.endpoints_pause_or_resume() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
    update postbox.deliveries d
    set next_attempt_at = case when new.enabled then least(now(), d.created_at) else 'infinity' end
    where d.endpoint_id = new.id
      and d.status = 'pending'
      and not d.held
      and (d.lease_token is null or d.leased_until <= now());
    return null;
end;
$$;

-- emit gains the key. A new signature: the old one is dropped, and calls that
-- name no key work as before.
drop function postbox.emit(text, jsonb, text, text, text, jsonb);
create function postbox.emit(
    event_type   text,
    payload      jsonb,
    tenant       text default null,
    subject_type text default null,
    subject_id   text default null,
    actor        jsonb default null,
    ordering_key text default null
) returns uuid
language sql
set search_path = pg_catalog, pg_temp
as $$
    insert into postbox.outbox (event_type, payload, tenant, subject_type, subject_id, actor, ordering_key)
    values (emit.event_type, emit.payload, emit.tenant, emit.subject_type, emit.subject_id, emit.actor,
            emit.ordering_key)
    returning event_id;
$$;
grant execute on function postbox.emit(text, jsonb, text, text, text, jsonb, text) to postbox_writer;

-- track(..., ordered => true) keys each row's events by subject and primary
-- key ('order/42', or 'line/["7","2"]' for a composite key), so that one
-- row's created, updated and destroyed arrive in that order. Triggers that
-- track installed before pass no fifth argument: unordered, as before.
create or replace function postbox.tracked_row_changed() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
    subject        text := tg_argv[0];
    tenant_column  text := nullif(tg_argv[1], '');
    excluded       text[] := tg_argv[2]::text[];
    key_columns    text[] := tg_argv[3]::text[];
    ordered        boolean := coalesce(tg_argv[4]::boolean, false);
    row_json       jsonb;
    data           jsonb;
    previous       jsonb;
    action         text;
    actor_setting  text;
    actor          jsonb;
    subject_key    text;
begin
    if tg_op = 'INSERT' then
        action := 'created';
        row_json := to_jsonb(new);
        data := row_json - excluded;
    elsif tg_op = 'UPDATE' then
        action := 'updated';
        row_json := to_jsonb(new);
        data := row_json - excluded;
        select jsonb_object_agg(o.key, o.value) into previous
        from jsonb_each(to_jsonb(old) - excluded) as o
        where data -> o.key is distinct from o.value;
        if previous is null then
            return null; -- nothing changed outside the excluded columns
        end if;
    else
        action := 'destroyed';
        row_json := to_jsonb(old);
        data := row_json - excluded;
    end if;

    actor_setting := nullif(current_setting('postbox.actor', true), '');
    if actor_setting is not null then
        begin
            actor := actor_setting::jsonb;
        exception when others then
            raise exception 'postbox.actor must be JSON, got %', quote_literal(actor_setting)
                using errcode = 'invalid_parameter_value';
        end;
    end if;

    if cardinality(key_columns) = 1 then
        subject_key := row_json ->> key_columns[1];
    elsif cardinality(key_columns) > 1 then
        select jsonb_agg(row_json ->> k.name order by k.position)::text into subject_key
        from unnest(key_columns) with ordinality as k(name, position);
    end if;

    insert into postbox.outbox (event_type, payload, tenant, subject_type, subject_id, actor, previous, ordering_key)
    values (subject || '.' || action, data,
            case when tenant_column is not null then row_json ->> tenant_column end,
            subject, subject_key, actor, previous,
            case when ordered then subject || '/' || coalesce(subject_key, '') end);
    return null;
end;
$$;

drop function postbox.track(regclass, text, text, text[], text[]);
create function postbox.track(
    tbl             regclass,
    subject         text default null,
    tenant_column   text default null,
    actions         text[] default '{created,updated,destroyed}',
    exclude_columns text[] default '{}',
    ordered         boolean default false
) returns void
language plpgsql
set search_path = pg_catalog, pg_temp
set client_min_messages = warning
as $$
declare
    subject_name text := coalesce(subject, (select c.relname from pg_class c where c.oid = tbl));
    key_columns  text[];
    missing      text;
    ops          text[];
    action       text;
begin
    if subject_name !~ '^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$' then
        raise exception 'invalid subject %: use dot-separated words of letters, digits, "_" and "-"', quote_literal(subject_name)
            using errcode = 'invalid_parameter_value';
    end if;
    if actions is null or cardinality(actions) = 0 then
        raise exception 'track needs at least one action of created, updated, destroyed'
            using errcode = 'invalid_parameter_value';
    end if;
    foreach action in array actions loop
        if action is null or action not in ('created', 'updated', 'destroyed') then
            raise exception 'unknown action %: expected created, updated or destroyed', coalesce(quote_literal(action), 'NULL')
                using errcode = 'invalid_parameter_value';
        end if;
    end loop;

    select string_agg(quote_literal(c), ', ') into missing
    from unnest(coalesce(exclude_columns, '{}') || coalesce(array[tenant_column], '{}')) as c
    where not exists (
        select 1 from pg_attribute a
        where a.attrelid = tbl and a.attname = c and a.attnum > 0 and not a.attisdropped
    );
    if missing is not null then
        raise exception 'table % has no column %', tbl, missing using errcode = 'undefined_column';
    end if;

    select array_agg(a.attname::text order by k.ord) into key_columns
    from pg_index i
    cross join lateral unnest(i.indkey) with ordinality as k(attnum, ord)
    join pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.attnum
    where i.indrelid = tbl and i.indisprimary;
    if coalesce(ordered, false) and key_columns is null then
        raise exception 'table % has no primary key: ordered tracking keys each row''s events by it', tbl
            using errcode = 'invalid_table_definition';
    end if;

    foreach action in array actions loop
        perform postbox.register_event_type(subject_name || '.' || action,
            format('%s %s (tracked table %s)', subject_name, action, tbl));
    end loop;

    ops := array(
        select case a when 'created' then 'insert' when 'updated' then 'update' else 'delete' end
        from unnest(actions) as a group by a
    );

    execute format('drop trigger if exists postbox_track on %s', tbl);
    execute format(
        'create trigger postbox_track after %s on %s for each row execute function postbox.tracked_row_changed(%L, %L, %L, %L, %L)',
        array_to_string(ops, ' or '), tbl, subject_name, coalesce(tenant_column, ''),
        coalesce(exclude_columns, '{}')::text, coalesce(key_columns, '{}')::text,
        coalesce(ordered, false)::text);
end;
$$;

-- Re-sends are queued in order too: replay and recover put each keyed
-- delivery back behind the head of its queue (the trigger makes the oldest
-- due); redeliver sends the one delivery now, outside the order.
create or replace function postbox.replay(endpoint uuid, since timestamptz) returns bigint
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    target postbox.endpoints;
    replayed bigint;
begin
    select * into target from postbox.endpoints e where e.id = endpoint;
    if not found then
        raise exception 'no endpoint with id %', endpoint using errcode = 'no_data_found';
    end if;
    if since is null then
        raise exception 'replay needs a start time' using errcode = 'invalid_parameter_value';
    end if;
    with matching as (
        update postbox.outbox o
        set dispatched_at = case when o.dispatched_at is not null then now() end
        where o.occurred_at >= since
          and (target.tenant is null or target.tenant = o.tenant)
          and (target.filter is null or o.payload @> target.filter)
          and postbox.event_type_matches(target.event_types, o.event_type)
        returning o.id, o.event_id, o.ordering_key
    ),
    upserted as (
        insert into postbox.deliveries as d (event_id, endpoint_id, next_attempt_at, ordering_key, outbox_id, held)
        select m.event_id, endpoint,
               case when target.enabled and m.ordering_key is null then now() else 'infinity' end,
               m.ordering_key, m.id, m.ordering_key is not null
        from matching m
        on conflict on constraint deliveries_event_endpoint_key do update
            set status = 'pending', next_attempt_at = excluded.next_attempt_at, lease_token = null,
                leased_until = null, updated_at = now(), held = excluded.held
            where d.lease_token is null or d.leased_until <= now()
        returning 1
    )
    select count(*) into replayed from upserted;
    if replayed > 0 then
        perform pg_notify('postbox', 'deliveries');
    end if;
    return replayed;
end;
$$;

create or replace function postbox.recover(endpoint uuid, since timestamptz) returns int
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    target postbox.endpoints;
    recovered int;
begin
    select * into target from postbox.endpoints e where e.id = endpoint;
    if not found then
        raise exception 'no endpoint with id %', endpoint using errcode = 'no_data_found';
    end if;
    if since is null then
        raise exception 'recover needs a start time' using errcode = 'invalid_parameter_value';
    end if;
    with failed as (
        select d.event_id
        from postbox.deliveries d
        where d.endpoint_id = endpoint
          and d.status = 'failed'
          and d.created_at >= since
    ),
    kept as (
        update postbox.outbox o
        set dispatched_at = now()
        from failed f
        where o.event_id = f.event_id
        returning o.event_id
    ),
    rescheduled as (
        update postbox.deliveries d
        set status = 'pending',
            next_attempt_at = case when target.enabled and d.ordering_key is null then now() else 'infinity' end,
            held = d.ordering_key is not null,
            lease_token = null,
            leased_until = null,
            updated_at = now()
        from kept k
        where d.event_id = k.event_id
          and d.endpoint_id = endpoint
          and d.status = 'failed'
        returning 1
    )
    select count(*) into recovered from rescheduled;
    if recovered > 0 then
        perform pg_notify('postbox', 'deliveries');
    end if;
    return recovered;
end;
$$;

create or replace function postbox.redeliver(delivery uuid) returns void
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    target record;
begin
    update postbox.outbox o
    set dispatched_at = now()
    where o.event_id = (select d.event_id from postbox.deliveries d where d.id = delivery)
      and o.dispatched_at is not null;
    select d.id, d.status, d.lease_token, d.leased_until, e.enabled, e.disabled_reason, e.id as endpoint_id
    into target
    from postbox.deliveries d
    join postbox.endpoints e on e.id = d.endpoint_id
    where d.id = delivery
    for no key update of d;
    if not found then
        raise exception 'no delivery with id %', delivery using errcode = 'no_data_found';
    end if;
    if not target.enabled then
        raise exception 'endpoint % is disabled (%): enable it first', target.endpoint_id,
            coalesce(target.disabled_reason, 'by hand')
            using errcode = 'object_not_in_prerequisite_state';
    end if;
    if target.lease_token is not null and target.leased_until > now() then
        return; -- in flight right now
    end if;
    update postbox.deliveries d
    set status = 'pending', next_attempt_at = now(), held = false, lease_token = null, leased_until = null,
        updated_at = now()
    where d.id = delivery;
    perform pg_notify('postbox', 'deliveries');
end;
$$;

-- A relay's own writes to the outbox (operational events, from the statement
-- that records attempts) ring no relay: that relay rings its own dispatcher.
-- The statement trigger fires even when such a statement inserts no row, and
-- a NOTIFY on every recorded batch woke every relay's dispatcher for nothing.
create or replace function postbox.outbox_wake_relays() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
    if current_setting('postbox.relay_writes', true) = 'on' then
        return null;
    end if;
    if exists (select 1 from postbox.wakeup w where w.notify and w.busy_until < now()) then
        perform pg_notify('postbox', 'outbox');
    end if;
    return null;
end;
$$;

revoke execute on all functions in schema postbox from public;
