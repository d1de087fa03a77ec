//! A minimal HTTP/1.1 server for the cloud emulators: one request handler, JSON-sized bodies.
//!
//! It speaks as much HTTP/1.1 as the cloud SDKs need and no more: requests with a
//! `Content-Length` or chunked body, `Expect: 100-continue`, keep-alive (several requests on one
//! connection, until the client closes it or sends `Connection: close`), and responses that always
//! carry a `Content-Length`. It listens on a loopback address only. The handler is synchronous, so
//! an emulator's state can sit behind a plain mutex.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Requests larger than this are refused with 413; no emulated call comes near it.
const MAX_BODY: usize = 16 << 20;

/// One request, with its target split into a decoded path and decoded query pairs.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    /// `GET`, `POST`, …
    pub method: String,
    /// The path, percent-decoded, without the query.
    pub path: String,
    /// Query parameters in the order sent, percent-decoded (`+` is a space).
    pub query: Vec<(String, String)>,
    /// Header names as sent, with trimmed values.
    pub headers: Vec<(String, String)>,
    /// The body (de-chunked).
    pub body: Vec<u8>,
}

impl Request {
    /// The first value of query parameter `name`.
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A response: status, content type and body; `Content-Length` is added when it is sent.
#[derive(Debug, Clone)]
pub(crate) struct Response {
    /// The HTTP status.
    pub status: u16,
    /// The `Content-Type` header.
    pub content_type: &'static str,
    /// The body.
    pub body: Vec<u8>,
    /// While this is true, the answer waits (the work is done; the client does not know yet).
    pub hold: Option<Arc<std::sync::atomic::AtomicBool>>,
}

impl Response {
    /// A JSON response the way Google's front ends label it.
    pub fn json(status: u16, value: &serde_json::Value) -> Response {
        Response {
            status,
            content_type: "application/json; charset=UTF-8",
            body: serde_json::to_vec_pretty(value).expect("a JSON value serializes"),
            hold: None,
        }
    }
}

/// The handler every request goes to.
pub(crate) type Handler = dyn Fn(Request) -> Response + Send + Sync + 'static;

/// A listening server; it stops accepting when dropped (connections already open end when their
/// client closes them).
pub(crate) struct Server {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    /// Listens on a free port of 127.0.0.1 and answers every request with `handler`.
    pub async fn start(handler: Arc<Handler>) -> std::io::Result<Server> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                let handler = handler.clone();
                tokio::spawn(async move {
                    let _ = serve(sock, handler).await;
                });
            }
        });
        Ok(Server { addr, task })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Reads until `buf` holds at least `n` bytes; false when the peer closed first.
async fn fill(sock: &mut TcpStream, buf: &mut Vec<u8>, n: usize) -> std::io::Result<bool> {
    while buf.len() < n {
        if sock.read_buf(buf).await? == 0 {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Decodes a chunked body that starts at `buf[start..]`; returns the body and the index just past
/// it, or `None` when more bytes are needed. Trailers are skipped.
fn dechunk(buf: &[u8], start: usize) -> Option<Result<(Vec<u8>, usize), ()>> {
    let mut at = start;
    let mut body = Vec::new();
    loop {
        let line_end = at + find(&buf[at..], b"\r\n")?;
        let Ok(line) = std::str::from_utf8(&buf[at..line_end]) else {
            return Some(Err(()));
        };
        let size_hex = line.split(';').next().unwrap_or("").trim();
        let Ok(size) = usize::from_str_radix(size_hex, 16) else {
            return Some(Err(()));
        };
        at = line_end + 2;
        if size == 0 {
            // Trailer lines, then an empty line.
            loop {
                let end = at + find(&buf[at..], b"\r\n")?;
                let empty = end == at;
                at = end + 2;
                if empty {
                    return Some(Ok((body, at)));
                }
            }
        }
        if body.len() + size > MAX_BODY {
            return Some(Err(()));
        }
        if buf.len() < at + size + 2 {
            return None;
        }
        body.extend_from_slice(&buf[at..at + size]);
        at += size + 2;
    }
}

async fn serve(mut sock: TcpStream, handler: Arc<Handler>) -> std::io::Result<()> {
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let head_end = loop {
            if let Some(p) = find(&buf, b"\r\n\r\n") {
                break p;
            }
            if buf.len() > 64 << 10 {
                return write(&mut sock, &text(431, "request header too large"), true).await;
            }
            if sock.read_buf(&mut buf).await? == 0 {
                return Ok(());
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let mut lines = head.split("\r\n");
        let mut first = lines.next().unwrap_or("").split(' ');
        let method = first.next().unwrap_or("").to_string();
        let target = first.next().unwrap_or("/").to_string();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        let close = header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
        if header("expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue")) {
            sock.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
        }
        let chunked = header("transfer-encoding").is_some_and(|v| v.contains("chunked"));
        let body_start = head_end + 4;
        let (body, consumed) = if chunked {
            loop {
                match dechunk(&buf, body_start) {
                    Some(Ok(done)) => break done,
                    Some(Err(())) => {
                        return write(&mut sock, &text(400, "bad chunked body"), true).await;
                    }
                    None => {
                        if sock.read_buf(&mut buf).await? == 0 {
                            return Ok(());
                        }
                    }
                }
            }
        } else {
            let len: usize = match header("content-length").map(|v| v.parse()) {
                None => 0,
                Some(Ok(n)) if n <= MAX_BODY => n,
                Some(_) => return write(&mut sock, &text(413, "body too large"), true).await,
            };
            if !fill(&mut sock, &mut buf, body_start + len).await? {
                return Ok(());
            }
            (buf[body_start..body_start + len].to_vec(), body_start + len)
        };
        buf.drain(..consumed);
        let (path, query) = split_target(&target);
        let req = Request {
            method,
            path,
            query,
            headers,
            body,
        };
        let resp = handler(req);
        if let Some(hold) = &resp.hold {
            while hold.load(std::sync::atomic::Ordering::SeqCst) {
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
        }
        write(&mut sock, &resp, close).await?;
        if close {
            return Ok(());
        }
    }
}

fn text(status: u16, msg: &str) -> Response {
    Response {
        status,
        content_type: "text/plain; charset=UTF-8",
        body: msg.as_bytes().to_vec(),
        hold: None,
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        412 => "Precondition Failed",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

async fn write(sock: &mut TcpStream, resp: &Response, close: bool) -> std::io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{}\r\n",
        resp.status,
        reason(resp.status),
        resp.content_type,
        resp.body.len(),
        if close { "Connection: close\r\n" } else { "" },
    )
    .into_bytes();
    out.extend_from_slice(&resp.body);
    sock.write_all(&out).await?;
    sock.flush().await
}

/// Percent-decodes `s`; `plus_is_space` for query strings (form encoding).
pub(crate) fn percent_decode(s: &str, plus_is_space: bool) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' if plus_is_space => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Splits a request target into its decoded path and query pairs.
fn split_target(target: &str) -> (String, Vec<(String, String)>) {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let pairs = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k, true), percent_decode(v, true))
        })
        .collect();
    (percent_decode(path, false), pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_split_and_decoded() {
        let (path, q) = split_target(
            "/compute/v1/projects/p/aggregated/instances?filter=labels.qa-run%20%3D%20%221%22&$alt=json+x",
        );
        assert_eq!(path, "/compute/v1/projects/p/aggregated/instances");
        assert_eq!(
            q,
            vec![
                ("filter".to_string(), "labels.qa-run = \"1\"".to_string()),
                ("$alt".to_string(), "json x".to_string()),
            ]
        );
        assert_eq!(percent_decode("a%2", true), "a%2");
        assert_eq!(percent_decode("%41%zz", false), "A%zz");
    }

    #[test]
    fn chunked_bodies_are_joined() {
        let raw = b"HEAD\r\n\r\n4\r\nWiki\r\n5;x=1\r\npedia\r\n0\r\nT: 1\r\n\r\nNEXT";
        let (body, end) = dechunk(raw, 8).unwrap().unwrap();
        assert_eq!(body, b"Wikipedia");
        assert_eq!(&raw[end..], b"NEXT");
        assert!(dechunk(b"4\r\nWi", 0).is_none());
    }
}
