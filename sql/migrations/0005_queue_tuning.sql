-- postbox schema, version 5: deliveries leave room for their claim.
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
