//! When a delivery is tried again: exponential backoff from 1 s to 1 h,
//! `Retry-After` honoured, given up 24 hours after the event (SPEC 16).

use std::time::{Duration, SystemTime};

/// Wait after the first failure.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Longest wait between two tries, also for a `Retry-After`.
pub const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// How long after its event a delivery is tried.
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(24 * 3600);

/// What an answer's status means for the delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    /// Worth another try: 408, 429, 5xx.
    Retry,
    /// Any other answer: the receiver will not take it.
    Final,
}

pub fn verdict(status: u16) -> Verdict {
    match status {
        200..=299 => Verdict::Delivered,
        408 | 429 | 500..=599 => Verdict::Retry,
        _ => Verdict::Final,
    }
}

/// The wait after `failures` failed tries in a row (1 s, 2 s, 4 s ... 1 h),
/// or after what the receiver asked with `Retry-After` (at least 1 s, at
/// most 1 h, so a receiver can neither make bitsd spin nor stall it).
pub fn delay(failures: u32, retry_after: Option<Duration>) -> Duration {
    if let Some(asked) = retry_after {
        return asked.clamp(FIRST_BACKOFF, MAX_BACKOFF);
    }
    let doubled = FIRST_BACKOFF.saturating_mul(1 << failures.saturating_sub(1).min(20));
    doubled.min(MAX_BACKOFF)
}

/// A `Retry-After` value: seconds, or an HTTP date (as seen at `now`).
pub fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds).min(MAX_BACKOFF));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or_default().min(MAX_BACKOFF))
}

/// Whether a try `wait` from `now` (unix seconds) is still within
/// [`GIVE_UP_AFTER`] of the event written at `created`.
pub fn in_time(created: f64, now: f64, wait: Duration) -> bool {
    now + wait.as_secs_f64() <= created + GIVE_UP_AFTER.as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_that_are_worth_another_try() {
        let cases = [
            (200, Verdict::Delivered),
            (204, Verdict::Delivered),
            (301, Verdict::Final),
            (400, Verdict::Final),
            (401, Verdict::Final),
            (404, Verdict::Final),
            (408, Verdict::Retry),
            (413, Verdict::Final),
            (429, Verdict::Retry),
            (500, Verdict::Retry),
            (503, Verdict::Retry),
            (599, Verdict::Retry),
        ];
        for (status, expected) in cases {
            assert_eq!(verdict(status), expected, "{status}");
        }
    }

    #[test]
    fn backoff_doubles_up_to_an_hour() {
        let waits: Vec<u64> = (1..=14).map(|n| delay(n, None).as_secs()).collect();
        assert_eq!(
            waits,
            [
                1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 3600, 3600
            ]
        );
        assert_eq!(delay(u32::MAX, None), MAX_BACKOFF);
        assert_eq!(delay(0, None), FIRST_BACKOFF);
    }

    #[test]
    fn retry_after_is_honoured_within_bounds() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let seconds = |s: &str| retry_after(s, now).map(|d| d.as_secs());
        assert_eq!(seconds("120"), Some(120));
        assert_eq!(seconds(" 0 "), Some(0));
        assert_eq!(seconds("999999"), Some(3600));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(90));
        assert_eq!(seconds(&later), Some(90));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(90));
        assert_eq!(seconds(&past), Some(0));
        assert_eq!(seconds("soon"), None);
        assert_eq!(seconds("-5"), None);
        // What is asked wins over the backoff, within 1 s and 1 h.
        assert_eq!(delay(5, Some(Duration::from_secs(3))).as_secs(), 3);
        assert_eq!(delay(5, Some(Duration::ZERO)), FIRST_BACKOFF);
        assert_eq!(delay(1, Some(Duration::from_secs(7200))), MAX_BACKOFF);
    }

    #[test]
    fn deliveries_are_given_up_a_day_after_the_event() {
        let day = GIVE_UP_AFTER.as_secs_f64();
        assert!(in_time(1000.0, 1000.0, Duration::from_secs(1)));
        assert!(in_time(
            1000.0,
            1000.0 + day - 10.0,
            Duration::from_secs(10)
        ));
        assert!(!in_time(
            1000.0,
            1000.0 + day - 10.0,
            Duration::from_secs(11)
        ));
        assert!(!in_time(1000.0, 1001.0 + day, Duration::ZERO));
    }
}
