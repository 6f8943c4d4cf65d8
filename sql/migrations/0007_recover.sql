-- postbox schema, version 7: recover what failed.
--
-- Apply with `postbox migrate`, or by hand in one transaction:
--   psql -v ON_ERROR_STOP=1 --single-transaction -f sql/migrations/0007_recover.sql

insert into postbox.schema_migrations (version, name) values (7, 'recover');

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

revoke execute on all functions in schema postbox from public;
