//! Reaching Compute Engine: the project, the credentials as users have them (Application Default
//! Credentials: a service-account or user JSON in `GOOGLE_APPLICATION_CREDENTIALS`, gcloud's ADC
//! file, or the metadata server), an endpoint override (emulators, private endpoints), the
//! clients built once and shared, and operations waited for by hand.

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use google_cloud_auth::credentials::Credentials;
use google_cloud_compute_v1::client::{Firewalls, Instances, MachineTypes, Reservations, Zones};
use google_cloud_compute_v1::model::Operation;
use google_cloud_gax::error::Error as CallError;
use tokio::sync::OnceCell;

use super::errors::{ErrorClass, GceError};

/// Environment variables that name the project, in the order they are read.
pub const PROJECT_ENV: &[&str] = &[
    "GOOGLE_CLOUD_PROJECT",
    "CLOUDSDK_CORE_PROJECT",
    "GCLOUD_PROJECT",
];

/// Why Compute Engine cannot be reached; nothing was asked of it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// Neither the plan nor the environment names a project.
    #[error(
        "no GCE project: set `project:` in the machine's gce options, or GOOGLE_CLOUD_PROJECT, or use credentials that name one"
    )]
    NoProject,
    /// The credentials cannot be loaded.
    #[error(
        "GCE credentials: {0} (see GOOGLE_APPLICATION_CREDENTIALS, or run `gcloud auth application-default login`)"
    )]
    Credentials(String),
    /// A client could not be built.
    #[error("GCE client: {0}")]
    Client(String),
}

/// The clients a backend uses, built on first use.
#[derive(Debug, Clone)]
pub struct Clients {
    /// VMs.
    pub instances: Instances,
    /// Capacity reservations.
    pub reservations: Reservations,
    /// Firewall rules.
    pub firewalls: Firewalls,
    /// Zones (which are up, which region they are in).
    pub zones: Zones,
    /// Machine types (which zone offers which).
    pub machine_types: MachineTypes,
}

/// How to reach Compute Engine: one project by default, credentials, an endpoint.
#[derive(Debug, Clone)]
pub struct GceConfig {
    project: Option<String>,
    endpoint: Option<String>,
    credentials: Credentials,
    clients: OnceCell<Clients>,
}

/// The ADC file gcloud writes.
fn gcloud_adc_file() -> Option<PathBuf> {
    let home = std::env::var_os("HOME")?;
    Some(PathBuf::from(home).join(".config/gcloud/application_default_credentials.json"))
}

/// The project an ADC file names (`project_id`, else `quota_project_id`).
fn project_of_adc_file() -> Option<String> {
    let path = std::env::var_os("GOOGLE_APPLICATION_CREDENTIALS")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(gcloud_adc_file)?;
    let text = std::fs::read_to_string(path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    ["project_id", "quota_project_id"]
        .iter()
        .find_map(|k| v.get(k).and_then(|p| p.as_str()))
        .filter(|p| !p.is_empty())
        .map(str::to_string)
}

/// The project: `explicit`, else the first of [`PROJECT_ENV`] that is set, else the one the ADC
/// file names.
pub fn project_from_env(explicit: Option<&str>) -> Option<String> {
    explicit
        .map(str::to_string)
        .or_else(|| {
            PROJECT_ENV
                .iter()
                .find_map(|v| std::env::var(v).ok().filter(|p| !p.trim().is_empty()))
        })
        .or_else(project_of_adc_file)
}

impl GceConfig {
    /// Credentials from Application Default Credentials, the project from `project` or the
    /// environment (`None` is allowed: then every machine must name its project), and the
    /// endpoint override if any.
    pub fn from_env(project: Option<&str>, endpoint: Option<&str>) -> Result<Self, SetupError> {
        let credentials = google_cloud_auth::credentials::Builder::default()
            .build()
            .map_err(|e| SetupError::Credentials(e.to_string()))?;
        Ok(Self::new(project_from_env(project), endpoint, credentials))
    }

    /// Credentials the caller built (for tests: `anonymous::Builder::new().build()`).
    pub fn new(project: Option<String>, endpoint: Option<&str>, credentials: Credentials) -> Self {
        GceConfig {
            project,
            endpoint: endpoint.map(str::to_string),
            credentials,
            clients: OnceCell::new(),
        }
    }

    /// No credentials at all, for an emulator.
    pub fn anonymous(project: impl Into<String>, endpoint: &str) -> Self {
        Self::new(
            Some(project.into()),
            Some(endpoint),
            google_cloud_auth::credentials::anonymous::Builder::new().build(),
        )
    }

    /// The default project, if one is known.
    pub fn default_project(&self) -> Option<&str> {
        self.project.as_deref()
    }

    /// `explicit`, else the default project.
    pub fn project(&self, explicit: Option<&str>) -> Result<String, SetupError> {
        explicit
            .or(self.project.as_deref())
            .map(str::to_string)
            .ok_or(SetupError::NoProject)
    }

    /// The clients, built on first use.
    pub async fn clients(&self) -> Result<&Clients, SetupError> {
        self.clients
            .get_or_try_init(|| async {
                macro_rules! build {
                    ($t:ty) => {{
                        let mut b = <$t>::builder().with_credentials(self.credentials.clone());
                        if let Some(e) = &self.endpoint {
                            b = b.with_endpoint(e.clone());
                        }
                        b.build()
                            .await
                            .map_err(|e| SetupError::Client(e.to_string()))?
                    }};
                }
                Ok(Clients {
                    instances: build!(Instances),
                    reservations: build!(Reservations),
                    firewalls: build!(Firewalls),
                    zones: build!(Zones),
                    machine_types: build!(MachineTypes),
                })
            })
            .await
    }
}

/// A fresh `requestId`: Compute Engine does a create or delete sent twice with the same one only
/// once, for an hour.
pub fn request_id() -> String {
    let b: [u8; 16] = rand::random();
    format!(
        "{}-{}-4{}-a{}-{}",
        hex::encode(&b[0..4]),
        hex::encode(&b[4..6]),
        &hex::encode(&b[6..8])[1..],
        &hex::encode(&b[8..10])[1..],
        hex::encode(&b[10..16])
    )
}

/// How often and how long an operation is polled.
#[derive(Debug, Clone, Copy)]
pub struct OperationWait {
    /// Between polls.
    pub interval: Duration,
    /// In all.
    pub timeout: Duration,
}

fn is_done(op: &Operation) -> bool {
    op.status.as_ref().and_then(|s| s.name()) == Some("DONE")
}

/// The outcome of a mutating call: Compute Engine's refusal, or its operation polled with
/// `poll` until done ([`until_done`]).
pub async fn finished<F, Fut>(
    sent: Result<Operation, CallError>,
    wait: OperationWait,
    poll: F,
) -> Result<Operation, GceError>
where
    F: FnMut(String) -> Fut,
    Fut: Future<Output = Result<Operation, CallError>>,
{
    match sent {
        Ok(op) => until_done(op, wait, poll).await,
        Err(e) => Err(GceError::of_call(&e)),
    }
}

/// Polls `op` with `poll` (the client's `get_operation` for the operation's name) until it is
/// `DONE` (after 250 ms, then twice as long each time up to `wait.interval`), then returns it, or the error inside it, classified. A poll that gets no answer is
/// tried again until the timeout; one Compute Engine refuses is returned.
pub async fn until_done<F, Fut>(
    mut op: Operation,
    wait: OperationWait,
    mut poll: F,
) -> Result<Operation, GceError>
where
    F: FnMut(String) -> Fut,
    Fut: Future<Output = Result<Operation, CallError>>,
{
    let deadline = Instant::now() + wait.timeout;
    let name = op.name.clone().unwrap_or_default();
    // Most operations finish within a second: poll soon, then back off to the interval.
    let mut delay = wait.interval.min(Duration::from_millis(250));
    loop {
        if is_done(&op) {
            return match GceError::of_operation(&op) {
                Some(e) => Err(e),
                None => Ok(op),
            };
        }
        if Instant::now() >= deadline {
            let mut e = GceError::new(
                None,
                None,
                format!(
                    "operation {name} ({}) not done after {:?}",
                    op.operation_type.as_deref().unwrap_or("?"),
                    wait.timeout
                ),
            );
            e.class = ErrorClass::Transient;
            return Err(e);
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(wait.interval);
        match poll(name.clone()).await {
            Ok(next) => op = next,
            Err(e) => {
                let mut e = GceError::of_call(&e);
                if e.class != ErrorClass::Transient {
                    // The call was accepted; only its operation could not be read: what it
                    // does may be done.
                    e.answered = false;
                    return Err(e);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_uuids() {
        let a = request_id();
        assert_eq!(a.len(), 36, "{a}");
        assert_eq!(a.as_bytes()[14], b'4');
        assert_ne!(a, request_id());
    }
}
