//! Loopback networking for tests: a free port to listen on.

use std::io;
use std::net::{IpAddr, TcpListener};

/// A port on `ip` that nothing listens on right now (another process may still take it before
/// the caller binds it, so callers retry).
pub fn free_port(ip: IpAddr) -> io::Result<u16> {
    Ok(TcpListener::bind((ip, 0))?.local_addr()?.port())
}
