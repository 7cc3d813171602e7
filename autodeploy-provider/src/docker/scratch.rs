//! Building a tiny image from one host binary with no registry: the binary, the shared
//! libraries `ldd` lists for it (and the dynamic loader) in a `FROM scratch` context, sent to
//! the engine's build API. The tests of the Docker provider build their stub image this way,
//! and the `coldstart-docker` benchmark builds its `bench-backend` image the same way.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use autodeploy_provider::docker::scratch::ScratchImage;
//!
//! let engine = bollard::Docker::connect_with_local_defaults()?;
//! ScratchImage::new("target/release/bench-backend", "bench-backend:local")
//!     .cmd(["--host", "0.0.0.0", "--port", "8080"])
//!     .label("autodeploy.owner", "bench")
//!     .build(&engine)
//!     .await?;
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use bollard::Docker;
use bollard::query_parameters::BuildImageOptionsBuilder;
use futures_util::StreamExt;

/// Why a scratch image could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ScratchImageError {
    /// The binary or one of its libraries could not be read, or `ldd` could not run.
    #[error("{what}: {source}")]
    Io {
        /// What was being read.
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The engine refused the build or the build failed.
    #[error("image build of {tag} failed: {reason}")]
    Build {
        /// The tag being built.
        tag: String,
        /// What the engine said.
        reason: String,
    },
}

/// A `FROM scratch` image holding one binary (as `/NAME`, its entrypoint) and the shared
/// libraries it needs at their own paths; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct ScratchImage {
    binary: PathBuf,
    name: Option<String>,
    tag: String,
    cmd: Vec<String>,
    healthcheck: Option<String>,
    labels: HashMap<String, String>,
}

impl ScratchImage {
    /// The image `tag` of `binary` (entrypoint `/` + the binary's file name).
    pub fn new(binary: impl Into<PathBuf>, tag: impl Into<String>) -> Self {
        Self {
            binary: binary.into(),
            name: None,
            tag: tag.into(),
            cmd: Vec::new(),
            healthcheck: None,
            labels: HashMap::new(),
        }
    }

    /// The binary's file name inside the image (default: its name on the host).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The image's default command (arguments after the entrypoint).
    pub fn cmd<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.cmd = args.into_iter().map(Into::into).collect();
        self
    }

    /// A `HEALTHCHECK` line's arguments after `HEALTHCHECK`, e.g.
    /// `--interval=300ms --timeout=1s CMD ["/stub", "--health"]`.
    pub fn healthcheck(mut self, line: impl Into<String>) -> Self {
        self.healthcheck = Some(line.into());
        self
    }

    /// A label on the image (and on the build's intermediate containers).
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// The image's tag.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// The entrypoint inside the image: `/` + the binary's file name ([`name`](Self::name)).
    pub fn entrypoint(&self) -> String {
        let name = self.name.clone().unwrap_or_else(|| {
            self.binary
                .file_name()
                .map_or_else(|| "binary".into(), |n| n.to_string_lossy().into_owned())
        });
        format!("/{name}")
    }

    fn dockerfile(&self) -> String {
        let mut dockerfile = format!(
            "FROM scratch\nCOPY . /\nENTRYPOINT [{}]\n",
            json_string(&self.entrypoint())
        );
        if !self.cmd.is_empty() {
            let args: Vec<String> = self.cmd.iter().map(|a| json_string(a)).collect();
            dockerfile.push_str(&format!("CMD [{}]\n", args.join(", ")));
        }
        if let Some(line) = &self.healthcheck {
            dockerfile.push_str(&format!("HEALTHCHECK {line}\n"));
        }
        dockerfile
    }

    /// The build context: the binary, its libraries and the Dockerfile, as a tar archive.
    fn context(&self) -> Result<Vec<u8>, ScratchImageError> {
        let io = |what: String| move |source| ScratchImageError::Io { what, source };
        let mut tar = tar::Builder::new(Vec::new());
        tar.follow_symlinks(true);
        // The engine's tar reader refuses GNU sparse entries (a release binary with holes).
        tar.sparse(false);
        let inside = self.entrypoint();
        tar.append_path_with_name(&self.binary, &inside[1..])
            .map_err(io(self.binary.display().to_string()))?;
        for library in libraries(&self.binary)? {
            let inside = library.strip_prefix("/").unwrap_or(&library).to_owned();
            tar.append_path_with_name(&library, inside)
                .map_err(io(library.display().to_string()))?;
        }
        let dockerfile = self.dockerfile();
        let mut header = tar::Header::new_gnu();
        header.set_size(dockerfile.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, "Dockerfile", dockerfile.as_bytes())
            .map_err(io("Dockerfile".into()))?;
        tar.into_inner().map_err(io("the build context".into()))
    }

    /// Builds the image on `engine` (intermediate containers removed). Reads the binary and
    /// runs `ldd` on a blocking thread.
    pub async fn build(&self, engine: &Docker) -> Result<(), ScratchImageError> {
        let this = self.clone();
        let context = tokio::task::spawn_blocking(move || this.context())
            .await
            .map_err(|e| ScratchImageError::Build {
                tag: self.tag.clone(),
                reason: e.to_string(),
            })??;
        let labels: HashMap<&str, &str> = self
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let options = BuildImageOptionsBuilder::new()
            .dockerfile("Dockerfile")
            .t(&self.tag)
            .rm(true)
            .forcerm(true)
            .labels(&labels)
            .build();
        let mut build = engine.build_image(options, None, Some(bollard::body_full(context.into())));
        while let Some(step) = build.next().await {
            let failed = |reason: String| ScratchImageError::Build {
                tag: self.tag.clone(),
                reason,
            };
            let info = step.map_err(|e| failed(e.to_string()))?;
            if let Some(err) = info.error_detail {
                return Err(failed(format!("{err:?}")));
            }
        }
        Ok(())
    }
}

/// A JSON string literal (for the Dockerfile's exec form).
fn json_string(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

/// The shared libraries `binary` needs, and the dynamic loader, as `ldd` lists them (none for
/// a static binary).
pub fn libraries(binary: &Path) -> Result<Vec<PathBuf>, ScratchImageError> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .map_err(|source| ScratchImageError::Io {
            what: format!("ldd {}", binary.display()),
            source,
        })?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dockerfile_has_the_entrypoint_command_and_healthcheck() {
        let image = ScratchImage::new("/x/target/stub-1a2b", "t:1")
            .name("stub-1")
            .cmd(["--host", "0.0.0.0"])
            .healthcheck("--interval=300ms CMD [\"/stub-1\", \"--health\"]");
        assert_eq!(
            image.dockerfile(),
            "FROM scratch\nCOPY . /\nENTRYPOINT [\"/stub-1\"]\nCMD [\"--host\", \"0.0.0.0\"]\n\
             HEALTHCHECK --interval=300ms CMD [\"/stub-1\", \"--health\"]\n"
        );
        assert_eq!(image.tag(), "t:1");
    }
}
