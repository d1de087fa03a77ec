//! Loopback networking for tests: a free port to listen on, and (with a cloud emulator's
//! feature) a server that answers like an SSH server's first line.

use std::io;
use std::net::{IpAddr, TcpListener};

/// A port on `ip` that nothing listens on right now (another process may still take it before
/// the caller binds it, so callers retry).
pub fn free_port(ip: IpAddr) -> io::Result<u16> {
    Ok(TcpListener::bind((ip, 0))?.local_addr()?.port())
}

/// A loopback server that greets every connection like an SSH server (`SSH-2.0-…`), so that a
/// cloud provisioner's readiness probe has something local to reach; it lives as long as the
/// runtime it was started on.
#[cfg(any(feature = "aws", feature = "gce"))]
pub async fn ssh_banner_server() -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let addr = l.local_addr().expect("its address");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            use tokio::io::AsyncWriteExt;
            let _ = s.write_all(b"SSH-2.0-qa-run-test\r\n").await;
        }
    });
    addr
}
