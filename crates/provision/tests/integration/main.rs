//! Integration tests of qa-provision: one binary, one module per provisioner.

mod local;
