//! What each deployment did lately, for the dashboard: requests and instances over the last
//! 15 minutes (5-second buckets), its recent cold starts with their phases, and its recent
//! start failures with their reasons. Kept in memory; a restart starts empty.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use autodeploy_core::{DeploymentStatus, InstanceId};
use parking_lot::Mutex;
use serde::Serialize;
use tokio::time::Instant;

use super::{EventKind, secs};

/// The width of one history bucket.
pub const BUCKET: Duration = Duration::from_secs(5);
/// How far back the history reaches.
pub const SPAN: Duration = Duration::from_secs(15 * 60);
/// How many cold starts and start failures are kept per deployment.
pub const RECENT: usize = 20;

/// Every deployment's history, by id.
#[derive(Debug, Default)]
pub struct Histories {
    map: Mutex<BTreeMap<String, History>>,
}

#[derive(Debug, Default)]
struct History {
    buckets: VecDeque<Bucket>,
    cold_starts: VecDeque<Started>,
    failures: VecDeque<(Instant, InstanceId, String)>,
    last: Option<Observed>,
    requests_per_second: f64,
}

/// One recorded cold start.
#[derive(Debug, Clone, Copy)]
struct Started {
    ready_at: Instant,
    instance: InstanceId,
    create: Duration,
    boot: Duration,
    first_byte: Option<Duration>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    started: Instant,
    requests: u64,
    instances: usize,
}

#[derive(Debug, Clone, Copy)]
struct Observed {
    at: Instant,
    status: DeploymentStatus,
    instances: usize,
    requests_total: u64,
}

/// One deployment's recent activity, as `GET /api/v1/deployments/{id}/history` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct HistoryView {
    /// The width of a sample, in seconds.
    pub bucket_s: f64,
    /// How far back samples reach, in seconds.
    pub span_s: f64,
    /// Oldest first: requests answered in each bucket and the most instances seen in it.
    pub samples: Vec<Sample>,
    /// Newest first: the phases of recent cold starts.
    pub cold_starts: Vec<ColdStart>,
    /// Newest first: recent failed starts.
    pub start_failures: Vec<StartFailure>,
}

/// One history bucket.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Sample {
    /// Seconds from the bucket's start to now.
    pub age_s: f64,
    /// Requests answered in it.
    pub requests: u64,
    /// The most instances seen in it.
    pub instances: usize,
}

/// One cold start.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ColdStart {
    /// The instance.
    #[schema(value_type = String, example = "xykemlvy")]
    pub instance: InstanceId,
    /// Seconds since it became ready.
    pub age_s: f64,
    /// Time in the provider's create call.
    pub create_s: f64,
    /// Time from create returning to a passed readiness probe (boot and probe).
    pub boot_s: f64,
    /// From ready to the response headers of the first request that waited for it (none
    /// when no request waited, as after a pre-warm).
    pub first_byte_s: Option<f64>,
    /// Provider call, boot and readiness (first byte not included).
    pub total_s: f64,
}

/// One failed start.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[schema(as = HistoryStartFailure)]
pub struct StartFailure {
    /// The instance.
    #[schema(value_type = String, example = "xykemlvy")]
    pub instance: InstanceId,
    /// Seconds since it failed.
    pub age_s: f64,
    /// Why.
    pub reason: String,
}

impl Histories {
    pub(super) fn cold_start(
        &self,
        deployment: &str,
        instance: InstanceId,
        create: Duration,
        boot: Duration,
    ) {
        let mut map = self.map.lock();
        let history = map.entry(deployment.to_owned()).or_default();
        history.cold_starts.push_front(Started {
            ready_at: Instant::now(),
            instance,
            create,
            boot,
            first_byte: None,
        });
        history.cold_starts.truncate(RECENT);
    }

    /// A request that waited for `instance` got its response headers now: the first one
    /// after the instance's cold start completes its timeline.
    pub(crate) fn first_response(&self, deployment: &str, instance: InstanceId) {
        let now = Instant::now();
        let mut map = self.map.lock();
        let Some(history) = map.get_mut(deployment) else {
            return;
        };
        if let Some(started) = history
            .cold_starts
            .iter_mut()
            .find(|s| s.instance == instance)
            .filter(|s| s.first_byte.is_none())
        {
            started.first_byte = Some(now.saturating_duration_since(started.ready_at));
        }
    }

    pub(super) fn start_failure(&self, deployment: &str, instance: InstanceId, reason: String) {
        let mut map = self.map.lock();
        let history = map.entry(deployment.to_owned()).or_default();
        history
            .failures
            .push_front((Instant::now(), instance, reason));
        history.failures.truncate(RECENT);
    }

    /// Records what the sampler saw of `deployment` and returns the events it implies: its
    /// status when it changed (or is first seen); with `rate`, the request rate since the
    /// last rate sample, when there were requests or something changed.
    pub(super) fn observe(
        &self,
        deployment: &str,
        status: DeploymentStatus,
        instances: usize,
        requests_total: u64,
        rate: bool,
    ) -> Vec<EventKind> {
        let now = Instant::now();
        let mut events = Vec::new();
        let mut map = self.map.lock();
        let history = map.entry(deployment.to_owned()).or_default();
        let last = history.last;
        if last.is_none_or(|l| l.status != status) {
            events.push(EventKind::Status { status, instances });
        }
        let Some(last) = last.filter(|_| rate) else {
            // The first sight, or a status check between two rate samples: the counts stay
            // for the next rate sample.
            let at = last.map_or(now, |l| l.at);
            let requests_total = last.map_or(requests_total, |l| l.requests_total);
            history.last = Some(Observed {
                at,
                status,
                instances: last.map_or(instances, |l| l.instances),
                requests_total,
            });
            history.add(now, 0, instances);
            return events;
        };
        let requests = requests_total.saturating_sub(last.requests_total);
        let elapsed = now.saturating_duration_since(last.at).as_secs_f64();
        let rps = if elapsed > 0.0 {
            ((requests as f64 / elapsed) * 100.0).round() / 100.0
        } else {
            0.0
        };
        if requests > 0 || rps != history.requests_per_second || instances != last.instances {
            events.push(EventKind::Requests {
                requests_per_second: rps,
                instances,
            });
        }
        history.requests_per_second = rps;
        history.last = Some(Observed {
            at: now,
            status,
            instances,
            requests_total,
        });
        history.add(now, requests, instances);
        events
    }

    /// Forgets deployments that are gone.
    pub(super) fn retain(&self, ids: &[String]) {
        self.map.lock().retain(|id, _| ids.contains(id));
    }

    /// Requests per second over the last second, as last sampled.
    pub fn requests_per_second(&self, deployment: &str) -> f64 {
        self.map
            .lock()
            .get(deployment)
            .map_or(0.0, |h| h.requests_per_second)
    }

    /// `deployment`'s recent activity (empty when nothing was recorded yet).
    pub fn view(&self, deployment: &str) -> HistoryView {
        let now = Instant::now();
        let age = |t: Instant| secs(now.saturating_duration_since(t));
        let map = self.map.lock();
        let history = map.get(deployment);
        HistoryView {
            bucket_s: BUCKET.as_secs_f64(),
            span_s: SPAN.as_secs_f64(),
            samples: history
                .map(|h| {
                    h.buckets
                        .iter()
                        .map(|b| Sample {
                            age_s: age(b.started),
                            requests: b.requests,
                            instances: b.instances,
                        })
                        .collect()
                })
                .unwrap_or_default(),
            cold_starts: history
                .map(|h| {
                    h.cold_starts
                        .iter()
                        .map(|s| ColdStart {
                            instance: s.instance,
                            age_s: age(s.ready_at),
                            create_s: secs(s.create),
                            boot_s: secs(s.boot),
                            first_byte_s: s.first_byte.map(secs),
                            total_s: secs(s.create + s.boot),
                        })
                        .collect()
                })
                .unwrap_or_default(),
            start_failures: history
                .map(|h| {
                    h.failures
                        .iter()
                        .map(|(at, instance, reason)| StartFailure {
                            instance: *instance,
                            age_s: age(*at),
                            reason: reason.clone(),
                        })
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

impl History {
    /// Adds `requests` and an instance count seen at `now` to the current bucket, opening a
    /// new one when it is full and dropping those older than the span.
    fn add(&mut self, now: Instant, requests: u64, instances: usize) {
        match self.buckets.back_mut() {
            Some(bucket) if now.saturating_duration_since(bucket.started) < BUCKET => {
                bucket.requests += requests;
                bucket.instances = bucket.instances.max(instances);
            }
            _ => self.buckets.push_back(Bucket {
                started: now,
                requests,
                instances,
            }),
        }
        while self
            .buckets
            .front()
            .is_some_and(|b| now.saturating_duration_since(b.started) > SPAN)
        {
            self.buckets.pop_front();
        }
    }
}
