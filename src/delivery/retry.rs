//! Pure retry decisions: what happens after an attempt, given its response.

use std::time::{Duration, SystemTime};

#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Delay before each attempt; its length is the number of attempts.
    pub schedule: Vec<Duration>,
    /// Fraction by which each delay moves at random, either way.
    pub jitter: f64,
    /// Upper bound for a receiver's `Retry-After`.
    pub max_retry_after: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decision {
    Succeeded,
    Retry {
        after: Duration,
    },
    Failed,
    /// The receiver answered 410 Gone: stop sending to this endpoint.
    Gone,
}

impl Decision {
    pub fn status(&self) -> &'static str {
        match self {
            Decision::Succeeded => "succeeded",
            Decision::Retry { .. } => "pending",
            Decision::Failed | Decision::Gone => "failed",
        }
    }
}

impl RetryPolicy {
    /// Delay before the first attempt.
    pub fn first_delay(&self) -> Duration {
        self.schedule.first().copied().unwrap_or_default()
    }

    /// Decides what follows attempt `attempt_number` (1-based). `status` is the
    /// response status, `None` when no response came (timeout, refused, ...).
    pub fn decide(
        &self,
        attempt_number: u32,
        status: Option<u16>,
        retry_after: Option<Duration>,
    ) -> Decision {
        self.decide_with(attempt_number, status, retry_after, rand::random_range(-1.0..=1.0))
    }

    /// [`RetryPolicy::decide`] with the random draw (in -1..=1) given, for tests.
    fn decide_with(
        &self,
        attempt_number: u32,
        status: Option<u16>,
        retry_after: Option<Duration>,
        draw: f64,
    ) -> Decision {
        if matches!(status, Some(200..=299)) {
            return Decision::Succeeded;
        }
        if status == Some(410) {
            return Decision::Gone;
        }
        let Some(base) = self.schedule.get(attempt_number as usize) else {
            return Decision::Failed;
        };
        let mut after = base.mul_f64(1.0 + self.jitter * draw.clamp(-1.0, 1.0));
        if let (Some(429 | 503), Some(requested)) = (status, retry_after) {
            after = after.max(requested.min(self.max_retry_after));
        }
        Decision::Retry { after }
    }
}

/// Parses a `Retry-After` value: delay seconds or an HTTP date.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            schedule: vec![Duration::ZERO, Duration::from_secs(5), Duration::from_secs(300)],
            jitter: 0.1,
            max_retry_after: Duration::from_secs(3600),
        }
    }

    #[test]
    fn any_2xx_succeeds() {
        for status in [200, 201, 204, 299] {
            assert_eq!(policy().decide(1, Some(status), None), Decision::Succeeded);
        }
    }

    #[test]
    fn failures_follow_the_schedule_then_fail() {
        let p = policy();
        assert_eq!(p.decide_with(1, Some(500), None, 0.0), Decision::Retry { after: Duration::from_secs(5) });
        assert_eq!(p.decide_with(2, None, None, 0.0), Decision::Retry { after: Duration::from_secs(300) });
        assert_eq!(p.decide_with(3, Some(500), None, 0.0), Decision::Failed);
        assert_eq!(p.decide_with(1, Some(301), None, 0.0), Decision::Retry { after: Duration::from_secs(5) });
    }

    #[test]
    fn gone_stops_at_once() {
        assert_eq!(policy().decide(1, Some(410), None), Decision::Gone);
        assert_eq!(Decision::Gone.status(), "failed");
    }

    #[test]
    fn jitter_stays_within_its_fraction() {
        let p = policy();
        assert_eq!(
            p.decide_with(2, Some(500), None, 1.0),
            Decision::Retry { after: Duration::from_secs(330) }
        );
        assert_eq!(
            p.decide_with(2, Some(500), None, -1.0),
            Decision::Retry { after: Duration::from_secs(270) }
        );
        for _ in 0..100 {
            let Decision::Retry { after } = p.decide(2, Some(500), None) else { panic!("expected a retry") };
            assert!((270..=330).contains(&after.as_secs()), "{after:?}");
        }
    }

    #[test]
    fn retry_after_is_honoured_on_429_and_503_and_clamped() {
        let p = policy();
        let minute = Some(Duration::from_secs(60));
        assert_eq!(
            p.decide_with(1, Some(429), minute, 0.0),
            Decision::Retry { after: Duration::from_secs(60) }
        );
        assert_eq!(
            p.decide_with(1, Some(503), minute, 0.0),
            Decision::Retry { after: Duration::from_secs(60) }
        );
        assert_eq!(
            p.decide_with(1, Some(500), minute, 0.0),
            Decision::Retry { after: Duration::from_secs(5) }
        );
        let week = Some(Duration::from_secs(7 * 86400));
        assert_eq!(
            p.decide_with(1, Some(429), week, 0.0),
            Decision::Retry { after: Duration::from_secs(3600) }
        );
        // a shorter Retry-After never shortens the schedule
        let second = Some(Duration::from_secs(1));
        assert_eq!(
            p.decide_with(2, Some(429), second, 0.0),
            Decision::Retry { after: Duration::from_secs(300) }
        );
    }

    #[test]
    fn parses_retry_after_seconds_and_dates() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:50:37 GMT", now), Some(Duration::from_secs(60)));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
