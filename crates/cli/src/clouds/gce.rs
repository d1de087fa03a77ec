//! Compute Engine in a `gce` build: machines and capacity reservations added to the engine, the
//! settings they read from the environment (`QA_RUN_GCE_ENDPOINT`, `QA_RUN_GCE_SSH_ADDRESS`,
//! `QA_RUN_GCE_PRICES`; credentials and project the usual Google way), and the janitor. This is
//! the only file of the CLI that uses the GCE backends (`qa_provision::gce`, `qa_capacity::gce`).

use std::sync::Arc;

use async_trait::async_trait;
use qa_cloud::gce::{GCE, GceConfig};
use qa_core::backend::Janitor;
use qa_core::{BackendName, BackendRegistry, Provisioner};
use qa_provision::gce::{GceProvisioner, GceProvisionerOptions};

use super::{CloudError, CloudWiring, Place, price_file, prices, ssh_address_overrides};

/// Names an endpoint to reach Compute Engine at instead of Google's (an emulator, a private
/// endpoint).
pub const ENDPOINT_ENV: &str = "QA_RUN_GCE_ENDPOINT";
/// Names the address to reach GCE machines' SSH at instead of their own (`qa-run --help`).
pub const SSH_ADDRESS_ENV: &str = "QA_RUN_GCE_SSH_ADDRESS";
/// Names a JSON file of prices laid over the built-in table (`qa-run run --help`).
pub const PRICES_ENV: &str = "QA_RUN_GCE_PRICES";

/// The Compute Engine backends as the CLI adds them.
#[derive(Debug, Clone, Copy)]
pub struct Gce;

/// The configuration every GCE backend of a command shares: Application Default Credentials,
/// the project (`project`, else the environment's), the endpoint override.
fn config(project: Option<&str>) -> Result<GceConfig, CloudError> {
    let endpoint = std::env::var(ENDPOINT_ENV)
        .ok()
        .filter(|v| !v.trim().is_empty());
    GceConfig::from_env(project, endpoint.as_deref()).map_err(|e| CloudError::Setting {
        variable: "GOOGLE_APPLICATION_CREDENTIALS",
        source: Box::new(e),
    })
}

#[async_trait]
impl CloudWiring for Gce {
    fn name(&self) -> BackendName {
        GCE
    }

    fn place_key(&self) -> &'static str {
        "project"
    }

    async fn add(&self, backends: &mut BackendRegistry, place: &Place) -> Result<(), CloudError> {
        let address_overrides = ssh_address_overrides(SSH_ADDRESS_ENV)?;
        let prices = prices(PRICES_ENV, price_file(PRICES_ENV).as_deref())?;
        let gce = config(place.name())?;
        let p = Arc::new(GceProvisioner::with_config(
            gce.clone(),
            GceProvisionerOptions {
                address_overrides,
                prices,
                ..Default::default()
            },
        ));
        let c = qa_capacity::gce::GceCapacity::with_config(gce);
        backends.set_provisioner(p.clone());
        backends
            .set_reservation(Arc::new(c))
            .and_then(|b| b.set_janitor(GCE, p))
            .expect("qa_cloud::backends() registers gce");
        Ok(())
    }

    async fn janitor(&self) -> Result<(Arc<dyn Provisioner>, Arc<dyn Janitor>), CloudError> {
        let p = Arc::new(GceProvisioner::with_config(
            config(None)?,
            GceProvisionerOptions::default(),
        ));
        Ok((p.clone(), p))
    }
}
