//! Builds the [`Engine`] a command runs with: local sandboxes, static hosts over SSH, the
//! publishers and the junit report hook, from the global options and [`Settings`]. The cloud
//! backends are added afterwards, and only when a command needs them (`clouds::with_clouds`).

use std::path::PathBuf;
use std::sync::Arc;

use qa_core::engine::Engine;
use qa_core::events::EventSink;

use crate::settings::Settings;

/// What the engine needs from the command line, the plan and the environment.
#[derive(Debug, Clone, Default)]
pub struct EngineSettings {
    /// Parent of run directories (local sandboxes are swept below it).
    pub results: PathBuf,
    /// Hosts of the plan's `inventory:` (empty for commands without a plan).
    pub inventory: Vec<qa_core::plan::InventoryHost>,
    /// known_hosts files for strict host-key checking.
    pub known_hosts: Vec<PathBuf>,
    /// The environment: where leases are kept, and how SSH reads boot ids and reboots.
    pub environment: Settings,
}

/// The engine with every backend this build links: local sandboxes, static hosts over SSH, and
/// the publishers.
pub fn default_engine(settings: &EngineSettings, events: Arc<dyn EventSink>) -> Engine {
    let factory: qa_core::engine::PublisherFactory = Arc::new(|t, base, redactor| {
        Ok(qa_publish::from_target_with_redactor(
            t,
            base,
            redactor.clone(),
        ))
    });
    let mut ssh_options = qa_remote::ssh::SshOptions {
        known_hosts: settings.known_hosts.clone(),
        ..Default::default()
    };
    if let Some(path) = &settings.environment.ssh_boot_id_path {
        ssh_options.boot_id_path = path.clone();
    }
    if let Some(cmd) = &settings.environment.ssh_reboot_command {
        ssh_options.reboot_command = cmd.clone();
    }
    let connector = Arc::new(qa_remote::RoutingConnector::new(ssh_options));
    let static_hosts = qa_provision::static_hosts::StaticProvisioner::new(
        settings.inventory.clone(),
        settings.environment.lease_dir.clone(),
    )
    .with_connector(connector.clone());
    Engine::new()
        .backends(qa_cloud::backends())
        .provisioner(Arc::new(
            qa_provision::local::LocalProvisioner::new().with_sweep_root(&settings.results),
        ))
        .provisioner(Arc::new(static_hosts))
        .connector(connector)
        .publisher_factory(factory)
        .report_hook(Arc::new(|report, run_dir, redactor| {
            std::fs::write(
                run_dir.join("junit.xml"),
                qa_publish::junit::render_with(report, redactor),
            )
        }))
        .events(events)
}
