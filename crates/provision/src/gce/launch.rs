//! Creating one instance: `instances.insert` with the run's key in its metadata, its boot disk
//! and extra disks, the run's network tag, Spot or Standard, consuming the reservation it was
//! given; zone after zone on a capacity error. The instance is journaled as an intent with its
//! name and `requestId` before the call, so a crash between the call and the answer leaves a
//! record teardown deletes it by.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use google_cloud_compute_v1::model::{
    AccessConfig, AttachedDisk, AttachedDiskInitializeParams, Instance, Metadata, NetworkInterface,
    ReservationAffinity, Scheduling, Tags, metadata,
};
use google_cloud_gax::options::RequestOptionsBuilder;
use qa_cloud::gce::labels::{resource_labels, resource_name};
use qa_cloud::gce::{
    DEFAULT_BOOT_DISK_GB, DEFAULT_DISK_TYPE, ErrorClass, GceError, GceMachine,
    RESERVATION_AFFINITY_KEY, config, finished, net, region_of_zone, zones,
};
use qa_core::journal::ResourceLedger;
use qa_core::plan::PlanDuration;
use qa_core::types::{Access, HostKeyPolicy, Resource, ResourceKey, SshTarget};
use qa_core::{Leftovers, Machine, MachineRequest, RunContext};

use super::firewall::RunShared;
use super::{GCE, GceProvisioner, KIND_INSTANCE, PResult, api_error, err};

/// One attempt at making the instance.
struct Attempt<'a> {
    project: &'a str,
    zone: &'a str,
    spot: bool,
    reservation: Option<&'a str>,
}

/// An attempt that failed: what to say, and whether another zone (or Standard) may do.
struct Failed {
    error: qa_core::ProvisionError,
    class: ErrorClass,
}

fn now_unix() -> i64 {
    qa_cloud::cost::now_unix()
}

/// The instance's disks as the cost estimate reads them: `type:GB,…`, the boot disk first.
fn disks_detail(spec: &GceMachine) -> String {
    let boot = (
        spec.boot_disk_type
            .clone()
            .unwrap_or_else(|| DEFAULT_DISK_TYPE.into()),
        spec.boot_disk_gb.unwrap_or(DEFAULT_BOOT_DISK_GB),
    );
    std::iter::once(boot)
        .chain(spec.extra_disks())
        .map(|(t, gb)| format!("{t}:{gb}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The instance body.
fn instance_body(
    name: &str,
    spec: &GceMachine,
    attempt: &Attempt<'_>,
    shared: &RunShared,
    run: &RunContext,
) -> PResult<Instance> {
    let zone = attempt.zone;
    let Some(image) = spec.source_image() else {
        return Err(err(
            Some(name),
            "the machine's gce section names no image",
            Leftovers::Clear,
        ));
    };
    let disk_type = |t: &str| format!("zones/{zone}/diskTypes/{t}");
    let labels = resource_labels(&run.tags, &run.test_id.0, &[]);
    let boot = AttachedDisk::new()
        .set_boot(true)
        .set_auto_delete(true)
        .set_initialize_params(
            AttachedDiskInitializeParams::new()
                .set_source_image(image)
                .set_disk_size_gb(i64::from(spec.boot_disk_gb.unwrap_or(DEFAULT_BOOT_DISK_GB)))
                .set_disk_type(disk_type(
                    spec.boot_disk_type.as_deref().unwrap_or(DEFAULT_DISK_TYPE),
                ))
                .set_labels(labels.clone()),
        );
    let extra: Vec<AttachedDisk> = spec
        .extra_disks()
        .into_iter()
        .enumerate()
        .map(|(j, (t, gb))| {
            AttachedDisk::new()
                .set_auto_delete(true)
                .set_device_name(format!("data{j}"))
                .set_initialize_params(
                    AttachedDiskInitializeParams::new()
                        .set_disk_size_gb(i64::from(gb))
                        .set_disk_type(disk_type(&t))
                        .set_labels(labels.clone()),
                )
        })
        .collect();
    let mut nic = NetworkInterface::new()
        .set_network(super::firewall::network_path(
            attempt.project,
            spec.network.as_deref(),
        ))
        .set_access_configs([AccessConfig::new()
            .set_name("External NAT")
            .set_type("ONE_TO_ONE_NAT")]);
    if let Some(s) = &spec.subnetwork {
        let region = region_of_zone(zone).unwrap_or_default();
        nic = nic.set_subnetwork(if s.contains('/') {
            s.clone()
        } else {
            format!(
                "projects/{}/regions/{region}/subnetworks/{s}",
                attempt.project
            )
        });
    }
    let scheduling = if attempt.spot {
        Scheduling::new()
            .set_provisioning_model("SPOT")
            .set_instance_termination_action("DELETE")
            .set_automatic_restart(false)
            .set_on_host_maintenance("TERMINATE")
    } else {
        Scheduling::new().set_provisioning_model("STANDARD")
    };
    let affinity = match attempt.reservation {
        Some(r) => ReservationAffinity::new()
            .set_consume_reservation_type("SPECIFIC_RESERVATION")
            .set_key(RESERVATION_AFFINITY_KEY)
            .set_values([r.to_string()]),
        // Never someone else's reservation by accident.
        None => ReservationAffinity::new().set_consume_reservation_type("NO_RESERVATION"),
    };
    Ok(Instance::new()
        .set_name(name)
        .set_machine_type(format!("zones/{zone}/machineTypes/{}", spec.machine_type))
        .set_labels(labels)
        .set_disks(std::iter::once(boot).chain(extra))
        .set_network_interfaces([nic])
        .set_metadata(
            Metadata::new().set_items([metadata::Items::new()
                .set_key("ssh-keys")
                .set_value(format!("{}:{}", spec.user(), shared.key.public_line))]),
        )
        .set_tags(Tags::new().set_items([shared.network_tag.clone()]))
        .set_scheduling(scheduling)
        .set_reservation_affinity(affinity))
}

impl GceProvisioner {
    /// [`Provisioner::create`](qa_core::Provisioner::create).
    pub(super) async fn create_machine(
        &self,
        request: &MachineRequest,
        spec: &GceMachine,
        run: &RunContext,
        ledger: &dyn ResourceLedger,
    ) -> PResult<Machine> {
        let machine = request.name.as_str();
        let project = self.project(spec.project.as_deref(), Some(machine))?;
        let clients = self.clients().await?;
        let shared = self
            .run_shared(&project, spec, machine, run, ledger)
            .await?;
        let placement = request.placement.as_ref();
        let reservation = placement.and_then(|p| p.reservations.get(&spec.machine_type));
        let candidates: Vec<String> = match placement {
            Some(p) => vec![p.zone.clone()],
            None if !spec.zones.is_empty() => spec.zones.clone(),
            None => {
                let region = spec.region().unwrap_or_default();
                zones::zones_offering(
                    clients,
                    &project,
                    &region,
                    std::slice::from_ref(&spec.machine_type),
                )
                .await
                .map_err(|e| {
                    api_error(
                        Some(machine),
                        "zones.list",
                        e,
                        Leftovers::Remaining(shared.keys.clone()),
                    )
                })?
            }
        };
        let name = resource_name(&["qa", &run.run_id.0, machine]);
        let mut tried: Vec<String> = Vec::new();
        let mut last: Option<Failed> = None;
        for zone in &candidates {
            let mut attempt = Attempt {
                project: &project,
                zone,
                spot: spec.spot,
                reservation: reservation.map(String::as_str),
            };
            let mut outcome = self
                .attempt(&name, request, spec, &attempt, &shared, run, ledger)
                .await;
            if let Err(f) = &outcome
                && f.class == ErrorClass::Capacity
                && spec.spot
                && spec.spot_fallback
            {
                tracing::info!(
                    machine,
                    zone,
                    "no Spot capacity ({}); making a Standard VM",
                    f.error
                );
                tried.push(format!("{zone} (spot)"));
                attempt.spot = false;
                outcome = self
                    .attempt(&name, request, spec, &attempt, &shared, run, ledger)
                    .await;
            }
            match outcome {
                Ok(m) => return Ok(m),
                Err(f) if f.class == ErrorClass::Capacity => {
                    tried.push(zone.clone());
                    last = Some(f);
                }
                Err(f) => return Err(with_shared(f.error, &shared)),
            }
        }
        let why = last.map_or_else(
            || "no zone to try (`zones` is empty and the region offers none)".to_string(),
            |f| f.error.message,
        );
        Err(err(
            Some(machine),
            format!(
                "no capacity in any zone tried ({}): {why}",
                tried.join(", ")
            ),
            Leftovers::Remaining(shared.keys.clone()),
        )
        .out_of_capacity())
    }

    /// One `instances.insert`, waited for until the instance runs.
    #[allow(clippy::too_many_arguments)]
    async fn attempt(
        &self,
        name: &str,
        request: &MachineRequest,
        spec: &GceMachine,
        attempt: &Attempt<'_>,
        shared: &RunShared,
        run: &RunContext,
        ledger: &dyn ResourceLedger,
    ) -> Result<Machine, Failed> {
        let machine = request.name.as_str();
        let clients = self.clients().await.map_err(|error| Failed {
            error,
            class: ErrorClass::Other,
        })?;
        let Attempt { project, zone, .. } = *attempt;
        let request_id = config::request_id();
        let key = ResourceKey(format!("gce/{KIND_INSTANCE}/{zone}/{name}/{request_id}"));
        let lifecycle = if attempt.spot { "spot" } else { "on-demand" };
        let mut details: BTreeMap<String, String> = [
            ("project", project),
            ("zone", zone),
            ("name", name),
            ("instance-type", spec.machine_type.as_str()),
            ("lifecycle", lifecycle),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        if let Some(r) = attempt.reservation {
            details.insert("reservation".into(), r.to_string());
        }
        let body = instance_body(name, spec, attempt, shared, run).map_err(|error| Failed {
            error,
            class: ErrorClass::InvalidRequest,
        })?;
        let mut intent = Resource::new(key.clone(), GCE, KIND_INSTANCE);
        intent.machine = Some(machine.to_string());
        intent.client_token = Some(request_id.clone());
        intent.details = details;
        ledger.intent(intent).await.map_err(|e| Failed {
            error: err(
                Some(machine),
                format!("journal: {e}; instance not created"),
                Leftovers::Clear,
            ),
            class: ErrorClass::Other,
        })?;
        let launched_at = now_unix();
        let sent = clients
            .instances
            .insert()
            .set_project(project)
            .set_zone(zone)
            .set_request_id(request_id)
            .set_body(body)
            .with_idempotency(true)
            .send()
            .await;
        let done = finished(sent, self.wait(), |op| {
            clients
                .instances
                .get_operation()
                .set_project(project)
                .set_zone(zone)
                .set_operation(op)
                .send()
        })
        .await;
        if let Err(e) = done {
            let class = e.class;
            // A refused insert, or an operation that ended in an error, made no instance.
            let left = if e.answered {
                let _ = ledger.destroyed(&key).await;
                Leftovers::Clear
            } else {
                Leftovers::Remaining(vec![key.clone()])
            };
            return Err(Failed {
                error: api_error(
                    Some(machine),
                    &format!("instances.insert in {zone}"),
                    e,
                    left,
                ),
                class,
            });
        }
        let mut created = BTreeMap::new();
        created.insert("launched-at".to_string(), launched_at.to_string());
        created.insert("volumes".to_string(), disks_detail(spec));
        if let Err(e) = ledger.created(&key, name, created).await {
            tracing::warn!(%key, "journal: {e}");
        }
        let keys: Vec<ResourceKey> = shared.keys.iter().cloned().chain([key.clone()]).collect();
        let instance = self
            .wait_running(project, zone, name, machine)
            .await
            .map_err(|error| Failed {
                error: with_keys(error, &keys),
                class: ErrorClass::Other,
            })?;
        let (host, port) = self.ssh_address(machine, &instance).ok_or_else(|| Failed {
            error: err(
                Some(machine),
                format!("instance {name} has no address"),
                Leftovers::Remaining(keys.clone()),
            ),
            class: ErrorClass::Other,
        })?;
        let mut facts = BTreeMap::new();
        facts.insert("project".to_string(), project.to_string());
        facts.insert("zone".to_string(), zone.to_string());
        facts.insert("instance-name".to_string(), name.to_string());
        facts.insert("machine-type".to_string(), spec.machine_type.clone());
        facts.insert("lifecycle".to_string(), lifecycle.to_string());
        facts.insert("address".to_string(), host.clone());
        if let Some(r) = attempt.reservation {
            facts.insert("reservation".to_string(), r.to_string());
        }
        let nic = instance.network_interfaces.first();
        if let Some(ip) = nic.and_then(|n| n.network_ip.clone()) {
            facts.insert("private-ip".to_string(), ip);
        }
        if let Some(ip) = nic
            .and_then(|n| n.access_configs.first())
            .and_then(|a| a.nat_ip.clone())
        {
            facts.insert("public-ip".to_string(), ip);
        }
        let user = spec.user().to_string();
        let target = SshTarget::new(host, port, user.clone())
            .identity_file(shared.key.private_key.clone())
            .host_keys(HostKeyPolicy::TrustFirstUse {
                known_hosts: run.run_dir.join("known_hosts"),
            });
        let mut m = Machine::new(
            machine.to_string(),
            GCE,
            Access::Ssh(target),
            qa_cloud::remote_workdir(&user, &run.run_id.0, machine),
        )
        .in_role(request.role.clone());
        m.resources = keys;
        m.facts = facts;
        Ok(m)
    }

    /// Polls the instance until it is RUNNING.
    async fn wait_running(
        &self,
        project: &str,
        zone: &str,
        name: &str,
        machine: &str,
    ) -> PResult<Instance> {
        let clients = self.clients().await?;
        let until = Instant::now() + self.options.state_timeout;
        loop {
            let got = clients
                .instances
                .get()
                .set_project(project)
                .set_zone(zone)
                .set_instance(name)
                .send()
                .await
                .map_err(|e| GceError::of_call(&e));
            let status = match &got {
                Ok(i) => i
                    .status
                    .as_ref()
                    .and_then(|s| s.name())
                    .unwrap_or("?")
                    .to_string(),
                Err(e) if e.class == ErrorClass::Transient => format!("unanswered ({e})"),
                Err(_) => String::new(),
            };
            match got {
                Ok(i) if status == "RUNNING" => return Ok(i),
                Ok(_) if matches!(status.as_str(), "TERMINATED" | "STOPPED" | "SUSPENDED") => {
                    return Err(err(
                        Some(machine),
                        format!("instance {name} in {zone} is {status}, not running"),
                        Leftovers::Unknown,
                    ));
                }
                Err(e) if e.class != ErrorClass::Transient => {
                    return Err(api_error(
                        Some(machine),
                        "instances.get",
                        e,
                        Leftovers::Unknown,
                    ));
                }
                _ if Instant::now() >= until => {
                    return Err(err(
                        Some(machine),
                        format!(
                            "instance {name} in {zone} is {status} after {}",
                            PlanDuration(self.options.state_timeout)
                        ),
                        Leftovers::Unknown,
                    ));
                }
                _ => tokio::time::sleep(self.options.poll_interval).await,
            }
        }
    }

    /// Where SSH is reached: the override for the machine (or `*`), else the external address,
    /// else the internal one, on port 22.
    fn ssh_address(&self, machine: &str, instance: &Instance) -> Option<(String, u16)> {
        if let Some(a) = self
            .options
            .address_overrides
            .get(machine)
            .or_else(|| self.options.address_overrides.get("*"))
        {
            return Some((a.ip().to_string(), a.port()));
        }
        let nic = instance.network_interfaces.first()?;
        nic.access_configs
            .iter()
            .find_map(|a| a.nat_ip.clone())
            .or_else(|| nic.network_ip.clone())
            .map(|ip| (ip, 22))
    }

    /// [`Provisioner::wait_ready`](qa_core::Provisioner::wait_ready): the instance still runs
    /// (a Spot VM can be taken back meanwhile), then SSH answers within `deadline`.
    pub(super) async fn ssh_ready(&self, machine: &Machine, deadline: Duration) -> PResult<()> {
        let name = machine.name.as_str();
        let Access::Ssh(target) = &machine.access else {
            return Err(err(
                Some(name),
                "a GCE machine without SSH access",
                Leftovers::Unknown,
            ));
        };
        let fact = |k: &str| {
            machine.facts.get(k).cloned().ok_or_else(|| {
                err(
                    Some(name),
                    format!("machine has no {k} fact"),
                    Leftovers::Unknown,
                )
            })
        };
        let (project, zone, instance) = (fact("project")?, fact("zone")?, fact("instance-name")?);
        let until = Instant::now() + deadline;
        let clients = self.clients().await?;
        let got = clients
            .instances
            .get()
            .set_project(&project)
            .set_zone(&zone)
            .set_instance(&instance)
            .send()
            .await
            .map_err(|e| GceError::of_call(&e));
        match got {
            Ok(i) if i.status.as_ref().and_then(|s| s.name()) == Some("RUNNING") => {}
            Ok(i) => {
                return Err(err(
                    Some(name),
                    format!(
                        "instance {instance} is {}, not running",
                        i.status.as_ref().and_then(|s| s.name()).unwrap_or("?")
                    ),
                    Leftovers::Unknown,
                ));
            }
            Err(e) if e.is_not_found() => {
                return Err(err(
                    Some(name),
                    format!("instance {instance} is gone (a Spot VM taken back?)"),
                    Leftovers::Unknown,
                ));
            }
            Err(e) => {
                return Err(api_error(
                    Some(name),
                    "instances.get",
                    e,
                    Leftovers::Unknown,
                ));
            }
        }
        net::wait_for_ssh(
            &target.host,
            target.port,
            until,
            self.options.poll_interval.min(Duration::from_secs(2)),
        )
        .await
        .map_err(|e| {
            err(
                Some(name),
                format!(
                    "SSH on {}:{} not ready after {}: {e}",
                    target.host,
                    target.port,
                    PlanDuration(deadline)
                ),
                Leftovers::Unknown,
            )
        })
    }
}

/// `e` with the run's shared resources among its leftovers.
fn with_shared(e: qa_core::ProvisionError, shared: &RunShared) -> qa_core::ProvisionError {
    with_keys(e, &shared.keys)
}

fn with_keys(mut e: qa_core::ProvisionError, keys: &[ResourceKey]) -> qa_core::ProvisionError {
    e.leftovers = match e.leftovers {
        Leftovers::Clear | Leftovers::Remaining(_) => {
            let mut all = keys.to_vec();
            if let Leftovers::Remaining(more) = &e.leftovers {
                for k in more {
                    if !all.contains(k) {
                        all.push(k.clone());
                    }
                }
            }
            Leftovers::Remaining(all)
        }
        other => other,
    };
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_disk_detail_has_the_boot_disk_then_every_extra_disk() {
        let spec: GceMachine = serde_json::from_value(serde_json::json!({
            "machine-type": "n2-standard-2",
            "zones": ["us-central1-a"],
            "image-family": "debian-cloud/debian-12",
            "disks": [{"size-gb": 20, "count": 2}, {"type": "pd-ssd", "size-gb": 5}]
        }))
        .unwrap();
        assert_eq!(
            disks_detail(&spec),
            "pd-balanced:20,pd-balanced:20,pd-balanced:20,pd-ssd:5"
        );
    }
}
