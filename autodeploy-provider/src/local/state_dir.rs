//! The state directory: one JSON record per running instance, so that a gateway restarted
//! after a crash can find what the last one started.
//!
//! A record is written (to a temporary file, then renamed, so a reader never sees half of
//! one) after the process is spawned but before its command may run (see `process`'s gate),
//! and removed once the instance is released. Records are not fsynced: they guard against a
//! killed gateway, whose page cache survives; a machine that loses power loses the processes
//! too.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use autodeploy_core::InstanceId;

/// What is recorded about one instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Record {
    /// The instance id.
    pub(crate) id: InstanceId,
    /// Its deployment.
    pub(crate) deployment: String,
    /// The labels it was created with.
    pub(crate) labels: BTreeMap<String, String>,
    /// The pid of the shell that runs its command.
    pub(crate) pid: i32,
    /// Its process group (the same number as `pid`, kept apart for clarity).
    pub(crate) pgid: i32,
    /// The start time of `pid` in clock ticks since boot, to spot a recycled pid.
    pub(crate) start_ticks: Option<u64>,
    /// Where it listens.
    pub(crate) host: String,
    /// Its port.
    pub(crate) port: u16,
    /// The GPU ids it was given.
    pub(crate) gpus: Vec<String>,
    /// The readiness path of its deployment, if any.
    #[serde(default)]
    pub(crate) readiness_path: Option<String>,
    /// Whether that path is probed over HTTP/2 (an `h2c` deployment); absent in records
    /// written before it existed, which were all HTTP/1.1.
    #[serde(default)]
    pub(crate) readiness_h2: bool,
    /// Wall-clock creation time, milliseconds since the Unix epoch.
    pub(crate) started_at_unix_ms: u64,
}

/// A directory of [`Record`]s.
#[derive(Debug, Clone)]
pub(crate) struct StateDir {
    path: PathBuf,
}

impl StateDir {
    /// Opens (creating it if needed) the directory at `path`.
    pub(crate) fn open(path: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(path)?;
        Ok(Self {
            path: path.to_path_buf(),
        })
    }

    /// The directory.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `record` atomically, replacing an older one for the same id.
    pub(crate) fn write(&self, record: &Record) -> io::Result<()> {
        let json = serde_json::to_vec_pretty(record).map_err(io::Error::other)?;
        let tmp = self.path.join(format!(".{}.json.tmp", record.id));
        std::fs::write(&tmp, json)?;
        std::fs::rename(&tmp, self.file(record.id)).inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
    }

    /// Removes the record of `id`; a missing one is not an error.
    pub(crate) fn remove(&self, id: InstanceId) -> io::Result<()> {
        match std::fs::remove_file(self.file(id)) {
            Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
            _ => Ok(()),
        }
    }

    /// Every readable record. Files that are not records (or are damaged) are logged and
    /// skipped, never deleted: they may be someone else's.
    pub(crate) fn read_all(&self) -> io::Result<Vec<Record>> {
        let mut records = Vec::new();
        for entry in std::fs::read_dir(&self.path)? {
            let path = entry?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let Some(stem) = name.strip_suffix(".json") else {
                continue;
            };
            if stem.parse::<InstanceId>().is_err() {
                continue;
            }
            match std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|raw| serde_json::from_slice::<Record>(&raw).map_err(|e| e.to_string()))
            {
                Ok(record) if record.id.as_str() == stem => records.push(record),
                Ok(_) => {
                    tracing::warn!(path = %path.display(), "record names another instance; skipped")
                }
                Err(err) => {
                    tracing::warn!(path = %path.display(), %err, "unreadable instance record; skipped")
                }
            }
        }
        Ok(records)
    }

    fn file(&self, id: InstanceId) -> PathBuf {
        self.path.join(format!("{id}.json"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> Record {
        Record {
            id: id.parse().unwrap(),
            deployment: "speech".into(),
            labels: BTreeMap::from([("autodeploy.deployment".into(), "speech".into())]),
            pid: 42,
            pgid: 42,
            start_ticks: Some(7),
            host: "127.0.0.1".into(),
            port: 8080,
            gpus: vec!["1".into()],
            readiness_path: Some("/health".into()),
            readiness_h2: false,
            started_at_unix_ms: 1,
        }
    }

    #[test]
    fn records_round_trip_and_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(&dir.path().join("nested")).unwrap();
        state.write(&record("aaaaaaaa")).unwrap();
        state.write(&record("bbbbbbbb")).unwrap();
        std::fs::write(dir.path().join("nested/notes.txt"), "hi").unwrap();
        std::fs::write(dir.path().join("nested/cccccccc.json"), "{broken").unwrap();
        let mut all = state.read_all().unwrap();
        all.sort_by_key(|r| r.id);
        assert_eq!(all, [record("aaaaaaaa"), record("bbbbbbbb")]);
        state.remove("aaaaaaaa".parse().unwrap()).unwrap();
        state.remove("aaaaaaaa".parse().unwrap()).unwrap();
        assert_eq!(state.read_all().unwrap(), [record("bbbbbbbb")]);
    }
}
