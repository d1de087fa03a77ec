//! What a run's cloud machines cost: instance-hours and disk GB-hours from the journal, priced
//! from a table the user can override; shared by every cloud's provisioner.
//!
//! A provisioner's instance records (kind `instance`) carry `launched-at` (unix seconds),
//! `instance-type`, `lifecycle` (`spot` or `on-demand`) and `volumes` (`type:GB,…`). The
//! estimate runs each instance from its launch to the end the caller gives (the run's teardown),
//! or to its `destroyed-at` when the journal has it destroyed earlier, bills at least a minute
//! (as EC2 and Compute Engine do), and prices volumes per GB-month. Types the table does not
//! know are counted in hours but listed as unpriced rather than guessed.
//!
//! [`CostEstimate::to_report`] turns an estimate into the report's form (one item per instance
//! type and per volume type), which is what a provisioner's
//! [`Provisioner::estimate_cost`](qa_core::Provisioner::estimate_cost) returns.
//!
//! ```
//! use qa_cloud::cost::{estimate, PriceTable};
//! let prices = PriceTable::builtin();
//! let report = estimate(&[], 0, &prices, qa_core::BackendName::new("gce"));
//! assert_eq!(report.instance_hours, 0.0);
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use qa_core::BackendName;
use qa_core::report;
use qa_core::types::{Resource, ResourceState};
use serde::{Deserialize, Serialize};

/// Journal kind of an instance, which carries the details the estimate reads.
pub const KIND_INSTANCE: &str = "instance";

/// Hours in the month clouds price volumes by.
const HOURS_PER_MONTH: f64 = 730.0;
/// EC2 and Compute Engine bill Linux instances per second with a one-minute minimum.
const MIN_BILLED_SECONDS: i64 = 60;

/// Prices in USD. Every field can be overridden from a JSON file ([`PriceTable::load_overrides`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct PriceTable {
    /// On-demand price per instance-hour, by instance type.
    #[serde(default)]
    pub on_demand_hourly: BTreeMap<String, f64>,
    /// Spot price per instance-hour, by instance type (default: `spot-fraction` of on demand).
    #[serde(default)]
    pub spot_hourly: BTreeMap<String, f64>,
    /// Share of the on-demand price a spot hour is assumed to cost when no spot price is given.
    #[serde(default = "default_spot_fraction")]
    pub spot_fraction: f64,
    /// Price per GB-month, by volume type (EBS volume or persistent disk).
    #[serde(default)]
    pub volume_gb_month: BTreeMap<String, f64>,
}

fn default_spot_fraction() -> f64 {
    0.35
}

impl PriceTable {
    /// List prices (USD, Linux, on demand) of common test instance types and volumes of every
    /// cloud: EC2 in us-east-1, Compute Engine in us-central1. The clouds' type names do not
    /// overlap, so one table holds them all.
    pub fn builtin() -> Self {
        let hourly = [
            ("t3.micro", 0.0104),
            ("t3.small", 0.0208),
            ("t3.medium", 0.0416),
            ("t3.large", 0.0832),
            ("m5.large", 0.096),
            ("m5.xlarge", 0.192),
            ("m5.2xlarge", 0.384),
            ("c5.large", 0.085),
            ("c5.xlarge", 0.17),
            ("r4.large", 0.133),
            ("r5.large", 0.126),
            ("r5.xlarge", 0.252),
            ("r5.2xlarge", 0.504),
            ("i3.large", 0.156),
            ("i4i.large", 0.172),
            // Compute Engine, us-central1.
            ("e2-micro", 0.008376),
            ("e2-small", 0.016751),
            ("e2-medium", 0.033503),
            ("e2-standard-2", 0.067006),
            ("e2-standard-4", 0.134012),
            ("n2-standard-2", 0.097118),
            ("n2-standard-4", 0.194236),
            ("n2-standard-8", 0.388472),
            ("n2-highmem-2", 0.131014),
            ("n2d-standard-2", 0.084492),
            ("c3-standard-4", 0.201608),
        ];
        let volumes = [
            ("gp2", 0.10),
            ("gp3", 0.08),
            ("io1", 0.125),
            ("io2", 0.125),
            ("st1", 0.045),
            ("sc1", 0.015),
            ("standard", 0.05),
            // Compute Engine persistent disks, us-central1.
            ("pd-standard", 0.04),
            ("pd-balanced", 0.10),
            ("pd-ssd", 0.17),
            ("pd-extreme", 0.125),
        ];
        PriceTable {
            on_demand_hourly: hourly.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            spot_hourly: BTreeMap::new(),
            spot_fraction: default_spot_fraction(),
            volume_gb_month: volumes.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        }
    }

    /// The built-in table with the entries of a JSON file laid over it.
    pub fn load_overrides(path: &Path) -> Result<Self, PriceTableError> {
        let text = std::fs::read_to_string(path).map_err(|source| PriceTableError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let over: PriceTable =
            serde_json::from_str(&text).map_err(|source| PriceTableError::Parse {
                path: path.to_path_buf(),
                source,
            })?;
        let problems = over.problems();
        if !problems.is_empty() {
            return Err(PriceTableError::Invalid {
                path: path.to_path_buf(),
                problems,
            });
        }
        Ok(Self::builtin().overridden_by(over))
    }

    /// What makes no sense as a price: negative or not finite numbers, a spot fraction outside
    /// 0..=1. One line per problem, naming its key.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (table, prices) in [
            ("on-demand-hourly", &self.on_demand_hourly),
            ("spot-hourly", &self.spot_hourly),
            ("volume-gb-month", &self.volume_gb_month),
        ] {
            for (name, price) in prices {
                if !price.is_finite() || *price < 0.0 {
                    out.push(format!(
                        "{table}.{name}: {price} is not a price (USD, 0 or more)"
                    ));
                }
            }
        }
        if !(0.0..=1.0).contains(&self.spot_fraction) {
            out.push(format!(
                "spot-fraction: {} is not a share of the on-demand price (0 to 1)",
                self.spot_fraction
            ));
        }
        out
    }

    /// This table with every entry of `other` replacing or adding to it.
    pub fn overridden_by(mut self, other: PriceTable) -> Self {
        self.on_demand_hourly.extend(other.on_demand_hourly);
        self.spot_hourly.extend(other.spot_hourly);
        self.volume_gb_month.extend(other.volume_gb_month);
        self.spot_fraction = other.spot_fraction;
        self
    }

    fn instance_hourly(&self, instance_type: &str, spot: bool) -> Option<f64> {
        if spot {
            if let Some(p) = self.spot_hourly.get(instance_type) {
                return Some(*p);
            }
            return self
                .on_demand_hourly
                .get(instance_type)
                .map(|p| p * self.spot_fraction);
        }
        self.on_demand_hourly.get(instance_type).copied()
    }
}

/// Why a price table could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PriceTableError {
    /// The file could not be read.
    #[error("cannot read price table {}: {source}", path.display())]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid price table.
    #[error("price table {}: {source}", path.display())]
    Parse {
        /// The file.
        path: std::path::PathBuf,
        /// The cause (with line and column).
        #[source]
        source: serde_json::Error,
    },
    /// The file parses but has prices that make no sense.
    #[error("price table {}: {}", path.display(), problems.join("; "))]
    Invalid {
        /// The file.
        path: std::path::PathBuf,
        /// One line per problem, naming its key.
        problems: Vec<String>,
    },
}

/// One priced item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct CostLine {
    /// Machine the item belongs to.
    pub machine: String,
    /// `instance r5.large (spot)` or `volume gp3 20 GB`.
    pub item: String,
    /// What the item is priced as (the report sums lines by this).
    pub priced_as: PricedAs,
    /// Instance-hours, or GB-hours for a volume.
    pub quantity: f64,
    /// USD per instance-hour, or per GB-month for a volume, if the table has a price.
    pub unit_usd: Option<f64>,
    /// USD, if the table has a price.
    pub usd: Option<f64>,
}

/// What a [`CostLine`] is priced as.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum PricedAs {
    /// Hours of an instance type, on demand or spot.
    Instance {
        /// The instance type, e.g. `r5.large`.
        instance_type: String,
        /// Spot rather than on demand.
        spot: bool,
    },
    /// GB-hours of a volume type.
    Volume {
        /// The volume type, e.g. `gp3` or `pd-balanced`.
        volume_type: String,
    },
}

/// The estimate of one run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct CostEstimate {
    /// Sum of instance-hours.
    pub instance_hours: f64,
    /// Sum of extra-volume GB-hours.
    pub volume_gb_hours: f64,
    /// Sum of the priced lines, USD.
    pub usd: f64,
    /// Instance and volume types the table has no price for.
    pub unpriced: Vec<String>,
    /// Every item.
    pub lines: Vec<CostLine>,
}

/// Seconds since the epoch, now.
pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Estimates the cost of `backend`'s instances in `resources`, each running until `end_unix`.
///
/// Instances that were created count, whether they are still running, destroyed (until their
/// `destroyed-at`) or kept by the cleanup policy (a kept one goes on costing after `end_unix`);
/// intents whose id never came back do not.
pub fn estimate(
    resources: &[Resource],
    end_unix: i64,
    prices: &PriceTable,
    backend: BackendName,
) -> CostEstimate {
    let mut out = CostEstimate::default();
    for r in resources.iter().filter(|r| {
        r.backend == backend
            && r.kind == KIND_INSTANCE
            && matches!(
                r.state,
                ResourceState::Created | ResourceState::Destroyed | ResourceState::Kept
            )
            && r.id.is_some()
    }) {
        let Some(start) = r
            .details
            .get("launched-at")
            .and_then(|s| s.parse::<i64>().ok())
        else {
            continue;
        };
        // A destroyed instance stops costing when it was destroyed (journals written before
        // that time was recorded count it to the end).
        let end = match r.state {
            ResourceState::Destroyed => r
                .details
                .get(qa_core::journal::DESTROYED_AT)
                .and_then(|s| s.parse::<i64>().ok())
                .map_or(end_unix, |at| at.min(end_unix)),
            _ => end_unix,
        };
        let seconds = (end - start).max(MIN_BILLED_SECONDS);
        let hours = seconds as f64 / 3600.0;
        let machine = r.machine.clone().unwrap_or_else(|| r.key.0.clone());
        let instance_type = r.details.get("instance-type").cloned().unwrap_or_default();
        let spot = r.details.get("lifecycle").is_some_and(|l| l == "spot");
        let unit_usd = prices.instance_hourly(&instance_type, spot);
        let usd = unit_usd.map(|p| p * hours);
        if usd.is_none() && !out.unpriced.contains(&instance_type) {
            out.unpriced.push(instance_type.clone());
        }
        out.instance_hours += hours;
        out.lines.push(CostLine {
            machine: machine.clone(),
            item: format!(
                "instance {instance_type} ({})",
                if spot { "spot" } else { "on-demand" }
            ),
            priced_as: PricedAs::Instance {
                instance_type: instance_type.clone(),
                spot,
            },
            quantity: hours,
            unit_usd,
            usd,
        });
        for v in r
            .details
            .get("volumes")
            .map(|s| s.split(',').filter(|v| !v.is_empty()).collect::<Vec<_>>())
            .unwrap_or_default()
        {
            let (vtype, size) = v.split_once(':').unwrap_or(("gp3", v));
            let Ok(size) = size.parse::<f64>() else {
                continue;
            };
            let gb_hours = size * hours;
            let unit_usd = prices.volume_gb_month.get(vtype).copied();
            let usd = unit_usd.map(|p| p * gb_hours / HOURS_PER_MONTH);
            if usd.is_none() && !out.unpriced.contains(&vtype.to_string()) {
                out.unpriced.push(vtype.to_string());
            }
            out.volume_gb_hours += gb_hours;
            out.lines.push(CostLine {
                machine: machine.clone(),
                item: format!("volume {vtype} {size} GB"),
                priced_as: PricedAs::Volume {
                    volume_type: vtype.to_string(),
                },
                quantity: gb_hours,
                unit_usd,
                usd,
            });
        }
    }
    out.usd = out.lines.iter().filter_map(|l| l.usd).sum();
    out
}

impl CostEstimate {
    /// The estimate in the report's form: USD, one item per instance type (on demand and spot
    /// apart) and per volume type, in the order they first appear, each saying its hours and
    /// price. A type the table has no price for is an item of amount 0 that says `not priced`.
    pub fn to_report(&self) -> report::CostEstimate {
        let mut groups: Vec<(&PricedAs, Vec<&CostLine>)> = Vec::new();
        for line in &self.lines {
            match groups.iter_mut().find(|(k, _)| *k == &line.priced_as) {
                Some((_, lines)) => lines.push(line),
                None => groups.push((&line.priced_as, vec![line])),
            }
        }
        let items = groups
            .into_iter()
            .map(|(priced_as, lines)| {
                let quantity: f64 = lines.iter().map(|l| l.quantity).sum();
                let unit_usd = lines.iter().find_map(|l| l.unit_usd);
                let usd: f64 = lines.iter().filter_map(|l| l.usd).sum();
                let n = lines.len();
                let (what, amount) = match priced_as {
                    PricedAs::Instance {
                        instance_type,
                        spot,
                    } => (
                        format!(
                            "{n} × {instance_type} {}: {quantity:.2} instance-hours",
                            if *spot { "spot" } else { "on-demand" }
                        ),
                        unit_usd.map(|p| format!("{} USD/hour", plain(p))),
                    ),
                    PricedAs::Volume { volume_type } => (
                        format!(
                            "{n} × {volume_type} volume{}: {quantity:.1} GB-hours",
                            if n == 1 { "" } else { "s" }
                        ),
                        unit_usd.map(|p| format!("{} USD/GB-month", plain(p))),
                    ),
                };
                match amount {
                    Some(price) => (format!("{what} at {price}"), usd),
                    None => (format!("{what}, not priced (no price in the table)"), 0.0),
                }
            })
            .collect();
        report::CostEstimate::new("USD", items)
    }
}

/// A price as written in a table: up to six decimals, without trailing zeros.
fn plain(price: f64) -> String {
    let s = format!("{price:.6}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use qa_core::types::ResourceKey;

    use super::*;

    const AWS_BACKEND: BackendName = BackendName::new("aws");

    fn estimate(resources: &[Resource], end_unix: i64, prices: &PriceTable) -> CostEstimate {
        super::estimate(resources, end_unix, prices, AWS_BACKEND)
    }

    fn instance(kind_type: &str, lifecycle: &str, launched: i64, volumes: &str) -> Resource {
        Resource::new(
            ResourceKey(format!("aws/instance/us-east-1/vm/{kind_type}")),
            AWS_BACKEND,
            "instance",
        )
        .machine("vm")
        .id("i-1")
        .client_token("t")
        .detail("instance-type", kind_type)
        .detail("lifecycle", lifecycle)
        .detail("volumes", volumes)
        .detail("launched-at", launched.to_string())
        .state(ResourceState::Destroyed)
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn btrfsqa_shaped_run_is_priced_by_hours_and_gb_hours() {
        let vols = ["gp3:20"; 6].join(",");
        let r = instance("r5.large", "spot", 0, &vols);
        let e = estimate(&[r], 2 * 3600, &PriceTable::builtin());
        assert!(close(e.instance_hours, 2.0));
        assert!(close(e.volume_gb_hours, 6.0 * 20.0 * 2.0));
        let expected = 0.126 * 0.35 * 2.0 + 240.0 * 0.08 / 730.0;
        assert!(close(e.usd, expected), "{} != {expected}", e.usd);
        assert_eq!(e.lines.len(), 7);
        assert!(e.unpriced.is_empty());
    }

    #[test]
    fn overrides_replace_prices_and_unknown_types_are_listed_not_guessed() {
        let over: PriceTable = serde_json::from_str(
            r#"{"on-demand-hourly": {"m5.large": 1.0}, "spot-fraction": 0.5}"#,
        )
        .unwrap();
        let prices = PriceTable::builtin().overridden_by(over);
        let e = estimate(
            &[
                instance("m5.large", "on-demand", 0, ""),
                instance("x9.huge", "on-demand", 0, "io9:10"),
            ],
            3600,
            &prices,
        );
        assert!(close(e.usd, 1.0));
        assert_eq!(e.unpriced, vec!["x9.huge", "io9"]);
        assert!(close(e.instance_hours, 2.0));
    }

    #[test]
    fn a_short_run_is_billed_a_minute_and_intents_are_not_billed() {
        let mut never = instance("m5.large", "on-demand", 0, "");
        never.state = ResourceState::Intent;
        never.id = None;
        let e = estimate(
            &[instance("m5.large", "on-demand", 100, ""), never],
            110,
            &PriceTable::builtin(),
        );
        assert!(close(e.instance_hours, 60.0 / 3600.0));
        assert_eq!(e.lines.len(), 1);
    }

    #[test]
    fn the_report_has_one_item_per_type_with_hours_and_price_and_unpriced_types_at_zero() {
        let e = estimate(
            &[
                instance("t3.micro", "on-demand", 0, "gp3:20,gp3:20"),
                instance("t3.micro", "on-demand", 0, "gp3:10"),
                instance("r5.large", "spot", 0, ""),
                instance("x9.huge", "on-demand", 0, "io9:10"),
            ],
            3600,
            &PriceTable::builtin(),
        );
        let r = e.to_report();
        assert_eq!(r.currency, "USD");
        assert!(close(r.total, e.usd));
        let items: Vec<&str> = r.items.iter().map(|(d, _)| d.as_str()).collect();
        assert_eq!(
            items,
            [
                "2 × t3.micro on-demand: 2.00 instance-hours at 0.0104 USD/hour",
                "3 × gp3 volumes: 50.0 GB-hours at 0.08 USD/GB-month",
                "1 × r5.large spot: 1.00 instance-hours at 0.0441 USD/hour",
                "1 × x9.huge on-demand: 1.00 instance-hours, not priced (no price in the table)",
                "1 × io9 volume: 10.0 GB-hours, not priced (no price in the table)",
            ]
        );
        assert!(close(r.items[0].1, 2.0 * 0.0104));
        assert!(close(r.items[1].1, 50.0 * 0.08 / 730.0));
        assert_eq!((r.items[3].1, r.items[4].1), (0.0, 0.0));
        let sum: f64 = r.items.iter().map(|(_, a)| a).sum();
        assert!(close(sum, r.total));
    }

    #[test]
    fn a_destroyed_instance_costs_until_it_was_destroyed() {
        let mut gone = instance("m5.large", "on-demand", 0, "gp3:100");
        gone.details
            .insert(qa_core::journal::DESTROYED_AT.into(), "1800".into());
        let mut still = instance("m5.large", "on-demand", 0, "");
        still.state = ResourceState::Created;
        still
            .details
            .insert(qa_core::journal::DESTROYED_AT.into(), "1800".into());
        let e = estimate(&[gone.clone()], 3600, &PriceTable::builtin());
        assert!(close(e.instance_hours, 0.5), "{}", e.instance_hours);
        assert!(close(e.volume_gb_hours, 50.0), "{}", e.volume_gb_hours);
        // A live one (whatever its details say) counts to the end; a destruction the journal
        // dates after the end counts to the end.
        let e = estimate(&[still], 3600, &PriceTable::builtin());
        assert!(close(e.instance_hours, 1.0));
        let e = estimate(&[gone], 900, &PriceTable::builtin());
        assert!(close(e.instance_hours, 0.25));
    }

    #[test]
    fn kept_machines_are_billed_too() {
        let mut kept = instance("m5.large", "on-demand", 0, "");
        kept.state = ResourceState::Kept;
        let e = estimate(&[kept], 3600, &PriceTable::builtin());
        assert!(close(e.usd, 0.096));
    }

    #[test]
    fn a_typo_in_the_price_file_is_an_error_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("prices.json");
        std::fs::write(&path, r#"{"on-demand-hourley": {}}"#).unwrap();
        let e = PriceTable::load_overrides(&path).unwrap_err();
        assert!(
            e.to_string().contains("prices.json") && e.to_string().contains("on-demand-hourley"),
            "{e}"
        );
    }
}
