//! EC2 in an `aws` build: machines and capacity reservations added to the engine, the settings
//! they read from the environment (`QA_RUN_AWS_SSH_ADDRESS`, `QA_RUN_AWS_PRICES`), and the
//! janitor. This is the only file of the CLI that uses the AWS backends (`qa_provision::aws`,
//! `qa_capacity::aws`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use qa_core::backend::Janitor;
use qa_core::{BackendName, BackendRegistry, Provisioner};
use qa_provision::aws::cost::PriceTable;
use qa_provision::aws::{AwsProvisioner, AwsProvisionerOptions};

use super::{CloudError, CloudWiring, Place, parse_ssh_address_overrides};

/// Names the address to reach EC2 machines' SSH at instead of their own (`qa-run --help`).
const SSH_ADDRESS_ENV: &str = "QA_RUN_AWS_SSH_ADDRESS";

/// Names a JSON file of EC2 prices laid over the built-in table (`qa-run run --help`).
pub const AWS_PRICES_ENV: &str = "QA_RUN_AWS_PRICES";

/// What the AWS backends take from the environment, checked before the cloud is asked anything.
#[derive(Debug)]
pub struct AwsSettings {
    /// From `QA_RUN_AWS_SSH_ADDRESS`.
    pub address_overrides: BTreeMap<String, SocketAddr>,
    /// The built-in prices with the `QA_RUN_AWS_PRICES` file laid over them.
    pub prices: PriceTable,
}

impl AwsSettings {
    /// Reads `QA_RUN_AWS_SSH_ADDRESS` and `QA_RUN_AWS_PRICES` (each ignored when empty).
    pub fn from_env() -> Result<Self, CloudError> {
        let ssh_address = std::env::var(SSH_ADDRESS_ENV)
            .ok()
            .filter(|v| !v.trim().is_empty());
        let prices = std::env::var_os(AWS_PRICES_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from);
        aws_settings(ssh_address.as_deref(), prices.as_deref())
    }
}

/// Parses the values of `QA_RUN_AWS_SSH_ADDRESS` and `QA_RUN_AWS_PRICES` (`None` when unset or
/// empty); what is wrong with either is a [`CloudError::Setting`] or [`CloudError::PriceFile`].
pub fn aws_settings(
    ssh_address: Option<&str>,
    prices: Option<&Path>,
) -> Result<AwsSettings, CloudError> {
    let address_overrides = match ssh_address {
        Some(v) => parse_ssh_address_overrides(v).map_err(|e| CloudError::Setting {
            variable: SSH_ADDRESS_ENV,
            source: Box::new(e),
        })?,
        None => Default::default(),
    };
    let prices = aws_prices(prices)?;
    Ok(AwsSettings {
        address_overrides,
        prices,
    })
}

/// The built-in EC2 price table with the JSON file `path` laid over it. The error names the
/// variable and the file and says what is wrong where (line and column, unknown key).
pub fn aws_prices(path: Option<&Path>) -> Result<PriceTable, CloudError> {
    super::prices(AWS_PRICES_ENV, path)
}

/// The EC2 backends as the CLI adds them.
#[derive(Debug, Clone, Copy)]
pub struct Aws;

#[async_trait]
impl CloudWiring for Aws {
    fn name(&self) -> BackendName {
        qa_cloud::aws::AWS
    }

    fn place_key(&self) -> &'static str {
        "region"
    }

    async fn add(&self, backends: &mut BackendRegistry, place: &Place) -> Result<(), CloudError> {
        let settings = AwsSettings::from_env()?;
        let region = place.name().map(str::to_string);
        let p = AwsProvisioner::from_env(AwsProvisionerOptions {
            region: region.clone(),
            prices: settings.prices,
            address_overrides: settings.address_overrides,
            ..Default::default()
        })
        .await?;
        let c = qa_capacity::aws::AwsCapacity::from_env(qa_capacity::aws::AwsCapacityOptions {
            region,
            ..Default::default()
        })
        .await?;
        let p = Arc::new(p);
        backends.set_provisioner(p.clone());
        backends
            .set_reservation(Arc::new(c))
            .and_then(|b| b.set_janitor(qa_cloud::aws::AWS, p))
            .expect("qa_cloud::backends() registers aws");
        Ok(())
    }

    async fn janitor(&self) -> Result<(Arc<dyn Provisioner>, Arc<dyn Janitor>), CloudError> {
        let p = Arc::new(AwsProvisioner::from_env(Default::default()).await?);
        Ok((p.clone(), p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::CliError;

    #[test]
    fn a_bad_price_file_is_an_error_naming_the_variable_the_file_and_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let builtin = PriceTable::builtin();
        assert_eq!(aws_prices(None).unwrap(), builtin);

        let good = dir.path().join("good.json");
        std::fs::write(&good, r#"{"on-demand-hourly": {"t3.micro": 1.5}}"#).unwrap();
        let table = aws_prices(Some(&good)).unwrap();
        assert_eq!(table.on_demand_hourly["t3.micro"], 1.5);
        assert_eq!(
            table.on_demand_hourly["m5.large"],
            builtin.on_demand_hourly["m5.large"]
        );

        let typo = dir.path().join("typo.json");
        std::fs::write(&typo, "{\n  \"on-demand-hourley\": {}\n}").unwrap();
        let e = aws_prices(Some(&typo)).unwrap_err().to_string();
        for part in [
            "QA_RUN_AWS_PRICES",
            "typo.json",
            "unknown field `on-demand-hourley`",
            "line 2",
        ] {
            assert!(e.contains(part), "`{part}` missing from: {e}");
        }

        let text = dir.path().join("text.json");
        std::fs::write(&text, r#"{"on-demand-hourly": {"t3.micro": "cheap"}}"#).unwrap();
        let e = aws_prices(Some(&text)).unwrap_err().to_string();
        assert!(e.contains("text.json") && e.contains("invalid type"), "{e}");

        let negative = dir.path().join("negative.json");
        std::fs::write(
            &negative,
            r#"{"volume-gb-month": {"gp3": -1}, "spot-fraction": 2}"#,
        )
        .unwrap();
        let e = aws_prices(Some(&negative)).unwrap_err().to_string();
        assert!(
            e.contains("negative.json")
                && e.contains("volume-gb-month.gp3")
                && e.contains("spot-fraction"),
            "{e}"
        );

        let e = aws_prices(Some(&dir.path().join("missing.json")))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("cannot read") && e.contains("missing.json"),
            "{e}"
        );
    }

    #[test]
    fn bad_aws_settings_from_the_environment_are_configuration_errors() {
        let dir = tempfile::tempdir().unwrap();
        let s = aws_settings(None, None).unwrap();
        assert!(s.address_overrides.is_empty());
        assert_eq!(s.prices, PriceTable::builtin());
        let s = aws_settings(Some("box=127.0.0.1:2222"), None).unwrap();
        assert_eq!(
            s.address_overrides["box"],
            "127.0.0.1:2222".parse().unwrap()
        );

        let e = aws_settings(Some("box=127.0.0.1"), None).unwrap_err();
        assert!(matches!(e, CloudError::Setting { .. }), "{e:?}");
        assert!(e.to_string().starts_with("QA_RUN_AWS_SSH_ADDRESS: "), "{e}");
        assert_eq!(
            CliError::from(e).exit_code(),
            qa_core::exit::BAD_PLAN_OR_USAGE
        );

        let bad = dir.path().join("prices.json");
        std::fs::write(&bad, "{\"on-demand-hourley\": {}}").unwrap();
        let e = aws_settings(None, Some(&bad)).unwrap_err();
        assert!(matches!(e, CloudError::PriceFile { .. }), "{e:?}");
        assert!(
            e.to_string().contains("QA_RUN_AWS_PRICES") && e.to_string().contains("prices.json"),
            "{e}"
        );
        assert_eq!(
            CliError::from(e).exit_code(),
            qa_core::exit::BAD_PLAN_OR_USAGE
        );
        let e = aws_settings(None, Some(&dir.path().join("missing.json"))).unwrap_err();
        assert_eq!(
            CliError::from(e).exit_code(),
            qa_core::exit::BAD_PLAN_OR_USAGE
        );
    }
}
