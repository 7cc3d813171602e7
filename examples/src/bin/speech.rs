//! `speech`: a stand-in for the BreezyVoice text-to-speech API of the seed's first walkthrough.
//!
//! In the seed, the deployment's instance runs `cd /BreezyVoice && python api.py`, which serves
//! an OpenAI-compatible `POST /v1/audio/speech` on port 8080 and checks
//! `Authorization: Bearer sk-template`. This program answers the same request the same way,
//! without a GPU or a model: the audio is a 16 kHz, 16-bit mono WAV of a tone, 50 ms per
//! character of input (at most 30 s), streamed in chunks.
//!
//! ```text
//! speech --port 8080 --api-key sk-template          # or PORT=8080 SPEECH_API_KEY=sk-template speech
//! curl -s http://127.0.0.1:8080/v1/audio/speech \
//!   -H 'Authorization: Bearer sk-template' -H 'Content-Type: application/json' \
//!   -d '{"model": "breezyvoice", "input": "Hello", "voice": "default"}' -o hello.wav
//! ```
//!
//! | request | answer |
//! |---|---|
//! | `POST /v1/audio/speech`, JSON `{"model", "input", "voice"}` | `200`, `audio/wav` |
//! | the same without the right key (when one is set) | `401`, JSON error |
//! | the same with a body that is not such JSON, or a blank `input` | `400`, JSON error |
//! | `GET /health` | `200` `{"status": "ok"}` (the gateway's readiness path) |
//!
//! Behind the gateway, a deployment starts it with
//! `start_command = "exec speech --port {port}"` and `env = { SPEECH_API_KEY = "sk-template" }`
//! (see `examples/autodeploy.toml`). It prints `listening on http://ADDR` once it accepts
//! connections; `--port 0` picks a free port.

use std::io::Write as _;
use std::net::IpAddr;

use anyhow::Context as _;
use autodeploy_examples::speech::{SpeechConfig, serve};
use clap::Parser;
use tokio::net::TcpListener;

/// A BreezyVoice-like text-to-speech API that answers with a generated tone.
#[derive(Debug, Parser)]
#[command(name = "speech", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Port to listen on (0 picks a free one).
    #[arg(long, env = "PORT", default_value_t = 8080)]
    port: u16,
    /// Require `Authorization: Bearer <KEY>` on /v1/audio/speech.
    #[arg(long, env = "SPEECH_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let listener = TcpListener::bind((args.host, args.port))
        .await
        .with_context(|| format!("binding {}:{}", args.host, args.port))?;
    let addr = listener.local_addr()?;
    let mut stdout = std::io::stdout();
    writeln!(stdout, "listening on http://{addr}")?;
    stdout.flush()?;
    serve(
        listener,
        SpeechConfig {
            api_key: args.api_key.filter(|key| !key.is_empty()),
        },
    )
    .await;
    Ok(())
}
