//! Process metrics in the Prometheus text format. A handful of counters and
//! one histogram: plain atomics, rendered on scrape.

use std::{
    fmt::Write,
    sync::atomic::{AtomicI64, AtomicU64, Ordering},
    time::Duration,
};

use crate::delivery::retry::Decision;

/// Upper bounds of the attempt duration histogram, in seconds.
const DURATION_BUCKETS: [f64; 12] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
/// Attempts by what the attempt did and what its delivery became: one
/// vocabulary with the database (an attempt failed; a delivery is pending
/// again, or failed). A 410 Gone ends the delivery as failed like any last try.
const OUTCOMES: [(&str, &str); 3] = [("succeeded", "succeeded"), ("failed", "pending"), ("failed", "failed")];

#[derive(Debug, Default)]
pub struct Metrics {
    events_dispatched: AtomicU64,
    deliveries_created: AtomicU64,
    attempts: [AtomicU64; 3],
    duration_buckets: [AtomicU64; DURATION_BUCKETS.len()],
    duration_count: AtomicU64,
    duration_sum_micros: AtomicU64,
    in_flight: AtomicI64,
    events_pruned: AtomicU64,
}

/// Gauges read from the database at scrape time.
#[derive(Debug, Clone, Default)]
pub struct Backlog {
    pub undispatched_events: i64,
    pub pending_deliveries: i64,
    pub oldest_undispatched_age: f64,
    pub delivery_lag: f64,
    pub disabled_endpoints: i64,
}

impl Metrics {
    pub fn dispatched(&self, events: i64, deliveries: i64) {
        self.events_dispatched.fetch_add(events.max(0) as u64, Ordering::Relaxed);
        self.deliveries_created.fetch_add(deliveries.max(0) as u64, Ordering::Relaxed);
    }

    pub fn pruned(&self, events: u64) {
        self.events_pruned.fetch_add(events, Ordering::Relaxed);
    }

    pub fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    pub fn request_finished(&self, decision: &Decision, duration: Duration) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        let outcome = match decision {
            Decision::Succeeded => 0,
            Decision::Retry { .. } => 1,
            Decision::Failed | Decision::Gone => 2,
        };
        self.attempts[outcome].fetch_add(1, Ordering::Relaxed);
        let seconds = duration.as_secs_f64();
        for (bucket, bound) in self.duration_buckets.iter().zip(DURATION_BUCKETS) {
            if seconds <= bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.duration_count.fetch_add(1, Ordering::Relaxed);
        self.duration_sum_micros.fetch_add(duration.as_micros() as u64, Ordering::Relaxed);
    }

    /// Attempts made so far, all outcomes.
    pub fn attempts_total(&self) -> u64 {
        self.attempts.iter().map(|a| a.load(Ordering::Relaxed)).sum()
    }

    /// The Prometheus text exposition of these metrics and `backlog`.
    pub fn render(&self, backlog: Option<&Backlog>) -> String {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut out = String::with_capacity(2048);
        family(
            &mut out,
            "postbox_events_dispatched_total",
            "counter",
            "Outbox events fanned out by this relay.",
        );
        let _ = writeln!(out, "postbox_events_dispatched_total {}", load(&self.events_dispatched));
        family(&mut out, "postbox_deliveries_created_total", "counter", "Deliveries created by this relay.");
        let _ = writeln!(out, "postbox_deliveries_created_total {}", load(&self.deliveries_created));
        family(
            &mut out,
            "postbox_attempts_total",
            "counter",
            "HTTP attempts made by this relay, by outcome and the delivery's status after it.",
        );
        for ((outcome, delivery), count) in OUTCOMES.iter().zip(&self.attempts) {
            let _ = writeln!(
                out,
                "postbox_attempts_total{{outcome=\"{outcome}\",delivery=\"{delivery}\"}} {}",
                load(count)
            );
        }
        family(&mut out, "postbox_attempt_duration_seconds", "histogram", "Duration of HTTP attempts.");
        for (bound, count) in DURATION_BUCKETS.iter().zip(&self.duration_buckets) {
            let _ =
                writeln!(out, "postbox_attempt_duration_seconds_bucket{{le=\"{bound}\"}} {}", load(count));
        }
        let count = load(&self.duration_count);
        let _ = writeln!(out, "postbox_attempt_duration_seconds_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "postbox_attempt_duration_seconds_sum {}",
            load(&self.duration_sum_micros) as f64 / 1e6
        );
        let _ = writeln!(out, "postbox_attempt_duration_seconds_count {count}");
        family(&mut out, "postbox_requests_in_flight", "gauge", "HTTP requests this relay has in flight.");
        let _ = writeln!(out, "postbox_requests_in_flight {}", self.in_flight.load(Ordering::Relaxed));
        family(
            &mut out,
            "postbox_events_pruned_total",
            "counter",
            "Finished events this relay deleted under retention.period.",
        );
        let _ = writeln!(out, "postbox_events_pruned_total {}", load(&self.events_pruned));
        if let Some(b) = backlog {
            for (name, help, value) in [
                (
                    "postbox_undispatched_events",
                    "Outbox events not yet fanned out.",
                    b.undispatched_events as f64,
                ),
                (
                    "postbox_pending_deliveries",
                    "Deliveries waiting for an attempt.",
                    b.pending_deliveries as f64,
                ),
                (
                    "postbox_oldest_undispatched_event_age_seconds",
                    "Age of the oldest outbox event not yet fanned out.",
                    b.oldest_undispatched_age,
                ),
                (
                    "postbox_delivery_lag_seconds",
                    "How far past due the most overdue delivery is.",
                    b.delivery_lag,
                ),
                ("postbox_disabled_endpoints", "Endpoints that are disabled.", b.disabled_endpoints as f64),
            ] {
                family(&mut out, name, "gauge", help);
                let _ = writeln!(out, "{name} {value}");
            }
        }
        out
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histogram_and_gauges() {
        let metrics = Metrics::default();
        metrics.dispatched(3, 6);
        metrics.request_started();
        metrics.request_finished(&Decision::Succeeded, Duration::from_millis(20));
        metrics.request_started();
        metrics.request_finished(&Decision::Retry { after: Duration::ZERO }, Duration::from_secs(2));
        let text = metrics.render(Some(&Backlog { pending_deliveries: 7, ..Backlog::default() }));
        for line in [
            "postbox_events_dispatched_total 3",
            "postbox_deliveries_created_total 6",
            "postbox_attempts_total{outcome=\"succeeded\",delivery=\"succeeded\"} 1",
            "postbox_attempts_total{outcome=\"failed\",delivery=\"pending\"} 1",
            "postbox_attempts_total{outcome=\"failed\",delivery=\"failed\"} 0",
            "postbox_attempt_duration_seconds_bucket{le=\"0.025\"} 1",
            "postbox_attempt_duration_seconds_bucket{le=\"2.5\"} 2",
            "postbox_attempt_duration_seconds_count 2",
            "postbox_requests_in_flight 0",
            "postbox_pending_deliveries 7",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
    }
}
