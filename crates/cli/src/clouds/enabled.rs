//! The clouds of an `aws` build: EC2 machines and capacity reservations added to the engine,
//! the settings they read from the environment (`QA_RUN_AWS_SSH_ADDRESS`, `QA_RUN_AWS_PRICES`),
//! and the janitor that finds what outlived its keep-until tag. This is the only file of the
//! CLI that uses the AWS backends (`qa_provision::aws`, `qa_capacity::aws`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use qa_core::engine::Engine;
use qa_core::exit;
use qa_provision::aws::cost::PriceTable;
use qa_provision::aws::{AwsProvisioner, AwsProvisionerOptions};

use super::{CloudError, Clouds, JanitorOptions};
use crate::error::CliError;
use crate::terminal::safe;

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

/// What is wrong with a `QA_RUN_AWS_SSH_ADDRESS` value.
#[derive(Debug, thiserror::Error)]
pub enum SshAddressError {
    /// An address that does not resolve as `HOST:PORT`.
    #[error("`{0}` is not HOST:PORT (expected `HOST:PORT` or `NAME=HOST:PORT,...`)")]
    NotHostPort(String),
    /// `=HOST:PORT`.
    #[error("`{0}` has no machine name before `=`")]
    NoMachineName(String),
}

/// Parses `QA_RUN_AWS_SSH_ADDRESS`: `HOST:PORT` (every machine, stored under `*`) or
/// `NAME=HOST:PORT,...`.
pub fn parse_ssh_address_overrides(
    value: &str,
) -> Result<BTreeMap<String, SocketAddr>, SshAddressError> {
    let mut out = BTreeMap::new();
    for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, addr) = match part.split_once('=') {
            Some((n, a)) => (n.trim(), a.trim()),
            None => ("*", part),
        };
        let parsed = std::net::ToSocketAddrs::to_socket_addrs(addr)
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| SshAddressError::NotHostPort(addr.to_string()))?;
        if name.is_empty() {
            return Err(SshAddressError::NoMachineName(part.to_string()));
        }
        out.insert(name.to_string(), parsed);
    }
    Ok(out)
}

/// The built-in EC2 price table with the JSON file `path` laid over it. The error names the
/// variable and the file and says what is wrong where (line and column, unknown key).
pub fn aws_prices(path: Option<&Path>) -> Result<PriceTable, CloudError> {
    let Some(path) = path else {
        return Ok(PriceTable::builtin());
    };
    PriceTable::load_overrides(path).map_err(|e| CloudError::PriceFile {
        variable: AWS_PRICES_ENV,
        source: Box::new(e),
    })
}

/// Adds the cloud backends a command needs, with credentials from the usual places.
pub async fn with_clouds(engine: Engine, clouds: &Clouds) -> Result<Engine, CloudError> {
    let Some(region) = &clouds.aws else {
        return Ok(engine);
    };
    let settings = AwsSettings::from_env()?;
    let region = region.name().map(str::to_string);
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
    let mut backends = engine.backend_registry().clone();
    backends.set_provisioner(p.clone());
    backends
        .set_reservation(Arc::new(c))
        .and_then(|b| b.set_janitor(qa_cloud::aws::AWS, p))
        .expect("qa_cloud::backends() registers aws");
    Ok(engine.backends(backends))
}

/// Lists the EC2 resources whose keep-until tag passed, in the configured region or all of
/// them, and removes them if asked. A region that cannot be searched or emptied is printed as
/// it happens, and the rest go on.
pub async fn janitor(options: JanitorOptions) -> Result<i32, CliError> {
    let p = Arc::new(
        AwsProvisioner::from_env(Default::default())
            .await
            .map_err(CloudError::from)?,
    );
    let mut backends = qa_cloud::backends();
    backends.set_provisioner(p.clone());
    backends
        .set_janitor(qa_cloud::aws::AWS, p)
        .expect("qa_cloud::backends() registers aws");
    let report = Engine::new()
        .backends(backends)
        .janitor(options.older_than, options.all_regions, options.remove)
        .await;
    for e in &report.errors {
        eprintln!("error: {}", safe(e));
    }
    let searched = || {
        if report.errors.is_empty() {
            Ok(exit::ALL_PASSED)
        } else {
            Err(CliError::ListingIncomplete {
                failed: report.errors.len(),
            })
        }
    };
    if report.expired.is_empty() {
        if report.errors.is_empty() {
            println!("nothing has outlived its keep-until");
        }
        return searched();
    }
    for (_, r) in &report.expired {
        println!(
            "{:<14} {:<16} {:<24} test-id {:<30} keep-until {}",
            safe(&r.region),
            safe(&r.kind),
            safe(&r.id),
            safe(r.test_id.as_deref().unwrap_or("-")),
            safe(&r.keep_until)
        );
    }
    if !options.remove {
        eprintln!(
            "{} resource(s) listed; nothing removed (add --yes to remove them)",
            report.expired.len()
        );
        return searched();
    }
    for r in &report.removed {
        println!("removed {}", safe(r));
    }
    for l in &report.left {
        eprintln!("left: {}", safe(l));
    }
    if !report.left.is_empty() {
        return Err(CliError::CleanupIncomplete {
            remaining: report.left.len(),
        });
    }
    searched()
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(CliError::from(e).exit_code(), exit::BAD_PLAN_OR_USAGE);

        let bad = dir.path().join("prices.json");
        std::fs::write(&bad, "{\"on-demand-hourley\": {}}").unwrap();
        let e = aws_settings(None, Some(&bad)).unwrap_err();
        assert!(matches!(e, CloudError::PriceFile { .. }), "{e:?}");
        assert!(
            e.to_string().contains("QA_RUN_AWS_PRICES") && e.to_string().contains("prices.json"),
            "{e}"
        );
        assert_eq!(CliError::from(e).exit_code(), exit::BAD_PLAN_OR_USAGE);
        let e = aws_settings(None, Some(&dir.path().join("missing.json"))).unwrap_err();
        assert_eq!(CliError::from(e).exit_code(), exit::BAD_PLAN_OR_USAGE);
    }

    #[test]
    fn ssh_address_overrides_take_one_address_or_one_per_machine() {
        let all = parse_ssh_address_overrides("127.0.0.1:2222").unwrap();
        assert_eq!(all["*"], "127.0.0.1:2222".parse().unwrap());
        let some = parse_ssh_address_overrides("a=127.0.0.1:1, b = 127.0.0.2:2 ,").unwrap();
        assert_eq!(some.len(), 2);
        assert_eq!(some["b"], "127.0.0.2:2".parse().unwrap());
        let bad = parse_ssh_address_overrides("a=127.0.0.1").unwrap_err();
        assert!(
            bad.to_string().starts_with("`127.0.0.1` is not HOST:PORT"),
            "{bad}"
        );
        assert!(matches!(
            parse_ssh_address_overrides("=127.0.0.1:2"),
            Err(SshAddressError::NoMachineName(_))
        ));
    }
}
