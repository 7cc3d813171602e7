//! `SimulatedConfig`: how simulated instances boot, fail, crash and answer.

use std::time::Duration;

use serde::Deserialize;

/// Settings of the [`Simulated`](super::Simulated) provider, the `[providers.simulated]` table
/// of the gateway config.
///
/// Every key is optional; unknown keys are rejected. Durations are written the human way:
///
/// ```toml
/// [providers.simulated]
/// boot_time = "200ms"        # fixed boot time...
/// boot_time_max = "2s"       # ...or, with this, drawn uniformly from boot_time..=boot_time_max
/// failure_probability = 0.1  # share of starts that fail (at create or at readiness)
/// crash_after_requests = 100 # each instance dies after serving this many requests
/// response_delay = "5ms"     # added before every response
/// seed = 7                   # all randomness comes from this seed
/// capacity = 4               # instances the provider holds at once
/// price_per_hour = 1.5       # informational
/// ```
///
/// In code, start from [`SimulatedConfig::default`] and chain the setters of the same names.
/// Call [`SimulatedConfig::validate`] (or [`Simulated::new`](super::Simulated::new), which does)
/// before use.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct SimulatedConfig {
    /// Time from `create` to ready; the lower bound when `boot_time_max` is set. Default 0.
    #[serde(with = "humantime_serde")]
    pub boot_time: Duration,
    /// When set, each instance's boot time is drawn uniformly from `boot_time..=boot_time_max`.
    #[serde(with = "humantime_serde")]
    pub boot_time_max: Option<Duration>,
    /// Probability in `0..=1` that a start fails with `StartFailed`: either `create` fails at
    /// once (nothing is left running), or the instance exits at the end of its boot and
    /// `wait_ready` fails. Default 0.
    pub failure_probability: f64,
    /// When set, each instance dies after serving this many requests: the last one is answered
    /// in full, then the port refuses connections, further requests fail and `wait_exit`
    /// resolves. Default: never.
    pub crash_after_requests: Option<u64>,
    /// Delay added before every response; a request may override it with the header
    /// `x-sim-delay-ms`. Default 0.
    #[serde(with = "humantime_serde")]
    pub response_delay: Duration,
    /// Seed of the one random generator behind boot times and failures. Default 0.
    pub seed: u64,
    /// The most instances the provider holds at once (created and not yet released, crashed
    /// ones included); beyond it `create` fails with `NoCapacity`. Default: unlimited.
    pub capacity: Option<usize>,
    /// What one instance costs per hour; informational. Default 0.
    pub price_per_hour: f64,
}

impl Default for SimulatedConfig {
    fn default() -> Self {
        Self {
            boot_time: Duration::ZERO,
            boot_time_max: None,
            failure_probability: 0.0,
            crash_after_requests: None,
            response_delay: Duration::ZERO,
            seed: 0,
            capacity: None,
            price_per_hour: 0.0,
        }
    }
}

/// A [`SimulatedConfig`] field whose value makes no sense.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct SimulatedConfigError {
    /// The field, as named in the config file.
    pub field: &'static str,
    /// What is wrong with it.
    pub problem: String,
}

impl SimulatedConfig {
    /// Checks that the values make sense together; deserialization only checks their shapes.
    pub fn validate(&self) -> Result<(), SimulatedConfigError> {
        let bad = |field, problem: String| Err(SimulatedConfigError { field, problem });
        if !(0.0..=1.0).contains(&self.failure_probability) {
            return bad(
                "failure_probability",
                format!("must be within 0..=1, got {}", self.failure_probability),
            );
        }
        if let Some(max) = self.boot_time_max
            && max < self.boot_time
        {
            return bad(
                "boot_time_max",
                format!("{max:?} is less than boot_time {:?}", self.boot_time),
            );
        }
        if self.capacity == Some(0) {
            return bad("capacity", "must be at least 1 when set".to_owned());
        }
        if !self.price_per_hour.is_finite() || self.price_per_hour < 0.0 {
            return bad(
                "price_per_hour",
                format!("must be a finite number >= 0, got {}", self.price_per_hour),
            );
        }
        Ok(())
    }

    /// Sets a fixed boot time (and clears any range).
    pub fn boot_time(mut self, boot_time: Duration) -> Self {
        self.boot_time = boot_time;
        self.boot_time_max = None;
        self
    }

    /// Draws each boot time uniformly from `min..=max`.
    pub fn boot_time_range(mut self, min: Duration, max: Duration) -> Self {
        self.boot_time = min;
        self.boot_time_max = Some(max);
        self
    }

    /// Sets the probability that a start fails.
    pub fn failure_probability(mut self, probability: f64) -> Self {
        self.failure_probability = probability;
        self
    }

    /// Makes every instance die after serving `requests` requests.
    pub fn crash_after_requests(mut self, requests: u64) -> Self {
        self.crash_after_requests = Some(requests);
        self
    }

    /// Sets the delay added before every response.
    pub fn response_delay(mut self, delay: Duration) -> Self {
        self.response_delay = delay;
        self
    }

    /// Sets the seed of the random generator.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Caps the instances the provider holds at once.
    pub fn capacity(mut self, instances: usize) -> Self {
        self.capacity = Some(instances);
        self
    }

    /// Sets the informational price per hour.
    pub fn price_per_hour(mut self, price: f64) -> Self {
        self.price_per_hour = price;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_instant() {
        let config = SimulatedConfig::default();
        assert_eq!(config.validate(), Ok(()));
        assert_eq!(config.boot_time, Duration::ZERO);
        assert_eq!(config.capacity, None);
    }

    #[test]
    fn nonsense_values_name_their_field() {
        let err = |c: SimulatedConfig| c.validate().map_err(|e| e.field);
        let base = SimulatedConfig::default();
        assert_eq!(
            err(base.clone().failure_probability(1.5)),
            Err("failure_probability")
        );
        assert_eq!(
            err(base.clone().failure_probability(f64::NAN)),
            Err("failure_probability")
        );
        assert_eq!(
            err(base
                .clone()
                .boot_time_range(Duration::from_secs(2), Duration::from_secs(1))),
            Err("boot_time_max")
        );
        assert_eq!(err(base.clone().capacity(0)), Err("capacity"));
        assert_eq!(err(base.price_per_hour(-1.0)), Err("price_per_hour"));
    }
}
