//! A provider whose instances are recording backends: in-process HTTP/1.1 servers that keep
//! every byte they read and count the requests they answered, so a test can prove what did,
//! and did not, reach an instance.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_trait::async_trait;
use autodeploy_core::{
    Endpoint, GpuProvider, InstanceId, InstanceSpec, ProvidedInstance, ProviderError,
};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// What every instance of a [`Recording`] provider saw, all instances together.
#[derive(Debug, Default, Clone)]
pub struct Record {
    /// Every byte read from every connection, in arrival order per read.
    pub bytes: Vec<u8>,
    /// Requests whose head was parsed.
    pub heads: Vec<(String, String)>,
    /// Requests whose body was read to its end without error, with the body length.
    pub complete: Vec<(String, usize)>,
    /// Connections accepted.
    pub connections: usize,
}

/// One instance: where it serves, its deployment, its accept loop.
type Server = (Endpoint, String, JoinHandle<()>);

/// The recording provider.
#[derive(Default)]
pub struct Recording {
    record: Arc<Mutex<Record>>,
    servers: Mutex<HashMap<InstanceId, Server>>,
}

impl fmt::Debug for Recording {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recording").finish_non_exhaustive()
    }
}

impl Recording {
    /// A copy of what was recorded so far.
    pub fn record(&self) -> Record {
        self.record.lock().clone()
    }

    /// Whether any instance ever read `needle`.
    pub fn saw(&self, needle: &str) -> bool {
        let record = self.record.lock();
        record
            .bytes
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
    }

    pub fn live(&self) -> usize {
        self.servers.lock().len()
    }
}

/// A stream that copies what it reads into the record.
struct Tap {
    inner: TcpStream,
    record: Arc<Mutex<Record>>,
}

impl AsyncRead for Tap {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let read = buf.filled()[before..].to_vec();
            self.record.lock().bytes.extend_from_slice(&read);
        }
        polled
    }
}

impl AsyncWrite for Tap {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

async fn answer(
    record: Arc<Mutex<Record>>,
    req: hyper::Request<Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, std::convert::Infallible> {
    let path = req
        .uri()
        .path_and_query()
        .map_or_else(String::new, |p| p.to_string());
    record
        .lock()
        .heads
        .push((req.method().to_string(), path.clone()));
    let headers = format!("{:?}", req.headers());
    match req.into_body().collect().await {
        Ok(body) => {
            let len = body.to_bytes().len();
            record.lock().complete.push((path, len));
            Ok(hyper::Response::new(Full::new(Bytes::from(format!(
                "recorded {len} bytes; headers {headers}"
            )))))
        }
        Err(_) => {
            let mut response = hyper::Response::new(Full::new(Bytes::from_static(b"body error")));
            *response.status_mut() = http::StatusCode::BAD_REQUEST;
            Ok(response)
        }
    }
}

#[async_trait]
impl GpuProvider for Recording {
    fn name(&self) -> &str {
        "recording"
    }

    async fn create(&self, spec: InstanceSpec) -> Result<Endpoint, ProviderError> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| ProviderError::Backend(e.to_string()))?;
        let addr = listener
            .local_addr()
            .map_err(|e| ProviderError::Backend(e.to_string()))?;
        let record = self.record.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                record.lock().connections += 1;
                let record = record.clone();
                tokio::spawn(async move {
                    let io = TokioIo::new(Tap {
                        inner: stream,
                        record: record.clone(),
                    });
                    let service =
                        hyper::service::service_fn(move |req| answer(record.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await;
                });
            }
        });
        let endpoint = Endpoint::from(addr);
        self.servers
            .lock()
            .insert(spec.instance, (endpoint.clone(), spec.deployment, task));
        Ok(endpoint)
    }

    async fn wait_ready(&self, _id: InstanceId) -> Result<(), ProviderError> {
        Ok(())
    }

    async fn release(&self, id: InstanceId) -> Result<(), ProviderError> {
        if let Some((_, _, task)) = self.servers.lock().remove(&id) {
            task.abort();
        }
        Ok(())
    }

    async fn list(&self, deployment: &str) -> Result<Vec<ProvidedInstance>, ProviderError> {
        Ok(self
            .servers
            .lock()
            .iter()
            .filter(|(_, (_, d, _))| d == deployment)
            .map(|(id, (endpoint, _, _))| ProvidedInstance {
                id: *id,
                endpoint: Some(endpoint.clone()),
                labels: Default::default(),
            })
            .collect())
    }
}

/// A provider whose every instance is one fixed address (a backend the test runs itself).
#[derive(Debug)]
pub struct Fixed(pub std::net::SocketAddr);

#[async_trait]
impl GpuProvider for Fixed {
    fn name(&self) -> &str {
        "fixed"
    }

    async fn create(&self, _spec: InstanceSpec) -> Result<Endpoint, ProviderError> {
        Ok(Endpoint::from(self.0))
    }

    async fn wait_ready(&self, _id: InstanceId) -> Result<(), ProviderError> {
        Ok(())
    }

    async fn release(&self, _id: InstanceId) -> Result<(), ProviderError> {
        Ok(())
    }

    async fn list(&self, _deployment: &str) -> Result<Vec<ProvidedInstance>, ProviderError> {
        Ok(Vec::new())
    }
}
