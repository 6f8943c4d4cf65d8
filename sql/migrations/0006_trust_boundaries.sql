-- postbox schema, version 6: no value a writer or operator can store keeps the
-- relay from delivering, and what the database accepts the relay can send.
--
-- Apply with `postbox migrate`, or by hand in one transaction:
--   psql -v ON_ERROR_STOP=1 --single-transaction -f sql/migrations/0006_trust_boundaries.sql

insert into postbox.schema_migrations (version, name) values (6, 'trust_boundaries');

-- RFC 3339 has four-digit years and no infinity: anything else is NULL rather
-- than a string a receiver would misread (to_char drops the era of BC dates).
create or replace function postbox.rfc3339(ts timestamptz) returns text
language sql immutable parallel safe
as $$
    select case when ts >= '0001-01-01 00:00:00+00' and ts < '10000-01-01 00:00:00+00'
                then to_char(ts at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') end;
$$;

-- Whether the current role may write events of the reserved `postbox.` types:
-- the schema's owner, relays and admins (postbox's own functions run as
-- them), never a role that is only a writer.
create function postbox.may_emit_reserved_types() returns boolean
language sql stable
set search_path = pg_catalog, pg_temp
as $$
    select pg_has_role(current_user, n.nspowner, 'MEMBER')
           or exists (select 1 from pg_roles r
                      where r.rolname in ('postbox_relay', 'postbox_admin')
                        and pg_has_role(current_user, r.oid, 'MEMBER'))
    from pg_namespace n
    where n.nspname = 'postbox';
$$;

-- The payload limit a DBA set for this database (ALTER DATABASE ... SET
-- postbox.max_payload_bytes), or 1 MiB; never below 4 KiB, which the outbox
-- check lets through without measuring. Read from the catalog, not
-- current_setting(): a writer can SET a session value but not this one.
create function postbox.max_payload_bytes() returns bigint
language sql stable
set search_path = pg_catalog, pg_temp
as $$
    select greatest(4096, coalesce(
        (select substr(s.setting, length('postbox.max_payload_bytes=') + 1)::bigint
         from pg_db_role_setting d
         cross join lateral unnest(d.setconfig) as s(setting)
         where d.setdatabase = (select oid from pg_database where datname = current_database())
           and d.setrole = 0
           and s.setting like 'postbox.max_payload_bytes=%'),
        1048576));
$$;

create or replace function postbox.outbox_validate() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
    event_bytes bigint;
    max_bytes   bigint;
begin
    if lower(new.event_type) like 'postbox.%' and not postbox.may_emit_reserved_types() then
        raise exception 'event type % is reserved: types beginning with "postbox." are emitted by postbox itself',
            quote_literal(new.event_type)
            using errcode = 'insufficient_privilege';
    end if;
    if not exists (select 1 from postbox.event_types t where t.name = new.event_type) then
        raise exception 'unknown event type %', quote_literal(new.event_type)
            using errcode = 'foreign_key_violation',
                  hint = format('register it first: select postbox.register_event_type(%L);', new.event_type);
    end if;
    if jsonb_typeof(new.payload) is distinct from 'object' then
        raise exception 'event payload must be a JSON object, got %', coalesce(jsonb_typeof(new.payload), 'NULL')
            using errcode = 'invalid_parameter_value';
    end if;
    if new.actor is not null and jsonb_typeof(new.actor) <> 'object' then
        raise exception 'event actor must be a JSON object, got %', jsonb_typeof(new.actor)
            using errcode = 'invalid_parameter_value';
    end if;
    if new.previous is not null and jsonb_typeof(new.previous) <> 'object' then
        raise exception 'event previous must be a JSON object of the old values, got %', jsonb_typeof(new.previous)
            using errcode = 'invalid_parameter_value';
    end if;
    if not (new.occurred_at >= '0001-01-01 00:00:00+00' and new.occurred_at < '10000-01-01 00:00:00+00') then
        raise exception 'event occurred_at % cannot be sent: webhook timestamps are RFC 3339, years 0001 to 9999',
            new.occurred_at
            using errcode = 'datetime_field_overflow';
    end if;
    -- What the relay sends, measured as sent (JSON text, not the compressed
    -- datum): receivers and the relay hold whole requests in memory. Tenant
    -- and subject are not sent but stored and shown: they count too.
    -- The common small event skips the text: uncompressed jsonb is never
    -- more than six times smaller than its text (a control character, one
    -- byte inside, is six as \u00XX), so a small datum bounds it.
    event_bytes := coalesce(octet_length(new.tenant), 0) + coalesce(octet_length(new.subject_type), 0)
                   + coalesce(octet_length(new.subject_id), 0);
    if pg_column_compression(new.payload) is null and pg_column_compression(new.actor) is null
       and pg_column_compression(new.previous) is null
       and event_bytes + 6 * (pg_column_size(new.payload) + coalesce(pg_column_size(new.actor), 0)
                              + coalesce(pg_column_size(new.previous), 0)) <= 4096 then
        return new;
    end if;
    event_bytes := event_bytes + octet_length(new.payload::text) + coalesce(octet_length(new.actor::text), 0)
                   + coalesce(octet_length(new.previous::text), 0);
    if event_bytes > 4096 then
        max_bytes := postbox.max_payload_bytes();
        if event_bytes > max_bytes then
            raise exception 'event is % bytes (payload, actor and previous as JSON, tenant and subject), more than the limit of % bytes',
                event_bytes, max_bytes
                using errcode = 'program_limit_exceeded',
                      hint = 'send a reference to the data instead, or raise the limit: alter database ... set postbox.max_payload_bytes = ...';
        end if;
    end if;
    return new;
end;
$$;

-- Names that postbox sets, that frame the request, or that belong to one hop
-- (hop-by-hop headers, and those a proxy or the HTTP client owns).
create or replace function postbox.check_endpoint_headers(headers jsonb) returns void
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
        if jsonb_typeof(header.value) <> 'string' or header.value #>> '{}' ~ '[\x01-\x08\x0a-\x1f\x7f]' then
            raise exception 'header % must have a single-line string value without control characters',
                quote_literal(header.key)
                using errcode = 'invalid_parameter_value';
        end if;
        if lower(header.key) ~ '^(webhook-|postbox-)' or lower(header.key) in
            ('host', 'content-type', 'content-length', 'transfer-encoding', 'connection', 'user-agent') then
            raise exception 'header % is set by postbox and cannot be overridden', quote_literal(header.key)
                using errcode = 'invalid_parameter_value';
        end if;
        if lower(header.key) in ('te', 'upgrade', 'keep-alive', 'expect', 'trailer', 'proxy-authorization',
                                 'proxy-authenticate', 'proxy-connection', 'content-encoding') then
            raise exception 'header % cannot be sent: it belongs to one hop or frames the body', quote_literal(header.key)
                using errcode = 'invalid_parameter_value';
        end if;
    end loop;
end;
$$;

-- Canonical base64 only: trailing bits that decode ignores would make the
-- relay's stricter decoder refuse a secret the database accepted.
create or replace function postbox.check_endpoint_secret(secret text) returns void
language plpgsql immutable
set search_path = pg_catalog, pg_temp
as $$
declare
    key bytea;
begin
    if secret is null or secret !~ '^whsec_[A-Za-z0-9+/]+={0,2}$' then
        raise exception 'invalid endpoint secret: expected "whsec_" followed by base64'
            using errcode = 'invalid_parameter_value';
    end if;
    begin
        key := decode(substr(secret, 7), 'base64');
    exception when others then
        raise exception 'invalid endpoint secret: the part after "whsec_" is not valid base64'
            using errcode = 'invalid_parameter_value';
    end;
    if replace(encode(key, 'base64'), E'\n', '') <> substr(secret, 7) then
        raise exception 'invalid endpoint secret: the part after "whsec_" is not canonical base64 (padding or trailing bits)'
            using errcode = 'invalid_parameter_value';
    end if;
    if length(key) not between 24 and 64 then
        raise exception 'invalid endpoint secret: key is % bytes, expected 24 to 64', length(key)
            using errcode = 'invalid_parameter_value';
    end if;
end;
$$;

-- Percent-encoding in a host name is decoded by URL parsers (so
-- 127.0.0.%31 is 127.0.0.1): refuse it, so that this check and the relay's
-- judge the same host.
create or replace function postbox.check_endpoint_url(url text) returns void
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
    if substring(url from '^[^:]+://([^/?#]*)') like '%\%%' then
        raise exception 'invalid endpoint url %: write the host without percent-encoding', quote_literal(url)
            using errcode = 'invalid_parameter_value';
    end if;
    if coalesce(substring(url from '^[^:]+://(?:\[[^]]*\]|[^/?#:]*):([0-9]+)')::int, 1) not between 1 and 65535 then
        raise exception 'invalid endpoint url %: port out of range', quote_literal(url)
            using errcode = 'invalid_parameter_value';
    end if;
end;
$$;

-- Adds local-use NAT64 (64:ff9b:1::/48); IPv4-translated addresses
-- (::ffff:0:a.b.c.d) are judged by their IPv4 address, as mapped ones are.
create or replace function postbox.inward_ranges() returns cidr[]
language sql immutable parallel safe
as $$
    select array[
        '0.0.0.0/8', '127.0.0.0/8', '10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', '100.64.0.0/10',
        '169.254.0.0/16', '168.63.129.16/32', '192.0.0.0/24', '192.0.2.0/24', '198.51.100.0/24',
        '203.0.113.0/24', '198.18.0.0/15', '224.0.0.0/4', '240.0.0.0/4',
        '::/96', '::1/128', 'fc00::/7', 'fe80::/10', 'fec0::/10', 'ff00::/8', '2001:db8::/32',
        '2001::/32', '100::/64', '64:ff9b::/96', '64:ff9b:1::/48', '2002::/16'
    ]::cidr[];
$$;

create or replace function postbox.check_endpoint_network(url text) returns void
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
        elsif ip << '::ffff:0:0:0/96' then -- IPv4-translated, likewise
            ip := '0.0.0.0'::inet + (ip - '::ffff:0:0.0.0.0'::inet);
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

-- Tracked tables with a composite primary key: subject_id is the key values
-- as a JSON array (["1","k,2"]), so that no value's commas can make two rows'
-- ids alike. A single-column key stays the plain value.
create or replace function postbox.tracked_row_changed() returns trigger
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

    insert into postbox.outbox (event_type, payload, tenant, subject_type, subject_id, actor, previous)
    values (subject || '.' || action, data,
            case when tenant_column is not null then row_json ->> tenant_column end,
            subject, subject_key, actor, previous);
    return null;
end;
$$;

-- Retention prunes by dispatched_at, a time the relay sets, never by
-- occurred_at, which a writer chooses. Replay and redeliver move an event's
-- dispatched_at to now before they touch its deliveries: a prune waiting on
-- that row then re-reads it, finds it recent and keeps it (a lock alone left
-- the prune deciding on what it saw before the replay). Lock order: the
-- outbox row, then its deliveries, as the prune's delete trigger takes them.
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
        returning o.event_id
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
    set status = 'pending', next_attempt_at = now(), lease_token = null, leased_until = null, updated_at = now()
    where d.id = delivery;
    perform pg_notify('postbox', 'deliveries');
end;
$$;


-- About the bytes of a request body (the envelope around these JSON texts),
-- for the relay's own limit on what it sends (delivery.max_request_body).
create function postbox.request_bytes(event_type text, payload text, previous text, actor text) returns bigint
language sql immutable parallel safe
as $$
    select octet_length(event_type) + octet_length(payload) + coalesce(octet_length(previous), 0)
           + coalesce(octet_length(actor), 0) + 100;
$$;

-- Why an event of `bytes` is not sent by a relay that sends at most `max_bytes`.
create function postbox.too_big_to_send(bytes bigint, max_bytes bigint) returns text
language sql immutable parallel safe
as $$
    select case when bytes > max_bytes then
        format('the request would be about %s bytes, more than delivery.max_request_body (%s bytes): '
               'raise it, or send a reference to the data instead', bytes, max_bytes)
    end;
$$;

-- The outbox trigger calls these as the writing role.
grant execute on function postbox.may_emit_reserved_types(), postbox.max_payload_bytes() to postbox_writer;

-- Functions are created executable by PUBLIC. 0003's ALTER DEFAULT PRIVILEGES
-- ... IN SCHEMA could not undo that (per-schema defaults only add grants), so
-- every migration that creates functions ends with this revoke.
revoke execute on all functions in schema postbox from public;
