//! A tiny HTTP server for the Docker tests' images, std only, compiled by the tests with
//! `rustc` and copied with the libraries `ldd` lists into a `FROM scratch` image.
//!
//! - Listens on `0.0.0.0:$PORT` (default 8080) after `$STUB_DELAY_MS`, answering every path
//!   with `instance=$AUTODEPLOY_INSTANCE gpus=$NVIDIA_VISIBLE_DEVICES path=...`;
//!   `/sleep?ms=N` answers after N ms. One request per connection (`Connection: close`).
//! - `$STUB_EXIT=N`: prints three log lines and exits with status N instead.
//! - `$STUB_NEVER_LISTEN=1`: prints a line and never listens.
//! - `stub --health`: exits 0 when `GET /` on `127.0.0.1:$PORT` answers (a HEALTHCHECK).
//! - SIGTERM ends it at once (it runs as PID 1, which has no default SIGTERM action).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

extern "C" {
    fn signal(signum: i32, handler: extern "C" fn(i32)) -> usize;
    fn _exit(status: i32) -> !;
}

extern "C" fn on_term(_: i32) {
    unsafe { _exit(0) }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn main() {
    let port: u16 = env("PORT").and_then(|p| p.parse().ok()).unwrap_or(8080);
    if std::env::args().nth(1).as_deref() == Some("--health") {
        let ok = TcpStream::connect(("127.0.0.1", port))
            .and_then(|mut s| {
                s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
                let mut buf = [0u8; 12];
                s.read_exact(&mut buf)?;
                Ok(buf.starts_with(b"HTTP/1.1 200"))
            })
            .unwrap_or(false);
        std::process::exit(if ok { 0 } else { 1 });
    }
    unsafe {
        signal(15, on_term);
    }
    let instance = env("AUTODEPLOY_INSTANCE").unwrap_or_default();
    println!("stub starting: instance {instance}");
    if let Some(code) = env("STUB_EXIT") {
        for i in 1..=3 {
            println!("stub log line {i}");
        }
        eprintln!("stub: exiting with status {code} as asked");
        std::process::exit(code.parse().unwrap_or(1));
    }
    if env("STUB_NEVER_LISTEN").is_some() {
        println!("stub: never listening, as asked");
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    if let Some(ms) = env("STUB_DELAY_MS").and_then(|m| m.parse().ok()) {
        std::thread::sleep(Duration::from_millis(ms));
    }
    let listener = TcpListener::bind(("0.0.0.0", port)).expect("bind");
    println!("stub listening on {port}");
    let gpus = env("NVIDIA_VISIBLE_DEVICES").unwrap_or_default();
    for stream in listener.incoming().flatten() {
        let body = format!("instance={instance} gpus={gpus}");
        std::thread::spawn(move || serve(stream, body));
    }
}

fn serve(mut stream: TcpStream, body: String) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > 64 * 1024 {
            return;
        }
    }
    let head = String::from_utf8_lossy(&head);
    let target = head.split(' ').nth(1).unwrap_or("/").to_owned();
    if let Some(ms) = target
        .strip_prefix("/sleep?ms=")
        .and_then(|m| m.parse::<u64>().ok())
    {
        std::thread::sleep(Duration::from_millis(ms));
    }
    let body = format!("{body} path={target}\n");
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes());
}
