//! What the machines of one run share: the run's SSH key and, per project and network, one
//! firewall rule admitting SSH from one CIDR to the instances that carry the run's network tag.
//! The rule's name comes from the run id, so a retried or resumed create finds it instead of
//! making another; firewall rules take no labels, so its description carries the test id and
//! the keep-until time.

use google_cloud_gax::options::RequestOptionsBuilder;
use qa_cloud::gce::labels::{KEEP_UNTIL, TEST_ID, resource_name};
use qa_cloud::gce::{GceMachine, config, finished, net};
use qa_cloud::sshkey::{RunKey, run_key};
use qa_core::journal::ResourceLedger;
use qa_core::types::{Resource, ResourceKey, ResourceState};
use qa_core::{Leftovers, RunContext};

use google_cloud_compute_v1::model::{Firewall, firewall};

use super::{GCE, GceProvisioner, KIND_FIREWALL, PResult, api_error, err};

/// The file of the run's private key in the run directory (the public key is beside it).
pub const KEY_FILE: &str = "gce-ssh-key";

/// What the machines of one run share in one network.
pub(super) struct RunShared {
    /// The firewall rule's journal key.
    pub(super) keys: Vec<ResourceKey>,
    /// The run's key.
    pub(super) key: RunKey,
    /// The network tag that puts an instance under the rule.
    pub(super) network_tag: String,
}

/// The network as the API takes it.
pub(super) fn network_path(project: &str, network: Option<&str>) -> String {
    match network {
        Some(n) if n.contains('/') => n.to_string(),
        Some(n) => format!("projects/{project}/global/networks/{n}"),
        None => format!("projects/{project}/global/networks/default"),
    }
}

/// The description of a firewall rule made for a run.
pub(super) fn firewall_description(test_id: &str, keep_until: Option<&str>) -> String {
    match keep_until {
        Some(k) => format!("made by qa-run; {TEST_ID}={test_id}; {KEEP_UNTIL}={k}"),
        None => format!("made by qa-run; {TEST_ID}={test_id}"),
    }
}

/// The test id and keep-until a firewall rule's description carries, if qa-run made it.
pub(super) fn firewall_owner(description: Option<&str>) -> Option<(String, Option<String>)> {
    let rest = description?.strip_prefix("made by qa-run; ")?;
    let mut test_id = None;
    let mut keep_until = None;
    for part in rest.split("; ") {
        if let Some(v) = part.strip_prefix(&format!("{TEST_ID}=")) {
            test_id = Some(v.to_string());
        } else if let Some(v) = part.strip_prefix(&format!("{KEEP_UNTIL}=")) {
            keep_until = Some(v.to_string());
        }
    }
    Some((test_id?, keep_until))
}

impl GceProvisioner {
    async fn ssh_cidr(&self, spec: &GceMachine, machine: &str) -> PResult<String> {
        if let Some(c) = spec.ssh_cidr.as_ref().or(self.options.ssh_cidr.as_ref()) {
            return Ok(c.clone());
        }
        self.caller_cidr
            .get_or_try_init(|| async {
                net::caller_address(&self.options.caller_address_url)
                    .await
                    .map(|ip| {
                        if ip.contains(':') {
                            format!("{ip}/128")
                        } else {
                            format!("{ip}/32")
                        }
                    })
                    .map_err(|e| {
                        err(
                            Some(machine),
                            format!(
                                "cannot learn this host's public address from {} to admit it to SSH: {e}; set `ssh-cidr` in the machine's gce options",
                                self.options.caller_address_url
                            ),
                            Leftovers::Clear,
                        )
                    })
            })
            .await
            .cloned()
    }

    /// The run's key and its firewall rule in `spec`'s network, made when missing. Machines
    /// created at once wait for each other here so they share them.
    pub(super) async fn run_shared(
        &self,
        project: &str,
        spec: &GceMachine,
        machine: &str,
        run: &RunContext,
        ledger: &dyn ResourceLedger,
    ) -> PResult<RunShared> {
        let _guard = self.shared.lock().await;
        let key =
            run_key(&run.run_dir, KEY_FILE, &format!("qa-run-{}", run.run_id.0)).map_err(|e| {
                err(
                    Some(machine),
                    format!(
                        "cannot write the run's SSH key in {}: {e}",
                        run.run_dir.display()
                    ),
                    Leftovers::Clear,
                )
            })?;
        let network = network_path(project, spec.network.as_deref());
        let network_tag = resource_name(&["qa", &run.run_id.0]);
        let name = resource_name(&[
            "qa",
            &run.run_id.0,
            spec.network.as_deref().unwrap_or("default"),
            "ssh",
        ]);
        let existing = ledger.resources().into_iter().find(|r| {
            r.backend == GCE
                && r.kind == KIND_FIREWALL
                && r.state == ResourceState::Created
                && r.details.get("project").map(String::as_str) == Some(project)
                && r.details.get("name") == Some(&name)
        });
        if let Some(r) = existing {
            return Ok(RunShared {
                keys: vec![r.key],
                key,
                network_tag,
            });
        }
        let cidr = self.ssh_cidr(spec, machine).await?;
        let clients = self.clients().await?;
        let request_id = config::request_id();
        // The request id makes the key unique: a rule of this name may be in the journal from an
        // earlier attempt (refused, or removed before a resume).
        let rkey = ResourceKey(format!("gce/{KIND_FIREWALL}/{project}/{name}/{request_id}"));
        let mut intent = Resource::new(rkey.clone(), GCE, KIND_FIREWALL);
        intent.client_token = Some(request_id.clone());
        intent.details = [
            ("project", project),
            ("name", name.as_str()),
            ("network", network.as_str()),
            ("source", cidr.as_str()),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        ledger.intent(intent).await.map_err(|e| {
            err(
                Some(machine),
                format!("journal: {e}; firewall rule not created"),
                Leftovers::Clear,
            )
        })?;
        let rule = Firewall::new()
            .set_name(name.clone())
            .set_description(firewall_description(
                &run.test_id.0,
                run.tags.get(KEEP_UNTIL).map(String::as_str),
            ))
            .set_network(network.clone())
            .set_direction(firewall::Direction::from("INGRESS"))
            .set_allowed([firewall::Allowed::new()
                .set_ip_protocol("tcp")
                .set_ports(["22"])])
            .set_source_ranges([cidr.clone()])
            .set_target_tags([network_tag.clone()]);
        let sent = clients
            .firewalls
            .insert()
            .set_project(project)
            .set_request_id(request_id)
            .set_body(rule)
            .with_idempotency(true)
            .send()
            .await;
        let done = finished(sent, self.wait(), |op| {
            clients
                .firewalls
                .get_operation()
                .set_project(project)
                .set_operation(op)
                .send()
        })
        .await;
        match done {
            Ok(_) => {}
            // Made by an earlier attempt of this run whose answer was lost.
            Err(e) if e.is_already_there() => {}
            Err(e) => {
                let left = if e.answered {
                    let _ = ledger.destroyed(&rkey).await;
                    Leftovers::Clear
                } else {
                    Leftovers::Remaining(vec![rkey.clone()])
                };
                return Err(api_error(Some(machine), "firewalls.insert", e, left));
            }
        }
        let mut details = std::collections::BTreeMap::new();
        details.insert("name".to_string(), name.clone());
        if let Err(e) = ledger.created(&rkey, &name, details).await {
            tracing::warn!(key = %rkey, "journal: {e}");
        }
        Ok(RunShared {
            keys: vec![rkey],
            key,
            network_tag,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_description_says_whose_rule_it_is() {
        let d = firewall_description("smoke-1", Some("2026-12-02T10:00:00Z"));
        assert_eq!(
            firewall_owner(Some(&d)),
            Some(("smoke-1".into(), Some("2026-12-02T10:00:00Z".into())))
        );
        assert_eq!(firewall_owner(Some("someone else's rule")), None);
        assert_eq!(
            network_path("p", None),
            "projects/p/global/networks/default"
        );
        assert_eq!(
            network_path("p", Some("vpc")),
            "projects/p/global/networks/vpc"
        );
    }
}
