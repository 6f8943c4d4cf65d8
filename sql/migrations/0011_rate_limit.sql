-- postbox schema, version 11: per-endpoint rate limits.
--
-- Apply with `postbox migrate`, or by hand in one transaction:
--   psql -v ON_ERROR_STOP=1 --single-transaction -f sql/migrations/0011_rate_limit.sql
--
-- `endpoints.rate_limit`: requests per second to that endpoint, across all
-- relays together (NULL: no limit). What exceeds it waits, due, for a later
-- claim; nothing is dropped. A 429 with Retry-After still pauses the endpoint.

insert into postbox.schema_migrations (version, name) values (11, 'rate_limit');

alter table postbox.endpoints add column rate_limit int;
alter table postbox.endpoints add constraint endpoints_rate_limit_positive
    check (rate_limit > 0);

-- The same rule with an error that names the value: a failed CHECK prints
-- the whole row in its detail, the endpoint's secret with it, to the client
-- and the server log. This trigger runs first and says only what is wrong.
create function postbox.endpoints_check_rate_limit() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
    if new.rate_limit is not null and new.rate_limit < 1 then
        raise exception 'rate_limit must be at least 1 request per second (or NULL for no limit), got %', new.rate_limit
            using errcode = 'check_violation';
    end if;
    return new;
end;
$$;
create trigger endpoints_check_rate_limit before insert or update of rate_limit on postbox.endpoints
    for each row execute function postbox.endpoints_check_rate_limit();

-- Each limited endpoint's pace, shared by every relay: the generic cell rate
-- algorithm keeps one time per endpoint, `next_free`, when the next request
-- would be on schedule. A request may go up to one burst ahead of it, a burst
-- being half a second's requests (at least one): so over any 10 s window a
-- receiver sees at most 10.5 s worth of its limit, within the promised 1.1x.
-- Relays only; lost with its endpoint.
create table postbox.endpoint_pace (
    endpoint_id uuid primary key references postbox.endpoints (id) on delete cascade,
    next_free   timestamptz not null
);
alter table postbox.endpoint_pace set (fillfactor = 50);

-- When the next request to an endpoint may go, given its pace: up to one
-- burst (half a second's requests, at least one) ahead of `next_free`.
-- The claim leaves out endpoints whose next permit is still to come.
create function postbox.next_permit_at(next_free timestamptz, per_second int) returns timestamptz
language sql immutable parallel safe
set search_path = pg_catalog, pg_temp
as $$
    select next_free - (greatest(per_second / 2, 1) - 1) * (interval '1 second' / greatest(per_second, 1));
$$;

-- Takes up to `wanted` permits to send to `endpoint` now, at `per_second`.
-- Returns how many it granted and when the next one will be free. The row
-- lock serializes relays per endpoint until the claim commits (one short
-- statement); the select below reads the latest committed pace.
create function postbox.take_permits(endpoint uuid, per_second int, wanted int,
                                     out granted int, out next_permit_at timestamptz)
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
    at        timestamptz := clock_timestamp();
    step      interval := interval '1 second' / greatest(per_second, 1);
    burst     int := greatest(per_second / 2, 1);
    scheduled timestamptz;
begin
    insert into postbox.endpoint_pace (endpoint_id, next_free) values (endpoint, '-infinity')
    on conflict (endpoint_id) do nothing;
    select p.next_free into scheduled from postbox.endpoint_pace p where p.endpoint_id = endpoint for update;
    scheduled := greatest(scheduled, at);
    -- Requests i = 0, 1, ... go at scheduled + i * step, each allowed once
    -- that is within (burst - 1) steps of now.
    granted := least(greatest(wanted, 0),
                     greatest(0, floor(extract(epoch from (at - scheduled)) * per_second)::int + burst));
    scheduled := scheduled + granted * step;
    if granted > 0 then
        update postbox.endpoint_pace p set next_free = scheduled where p.endpoint_id = endpoint;
    end if;
    next_permit_at := postbox.next_permit_at(scheduled, per_second);
end;
$$;

revoke execute on all functions in schema postbox from public;
