//! One log event, one line: a writer for the text log format that escapes the line breaks
//! inside an event (an instance's last log lines in a failed start's message, say), so that
//! tools reading the log line by line see whole events.

use std::io::{self, Write};

use tracing_subscriber::fmt::MakeWriter;

/// Writes each event it is given as one line: `\n` and `\r` inside it become the two
/// characters `\n` and `\r`; the event's own final newline stays. The text formatter hands
/// over each event in one `write_all`, which is what makes this work.
#[derive(Debug)]
pub struct OneLine<W>(pub W);

impl<W: Write> Write for OneLine<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        let (event, end) = match buf.strip_suffix(b"\n") {
            Some(event) => (event, &b"\n"[..]),
            None => (buf, &b""[..]),
        };
        if !event.iter().any(|b| matches!(b, b'\n' | b'\r')) {
            return self.0.write_all(buf);
        }
        let mut line = Vec::with_capacity(buf.len() + 16);
        for &byte in event {
            match byte {
                b'\n' => line.extend_from_slice(b"\\n"),
                b'\r' => line.extend_from_slice(b"\\r"),
                _ => line.push(byte),
            }
        }
        line.extend_from_slice(end);
        self.0.write_all(&line)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// Standard output through [`OneLine`], for `tracing_subscriber::fmt().with_writer(..)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct OneLineStdout;

impl<'a> MakeWriter<'a> for OneLineStdout {
    type Writer = OneLine<io::Stdout>;

    fn make_writer(&'a self) -> Self::Writer {
        OneLine(io::stdout())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(event: &str) -> String {
        let mut out = OneLine(Vec::new());
        out.write_all(event.as_bytes()).unwrap();
        String::from_utf8(out.0).unwrap()
    }

    #[test]
    fn line_breaks_inside_an_event_are_escaped_and_its_end_kept() {
        assert_eq!(
            written("WARN failed: last log lines:\nstarting\r\nboom\n"),
            "WARN failed: last log lines:\\nstarting\\r\\nboom\n"
        );
        assert_eq!(written("INFO ready\n"), "INFO ready\n");
        assert_eq!(written("no end"), "no end");
    }
}
