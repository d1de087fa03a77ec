//! From a launched instance to a machine qa-run can use: waiting for an instance state, the
//! address its SSH port is reached at, the [`Machine`] with its facts, and readiness (the
//! instance still running and an SSH server answering).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use aws_sdk_ec2::Client;
use aws_sdk_ec2::types::{Instance, InstanceStateName};
use qa_cloud::aws::errors::{ErrorClass, classify};
use qa_cloud::aws::net;
use qa_core::plan::PlanDuration;
use qa_core::types::{Access, HostKeyPolicy, ResourceKey, SshTarget};
use qa_core::{Leftovers, Machine};

use super::errors::{PResult, api_error, err};
use super::launch::LaunchRequest;
use super::{AWS_BACKEND, AwsProvisioner};

impl AwsProvisioner {
    /// Polls until every one of `ids` is in state `want`, quickly at first; gone instances count
    /// as terminated. An instance that ends while starting is an error at once.
    pub(super) async fn wait_state(
        &self,
        client: &Client,
        ids: &[String],
        want: InstanceStateName,
        machine: Option<&str>,
    ) -> PResult<Vec<Instance>> {
        let deadline = Instant::now() + self.options.state_timeout;
        // Quick looks first (a small instance is often running within seconds), then every
        // poll interval.
        let mut pause = self.options.poll_interval.min(Duration::from_millis(250));
        loop {
            let out = client
                .describe_instances()
                .set_instance_ids(Some(ids.to_vec()))
                .send()
                .await;
            let instances: Vec<_> = match out {
                Ok(o) => o
                    .reservations()
                    .iter()
                    .flat_map(|r| r.instances().iter().cloned())
                    .collect(),
                Err(e)
                    if classify(&e) == ErrorClass::NotFound
                        && want == InstanceStateName::Terminated =>
                {
                    return Ok(Vec::new());
                }
                Err(e) => {
                    return Err(api_error(
                        machine,
                        "DescribeInstances",
                        e,
                        Leftovers::Unknown,
                    ));
                }
            };
            let states: Vec<InstanceStateName> = instances
                .iter()
                .map(|i| {
                    i.state()
                        .and_then(|s| s.name())
                        .cloned()
                        .unwrap_or(InstanceStateName::Pending)
                })
                .collect();
            if states.iter().all(|s| *s == want) {
                return Ok(instances);
            }
            if want == InstanceStateName::Running
                && states.iter().any(|s| {
                    matches!(
                        s,
                        InstanceStateName::Terminated | InstanceStateName::ShuttingDown
                    )
                })
            {
                return Err(err(
                    machine,
                    format!(
                        "instance(s) {} ended while starting ({})",
                        ids.join(", "),
                        state_names(&states)
                    ),
                    Leftovers::Unknown,
                ));
            }
            if Instant::now() >= deadline {
                return Err(err(
                    machine,
                    format!(
                        "instance(s) {} not {} after {} (now {})",
                        ids.join(", "),
                        want.as_str(),
                        PlanDuration(self.options.state_timeout),
                        state_names(&states)
                    ),
                    Leftovers::Unknown,
                ));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(self.options.poll_interval);
        }
    }

    /// Where `machine`'s SSH port is reached: an address override, else the instance's public
    /// or private address on port 22.
    pub(super) fn ssh_address(&self, machine: &str, instance: &Instance) -> Option<(String, u16)> {
        if let Some(a) = self
            .options
            .address_overrides
            .get(machine)
            .or_else(|| self.options.address_overrides.get("*"))
        {
            return Some((a.ip().to_string(), a.port()));
        }
        instance
            .public_ip_address()
            .or(instance.private_ip_address())
            .map(|ip| (ip.to_string(), 22))
    }

    /// [`Provisioner::wait_ready`](qa_core::Provisioner::wait_ready): the instance is still
    /// running (a spot instance can be taken back meanwhile), then SSH answers within
    /// `deadline`.
    pub(super) async fn ssh_ready(&self, machine: &Machine, deadline: Duration) -> PResult<()> {
        let name = machine.name.as_str();
        let Access::Ssh(target) = &machine.access else {
            return Err(err(
                Some(name),
                "an EC2 machine without SSH access",
                Leftovers::Unknown,
            ));
        };
        let region = machine
            .facts
            .get("region")
            .cloned()
            .unwrap_or_else(|| self.region().to_string());
        let instance_id = machine.facts.get("instance-id").ok_or_else(|| {
            err(
                Some(name),
                "machine has no instance-id fact",
                Leftovers::Unknown,
            )
        })?;
        let client = self.ec2.client_in(&region);
        let until = Instant::now() + deadline;
        let out = client
            .describe_instances()
            .instance_ids(instance_id)
            .send()
            .await
            .map_err(|e| api_error(Some(name), "DescribeInstances", e, Leftovers::Unknown))?;
        let state = out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .find(|i| i.instance_id() == Some(instance_id.as_str()))
            .and_then(|i| i.state().and_then(|s| s.name()).cloned());
        if state != Some(InstanceStateName::Running) {
            return Err(err(
                Some(name),
                format!(
                    "instance {instance_id} is {}, not running",
                    state.as_ref().map_or("gone", |s| s.as_str())
                ),
                Leftovers::Unknown,
            ));
        }
        loop {
            match net::ssh_banner(&target.host, target.port).await {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() >= until => {
                    return Err(err(
                        Some(name),
                        format!(
                            "SSH on {}:{} not ready after {}: {e}",
                            target.host,
                            target.port,
                            PlanDuration(deadline)
                        ),
                        Leftovers::Unknown,
                    ));
                }
                Err(_) => {
                    tokio::time::sleep(self.options.poll_interval.min(Duration::from_secs(2))).await
                }
            }
        }
    }
}

impl LaunchRequest<'_> {
    /// The machine the running `instance` this request launched is, reached over SSH at
    /// `host:port` with the run's key; `resources` are the journal keys it holds.
    pub(super) fn machine(
        &self,
        instance: &Instance,
        (host, port): (String, u16),
        resources: Vec<ResourceKey>,
    ) -> Machine {
        let LaunchRequest {
            request,
            spec,
            region,
            shared,
            run,
            ..
        } = *self;
        let mut facts = BTreeMap::new();
        facts.insert("region".to_string(), region.to_string());
        let instance_id = instance.instance_id().unwrap_or_default();
        facts.insert("instance-id".to_string(), instance_id.to_string());
        facts.insert("instance-type".to_string(), spec.instance_type.clone());
        facts.insert("address".to_string(), host.clone());
        if let Some(z) = instance.placement().and_then(|p| p.availability_zone()) {
            facts.insert("zone".to_string(), z.to_string());
        }
        let lifecycle = instance
            .instance_lifecycle()
            .map(|l| l.as_str().to_string())
            .unwrap_or_else(|| "on-demand".into());
        facts.insert("lifecycle".to_string(), lifecycle);
        if let Some(cr) = request
            .placement
            .as_ref()
            .and_then(|p| p.reservations.get(&spec.instance_type))
        {
            facts.insert("capacity-reservation".to_string(), cr.clone());
        }
        if let Some(ip) = instance.public_ip_address() {
            facts.insert("public-ip".to_string(), ip.to_string());
        }
        if let Some(ip) = instance.private_ip_address() {
            facts.insert("private-ip".to_string(), ip.to_string());
        }
        let user = spec.ssh_user.clone().unwrap_or_else(|| "ec2-user".into());
        let target = SshTarget::new(host, port, user.clone())
            .identity_file(shared.key_path.clone())
            .host_keys(HostKeyPolicy::TrustFirstUse {
                known_hosts: run.run_dir.join("known_hosts"),
            });
        let mut machine = Machine::new(
            request.name.clone(),
            AWS_BACKEND,
            Access::Ssh(target),
            qa_cloud::remote_workdir(&user, &run.run_id.0, &request.name),
        )
        .in_role(request.role.clone());
        machine.resources = resources;
        machine.facts = facts;
        machine
    }
}

/// Instance states as the EC2 API names them: `pending, running`.
fn state_names(states: &[InstanceStateName]) -> String {
    states
        .iter()
        .map(InstanceStateName::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}
