//! The SDK calls: `POST /instance`, `GET /instance?request_id|meta_key`,
//! `POST /instance/cancel?request_id`, `GET /instance/list?page&per_page`, and what their
//! answers mean. Every answer is `{code, msg, ...}`, HTTP 200 even on failure: a non-zero
//! `code` is an error.

use std::collections::BTreeMap;

use async_trait::async_trait;
use autodeploy_core::{DeployConfig, Endpoint, FieldError, InstanceSpec};
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};

use super::config::GlowsConfig;
use crate::remote::{self, ApiClient, ApiError, Cloud, CloudInstance, CloudState, Retry};

/// The code Glows answers (with HTTP 200) for a token it does not accept.
pub const CODE_BAD_TOKEN: i64 = 176;
/// The longest meta key the API takes.
const MAX_META_KEY: usize = 64;
/// Instances asked per page of the list.
const PER_PAGE: usize = 50;
/// The most pages read (5 000 instances).
const MAX_PAGES: usize = 100;
/// Statuses in which an instance no longer runs.
const GONE: [&str; 9] = [
    "Released",
    "Canceled",
    "Cancelled",
    "Stopped",
    "Failed",
    "Terminated",
    "Exited",
    "Error",
    "Finished",
];

/// The Glows.ai mapping; see the [module docs](super).
#[derive(Debug, Clone)]
pub struct Glows {
    config: GlowsConfig,
}

/// Every answer's envelope.
#[derive(Debug, Deserialize)]
struct Answer {
    #[serde(default)]
    code: i64,
    #[serde(default)]
    msg: String,
    #[serde(default)]
    instance: Option<Instance>,
    #[serde(default, alias = "list", alias = "data")]
    instances: Option<Vec<Instance>>,
}

/// An instance as the SDK describes it (the fields used).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Instance {
    #[serde(rename = "instanceID")]
    instance_id: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    accesses: Vec<Access>,
    #[serde(default)]
    envs: String,
    #[serde(default)]
    meta_key: String,
    /// US cents per hour (assumed; the documented example is `65`).
    #[serde(default)]
    price_cent: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Access {
    #[serde(default)]
    protocol: String,
    #[serde(default)]
    listen_port: u16,
    #[serde(default)]
    url: String,
}

impl Glows {
    /// The mapping for `config`.
    pub fn new(config: GlowsConfig) -> Self {
        Self { config }
    }

    fn instance(&self, raw: Instance) -> CloudInstance {
        let env = parse_envs(&raw.envs);
        let labels = remote::from_environment(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let port: u16 = env.get("PORT").and_then(|p| p.parse().ok()).unwrap_or(8080);
        let state = match raw.status.as_str() {
            "Running" => CloudState::Running,
            s if GONE.contains(&s) => CloudState::Gone(s.to_ascii_lowercase()),
            _ => CloudState::Pending,
        };
        let endpoint = match state {
            CloudState::Running => raw
                .accesses
                .iter()
                .find(|a| a.protocol.eq_ignore_ascii_case("http") && a.listen_port == port)
                .and_then(|a| endpoint_of(&a.url)),
            _ => None,
        };
        CloudInstance {
            cloud_id: raw.instance_id,
            key: raw.meta_key,
            state,
            endpoint,
            labels,
            price_per_hour: raw.price_cent.filter(|c| *c > 0.0).map(|c| c / 100.0),
        }
    }

    fn body(&self, spec: &InstanceSpec, key: &str) -> Value {
        let envs: Vec<String> = remote::environment(spec)
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let ports = json!([{"port": spec.port, "protocol": 2}]).to_string();
        let mut body = json!({
            "gpu_name": spec.gpu.kind,
            "region_name": self.config.region_name,
            "instance_category": self.config.instance_category,
            "custom_meta_key": key,
            "remark": format!("autodeploy {}", spec.deployment),
            "envs": envs.join(";"),
            "ports": ports,
            "cmd": spec.command.replace("{port}", &spec.port.to_string()),
        });
        match (&spec.snapshot, &spec.image) {
            (Some(snapshot), _) => body["from_snap_id"] = json!(snapshot),
            (None, image) => body["from_image_id"] = json!(image.clone().unwrap_or_default()),
        }
        body
    }

    /// Sends `request` and opens the envelope: a non-zero code is an error (the bad-token
    /// code is [`ApiError::KeyRefused`]).
    async fn call(
        &self,
        api: &ApiClient,
        request: reqwest::RequestBuilder,
        retry: Retry,
        what: &str,
    ) -> Result<Answer, ApiError> {
        let (_, body) = api.send(request, retry).await?;
        let answer: Answer = serde_json::from_slice(&body).map_err(|e| {
            ApiError::Decode(format!(
                "glows: {what}: unexpected answer ({e}): {}",
                remote::excerpt(&body)
            ))
        })?;
        match answer.code {
            0 => Ok(answer),
            CODE_BAD_TOKEN => {
                Err(api.key_refused(format!("code {CODE_BAD_TOKEN}: {}", answer.msg)))
            }
            code if is_capacity(&answer.msg) => Err(ApiError::NoCapacity(format!(
                "glows: {what}: code {code}: {}",
                answer.msg
            ))),
            code => Err(ApiError::Rejected(format!(
                "glows: {what}: code {code}: {}",
                answer.msg
            ))),
        }
    }

    /// `GET /instance` by `request_id` or `meta_key`; a non-zero code other than a bad
    /// token reads as "not found".
    async fn query(
        &self,
        api: &ApiClient,
        param: &str,
        value: &str,
    ) -> Result<Option<CloudInstance>, ApiError> {
        let request = api.request(
            Method::GET,
            &format!("/instance?{param}={}", remote::query_value(value)),
        );
        match self
            .call(api, request, Retry::Idempotent, "GET /instance")
            .await
        {
            Ok(answer) => Ok(answer.instance.map(|i| self.instance(i))),
            Err(ApiError::Rejected(_) | ApiError::NoCapacity(_)) => Ok(None),
            Err(err) => Err(err),
        }
    }
}

/// `"A=1;B=2"` as a map.
fn parse_envs(envs: &str) -> BTreeMap<String, String> {
    envs.split(';')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.to_owned()))
        .collect()
}

/// An access URL (`https://tw-07.sgw.glows.ai:20017`) as an endpoint; empty until the
/// instance is reachable.
fn endpoint_of(url: &str) -> Option<Endpoint> {
    let url = reqwest::Url::parse(url.trim()).ok()?;
    let host = url
        .host_str()?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = url.port_or_known_default()?;
    match url.scheme() {
        "https" => Some(Endpoint::https(host, port)),
        "http" => Some(Endpoint::new(host, port)),
        _ => None,
    }
}

/// What a Glows deployment needs: an image or a snapshot (not both), a GPU name, and an
/// environment the `"A=1;B=2"` format can carry.
pub(super) fn validate_deployment(deployment: &DeployConfig) -> Vec<FieldError> {
    let mut out = remote::require_gpu(
        deployment,
        "Glows GPU name, e.g. \"NVIDIA GeForce RTX 4090\"",
    );
    let image = deployment
        .image
        .as_deref()
        .is_some_and(|i| !i.trim().is_empty());
    let snapshot = deployment
        .snapshot
        .as_deref()
        .is_some_and(|s| !s.trim().is_empty());
    match (image, snapshot) {
        (false, false) => out.push(remote::field_error(
            "image",
            "an image id (from_image_id) or a snapshot id (from_snap_id) is required",
        )),
        (true, true) => out.push(remote::field_error(
            "snapshot",
            "set an image or a snapshot, not both",
        )),
        _ => {}
    }
    for (key, value) in &deployment.env {
        if value.contains(';') || key.contains(';') {
            out.push(remote::field_error(
                &format!("env.{key}"),
                "Glows passes the environment as \"A=1;B=2\": no `;` in names or values",
            ));
        }
    }
    out
}

/// Messages Glows answers a create with when no machine fits (matched loosely).
fn is_capacity(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "insufficient",
        "no available",
        "not enough",
        "out of stock",
        "sold out",
        "no resource",
    ]
    .iter()
    .any(|needle| m.contains(needle))
}

#[async_trait]
impl Cloud for Glows {
    fn name(&self) -> &'static str {
        "glows"
    }

    fn validate_deployment(&self, deployment: &DeployConfig) -> Vec<FieldError> {
        validate_deployment(deployment)
    }

    /// `{owner}.{deployment}.{instance}`, the deployment cut so the key fits 64 characters
    /// (the instance id, random, keeps it globally unique).
    fn key(&self, spec: &InstanceSpec) -> String {
        let owner = remote::owner(spec);
        let instance = spec.instance.to_string();
        let room = MAX_META_KEY.saturating_sub(owner.len() + instance.len() + 2);
        let deployment: String = spec.deployment.chars().take(room).collect();
        let key = format!("{owner}.{deployment}.{instance}");
        key.chars().take(MAX_META_KEY).collect()
    }

    async fn create(
        &self,
        api: &ApiClient,
        spec: &InstanceSpec,
        key: &str,
    ) -> Result<CloudInstance, ApiError> {
        let request = api
            .request(Method::POST, "/instance")
            .json(&self.body(spec, key));
        let answer = self
            .call(api, request, Retry::Never, "POST /instance")
            .await?;
        let instance = answer.instance.ok_or_else(|| {
            ApiError::Decode("glows: POST /instance: code 0 without an instance".into())
        })?;
        Ok(self.instance(instance))
    }

    async fn find(&self, api: &ApiClient, key: &str) -> Result<Option<CloudInstance>, ApiError> {
        Ok(self
            .query(api, "meta_key", key)
            .await?
            .filter(|i| !matches!(i.state, CloudState::Gone(_))))
    }

    async fn get(
        &self,
        api: &ApiClient,
        cloud_id: &str,
    ) -> Result<Option<CloudInstance>, ApiError> {
        self.query(api, "request_id", cloud_id).await
    }

    async fn delete(&self, api: &ApiClient, instance: &CloudInstance) -> Result<(), ApiError> {
        let request = api.request(
            Method::POST,
            &format!(
                "/instance/cancel?request_id={}",
                remote::query_value(&instance.cloud_id)
            ),
        );
        match self.call(api, request, Retry::Idempotent, "cancel").await {
            Ok(_) => Ok(()),
            // Cancelling what is already gone is refused by some APIs: gone is what we want.
            Err(err @ ApiError::Rejected(_)) => match self.get(api, &instance.cloud_id).await? {
                None => Ok(()),
                Some(i) if matches!(i.state, CloudState::Gone(_)) => Ok(()),
                Some(_) => Err(err),
            },
            Err(err) => Err(err),
        }
    }

    async fn list(&self, api: &ApiClient) -> Result<Vec<CloudInstance>, ApiError> {
        let mut out = Vec::new();
        for page in 1..=MAX_PAGES {
            let request = api.request(
                Method::GET,
                &format!("/instance/list?page={page}&per_page={PER_PAGE}"),
            );
            let answer = self
                .call(api, request, Retry::Idempotent, "GET /instance/list")
                .await?;
            let rows = answer.instances.unwrap_or_default();
            let last = rows.len() < PER_PAGE;
            out.extend(
                rows.into_iter()
                    .map(|i| self.instance(i))
                    .filter(|i| !i.labels.is_empty()),
            );
            if last {
                break;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envs_and_accesses_are_read() {
        let glows = Glows::new(GlowsConfig::default());
        let raw: Instance = serde_json::from_value(json!({
            "instanceID": "ins-boyqp4g8", "status": "Running", "priceCent": 65,
            "envs": "PORT=8080;AUTODEPLOY_OWNER=autodeploy;AUTODEPLOY_DEPLOYMENT=tts;AUTODEPLOY_INSTANCE=abcdefgh",
            "metaKey": "autodeploy.tts.abcdefgh",
            "accesses": [
                {"protocol": "ssh", "listenPort": 22, "url": "ssh://access.example.com:15692"},
                {"protocol": "http", "listenPort": 8080, "url": "https://tw-07.sgw.glows.ai:20017"}
            ]
        }))
        .unwrap();
        let instance = glows.instance(raw);
        assert_eq!(instance.state, CloudState::Running);
        assert_eq!(
            instance.endpoint,
            Some(Endpoint::https("tw-07.sgw.glows.ai", 20017))
        );
        assert_eq!(instance.price_per_hour, Some(0.65));
        assert_eq!(instance.labels.len(), 3);
    }

    #[test]
    fn an_empty_url_is_no_address_yet() {
        let glows = Glows::new(GlowsConfig::default());
        let raw: Instance = serde_json::from_value(json!({
            "instanceID": "i", "status": "Running", "envs": "PORT=8080",
            "accesses": [{"protocol": "http", "listenPort": 8080, "url": ""}]
        }))
        .unwrap();
        assert_eq!(glows.instance(raw).endpoint, None);
    }

    #[test]
    fn meta_keys_fit_64_characters_and_keep_the_instance_id() {
        let glows = Glows::new(GlowsConfig::default());
        let long = "d".repeat(100);
        let mut config =
            autodeploy_core::DeployConfig::new(&long, "x", std::time::Duration::from_secs(60), 1);
        config.gpu.kind = "NVIDIA GeForce RTX 4090".into();
        let spec = InstanceSpec::from_config(&config, "abcdefgh".parse().unwrap());
        let key = glows.key(&spec);
        assert!(key.len() <= 64, "{key}");
        assert!(key.ends_with(".abcdefgh"), "{key}");
        let body = glows.body(&spec, &key);
        assert_eq!(body["ports"], "[{\"port\":8080,\"protocol\":2}]");
        assert!(
            body["envs"]
                .as_str()
                .unwrap()
                .contains("AUTODEPLOY_INSTANCE=abcdefgh")
        );
    }
}
