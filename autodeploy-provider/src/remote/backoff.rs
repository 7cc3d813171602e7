//! The two schedules remote providers wait by: retries of failed API calls (capped
//! exponential backoff with jitter) and polls of an instance's state (1 s, backing off to
//! 10 s by default).

use std::time::Duration;

use rand::RngExt;

/// Delays between retries of a failed call: `base`, doubling up to `cap`, each one drawn
/// uniformly from its upper half ("equal jitter"), so many gateways retrying after the same
/// outage do not hit the API in step.
#[derive(Debug, Clone)]
pub(crate) struct RetryBackoff {
    next: Duration,
    cap: Duration,
}

impl RetryBackoff {
    /// A schedule starting at `base` and never above `cap`.
    pub(crate) fn new(base: Duration, cap: Duration) -> Self {
        Self {
            next: base.max(Duration::from_millis(1)),
            cap: cap.max(base),
        }
    }

    /// The pause before the next attempt.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let full = self.next.min(self.cap);
        self.next = (self.next * 2).min(self.cap);
        let half = full / 2;
        let jitter_ms = u64::try_from(half.as_millis()).unwrap_or(u64::MAX);
        let extra = if jitter_ms == 0 {
            0
        } else {
            rand::rng().random_range(0..=jitter_ms)
        };
        half + Duration::from_millis(extra)
    }
}

/// Intervals between polls of an instance's state: `min`, doubling up to `max`. Creation
/// usually takes seconds to minutes: early polls notice a fast start, later ones do not hammer
/// the API (nor its rate limit) while a machine is being scheduled.
#[derive(Debug, Clone)]
pub(crate) struct PollSchedule {
    next: Duration,
    max: Duration,
}

impl PollSchedule {
    /// A schedule from `min` to `max`.
    pub(crate) fn new(min: Duration, max: Duration) -> Self {
        Self {
            next: min.max(Duration::from_millis(1)),
            max: max.max(min),
        }
    }

    /// The pause before the next poll.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polls_go_from_one_second_to_ten() {
        let mut poll = PollSchedule::new(Duration::from_secs(1), Duration::from_secs(10));
        let secs: Vec<u64> = (0..6).map(|_| poll.next_delay().as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 10, 10]);
    }

    #[test]
    fn retries_are_capped_and_jittered_within_the_upper_half() {
        let mut backoff = RetryBackoff::new(Duration::from_millis(100), Duration::from_millis(800));
        let expected_full = [100, 200, 400, 800, 800, 800];
        for full in expected_full {
            let delay = backoff.next_delay().as_millis() as u64;
            assert!(
                (full / 2..=full).contains(&delay),
                "{delay} ms not within [{}, {full}]",
                full / 2
            );
        }
    }
}
