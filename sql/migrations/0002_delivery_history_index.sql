-- postbox schema, version 2: the delivery history in time order.
--
-- Apply with `postbox migrate`, or by hand in one transaction:
--   psql -v ON_ERROR_STOP=1 --single-transaction -f sql/migrations/0002_delivery_history_index.sql

insert into postbox.schema_migrations (version, name) values (2, 'delivery_history_index');

-- Newest-first delivery lists (web page, API, CLI) page by (created_at, id)
-- and count recent volume per event type; without this index each page sorts
-- the whole history.
create index deliveries_created_idx on postbox.deliveries (created_at, id);
