//! The deployments created through the management API, kept across restarts in one JSON file
//! (`{state_dir}/deployments.json` for the `autodeploy` binary).
//!
//! The config file stays the source of truth for the deployments it defines: the file here
//! holds only those the API created (and their later updates), and a runtime change to a
//! config-file deployment lasts until the next restart. What the file holds is derived from
//! the running gateway at each write — every deployment the config file does not define — so
//! there is no second list to keep in step. Writes go to a temporary file renamed over the
//! old one: a crash mid-write leaves the previous version, never half of one.

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};

use autodeploy_core::DeployConfig;
use serde::{Deserialize, Serialize};

/// The file's format version.
const VERSION: u32 = 1;

/// The file's contents.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Stored {
    version: u32,
    deployments: Vec<DeployConfig>,
}

/// Why the store could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file exists but could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The file is not what this version writes.
    #[error(
        "{path}: {message} (fix or remove the file; it holds the deployments created through the API)"
    )]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// Where API-created deployments are kept, and which ids belong to the config file instead.
pub(crate) struct Store {
    path: PathBuf,
    file_owned: BTreeSet<String>,
    /// Serialises writes, so the last write holds the latest state.
    writing: tokio::sync::Mutex<()>,
}

impl Store {
    pub(crate) fn new(path: PathBuf, file_owned: BTreeSet<String>) -> Self {
        Self {
            path,
            file_owned,
            writing: tokio::sync::Mutex::new(()),
        }
    }

    /// The stored deployments, minus any whose id the config file now defines (the config file
    /// wins; each such one is logged). No file yet: none.
    pub(crate) fn load(&self) -> Result<Vec<DeployConfig>, StoreError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(StoreError::Read {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        let stored: Stored = serde_json::from_str(&text).map_err(|e| StoreError::Invalid {
            path: self.path.clone(),
            message: e.to_string(),
        })?;
        if stored.version != VERSION {
            return Err(StoreError::Invalid {
                path: self.path.clone(),
                message: format!("version {} (this gateway writes {VERSION})", stored.version),
            });
        }
        Ok(stored
            .deployments
            .into_iter()
            .filter(|config| {
                let shadowed = self.file_owned.contains(&config.id);
                if shadowed {
                    tracing::warn!(
                        deployment = %config.id,
                        file = %self.path.display(),
                        "the config file defines this deployment now; its API-created version is dropped"
                    );
                }
                !shadowed
            })
            .collect())
    }

    /// The file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the config file defines `id` (its changes are not stored here).
    pub(crate) fn is_file_owned(&self, id: &str) -> bool {
        self.file_owned.contains(id)
    }

    /// Replaces the file with `deployments`, keeping those the config file does not define.
    pub(crate) async fn save(&self, deployments: Vec<DeployConfig>) -> io::Result<()> {
        let _writing = self.writing.lock().await;
        let stored = Stored {
            version: VERSION,
            deployments: deployments
                .into_iter()
                .filter(|config| !self.file_owned.contains(&config.id))
                .collect(),
        };
        let text = serde_json::to_vec_pretty(&stored).map_err(io::Error::other)?;
        write_atomically(&self.path, &text).await
    }
}

/// Writes `bytes` to a temporary file beside `path`, flushes it to disk, and renames it over
/// `path`.
async fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir).await?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    // Owner-only: the file holds access keys.
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .await?;
    tokio::io::AsyncWriteExt::write_all(&mut file, bytes).await?;
    file.sync_all().await?;
    drop(file);
    tokio::fs::rename(&tmp, path).await
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn config(id: &str) -> DeployConfig {
        DeployConfig::new(id, "true", Duration::from_secs(60), 1)
    }

    #[tokio::test]
    async fn saves_only_what_the_config_file_does_not_define_and_loads_it_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deployments.json");
        let store = Store::new(path.clone(), BTreeSet::from(["filed".to_owned()]));
        assert!(store.load().unwrap().is_empty(), "no file yet: none");
        store
            .save(vec![config("filed"), config("made"), config("other")])
            .await
            .unwrap();
        let ids: Vec<_> = store.load().unwrap().into_iter().map(|c| c.id).collect();
        assert_eq!(ids, ["made", "other"]);
        assert!(!dir.path().join("deployments.json.tmp").exists());

        // The config file later defines "made": it wins.
        let store = Store::new(path, BTreeSet::from(["made".to_owned()]));
        let ids: Vec<_> = store.load().unwrap().into_iter().map(|c| c.id).collect();
        assert_eq!(ids, ["other"]);
    }

    #[tokio::test]
    async fn a_damaged_or_foreign_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deployments.json");
        let store = Store::new(path.clone(), BTreeSet::new());
        for text in [
            "{ not json",
            r#"{"version": 2, "deployments": []}"#,
            r#"{"version": 1, "deployments": [{"id": "x"}]}"#,
            r#"{"version": 1, "deployments": [], "extra": 1}"#,
        ] {
            std::fs::write(&path, text).unwrap();
            let err = store.load().unwrap_err().to_string();
            assert!(err.contains("deployments.json"), "{err}");
        }
    }
}
