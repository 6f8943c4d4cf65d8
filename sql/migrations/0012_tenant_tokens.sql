-- postbox schema, version 12: tenant tokens, short-lived bearer tokens that
-- see and manage one tenant's endpoints and deliveries (a customer portal).
--
-- Apply with `postbox migrate`, or by hand in one transaction:
--   psql -v ON_ERROR_STOP=1 --single-transaction -f sql/migrations/0012_tenant_tokens.sql

insert into postbox.schema_migrations (version, name) values (12, 'tenant_tokens');

-- Only each token's SHA-256 digest is kept: reading this table gives away no
-- token. The relay looks tokens up by digest and deletes them a day after
-- they expire (until then one still in use is refused as expired, not unknown).
create table postbox.tenant_tokens (
    token_sha256 bytea primary key check (octet_length(token_sha256) = 32),
    tenant       text not null check (tenant <> ''),
    expires_at   timestamptz not null,
    created_at   timestamptz not null default now(),
    constraint tenant_tokens_expire_after_creation check (expires_at > created_at)
);
-- the retention round's delete of expired tokens
create index tenant_tokens_expires_idx on postbox.tenant_tokens (expires_at);

-- The relay mints (API), checks and deletes tokens; admins mint (CLI), read
-- and revoke them. Nobody changes a token; writers see none.
grant select, insert, delete on postbox.tenant_tokens to postbox_relay, postbox_admin;
revoke update on postbox.tenant_tokens from postbox_relay;

revoke execute on all functions in schema postbox from public;
