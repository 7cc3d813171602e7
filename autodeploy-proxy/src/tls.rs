//! TLS to instances behind `https` endpoints (a cloud's proxy, an instance with its own
//! certificate): rustls with the aws-lc-rs provider (the one reqwest uses, installed once
//! as the process default), the webpki roots plus an optional extra CA file for self-signed
//! instance certificates, and ALPN offering HTTP/2 and HTTP/1.1.

use std::path::Path;
use std::sync::{Arc, Once};

use rustls::ClientConfig;
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// ALPN ids.
pub(crate) const ALPN_H2: &[u8] = b"h2";
pub(crate) const ALPN_HTTP11: &[u8] = b"http/1.1";

/// Installs aws-lc-rs as the process's default crypto provider, once. Another provider
/// already installed (by an embedding program) is left in place.
pub fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    });
}

/// The client configurations for one gateway: one per ALPN offer.
#[derive(Clone)]
pub(crate) struct UpstreamTls {
    /// Offers `h2` and `http/1.1`: the instance picks.
    pub(crate) either: Arc<ClientConfig>,
    /// Offers `http/1.1` only (upgrades such as WebSocket).
    pub(crate) http11: Arc<ClientConfig>,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls").finish_non_exhaustive()
    }
}

impl UpstreamTls {
    /// Trusts the webpki roots, plus every certificate in the PEM file `extra_ca` if given.
    pub(crate) fn new(extra_ca: Option<&Path>) -> Result<Self, String> {
        install_crypto_provider();
        let mut roots = RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        if let Some(path) = extra_ca {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("upstream_ca_file {}: {e}", path.display()))?
                .collect::<Result<_, _>>()
                .map_err(|e| format!("upstream_ca_file {}: {e}", path.display()))?;
            if certs.is_empty() {
                return Err(format!(
                    "upstream_ca_file {}: no PEM certificate in it",
                    path.display()
                ));
            }
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| format!("upstream_ca_file {}: {e}", path.display()))?;
            }
        }
        let config = |alpn: Vec<Vec<u8>>| -> Result<Arc<ClientConfig>, String> {
            let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
            let mut config = ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_root_certificates(roots.clone())
                .with_no_client_auth();
            config.alpn_protocols = alpn;
            Ok(Arc::new(config))
        };
        Ok(Self {
            either: config(vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()])?,
            http11: config(vec![ALPN_HTTP11.to_vec()])?,
        })
    }
}
