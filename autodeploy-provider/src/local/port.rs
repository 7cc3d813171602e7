//! Free loopback ports, chosen by the operating system.
//!
//! The port is found by binding port 0 and dropping the listener, so another program could
//! take it before the instance binds it; the instance then fails to start and says so in its
//! log. Ports of instances this provider holds are never handed out twice.

use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener};

/// How many times the OS is asked before giving up on a port nobody here holds.
const ATTEMPTS: usize = 32;

/// A port on `host` that is free now and not in `held`.
pub(crate) fn free_port(host: IpAddr, held: &[u16]) -> io::Result<u16> {
    for _ in 0..ATTEMPTS {
        let port = TcpListener::bind(SocketAddr::new(host, 0))?
            .local_addr()?
            .port();
        if !held.contains(&port) {
            return Ok(port);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrInUse,
        "the OS kept offering ports already held",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_free_and_skip_held_ones() {
        let host: IpAddr = "127.0.0.1".parse().unwrap();
        let port = free_port(host, &[]).unwrap();
        assert_ne!(port, 0);
        assert!(TcpListener::bind(SocketAddr::new(host, port)).is_ok());
    }
}
