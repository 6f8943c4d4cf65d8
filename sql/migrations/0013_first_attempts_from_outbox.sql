-- postbox schema, version 13: first attempts straight from the outbox.
--
-- A first attempt that a relay sends at once writes no delivery row before
-- the request: the relay inserts the delivery with its outcome afterwards
-- (succeeded, or pending with its retry), one insert where a delivery used
-- to cost an insert and an update. While such requests are in flight, a
-- dispatch batch row holds their events instead: if the relay dies, the
-- batch's lease runs out and its events are dispatched again, so each
-- (event, endpoint) without a delivery row by then is sent again, as an
-- expired delivery lease has always meant.
--
-- Visible change: an event's deliveries appear in postbox.deliveries once
-- their first attempt has an outcome, no longer while it is in flight.
--
-- Apply with `postbox migrate`, or by hand in one transaction:
--   psql -v ON_ERROR_STOP=1 --single-transaction -f sql/migrations/0013_first_attempts_from_outbox.sql

insert into postbox.schema_migrations (version, name) values (13, 'first_attempts_from_outbox');

-- One row per dispatch pass that sent first attempts itself, deleted by the
-- write after which each of them has its delivery. lease_token is the pass's
-- claim token, which its requests carry; (outbox_ids[i], endpoint_ids[i]) the
-- event and endpoint of each request. Whether a batch is done is read from
-- the deliveries, never counted apart: a relay's write that a crash lost
-- (relays commit asynchronously) leaves its pairs without a delivery, and
-- the batch then runs out of lease and sends them again.
create table postbox.dispatch_batches (
    lease_token  uuid primary key,
    leased_until timestamptz not null,
    outbox_ids   bigint[] not null,
    endpoint_ids uuid[] not null,
    constraint dispatch_batches_one_endpoint_per_event
        check (cardinality(outbox_ids) = cardinality(endpoint_ids))
);
comment on table postbox.dispatch_batches is
    'first attempts in flight without a delivery row; re-dispatched when the lease runs out';
-- the dispatcher's look for batches whose relay died
create index dispatch_batches_expiry_idx on postbox.dispatch_batches (leased_until);
-- A queue table: a row lives for one request's time.
alter table postbox.dispatch_batches set (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000);

grant select, insert, update, delete on postbox.dispatch_batches to postbox_relay;
grant select on postbox.dispatch_batches to postbox_admin;
