-- postbox schema, version 7: tools for operators: recover what failed, and say
-- when a subscription's pattern matches no event type yet.
--
-- Apply with `postbox migrate`, or by hand in one transaction:
--   psql -v ON_ERROR_STOP=1 --single-transaction -f sql/migrations/0007_operator_tools.sql

insert into postbox.schema_migrations (version, name) values (7, 'operator_tools');

-- Sends an endpoint's failed deliveries created since `since` once more, and
-- nothing that succeeded (replay is for "everything"). Each gets one more
-- attempt, as redeliver gives; a paused endpoint keeps them parked until it is
-- enabled. Returns how many. Like replay it refreshes the events'
-- dispatched_at first, so retention keeps what it scheduled.
create function postbox.recover(endpoint uuid, since timestamptz) returns int
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
    held as (
        update postbox.outbox o
        set dispatched_at = now()
        from failed f
        where o.event_id = f.event_id
        returning o.event_id
    ),
    rescheduled as (
        update postbox.deliveries d
        set status = 'pending',
            next_attempt_at = case when target.enabled then now() else 'infinity' end,
            lease_token = null,
            leased_until = null,
            updated_at = now()
        from held h
        where d.event_id = h.event_id
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

-- The patterns among `patterns` that match no registered event type: a typo
-- ('ordr.*') would otherwise subscribe to nothing, silently.
create function postbox.patterns_matching_nothing(patterns text[]) returns text[]
language sql stable
set search_path = pg_catalog, pg_temp
as $$
    select coalesce(array_agg(p order by p), '{}')
    from unnest(patterns) as p
    where p like '%.*'
      and not exists (select 1 from postbox.event_types t
                      where starts_with(t.name, left(p, -1)));
$$;

-- As in version 1, plus a NOTICE for a pattern that matches nothing yet (a
-- type registered later still matches it, so it is not an error).
create or replace function postbox.check_event_type_patterns(patterns text[]) returns void
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $$
declare
    pattern text;
begin
    if patterns is null or cardinality(patterns) = 0 then
        raise exception 'endpoint event_types must list at least one event type or pattern (''*'' for all)'
            using errcode = 'invalid_parameter_value';
    end if;
    foreach pattern in array patterns loop
        if pattern is null then
            raise exception 'endpoint event_types must not contain NULL' using errcode = 'invalid_parameter_value';
        elsif pattern = '*' then
            continue;
        elsif pattern ~ '^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.\*$' then
            continue;
        elsif pattern ~ '\*' then
            raise exception 'invalid event type pattern %: use an exact name, ''subject.*'' or ''*''', quote_literal(pattern)
                using errcode = 'invalid_parameter_value';
        elsif not exists (select 1 from postbox.event_types t where t.name = pattern) then
            raise exception 'unknown event type %', quote_literal(pattern)
                using errcode = 'foreign_key_violation',
                      hint = format('register it first: select postbox.register_event_type(%L);', pattern);
        end if;
    end loop;
    foreach pattern in array postbox.patterns_matching_nothing(patterns) loop
        raise notice 'event type pattern % matches no registered event type yet', quote_literal(pattern)
            using hint = 'check its spelling; types registered later will match it';
    end loop;
end;
$$;


-- The page's history chart reads a day of attempts by start time. A BRIN
-- index (a few pages per partition, nearly free to keep up as rows are
-- appended in time order) saves it a full scan of the day's partitions.
create index attempts_started_brin on postbox.attempts using brin (started_at);

-- Event types as first-class objects: an example payload each, shown to the
-- people who subscribe, and a way to describe a type after registering it.
alter table postbox.event_types add column example jsonb
    constraint event_types_example_is_an_object check (example is null or jsonb_typeof(example) = 'object');

create function postbox.describe_event_type(name text, description text default null, example jsonb default null)
returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
    if example is not null and jsonb_typeof(example) <> 'object' then
        raise exception 'an example payload must be a JSON object, got %', jsonb_typeof(example)
            using errcode = 'invalid_parameter_value';
    end if;
    update postbox.event_types t
    set description = coalesce(describe_event_type.description, t.description),
        example = coalesce(describe_event_type.example, t.example),
        updated_at = now()
    where t.name = describe_event_type.name;
    if not found then
        raise exception 'no event type %', quote_literal(name)
            using errcode = 'no_data_found',
                  hint = format('register it first: select postbox.register_event_type(%L);', name);
    end if;
end;
$$;

revoke execute on all functions in schema postbox from public;
