//! The `QA_RUN_*` environment variables, read once at start-up into a typed [`Settings`] that the
//! rest of the command takes as an argument. The AWS variables (`QA_RUN_AWS_SSH_ADDRESS`,
//! `QA_RUN_AWS_PRICES`) are not here: the cloud module reads them only when a command needs AWS,
//! so a bad value there never stops a local run.

use std::ffi::OsString;
use std::path::PathBuf;

/// What the environment configures, every variable parsed once (`qa-run --help` lists them).
/// [`Settings::default`] is the built-in defaults without looking at the environment.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `QA_RUN_LOG`: the log filter for `-v` output, if set (an invalid filter falls back to the
    /// level `-v` asks for).
    pub log_filter: Option<String>,
    /// `QA_RUN_LEASE_DIR`: where static-host leases are kept (default `~/.cache/qa-run/leases`).
    pub lease_dir: PathBuf,
    /// `QA_RUN_SSH_BOOT_ID_PATH`: the file read for a machine's boot id, when set and not blank.
    pub ssh_boot_id_path: Option<String>,
    /// `QA_RUN_SSH_REBOOT_COMMAND`: the command a `reboot: true` step runs, when set and not
    /// blank.
    pub ssh_reboot_command: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings::from_vars(|_| None)
    }
}

impl Settings {
    /// Reads the process environment.
    pub fn from_env() -> Self {
        Settings::from_vars(|name| std::env::var_os(name))
    }

    /// Reads the variables through `var`, which returns a variable's value if it is set.
    fn from_vars(var: impl Fn(&str) -> Option<OsString>) -> Self {
        let text = |name: &str| var(name).and_then(|v| v.into_string().ok());
        let not_blank = |name: &str| text(name).filter(|v| !v.trim().is_empty());
        Settings {
            log_filter: text("QA_RUN_LOG"),
            lease_dir: var("QA_RUN_LEASE_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(qa_provision::static_hosts::StaticProvisioner::default_lease_dir),
            ssh_boot_id_path: not_blank("QA_RUN_SSH_BOOT_ID_PATH"),
            ssh_reboot_command: not_blank("QA_RUN_SSH_REBOOT_COMMAND"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings_of(vars: &[(&str, &str)]) -> Settings {
        Settings::from_vars(|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| OsString::from(v))
        })
    }

    #[test]
    fn unset_and_blank_variables_leave_the_defaults() {
        let s = settings_of(&[
            ("QA_RUN_SSH_BOOT_ID_PATH", "  "),
            ("QA_RUN_SSH_REBOOT_COMMAND", ""),
        ]);
        assert_eq!(s.log_filter, None);
        assert_eq!(
            s.lease_dir,
            qa_provision::static_hosts::StaticProvisioner::default_lease_dir()
        );
        assert_eq!(s.ssh_boot_id_path, None);
        assert_eq!(s.ssh_reboot_command, None);
    }

    #[test]
    fn set_variables_are_taken_as_given() {
        let s = settings_of(&[
            ("QA_RUN_LOG", "qa_remote=debug"),
            ("QA_RUN_LEASE_DIR", "/tmp/leases"),
            ("QA_RUN_SSH_BOOT_ID_PATH", "/run/boot-id"),
            ("QA_RUN_SSH_REBOOT_COMMAND", "systemctl reboot"),
        ]);
        assert_eq!(s.log_filter.as_deref(), Some("qa_remote=debug"));
        assert_eq!(s.lease_dir, PathBuf::from("/tmp/leases"));
        assert_eq!(s.ssh_boot_id_path.as_deref(), Some("/run/boot-id"));
        assert_eq!(s.ssh_reboot_command.as_deref(), Some("systemctl reboot"));
    }
}
