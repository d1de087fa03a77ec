//! One connector for runs that mix machine kinds: local sandboxes go to the local executor,
//! machines reached over SSH to the SSH executor. A harness mixing kinds uses it as the engine's
//! connector instead of writing its own.

use std::sync::Arc;

use qa_core::{Access, Connector, Machine, RemoteError, RemoteExecutor};

use crate::local::LocalConnector;
use crate::ssh::{SshConnector, SshOptions};

/// Picks the executor by how a machine is reached ([`Machine::access`]).
#[derive(Debug)]
pub struct RoutingConnector {
    local: LocalConnector,
    ssh: SshConnector,
}

impl RoutingConnector {
    /// Local machines run as local processes; SSH machines are reached with `ssh` options.
    pub fn new(ssh: SshOptions) -> Self {
        RoutingConnector {
            local: LocalConnector::new(),
            ssh: SshConnector::new(ssh),
        }
    }
}

#[async_trait::async_trait]
impl Connector for RoutingConnector {
    async fn connect(&self, machine: &Machine) -> Result<Arc<dyn RemoteExecutor>, RemoteError> {
        match &machine.access {
            Access::Local { .. } => self.local.connect(machine).await,
            Access::Ssh(_) => self.ssh.connect(machine).await,
            // A kind of access added to qa-core after this connector was written.
            other => Err(RemoteError::Connect {
                target: machine.name.clone(),
                message: format!(
                    "machine {} is reached by {other}, which qa-remote cannot connect to (it knows local sandboxes and SSH)",
                    machine.name
                ),
                source: None,
            }),
        }
    }
}
