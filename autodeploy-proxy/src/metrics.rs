//! Prometheus metrics: one [`Registry`] per gateway (no global recorder), so several
//! gateways can live in one process and in one test binary.

use std::sync::atomic::AtomicU64;

use autodeploy_core::{
    Controller, ControllerEvent, EventSink, InstanceState, ProviderCounter, Wait,
};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    deployment: String,
    rule: &'static str,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleLabels {
    deployment: String,
    rule: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WaitLabels {
    deployment: String,
    cause: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeploymentLabels {
    deployment: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    deployment: String,
    phase: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    deployment: String,
    state: &'static str,
}

/// The gateway's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_seconds: Family<RuleLabels, Histogram>,
    wait_seconds: Family<WaitLabels, Histogram>,
    cold_starts: Family<DeploymentLabels, Counter>,
    cold_start_seconds: Family<PhaseLabels, Histogram>,
    start_failures: Family<DeploymentLabels, Counter>,
    deaths: Family<DeploymentLabels, Counter>,
    released: Family<DeploymentLabels, Counter>,
    instances: Family<StateLabels, Gauge>,
    queue_depth: Family<DeploymentLabels, Gauge>,
    cost: Family<DeploymentLabels, Gauge<f64, AtomicU64>>,
    events_dropped: Counter,
    idle_waste: Family<DeploymentLabels, Gauge<f64, AtomicU64>>,
    hourly_rate: Family<DeploymentLabels, Gauge<f64, AtomicU64>>,
    budget_refusals: Family<BudgetLabels, Counter>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BudgetLabels {
    deployment: String,
    budget: &'static str,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

const STATES: [(InstanceState, &str); 6] = [
    (InstanceState::Creating, "creating"),
    (InstanceState::Starting, "starting"),
    (InstanceState::Ready, "ready"),
    (InstanceState::Draining, "draining"),
    (InstanceState::Failed, "failed"),
    (InstanceState::Releasing, "releasing"),
];

impl Metrics {
    /// Fresh metrics in a registry of their own.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("autodeploy");
        let requests = Family::default();
        registry.register(
            "requests",
            "Requests through the links, by deployment, route rule and status",
            requests.clone(),
        );
        let request_seconds = Family::<RuleLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 20))
        });
        registry.register(
            "request_duration_seconds",
            "Time from a request's arrival to its response head (the gateway's or the \
             instance's), waits for an instance included, by deployment and route rule",
            request_seconds.clone(),
        );
        let wait_seconds = Family::<WaitLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 20))
        });
        registry.register(
            "instance_wait_seconds",
            "Time requests waited for an instance, by deployment and cause (cold_start: none \
             was ready; scale_out: the instance started for it; queue: all were busy)",
            wait_seconds.clone(),
        );
        let cold_starts = Family::default();
        registry.register(
            "cold_starts",
            "Instances that became ready",
            cold_starts.clone(),
        );
        let cold_start_seconds = Family::<PhaseLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.005, 2.0, 18))
        });
        registry.register(
            "cold_start_seconds",
            "Cold start duration by phase (create: provider call, boot: until ready, total)",
            cold_start_seconds.clone(),
        );
        let start_failures = Family::default();
        registry.register(
            "start_failures",
            "Instances that failed to start",
            start_failures.clone(),
        );
        let deaths = Family::default();
        registry.register(
            "instance_deaths",
            "Instances that stopped on their own while serving",
            deaths.clone(),
        );
        let released = Family::default();
        registry.register(
            "instances_released",
            "Instances released at the provider",
            released.clone(),
        );
        let instances = Family::default();
        registry.register(
            "instances",
            "Instances by lifecycle state",
            instances.clone(),
        );
        let queue_depth = Family::default();
        registry.register(
            "queue_depth",
            "Requests waiting for an instance",
            queue_depth.clone(),
        );
        let cost = Family::default();
        registry.register(
            "cost",
            "Total spend per deployment (released and running instances), in the price's currency",
            cost.clone(),
        );
        let events_dropped = Counter::default();
        registry.register(
            "events_dropped",
            "Events that /api/v1/events subscribers missed because they read too slowly",
            events_dropped.clone(),
        );
        let idle_waste = Family::default();
        registry.register(
            "idle_waste",
            "Spend on instances while they served nothing (ready with no request in flight, \
             until the next request or their release), per deployment; tune idle_retention with it",
            idle_waste.clone(),
        );
        let hourly_rate = Family::default();
        registry.register(
            "hourly_rate",
            "Running hourly rate per deployment: the sum of price_per_hour of its live instances",
            hourly_rate.clone(),
        );
        let budget_refusals = Family::default();
        registry.register(
            "budget_refusals",
            "Requests answered 1021 because a start would exceed a budget (deployment or gateway)",
            budget_refusals.clone(),
        );
        Self {
            registry,
            requests,
            request_seconds,
            wait_seconds,
            cold_starts,
            cold_start_seconds,
            start_failures,
            deaths,
            released,
            instances,
            queue_depth,
            cost,
            events_dropped,
            idle_waste,
            hourly_rate,
            budget_refusals,
        }
    }

    /// Counts events a slow subscriber of the event stream missed.
    pub fn events_dropped(&self, n: u64) {
        self.events_dropped.inc_by(n);
    }

    /// The counter of requests answered with `status` under route rule `rule`: a handle to
    /// keep, so that the request path counts without building and hashing labels.
    pub fn request_counter(&self, deployment: &str, rule: &'static str, status: u16) -> Counter {
        self.requests.get_or_create_owned(&RequestLabels {
            deployment: deployment.to_owned(),
            rule,
            status,
        })
    }

    /// The request-duration histogram of route rule `rule`: a handle to keep, like
    /// [`Metrics::request_counter`]'s.
    pub fn request_duration(&self, deployment: &str, rule: &'static str) -> Histogram {
        self.request_seconds.get_or_create_owned(&RuleLabels {
            deployment: deployment.to_owned(),
            rule,
        })
    }

    /// Records that a request waited `waited` for an instance, for `cause`.
    pub fn observe_wait(&self, deployment: &str, cause: Wait, waited: std::time::Duration) {
        self.wait_seconds
            .get_or_create(&WaitLabels {
                deployment: deployment.to_owned(),
                cause: cause.as_str(),
            })
            .observe(waited.as_secs_f64());
    }

    /// Renders every metric in the Prometheus text format, with the gauges read from
    /// `controllers` now, and the providers' own counters (each with the provider's name).
    pub fn render<'a>(
        &self,
        controllers: impl IntoIterator<Item = &'a Controller>,
        providers: &[(String, ProviderCounter)],
    ) -> String {
        self.instances.clear();
        self.queue_depth.clear();
        self.cost.clear();
        self.idle_waste.clear();
        self.hourly_rate.clear();
        for controller in controllers {
            let deployment = controller.id();
            let infos = controller.instances();
            for (state, name) in STATES {
                let n = infos.iter().filter(|i| i.state == state).count();
                self.instances
                    .get_or_create(&StateLabels {
                        deployment: deployment.clone(),
                        state: name,
                    })
                    .set(n as i64);
            }
            let labels = DeploymentLabels { deployment };
            self.queue_depth
                .get_or_create(&labels)
                .set(controller.queue_depth() as i64);
            self.cost
                .get_or_create(&labels)
                .set(controller.total_cost());
            self.idle_waste
                .get_or_create(&labels)
                .set(controller.idle_waste());
            self.hourly_rate
                .get_or_create(&labels)
                .set(controller.hourly_rate());
        }
        let mut out = String::new();
        if let Err(err) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(%err, "metrics encoding failed");
        }
        let eof = out.rfind("# EOF").unwrap_or(out.len());
        out.insert_str(eof, &provider_counters(providers));
        out
    }
}

/// The providers' counters as OpenMetrics counter families, one `# HELP`/`# TYPE` per name.
fn provider_counters(counters: &[(String, ProviderCounter)]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let mut named: Vec<&str> = counters.iter().map(|(_, c)| c.name).collect();
    named.sort_unstable();
    named.dedup();
    for name in named {
        let family = format!("autodeploy_provider_{name}");
        let mut first = true;
        for (provider, counter) in counters.iter().filter(|(_, c)| c.name == name) {
            if first {
                let _ = writeln!(out, "# HELP {family} {}", counter.help);
                let _ = writeln!(out, "# TYPE {family} counter");
                first = false;
            }
            let mut labels = format!("provider=\"{}\"", escape(provider));
            for (key, value) in &counter.labels {
                let _ = write!(labels, ",{key}=\"{}\"", escape(value));
            }
            let _ = writeln!(out, "{family}_total{{{labels}}} {}", counter.value);
        }
    }
    out
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl EventSink for Metrics {
    fn on_event(&self, deployment: &str, event: &ControllerEvent) {
        let labels = DeploymentLabels {
            deployment: deployment.to_owned(),
        };
        match event {
            ControllerEvent::Ready { create, boot, .. } => {
                self.cold_starts.get_or_create(&labels).inc();
                for (phase, d) in [
                    ("create", *create),
                    ("boot", *boot),
                    ("total", *create + *boot),
                ] {
                    self.cold_start_seconds
                        .get_or_create(&PhaseLabels {
                            deployment: deployment.to_owned(),
                            phase,
                        })
                        .observe(d.as_secs_f64());
                }
            }
            // Logged once, by the controller.
            ControllerEvent::StartFailed { .. } => {
                self.start_failures.get_or_create(&labels).inc();
            }
            ControllerEvent::Died { .. } => {
                self.deaths.get_or_create(&labels).inc();
            }
            ControllerEvent::Released {
                instance,
                cost,
                idle_waste,
                ..
            } => {
                tracing::info!(deployment, %instance, cost, idle_waste, "instance released");
                self.released.get_or_create(&labels).inc();
            }
            ControllerEvent::BudgetRefused { shared } => {
                self.budget_refusals
                    .get_or_create(&BudgetLabels {
                        deployment: deployment.to_owned(),
                        budget: if *shared { "gateway" } else { "deployment" },
                    })
                    .inc();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_counters_are_counter_families_before_the_end_marker() {
        let counter = |host: &str, value| ProviderCounter {
            name: "docker_hosts_skipped",
            help: "Skipped hosts.",
            labels: vec![("host", host.to_owned())],
            value,
        };
        let text = Metrics::new().render(
            std::iter::empty(),
            &[
                ("docker".to_owned(), counter("dead", 3)),
                ("docker".to_owned(), counter("a\"b", 0)),
            ],
        );
        let family = "# HELP autodeploy_provider_docker_hosts_skipped Skipped hosts.\n\
             # TYPE autodeploy_provider_docker_hosts_skipped counter\n\
             autodeploy_provider_docker_hosts_skipped_total{provider=\"docker\",host=\"dead\"} 3\n\
             autodeploy_provider_docker_hosts_skipped_total{provider=\"docker\",host=\"a\\\"b\"} 0\n";
        assert!(text.contains(family), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
