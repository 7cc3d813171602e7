//! Labels travel with a cloud instance as environment variables: every cloud API keeps an
//! instance's environment and gives it back, while few have labels or tags.

use std::collections::BTreeMap;

use autodeploy_core::provider::{LABEL_DEPLOYMENT, LABEL_INSTANCE, LABEL_OWNER};
use autodeploy_core::{InstanceId, InstanceSpec};

/// The environment variable carrying each label.
const LABEL_VARS: [(&str, &str); 3] = [
    (LABEL_OWNER, "AUTODEPLOY_OWNER"),
    (LABEL_DEPLOYMENT, "AUTODEPLOY_DEPLOYMENT"),
    (LABEL_INSTANCE, "AUTODEPLOY_INSTANCE"),
];

/// The owner a spec without one is created under.
pub(crate) const DEFAULT_OWNER: &str = "autodeploy";

/// The owner label of `spec`.
pub(crate) fn owner(spec: &InstanceSpec) -> &str {
    spec.labels
        .get(LABEL_OWNER)
        .map(String::as_str)
        .unwrap_or(DEFAULT_OWNER)
}

/// The environment an instance is created with: the deployment's, `PORT` (the service
/// port), and the labels.
pub(crate) fn environment(spec: &InstanceSpec) -> BTreeMap<String, String> {
    let mut env = spec.env.clone();
    env.insert("PORT".into(), spec.port.to_string());
    env.insert("AUTODEPLOY_OWNER".into(), owner(spec).to_owned());
    env.insert("AUTODEPLOY_DEPLOYMENT".into(), spec.deployment.clone());
    env.insert("AUTODEPLOY_INSTANCE".into(), spec.instance.to_string());
    env
}

/// The labels read back from an instance's environment (empty when it carries none).
pub(crate) fn from_environment<'a>(
    env: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    for (name, value) in env {
        if let Some((label, _)) = LABEL_VARS.iter().find(|(_, var)| *var == name) {
            labels.insert((*label).to_owned(), value.to_owned());
        }
    }
    labels
}

/// The instance id and deployment of an instance autodeploy created, from its labels.
pub(crate) fn identity(labels: &BTreeMap<String, String>) -> Option<(InstanceId, String)> {
    labels.get(LABEL_OWNER)?;
    let id = labels.get(LABEL_INSTANCE)?.parse().ok()?;
    let deployment = labels.get(LABEL_DEPLOYMENT)?.clone();
    Some((id, deployment))
}

/// A problem with a deployment's `field`.
pub(crate) fn field_error(field: &str, message: impl Into<String>) -> autodeploy_core::FieldError {
    autodeploy_core::FieldError {
        field: field.to_owned(),
        message: message.into(),
    }
}

/// The problems every cloud shares: a GPU kind and at least one GPU.
pub(crate) fn require_gpu(
    deployment: &autodeploy_core::DeployConfig,
    what: &str,
) -> Vec<autodeploy_core::FieldError> {
    let mut out = Vec::new();
    if deployment.gpu.kind.trim().is_empty() {
        out.push(field_error("gpu.kind", format!("is required: the {what}")));
    }
    if deployment.gpu.count == 0 {
        out.push(field_error("gpu.count", "must be at least 1"));
    }
    out
}
