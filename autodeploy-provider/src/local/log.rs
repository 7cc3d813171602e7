//! An instance's output: stdout and stderr, line by line, in a bounded ring.
//!
//! The ring is what a failed start or a crash reports as `last_log`, and what the gateway
//! shows; it must stay bounded however chatty (or newline-free) the process is.

use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

/// The longest line kept, in bytes; the rest of a longer line is dropped.
const MAX_LINE: usize = 4096;

/// The last lines an instance printed, oldest first.
#[derive(Debug)]
pub(crate) struct LogRing {
    lines: Mutex<VecDeque<String>>,
    capacity: usize,
}

impl LogRing {
    /// An empty ring keeping at most `capacity` lines (at least one).
    pub(crate) fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            lines: Mutex::new(VecDeque::with_capacity(capacity.min(64))),
            capacity,
        }
    }

    /// Appends a line, forgetting the oldest when full.
    pub(crate) fn push(&self, line: String) {
        let mut lines = self.lines.lock();
        if lines.len() == self.capacity {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    /// The last `n` lines, oldest first.
    pub(crate) fn last(&self, n: usize) -> Vec<String> {
        let lines = self.lines.lock();
        let skip = lines.len().saturating_sub(n);
        lines.iter().skip(skip).cloned().collect()
    }
}

/// Copies `pipe` into `ring` line by line until end of file (or a read error, which ends the
/// stream just the same). A partial last line is kept.
pub(crate) async fn pump<R: AsyncRead + Unpin>(pipe: R, ring: Arc<LogRing>) {
    let mut reader = BufReader::new(pipe);
    let mut line: Vec<u8> = Vec::new();
    loop {
        let buf = match reader.fill_buf().await {
            Ok(buf) if !buf.is_empty() => buf,
            _ => break,
        };
        let (chunk, newline) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..i], true),
            None => (buf, false),
        };
        let room = MAX_LINE.saturating_sub(line.len());
        line.extend_from_slice(&chunk[..chunk.len().min(room)]);
        let used = chunk.len() + usize::from(newline);
        reader.consume(used);
        if newline {
            ring.push(to_text(&line));
            line.clear();
        }
    }
    if !line.is_empty() {
        ring.push(to_text(&line));
    }
}

fn to_text(raw: &[u8]) -> String {
    let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
    String::from_utf8_lossy(raw).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_keeps_the_newest_lines_in_order() {
        let ring = LogRing::new(3);
        for i in 0..5 {
            ring.push(i.to_string());
        }
        assert_eq!(ring.last(10), ["2", "3", "4"]);
        assert_eq!(ring.last(2), ["3", "4"]);
        assert!(ring.last(0).is_empty());
    }

    #[tokio::test]
    async fn pump_splits_lines_and_bounds_them() {
        let ring = Arc::new(LogRing::new(10));
        let mut input = b"one\r\ntwo\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', MAX_LINE + 100));
        input.extend_from_slice(b"\nlast");
        pump(&input[..], ring.clone()).await;
        let lines = ring.last(10);
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[0], "one");
        assert_eq!(lines[1], "two");
        assert_eq!(lines[2].len(), MAX_LINE);
        assert_eq!(lines[3], "last");
    }
}
