//! The REST v1 calls: `POST /pods`, `GET /pods`, `GET /pods/{id}`, `DELETE /pods/{id}`,
//! and what their answers mean.

use std::collections::BTreeMap;

use async_trait::async_trait;
use autodeploy_core::{DeployConfig, Endpoint, FieldError, InstanceSpec};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::config::{RunpodAccess, RunpodConfig};
use crate::remote::{self, ApiClient, ApiError, Cloud, CloudInstance, CloudState, Retry};

/// The RunPod mapping; see the [module docs](super).
#[derive(Debug, Clone)]
pub struct Runpod {
    config: RunpodConfig,
}

impl Runpod {
    /// The mapping for `config`.
    pub fn new(config: RunpodConfig) -> Self {
        Self { config }
    }

    /// The public address of a pod's `port` under the configured access (`None` while
    /// RunPod has not mapped it yet).
    fn endpoint(&self, pod: &Pod, port: u16) -> Option<Endpoint> {
        match self.config.access {
            RunpodAccess::Proxy => Some(Endpoint::https(
                format!("{}-{port}.{}", pod.id, self.config.proxy_domain),
                443,
            )),
            RunpodAccess::Tcp => {
                let ip = pod.public_ip.as_deref().filter(|ip| !ip.is_empty())?;
                let public = pod
                    .port_mappings
                    .as_ref()?
                    .get(&port.to_string())
                    .and_then(number)?;
                Some(Endpoint::new(ip, u16::try_from(public).ok()?))
            }
        }
    }

    fn instance(&self, pod: Pod) -> CloudInstance {
        let env: BTreeMap<String, String> =
            pod.env.iter().map(|(k, v)| (k.clone(), text(v))).collect();
        let labels = remote::from_environment(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let port = env.get("PORT").and_then(|p| p.parse().ok()).unwrap_or(8080);
        let state = match pod.desired_status.as_deref() {
            Some("RUNNING") => CloudState::Running,
            Some("EXITED") => CloudState::Gone("exited".into()),
            Some("TERMINATED") => CloudState::Gone("terminated".into()),
            _ => CloudState::Pending,
        };
        let endpoint = match state {
            CloudState::Running => self.endpoint(&pod, port),
            _ => None,
        };
        CloudInstance {
            cloud_id: pod.id.clone(),
            key: pod.name.clone().unwrap_or_default(),
            state,
            endpoint,
            labels,
            price_per_hour: pod.cost_per_hr.as_ref().and_then(number_f64),
        }
    }

    fn body(&self, spec: &InstanceSpec, key: &str) -> Value {
        let protocol = match self.config.access {
            RunpodAccess::Proxy => "http",
            RunpodAccess::Tcp => "tcp",
        };
        let command = spec.command.replace("{port}", &spec.port.to_string());
        let mut body = json!({
            "name": key,
            "imageName": spec.image.clone().unwrap_or_default(),
            "gpuTypeIds": [spec.gpu.kind],
            "gpuCount": spec.gpu.count.max(1),
            "containerDiskInGb": self.config.container_disk_gb,
            "ports": [format!("{}/{protocol}", spec.port)],
            "env": remote::environment(spec),
            "supportPublicIp": self.config.access == RunpodAccess::Tcp,
        });
        if !command.trim().is_empty() {
            body["dockerStartCmd"] = json!(["sh", "-c", command]);
        }
        if let Some(cloud_type) = &self.config.cloud_type {
            body["cloudType"] = json!(cloud_type);
        }
        if !self.config.data_center_ids.is_empty() {
            body["dataCenterIds"] = json!(self.config.data_center_ids);
        }
        body
    }

    async fn pods(
        &self,
        api: &ApiClient,
        name: Option<&str>,
    ) -> Result<Vec<CloudInstance>, ApiError> {
        let path = match name {
            Some(name) => format!("/pods?name={}", crate::remote::query_value(name)),
            None => "/pods".to_owned(),
        };
        let request = api.request(Method::GET, &path);
        let (_, body) = api.send(request, Retry::Idempotent).await?;
        let pods: Vec<Pod> = decode(api, &body)?;
        Ok(pods.into_iter().map(|p| self.instance(p)).collect())
    }
}

/// A pod as REST v1 describes it (the fields used; others are ignored).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Pod {
    id: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    desired_status: Option<String>,
    #[serde(default)]
    public_ip: Option<String>,
    /// Internal port (as a string key) → public port.
    #[serde(default)]
    port_mappings: Option<BTreeMap<String, Value>>,
    #[serde(default)]
    env: BTreeMap<String, Value>,
    /// A number or a decimal string (the documented example is `"0.74"`).
    #[serde(default)]
    cost_per_hr: Option<Value>,
}

fn number(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| v.as_str()?.parse().ok())
}

fn number_f64(v: &Value) -> Option<f64> {
    v.as_f64().or_else(|| v.as_str()?.parse().ok())
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn decode<T: serde::de::DeserializeOwned>(api: &ApiClient, body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::Decode(format!(
            "{}: unexpected answer ({e}): {}",
            api.cloud(),
            remote::excerpt(body)
        ))
    })
}

/// What a RunPod deployment needs: an image (RunPod has no snapshots) and a GPU type id.
pub(super) fn validate_deployment(deployment: &DeployConfig) -> Vec<FieldError> {
    let mut out = remote::require_gpu(
        deployment,
        "RunPod GPU type id, e.g. \"NVIDIA GeForce RTX 4090\"",
    );
    if deployment
        .image
        .as_deref()
        .is_none_or(|i| i.trim().is_empty())
    {
        out.push(remote::field_error(
            "image",
            "is required: the container image the pod runs",
        ));
    }
    if deployment.snapshot.is_some() {
        out.push(remote::field_error(
            "snapshot",
            "RunPod pods boot from an image, not a snapshot",
        ));
    }
    out
}

/// Messages RunPod answers a create with when no machine fits (matched loosely).
fn is_capacity(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "no instances",
        "not available",
        "no gpu",
        "insufficient",
        "capacity",
    ]
    .iter()
    .any(|needle| m.contains(needle))
}

#[async_trait]
impl Cloud for Runpod {
    fn name(&self) -> &'static str {
        "runpod"
    }

    fn validate_deployment(&self, deployment: &DeployConfig) -> Vec<FieldError> {
        validate_deployment(deployment)
    }

    fn key(&self, spec: &InstanceSpec) -> String {
        format!(
            "autodeploy-{}-{}-{}",
            remote::owner(spec),
            spec.deployment,
            spec.instance
        )
    }

    async fn create(
        &self,
        api: &ApiClient,
        spec: &InstanceSpec,
        key: &str,
    ) -> Result<CloudInstance, ApiError> {
        let request = api
            .request(Method::POST, "/pods")
            .json(&self.body(spec, key));
        let (status, body) = match api.send(request, Retry::Never).await {
            Err(ApiError::Rejected(msg)) if is_capacity(&msg) => {
                return Err(ApiError::NoCapacity(msg));
            }
            other => other?,
        };
        if status == StatusCode::NOT_FOUND {
            return Err(ApiError::Rejected(format!(
                "runpod: POST /pods: HTTP 404: {}",
                remote::excerpt(&body)
            )));
        }
        Ok(self.instance(decode(api, &body)?))
    }

    async fn find(&self, api: &ApiClient, key: &str) -> Result<Option<CloudInstance>, ApiError> {
        Ok(self
            .pods(api, Some(key))
            .await?
            .into_iter()
            .find(|p| p.key == key && !matches!(p.state, CloudState::Gone(_))))
    }

    async fn get(
        &self,
        api: &ApiClient,
        cloud_id: &str,
    ) -> Result<Option<CloudInstance>, ApiError> {
        let request = api.request(Method::GET, &format!("/pods/{cloud_id}"));
        let (status, body) = api.send(request, Retry::Idempotent).await?;
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        Ok(Some(self.instance(decode(api, &body)?)))
    }

    async fn delete(&self, api: &ApiClient, instance: &CloudInstance) -> Result<(), ApiError> {
        let request = api.request(Method::DELETE, &format!("/pods/{}", instance.cloud_id));
        // 404: already gone, which is what a delete wants.
        api.send(request, Retry::Idempotent).await.map(|_| ())
    }

    async fn list(&self, api: &ApiClient) -> Result<Vec<CloudInstance>, ApiError> {
        Ok(self
            .pods(api, None)
            .await?
            .into_iter()
            .filter(|p| !p.labels.is_empty())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(json: Value) -> Pod {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn proxy_access_is_https_on_the_proxy_domain() {
        let runpod = Runpod::new(RunpodConfig::default());
        let p = pod(json!({"id": "abc123", "desiredStatus": "RUNNING", "env": {"PORT": "8080"}}));
        let instance = runpod.instance(p);
        assert_eq!(
            instance.endpoint.unwrap().url(),
            "https://abc123-8080.proxy.runpod.net"
        );
    }

    #[test]
    fn tcp_access_waits_for_the_public_ip_and_mapping() {
        let runpod = Runpod::new(RunpodConfig {
            access: RunpodAccess::Tcp,
            ..RunpodConfig::default()
        });
        let early = pod(json!({"id": "p", "desiredStatus": "RUNNING", "env": {"PORT": "8080"}}));
        assert_eq!(runpod.instance(early).endpoint, None);
        let late = pod(json!({
            "id": "p", "desiredStatus": "RUNNING", "publicIp": "203.0.113.7",
            "portMappings": {"8080": 40123}, "env": {"PORT": "8080"}, "costPerHr": "0.74"
        }));
        let instance = runpod.instance(late);
        assert_eq!(instance.endpoint, Some(Endpoint::new("203.0.113.7", 40123)));
        assert_eq!(instance.price_per_hour, Some(0.74));
    }

    #[test]
    fn the_body_carries_the_documented_fields() {
        let runpod = Runpod::new(RunpodConfig {
            access: RunpodAccess::Tcp,
            cloud_type: Some("SECURE".into()),
            ..RunpodConfig::default()
        });
        let mut config = autodeploy_core::DeployConfig::new(
            "files",
            "python3 -m http.server {port}",
            std::time::Duration::from_secs(60),
            2,
        );
        config.image = Some("python:3.12".into());
        config.gpu.kind = "NVIDIA GeForce RTX 4090".into();
        config.gpu.count = 1;
        let spec = InstanceSpec::from_config(&config, "abcdefgh".parse().unwrap());
        let body = runpod.body(&spec, "k");
        assert_eq!(body["ports"], json!(["8080/tcp"]));
        assert_eq!(body["gpuTypeIds"], json!(["NVIDIA GeForce RTX 4090"]));
        assert_eq!(
            body["dockerStartCmd"],
            json!(["sh", "-c", "python3 -m http.server 8080"])
        );
        assert_eq!(body["env"]["AUTODEPLOY_INSTANCE"], "abcdefgh");
        assert_eq!(body["supportPublicIp"], true);
        assert_eq!(body["cloudType"], "SECURE");
    }
}
