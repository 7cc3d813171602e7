//! WAV files of a sine tone: 16-bit signed little-endian PCM, mono.

use std::f64::consts::TAU;
use std::time::Duration;

/// Size of the RIFF/WAVE header in front of the samples.
pub const HEADER_LEN: usize = 44;
/// Bytes per sample: 16-bit mono.
const BYTES_PER_SAMPLE: u16 = 2;
/// Peak amplitude, a little below full scale.
const AMPLITUDE: f64 = 0.3 * i16::MAX as f64;

/// The number of samples `duration` takes at `sample_rate`, rounded down.
pub fn sample_count(duration: Duration, sample_rate: u32) -> u32 {
    let samples = duration.as_micros() * u128::from(sample_rate) / 1_000_000;
    u32::try_from(samples).unwrap_or(u32::MAX)
}

/// A complete WAV file: `duration` of a `frequency_hz` sine at `sample_rate` samples per
/// second, 16-bit mono. Its length is `HEADER_LEN + 2 * sample_count(duration, sample_rate)`.
pub fn wav_tone(duration: Duration, frequency_hz: f64, sample_rate: u32) -> Vec<u8> {
    wav_tone_chunks(duration, frequency_hz, sample_rate, 4096)
        .flatten()
        .collect()
}

/// The same file as [`wav_tone`], produced lazily: the header, then the samples
/// `chunk_samples` at a time, so a server can stream a long file without holding it.
pub fn wav_tone_chunks(
    duration: Duration,
    frequency_hz: f64,
    sample_rate: u32,
    chunk_samples: u32,
) -> impl Iterator<Item = Vec<u8>> + Send + 'static {
    let samples = sample_count(duration, sample_rate);
    let step = TAU * frequency_hz / f64::from(sample_rate.max(1));
    let chunk = chunk_samples.max(1);
    let starts = (0..samples).step_by(chunk as usize);
    std::iter::once(wav_header(samples, sample_rate).to_vec()).chain(starts.map(move |start| {
        let end = start.saturating_add(chunk).min(samples);
        (start..end)
            // Bounded by AMPLITUDE, so the cast never saturates.
            .flat_map(|n| (((f64::from(n) * step).sin() * AMPLITUDE) as i16).to_le_bytes())
            .collect()
    }))
}

/// The 44-byte header of a 16-bit mono PCM WAV file holding `samples` samples.
pub fn wav_header(samples: u32, sample_rate: u32) -> [u8; HEADER_LEN] {
    let data_len = samples.saturating_mul(u32::from(BYTES_PER_SAMPLE));
    let mut header = [0u8; HEADER_LEN];
    let fields: [&[u8]; 13] = [
        b"RIFF",
        &(36u32.saturating_add(data_len)).to_le_bytes(),
        b"WAVE",
        b"fmt ",
        &16u32.to_le_bytes(), // size of the fmt chunk
        &1u16.to_le_bytes(),  // PCM
        &1u16.to_le_bytes(),  // mono
        &sample_rate.to_le_bytes(),
        &(sample_rate * u32::from(BYTES_PER_SAMPLE)).to_le_bytes(), // byte rate
        &BYTES_PER_SAMPLE.to_le_bytes(),                            // block align
        &16u16.to_le_bytes(),                                       // bits per sample
        b"data",
        &data_len.to_le_bytes(),
    ];
    let mut at = 0;
    for field in fields {
        header[at..at + field.len()].copy_from_slice(field);
        at += field.len();
    }
    header
}

/// What a WAV file's header says, as read back by [`WavInfo::parse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WavInfo {
    /// Audio format: 1 is integer PCM.
    pub format: u16,
    /// Number of channels.
    pub channels: u16,
    /// Samples per second.
    pub sample_rate: u32,
    /// Bits per sample.
    pub bits_per_sample: u16,
    /// Sample frames in the data chunk.
    pub samples: u32,
}

impl WavInfo {
    /// Reads the header of a canonical 44-byte-header WAV file and checks that the sizes it
    /// states match the bytes given.
    pub fn parse(wav: &[u8]) -> Result<Self, String> {
        let u16_at = |at: usize| {
            wav.get(at..at + 2)
                .map(|b| u16::from_le_bytes([b[0], b[1]]))
        };
        let u32_at = |at: usize| {
            wav.get(at..at + 4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        };
        if wav.len() < HEADER_LEN {
            return Err(format!("{} bytes is too short for a WAV header", wav.len()));
        }
        if &wav[0..4] != b"RIFF" || &wav[8..12] != b"WAVE" || &wav[12..16] != b"fmt " {
            return Err("not a RIFF/WAVE file with a leading fmt chunk".to_owned());
        }
        if &wav[36..40] != b"data" {
            return Err("no data chunk after a 16-byte fmt chunk".to_owned());
        }
        let too_short = || "truncated header".to_owned();
        let riff_len = u32_at(4).ok_or_else(too_short)?;
        let data_len = u32_at(40).ok_or_else(too_short)?;
        if riff_len as usize + 8 != wav.len() || data_len as usize + HEADER_LEN != wav.len() {
            return Err(format!(
                "sizes disagree: RIFF says {riff_len}, data says {data_len}, file has {}",
                wav.len()
            ));
        }
        let channels = u16_at(22).ok_or_else(too_short)?;
        let bits_per_sample = u16_at(34).ok_or_else(too_short)?;
        let frame = u32::from(channels) * u32::from(bits_per_sample) / 8;
        if frame == 0 || data_len % frame != 0 {
            return Err(format!(
                "data of {data_len} bytes is not whole frames of {frame}"
            ));
        }
        Ok(Self {
            format: u16_at(20).ok_or_else(too_short)?,
            channels,
            sample_rate: u32_at(24).ok_or_else(too_short)?,
            bits_per_sample,
            samples: data_len / frame,
        })
    }

    /// How long the audio plays.
    pub fn duration(&self) -> Duration {
        Duration::from_secs_f64(f64::from(self.samples) / f64::from(self.sample_rate.max(1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tone_is_a_valid_16_bit_mono_wav_of_the_right_length() {
        let wav = wav_tone(Duration::from_millis(250), 440.0, 16_000);
        assert_eq!(&wav[0..4], b"RIFF");
        assert_eq!(&wav[8..16], b"WAVEfmt ");
        assert_eq!(&wav[36..40], b"data");
        assert_eq!(wav.len(), HEADER_LEN + 2 * 4_000);
        assert_eq!(
            u32::from_le_bytes([wav[4], wav[5], wav[6], wav[7]]),
            36 + 8_000
        );
        assert_eq!(
            u32::from_le_bytes([wav[28], wav[29], wav[30], wav[31]]),
            32_000
        );
        let info = WavInfo::parse(&wav).expect("valid");
        assert_eq!(
            info,
            WavInfo {
                format: 1,
                channels: 1,
                sample_rate: 16_000,
                bits_per_sample: 16,
                samples: 4_000,
            }
        );
        assert_eq!(info.duration(), Duration::from_millis(250));
    }

    #[test]
    fn the_tone_is_not_silence_and_stays_below_full_scale() {
        let wav = wav_tone(Duration::from_millis(10), 440.0, 16_000);
        let samples: Vec<i16> = wav[HEADER_LEN..]
            .chunks_exact(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]))
            .collect();
        assert_eq!(samples[0], 0);
        let peak = samples.iter().map(|s| s.unsigned_abs()).max().unwrap_or(0);
        assert!(peak > 9_000 && peak < 10_000, "peak {peak}");
    }

    #[test]
    fn chunks_make_the_same_file() {
        let whole = wav_tone(Duration::from_millis(333), 440.0, 16_000);
        let chunks: Vec<Vec<u8>> =
            wav_tone_chunks(Duration::from_millis(333), 440.0, 16_000, 1000).collect();
        assert_eq!(chunks[0].len(), HEADER_LEN);
        assert_eq!(chunks.len(), 1 + 6);
        assert_eq!(chunks.concat(), whole);
    }

    #[test]
    fn broken_files_are_refused() {
        let wav = wav_tone(Duration::from_millis(10), 440.0, 16_000);
        assert!(WavInfo::parse(&wav[..20]).is_err());
        assert!(WavInfo::parse(&wav[..wav.len() - 1]).is_err());
        let mut not_riff = wav.clone();
        not_riff[0] = b'X';
        assert!(WavInfo::parse(&not_riff).is_err());
        assert!(WavInfo::parse(&wav_tone(Duration::ZERO, 440.0, 16_000)).is_ok());
    }
}
