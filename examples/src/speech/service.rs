//! The HTTP side of the speech stand-in: `POST /v1/audio/speech` and `GET /health`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream;
use http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue, WWW_AUTHENTICATE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Body, Frame};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;

use super::wav::{HEADER_LEN, sample_count, wav_tone_chunks};

/// Samples per second of the audio produced.
pub const SAMPLE_RATE: u32 = 16_000;
/// Audio produced per character of input.
pub const PER_CHARACTER: Duration = Duration::from_millis(50);
/// The longest audio produced, whatever the input.
pub const MAX_DURATION: Duration = Duration::from_secs(30);
/// The largest request body accepted.
pub const MAX_REQUEST_BYTES: usize = 1 << 20;
/// Samples per streamed chunk (about a quarter second).
const CHUNK_SAMPLES: u32 = 4_096;

/// Errors of a request body.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body of every response.
pub type SpeechBody = UnsyncBoxBody<Bytes, Infallible>;

/// How the service runs.
#[derive(Debug, Clone, Default)]
pub struct SpeechConfig {
    /// When set, `/v1/audio/speech` requires `Authorization: Bearer {api_key}`.
    pub api_key: Option<String>,
}

/// The JSON body of `POST /v1/audio/speech`, as OpenAI's API and BreezyVoice's take it.
/// Fields other than these are ignored.
#[derive(Debug, Clone, Deserialize)]
pub struct SpeechRequest {
    /// The model name; any value is accepted.
    #[serde(default)]
    pub model: Option<String>,
    /// The text to speak; must not be blank.
    pub input: String,
    /// The voice; it picks the tone's pitch.
    #[serde(default)]
    pub voice: Option<String>,
    /// The audio format; only `wav` (the default) is produced.
    #[serde(default)]
    pub response_format: Option<String>,
}

/// How long the audio for `input` plays: [`PER_CHARACTER`] per character, at most
/// [`MAX_DURATION`].
pub fn speech_duration(input: &str) -> Duration {
    let chars = u32::try_from(input.chars().count()).unwrap_or(u32::MAX);
    PER_CHARACTER.saturating_mul(chars).min(MAX_DURATION)
}

/// The pitch of a voice: one of eight notes from 220 Hz, chosen by the voice's name.
pub fn voice_frequency(voice: &str) -> f64 {
    let note = voice
        .bytes()
        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)))
        % 8;
    220.0 * 2f64.powf(f64::from(note) / 8.0)
}

/// Serves HTTP/1.1 on `listener` until the task running it is dropped.
pub async fn serve(listener: TcpListener, config: SpeechConfig) {
    let config = Arc::new(config);
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(err) => {
                // Out of file descriptors and the like: back off instead of spinning.
                eprintln!("speech: accept failed: {err}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let config = Arc::clone(&config);
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let config = Arc::clone(&config);
                async move { Ok::<_, Infallible>(handle(&config, request).await) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Answers one request. Generic over the body so it can be driven without sockets.
pub async fn handle<B>(config: &SpeechConfig, request: Request<B>) -> Response<SpeechBody>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    match (request.method(), request.uri().path()) {
        (&Method::GET, "/health") => json_response(StatusCode::OK, &json!({"status": "ok"})),
        (&Method::POST, "/v1/audio/speech") => speech(config, request).await,
        (_, "/health" | "/v1/audio/speech") => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{} is not allowed here", request.method()),
        ),
        (_, path) => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no route for {path}"),
        ),
    }
}

async fn speech<B>(config: &SpeechConfig, request: Request<B>) -> Response<SpeechBody>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    if let Some(key) = &config.api_key
        && !bearer_matches(request.headers().get(AUTHORIZATION), key)
    {
        let mut response = error(
            StatusCode::UNAUTHORIZED,
            "invalid_api_key",
            "missing or wrong API key in Authorization: Bearer".to_owned(),
        );
        response
            .headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return response;
    }
    let body = match Limited::new(request.into_body(), MAX_REQUEST_BYTES)
        .collect()
        .await
    {
        Ok(body) => body.to_bytes(),
        Err(err) if err.is::<http_body_util::LengthLimitError>() => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request_too_large",
                format!("the body exceeds {MAX_REQUEST_BYTES} bytes"),
            );
        }
        Err(err) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                format!("reading the body: {err}"),
            );
        }
    };
    let speech: SpeechRequest = match serde_json::from_slice(&body) {
        Ok(speech) => speech,
        Err(err) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                format!("the body is not a speech request: {err}"),
            );
        }
    };
    if speech.input.trim().is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "input must not be empty".to_owned(),
        );
    }
    if let Some(format) = speech.response_format.as_deref()
        && format != "wav"
    {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            format!("response_format {format:?} is not supported; use \"wav\""),
        );
    }
    let duration = speech_duration(&speech.input);
    let frequency = voice_frequency(speech.voice.as_deref().unwrap_or_default());
    let length = HEADER_LEN as u64 + 2 * u64::from(sample_count(duration, SAMPLE_RATE));
    let chunks = wav_tone_chunks(duration, frequency, SAMPLE_RATE, CHUNK_SAMPLES)
        .map(|chunk| Ok::<_, Infallible>(Frame::data(Bytes::from(chunk))));
    let mut response = Response::new(StreamBody::new(stream::iter(chunks)).boxed_unsync());
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("audio/wav"));
    headers.insert(CONTENT_LENGTH, HeaderValue::from(length));
    response
}

/// Whether `header` is `Bearer {key}`, compared in constant time.
fn bearer_matches(header: Option<&HeaderValue>, key: &str) -> bool {
    let Some(given) = header.and_then(|h| h.as_bytes().strip_prefix(b"Bearer ")) else {
        return false;
    };
    bool::from(given.ct_eq(key.as_bytes()))
}

fn json_response(status: StatusCode, body: &serde_json::Value) -> Response<SpeechBody> {
    let mut response = Response::new(
        Full::new(Bytes::from(body.to_string()))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// An error in OpenAI's shape: `{"error": {"message", "type", "code"}}`.
fn error(status: StatusCode, code: &str, message: String) -> Response<SpeechBody> {
    let kind = if status == StatusCode::UNAUTHORIZED {
        "authentication_error"
    } else {
        "invalid_request_error"
    };
    json_response(
        status,
        &json!({"error": {"message": message, "type": kind, "code": code}}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duration_scales_with_the_input_and_is_capped() {
        assert_eq!(speech_duration("hello"), Duration::from_millis(250));
        assert_eq!(speech_duration("你好"), Duration::from_millis(100));
        assert_eq!(speech_duration(&"a".repeat(10_000)), MAX_DURATION);
    }

    #[test]
    fn voices_pick_audible_pitches() {
        for voice in ["", "alloy", "default", "zh-TW"] {
            let f = voice_frequency(voice);
            assert!((220.0..440.0).contains(&f), "{voice}: {f}");
        }
        assert_eq!(voice_frequency("alloy"), voice_frequency("alloy"));
    }

    #[test]
    fn bearer_keys_must_match_exactly() {
        let header = |v: &'static str| HeaderValue::from_static(v);
        assert!(bearer_matches(
            Some(&header("Bearer sk-template")),
            "sk-template"
        ));
        assert!(!bearer_matches(
            Some(&header("Bearer sk-templatex")),
            "sk-template"
        ));
        assert!(!bearer_matches(Some(&header("sk-template")), "sk-template"));
        assert!(!bearer_matches(None, "sk-template"));
    }
}
