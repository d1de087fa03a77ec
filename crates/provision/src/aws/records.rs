//! How the provisioner's EC2 resources are named and kept in the run's journal: their kinds,
//! the names EC2 accepts for key pairs and groups, and the intent-then-created records every
//! resource gets around the call that makes it.

use std::collections::BTreeMap;

use qa_core::journal::ResourceLedger;
use qa_core::types::{Resource, ResourceKey, ResourceState};

use super::AWS_BACKEND;
use super::errors::{PResult, err};
use qa_core::Leftovers;

/// Journal kind of an instance (with its volumes and spot request).
pub(super) use qa_cloud::cost::KIND_INSTANCE;
/// Journal kind of the run's key pair in a region.
pub(super) const KIND_KEY_PAIR: &str = "key-pair";
/// Journal kind of the run's security group in a region.
pub(super) const KIND_SECURITY_GROUP: &str = "security-group";
/// Journal kind of a machine spec's placement group.
pub(super) const KIND_PLACEMENT_GROUP: &str = "placement-group";

/// A name EC2 accepts for key pairs, security and placement groups (letters, digits, `-`).
pub(super) fn resource_name(parts: &[&str]) -> String {
    let raw = parts.join("-");
    let s: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    s.chars().take(200).collect()
}

/// A record's details from pairs.
pub(super) fn details(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A resource of this run already made, from the ledger.
pub(super) fn existing(
    ledger: &dyn ResourceLedger,
    kind: &str,
    region: &str,
    name: &str,
) -> Option<Resource> {
    ledger.resources().into_iter().find(|r| {
        r.backend == AWS_BACKEND
            && r.kind == kind
            && r.state == ResourceState::Created
            && r.details.get("region").map(String::as_str) == Some(region)
            && r.details.get("name").map(String::as_str) == Some(name)
    })
}

/// Journals a resource about to be made; when the journal fails, nothing is made.
pub(super) async fn intent(
    ledger: &dyn ResourceLedger,
    key: &ResourceKey,
    kind: &str,
    machine: Option<&str>,
    token: Option<&str>,
    details: BTreeMap<String, String>,
) -> PResult<()> {
    ledger
        .intent({
            let mut intent = Resource::new(key.clone(), AWS_BACKEND, kind);
            intent.machine = machine.map(str::to_string);
            intent.client_token = token.map(str::to_string);
            intent.details = details;
            intent
        })
        .await
        .map_err(|e| {
            err(
                machine,
                format!("journal: {e}; {kind} not created"),
                Leftovers::Clear,
            )
            .with_source(e)
        })
}

/// Journals a resource's id once it is made.
pub(super) async fn created(
    ledger: &dyn ResourceLedger,
    key: &ResourceKey,
    id: &str,
    details: BTreeMap<String, String>,
) {
    if let Err(e) = ledger.created(key, id, details).await {
        // The intent is journaled and the resource is tagged: teardown still finds it.
        tracing::warn!(%key, %id, "journal: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_names_keep_only_what_ec2_accepts() {
        assert_eq!(
            resource_name(&["qa-run", "plan x_20260101T000000Z-00ab"]),
            "qa-run-plan-x-20260101T000000Z-00ab"
        );
    }
}
