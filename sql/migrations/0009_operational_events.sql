-- postbox schema, version 9: operational events.
--
-- Apply with `postbox migrate`, or by hand in one transaction:
--   psql -v ON_ERROR_STOP=1 --single-transaction -f sql/migrations/0009_operational_events.sql

insert into postbox.schema_migrations (version, name) values (9, 'operational_events');

-- postbox emits these itself, through its own outbox (writers cannot: the
-- prefix is reserved), to endpoints that subscribe to them (postbox.* or
-- their exact names), each with the endpoint's tenant.
select postbox.register_event_type('postbox.endpoint.disabled',
    'An endpoint was disabled (410 Gone, or failing too long): endpoint_id, url, reason');
select postbox.register_event_type('postbox.endpoint.failing',
    'An endpoint''s attempt failed after it last succeeded: endpoint_id, url, last_error');
select postbox.register_event_type('postbox.delivery.exhausted',
    'A delivery used its last attempt and failed: delivery_id, event_id, endpoint_id, last_error');

-- `*` means every event type of the app: postbox's own reach only endpoints
-- that ask for them (postbox.*, postbox.endpoint.*, or an exact name), so no
-- receiver gets them unasked.
create or replace function postbox.patterns_matching(event_type text) returns text[]
language sql immutable parallel safe
set search_path = pg_catalog, pg_temp
as $$
    select case when starts_with(event_type, 'postbox.') then array[]::text[] else array['*'] end
        || array[event_type] || array(
        select array_to_string(segments[1:n], '.') || '.*'
        from (select string_to_array(event_type, '.') as segments) s,
             generate_series(1, cardinality(s.segments) - 1) as n
        order by n
    );
$$;

create or replace function postbox.event_type_matches(patterns text[], event_type text) returns boolean
language sql immutable parallel safe
as $$
    select event_type = any(patterns)
        or ('*' = any(patterns) and not starts_with(event_type, 'postbox.'))
        or exists (
            select 1 from unnest(patterns) as p
            where right(p, 2) = '.*' and starts_with(event_type, left(p, -1))
        );
$$;

revoke execute on all functions in schema postbox from public;
