-- postbox schema, version 14: attempts found by start time through the BRIN
-- index alone; dispatch batches counted down.
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
-- A dispatch batch (13) was checked for completion by looking up every one
-- of its (event, endpoint) pairs at each write of its outcomes: a batch of
-- 128 events to 20 endpoints has 2560 pairs, written in ten or more writes,
-- each of which looked all of them up. `remaining` counts the requests whose
-- outcome is not written yet, down in the same statement that writes them,
-- so a write a crash loses loses its count-down too and the batch still
-- runs out of lease and sends its requests again. A pair whose outcome finds
-- its endpoint deleted, or its delivery made and claimed by a replay
-- meanwhile, is not counted: its batch then waits for its lease to run out,
-- and the next dispatch pass finds nothing left to send. NULL in batches of
-- release-13 relays, which look their pairs up as before.
--
-- Apply with `postbox migrate`, or by hand in one transaction:
--   psql -v ON_ERROR_STOP=1 --single-transaction -f sql/migrations/0014_attempts_by_time_brin_only.sql

insert into postbox.schema_migrations (version, name) values (14, 'attempts_by_time_brin_only');

drop index postbox.attempts_started_idx;

drop index postbox.attempts_started_brin;
create index attempts_started_brin on postbox.attempts using brin (started_at) with (autosummarize = on);

alter table postbox.dispatch_batches add column remaining int;
comment on column postbox.dispatch_batches.remaining is
    'requests of the batch whose outcome is not written yet; the batch is deleted when it reaches 0';
