//! A plan's `inventory:` hosts made ready to connect to: what a host leaves unset is taken from
//! its OpenSSH config entry (`ssh-config:`), the way `ssh` would read it. `resume` and `cleanup`
//! find the inventory again through the run's journal.

use std::path::Path;

use qa_core::plan::InventoryHost;

/// An inventory host whose `ssh-config:` file could not be used.
#[derive(Debug, thiserror::Error)]
#[error("inventory host `{host}`: {source}")]
pub struct InventoryError {
    /// The host's name in the plan.
    pub host: String,
    /// What is wrong with its OpenSSH config.
    #[source]
    pub source: qa_remote::ssh::SshConfigError,
}

/// Fills what inventory hosts leave unset from their OpenSSH config entry (`ssh-config:`):
/// HostName, Port, User, IdentityFile and ProxyJump, the way `ssh` would read them.
pub fn resolve_inventory(
    inventory: &[InventoryHost],
    base_dir: &Path,
) -> Result<Vec<InventoryHost>, InventoryError> {
    let mut out = Vec::with_capacity(inventory.len());
    for h in inventory {
        let mut h = h.clone();
        if let Some(file) = &h.ssh_config {
            let path = if file.is_absolute() {
                file.clone()
            } else {
                base_dir.join(file)
            };
            let invalid = |source| InventoryError {
                host: h.name.clone(),
                source,
            };
            let config = qa_remote::ssh::OpenSshConfig::load(&path).map_err(invalid)?;
            let alias = h.host.clone().unwrap_or_else(|| h.name.clone());
            let found = config.host(&alias).map_err(invalid)?;
            h.host = Some(found.host_name.unwrap_or(alias));
            h.port = h.port.or(found.port);
            h.user = h.user.or(found.user);
            if h.identity_file.is_none() {
                h.identity_file = found.identity_files.into_iter().next();
            }
            if h.proxy_jump.is_empty() {
                h.proxy_jump = found.proxy_jump;
            }
        }
        out.push(h);
    }
    Ok(out)
}

/// The inventory of the plan a run used, if its journal and plan can still be read (hosts whose
/// OpenSSH config cannot be read any more are taken as the plan wrote them).
pub(crate) fn plan_inventory_of(run_dir: &Path) -> Vec<InventoryHost> {
    qa_core::journal::read_state(&run_dir.join(qa_core::journal::JOURNAL_FILE))
        .ok()
        .and_then(|s| {
            qa_core::plan::load_file_with(Path::new(&s.plan_path), &qa_cloud::backends()).ok()
        })
        .map(|l| resolve_inventory(&l.plan.inventory, &l.base_dir).unwrap_or(l.plan.inventory))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inventory_hosts_take_what_they_leave_unset_from_their_ssh_config() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("ssh_config"),
            "Host lab-*\n  User qa\n  Port 2222\n  IdentityFile /keys/lab\nHost lab-1\n  HostName 10.0.0.11\n  ProxyJump ops@bastion:22\n",
        )
        .unwrap();
        let host = |name: &str| InventoryHost::new(name).ssh_config("ssh_config");
        let mut explicit = host("lab-2");
        explicit.user = Some("root".into());
        let out = resolve_inventory(&[host("lab-1"), explicit], dir.path()).unwrap();
        assert_eq!(out[0].host.as_deref(), Some("10.0.0.11"));
        assert_eq!(
            (out[0].port, out[0].user.as_deref()),
            (Some(2222), Some("qa"))
        );
        assert_eq!(
            out[0].identity_file.as_deref(),
            Some(Path::new("/keys/lab"))
        );
        assert_eq!(out[0].proxy_jump, vec!["ops@bastion:22".to_string()]);
        assert_eq!(
            out[1].host.as_deref(),
            Some("lab-2"),
            "no HostName: the alias is the address"
        );
        assert_eq!(
            out[1].user.as_deref(),
            Some("root"),
            "what the plan sets wins"
        );
        let mut missing = host("x");
        missing.ssh_config = Some("nope".into());
        let e = resolve_inventory(&[missing], dir.path()).unwrap_err();
        assert_eq!(e.host, "x");
        assert!(e.to_string().starts_with("inventory host `x`: "), "{e}");
    }
}
