//! EC2 machines ([`AwsProvisioner`]).
//!
//! Per run it makes a key pair (ed25519, private key saved `0600` in the run directory) and a
//! security group that admits TCP/22 only from one CIDR (the plan's `ssh-cidr`, the provisioner's
//! option, or the address qa-run runs from as `/32`; never `0.0.0.0/0` unless configured so). Per
//! machine spec with `placement-group` it makes a placement group. Per machine it launches one
//! instance, on demand or spot (spot falls back to on demand on a capacity error when the plan
//! says `spot-fallback`), with the spec's extra EBS volumes as block device mappings, into the
//! zone and capacity reservation of [`MachineRequest::placement`] when capacity was reserved.
//!
//! Every resource is tagged at creation (`TagSpecifications`) with [`RunContext::tags`] and is
//! journaled as an intent before the call and with its id after. `RunInstances` carries a client
//! token (also put in the tag `qa-run:client-token` on the instance and its volumes), so a retried
//! call never makes a second instance and a crash between the call and the id leaves a record from
//! which [`Provisioner::destroy`] finds the instance. Key pairs, security groups and placement
//! groups have names derived from the run id, which plays the same part.
//!
//! Teardown terminates instances and waits until they are terminated, then cancels their spot
//! requests, deletes their leftover volumes, security groups, key pairs and placement groups.
//! What is already gone counts as removed. [`Provisioner::sweep`] finds the same kinds by the
//! `qa-run:test-id` tag alone.
//!
//! ```no_run
//! # async fn demo() -> Result<(), qa_core::ProvisionError> {
//! use qa_provision::aws::{AwsProvisioner, AwsProvisionerOptions};
//! let p = AwsProvisioner::from_env(AwsProvisionerOptions {
//!     region: Some("eu-west-1".into()),
//!     ssh_cidr: Some("203.0.113.7/32".into()),
//!     ..Default::default()
//! })
//! .await?;
//! # let _ = p; Ok(()) }
//! ```
//!
//! Its parts: the resources a run shares per region (`shared`), the `RunInstances` call
//! (`launch`), waiting for an instance and its SSH server (`ready`), teardown from the journal
//! (`teardown`), sweeping by tag (`sweep`), the janitor (`janitor`), journal records and names
//! (`records`) and the errors (`errors`); [`cost`] estimates what a run's machines cost. All of
//! them reach EC2 through [`qa_cloud::aws`] (configuration and clients, error classes, tags,
//! pages, regions, the caller-address lookup and the SSH probe), so nothing EC2-specific is
//! written both here and in `qa_capacity::aws`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_ec2::types::InstanceStateName;
use qa_cloud::aws::{AWS as AWS_BACKEND, AwsMachine, Ec2Config, regions};
use qa_core::BackendName;
use qa_core::backend::SweepScope;
use qa_core::journal::ResourceLedger;
use qa_core::types::Resource;
use qa_core::{Leftovers, Machine, MachineRequest, Provisioner, RunContext, TestId};

pub mod cost;
mod errors;
mod janitor;
mod launch;
mod ready;
mod records;
mod shared;
mod sweep;
mod teardown;

use errors::{PResult, api_error, err, with_leftovers};
use launch::{LaunchFailure, LaunchRequest};

pub use janitor::ExpiredResource;
/// The SDK configuration [`AwsProvisioner::from_sdk_config`] takes.
pub use qa_cloud::aws::config::SdkConfig;
/// The tag that carries an instance's client token (on the instance and its volumes).
pub use qa_cloud::aws::tags::CLIENT_TOKEN as CLIENT_TOKEN_TAG;
/// The tag that says until when a resource may live.
pub use qa_cloud::aws::tags::KEEP_UNTIL as KEEP_UNTIL_TAG;
/// The tag that carries the test id on every resource.
pub use qa_cloud::aws::tags::TEST_ID as TEST_ID_TAG;

/// Options of [`AwsProvisioner`] that do not come from the plan.
#[derive(Debug, Clone)]
pub struct AwsProvisionerOptions {
    /// Region used when a machine's spec names none (default: the AWS configuration's).
    pub region: Option<String>,
    /// Endpoint override, e.g. an emulator on a loopback port.
    pub endpoint_url: Option<String>,
    /// CIDR admitted to SSH when the plan gives none (default: the caller's address, `/32`).
    pub ssh_cidr: Option<String>,
    /// Where the caller's public address is asked for when no CIDR is configured
    /// (`http://` only; the answer is the address as text).
    pub caller_address_url: String,
    /// Machine name (or `*` for every machine) → address to reach its SSH port at, instead of the
    /// instance's address. For tests that map instances onto a local sshd.
    pub address_overrides: BTreeMap<String, SocketAddr>,
    /// How often instance state is polled.
    pub poll_interval: Duration,
    /// How long to wait for an instance to be running, or terminated.
    pub state_timeout: Duration,
    /// Items per page asked of listing calls that page (`MaxResults`; EC2 allows 5 to 1000).
    pub page_size: i32,
    /// What cost estimates are priced from (default: [`cost::PriceTable::builtin`]).
    pub prices: cost::PriceTable,
}

impl Default for AwsProvisionerOptions {
    fn default() -> Self {
        AwsProvisionerOptions {
            region: None,
            endpoint_url: None,
            ssh_cidr: None,
            caller_address_url: "http://checkip.amazonaws.com/".into(),
            address_overrides: BTreeMap::new(),
            poll_interval: Duration::from_secs(5),
            state_timeout: Duration::from_secs(600),
            page_size: 1000,
            prices: cost::PriceTable::builtin(),
        }
    }
}

/// EC2 machines.
#[derive(Debug)]
pub struct AwsProvisioner {
    ec2: Ec2Config,
    options: AwsProvisionerOptions,
    // Serialises the making of per-run resources (key pair, security group, placement group)
    // so that machines created at once share them.
    shared: tokio::sync::Mutex<()>,
    caller_cidr: tokio::sync::OnceCell<String>,
}

impl AwsProvisioner {
    /// Loads credentials and region the usual AWS way (environment, profile, instance role).
    pub async fn from_env(options: AwsProvisionerOptions) -> PResult<Self> {
        let ec2 = Ec2Config::from_env(options.region.as_deref(), options.endpoint_url.as_deref())
            .await
            .map_err(|e| err(None, e.to_string(), Leftovers::Clear))?;
        Ok(Self::with_config(ec2, options))
    }

    /// Uses an SDK configuration the caller built (credentials, region, endpoint).
    pub fn from_sdk_config(sdk: &SdkConfig, options: AwsProvisionerOptions) -> PResult<Self> {
        let ec2 = Ec2Config::from_sdk_config(sdk, options.region.as_deref())
            .map_err(|e| err(None, e.to_string(), Leftovers::Clear))?;
        Ok(Self::with_config(ec2, options))
    }

    fn with_config(ec2: Ec2Config, options: AwsProvisionerOptions) -> Self {
        AwsProvisioner {
            ec2,
            options,
            shared: tokio::sync::Mutex::new(()),
            caller_cidr: tokio::sync::OnceCell::new(),
        }
    }

    /// The default region.
    pub fn region(&self) -> &str {
        self.ec2.region()
    }

    /// The same provisioner (credentials, endpoint, options), working in `region`.
    pub fn in_region(&self, region: &str) -> AwsProvisioner {
        Self::with_config(self.ec2.in_region(region), self.options.clone())
    }

    /// The regions enabled for the account (DescribeRegions).
    pub async fn regions(&self) -> PResult<Vec<String>> {
        regions::enabled(&self.ec2.client())
            .await
            .map_err(|e| api_error(None, "DescribeRegions", e, Leftovers::Unknown))
    }
}

/// A failed launch as the error `create` returns: with the run's shared resources among its
/// leftovers, and marked as a lack of capacity when EC2 had none (a machine with a `fallback`
/// then moves on).
fn capacity_marked(
    f: LaunchFailure,
    shared: &[qa_core::types::ResourceKey],
) -> qa_core::ProvisionError {
    let e = with_leftovers(f.error, shared);
    if f.no_capacity {
        e.out_of_capacity()
    } else {
        e
    }
}

#[async_trait]
impl Provisioner for AwsProvisioner {
    fn backend(&self) -> BackendName {
        AWS_BACKEND
    }

    fn estimate_cost(
        &self,
        resources: &[Resource],
        end_unix: i64,
    ) -> Option<qa_core::report::CostEstimate> {
        Some(cost::estimate(resources, end_unix, &self.options.prices).to_report())
    }

    async fn create(
        &self,
        request: &MachineRequest,
        run: &RunContext,
        ledger: &dyn ResourceLedger,
    ) -> PResult<Machine> {
        let name = request.name.as_str();
        let spec = match AwsMachine::of(&request.spec) {
            Some(Ok(spec)) => spec,
            Some(Err(e)) => {
                return Err(err(
                    Some(name),
                    format!("the machine's aws section does not read: {e}"),
                    Leftovers::Clear,
                ));
            }
            None => {
                return Err(err(
                    Some(name),
                    "the machine has no aws section",
                    Leftovers::Clear,
                ));
            }
        };
        let spec = &spec;
        let region = spec.region.as_deref().unwrap_or(self.region());
        let client = self.ec2.client_in(region);
        let shared = self
            .run_shared(&client, region, spec, request, run, ledger)
            .await?;

        let launch = LaunchRequest {
            client: &client,
            region,
            request,
            spec,
            spot: spec.spot,
            shared: &shared,
            run,
            ledger,
        };
        let (instance_key, instance) = match launch.launch().await {
            Ok(l) => l,
            Err(LaunchFailure {
                error,
                no_capacity: true,
            }) if spec.spot && spec.spot_fallback => {
                tracing::info!(
                    machine = name,
                    "no spot capacity ({error}); launching on demand"
                );
                LaunchRequest {
                    spot: false,
                    ..launch
                }
                .launch()
                .await
                .map_err(|f| capacity_marked(f, &shared.keys))?
            }
            Err(f) => return Err(capacity_marked(f, &shared.keys)),
        };
        let instance_id = instance.instance_id().unwrap_or_default().to_string();
        let mut all_keys = shared.keys.clone();
        all_keys.push(instance_key.clone());

        let running = self
            .wait_state(
                &client,
                std::slice::from_ref(&instance_id),
                InstanceStateName::Running,
                Some(name),
            )
            .await
            .map_err(|e| with_leftovers(e, &all_keys))?;
        let instance = running.into_iter().next().unwrap_or(instance);
        let address = self.ssh_address(name, &instance).ok_or_else(|| {
            err(
                Some(name),
                format!("instance {instance_id} has no address"),
                Leftovers::Remaining(all_keys.clone()),
            )
        })?;
        Ok(launch.machine(&instance, address, all_keys))
    }

    async fn wait_ready(&self, machine: &Machine, deadline: Duration) -> PResult<()> {
        self.ssh_ready(machine, deadline).await
    }

    async fn destroy(&self, resources: &[Resource], ledger: &dyn ResourceLedger) -> PResult<()> {
        self.destroy_records(resources, ledger).await
    }

    async fn sweep(&self, test_id: &TestId, scope: SweepScope<'_>) -> PResult<Vec<String>> {
        self.sweep_scope(test_id, scope).await
    }
}
