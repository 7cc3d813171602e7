//! HTTPS to instances: an instance whose endpoint is `https` is reached over TLS (rustls,
//! the certificate checked against the host; an extra CA file for a self-signed one), in
//! HTTP/2 or HTTP/1.1 as the instance chose by ALPN, through the gateway.

mod support;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use autodeploy_core::{
    Endpoint, GpuProvider, InstanceId, InstanceSpec, ProvidedInstance, ProviderError,
};
use autodeploy_proxy::GatewaySettings;
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use support::{TestGateway, client, fixed_deployment, sim};

/// Every instance is the TLS backend at `localhost:{port}`.
#[derive(Debug)]
struct HttpsFixed(u16);

#[async_trait]
impl GpuProvider for HttpsFixed {
    fn name(&self) -> &str {
        "fixed"
    }
    async fn create(&self, _: InstanceSpec) -> Result<Endpoint, ProviderError> {
        Ok(Endpoint::https("localhost", self.0))
    }
    async fn wait_ready(&self, _: InstanceId) -> Result<(), ProviderError> {
        Ok(())
    }
    async fn release(&self, _: InstanceId) -> Result<(), ProviderError> {
        Ok(())
    }
    async fn list(&self, _: &str) -> Result<Vec<ProvidedInstance>, ProviderError> {
        Ok(Vec::new())
    }
}

/// A TLS backend with a fresh self-signed certificate for `localhost`, offering `alpn`;
/// it answers every request with its HTTP version. Returns its port, the certificate's PEM
/// and a count of TLS connections accepted.
async fn tls_backend(alpn: &[&[u8]]) -> (u16, String, Arc<AtomicUsize>) {
    autodeploy_proxy::tls::install_crypto_provider();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert: CertificateDer<'static> = certified.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let counted = counted.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                counted.fetch_add(1, Ordering::SeqCst);
                let service = hyper::service::service_fn(
                    |req: hyper::Request<hyper::body::Incoming>| async move {
                        let body = format!("{:?} {}", req.version(), req.uri().path());
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(body))))
                    },
                );
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (port, certified.cert.pem(), connections)
}

async fn gateway(port: u16, ca_pem: Option<&str>) -> (TestGateway, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = GatewaySettings::default();
    if let Some(pem) = ca_pem {
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, pem).unwrap();
        settings.upstream_ca_file = Some(path);
    }
    let fixed = Arc::new(HttpsFixed(port)) as Arc<dyn GpuProvider>;
    let gateway = TestGateway::with_providers(
        settings,
        sim(std::time::Duration::ZERO),
        vec![("fixed", fixed)],
        vec![fixed_deployment("secure")],
    )
    .await;
    (gateway, dir)
}

#[tokio::test]
async fn an_https_instance_that_chooses_h2_is_spoken_to_in_h2_over_one_connection() {
    let (port, pem, connections) = tls_backend(&[b"h2", b"http/1.1"]).await;
    let (gw, _dir) = gateway(port, Some(&pem)).await;
    for path in ["/a", "/b", "/c"] {
        let response = client()
            .get(gw.url(&format!("/d/secure{path}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.text().await.unwrap(), format!("HTTP/2.0 {path}"));
    }
    assert_eq!(
        connections.load(Ordering::SeqCst),
        1,
        "one multiplexed connection"
    );
    gw.stop().await;
}

#[tokio::test]
async fn an_https_instance_that_speaks_only_http11_gets_http11() {
    let (port, pem, _) = tls_backend(&[b"http/1.1"]).await;
    let (gw, _dir) = gateway(port, Some(&pem)).await;
    for _ in 0..2 {
        let response = client().get(gw.url("/d/secure/x")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.text().await.unwrap(), "HTTP/1.1 /x");
    }
    gw.stop().await;
}

#[tokio::test]
async fn an_untrusted_certificate_is_refused_with_1010() {
    let (port, _pem, connections) = tls_backend(&[b"h2", b"http/1.1"]).await;
    let (gw, _dir) = gateway(port, None).await;
    let response = client().get(gw.url("/d/secure/x")).send().await.unwrap();
    assert_eq!(response.status(), 502);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], 1010, "{body}");
    assert!(body["msg"].as_str().unwrap().contains("TLS"), "{body}");
    assert_eq!(
        connections.load(Ordering::SeqCst),
        0,
        "no TLS session was set up"
    );
    gw.stop().await;
}

#[test]
fn a_bad_ca_file_stops_the_gateway_at_build() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("not-a-cert.pem");
    std::fs::write(&path, "hello").unwrap();
    let settings = GatewaySettings {
        upstream_ca_file: Some(path),
        ..GatewaySettings::default()
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let err = runtime
        .block_on(
            autodeploy_proxy::Gateway::builder()
                .settings(settings)
                .build(),
        )
        .expect_err("refused");
    assert!(err.to_string().contains("not-a-cert.pem"), "{err}");
}
