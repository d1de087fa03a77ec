//! qa-testkit: what qa-run's tests run against, in one place.
//!
//! Nothing here talks to a host outside the machine: every server listens on a loopback address.
//!
//! - Real OpenSSH servers (re-exported at the top: [`TestSshd`], [`Bastion`], [`Fleet`],
//!   [`ClientKeys`]). Tests of the SSH executor talk to real `sshd` processes. [`TestSshd`]
//!   starts one on a free loopback port with its own host key, a throwaway `sshd_config`, an
//!   authorized_keys file holding the shared [`ClientKeys`], and an empty home directory so that
//!   no shell start-up file slows commands down. It can be killed (with every connection it
//!   serves), restarted on the same port, given a new host key, and "rebooted": the harness owns
//!   a boot-id file, and a reboot is sshd restarted with a new id written to it. [`Bastion`]
//!   pairs a bastion with a guest that listens on `127.0.0.2` and is reached through the
//!   bastion's `direct-tcpip` channels. Every process is killed when its handle is dropped.
//! - [`procs`]: finding processes by their command line or working directory, to check that
//!   nothing was left running.
//! - [`git`]: running `git` in a test's repositories.
//! - [`btrfsqa`]: stand-ins for the BTRFSQA example's scripts.
//! - [`cli`]: driving the real `qa-run` binary (its path is the caller's `CARGO_BIN_EXE_qa-run`).
//! - [`net`]: a free loopback port.
//! - [`redaction`]: the redaction corpus, read into its cases.
//! - `aws` (feature `aws`): the EC2 emulator, moto's server with a layer in front of it that
//!   adds capacity reservations and placement groups, injects errors and records every call.
//! - `gce` (feature `gce`): the Compute Engine emulator, an in-memory project served with the
//!   v1 REST paths and JSON shapes (instances, reservations, disks, firewalls, zones, machine
//!   types, operations) with per-zone capacity, injected errors and a request log.
//!
//! ```no_run
//! let Some(host) = qa_testkit::TestSshd::start_or_skip() else { return };
//! let target = host.target(); // an `SshTarget` with the ed25519 client key, Strict policy
//! assert!(host.known_hosts().exists());
//! ```
//!
//! If `sshd` cannot be found, [`TestSshd::start_or_skip`] prints why and returns `None` — unless
//! the environment variable `QA_REQUIRE_SSHD` is set, in which case it panics (CI sets it).
#![warn(missing_docs)]

#[cfg(feature = "aws")]
pub mod aws;
pub mod btrfsqa;
pub mod cli;
#[cfg(feature = "gce")]
pub mod gce;
pub mod git;
#[cfg(feature = "gce")]
mod http;
pub mod net;
pub mod procs;
pub mod redaction;
mod sshd;

pub use sshd::{
    Bastion, ClientKeys, Fleet, KeyKind, REQUIRE_SSHD_ENV, RebootBehaviour, SshdConfig, TestSshd,
    find_sshd, sshd_or_skip,
};
