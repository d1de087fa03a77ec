//! The EC2 emulator the AWS tests run against (feature `aws`): moto's server mode on a loopback
//! port, with [`proxy::Ec2Proxy`] in front of it. Nothing here talks to a real AWS endpoint: the
//! SDK is pointed at the proxy with `endpoint_url`, and credentials are dummy values.
//!
//! moto comes from PyPI: `python3 -m pip install "moto[server]"`.

pub mod proxy;

use std::net::{Ipv4Addr, SocketAddr, TcpStream as StdTcpStream};
use std::process::Stdio;
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_ec2::config::Credentials;
use tokio::process::{Child, Command};

pub use proxy::Ec2Proxy;

/// The tag qa-run puts its test id in.
pub const TEST_ID_TAG: &str = "qa-run:test-id";

/// moto's server, killed when dropped.
struct Moto {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

impl Moto {
    /// Starts moto on a free loopback port (trying another port if it exits) and waits until it
    /// listens; panics with moto's complaint if it does not start.
    async fn start() -> Moto {
        let mut last = String::new();
        for _ in 0..3 {
            let port = crate::net::free_port(Ipv4Addr::LOCALHOST.into()).expect("free port");
            let mut child = Command::new("python3")
                .args([
                    "-m",
                    "moto.server",
                    "-H",
                    "127.0.0.1",
                    "-p",
                    &port.to_string(),
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .expect("python3 runs (moto needs: python3 -m pip install \"moto[server]\")");
            let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(status)) = child.try_wait() {
                    let mut err = String::new();
                    if let Some(mut e) = child.stderr.take() {
                        use tokio::io::AsyncReadExt;
                        let _ = e.read_to_string(&mut err).await;
                    }
                    last = format!("moto exited with {status}: {err}");
                    break;
                }
                if StdTcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                    // Drain stderr so moto's request log never blocks it.
                    if let Some(mut e) = child.stderr.take() {
                        tokio::spawn(async move {
                            let _ = tokio::io::copy(&mut e, &mut tokio::io::sink()).await;
                        });
                    }
                    return Moto { child, addr };
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let _ = child.start_kill();
        }
        panic!(
            "moto did not start ({last}); install it with: python3 -m pip install \"moto[server]\""
        );
    }
}

/// moto plus the layer in front of it; both stop when it is dropped.
pub struct Ec2Emulator {
    /// The layer the SDK talks to: what it holds, what it was told to do, the calls it saw.
    pub proxy: Ec2Proxy,
    /// Held only to keep moto running as long as the emulator.
    _moto: Moto,
}

impl Ec2Emulator {
    /// Starts moto and the layer in front of it.
    pub async fn start() -> Ec2Emulator {
        let moto = Moto::start().await;
        let proxy = Ec2Proxy::start(moto.addr).await;
        Ec2Emulator { proxy, _moto: moto }
    }

    /// The proxy's URL, for `endpoint_url`.
    pub fn url(&self) -> String {
        self.proxy.url()
    }

    /// An SDK configuration for `region` that reaches only the emulator, with dummy credentials.
    pub async fn sdk_config(&self, region: &str) -> SdkConfig {
        aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(region.to_string()))
            .endpoint_url(self.url())
            .credentials_provider(Credentials::new(
                "AKIDQARUNTEST",
                "qa-run-test-secret",
                None,
                None,
                "qa-run-tests",
            ))
            .load()
            .await
    }

    /// A client for `region` (for checks the code under test does not make).
    pub async fn client(&self, region: &str) -> aws_sdk_ec2::Client {
        aws_sdk_ec2::Client::new(&self.sdk_config(region).await)
    }
}

impl Ec2Emulator {
    /// Everything in `region` tagged with `test_id` that still exists or still costs: instances
    /// not terminated, volumes, security groups, key pairs, open or active spot requests, active
    /// capacity reservations and placement groups. One line per resource.
    pub async fn leftovers(&self, region: &str, test_id: &str) -> Vec<String> {
        use aws_sdk_ec2::types::Filter;
        let tagged = || {
            Filter::builder()
                .name(format!("tag:{}", TEST_ID_TAG))
                .values(test_id)
                .build()
        };
        let c = self.client(region).await;
        let mut out = Vec::new();
        let inst = c
            .describe_instances()
            .filters(tagged())
            .send()
            .await
            .unwrap();
        for i in inst.reservations().iter().flat_map(|r| r.instances()) {
            let state = i
                .state()
                .and_then(|s| s.name())
                .map(|n| n.as_str().to_string())
                .unwrap_or_default();
            if state != "terminated" {
                out.push(format!(
                    "instance {} {state}",
                    i.instance_id().unwrap_or_default()
                ));
            }
        }
        let vols = c.describe_volumes().filters(tagged()).send().await.unwrap();
        for v in vols.volumes() {
            out.push(format!("volume {}", v.volume_id().unwrap_or_default()));
        }
        let sgs = c
            .describe_security_groups()
            .filters(tagged())
            .send()
            .await
            .unwrap();
        for g in sgs.security_groups() {
            out.push(format!(
                "security-group {}",
                g.group_id().unwrap_or_default()
            ));
        }
        // Key pairs by tag, read from the list itself (filters on key pair tags vary).
        let keys = c.describe_key_pairs().send().await.unwrap();
        for k in keys.key_pairs() {
            if k.tags()
                .iter()
                .any(|t| t.key() == Some(TEST_ID_TAG) && t.value() == Some(test_id))
            {
                out.push(format!("key-pair {}", k.key_name().unwrap_or_default()));
            }
        }
        let spot = c
            .describe_spot_instance_requests()
            .filters(tagged())
            .send()
            .await
            .unwrap();
        for r in spot.spot_instance_requests() {
            let state = r
                .state()
                .map(|s| s.as_str().to_string())
                .unwrap_or_default();
            if state == "open" || state == "active" {
                out.push(format!(
                    "spot-request {} {state}",
                    r.spot_instance_request_id().unwrap_or_default()
                ));
            }
        }
        let st = self.proxy.lock();
        let ours =
            |tags: &[(String, String)]| tags.iter().any(|(k, v)| k == TEST_ID_TAG && v == test_id);
        for r in st.reservations.iter().filter(|r| r.region == region) {
            if ours(&r.tags) && r.state == "active" {
                out.push(format!("capacity-reservation {} {}", r.id, r.state));
            }
        }
        for g in st.groups.iter().filter(|g| g.region == region) {
            if ours(&g.tags) {
                out.push(format!("placement-group {}", g.name));
            }
        }
        out
    }
}
