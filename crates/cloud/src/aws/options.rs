//! The `aws:` block of a machine: its model, its shape for the plan loader, and what EC2 would
//! refuse only after a run has begun making things, checked when the plan loads.

use qa_core::backend::{BackendDescriptor, BackendName, OptionProblem, ReservationNeed};
use qa_core::plan::MachineSpec;
use qa_core::plan::schema::{self, Shape, dflt, opt, req};
use serde::{Deserialize, Serialize};

use crate::checks::{did_you_mean, is_cidr};

/// The name of the EC2 backend.
pub const AWS: BackendName = BackendName::new("aws");

/// Options of the AWS backend.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct AwsMachine {
    /// Region (default from the AWS configuration).
    #[serde(default)]
    pub region: Option<String>,
    /// Instance type, e.g. `r5.large`.
    pub instance_type: String,
    /// AMI id.
    pub image: String,
    /// Zones to try, preferred first (default: every zone that offers the type).
    #[serde(default)]
    pub zones: Vec<String>,
    /// Ask for a spot instance.
    #[serde(default)]
    pub spot: bool,
    /// With `spot`, fall back to on-demand on a capacity error.
    #[serde(default)]
    pub spot_fallback: bool,
    /// Reserve capacity before launching.
    #[serde(default)]
    pub reserve: bool,
    /// Extra EBS volumes.
    #[serde(default)]
    pub volumes: Vec<VolumeSpec>,
    /// SSH login user of the image (default `ec2-user`).
    #[serde(default)]
    pub ssh_user: Option<String>,
    /// CIDR admitted to SSH (default: the address qa-run runs from, /32).
    #[serde(default)]
    pub ssh_cidr: Option<String>,
    /// Subnet to launch into.
    #[serde(default)]
    pub subnet: Option<String>,
    /// Create a placement group of this strategy (`cluster`, `spread`, `partition`).
    #[serde(default)]
    pub placement_group: Option<String>,
}

/// Extra block volumes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct VolumeSpec {
    /// Volume type (`gp3`, `io2`, …).
    #[serde(default)]
    pub r#type: Option<String>,
    /// Size in GiB.
    pub size_gb: u32,
    /// How many volumes of this shape (default 1).
    #[serde(default = "one")]
    pub count: u32,
}

fn one() -> u32 {
    1
}

impl AwsMachine {
    /// The `aws:` block of a machine, if it has one that reads as this type.
    pub fn of(spec: &MachineSpec) -> Option<Result<AwsMachine, serde_json::Error>> {
        spec.options_of(AWS)
            .map(|v| serde_json::from_value(v.clone()))
    }
}

const VOLUME: Shape = Shape::Struct(&[
    opt("type", &schema::STR),
    req("size-gb", &schema::U32),
    dflt("count", &schema::U32),
]);

const AWS_MACHINE: Shape = Shape::Struct(&[
    opt("region", &schema::STR),
    req("instance-type", &schema::STR),
    req("image", &schema::STR),
    dflt("zones", &schema::STR_LIST),
    dflt("spot", &schema::BOOL),
    dflt("spot-fallback", &schema::BOOL),
    dflt("reserve", &schema::BOOL),
    dflt("volumes", &Shape::List(&VOLUME)),
    opt("ssh-user", &schema::STR),
    opt("ssh-cidr", &schema::STR),
    opt("subnet", &schema::STR),
    opt("placement-group", &schema::STR),
]);

/// EBS volume types.
const EBS_TYPES: &[&str] = &["gp3", "gp2", "io2", "io1", "st1", "sc1", "standard"];
/// EC2 placement group strategies.
const PLACEMENT_STRATEGIES: &[&str] = &["cluster", "spread", "partition"];

/// The `aws` backend as the plan loader and the engine see it.
#[derive(Debug, Clone, Copy, Default)]
pub struct AwsBackend;

impl BackendDescriptor for AwsBackend {
    fn name(&self) -> BackendName {
        AWS
    }

    fn options_shape(&self) -> Option<&'static Shape> {
        Some(&AWS_MACHINE)
    }

    fn requires_options(&self) -> bool {
        true
    }

    fn check_options(&self, options: &serde_json::Value) -> Vec<OptionProblem> {
        match serde_json::from_value::<AwsMachine>(options.clone()) {
            Ok(a) => check(&a),
            Err(e) => vec![OptionProblem::new("", e.to_string(), None)],
        }
    }

    fn reservation_need(&self, options: Option<&serde_json::Value>) -> Option<ReservationNeed> {
        let a: AwsMachine = serde_json::from_value(options?.clone()).ok()?;
        a.reserve
            .then(|| ReservationNeed::new(a.region, a.instance_type, a.zones))
    }

    fn is_cloud(&self) -> bool {
        true
    }
}

/// What EC2 would refuse only after the run has started making things.
fn check(a: &AwsMachine) -> Vec<OptionProblem> {
    let mut out = Vec::new();
    if let Some(region) = &a.region {
        for (j, z) in a.zones.iter().enumerate() {
            if !z.starts_with(region.as_str()) {
                out.push(OptionProblem::new(
                    format!("zones[{j}]"),
                    format!("zone `{z}` is not in region `{region}`"),
                    Some(format!(
                        "zones are named after their region, e.g. `{region}a`; fix the zone or the region"
                    )),
                ));
            }
        }
    }
    if let Some(strategy) = &a.placement_group
        && !PLACEMENT_STRATEGIES.contains(&strategy.as_str())
    {
        out.push(OptionProblem::new(
            "placement-group",
            format!("`{strategy}` is not a placement group strategy"),
            did_you_mean(strategy, PLACEMENT_STRATEGIES)
                .or_else(|| Some("one of `cluster`, `spread`, `partition`".into())),
        ));
    }
    for (j, v) in a.volumes.iter().enumerate() {
        if let Some(t) = &v.r#type
            && !EBS_TYPES.contains(&t.as_str())
        {
            out.push(OptionProblem::new(
                format!("volumes[{j}].type"),
                format!("`{t}` is not an EBS volume type"),
                did_you_mean(t, EBS_TYPES)
                    .or_else(|| Some(format!("one of {}", EBS_TYPES.join(", ")))),
            ));
        }
        if v.size_gb == 0 {
            out.push(OptionProblem::new(
                format!("volumes[{j}].size-gb"),
                "a volume needs at least 1 GB",
                None,
            ));
        }
    }
    if let Some(cidr) = &a.ssh_cidr
        && !is_cidr(cidr)
    {
        out.push(OptionProblem::new(
            "ssh-cidr",
            format!("`{cidr}` is not a CIDR block"),
            Some("an address and a prefix length, e.g. `203.0.113.7/32`".into()),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documentation_names_every_aws_key() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/plan.md");
        let doc = std::fs::read_to_string(path).unwrap();
        let section = &doc[doc.find("### `aws` options").expect("an aws section")..];
        let mut keys = Vec::new();
        for shape in [&AWS_MACHINE, &VOLUME] {
            if let Shape::Struct(fields) = shape {
                keys.extend(fields.iter().map(|f| f.key()));
            }
        }
        let missing: Vec<_> = keys
            .into_iter()
            .filter(|k| !section.contains(&format!("`{k}`")))
            .collect();
        assert!(
            missing.is_empty(),
            "docs/plan.md's aws section lacks {missing:?}"
        );
    }

    fn registry() -> qa_core::BackendRegistry {
        let mut r = qa_core::BackendRegistry::new();
        r.register(qa_core::Backend::new(std::sync::Arc::new(AwsBackend)))
            .unwrap();
        r
    }

    #[test]
    fn every_aws_key_loads_and_says_what_to_reserve() {
        let src = "name: x\nmachines:\n  - name: cloud\n    backend: aws\n    aws:\n      region: eu-west-1\n      instance-type: r5.large\n      image: ami-123\n      zones: [eu-west-1a]\n      spot: true\n      spot-fallback: true\n      reserve: true\n      volumes: [{type: gp3, size-gb: 100, count: 2}]\n      ssh-user: ec2-user\n      ssh-cidr: 10.0.0.0/8\n      subnet: subnet-1\n      placement-group: cluster\nsteps: [{name: s, command: c}]\n";
        let loaded = qa_core::plan::load_str_with(src, "p.yaml".as_ref(), &registry()).unwrap();
        let spec = &loaded.plan.machines[0];
        let a = AwsMachine::of(spec).unwrap().unwrap();
        assert_eq!(a.volumes[0].count, 2);
        assert_eq!(
            AwsBackend.reservation_need(spec.options_of(AWS)),
            Some(ReservationNeed::new(
                Some("eu-west-1".into()),
                "r5.large",
                vec!["eu-west-1a".into()]
            ))
        );
        // The model and the shape agree: what serializes back loads again.
        let yaml = serde_json::to_string(&loaded.plan).unwrap();
        let back: qa_core::plan::Plan = serde_json::from_str(&yaml).unwrap();
        assert_eq!(back, loaded.plan);
    }
}
