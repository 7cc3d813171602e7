//! Specifications of the speech stand-in, over real sockets: in process, and as the `speech`
//! binary the walkthrough deploys.

use std::process::Stdio;
use std::time::Duration;

use autodeploy_examples::speech::{SpeechConfig, WavInfo, serve, speech_duration};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;
use tokio::time::timeout;

const BODY: &str =
    r#"{"model": "breezyvoice", "input": "Hello from autodeploy", "voice": "default"}"#;

/// Starts the service in process; returns its base URL.
async fn start(api_key: Option<&str>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let addr = listener.local_addr().expect("an address");
    let config = SpeechConfig {
        api_key: api_key.map(str::to_owned),
    };
    tokio::spawn(serve(listener, config));
    format!("http://{addr}")
}

async fn post(base: &str, auth: Option<&str>, body: &str) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .post(format!("{base}/v1/audio/speech"))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(auth) = auth {
        request = request.header("authorization", auth);
    }
    request.send().await.expect("an answer")
}

async fn error_code(response: reqwest::Response) -> String {
    let body: Value = serde_json::from_slice(&response.bytes().await.expect("body")).expect("JSON");
    body["error"]["code"]
        .as_str()
        .expect("an error code")
        .to_owned()
}

#[tokio::test]
async fn speech_answers_a_wav_whose_length_follows_the_input() {
    let base = start(Some("sk-template")).await;
    let response = post(&base, Some("Bearer sk-template"), BODY).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "audio/wav");
    let length = response.content_length();
    let wav = response.bytes().await.expect("body");
    assert_eq!(length, Some(wav.len() as u64));
    let info = WavInfo::parse(&wav).expect("a valid WAV");
    assert_eq!(
        (info.format, info.channels, info.bits_per_sample),
        (1, 1, 16)
    );
    assert_eq!(info.sample_rate, 16_000);
    assert_eq!(info.duration(), speech_duration("Hello from autodeploy"));
    assert_eq!(info.duration(), Duration::from_millis(50 * 21));
}

#[tokio::test]
async fn a_wrong_or_missing_key_is_401_and_bad_json_is_400() {
    let base = start(Some("sk-template")).await;
    let wrong = post(&base, Some("Bearer sk-other"), BODY).await;
    assert_eq!(wrong.status(), 401);
    assert_eq!(wrong.headers()["content-type"], "application/json");
    assert_eq!(error_code(wrong).await, "invalid_api_key");
    assert_eq!(post(&base, None, BODY).await.status(), 401);

    let bad = post(&base, Some("Bearer sk-template"), "{not json").await;
    assert_eq!(bad.status(), 400);
    assert_eq!(error_code(bad).await, "invalid_request_error");
    let blank = post(&base, Some("Bearer sk-template"), r#"{"input": "  "}"#).await;
    assert_eq!(blank.status(), 400);
    let mp3 = post(
        &base,
        Some("Bearer sk-template"),
        r#"{"input": "hi", "response_format": "mp3"}"#,
    )
    .await;
    assert_eq!(mp3.status(), 400);
}

#[tokio::test]
async fn without_a_key_anyone_may_speak_and_health_answers() {
    let base = start(None).await;
    assert_eq!(post(&base, None, r#"{"input": "hi"}"#).await.status(), 200);
    let health = reqwest::get(format!("{base}/health"))
        .await
        .expect("an answer");
    assert_eq!(health.status(), 200);
    let missing = reqwest::get(format!("{base}/v2/nothing"))
        .await
        .expect("an answer");
    assert_eq!(missing.status(), 404);
    let get = reqwest::get(format!("{base}/v1/audio/speech"))
        .await
        .expect("an answer");
    assert_eq!(get.status(), 405);
}

#[tokio::test]
async fn the_binary_reads_port_and_key_from_the_environment() {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_speech"))
        .env("PORT", "0")
        .env("SPEECH_API_KEY", "sk-template")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawned");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    timeout(
        Duration::from_secs(10),
        BufReader::new(stdout).read_line(&mut line),
    )
    .await
    .expect("announced in time")
    .expect("read");
    let base = line
        .trim()
        .strip_prefix("listening on ")
        .expect("a listening line")
        .to_owned();
    assert_eq!(post(&base, None, BODY).await.status(), 401);
    let response = post(&base, Some("Bearer sk-template"), BODY).await;
    assert_eq!(response.status(), 200);
    let wav = response.bytes().await.expect("body");
    assert!(WavInfo::parse(&wav).is_ok());
    child.kill().await.expect("killed");
}
