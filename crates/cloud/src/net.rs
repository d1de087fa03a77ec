//! The two things a cloud machine's network needs from qa-run's own host: this host's public
//! address, as a cloud's address service sees it ([`caller_address`], for the SSH rule of a
//! firewall), and whether an SSH server answers at a machine's address yet ([`ssh_banner`]).
//!
//! Both are plain TCP with timeouts and know no cloud; each cloud's provisioner passes in its
//! own address service.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long an address lookup may take in all.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection to an SSH port may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an SSH server may take to send its banner once connected.
const BANNER_TIMEOUT: Duration = Duration::from_secs(10);

/// Asks an `http://` URL for this host's public address, which the service answers with as text
/// (e.g. `http://checkip.amazonaws.com/`). Only `http://`: the answer is checked to be an
/// address, and an HTTP/1.0 request needs no TLS stack.
pub async fn caller_address(url: &str) -> std::io::Result<String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| std::io::Error::other("only http:// URLs are supported"))?;
    let (hostport, path) = rest
        .split_once('/')
        .map(|(h, p)| (h, format!("/{p}")))
        .unwrap_or((rest, "/".into()));
    let host = hostport.split(':').next().unwrap_or(hostport);
    let addr = if hostport.contains(':') {
        hostport.to_string()
    } else {
        format!("{hostport}:80")
    };
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(&addr).await?;
        s.write_all(
            format!("GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: qa-run\r\n\r\n").as_bytes(),
        )
        .await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        let text = String::from_utf8_lossy(&buf).to_string();
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| std::io::Error::other("no HTTP body"))?;
        if head.split(' ').nth(1).is_none_or(|c| c != "200") {
            return Err(std::io::Error::other(format!(
                "answer: {}",
                head.lines().next().unwrap_or("")
            )));
        }
        let ip = body.trim().to_string();
        ip.parse::<std::net::IpAddr>()
            .map_err(|_| std::io::Error::other(format!("not an address: `{ip}`")))?;
        Ok(ip)
    };
    tokio::time::timeout(LOOKUP_TIMEOUT, fut)
        .await
        .map_err(|_| std::io::Error::other("timed out"))?
}

/// Connects to `host:port` and reads the first bytes: `Ok` when they are an SSH banner.
pub async fn ssh_banner(host: &str, port: u16) -> std::io::Result<()> {
    let mut s = tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio::net::TcpStream::connect((host, port)),
    )
    .await
    .map_err(|_| std::io::Error::other("connect timed out"))??;
    let mut buf = [0u8; 4];
    tokio::time::timeout(BANNER_TIMEOUT, s.read_exact(&mut buf))
        .await
        .map_err(|_| std::io::Error::other("no banner"))??;
    if &buf == b"SSH-" {
        Ok(())
    } else {
        Err(std::io::Error::other("not an SSH server"))
    }
}

/// Waits until an SSH server answers at `host:port` ([`ssh_banner`]), trying every `interval`
/// until `until`; the error is the last probe's.
pub async fn wait_for_ssh(
    host: &str,
    port: u16,
    until: std::time::Instant,
    interval: Duration,
) -> std::io::Result<()> {
    loop {
        match ssh_banner(host, port).await {
            Ok(()) => return Ok(()),
            Err(e) if std::time::Instant::now() >= until => return Err(e),
            Err(_) => tokio::time::sleep(interval).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::net::TcpListener;

    use super::*;

    /// A loopback server that answers one connection's request with `answer`.
    async fn answering(answer: &'static str) -> u16 {
        serving(answer, true).await
    }

    /// A loopback server that writes `text` to one connection, after reading its request when
    /// `after_request` (an HTTP server) or at once (an SSH server).
    async fn serving(text: &'static str, after_request: bool) -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            if after_request {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
            }
            let _ = s.write_all(text.as_bytes()).await;
        });
        port
    }

    #[tokio::test]
    async fn the_address_is_the_body_of_a_200() {
        let port = answering("HTTP/1.0 200 OK\r\n\r\n203.0.113.7\n").await;
        let ip = caller_address(&format!("http://127.0.0.1:{port}/"))
            .await
            .unwrap();
        assert_eq!(ip, "203.0.113.7");
    }

    #[tokio::test]
    async fn anything_but_an_address_is_refused() {
        let port = answering("HTTP/1.0 200 OK\r\n\r\n<html>hello</html>").await;
        let e = caller_address(&format!("http://127.0.0.1:{port}/"))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("not an address"), "{e}");
        let port = answering("HTTP/1.0 503 Busy\r\n\r\n203.0.113.7").await;
        let e = caller_address(&format!("http://127.0.0.1:{port}/"))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("503"), "{e}");
        assert!(caller_address("https://checkip.example/").await.is_err());
    }

    #[tokio::test]
    async fn only_an_ssh_banner_counts_as_ready() {
        let port = serving("SSH-2.0-OpenSSH_9.6\r\n", false).await;
        ssh_banner("127.0.0.1", port).await.unwrap();
        let port = serving("HTTP/1.0 200 OK\r\n\r\n", false).await;
        assert!(ssh_banner("127.0.0.1", port).await.is_err());
    }
}
