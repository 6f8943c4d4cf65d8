//! postbox-bench: measures the relay against this machine's own limits, in one
//! run on a private database. Prints a table and one JSON line.
//!
//!   cargo run --release --bin postbox-bench -- --events 20000
//!
//! Phases: (1) the minimal per-event SQL a relay must run (claim 100, record
//! attempts, settle) as the ceiling; (2) app commit rates into a plain table,
//! into postbox.outbox with a relay idle (NOTIFY) and busy (no NOTIFY);
//! (3) a backlog drained through `postbox run` to a local receiver; (4) writers
//! and the relay together, flat out and at a steady offered rate;
//! (5) commit-to-receipt latency at a steady rate;
//! (6) the relay's peak memory while it works through the backlog;
//! (7) what per-key ordering and rate limits cost: the drain with ordering
//! keys (1, 100, 10k distinct), and with every endpoint rate-limited (far
//! above what it gets, then at a limit it must hold).
//! `--endpoints N` fans every event out to N endpoints at the receiver;
//! `--tenants N` adds an endpoint per tenant and spreads the drain over them.

use std::{
    collections::HashMap,
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use axum::{extract::State, http::HeaderMap, routing::post, Router};
use clap::Parser;
use postbox::db::{self, schema};
use serde_json::json;
use tokio_postgres::Client;

/// What an app does: one outbox row per transaction.
const OUTBOX_INSERT: &str = "insert into postbox.outbox (event_type, payload) values ('bench.event', '{}')";
/// The same row into a table with the outbox's columns and indexes, without postbox.
const PLAIN_INSERT: &str =
    "insert into public.bench_plain (event_type, payload) values ('bench.event', '{}')";

#[derive(Debug, Parser)]
#[command(about = "Benchmark postbox against this machine's limits")]
struct Args {
    /// Server to create the private benchmark database on
    #[arg(
        long,
        env = "POSTBOX_BENCH_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    server: String,
    /// Backlog size for the drain and memory phases
    #[arg(long, default_value_t = 20_000)]
    events: u64,
    /// Seconds for each timed phase (commit rates, sustained load)
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// App writers in the commit-rate and sustained phases
    #[arg(long, default_value_t = 8)]
    writers: usize,
    /// Commits per second that the writers offer in the paced sustained phase
    #[arg(long, default_value_t = 5_000)]
    paced_rate: u64,
    /// Events per second in the latency phase
    #[arg(long, default_value_t = 500)]
    rate: u64,
    /// Events sent in the latency phase
    #[arg(long, default_value_t = 2_000)]
    latency_events: u64,
    /// The `postbox` binary to run as the relay (default: next to this one);
    /// one given here or below installs its own release's schema
    /// (`postbox migrate`)
    #[arg(long)]
    relay_bin: Option<std::path::PathBuf>,
    /// Another `postbox` binary (say, the previous release's) to run every
    /// phase with first, on a database of its own: its figures are printed
    /// beside these, so that a change is measured against the same day
    #[arg(long)]
    compare_relay_bin: Option<std::path::PathBuf>,
    /// Endpoints subscribed to every event (all at the local receiver): each
    /// event is delivered this many times
    #[arg(long, default_value_t = 1)]
    endpoints: u64,
    /// Endpoints for one tenant each, besides those: the drain's events are
    /// spread over the tenants, so each also goes to its tenant's endpoint
    #[arg(long, default_value_t = 0)]
    tenants: u64,
    /// Distinct ordering keys for the keyed drains of phase (7)
    #[arg(long, value_delimiter = ',', default_values_t = [1u64, 100, 10_000])]
    ordering_keys: Vec<u64>,
    /// Events in each keyed or rate-limited drain of phase (7)
    #[arg(long, default_value_t = 20_000)]
    semantics_events: u64,
    /// The limit (requests/s per endpoint) that phase (7) checks is held
    #[arg(long, default_value_t = 2_000)]
    rate_limit: u64,
    /// Run only these phases, e.g. `--only drain,latency` (default: all).
    /// Ratios need the phase they compare with.
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Phase>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Phase {
    /// (1) the minimal per-event SQL
    Ceiling,
    /// (2) app commit rates
    Commits,
    /// (3) and (6): backlog drain and the relay's memory
    Drain,
    /// (4) writers and relay together, flat out and at --paced-rate
    Sustained,
    /// (5) commit-to-receipt latency
    Latency,
    /// (7) drains with ordering keys and with rate limits
    Semantics,
}

impl Args {
    fn runs(&self, phase: Phase) -> bool {
        self.only.is_empty() || self.only.contains(&phase)
    }
}

/// What paced writers achieved.
struct Paced {
    rate: f64,
    p99: f64,
}

/// What the receiver saw: a count, and arrival times by webhook-id.
#[derive(Default)]
struct Received {
    count: AtomicU64,
    arrivals: Mutex<HashMap<String, Instant>>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let before = match &args.compare_relay_bin {
        Some(other) => {
            eprintln!("with {} for comparison:", other.display());
            Some(measure(&args, Some(other.clone())).await?)
        }
        None => None,
    };
    if before.is_some() {
        eprintln!("with {}:", find_relay_bin(&args.relay_bin)?.display());
    }
    let report = measure(&args, args.relay_bin.clone()).await?;
    report.print(before.as_ref());
    Ok(())
}

/// Every phase `args` asks for, with `relay_bin` as the relay, on a
/// database of its own.
async fn measure(args: &Args, relay_bin: Option<std::path::PathBuf>) -> anyhow::Result<Report> {
    let bench = Bench::create(args, relay_bin).await?;
    let result = bench.run_all(args).await;
    bench.drop_database().await?;
    result
}

/// The relay binary: `given`, or `postbox` next to this one.
fn find_relay_bin(given: &Option<std::path::PathBuf>) -> anyhow::Result<std::path::PathBuf> {
    let path = match given {
        Some(path) => path.clone(),
        None => std::env::current_exe()?.with_file_name("postbox"),
    };
    if !path.exists() {
        bail!("relay binary {} not found (build it, or pass --relay-bin)", path.display());
    }
    Ok(path)
}

struct Bench {
    admin: Client,
    name: String,
    url: String,
    received: Arc<Received>,
    receiver_url: String,
    relay_bin: std::path::PathBuf,
    /// Deliveries per event without a tenant (`--endpoints`).
    fan_out: u64,
    /// Tenants the drain's events are spread over, each with an endpoint of its own.
    tenants: u64,
}

#[derive(Default)]
struct Report {
    /// (key, label, value, unit, ratio as text)
    rows: Vec<(String, String, f64, String, String)>,
    json: serde_json::Map<String, serde_json::Value>,
}

impl Report {
    fn add(&mut self, key: &str, label: &str, value: f64, unit: &str, ratio: Option<(f64, &str)>) {
        let ratio_text = ratio.map(|(r, of)| format!("{r:.2} of {of}")).unwrap_or_default();
        self.rows.push((key.to_owned(), label.to_owned(), value, unit.to_owned(), ratio_text));
        self.json.insert(key.to_owned(), json!(value));
        if let Some((r, _)) = ratio {
            self.json.insert(format!("{key}_ratio"), json!(r));
        }
    }

    /// The table, with `before`'s figures (`--compare-relay-bin`) beside
    /// each, then one JSON line (`before`'s under "compared").
    fn print(&self, before: Option<&Report>) {
        let width = self.rows.iter().map(|r| r.1.len()).max().unwrap_or(0);
        if before.is_some() {
            println!("{:<width$}  {:>12} {:<10} {:<14} | compared with", "", "this relay", "", "");
        }
        for (key, label, value, unit, ratio) in &self.rows {
            let beside = before
                .and_then(|b| b.rows.iter().find(|r| &r.0 == key))
                .map(|(_, _, value, _, ratio)| format!("| {value:>12.1} {ratio}"))
                .unwrap_or_default();
            println!("{label:<width$}  {value:>12.1} {unit:<10} {ratio:<14} {beside}");
        }
        let mut json = self.json.clone();
        if let Some(before) = before {
            json.insert("compared".to_owned(), serde_json::Value::Object(before.json.clone()));
        }
        println!("{}", serde_json::Value::Object(json));
    }
}

impl Bench {
    async fn create(args: &Args, relay_bin: Option<std::path::PathBuf>) -> anyhow::Result<Self> {
        let admin =
            db::connect(&args.server).await.context("cannot reach the benchmark server (--server)")?;
        let name = format!("postbox_bench_{}", uuid::Uuid::new_v4().simple());
        admin.batch_execute(&format!("create database {name}")).await?;
        let mut url = url::Url::parse(&args.server).context("--server must be a postgres:// URL")?;
        url.set_path(&name);
        let url = url.to_string();
        let mut client = db::connect(&url).await?;
        match &relay_bin {
            // Another build's data path runs on the schema of its own release.
            Some(other) => {
                let status = Command::new(other)
                    .arg("migrate")
                    .env("POSTBOX_DATABASE__URL", &url)
                    .env("RUST_LOG", "warn")
                    .stdout(Stdio::null())
                    .status()
                    .with_context(|| format!("cannot run {} migrate", other.display()))?;
                if !status.success() {
                    bail!("{} migrate failed ({status})", other.display());
                }
            }
            None => {
                schema::migrate(&mut client).await?;
            }
        }
        client
            .batch_execute(
                "select postbox.register_event_type('bench.event');
                 update postbox.network_policy set allow_private = true;
                 create table public.bench_plain (like postbox.outbox including all);",
            )
            .await?;

        let received = Arc::new(Received::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let receiver_url = format!("http://{}/hook", listener.local_addr()?);
        let app = Router::new().route("/hook", post(receive)).with_state(Arc::clone(&received));
        tokio::spawn(async move { axum::serve(listener, app).await });
        for n in 1..=args.endpoints.max(1) {
            let url = format!("{receiver_url}?endpoint={n}");
            client.execute("select postbox.subscribe($1, '{bench.*}')", &[&url]).await?;
        }
        for n in 0..args.tenants {
            let url = format!("{receiver_url}?tenant={n}");
            client
                .execute("select postbox.subscribe($1, '{bench.*}', $2)", &[&url, &format!("t{n}")])
                .await?;
        }

        let relay_bin = find_relay_bin(&relay_bin)?;
        Ok(Self {
            admin,
            name,
            url,
            received,
            receiver_url,
            relay_bin,
            fan_out: args.endpoints.max(1),
            tenants: args.tenants,
        })
    }

    async fn drop_database(&self) -> anyhow::Result<()> {
        self.admin.batch_execute(&format!("drop database if exists {} with (force)", self.name)).await?;
        Ok(())
    }

    async fn run_all(&self, args: &Args) -> anyhow::Result<Report> {
        let mut report = Report::default();
        eprintln!("receiver at {}", self.receiver_url);

        let mut ceiling = None;
        if args.runs(Phase::Ceiling) {
            eprintln!("(1) minimal per-event SQL ...");
            let rate = self.minimal_sql(args.events.min(50_000)).await?;
            report.add(
                "sql_ceiling_events_per_s",
                "(1) minimal SQL per event (claim 100, record, settle)",
                rate,
                "events/s",
                None,
            );
            ceiling = Some(rate);
        }

        let mut plain = None;
        if args.runs(Phase::Commits) {
            eprintln!("(2) app commit rates ...");
            let rate = self.commit_rate(args, PLAIN_INSERT).await?;
            report.add("commits_plain_per_s", "(2a) app commits, plain table", rate, "commits/s", None);
            plain = Some(rate);
            self.sql("update postbox.wakeup set busy_until = '-infinity', notify = true").await?;
            let notify = self.commit_rate(args, OUTBOX_INSERT).await?;
            report.add(
                "commits_outbox_idle_relay_per_s",
                "(2b) app commits, outbox, relay idle (NOTIFY)",
                notify,
                "commits/s",
                ratio(notify, plain, "2a"),
            );
            self.sql("update postbox.wakeup set busy_until = 'infinity'").await?;
            let busy = self.commit_rate(args, OUTBOX_INSERT).await?;
            report.add(
                "commits_outbox_busy_relay_per_s",
                "(2c) app commits, outbox, relay busy (no NOTIFY)",
                busy,
                "commits/s",
                ratio(busy, plain, "2a"),
            );
            self.sql("update postbox.wakeup set busy_until = '-infinity'; truncate postbox.outbox cascade; truncate public.bench_plain").await?;
        }

        if !(args.runs(Phase::Drain)
            || args.runs(Phase::Sustained)
            || args.runs(Phase::Latency)
            || args.runs(Phase::Semantics))
        {
            return Ok(report);
        }
        if args.runs(Phase::Drain) {
            eprintln!("(3) backlog drain of {} events ...", args.events);
            self.insert_backlog(args.events).await?;
        }
        let mut relay = self.start_relay()?;
        let mut drain_rate = None;
        if args.runs(Phase::Drain) {
            let started = Instant::now();
            let drain_fan_out = self.fan_out + u64::from(self.tenants > 0);
            let peak_rss = self
                .wait_received(args.events * drain_fan_out, Some(relay.id()), Duration::from_secs(600))
                .await?;
            let drain = args.events as f64 / started.elapsed().as_secs_f64();
            drain_rate = Some(drain);
            report.add(
                "drain_events_per_s",
                "(3) backlog drain through the relay",
                drain,
                "events/s",
                ratio(drain, ceiling, "1"),
            );
            if drain_fan_out > 1 {
                let deliveries = drain * drain_fan_out as f64;
                let endpoints = self.fan_out + self.tenants;
                report.add(
                    "drain_deliveries_per_s",
                    &format!("(3) the same, {drain_fan_out} deliveries each among {endpoints} endpoints"),
                    deliveries,
                    "requests/s",
                    ratio(deliveries, ceiling, "1"),
                );
            }
            report.add(
                "relay_peak_rss_mib",
                "(6) relay peak RSS during the drain",
                peak_rss as f64 / 1048576.0,
                "MiB",
                None,
            );
        }

        if args.runs(Phase::Sustained) {
            eprintln!("(4) sustained load with {} writers ...", args.writers);
            let before = self.received.count.load(Ordering::Relaxed);
            let sustained_commits = self.commit_rate(args, OUTBOX_INSERT).await?;
            let delivered = self.delivered_rate(before, sustained_commits, args.seconds).await?;
            report.add(
                "sustained_delivered_per_s",
                "(4a) flat out: delivered while apps write",
                delivered,
                "events/s",
                None,
            );
            report.add(
                "sustained_app_commits_per_s",
                "(4a) flat out: app commits meanwhile",
                sustained_commits,
                "commits/s",
                ratio(sustained_commits, plain, "2a"),
            );

            eprintln!("(4b) apps offering {} commits/s ...", args.paced_rate);
            let without = self.paced_commits(args, PLAIN_INSERT).await?;
            report.add(
                "paced_plain_commits_per_s",
                "(4b) paced: app commits, plain table",
                without.rate,
                "commits/s",
                None,
            );
            report.add("paced_plain_commit_p99_ms", "(4b) paced: plain commit p99", without.p99, "ms", None);
            let before = self.received.count.load(Ordering::Relaxed);
            let with = self.paced_commits(args, OUTBOX_INSERT).await?;
            let delivered = self.delivered_rate(before, with.rate, args.seconds).await?;
            report.add(
                "paced_app_commits_per_s",
                "(4b) paced: app commits, outbox and relay",
                with.rate,
                "commits/s",
                Some((with.rate / without.rate, "4b plain")),
            );
            report.add("paced_app_commit_p99_ms", "(4b) paced: outbox commit p99", with.p99, "ms", None);
            report.add(
                "paced_delivered_per_s",
                "(4b) paced: delivered meanwhile",
                delivered,
                "events/s",
                Some((delivered / with.rate, "commits")),
            );
        }

        if args.runs(Phase::Latency) {
            eprintln!("(5) latency at {} events/s ...", args.rate);
            let latencies = self.latency(args).await?;
            for (key, label, q) in [
                ("latency_p50_ms", "(5) commit to receipt p50", 0.50),
                ("latency_p95_ms", "(5) commit to receipt p95", 0.95),
                ("latency_p99_ms", "(5) commit to receipt p99", 0.99),
            ] {
                report.add(key, label, quantile(&latencies, q), "ms", None);
            }
        }
        if args.runs(Phase::Semantics) {
            self.semantics(args, drain_rate, &mut report).await?;
        }
        stop(&mut relay);
        Ok(report)
    }

    /// (7): the drain again with ordering keys, then with every endpoint
    /// rate-limited: far above what it gets (the permits' own cost), and at
    /// `--rate-limit` (whether the limit is held, and used).
    async fn semantics(&self, args: &Args, drain: Option<f64>, report: &mut Report) -> anyhow::Result<()> {
        let events = args.semantics_events;
        let deliveries = events * self.fan_out;
        for &keys in &args.ordering_keys {
            eprintln!("(7) drain of {events} events with {keys} ordering keys ...");
            let rate = self.timed_drain(events, deliveries, Some(keys)).await?;
            report.add(
                &format!("ordered_drain_{keys}_keys_events_per_s"),
                &format!("(7a) drain, {keys} ordering keys"),
                rate,
                "events/s",
                ratio(rate, drain, "3"),
            );
        }
        self.sql("update postbox.endpoints set rate_limit = 1000000").await?;
        eprintln!("(7) drain of {events} events, endpoints limited to 1M requests/s ...");
        let rate = self.timed_drain(events, deliveries, None).await?;
        report.add(
            "rate_limited_drain_events_per_s",
            "(7b) drain, endpoints rate-limited (1M/s)",
            rate,
            "events/s",
            ratio(rate, drain, "3"),
        );
        let limit = args.rate_limit;
        self.sql(&format!("update postbox.endpoints set rate_limit = {limit}")).await?;
        let held = (limit * 10).min(events);
        eprintln!("(7) {held} events, endpoints limited to {limit} requests/s ...");
        // Each event is one request to each endpoint.
        let per_endpoint = self.timed_drain(held, held * self.fan_out, None).await?;
        report.add(
            "rate_limit_held_requests_per_s",
            &format!("(7c) requests/s per endpoint at a limit of {limit}/s"),
            per_endpoint,
            "requests/s",
            Some((per_endpoint / limit as f64, "limit")),
        );
        self.sql("update postbox.endpoints set rate_limit = null").await?;
        Ok(())
    }

    /// Inserts `events` (keyed over `keys` distinct ordering keys) for the
    /// running relay and returns events/s until `deliveries` more arrived.
    async fn timed_drain(&self, events: u64, deliveries: u64, keys: Option<u64>) -> anyhow::Result<f64> {
        let before = self.received.count.load(Ordering::Relaxed);
        db::connect(&self.url)
            .await?
            .execute(
                "insert into postbox.outbox (event_type, payload, ordering_key)
                 select 'bench.event', jsonb_build_object('n', n, 'text', 'lorem ipsum dolor sit amet'),
                        case when $2::int8 > 0 then 'k' || n % $2::int8 end
                 from generate_series(1, $1::int8) as n",
                &[&(events as i64), &(keys.unwrap_or(0) as i64)],
            )
            .await?;
        // One statement: the relay sees none of them before this.
        let started = Instant::now();
        self.wait_received(before + deliveries, None, Duration::from_secs(900)).await?;
        Ok(events as f64 / started.elapsed().as_secs_f64())
    }

    async fn sql(&self, statements: &str) -> anyhow::Result<()> {
        db::connect(&self.url).await?.batch_execute(statements).await?;
        Ok(())
    }

    /// Events/s for the least a relay must do per event, with 4 workers:
    /// claim 100 due deliveries, insert their attempts, settle them.
    async fn minimal_sql(&self, events: u64) -> anyhow::Result<f64> {
        let client = db::connect(&self.url).await?;
        client
            .batch_execute(&format!(
                "create table public.bench_jobs (id bigint generated always as identity primary key,
                    status text not null default 'pending', due timestamptz not null default now(), lease uuid);
                 create index on public.bench_jobs (due) where status = 'pending';
                 create table public.bench_attempts (id bigint generated always as identity primary key,
                    job bigint not null, started_at timestamptz not null, duration_ms int not null, status int);
                 insert into public.bench_jobs (status) select 'pending' from generate_series(1, {events});"
            ))
            .await?;
        let started = Instant::now();
        let mut workers = Vec::new();
        for _ in 0..4 {
            let client = db::connect(&self.url).await?;
            workers.push(tokio::spawn(async move {
                let claim = client
                    .prepare(
                        "with due as (select id from public.bench_jobs where status = 'pending' and due <= now()
                                      order by due limit 100 for no key update skip locked)
                         update public.bench_jobs j set due = now() + interval '1 minute', lease = gen_random_uuid()
                         from due where j.id = due.id returning j.id",
                    )
                    .await?;
                let settle = client
                    .prepare(
                        "with r as (select * from unnest($1::int8[]) as r(id)),
                              s as (update public.bench_jobs j set status = 'succeeded', lease = null
                                    from r where j.id = r.id returning j.id)
                         insert into public.bench_attempts (job, started_at, duration_ms, status)
                         select id, now(), 1, 200 from s",
                    )
                    .await?;
                loop {
                    let ids: Vec<i64> = client.query(&claim, &[]).await?.iter().map(|r| r.get(0)).collect();
                    if ids.is_empty() {
                        return Ok::<_, tokio_postgres::Error>(());
                    }
                    client.execute(&settle, &[&ids]).await?;
                }
            }));
        }
        for worker in workers {
            worker.await??;
        }
        let rate = events as f64 / started.elapsed().as_secs_f64();
        client.batch_execute("drop table public.bench_jobs, public.bench_attempts").await?;
        Ok(rate)
    }

    /// Commits/s of `statement` run in autocommit by `writers` connections.
    async fn commit_rate(&self, args: &Args, statement: &'static str) -> anyhow::Result<f64> {
        let until = Instant::now() + Duration::from_secs(args.seconds);
        let mut writers = Vec::new();
        for _ in 0..args.writers {
            let client = db::connect(&self.url).await?;
            writers.push(tokio::spawn(async move {
                let prepared = client.prepare(statement).await?;
                let mut commits = 0u64;
                while Instant::now() < until {
                    client.execute(&prepared, &[]).await?;
                    commits += 1;
                }
                Ok::<_, tokio_postgres::Error>(commits)
            }));
        }
        let mut total = 0;
        for writer in writers {
            total += writer.await??;
        }
        Ok(total as f64 / args.seconds as f64)
    }

    /// Events/s delivered, for `commit_rate` events/s written over `seconds`
    /// after `before` requests had arrived: the time runs until the last
    /// delivery of the last event arrives.
    async fn delivered_rate(&self, before: u64, commit_rate: f64, seconds: u64) -> anyhow::Result<f64> {
        let written = (commit_rate * seconds as f64) as u64;
        let end_of_writes = Instant::now();
        self.wait_received(before + written * self.fan_out, None, Duration::from_secs(600)).await?;
        Ok(written as f64 / (seconds as f64 + end_of_writes.elapsed().as_secs_f64()))
    }

    /// `writers` connections together offering `--paced-rate` commits/s of
    /// `statement` for `--seconds`: the rate they achieve (a writer that
    /// falls behind catches up, as an app's queue of requests would, so only
    /// a database that cannot keep up costs rate) and the commit latency p99.
    async fn paced_commits(&self, args: &Args, statement: &'static str) -> anyhow::Result<Paced> {
        let writers = args.writers.max(1);
        let period = Duration::from_secs_f64(writers as f64 / args.paced_rate.max(1) as f64);
        let until = Instant::now() + Duration::from_secs(args.seconds);
        let mut tasks = Vec::new();
        for _ in 0..writers {
            let client = db::connect(&self.url).await?;
            tasks.push(tokio::spawn(async move {
                let prepared = client.prepare(statement).await?;
                let mut tick = tokio::time::interval(period);
                let mut latencies = Vec::new();
                while Instant::now() < until {
                    tick.tick().await;
                    let started = Instant::now();
                    client.execute(&prepared, &[]).await?;
                    latencies.push(started.elapsed().as_secs_f64() * 1000.0);
                }
                Ok::<_, tokio_postgres::Error>(latencies)
            }));
        }
        let mut latencies = Vec::new();
        for task in tasks {
            latencies.extend(task.await??);
        }
        latencies.sort_by(f64::total_cmp);
        Ok(Paced { rate: latencies.len() as f64 / args.seconds as f64, p99: quantile(&latencies, 0.99) })
    }

    async fn insert_backlog(&self, events: u64) -> anyhow::Result<()> {
        let client = db::connect(&self.url).await?;
        client
            .execute(
                "insert into postbox.outbox (event_type, payload, tenant)
                 select 'bench.event', jsonb_build_object('n', n, 'text', 'lorem ipsum dolor sit amet'),
                        case when $2::int8 > 0 then 't' || n % $2::int8 end
                 from generate_series(1, $1::int8) as n",
                &[&(events as i64), &(self.tenants as i64)],
            )
            .await?;
        Ok(())
    }

    fn start_relay(&self) -> anyhow::Result<Child> {
        Command::new(&self.relay_bin)
            .arg("run")
            .env("POSTBOX_DATABASE__URL", &self.url)
            .env("POSTBOX_NETWORK__ALLOW_PRIVATE", "true")
            .env("POSTBOX_ADMIN__LISTEN", "127.0.0.1:0")
            .env("POSTBOX_DELIVERY__ENDPOINT_CONCURRENCY", "256")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {}", self.relay_bin.display()))
    }

    /// Waits until the receiver has seen `count` requests; returns the peak RSS
    /// of `pid` sampled meanwhile.
    async fn wait_received(&self, count: u64, pid: Option<u32>, limit: Duration) -> anyhow::Result<u64> {
        let deadline = Instant::now() + limit;
        let mut peak = 0;
        while self.received.count.load(Ordering::Relaxed) < count {
            if let Some(pid) = pid {
                peak = peak.max(rss(pid));
            }
            if Instant::now() > deadline {
                bail!(
                    "only {} of {count} webhooks arrived within {limit:?}",
                    self.received.count.load(Ordering::Relaxed)
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(peak)
    }

    /// Commit-to-receipt latencies in ms at a steady `rate`.
    async fn latency(&self, args: &Args) -> anyhow::Result<Vec<f64>> {
        let client = db::connect(&self.url).await?;
        let emit = client.prepare("select postbox.emit('bench.event', '{\"latency\": true}')").await?;
        let mut committed = Vec::with_capacity(args.latency_events as usize);
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate as f64));
        // Two seconds at the rate first, so that the relay settles into its
        // steady state for this rate before anything is measured.
        let warm_up = args.rate * 2;
        for n in 0..warm_up + args.latency_events {
            tick.tick().await;
            let id: uuid::Uuid = client.query_one(&emit, &[]).await?.get(0);
            if n >= warm_up {
                committed.push((id.to_string(), Instant::now()));
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let arrivals = self.received.arrivals.lock().expect("not poisoned");
        let mut latencies: Vec<f64> = committed
            .iter()
            .filter_map(|(id, at)| {
                arrivals.get(id).map(|arrived| arrived.saturating_duration_since(*at).as_secs_f64() * 1000.0)
            })
            .collect();
        if latencies.len() < committed.len() {
            bail!(
                "{} of {} latency events did not arrive",
                committed.len() - latencies.len(),
                committed.len()
            );
        }
        latencies.sort_by(f64::total_cmp);
        Ok(latencies)
    }
}

async fn receive(State(received): State<Arc<Received>>, headers: HeaderMap) -> axum::http::StatusCode {
    let now = Instant::now();
    if let Some(id) = headers.get("webhook-id").and_then(|v| v.to_str().ok()) {
        // The first receipt: with several endpoints the same id arrives at each.
        received.arrivals.lock().expect("not poisoned").entry(id.to_owned()).or_insert(now);
    }
    received.count.fetch_add(1, Ordering::Relaxed);
    axum::http::StatusCode::NO_CONTENT
}

/// `value` as a ratio to `base`, when the phase that measures `base` ran.
fn ratio(value: f64, base: Option<f64>, of: &'static str) -> Option<(f64, &'static str)> {
    base.map(|base| (value / base, of))
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    sorted
        .get(((sorted.len() as f64 * q) as usize).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or(f64::NAN)
}

fn rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("VmRSS:")?.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// The benchmark database is dropped next, so a graceful stop buys nothing.
fn stop(relay: &mut Child) {
    let _ = relay.kill();
    let _ = relay.wait();
}
