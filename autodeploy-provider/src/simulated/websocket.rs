//! The WebSocket echo on `/ws`: the handshake answer, then every text and binary message sent
//! back until the client closes.

use futures_util::{SinkExt, StreamExt};
use http::header::{CONNECTION, HeaderValue, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, UPGRADE};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

use super::handler::{ResponseBody, full};

/// Whether the request asks for a WebSocket.
pub(super) fn is_upgrade(request: &Request<Incoming>) -> bool {
    request
        .headers()
        .get(UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// Answers `101 Switching Protocols` and echoes on the upgraded connection in a task of its
/// own; `Err` explains a handshake the request got wrong.
pub(super) fn accept(mut request: Request<Incoming>) -> Result<Response<ResponseBody>, String> {
    let key = request
        .headers()
        .get(SEC_WEBSOCKET_KEY)
        .ok_or("missing sec-websocket-key")?;
    let accept =
        HeaderValue::from_str(&derive_accept_key(key.as_bytes())).map_err(|err| err.to_string())?;
    let upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else {
            return;
        };
        let socket =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        echo(socket).await;
    });
    let mut response = Response::new(full(""));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(SEC_WEBSOCKET_ACCEPT, accept);
    Ok(response)
}

async fn echo<S>(mut socket: WebSocketStream<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    while let Some(Ok(message)) = socket.next().await {
        let reply = match message {
            Message::Text(_) | Message::Binary(_) => message,
            Message::Close(_) => break,
            // Pings are answered by the library; pongs and raw frames need nothing.
            _ => continue,
        };
        if socket.send(reply).await.is_err() {
            break;
        }
    }
    let _ = socket.close(None).await;
}
