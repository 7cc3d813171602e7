//! The gateway: its deployments (one [`Controller`] each), providers, upstream client and
//! metrics, and the [`tower::Service`] that answers links, the management API and `/metrics`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use autodeploy_core::controller::SharedBudget;
use autodeploy_core::{
    Controller, DeployConfig, DeploymentStatus, ErrorCode, FieldError, GatewayError, GpuProvider,
    RouteView, Target, ValidationErrors,
};
use autodeploy_routing::{Backlog, RoundRobin, RouteRule};
use axum::body::Body;
use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use http::{Request, Response};
use parking_lot::{Mutex, RwLock};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tower::{Service, ServiceExt};

use crate::config::{GatewayConfig, GatewaySettings, RateLimit};
use crate::events::{self, EventHub};
use crate::forward::forward;
use crate::metrics::Metrics;
use crate::respond::error_response;
use crate::store::{Store, StoreError};
use crate::upstream::Upstream;
use crate::{api, link, server};

/// A running gateway. Cheap to clone (a handle); all clones share one state.
#[derive(Clone)]
pub struct Gateway {
    shared: Arc<Shared>,
}

pub(crate) struct Shared {
    deployments: RwLock<BTreeMap<String, Arc<Deployment>>>,
    providers: BTreeMap<String, Arc<dyn GpuProvider>>,
    pub(crate) upstream: Upstream,
    pub(crate) metrics: Arc<Metrics>,
    /// Controller events, status changes and request rates for `/api/v1/events`.
    pub(crate) events: Arc<EventHub>,
    pub(crate) settings: GatewaySettings,
    /// `[gateway] budget`, shared by every deployment's controller.
    budget: Option<Arc<SharedBudget>>,
    closed: AtomicBool,
    /// Held while a deployment is added: its reconciliation releases every instance of its
    /// id that it does not know, so two adds of one id must not overlap.
    adding: tokio::sync::Mutex<()>,
    /// Deployments removed from the map whose instances are still draining: their id cannot
    /// be added again until they are released (the new one's reconciliation would cut them).
    removing: Mutex<std::collections::BTreeSet<String>>,
    /// Where deployments created through the management API are kept, if anywhere.
    store: Option<Store>,
}

/// One deployment as the gateway runs it.
pub(crate) struct Deployment {
    id: String,
    pub(crate) controller: Controller,
    cursor: Mutex<RoundRobin>,
    listener: Mutex<Option<DedicatedListener>>,
    scale_out_limiter: Option<DefaultKeyedRateLimiter<IpAddr>>,
    /// Request counters by (rule, status), kept so the request path skips label lookups.
    request_counters: Mutex<Vec<(&'static str, u16, Counter)>>,
    /// Request-duration histograms by rule, kept for the same reason.
    request_durations: Mutex<Vec<(&'static str, Histogram)>>,
}

struct DedicatedListener {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Deployment {
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// Whether `client` has used up its `scale-out` allowance; if so, how long until it may
    /// ask again. Requests without a known address share one allowance.
    pub(crate) fn scale_out_refused(&self, client: Option<SocketAddr>) -> Option<Duration> {
        let limiter = self.scale_out_limiter.as_ref()?;
        let key = client.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.ip());
        // Bound the memory one address per client costs: forget clients that are back at a
        // full allowance once the map grows large.
        if limiter.len() > 10_000 {
            limiter.retain_recent();
        }
        let refused = limiter.check_key(&key).err()?;
        Some(refused.wait_time_from(limiter.clock().now()))
    }

    /// Requests answered through this deployment's link, over its life.
    fn requests_total(&self) -> u64 {
        self.request_counters
            .lock()
            .iter()
            .map(|(_, _, counter)| counter.get())
            .sum()
    }

    /// Records how long one request took to its response head.
    pub(crate) fn time_request(&self, metrics: &Metrics, rule: &'static str, took: Duration) {
        let mut histograms = self.request_durations.lock();
        if let Some((_, histogram)) = histograms.iter().find(|(r, _)| *r == rule) {
            histogram.observe(took.as_secs_f64());
            return;
        }
        let histogram = metrics.request_duration(&self.id, rule);
        histogram.observe(took.as_secs_f64());
        histograms.push((rule, histogram));
    }

    /// Counts one answered request in the gateway's metrics.
    pub(crate) fn count_request(&self, metrics: &Metrics, rule: &'static str, status: u16) {
        let mut counters = self.request_counters.lock();
        if let Some((_, _, counter)) = counters.iter().find(|(r, s, _)| *s == status && *r == rule)
        {
            counter.inc();
            return;
        }
        let counter = metrics.request_counter(&self.id, rule, status);
        counter.inc();
        counters.push((rule, status, counter));
    }

    /// The route decision for one request, under the controller's lock.
    pub(crate) fn decide(&self, rule: &RouteRule, view: &RouteView) -> Target {
        autodeploy_routing::decide(*rule, view, &mut rand::rng(), &mut self.cursor.lock())
    }
}

/// Why a gateway could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A deployment is invalid, duplicated, or names an unknown provider.
    #[error(transparent)]
    Deployment(#[from] GatewayError),
    /// A provider could not be set up.
    #[error("provider {name}: {message}")]
    Provider {
        /// The provider.
        name: String,
        /// Why.
        message: String,
    },
    /// The deployments kept from the management API could not be read or added.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The TLS settings for `https` instances (`upstream_ca_file`) could not be used.
    #[error("{0}")]
    Tls(String),
    /// A dedicated listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Builds a [`Gateway`] from parts: settings, providers by name, deployments.
#[derive(Default)]
pub struct GatewayBuilder {
    settings: GatewaySettings,
    providers: BTreeMap<String, Arc<dyn GpuProvider>>,
    deployments: Vec<DeployConfig>,
    store: Option<PathBuf>,
}

impl fmt::Debug for GatewayBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GatewayBuilder")
            .field("settings", &self.settings)
            .field("providers", &self.providers.keys().collect::<Vec<_>>())
            .field("deployments", &self.deployments.len())
            .field("store", &self.store)
            .finish()
    }
}

impl GatewayBuilder {
    /// The `[gateway]` settings.
    pub fn settings(mut self, settings: GatewaySettings) -> Self {
        self.settings = settings;
        self
    }

    /// Makes `provider` available to deployments under `name` (their `provider` field).
    pub fn provider(mut self, name: impl Into<String>, provider: Arc<dyn GpuProvider>) -> Self {
        self.providers.insert(name.into(), provider);
        self
    }

    /// Adds a deployment served from the start.
    pub fn deployment(mut self, config: DeployConfig) -> Self {
        self.deployments.push(config);
        self
    }

    /// Keeps the deployments created through the management API in the JSON file at `path`
    /// (written at each create, update and delete), and adds those it holds when the gateway is
    /// built. The builder's own deployments (a config file's) are never written there, and one
    /// of theirs wins over a stored deployment of the same id.
    pub fn api_store(mut self, path: impl Into<PathBuf>) -> Self {
        self.store = Some(path.into());
        self
    }

    /// Builds the gateway: creates each deployment's controller (the builder's, then those
    /// kept in the API store), releases instances an earlier run left behind
    /// (reconciliation), and binds dedicated listeners.
    pub async fn build(self) -> Result<Gateway, BuildError> {
        let tls = crate::tls::UpstreamTls::new(self.settings.upstream_ca_file.as_deref())
            .map_err(BuildError::Tls)?;
        let store = self.store.map(|path| {
            let file_owned = self.deployments.iter().map(|d| d.id.clone()).collect();
            Store::new(path, file_owned)
        });
        let metrics = Arc::new(Metrics::new());
        let events = Arc::new(EventHub::new(events::DEFAULT_BUFFER, Some(metrics.clone())));
        let gateway = Gateway {
            shared: Arc::new(Shared {
                deployments: RwLock::new(BTreeMap::new()),
                providers: self.providers,
                upstream: Upstream::new(tls),
                metrics,
                events: events.clone(),
                budget: self.settings.budget.map(SharedBudget::new),
                settings: self.settings,
                closed: AtomicBool::new(false),
                adding: tokio::sync::Mutex::new(()),
                removing: Mutex::new(Default::default()),
                store,
            }),
        };
        for config in self.deployments {
            gateway.add_deployment(config).await?;
        }
        if let Some(store) = &gateway.shared.store {
            for config in store.load()? {
                let id = config.id.clone();
                gateway
                    .add_deployment(config)
                    .await
                    .map_err(|err| StoreError::Invalid {
                        path: store.path().to_owned(),
                        message: format!("deployment {id}: {err}"),
                    })?;
            }
        }
        tokio::spawn(events::sampler::run(gateway.downgrade(), events));
        Ok(gateway)
    }
}

/// A [`Gateway`] that does not keep it alive (for its own background tasks).
#[derive(Debug, Clone)]
pub(crate) struct WeakGateway(Weak<Shared>);

impl WeakGateway {
    /// The gateway, unless every handle to it was dropped.
    pub(crate) fn upgrade(&self) -> Option<Gateway> {
        self.0.upgrade().map(|shared| Gateway { shared })
    }
}

/// What the sampler reads of one deployment.
#[derive(Debug, Clone)]
pub(crate) struct DeploymentSnapshot {
    pub(crate) id: String,
    pub(crate) status: DeploymentStatus,
    pub(crate) instances: usize,
    pub(crate) requests_total: u64,
}

impl Gateway {
    /// A builder with default settings, no providers and no deployments.
    pub fn builder() -> GatewayBuilder {
        GatewayBuilder::default()
    }

    /// Builds a gateway from a validated configuration file, with the providers it names.
    pub async fn from_config(config: GatewayConfig) -> Result<Self, BuildError> {
        let mut builder = Self::builder().settings(config.gateway.clone());
        let context = autodeploy_provider::BuildContext {
            state_dir: config.gateway.state_dir.clone(),
            ca_file: config.gateway.upstream_ca_file.clone(),
        };
        let providers = config
            .providers
            .build(&context)
            .map_err(|e| BuildError::Provider {
                name: e.name,
                message: e.message,
            })?;
        for (name, provider) in providers {
            builder = builder.provider(name, provider);
        }
        if let Some(dir) = &config.gateway.state_dir {
            builder = builder.api_store(dir.join("deployments.json"));
        }
        for deployment in config.deployments {
            builder = builder.deployment(deployment);
        }
        let gateway = builder.build().await?;
        let configured: Vec<String> = gateway
            .controllers()
            .iter()
            .map(|c| c.config().id.clone())
            .collect();
        gateway.release_unconfigured(&configured).await;
        Ok(gateway)
    }

    /// The settings the gateway runs with.
    pub fn settings(&self) -> &GatewaySettings {
        &self.shared.settings
    }

    /// The gateway's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.shared.metrics
    }

    /// The gateway's live events: subscribe to them, or read each deployment's recent
    /// history.
    pub fn events(&self) -> &Arc<EventHub> {
        &self.shared.events
    }

    pub(crate) fn downgrade(&self) -> WeakGateway {
        WeakGateway(Arc::downgrade(&self.shared))
    }

    /// Every deployment's status, instance count and request counter, in id order.
    pub(crate) fn snapshot(&self) -> Vec<DeploymentSnapshot> {
        let deployments: Vec<Arc<Deployment>> =
            self.shared.deployments.read().values().cloned().collect();
        deployments
            .iter()
            .map(|d| DeploymentSnapshot {
                id: d.id.clone(),
                status: d.controller.status(),
                instances: d.controller.instances().len(),
                requests_total: d.requests_total(),
            })
            .collect()
    }

    /// The gateway-wide budget (`[gateway] budget`) every deployment draws on, if set.
    pub fn budget(&self) -> Option<&Arc<SharedBudget>> {
        self.shared.budget.as_ref()
    }

    /// Every provider's own counters, each with the name the provider is registered under.
    pub fn provider_counters(&self) -> Vec<(String, autodeploy_core::ProviderCounter)> {
        self.shared
            .providers
            .iter()
            .flat_map(|(name, provider)| {
                provider
                    .counters()
                    .into_iter()
                    .map(move |counter| (name.clone(), counter))
            })
            .collect()
    }

    /// The controller of deployment `id`.
    pub fn controller(&self, id: &str) -> Option<Controller> {
        self.deployment(id).map(|d| d.controller.clone())
    }

    /// Every deployment's controller, in id order.
    pub fn controllers(&self) -> Vec<Controller> {
        self.shared
            .deployments
            .read()
            .values()
            .map(|d| d.controller.clone())
            .collect()
    }

    pub(crate) fn deployment(&self, id: &str) -> Option<Arc<Deployment>> {
        self.shared.deployments.read().get(id).cloned()
    }

    /// Adds a deployment at runtime: validates it (1003), refuses a taken id (1014), releases
    /// instances an earlier run left for it, and binds its dedicated listener if it has one.
    pub async fn add_deployment(&self, config: DeployConfig) -> Result<Controller, BuildError> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(GatewayError::new(ErrorCode::ShuttingDown).into());
        }
        let provider = self.validate(&config)?;
        self.warn_if_keys_are_readable(&config);
        let _adding = self.shared.adding.lock().await;
        if self.deployment(&config.id).is_some() {
            return Err(GatewayError::with_detail(ErrorCode::DeploymentExists, &config.id).into());
        }
        if self.shared.removing.lock().contains(&config.id) {
            return Err(GatewayError::with_detail(
                ErrorCode::DeploymentExists,
                format!(
                    "{} is being deleted; create it again once its instances are released",
                    config.id
                ),
            )
            .into());
        }
        let listener = match config.listen {
            Some(addr) => Some(
                server::bind(addr)
                    .await
                    .map_err(|source| BuildError::Listen { addr, source })?,
            ),
            None => None,
        };
        let id = config.id.clone();
        let mut builder = Controller::builder(config, provider)
            .events(self.shared.events.clone())
            .owner("autodeploy")
            .scale_policy(Arc::new(Backlog));
        if let Some(budget) = &self.shared.budget {
            builder = builder.shared_budget(budget.clone());
        }
        let controller = builder
            .build()
            .map_err(|e| GatewayError::with_detail(ErrorCode::InvalidConfig, e))?;
        // Instances an earlier run left behind are unknown to the new controller (its own
        // are recorded before their create call), so this releases exactly the leftovers.
        match controller.reconcile().await {
            Ok(released) if !released.is_empty() => {
                tracing::warn!(
                    deployment = id,
                    ?released,
                    "released instances left by an earlier run"
                );
            }
            Ok(_) => {}
            Err(err) => tracing::error!(deployment = id, %err, "reconciliation failed"),
        }
        let deployment = Arc::new(Deployment {
            id: id.clone(),
            controller: controller.clone(),
            cursor: Mutex::new(RoundRobin::default()),
            listener: Mutex::new(None),
            scale_out_limiter: scale_out_limiter(self.shared.settings.scale_out_limit),
            request_counters: Mutex::new(Vec::new()),
            request_durations: Mutex::new(Vec::new()),
        });
        self.shared
            .deployments
            .write()
            .insert(id.clone(), deployment.clone());
        if let Some(listener) = listener {
            let (stop, mut stopped) = watch::channel(false);
            let service = GatewayService {
                gateway: self.clone(),
                routes: Routes::Dedicated(id.as_str().into()),
            };
            let settings = self.shared.settings.clone();
            let task = tokio::spawn(async move {
                let shutdown = async move {
                    let _ = stopped.wait_for(|s| *s).await;
                };
                server::run(listener, service, &settings, shutdown).await;
            });
            *deployment.listener.lock() = Some(DedicatedListener { stop, task });
        }
        tracing::info!(deployment = id, "deployment added");
        Ok(controller)
    }

    /// Writes the deployments the config file does not define to the API store, if the
    /// gateway has one; called after each change through the management API. A failed write
    /// is logged: the change is in effect, but would not survive a restart.
    pub(crate) async fn save_api_deployments(&self) {
        let Some(store) = &self.shared.store else {
            return;
        };
        let configs = self
            .controllers()
            .iter()
            .map(|c| (*c.config()).clone())
            .collect();
        if let Err(err) = store.save(configs).await {
            tracing::error!(
                file = %store.path().display(),
                %err,
                "cannot save the deployments created through the API: the change is in effect \
                 but will not survive a restart"
            );
        }
    }

    /// Whether a change to deployment `id` through the API lasts only until the next restart
    /// (the config file defines it, or there is no API store).
    pub(crate) fn change_is_runtime_only(&self, id: &str) -> bool {
        self.shared
            .store
            .as_ref()
            .is_none_or(|store| store.is_file_owned(id))
    }

    /// Checks a deployment (core's checks, then its provider's own) and returns its provider;
    /// every problem names its field (1003). The provider may be any registered with the
    /// builder, embedders' own included.
    fn validate(&self, config: &DeployConfig) -> Result<Arc<dyn GpuProvider>, GatewayError> {
        let mut errors = config.validate().err().map(|e| e.0).unwrap_or_default();
        let provider = self.shared.providers.get(&config.provider).cloned();
        match &provider {
            Some(provider) => errors.extend(provider.validate_deployment(config)),
            None => errors.push(FieldError {
                field: "provider".into(),
                message: format!("{:?} is not configured", config.provider),
            }),
        }
        match provider {
            Some(provider) if errors.is_empty() => Ok(provider),
            _ => Err(GatewayError::with_detail(
                ErrorCode::InvalidConfig,
                ValidationErrors(errors),
            )),
        }
    }

    /// Releases what every provider holds under our owner label for deployments this gateway
    /// does not have (removed from the file, or created through the API without a store):
    /// each configured deployment's own leftovers are released when it is added.
    async fn release_unconfigured(&self, configured: &[String]) {
        let mut releases = tokio::task::JoinSet::new();
        for (name, provider) in &self.shared.providers {
            let held = match provider.list_owned().await {
                Ok(held) => held,
                Err(err) => {
                    tracing::error!(provider = name, %err, "cannot list the provider's instances");
                    continue;
                }
            };
            for instance in held {
                let deployment = instance
                    .labels
                    .get(autodeploy_core::provider::LABEL_DEPLOYMENT)
                    .cloned()
                    .unwrap_or_default();
                if configured.contains(&deployment) {
                    continue;
                }
                tracing::warn!(provider = name, deployment, instance = %instance.id, "releasing an instance of a deployment that is no longer configured");
                let provider = provider.clone();
                releases.spawn(async move {
                    if let Err(err) = provider.release(instance.id).await {
                        tracing::error!(instance = %instance.id, %err, "release failed");
                    }
                });
            }
        }
        while releases.join_next().await.is_some() {}
    }

    /// Warns when a deployment has access keys but the management API, which shows them, has
    /// no token: anyone who reaches the gateway could read the keys there.
    fn warn_if_keys_are_readable(&self, config: &DeployConfig) {
        if !config.access_keys.is_empty() && self.shared.settings.admin_token.is_none() {
            tracing::warn!(
                deployment = %config.id,
                "the deployment has access keys but [gateway] admin_token is not set: \
                 /api/v1 shows them to anyone who reaches the gateway"
            );
        }
    }

    /// Replaces a deployment's configuration (validated; the id, provider and listen address
    /// cannot change).
    pub fn update_deployment(&self, config: DeployConfig) -> Result<(), GatewayError> {
        self.validate(&config)?;
        self.warn_if_keys_are_readable(&config);
        let deployment = self
            .deployment(&config.id)
            .ok_or(ErrorCode::DeploymentNotFound)?;
        let current = deployment.controller.config();
        if current.provider != config.provider {
            return Err(GatewayError::with_detail(
                ErrorCode::InvalidConfig,
                "provider: cannot change; delete the deployment and create it again",
            ));
        }
        if current.listen != config.listen {
            return Err(GatewayError::with_detail(
                ErrorCode::InvalidConfig,
                "listen: cannot change; delete the deployment and create it again",
            ));
        }
        deployment
            .controller
            .update_config(config)
            .map_err(|e| GatewayError::with_detail(ErrorCode::InvalidConfig, e))
    }

    /// Removes a deployment: its link answers 1002 at once, its instances drain (bounded by
    /// the drain timeout) and are released. Resolves when they are.
    pub async fn remove_deployment(&self, id: &str) -> Result<(), GatewayError> {
        let deployment = {
            let mut map = self.shared.deployments.write();
            let deployment = map.remove(id).ok_or(ErrorCode::DeploymentNotFound)?;
            self.shared.removing.lock().insert(id.to_owned());
            deployment
        };
        // The drain runs in a task of its own: a caller that goes away (an API client that
        // disconnects) must not cut it short and leave the id reserved.
        let shared = self.shared.clone();
        let id = id.to_owned();
        let drained = tokio::spawn(async move {
            stop_dedicated(&deployment).await;
            deployment
                .controller
                .shutdown(shared.settings.drain_timeout)
                .await;
            shared.removing.lock().remove(&id);
            tracing::info!(deployment = id, "deployment removed");
        });
        if let Err(err) = drained.await {
            tracing::error!(%err, "removing a deployment failed");
            return Err(ErrorCode::Internal.into());
        }
        Ok(())
    }

    /// The service answering links (`/d/{id}/...`), the management API (`/api/v1`),
    /// `/metrics` and `/healthz`; mount it in any hyper or axum server.
    pub fn service(&self) -> GatewayService {
        GatewayService {
            gateway: self.clone(),
            routes: Routes::Links(api::router(self.clone())),
        }
    }

    /// Serves the gateway on `listener` until `shutdown` resolves, then stops accepting, lets
    /// open requests finish (bounded by the drain timeout) and releases every instance.
    pub async fn serve(
        &self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) {
        let events = self.shared.events.clone();
        let shutdown = async move {
            shutdown.await;
            // Event streams never end on their own: end them, or the drain waits for them.
            events.close();
        };
        server::run(listener, self.service(), &self.shared.settings, shutdown).await;
        self.shutdown().await;
    }

    /// Serves the gateway's routes on one more `listener` until `shutdown` resolves, then
    /// stops accepting and lets its open requests finish (bounded by the drain timeout).
    /// Unlike [`Gateway::serve`] it leaves the gateway running: for serving on several
    /// listeners, e.g. one per runtime, beside the one `serve` runs on.
    pub async fn serve_listener(&self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        server::run(listener, self.service(), &self.shared.settings, shutdown).await;
    }

    /// Serves the gateway on `listener` in a background task, as [`Gateway::serve`] does,
    /// until [`Serving::stop`] is called or the handle is dropped.
    pub fn spawn(&self, listener: TcpListener) -> Serving {
        let (stop, stopped) = oneshot::channel::<()>();
        let gateway = self.clone();
        let task = tokio::spawn(async move {
            gateway
                .serve(listener, async move {
                    let _ = stopped.await;
                })
                .await;
        });
        Serving {
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops every deployment: new requests get 1015, in-flight ones may finish within the
    /// drain timeout, every instance is released. Resolves when all are.
    pub async fn shutdown(&self) {
        self.shared.closed.store(true, Ordering::Release);
        self.shared.events.close();
        let deployments: Vec<Arc<Deployment>> =
            self.shared.deployments.read().values().cloned().collect();
        let drain = self.shared.settings.drain_timeout;
        let mut tasks = Vec::new();
        for deployment in deployments {
            tasks.push(tokio::spawn(async move {
                stop_dedicated(&deployment).await;
                deployment.controller.shutdown(drain).await;
            }));
        }
        for task in tasks {
            let _ = task.await;
        }
    }

    /// Answers one request: on the main listener a link or, for any other path, the
    /// management router; on a dedicated listener, its deployment with the path unchanged.
    async fn handle(&self, routes: Routes, req: Request<Body>) -> Response<Body> {
        let (id, path_and_query) = match &routes {
            Routes::Dedicated(id) => {
                let path_and_query = req
                    .uri()
                    .path_and_query()
                    .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
                (&**id, path_and_query)
            }
            Routes::Links(api) => {
                let Some((id, forwarded)) = link::split(req.uri().path()) else {
                    return match api.clone().oneshot(req).await {
                        Ok(response) => response,
                        Err(never) => match never {},
                    };
                };
                let mut path_and_query = forwarded.to_owned();
                if let Some(query) = req.uri().query() {
                    path_and_query.push('?');
                    path_and_query.push_str(query);
                }
                (id, path_and_query)
            }
        };
        let Some(deployment) = self.deployment(id) else {
            return error_response(&ErrorCode::DeploymentNotFound.into());
        };
        forward(&self.shared, &deployment, req, &path_and_query).await
    }
}

/// The per-client `scale-out` limiter for `limit`, none when it is off.
fn scale_out_limiter(limit: RateLimit) -> Option<DefaultKeyedRateLimiter<IpAddr>> {
    let burst = NonZeroU32::new(limit.burst)?;
    let quota = Quota::with_period(limit.per / limit.burst)?.allow_burst(burst);
    Some(RateLimiter::keyed(quota))
}

/// A gateway serving in a background task ([`Gateway::spawn`]). Dropping the handle starts
/// the same graceful stop without waiting for it.
#[derive(Debug)]
pub struct Serving {
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Serving {
    /// Stops accepting, lets open requests finish (bounded by the drain timeout) and
    /// resolves once every instance is released.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take()
            && let Err(err) = task.await
        {
            tracing::error!(%err, "the serving task failed");
        }
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn stop_dedicated(deployment: &Deployment) {
    let listener = deployment.listener.lock().take();
    if let Some(listener) = listener {
        let _ = listener.stop.send(true);
        let _ = listener.task.await;
    }
}

impl fmt::Debug for Gateway {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gateway")
            .field(
                "deployments",
                &self.shared.deployments.read().keys().collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// The gateway as a [`tower::Service`]: links, management API, `/metrics`, `/healthz`.
#[derive(Clone)]
pub struct GatewayService {
    gateway: Gateway,
    routes: Routes,
}

/// What a listener answers.
#[derive(Clone)]
enum Routes {
    /// The main listener: `/d/{id}/...` links, and the management router for the rest.
    Links(axum::Router),
    /// A deployment's own listener: every path goes to that deployment unchanged.
    Dedicated(Arc<str>),
}

impl fmt::Debug for GatewayService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GatewayService").finish_non_exhaustive()
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl Service<Request<Body>> for GatewayService {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let gateway = self.gateway.clone();
        let routes = self.routes.clone();
        Box::pin(async move { Ok(gateway.handle(routes, req).await) })
    }
}
