//! Medians and percentiles of measured durations.

use std::time::Duration;

/// The `q`-quantile (`0.0..=1.0`, nearest rank) of `samples`; sorts them. Zero when empty.
pub fn quantile(samples: &mut [Duration], q: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    samples.sort_unstable();
    let rank = ((q.clamp(0.0, 1.0) * samples.len() as f64).ceil() as usize).max(1);
    samples[rank - 1]
}

/// The median of `samples`; sorts them.
pub fn median(samples: &mut [Duration]) -> Duration {
    quantile(samples, 0.5)
}

/// A duration in milliseconds with three decimals, for tables.
pub fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1e3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_use_the_nearest_rank() {
        let mut s: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        assert_eq!(median(&mut s), Duration::from_millis(50));
        assert_eq!(quantile(&mut s, 0.99), Duration::from_millis(99));
        assert_eq!(quantile(&mut s, 1.0), Duration::from_millis(100));
        assert_eq!(quantile(&mut [], 0.5), Duration::ZERO);
    }
}
