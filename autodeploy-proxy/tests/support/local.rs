//! Real processes for the local-process provider: a tiny Python HTTP service, and a way to
//! find (and, on drop, kill) every process a test started, by a marker in its environment.

use std::path::{Path, PathBuf};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Pids of live processes whose environment holds `AUTODEPLOY_TEST_MARKER={marker}`.
pub fn marked_processes(marker: &str) -> Vec<i32> {
    let needle = format!("AUTODEPLOY_TEST_MARKER={marker}");
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // Zombies have no environment left to read; they are not running anyway.
            !state.contains(") Z ") && environ.split(|b| *b == 0).any(|kv| kv == needle.as_bytes())
        })
        .collect()
}

/// Kills every process carrying `marker` when dropped, so nothing outlives a failed test.
pub struct MarkerGuard(pub String);

impl Drop for MarkerGuard {
    fn drop(&mut self) {
        for pid in marked_processes(&self.0) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// A unique marker for this test process and `name`.
pub fn marker(name: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{name}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A threaded HTTP/1.1 service: `GET /sleep?ms=N` answers after N ms, every path answers
/// with the process id (so a test knows which process to kill).
const SERVICE: &str = r#"
import os, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        if self.path.startswith("/sleep?ms="):
            time.sleep(int(self.path.split("=", 1)[1]) / 1000)
        body = str(os.getpid()).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"#;

/// Writes the service into `dir` and returns the start command that runs it.
pub fn python_service(dir: &Path) -> String {
    let path: PathBuf = dir.join("service.py");
    std::fs::write(&path, SERVICE).expect("write service.py");
    format!("exec python3 {} {{port}}", path.display())
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}
