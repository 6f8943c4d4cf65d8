//! The benchmark runs (tiny sizes): it is for numbers, this only checks it works.

use std::process::Command;

use crate::support::db::server_url;

/// Runs the benchmark on the test server with `args`; returns its JSON line.
fn bench(args: &[&str]) -> serde_json::Value {
    let output = Command::new(env!("CARGO_BIN_EXE_postbox-bench"))
        .args(["--server", &server_url()])
        .args(args)
        .output()
        .expect("run postbox-bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_str(stdout.lines().last().expect("a JSON line")).expect("the last line is JSON")
}

#[test]
fn the_benchmark_runs_end_to_end_and_prints_every_figure() {
    let json = bench(&[
        "--events",
        "300",
        "--seconds",
        "1",
        "--writers",
        "2",
        "--rate",
        "200",
        "--latency-events",
        "50",
        "--paced-rate",
        "200",
        "--semantics-events",
        "200",
        "--ordering-keys",
        "1,50",
        "--rate-limit",
        "100",
    ]);
    for key in [
        "sql_ceiling_events_per_s",
        "commits_plain_per_s",
        "commits_outbox_idle_relay_per_s",
        "commits_outbox_busy_relay_per_s",
        "drain_events_per_s",
        "drain_events_per_s_ratio",
        "sustained_delivered_per_s",
        "sustained_app_commits_per_s_ratio",
        "paced_app_commits_per_s_ratio",
        "paced_app_commit_p99_ms",
        "paced_delivered_per_s",
        "latency_p50_ms",
        "latency_p99_ms",
        "relay_peak_rss_mib",
        "ordered_drain_1_keys_events_per_s_ratio",
        "ordered_drain_50_keys_events_per_s_ratio",
        "rate_limited_drain_events_per_s_ratio",
        "rate_limit_held_requests_per_s_ratio",
    ] {
        assert!(json[key].as_f64().is_some_and(|v| v > 0.0), "{key} missing or zero in {json}");
    }
}

#[test]
fn the_benchmark_runs_only_the_phases_asked_for_with_the_endpoints_asked_for() {
    // Three endpoints for every event, and one more for each event's tenant.
    let json = bench(&["--events", "200", "--only", "drain", "--endpoints", "3", "--tenants", "2"]);
    let keys: Vec<&str> = json.as_object().expect("an object").keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        ["drain_deliveries_per_s", "drain_events_per_s", "relay_peak_rss_mib"],
        "no ceiling ran, so no ratio either"
    );
    let (events, deliveries) =
        (json["drain_events_per_s"].as_f64().unwrap(), json["drain_deliveries_per_s"].as_f64().unwrap());
    assert!((deliveries - 4.0 * events).abs() < 1e-6 * deliveries, "four deliveries per event: {json}");
}
