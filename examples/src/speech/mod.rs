//! A stand-in for the seed's BreezyVoice text-to-speech API: `POST /v1/audio/speech` with an
//! OpenAI-style JSON body answers a WAV file of a generated tone whose length follows the
//! input. It needs no GPU and no model, so the gateway's first walkthrough runs anywhere.
//!
//! - [`wav`]: the WAV encoding, and [`WavInfo`] to check a file in tests;
//! - [`service`]: the HTTP handler and server, run by the `speech` binary.

pub mod service;
pub mod wav;

pub use service::{SpeechConfig, SpeechRequest, handle, serve, speech_duration};
pub use wav::{WavInfo, wav_tone, wav_tone_chunks};
