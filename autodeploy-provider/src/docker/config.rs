//! The `[providers.docker]` table, a deployment's container fields, and their validation.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use autodeploy_core::{ContainerOptions, DeployConfig, FieldError, GpuProvider};
use serde::Deserialize;

use crate::registry::{BuildContext, ProviderTable};

/// Settings of the Docker provider, the `[providers.docker]` table. Every field has a
/// default: with no table at all, instances run on the local engine (its default socket),
/// published on 127.0.0.1, without GPU slots.
///
/// ```
/// let config: autodeploy_provider::DockerConfig = toml::from_str(r#"
///     pull = "never"
///     stop_grace = "10s"
///     [[hosts]]
///     name = "gpu-1"
///     url = "tcp://10.0.0.5:2375"
///     gpus = ["0", "1"]
///     advertise = "gpu-1.lan"
/// "#).unwrap();
/// assert!(config.validate().is_empty());
/// assert_eq!(config.hosts[0].gpus, ["0", "1"]);
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DockerConfig {
    /// The engines instances run on. Empty (the default): one host named `local`, the local
    /// engine's default socket, advertised on 127.0.0.1, without GPU slots.
    #[serde(default)]
    pub hosts: Vec<DockerHost>,
    /// When images are pulled (default `if-missing`).
    #[serde(default)]
    pub pull: PullPolicy,
    /// How long `release` lets a container stop after SIGTERM before the engine kills it
    /// (default `10s`).
    #[serde(default = "default_stop_grace", with = "humantime_serde")]
    pub stop_grace: Duration,
    /// The Docker network containers join (default: the engine's bridge).
    #[serde(default)]
    pub network: Option<String>,
    /// The `autodeploy.owner` label of every container this gateway creates, and the only
    /// one it lists, adopts and removes at start (default `autodeploy`). Two gateways on one
    /// engine need two owners.
    #[serde(default = "default_owner")]
    pub owner: String,
    /// Extra labels put on every container (not `autodeploy.*`, which are ours).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// One Docker engine instances may run on.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DockerHost {
    /// The host's name: in the `autodeploy.host` label of its containers, so two entries
    /// that reach one engine never take each other's containers.
    pub name: String,
    /// `unix:///var/run/docker.sock`, `tcp://host:2375` or, with `tls`, `tcp://host:2376`.
    /// None: the local engine's default socket (`$DOCKER_HOST` when it names a socket).
    #[serde(default)]
    pub url: Option<String>,
    /// The GPU ids this host hands out, one instance at a time (e.g. `["0", "1"]`).
    #[serde(default)]
    pub gpus: Vec<String>,
    /// The name or address the gateway reaches published ports at. Default: 127.0.0.1 for a
    /// socket, the URL's host for TCP.
    #[serde(default)]
    pub advertise: Option<String>,
    /// Client certificates for a TLS engine (`tcp://` URLs on 2376).
    #[serde(default)]
    pub tls: Option<TlsFiles>,
    /// GPUs are requested with a `DeviceRequest` for the `nvidia` driver (what `docker run
    /// --gpus` sends; the default). `false`: only `NVIDIA_VISIBLE_DEVICES` is set, for hosts
    /// whose default runtime is `nvidia` (it reads that variable), or to run GPU-less tests.
    #[serde(default = "default_true")]
    pub device_requests: bool,
}

fn default_true() -> bool {
    true
}

/// The files of a TLS connection to an engine, as `docker --tlsverify` uses them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// The CA certificate that signed the engine's certificate.
    pub ca: PathBuf,
    /// The client certificate.
    pub cert: PathBuf,
    /// The client key.
    pub key: PathBuf,
}

/// When an image is pulled before a container is created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PullPolicy {
    /// Never: an image the engine lacks fails the start at once (1004).
    Never,
    /// When the engine lacks the image (the default).
    #[default]
    IfMissing,
    /// Before every create.
    Always,
}

impl Default for DockerConfig {
    fn default() -> Self {
        Self {
            hosts: Vec::new(),
            pull: PullPolicy::default(),
            stop_grace: default_stop_grace(),
            network: None,
            owner: default_owner(),
            labels: BTreeMap::new(),
        }
    }
}

fn default_stop_grace() -> Duration {
    Duration::from_secs(10)
}

fn default_owner() -> String {
    "autodeploy".to_owned()
}

impl DockerHost {
    /// The host used when no `hosts` are configured.
    pub fn local() -> Self {
        Self {
            name: "local".into(),
            url: None,
            gpus: Vec::new(),
            advertise: None,
            tls: None,
            device_requests: true,
        }
    }

    /// Where the gateway reaches this host's published ports.
    pub fn advertise_address(&self) -> String {
        if let Some(advertise) = &self.advertise {
            return advertise.clone();
        }
        self.url
            .as_deref()
            .and_then(|url| url.split_once("://"))
            .filter(|(scheme, _)| matches!(*scheme, "tcp" | "http" | "https"))
            .and_then(|(_, rest)| rest.rsplit_once(':').map(|(host, _)| host.to_owned()))
            .unwrap_or_else(|| "127.0.0.1".to_owned())
    }

    /// The host address ports are published on: the advertised address when it is an IP
    /// (127.0.0.1 keeps instances off the network), every address otherwise.
    pub fn bind_address(&self) -> String {
        let advertise = self.advertise_address();
        match advertise.trim_matches(['[', ']']).parse::<IpAddr>() {
            Ok(ip) => ip.to_string(),
            Err(_) => "0.0.0.0".to_owned(),
        }
    }
}

impl DockerConfig {
    /// The hosts instances run on: the configured ones, or the local engine.
    pub fn effective_hosts(&self) -> Vec<DockerHost> {
        if self.hosts.is_empty() {
            vec![DockerHost::local()]
        } else {
            self.hosts.clone()
        }
    }

    /// Every problem with the table, fields named relative to it (`hosts[1].url`).
    pub fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        let mut fail = |field: String, message: String| errors.push(FieldError { field, message });
        let mut names = HashSet::new();
        for (i, host) in self.hosts.iter().enumerate() {
            let at = format!("hosts[{i}]");
            if !valid_label_value(&host.name) {
                fail(
                    format!("{at}.name"),
                    "must be 1 to 63 characters of a-z, A-Z, 0-9, '.', '_', '-'".into(),
                );
            }
            if !names.insert(host.name.as_str()) {
                fail(
                    format!("{at}.name"),
                    format!("duplicate host {:?}", host.name),
                );
            }
            if let Some(url) = &host.url {
                let scheme = url.split_once("://").map(|(s, _)| s);
                match scheme {
                    Some("unix") if host.tls.is_none() => {}
                    Some("tcp" | "http" | "https") if url.rsplit_once(':').is_some() => {}
                    _ => fail(
                        format!("{at}.url"),
                        format!(
                            "{url:?}: expected unix:///path, or tcp://host:port (with tls for 2376)"
                        ),
                    ),
                }
            }
            if let Some(advertise) = &host.advertise
                && (advertise.is_empty() || advertise.contains(['/', ' ']))
            {
                fail(
                    format!("{at}.advertise"),
                    "must be a host name or IP address".into(),
                );
            }
            for (j, gpu) in host.gpus.iter().enumerate() {
                if gpu.is_empty() || gpu.contains(',') || gpu.trim() != gpu {
                    fail(
                        format!("{at}.gpus"),
                        format!("gpu id {gpu:?} is not a valid device id"),
                    );
                } else if host.gpus[..j].contains(gpu) {
                    fail(
                        format!("{at}.gpus"),
                        format!("gpu id {gpu:?} is listed twice"),
                    );
                }
            }
        }
        if !valid_label_value(&self.owner) {
            fail(
                "owner".into(),
                "must be 1 to 63 characters of a-z, A-Z, 0-9, '.', '_', '-'".into(),
            );
        }
        if self.labels.keys().any(|k| k.starts_with("autodeploy.")) {
            fail(
                "labels".into(),
                "labels starting with \"autodeploy.\" are the provider's own".into(),
            );
        }
        if self.network.as_deref().is_some_and(str::is_empty) {
            fail(
                "network".into(),
                "must not be empty (leave it out for the default)".into(),
            );
        }
        errors
    }

    /// What the Docker provider requires of a deployment, fields named relative to it.
    pub fn validate_deployment(&self, deployment: &DeployConfig) -> Vec<FieldError> {
        let mut errors = Vec::new();
        let mut fail = |field: &str, message: String| {
            errors.push(FieldError {
                field: field.to_owned(),
                message,
            })
        };
        match deployment.image.as_deref().map(str::trim) {
            None | Some("") => fail("image", "the docker provider needs an image".into()),
            Some(image) if image.contains(char::is_whitespace) => {
                fail("image", format!("{image:?} is not an image reference"))
            }
            Some(_) => {}
        }
        if deployment.snapshot.is_some() {
            fail(
                "snapshot",
                "the docker provider boots images, not snapshots".into(),
            );
        }
        if let Err(message) = split_command(&deployment.start_command) {
            fail("start_command", message);
        }
        let most_gpus = self
            .effective_hosts()
            .iter()
            .map(|h| h.gpus.len())
            .max()
            .unwrap_or(0);
        if deployment.gpu.count as usize > most_gpus {
            fail(
                "gpu.count",
                format!(
                    "{} GPUs asked, but no docker host has more than {most_gpus} GPU slots \
                     (providers.docker.hosts[].gpus)",
                    deployment.gpu.count
                ),
            );
        }
        if let Some(options) = &deployment.docker {
            for (field, message) in validate_options(options) {
                fail(&format!("docker.{field}"), message);
            }
        }
        errors
    }
}

fn valid_label_value(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn validate_options(options: &ContainerOptions) -> Vec<(&'static str, String)> {
    let mut errors = Vec::new();
    for (field, size) in [("shm_size", &options.shm_size), ("memory", &options.memory)] {
        if let Some(size) = size
            && let Err(message) = parse_size(size)
        {
            errors.push((field, message));
        }
    }
    if let Some(cpus) = options.cpus
        && !(cpus.is_finite() && cpus > 0.0 && cpus <= 4096.0)
    {
        errors.push((
            "cpus",
            format!("must be a number of CPUs above 0, got {cpus}"),
        ));
    }
    for volume in &options.volumes {
        let parts: Vec<&str> = volume.split(':').collect();
        let ok = match parts.as_slice() {
            [source, target] => !source.is_empty() && target.starts_with('/'),
            [source, target, mode] => {
                !source.is_empty() && target.starts_with('/') && matches!(*mode, "ro" | "rw")
            }
            _ => false,
        };
        if !ok {
            errors.push((
                "volumes",
                format!("{volume:?}: expected source:/path/in/container[:ro|:rw]"),
            ));
        }
    }
    for host in &options.extra_hosts {
        let ok = host
            .split_once(':')
            .is_some_and(|(name, addr)| !name.is_empty() && !addr.is_empty());
        if !ok {
            errors.push(("extra_hosts", format!("{host:?}: expected name:address")));
        }
    }
    errors
}

/// Bytes in a size written `1024`, `512k`, `512m`, `8g` (or `8gb`, any case).
pub(crate) fn parse_size(text: &str) -> Result<i64, String> {
    let lower = text.trim().to_ascii_lowercase();
    let digits_end = lower
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(lower.len());
    let (number, unit) = lower.split_at(digits_end);
    let shift = match unit.trim_end_matches('b') {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        _ => return Err(format!("{text:?}: expected a size like 512m or 8g")),
    };
    let number: i64 = number
        .parse()
        .map_err(|_| format!("{text:?}: expected a size like 512m or 8g"))?;
    number
        .checked_mul(1 << shift)
        .filter(|bytes| *bytes > 0)
        .ok_or_else(|| format!("{text:?}: must be above 0 and below 8 EiB"))
}

/// A start command as the container's `Cmd`: words split as a shell would (single and double
/// quotes, backslash escapes), without expansion. Empty: the image's own command.
pub(crate) fn split_command(command: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = command.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err("unclosed single quote".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c) => word.push(c),
                            None => return Err("unclosed double quote".into()),
                        },
                        Some(c) => word.push(c),
                        None => return Err("unclosed double quote".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some(c) => word.push(c),
                    None => return Err("a trailing backslash escapes nothing".into()),
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

impl ProviderTable for DockerConfig {
    fn validate(&self) -> Vec<FieldError> {
        DockerConfig::validate(self)
    }

    fn validate_deployment(&self, deployment: &DeployConfig) -> Vec<FieldError> {
        DockerConfig::validate_deployment(self, deployment)
    }

    fn build(&self, _: &BuildContext) -> Result<Arc<dyn GpuProvider>, String> {
        let docker = super::Docker::new(self.clone()).map_err(|e| e.to_string())?;
        Ok(Arc::new(docker))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_in_docker_units() {
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("512m"), Ok(512 << 20));
        assert_eq!(parse_size("8G"), Ok(8 << 30));
        assert_eq!(parse_size("8gb"), Ok(8 << 30));
        assert!(parse_size("8 apples").is_err());
        assert!(parse_size("0").is_err());
        assert!(parse_size("").is_err());
    }

    #[test]
    fn commands_split_like_a_shell_without_expansion() {
        assert_eq!(
            split_command(r#"--model /models/x --name "a b" 'c d' e\ f $HOME"#).unwrap(),
            [
                "--model",
                "/models/x",
                "--name",
                "a b",
                "c d",
                "e f",
                "$HOME"
            ]
        );
        assert!(split_command("").unwrap().is_empty());
        assert_eq!(split_command("''").unwrap(), [""]);
        assert!(split_command("'open").is_err());
    }

    #[test]
    fn the_default_host_is_the_local_engine_on_loopback() {
        let hosts = DockerConfig::default().effective_hosts();
        assert_eq!(hosts.len(), 1);
        assert_eq!(hosts[0].name, "local");
        assert_eq!(hosts[0].advertise_address(), "127.0.0.1");
        assert_eq!(hosts[0].bind_address(), "127.0.0.1");
        let remote = DockerHost {
            url: Some("tcp://10.1.2.3:2375".into()),
            ..DockerHost::local()
        };
        assert_eq!(remote.advertise_address(), "10.1.2.3");
        let named = DockerHost {
            advertise: Some("gpu-box-2.lan".into()),
            ..remote
        };
        assert_eq!(named.bind_address(), "0.0.0.0");
    }

    #[test]
    fn every_table_problem_names_its_field() {
        let config: DockerConfig = toml::from_str(
            r#"
            owner = ""
            labels = { "autodeploy.x" = "y" }
            [[hosts]]
            name = "a"
            url = "ftp://x"
            gpus = ["0", "0"]
            [[hosts]]
            name = "a"
            "#,
        )
        .unwrap();
        let fields: Vec<String> = config.validate().into_iter().map(|e| e.field).collect();
        assert_eq!(
            fields,
            [
                "hosts[0].url",
                "hosts[0].gpus",
                "hosts[1].name",
                "owner",
                "labels"
            ]
        );
    }

    #[test]
    fn a_deployment_needs_an_image_and_sane_container_fields() {
        let mut deployment = DeployConfig::new("d", "", Duration::from_secs(60), 1);
        deployment.provider = "docker".into();
        deployment.gpu.count = 1;
        deployment.docker = Some(ContainerOptions {
            shm_size: Some("lots".into()),
            volumes: vec!["/models".into()],
            extra_hosts: vec!["nocolon".into()],
            memory: Some("1g".into()),
            cpus: Some(-1.0),
        });
        let fields: Vec<String> = DockerConfig::default()
            .validate_deployment(&deployment)
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(
            fields,
            [
                "image",
                "gpu.count",
                "docker.shm_size",
                "docker.cpus",
                "docker.volumes",
                "docker.extra_hosts"
            ]
        );
        deployment.image = Some("vllm/vllm-openai:latest".into());
        deployment.gpu.count = 0;
        deployment.docker = None;
        assert!(
            DockerConfig::default()
                .validate_deployment(&deployment)
                .is_empty()
        );
    }
}
