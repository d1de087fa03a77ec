//! EC2: the `aws` backend's name and plan options ([`AwsBackend`], [`AwsMachine`]).

mod options;

pub use options::{AWS, AwsBackend, AwsMachine, VolumeSpec};
