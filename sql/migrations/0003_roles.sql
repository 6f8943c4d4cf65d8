-- postbox schema, version 3: least-privilege roles.
--
-- Apply with `postbox migrate`, or by hand in one transaction:
--   psql -v ON_ERROR_STOP=1 --single-transaction -f sql/migrations/0003_roles.sql
--
-- Three group roles (NOLOGIN); grant them to your login roles:
--   grant postbox_writer to app;        -- apps: insert events, emit; sees no subscriptions
--   grant postbox_relay  to relay;      -- `postbox run`: reads and writes the queue, no DDL
--   grant postbox_admin  to ops;        -- manage endpoints, inspect and redeliver
-- `postbox migrate` itself runs as the schema's owner.

insert into postbox.schema_migrations (version, name) values (3, 'roles');

-- Roles belong to the cluster, not the database: another database on the same
-- server may have made them already.
do $$
declare
    role_name text;
begin
    foreach role_name in array array['postbox_writer', 'postbox_relay', 'postbox_admin'] loop
        if not exists (select from pg_catalog.pg_roles where rolname = role_name) then
            -- Managed databases (RDS, Cloud SQL, ...) may give no CREATEROLE:
            -- say so and the ways out instead of Postgres's bare refusal.
            if not exists (select from pg_catalog.pg_roles
                           where rolname = current_user and (rolcreaterole or rolsuper)) then
                raise exception 'role % may not create roles (it lacks CREATEROLE) and role % does not exist', current_user, role_name
                    using errcode = 'insufficient_privilege',
                          hint = 'have a role with CREATEROLE create postbox_writer, postbox_relay and postbox_admin (create role ... nologin) first, or install with postbox migrate --skip-roles';
            end if;
            execute format('create role %I nologin', role_name);
        end if;
    end loop;
end;
$$;

-- Functions are callable by PUBLIC unless revoked; here only by these roles.
-- (Trigger functions need no EXECUTE grant: Postgres checks it when the
-- trigger is created, not when it fires.)
revoke execute on all functions in schema postbox from public;
alter default privileges in schema postbox revoke execute on functions from public;
grant usage on schema postbox to postbox_writer, postbox_relay, postbox_admin;

-- Writers append events. The outbox triggers read the event type catalog
-- (not secret) and the wake-up flags; tracked tables' triggers also set
-- `previous`. `returning event_id` needs to read that one column.
grant select on postbox.event_types, postbox.wakeup to postbox_writer;
grant insert (event_id, event_type, payload, tenant, subject_type, subject_id, actor, occurred_at, previous)
    on postbox.outbox to postbox_writer;
grant select (event_id) on postbox.outbox to postbox_writer;
grant execute on function postbox.emit(text, jsonb, text, text, text, jsonb) to postbox_writer;

-- The relay dispatches, delivers, records attempts, keeps endpoint health,
-- publishes its settings, and serves the admin API and page: all DML, no DDL.
grant select, insert, update, delete on all tables in schema postbox to postbox_relay;
revoke insert, update, delete on postbox.schema_migrations from postbox_relay;
grant execute on all functions in schema postbox to postbox_relay;

-- Admins manage endpoints and event types, read everything (secrets
-- included), redeliver, replay and ping.
grant select on all tables in schema postbox to postbox_admin;
grant insert, update, delete on postbox.endpoints to postbox_admin;
grant insert, update on postbox.event_types, postbox.deliveries to postbox_admin;
grant insert on postbox.outbox to postbox_admin;
grant execute on all functions in schema postbox to postbox_admin;

-- Tables and functions that later migrations add get the same grants.
alter default privileges in schema postbox
    grant select, insert, update, delete on tables to postbox_relay;
alter default privileges in schema postbox grant select on tables to postbox_admin;
alter default privileges in schema postbox grant execute on functions to postbox_relay, postbox_admin;
