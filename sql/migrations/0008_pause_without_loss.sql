-- postbox schema, version 8: pause without loss.
--
-- Apply with `postbox migrate`, or by hand in one transaction:
--   psql -v ON_ERROR_STOP=1 --single-transaction -f sql/migrations/0008_pause_without_loss.sql

insert into postbox.schema_migrations (version, name) values (8, 'pause_without_loss');

-- Relays now create deliveries for paused endpoints too, parked at
-- 'infinity'. Resuming makes them due oldest first: each is due as of when it
-- was created (now, for a delivery created in the future by a skewed clock),
-- so the claim, which takes the earliest due first, sends them in that order.
-- Deliveries in flight keep their lease; their outcome is parked likewise.
create or replace function postbox.endpoints_pause_or_resume() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
    update postbox.deliveries d
    set next_attempt_at = case when new.enabled then least(now(), d.created_at) else 'infinity' end
    where d.endpoint_id = new.id
      and d.status = 'pending'
      and (d.lease_token is null or d.leased_until <= now());
    return null;
end;
$$;

revoke execute on all functions in schema postbox from public;
