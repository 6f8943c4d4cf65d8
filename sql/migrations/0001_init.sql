-- postbox schema, version 1.
--
-- Apply with `postbox migrate`, or by hand in one transaction:
--   psql -v ON_ERROR_STOP=1 --single-transaction -f sql/migrations/0001_init.sql
-- The file records itself in postbox.schema_migrations, so both ways agree on
-- what is installed. It holds no BEGIN/COMMIT: the caller owns the transaction.

create schema if not exists postbox;

create table if not exists postbox.schema_migrations (
    version    int primary key,
    name       text not null,
    applied_at timestamptz not null default now()
);
insert into postbox.schema_migrations (version, name) values (1, 'init');

-- Timestamps as RFC 3339 in UTC with microseconds, the way the wire and the
-- admin API show them.
create function postbox.rfc3339(ts timestamptz) returns text
language sql immutable parallel safe
as $$
    select to_char(ts at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"');
$$;

-- ---------------------------------------------------------------------------
-- Event type catalog
-- ---------------------------------------------------------------------------
create table postbox.event_types (
    name        text primary key,
    description text,
    archived    boolean not null default false,
    created_at  timestamptz not null default now(),
    updated_at  timestamptz not null default now(),
    constraint event_types_name_format
        check (name ~ '^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$' and length(name) <= 200)
);

create function postbox.register_event_type(name text, description text default null)
returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
    if name is null or name !~ '^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$' or length(name) > 200 then
        raise exception 'invalid event type name %: use dot-separated words of letters, digits, "_" and "-" (e.g. payment.succeeded)',
            coalesce(quote_literal(name), 'NULL')
            using errcode = 'invalid_parameter_value';
    end if;
    insert into postbox.event_types as t (name, description)
    values (register_event_type.name, register_event_type.description)
    on conflict on constraint event_types_pkey do update
        set description = coalesce(excluded.description, t.description),
            archived = false,
            updated_at = now();
end;
$$;

-- ---------------------------------------------------------------------------
-- Wake-up bookkeeping
--
-- NOTIFY serializes commits on a global queue lock, so an app must not pay for
-- it on every transaction. A relay that is draining a backlog marks itself busy
-- here; while the mark is fresh, inserts skip the NOTIFY (the busy relay claims
-- again right away). A relay in poll-only mode turns notifications off.
-- ---------------------------------------------------------------------------
create table postbox.wakeup (
    singleton  boolean primary key default true check (singleton),
    notify     boolean not null default true,
    busy_until timestamptz not null default '-infinity'
);
insert into postbox.wakeup default values;

-- ---------------------------------------------------------------------------
-- The outbox: apps insert here inside their own transactions.
-- ---------------------------------------------------------------------------
create table postbox.outbox (
    id            bigint generated always as identity primary key,
    event_id      uuid not null default gen_random_uuid(),
    event_type    text not null,
    payload       jsonb not null,
    tenant        text,
    subject_type  text,
    subject_id    text,
    actor         jsonb,
    -- old values of the changed columns, set by tracked-table triggers on UPDATE
    previous      jsonb,
    occurred_at   timestamptz not null default now(),
    dispatched_at timestamptz,
    constraint outbox_event_id_key unique (event_id)
);
-- The dispatcher's work queue: only undispatched rows, in insertion order.
create index outbox_undispatched_idx on postbox.outbox (id) where dispatched_at is null;
-- Every dispatched row leaves a dead entry at the head of that index, which
-- each dispatch pass walks until vacuum removes it (measured: 3.7 ms per pass
-- after 300k events). Vacuum queue tables after a fixed number of changes, not
-- a fraction of the table.
alter table postbox.outbox set (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 10000);

-- Validates a row before it lands, with errors that name the bad value. A
-- lookup here rather than a foreign key: a foreign key would take a KEY SHARE
-- lock on the event type row in every app transaction.
create function postbox.outbox_validate() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
    max_bytes int;
begin
    if not exists (select 1 from postbox.event_types t where t.name = new.event_type) then
        raise exception 'unknown event type %', quote_literal(new.event_type)
            using errcode = 'foreign_key_violation',
                  hint = format('register it first: select postbox.register_event_type(%L);', new.event_type);
    end if;
    if jsonb_typeof(new.payload) is distinct from 'object' then
        raise exception 'event payload must be a JSON object, got %', coalesce(jsonb_typeof(new.payload), 'NULL')
            using errcode = 'invalid_parameter_value';
    end if;
    -- Receivers and the relay hold whole payloads in memory; a DBA can raise
    -- the limit with ALTER DATABASE ... SET postbox.max_payload_bytes = ...
    max_bytes := coalesce(nullif(current_setting('postbox.max_payload_bytes', true), '')::int, 1048576);
    if pg_column_size(new.payload) > max_bytes then
        raise exception 'event payload is % bytes, more than the limit of % bytes', pg_column_size(new.payload), max_bytes
            using errcode = 'program_limit_exceeded',
                  hint = 'send a reference to the data instead, or raise postbox.max_payload_bytes';
    end if;
    if new.actor is not null and jsonb_typeof(new.actor) <> 'object' then
        raise exception 'event actor must be a JSON object, got %', jsonb_typeof(new.actor)
            using errcode = 'invalid_parameter_value';
    end if;
    return new;
end;
$$;

create trigger outbox_validate before insert on postbox.outbox
    for each row execute function postbox.outbox_validate();

-- Wakes idle relays: at most one NOTIFY per transaction (identical
-- notifications in one transaction are folded by Postgres), and none while a
-- relay is busy draining the outbox.
create function postbox.outbox_wake_relays() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
    if exists (select 1 from postbox.wakeup w where w.notify and w.busy_until < now()) then
        perform pg_notify('postbox', 'outbox');
    end if;
    return null;
end;
$$;

create trigger outbox_wake_relays after insert on postbox.outbox
    for each statement execute function postbox.outbox_wake_relays();

create function postbox.emit(
    event_type   text,
    payload      jsonb,
    tenant       text default null,
    subject_type text default null,
    subject_id   text default null,
    actor        jsonb default null
) returns uuid
language sql
set search_path = pg_catalog, pg_temp
as $$
    insert into postbox.outbox (event_type, payload, tenant, subject_type, subject_id, actor)
    values (emit.event_type, emit.payload, emit.tenant, emit.subject_type, emit.subject_id, emit.actor)
    returning event_id;
$$;

-- ---------------------------------------------------------------------------
-- Endpoints (subscriptions)
-- ---------------------------------------------------------------------------
create table postbox.endpoints (
    id                          uuid primary key default gen_random_uuid(),
    url                         text not null,
    secret                      text not null,
    -- during rotation the old secret keeps signing until it expires
    previous_secret             text,
    previous_secret_expires_at  timestamptz,
    event_types                 text[] not null default '{*}',
    tenant                      text,
    filter                      jsonb,
    headers                     jsonb not null default '{}',
    enabled                     boolean not null default true,
    disabled_reason             text,
    -- start of the current run of failed attempts; NULL while healthy
    failing_since               timestamptz,
    description                 text,
    created_at                  timestamptz not null default now(),
    updated_at                  timestamptz not null default now()
);

-- A new secret: "whsec_" + base64 of 32 random bytes. gen_random_uuid() draws
-- from the server's strong random source; two of them give 32 bytes (244
-- random bits) without requiring the pgcrypto extension.
create function postbox.generate_secret() returns text
language sql volatile
set search_path = pg_catalog, pg_temp
as $$
    select 'whsec_' || encode(
        decode(replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''), 'hex'),
        'base64');
$$;

-- Raises a clear error for a URL the relay could not POST to.
create function postbox.check_endpoint_url(url text) returns void
language plpgsql immutable
set search_path = pg_catalog, pg_temp
as $$
begin
    if url is null then
        raise exception 'endpoint url must not be NULL' using errcode = 'invalid_parameter_value';
    end if;
    if url !~* '^[a-z][a-z0-9+.-]*:' then
        raise exception 'invalid endpoint url %: expected an absolute http:// or https:// URL', quote_literal(url)
            using errcode = 'invalid_parameter_value';
    end if;
    if url !~* '^https?://' then
        raise exception 'invalid endpoint url %: scheme must be http or https', quote_literal(url)
            using errcode = 'invalid_parameter_value';
    end if;
    if url !~* '^https?://(\[[0-9a-f:.]+\]|[a-z0-9_~%!$&''()*+,;=-]+(\.[a-z0-9_~%!$&''()*+,;=-]+)*\.?)(:[0-9]{1,5})?([/?#][^[:space:]]*)?$' then
        raise exception 'invalid endpoint url %: expected http(s)://host[:port][/path] without spaces or credentials', quote_literal(url)
            using errcode = 'invalid_parameter_value';
    end if;
    if coalesce(substring(url from '^[^:]+://(?:\[[^]]*\]|[^/?#:]*):([0-9]+)')::int, 1) not between 1 and 65535 then
        raise exception 'invalid endpoint url %: port out of range', quote_literal(url)
            using errcode = 'invalid_parameter_value';
    end if;
end;
$$;

-- ---------------------------------------------------------------------------
-- Outbound network policy, as the relays last reported it (postbox run writes
-- its network.* settings here at start). Subscribing refuses URLs whose host
-- is an inward IP literal; host names are checked by the relay after DNS.
-- ---------------------------------------------------------------------------
create table postbox.network_policy (
    singleton     boolean primary key default true check (singleton),
    allow_private boolean not null default false,
    allow_cidrs   cidr[] not null default '{}',
    updated_at    timestamptz not null default now()
);
insert into postbox.network_policy default values;

-- Loopback, private, shared, link-local, metadata, documentation, multicast and
-- reserved ranges (the relay's netpolicy module holds the same list).
create function postbox.inward_ranges() returns cidr[]
language sql immutable parallel safe
as $$
    select array[
        '0.0.0.0/8', '127.0.0.0/8', '10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', '100.64.0.0/10',
        '169.254.0.0/16', '168.63.129.16/32', '192.0.0.0/24', '192.0.2.0/24', '198.51.100.0/24',
        '203.0.113.0/24', '198.18.0.0/15', '224.0.0.0/4', '240.0.0.0/4',
        '::/96', '::1/128', 'fc00::/7', 'fe80::/10', 'fec0::/10', 'ff00::/8', '2001:db8::/32',
        '2001::/32', '100::/64', '64:ff9b::/96', '2002::/16'
    ]::cidr[];
$$;

create function postbox.check_endpoint_network(url text) returns void
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $$
declare
    host   text := rtrim(lower(substring(url from '^[^:]+://(\[[^]]*\]|[^/?#:]*)')), '.');
    ip     inet;
    policy record;
begin
    select * into policy from postbox.network_policy;
    if host = 'localhost' or host like '%.localhost' then
        ip := '127.0.0.1';
    elsif host like '[%' then
        ip := trim(both '[]' from host)::inet;
        if ip << '::ffff:0:0/96' then -- IPv4-mapped: judge the IPv4 address
            ip := '0.0.0.0'::inet + (ip - '::ffff:0.0.0.0'::inet);
        end if;
    elsif host ~ '^(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(\.(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}$' then
        ip := host::inet;
    elsif host ~ '(^|\.)(0x[0-9a-f]*|[0-9]+)\.?$' then
        -- 127.1, 2130706433, 0x7f000001, 0177.0.0.1: browsers and URL parsers read IPv4 here
        raise exception 'invalid endpoint url %: write an IPv4 address as four decimal numbers (a.b.c.d)', quote_literal(url)
            using errcode = 'invalid_parameter_value';
    else
        return; -- a host name: the relay checks what it resolves to
    end if;
    if not coalesce(policy.allow_private, false)
       and ip <<= any(postbox.inward_ranges())
       and not ip <<= any(coalesce(policy.allow_cidrs, '{}')) then
        raise exception 'endpoint url % is refused by network policy: % is a loopback, private, link-local or reserved address',
            quote_literal(url), host(ip)
            using errcode = 'insufficient_privilege',
                  hint = 'relays allow such targets with network.allow_private or network.allow_cidrs';
    end if;
end;
$$;

create function postbox.check_endpoint_secret(secret text) returns void
language plpgsql immutable
set search_path = pg_catalog, pg_temp
as $$
declare
    key_length int;
begin
    if secret is null or secret !~ '^whsec_[A-Za-z0-9+/]+={0,2}$' then
        raise exception 'invalid endpoint secret: expected "whsec_" followed by base64'
            using errcode = 'invalid_parameter_value';
    end if;
    begin
        key_length := length(decode(substr(secret, 7), 'base64'));
    exception when others then
        raise exception 'invalid endpoint secret: the part after "whsec_" is not valid base64'
            using errcode = 'invalid_parameter_value';
    end;
    if key_length not between 24 and 64 then
        raise exception 'invalid endpoint secret: key is % bytes, expected 24 to 64', key_length
            using errcode = 'invalid_parameter_value';
    end if;
end;
$$;

create function postbox.check_event_type_patterns(patterns text[]) returns void
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
end;
$$;

-- Headers that postbox sets itself, or that would break the request.
create function postbox.check_endpoint_headers(headers jsonb) returns void
language plpgsql immutable
set search_path = pg_catalog, pg_temp
as $$
declare
    header record;
begin
    if headers is null or jsonb_typeof(headers) <> 'object' then
        raise exception 'endpoint headers must be a JSON object of strings' using errcode = 'invalid_parameter_value';
    end if;
    for header in select key, value from jsonb_each(headers) loop
        if header.key !~ '^[A-Za-z0-9!#$%&''*+.^_`|~-]+$' then
            raise exception 'invalid header name %', quote_literal(header.key) using errcode = 'invalid_parameter_value';
        end if;
        if jsonb_typeof(header.value) <> 'string' or header.value #>> '{}' ~ '[\r\n]' then
            raise exception 'header % must have a single-line string value', quote_literal(header.key)
                using errcode = 'invalid_parameter_value';
        end if;
        if lower(header.key) ~ '^(webhook-|postbox-)' or lower(header.key) in
            ('host', 'content-type', 'content-length', 'transfer-encoding', 'connection', 'user-agent') then
            raise exception 'header % is set by postbox and cannot be overridden', quote_literal(header.key)
                using errcode = 'invalid_parameter_value';
        end if;
    end loop;
end;
$$;

-- Checks what an insert sets or an update changes, so that the relay's own
-- health updates never trip over a check.
create function postbox.endpoints_validate() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
    inserting boolean := tg_op = 'INSERT';
begin
    if inserting or new.url is distinct from old.url then
        perform postbox.check_endpoint_url(new.url);
        perform postbox.check_endpoint_network(new.url);
    end if;
    if inserting or new.secret is distinct from old.secret then
        perform postbox.check_endpoint_secret(new.secret);
    end if;
    if new.previous_secret is not null and (inserting or new.previous_secret is distinct from old.previous_secret) then
        perform postbox.check_endpoint_secret(new.previous_secret);
    end if;
    if inserting or new.event_types is distinct from old.event_types then
        perform postbox.check_event_type_patterns(new.event_types);
    end if;
    if inserting or new.headers is distinct from old.headers then
        perform postbox.check_endpoint_headers(new.headers);
    end if;
    if new.filter is not null and jsonb_typeof(new.filter) <> 'object' then
        raise exception 'endpoint filter must be a JSON object (events match when payload @> filter)'
            using errcode = 'invalid_parameter_value';
    end if;
    if not inserting then
        new.updated_at := now();
        if new.enabled and not old.enabled then
            new.failing_since := null; -- a re-enabled endpoint starts a fresh failure window
        end if;
    end if;
    if new.enabled then
        new.disabled_reason := null;
    end if;
    return new;
end;
$$;

create trigger endpoints_validate before insert or update on postbox.endpoints
    for each row execute function postbox.endpoints_validate();

-- Parks a disabled endpoint's pending deliveries at 'infinity', so they never
-- sit at the head of the due queue, and makes them due at once on re-enable.
-- Deliveries in flight keep their lease; their outcome is parked likewise.
create function postbox.endpoints_pause_or_resume() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
    update postbox.deliveries d
    set next_attempt_at = case when new.enabled then now() else 'infinity' end
    where d.endpoint_id = new.id
      and d.status = 'pending'
      and (d.lease_token is null or d.leased_until <= now());
    return null;
end;
$$;

create trigger endpoints_pause_or_resume after update of enabled on postbox.endpoints
    for each row when (old.enabled is distinct from new.enabled)
    execute function postbox.endpoints_pause_or_resume();

create function postbox.subscribe(
    url         text,
    event_types text[] default '{*}',
    tenant      text default null,
    filter      jsonb default null,
    secret      text default null
) returns uuid
language sql
set search_path = pg_catalog, pg_temp
as $$
    insert into postbox.endpoints (url, event_types, tenant, filter, secret)
    values (subscribe.url, subscribe.event_types, subscribe.tenant, subscribe.filter,
            coalesce(subscribe.secret, postbox.generate_secret()))
    returning id;
$$;

create function postbox.unsubscribe(endpoint uuid) returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
    delete from postbox.endpoints e where e.id = endpoint;
    if not found then
        raise exception 'no endpoint with id %', endpoint using errcode = 'no_data_found';
    end if;
end;
$$;

-- True when an endpoint's event_types patterns select an event type: an exact
-- name, 'subject.*' (every type that begins with 'subject.') or '*'.
create function postbox.event_type_matches(patterns text[], event_type text) returns boolean
language sql immutable parallel safe
as $$
    select event_type = any(patterns)
        or '*' = any(patterns)
        or exists (
            select 1 from unnest(patterns) as p
            where right(p, 2) = '.*' and starts_with(event_type, left(p, -1))
        );
$$;

-- ---------------------------------------------------------------------------
-- Deliveries: one per (event, endpoint); attempts: one per HTTP request.
-- ---------------------------------------------------------------------------
create table postbox.deliveries (
    id              uuid primary key default gen_random_uuid(),
    event_id        uuid not null references postbox.outbox (event_id) on delete cascade,
    endpoint_id     uuid not null references postbox.endpoints (id) on delete cascade,
    status          text not null default 'pending',
    attempt_count   int not null default 0,
    -- when pending: when the next attempt is due ('infinity' while the
    -- endpoint is disabled)
    next_attempt_at timestamptz,
    -- while a relay holds the delivery: its claim token (a result is recorded
    -- only with the current one) and lease expiry. A relay that dies leaves
    -- the row to others once the lease runs out. Neither column is indexed,
    -- so a claim can be a HOT update.
    lease_token     uuid,
    leased_until    timestamptz,
    last_error      text,
    created_at      timestamptz not null default now(),
    updated_at      timestamptz not null default now(),
    constraint deliveries_event_endpoint_key unique (event_id, endpoint_id),
    constraint deliveries_status_check
        check (status in ('pending', 'succeeded', 'failed', 'cancelled')),
    constraint deliveries_pending_has_next_attempt
        check ((status = 'pending') = (next_attempt_at is not null))
);
-- Room on each page for the claim's HOT update; vacuumed like the outbox.
alter table postbox.deliveries set (fillfactor = 80, autovacuum_vacuum_scale_factor = 0,
                                    autovacuum_vacuum_threshold = 10000);
create index deliveries_due_idx on postbox.deliveries (next_attempt_at) where status = 'pending';
create index deliveries_endpoint_idx on postbox.deliveries (endpoint_id, created_at);

create table postbox.attempts (
    id               bigint generated always as identity primary key,
    delivery_id      uuid not null references postbox.deliveries (id) on delete cascade,
    attempt_number   int not null check (attempt_number >= 1),
    started_at       timestamptz not null,
    duration_ms      int not null,
    request_headers  jsonb,
    response_status  int,
    response_headers jsonb,
    response_body    text,
    error            text,
    constraint attempts_status_or_error check ((response_status is null) <> (error is null))
);
create index attempts_delivery_idx on postbox.attempts (delivery_id, attempt_number);
-- recent throughput (postbox status) and, later, retention
create index attempts_started_idx on postbox.attempts (started_at);

-- ---------------------------------------------------------------------------
-- Tracked tables: row triggers that emit <subject>.created|updated|destroyed
-- ---------------------------------------------------------------------------

-- Trigger arguments: subject, tenant column ('' for none), excluded columns
-- and primary key columns (both as text[] literals).
create function postbox.tracked_row_changed() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
    subject        text := tg_argv[0];
    tenant_column  text := nullif(tg_argv[1], '');
    excluded       text[] := tg_argv[2]::text[];
    key_columns    text[] := tg_argv[3]::text[];
    row_json       jsonb;
    data           jsonb;
    previous       jsonb;
    action         text;
    actor_setting  text;
    actor          jsonb;
    key_values     text[];
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

    select array_agg(row_json ->> k) into key_values from unnest(key_columns) as k;

    insert into postbox.outbox (event_type, payload, tenant, subject_type, subject_id, actor, previous)
    values (
        subject || '.' || action,
        data,
        case when tenant_column is not null then row_json ->> tenant_column end,
        subject,
        array_to_string(key_values, ','),
        actor,
        previous
    );
    return null;
end;
$$;

create function postbox.track(
    tbl             regclass,
    subject         text default null,
    tenant_column   text default null,
    actions         text[] default '{created,updated,destroyed}',
    exclude_columns text[] default '{}'
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
        'create trigger postbox_track after %s on %s for each row execute function postbox.tracked_row_changed(%L, %L, %L, %L)',
        array_to_string(ops, ' or '), tbl, subject_name, coalesce(tenant_column, ''),
        coalesce(exclude_columns, '{}')::text, coalesce(key_columns, '{}')::text);
end;
$$;

create function postbox.untrack(tbl regclass) returns void
language plpgsql
set search_path = pg_catalog, pg_temp
set client_min_messages = warning
as $$
begin
    execute format('drop trigger if exists postbox_track on %s', tbl);
end;
$$;

-- ---------------------------------------------------------------------------
-- Operations: rotate a secret, redeliver, replay, ping
-- ---------------------------------------------------------------------------

-- A new secret for an endpoint; the old one keeps signing alongside it for
-- 24 hours, so receivers can switch without missing a webhook.
create function postbox.rotate_secret(endpoint uuid) returns text
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
    new_secret text := postbox.generate_secret();
begin
    update postbox.endpoints e
    set previous_secret = e.secret,
        previous_secret_expires_at = now() + interval '24 hours',
        secret = new_secret
    where e.id = endpoint;
    if not found then
        raise exception 'no endpoint with id %', endpoint using errcode = 'no_data_found';
    end if;
    return new_secret;
end;
$$;

-- Schedules one more attempt of a delivery, now, whatever its state. A
-- delivery in flight is left to finish.
create function postbox.redeliver(delivery uuid) returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
    target record;
begin
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
    set status = 'pending', next_attempt_at = now(), lease_token = null, leased_until = null, updated_at = now()
    where d.id = delivery;
    perform pg_notify('postbox', 'deliveries');
end;
$$;

-- Sends again, to one endpoint, every event since `since` that it would
-- receive today (event type patterns, tenant, filter): existing deliveries are
-- attempted once more, missing ones are created. Returns how many.
create function postbox.replay(endpoint uuid, since timestamptz) returns bigint
language plpgsql
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

-- A `postbox.ping` event for one endpoint only, to check that it receives and
-- verifies webhooks (like GitHub's ping). Returns the event id.
create function postbox.ping(endpoint uuid) returns uuid
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
    event uuid;
    target_enabled boolean;
begin
    select e.enabled into target_enabled from postbox.endpoints e where e.id = endpoint;
    if not found then
        raise exception 'no endpoint with id %', endpoint using errcode = 'no_data_found';
    end if;
    -- Dispatched already: the dispatcher must not fan it out to others.
    insert into postbox.outbox (event_type, payload, dispatched_at)
    values ('postbox.ping', jsonb_build_object('endpoint_id', endpoint, 'message', 'ping from postbox'), now())
    returning event_id into event;
    insert into postbox.deliveries (event_id, endpoint_id, next_attempt_at)
    values (event, endpoint, case when target_enabled then now() else 'infinity' end);
    perform pg_notify('postbox', 'deliveries');
    return event;
end;
$$;

select postbox.register_event_type('postbox.ping', 'A test event sent to one endpoint on request');
