-- postbox schema, version 14: attempts found by start time through the BRIN
-- index alone.
--
-- Every attempt wrote an entry into attempts_started_idx, a B-tree on
-- started_at, that only the status page's counts of the last minute and the
-- history chart read. attempts_started_brin (0007) answers both: attempts
-- are appended in start order, so recent ones sit in the last block ranges.
-- Measured on a drain: one index insert fewer per attempt, about 5% of the
-- relay's WAL.
--
-- A BRIN index returns every block range it has not summarized yet, and
-- without autosummarize only a vacuum summarizes them: on a busy day that
-- left the last-minute count reading hours of attempts. autosummarize asks
-- autovacuum to summarize each range as soon as it is full. A partitioned
-- index takes no new options, so the index is made again (one pass over
-- the attempts kept, under a lock that holds attempt writes meanwhile).
--
-- Apply with `postbox migrate`, or by hand in one transaction:
--   psql -v ON_ERROR_STOP=1 --single-transaction -f sql/migrations/0014_attempts_by_time_brin_only.sql

insert into postbox.schema_migrations (version, name) values (14, 'attempts_by_time_brin_only');

drop index postbox.attempts_started_idx;

drop index postbox.attempts_started_brin;
create index attempts_started_brin on postbox.attempts using brin (started_at) with (autosummarize = on);
