-- postbox schema, version 4: attempts partitioned by day.
--
-- Apply with `postbox migrate`, or by hand in one transaction:
--   psql -v ON_ERROR_STOP=1 --single-transaction -f sql/migrations/0004_attempts_by_day.sql
--
-- Attempts are the biggest table (one row per HTTP request, with headers and
-- a response body). Partitioned by day, retention drops a whole day at once
-- instead of deleting rows one by one (no dead tuples, no vacuum debt). The
-- relay keeps partitions a few days ahead; rows outside every day partition
-- land in attempts_default.

insert into postbox.schema_migrations (version, name) values (4, 'attempts_by_day');

alter table postbox.attempts rename to attempts_unpartitioned;
alter index postbox.attempts_delivery_idx rename to attempts_unpartitioned_delivery_idx;
alter index postbox.attempts_started_idx rename to attempts_unpartitioned_started_idx;
alter index postbox.attempts_pkey rename to attempts_unpartitioned_pkey;
alter table postbox.attempts_unpartitioned rename constraint attempts_status_or_error
    to attempts_unpartitioned_status_or_error;
alter table postbox.attempts_unpartitioned rename constraint attempts_attempt_number_check
    to attempts_unpartitioned_attempt_number_check;
alter table postbox.attempts_unpartitioned rename constraint attempts_delivery_id_fkey
    to attempts_unpartitioned_delivery_id_fkey;

create table postbox.attempts (
    id               bigint generated always as identity,
    delivery_id      uuid not null references postbox.deliveries (id) on delete cascade,
    attempt_number   int not null check (attempt_number >= 1),
    started_at       timestamptz not null,
    duration_ms      int not null,
    request_headers  jsonb,
    response_status  int,
    response_headers jsonb,
    response_body    text,
    error            text,
    constraint attempts_status_or_error check ((response_status is null) <> (error is null)),
    primary key (id, started_at)
) partition by range (started_at);
create index attempts_delivery_idx on postbox.attempts (delivery_id, attempt_number);
-- recent throughput (postbox status, the web page)
create index attempts_started_idx on postbox.attempts (started_at);
create table postbox.attempts_default partition of postbox.attempts default;

-- Creates the day partitions from today (UTC) to `days_ahead` days later that
-- do not exist yet. Runs as the schema owner, so that relays need no DDL
-- rights. A day whose rows already sit in attempts_default is left there.
create function postbox.add_attempt_partitions(days_ahead int default 3) returns int
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
-- DDL on a partition locks the parent: wait briefly, never stall the relay.
set lock_timeout = '5s'
as $$
declare
    day date;
    added int := 0;
begin
    for day in
        select d::date from generate_series((now() at time zone 'UTC')::date,
                                            (now() at time zone 'UTC')::date + days_ahead, interval '1 day') d
    loop
        continue when to_regclass(format('postbox.attempts_%s', to_char(day, 'YYYYMMDD'))) is not null;
        begin
            execute format(
                'create table postbox.%I partition of postbox.attempts for values from (%L) to (%L)',
                'attempts_' || to_char(day, 'YYYYMMDD'),
                (day::timestamp at time zone 'UTC'), ((day + 1)::timestamp at time zone 'UTC'));
            added := added + 1;
        exception when check_violation then
            -- attempts_default already holds rows of that day: keep them there
            null;
        end;
    end loop;
    return added;
end;
$$;

-- Drops the day partitions that end at or before `before`; returns how many.
create function postbox.drop_attempt_partitions(before timestamptz) returns int
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
set lock_timeout = '5s'
as $$
declare
    partition_name text;
    dropped int := 0;
begin
    for partition_name in
        select c.relname
        from pg_inherits i
        join pg_class c on c.oid = i.inhrelid
        where i.inhparent = 'postbox.attempts'::regclass
          and c.relname ~ '^attempts_[0-9]{8}$'
          and (to_date(substring(c.relname from 10), 'YYYYMMDD') + 1)::timestamp at time zone 'UTC' <= before
    loop
        execute format('drop table postbox.%I', partition_name);
        dropped := dropped + 1;
    end loop;
    return dropped;
end;
$$;

revoke execute on function postbox.add_attempt_partitions(int), postbox.drop_attempt_partitions(timestamptz)
    from public;
grant execute on function postbox.add_attempt_partitions(int), postbox.drop_attempt_partitions(timestamptz)
    to postbox_relay, postbox_admin;

-- Today's partition and a few ahead, then the history moves over (rows of
-- earlier days go to attempts_default, and retention deletes them in time).
select postbox.add_attempt_partitions(3);
insert into postbox.attempts (id, delivery_id, attempt_number, started_at, duration_ms, request_headers,
                              response_status, response_headers, response_body, error)
overriding system value
select id, delivery_id, attempt_number, started_at, duration_ms, request_headers,
       response_status, response_headers, response_body, error
from postbox.attempts_unpartitioned;
select setval(pg_get_serial_sequence('postbox.attempts', 'id'),
              coalesce((select max(id) from postbox.attempts_unpartitioned), 0) + 1, false);
drop table postbox.attempts_unpartitioned;

-- Grants: 0003's default privileges cover the new tables for the relay and
-- admins; the writer role never had attempts.
