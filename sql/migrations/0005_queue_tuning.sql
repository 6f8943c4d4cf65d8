-- postbox schema, version 5: cheaper writes per event.
--
-- Apply with `postbox migrate`, or by hand in one transaction:
--   psql -v ON_ERROR_STOP=1 --single-transaction -f sql/migrations/0005_queue_tuning.sql

insert into postbox.schema_migrations (version, name) values (5, 'queue_tuning');

-- A claim writes a new version of every delivery it leases. It stays a HOT
-- update (no index entries) only when that version fits on the row's own
-- page, and a claim leases neighbouring rows, which share pages. At 80% fill
-- most claims missed and wrote five index entries per delivery (measured: 41
-- of 130 HOT); at 50% every row has room for its leased version. New pages
-- only: existing rows keep their pages until they are pruned.
alter table postbox.deliveries set (fillfactor = 50);

-- Two foreign keys checked a row per delivery and per attempt: 15% of the
-- relay's database time in a drain. Both are kept by construction: the relay
-- inserts deliveries only for outbox rows it holds locked, and attempts only
-- for deliveries it updates in the same statement. What the keys also did,
-- deleting deliveries with their event and attempts with their delivery, the
-- triggers below do once per statement. (deliveries.endpoint_id keeps its
-- key: an endpoint can be deleted while a relay dispatches to it.)
alter table postbox.deliveries drop constraint deliveries_event_id_fkey;
alter table postbox.attempts drop constraint attempts_delivery_id_fkey;

create function postbox.delete_deliveries_of_deleted_events() returns trigger
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    delete from postbox.deliveries d using deleted_events e where d.event_id = e.event_id;
    return null;
end;
$$;
create trigger outbox_deleted_events after delete on postbox.outbox
    referencing old table as deleted_events
    for each statement execute function postbox.delete_deliveries_of_deleted_events();

create function postbox.delete_attempts_of_deleted_deliveries() returns trigger
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    delete from postbox.attempts a using deleted_deliveries d where a.delivery_id = d.id;
    return null;
end;
$$;
create trigger deliveries_deleted_deliveries after delete on postbox.deliveries
    referencing old table as deleted_deliveries
    for each statement execute function postbox.delete_attempts_of_deleted_deliveries();

revoke execute on function postbox.delete_deliveries_of_deleted_events(),
                           postbox.delete_attempts_of_deleted_deliveries() from public;

-- Replay is the one writer that adds deliveries for old events, which
-- retention may be deleting at the same moment: it now holds them, as the
-- foreign key's check did. That lock needs more than the SELECT an admin
-- has on the outbox, so replay runs as the schema's owner (only the relay
-- and admin roles may call it).
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
        select o.event_id
        from postbox.outbox o
        where o.occurred_at >= since
          and (target.tenant is null or target.tenant = o.tenant)
          and (target.filter is null or o.payload @> target.filter)
          and postbox.event_type_matches(target.event_types, o.event_type)
        for key share of o
    ),
    upserted as (
        insert into postbox.deliveries as d (event_id, endpoint_id, next_attempt_at)
        select m.event_id, endpoint, case when target.enabled then now() else 'infinity' end from matching m
        on conflict on constraint deliveries_event_endpoint_key do update
            set status = 'pending', next_attempt_at = excluded.next_attempt_at, lease_token = null,
                leased_until = null, updated_at = now()
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

-- The secrets that sign a request to an endpoint: the current one, and a
-- rotated-out one until it expires. One definition for the claim and the
-- dispatch pass, which both return requests; a plain SQL expression, so the
-- planner inlines it into them.
create function postbox.signing_secrets(endpoint postbox.endpoints) returns text[]
language sql stable
as $$
    select array_remove(array[endpoint.secret,
                              case when endpoint.previous_secret_expires_at > now()
                                   then endpoint.previous_secret end], null)
$$;

-- Every endpoint pattern that matches an event type: '*', the type itself,
-- and one 'subject.*' per leading run of segments ('a.*' and 'a.b.*' for
-- 'a.b.c'). Endpoints whose event_types overlap it want the type, the same
-- answer as event_type_matches, but a dispatch pass computes it once per
-- type and then tests each endpoint with the array overlap operator instead
-- of a function call.
create function postbox.patterns_matching(event_type text) returns text[]
language sql immutable parallel safe
set search_path = pg_catalog, pg_temp
as $$
    select array['*', event_type] || array(
        select array_to_string(segments[1:n], '.') || '.*'
        from (select string_to_array(event_type, '.') as segments) s,
             generate_series(1, cardinality(s.segments) - 1) as n
        order by n
    );
$$;
