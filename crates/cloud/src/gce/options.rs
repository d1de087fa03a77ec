//! The `gce:` block of a machine: its model, its shape for the plan loader, and what Compute
//! Engine would refuse only after a run has begun making things, checked when the plan loads.

use qa_core::backend::{BackendDescriptor, BackendName, OptionProblem, ReservationNeed};
use qa_core::plan::MachineSpec;
use qa_core::plan::schema::{self, Shape, dflt, opt, req};
use serde::{Deserialize, Serialize};

use crate::checks::{did_you_mean, is_cidr};

/// The name of the Compute Engine backend.
pub const GCE: BackendName = BackendName::new("gce");

/// Options of the GCE backend.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct GceMachine {
    /// Project (default: `GOOGLE_CLOUD_PROJECT`, `CLOUDSDK_CORE_PROJECT`, or the credentials').
    #[serde(default)]
    pub project: Option<String>,
    /// Region (default: the region of the first zone).
    #[serde(default)]
    pub region: Option<String>,
    /// Zones to try, preferred first (with `reserve`, the region's other zones that offer the
    /// machine type come after them).
    #[serde(default)]
    pub zones: Vec<String>,
    /// Machine type, e.g. `n2-standard-4`.
    pub machine_type: String,
    /// Image: `projects/P/global/images/NAME` (or the full URL).
    #[serde(default)]
    pub image: Option<String>,
    /// Image family: `PROJECT/FAMILY`, e.g. `debian-cloud/debian-12` (the newest image of it).
    #[serde(default)]
    pub image_family: Option<String>,
    /// Boot disk size in GB (default 20).
    #[serde(default)]
    pub boot_disk_gb: Option<u32>,
    /// Boot disk type (default `pd-balanced`).
    #[serde(default)]
    pub boot_disk_type: Option<String>,
    /// Extra persistent disks.
    #[serde(default)]
    pub disks: Vec<DiskSpec>,
    /// Ask for a Spot VM.
    #[serde(default)]
    pub spot: bool,
    /// With `spot`, fall back to a standard VM on a capacity error.
    #[serde(default)]
    pub spot_fallback: bool,
    /// Reserve capacity before creating the VM.
    #[serde(default)]
    pub reserve: bool,
    /// SSH login user the run's key is installed for (default `qa`).
    #[serde(default)]
    pub ssh_user: Option<String>,
    /// CIDR admitted to SSH (default: the address qa-run runs from, /32).
    #[serde(default)]
    pub ssh_cidr: Option<String>,
    /// VPC network (default `default`).
    #[serde(default)]
    pub network: Option<String>,
    /// Subnetwork (default: the network's subnetwork in the region).
    #[serde(default)]
    pub subnetwork: Option<String>,
}

/// Extra persistent disks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct DiskSpec {
    /// Disk type (`pd-balanced`, `pd-ssd`, …; default `pd-balanced`).
    #[serde(default)]
    pub r#type: Option<String>,
    /// Size in GB.
    pub size_gb: u32,
    /// How many disks of this shape (default 1).
    #[serde(default = "one")]
    pub count: u32,
}

fn one() -> u32 {
    1
}

/// The boot disk size when the plan gives none.
pub const DEFAULT_BOOT_DISK_GB: u32 = 20;
/// The disk type when the plan gives none.
pub const DEFAULT_DISK_TYPE: &str = "pd-balanced";
/// The login user when the plan gives none.
pub const DEFAULT_SSH_USER: &str = "qa";

impl GceMachine {
    /// The `gce:` block of a machine, if it has one that reads as this type.
    pub fn of(spec: &MachineSpec) -> Option<Result<GceMachine, serde_json::Error>> {
        spec.options_of(GCE)
            .map(|v| serde_json::from_value(v.clone()))
    }

    /// The region: the one named, else the first zone's.
    pub fn region(&self) -> Option<String> {
        self.region
            .clone()
            .or_else(|| self.zones.first().and_then(|z| region_of_zone(z)))
    }

    /// The source image as the API takes it.
    pub fn source_image(&self) -> Option<String> {
        if let Some(i) = &self.image {
            return Some(i.clone());
        }
        let (project, family) = self.image_family.as_deref()?.split_once('/')?;
        Some(format!("projects/{project}/global/images/family/{family}"))
    }

    /// The extra disks, one `(type, GB)` per disk (`count` expanded).
    pub fn extra_disks(&self) -> Vec<(String, u32)> {
        self.disks
            .iter()
            .flat_map(|d| {
                std::iter::repeat_n(
                    (
                        d.r#type.clone().unwrap_or_else(|| DEFAULT_DISK_TYPE.into()),
                        d.size_gb,
                    ),
                    d.count as usize,
                )
            })
            .collect()
    }

    /// The login user.
    pub fn user(&self) -> &str {
        self.ssh_user.as_deref().unwrap_or(DEFAULT_SSH_USER)
    }
}

/// The region of a zone (`us-central1-a` → `us-central1`).
pub fn region_of_zone(zone: &str) -> Option<String> {
    let (region, letter) = zone.rsplit_once('-')?;
    (!region.is_empty() && !letter.is_empty()).then(|| region.to_string())
}

const DISK: Shape = Shape::Struct(&[
    opt("type", &schema::STR),
    req("size-gb", &schema::U32),
    dflt("count", &schema::U32),
]);

const GCE_MACHINE: Shape = Shape::Struct(&[
    opt("project", &schema::STR),
    opt("region", &schema::STR),
    dflt("zones", &schema::STR_LIST),
    req("machine-type", &schema::STR),
    opt("image", &schema::STR),
    opt("image-family", &schema::STR),
    opt("boot-disk-gb", &schema::U32),
    opt("boot-disk-type", &schema::STR),
    dflt("disks", &Shape::List(&DISK)),
    dflt("spot", &schema::BOOL),
    dflt("spot-fallback", &schema::BOOL),
    dflt("reserve", &schema::BOOL),
    opt("ssh-user", &schema::STR),
    opt("ssh-cidr", &schema::STR),
    opt("network", &schema::STR),
    opt("subnetwork", &schema::STR),
]);

/// Persistent disk types.
const DISK_TYPES: &[&str] = &[
    "pd-balanced",
    "pd-ssd",
    "pd-standard",
    "pd-extreme",
    "hyperdisk-balanced",
    "hyperdisk-extreme",
    "hyperdisk-throughput",
];
/// The most disks one VM takes (the boot disk included).
const MAX_DISKS: u32 = 128;
/// The largest persistent disk, in GB.
const MAX_DISK_GB: u32 = 65_536;

/// The `gce` backend as the plan loader and the engine see it.
#[derive(Debug, Clone, Copy, Default)]
pub struct GceBackend;

impl BackendDescriptor for GceBackend {
    fn name(&self) -> BackendName {
        GCE
    }

    fn options_shape(&self) -> Option<&'static Shape> {
        Some(&GCE_MACHINE)
    }

    fn requires_options(&self) -> bool {
        true
    }

    fn check_options(&self, options: &serde_json::Value) -> Vec<OptionProblem> {
        match serde_json::from_value::<GceMachine>(options.clone()) {
            Ok(g) => check(&g),
            Err(e) => vec![OptionProblem::new("", e.to_string(), None)],
        }
    }

    fn reservation_need(&self, options: Option<&serde_json::Value>) -> Option<ReservationNeed> {
        let g: GceMachine = serde_json::from_value(options?.clone()).ok()?;
        g.reserve
            .then(|| ReservationNeed::new(g.region(), g.machine_type, g.zones))
    }

    fn is_cloud(&self) -> bool {
        true
    }
}

/// Whether `s` is a GCE name: a lowercase letter, then lowercase letters, digits and `-`, not
/// ending in `-`, at most 63 characters.
pub fn is_gce_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_lowercase()
        && b[b.len() - 1] != b'-'
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

fn problem(key: impl Into<String>, message: impl Into<String>, hint: &str) -> OptionProblem {
    OptionProblem::new(key, message, (!hint.is_empty()).then(|| hint.to_string()))
}

/// What Compute Engine would refuse only after the run has started making things.
fn check(g: &GceMachine) -> Vec<OptionProblem> {
    let mut out = Vec::new();
    if g.machine_type.trim().is_empty() {
        out.push(problem(
            "machine-type",
            "the machine type is empty",
            "e.g. `n2-standard-4`",
        ));
    }
    match (&g.image, &g.image_family) {
        (None, None) => out.push(problem(
            "",
            "neither `image` nor `image-family` is set",
            "add `image-family: debian-cloud/debian-12`, or `image: projects/P/global/images/NAME`",
        )),
        (Some(_), Some(_)) => out.push(problem(
            "image-family",
            "both `image` and `image-family` are set",
            "keep one of them",
        )),
        (None, Some(f)) => {
            let ok = f
                .split_once('/')
                .is_some_and(|(p, fam)| !p.is_empty() && is_gce_name(fam));
            if !ok {
                out.push(problem(
                    "image-family",
                    format!("`{f}` is not PROJECT/FAMILY"),
                    "e.g. `debian-cloud/debian-12`",
                ));
            }
        }
        (Some(i), None) => {
            if !i.contains("/global/images/") {
                out.push(problem(
                    "image",
                    format!("`{i}` is not an image path"),
                    "`projects/PROJECT/global/images/NAME`, or use `image-family: PROJECT/FAMILY`",
                ));
            }
        }
    }
    for (j, z) in g.zones.iter().enumerate() {
        let Some(zone_region) = region_of_zone(z).filter(|_| is_gce_name(z)) else {
            out.push(problem(
                format!("zones[{j}]"),
                format!("`{z}` is not a zone name"),
                "zones are named REGION-LETTER, e.g. `us-central1-a`",
            ));
            continue;
        };
        if let Some(region) = &g.region
            && zone_region != *region
        {
            out.push(problem(
                format!("zones[{j}]"),
                format!("zone `{z}` is not in region `{region}`"),
                &format!("zones are named after their region, e.g. `{region}-a`; fix the zone or the region"),
            ));
        }
    }
    if g.region.is_none() && g.zones.is_empty() {
        out.push(problem(
            "",
            "neither `region` nor `zones` is set",
            "add `zones: [us-central1-a]` (or `region:` with `reserve: true`)",
        ));
    }
    if g.spot && g.reserve {
        out.push(problem(
            "reserve",
            "`reserve` with `spot: true`: Spot VMs cannot consume reservations",
            "reserve for a standard VM (remove `spot`), or do not reserve",
        ));
    }
    if g.spot_fallback && !g.spot {
        out.push(problem(
            "spot-fallback",
            "`spot-fallback` without `spot: true`",
            "set `spot: true`, or remove `spot-fallback`",
        ));
    }
    if let Some(gb) = g.boot_disk_gb
        && !(10..=MAX_DISK_GB).contains(&gb)
    {
        out.push(problem(
            "boot-disk-gb",
            format!("{gb} GB is outside 10 to {MAX_DISK_GB} GB"),
            "",
        ));
    }
    for (key, t) in std::iter::once(("boot-disk-type".to_string(), g.boot_disk_type.as_ref()))
        .chain(
            g.disks
                .iter()
                .enumerate()
                .map(|(j, d)| (format!("disks[{j}].type"), d.r#type.as_ref())),
        )
    {
        if let Some(t) = t
            && !DISK_TYPES.contains(&t.as_str())
        {
            out.push(OptionProblem::new(
                key,
                format!("`{t}` is not a persistent disk type"),
                did_you_mean(t, DISK_TYPES)
                    .or_else(|| Some(format!("one of {}", DISK_TYPES.join(", ")))),
            ));
        }
    }
    let mut total: u64 = 1;
    for (j, d) in g.disks.iter().enumerate() {
        if !(1..=MAX_DISK_GB).contains(&d.size_gb) {
            out.push(problem(
                format!("disks[{j}].size-gb"),
                format!("{} GB is outside 1 to {MAX_DISK_GB} GB", d.size_gb),
                "",
            ));
        }
        if d.count == 0 {
            out.push(problem(
                format!("disks[{j}].count"),
                "a count of 0 makes no disk",
                "remove the entry, or count at least 1",
            ));
        }
        total += u64::from(d.count);
    }
    if total > u64::from(MAX_DISKS) {
        out.push(problem(
            "disks",
            format!("{total} disks with the boot disk; a VM takes at most {MAX_DISKS}"),
            "",
        ));
    }
    if let Some(user) = &g.ssh_user {
        let b = user.as_bytes();
        let ok = !b.is_empty()
            && b.len() <= 32
            && (b[0].is_ascii_lowercase() || b[0] == b'_')
            && b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_' || *c == b'-');
        if !ok {
            out.push(problem(
                "ssh-user",
                format!("`{user}` is not a login name"),
                "lowercase letters, digits, `_` and `-`, starting with a letter or `_`",
            ));
        }
    }
    if let Some(cidr) = &g.ssh_cidr
        && !is_cidr(cidr)
    {
        out.push(problem(
            "ssh-cidr",
            format!("`{cidr}` is not a CIDR block"),
            "an address and a prefix length, e.g. `203.0.113.7/32`",
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry() -> qa_core::BackendRegistry {
        let mut r = qa_core::BackendRegistry::new();
        r.register(qa_core::Backend::new(std::sync::Arc::new(GceBackend)))
            .unwrap();
        r
    }

    fn machine(options: &str) -> String {
        format!(
            "name: x\nmachines:\n  - name: cloud\n    backend: gce\n    gce:\n{}\nsteps: [{{name: s, command: c}}]\n",
            options
                .lines()
                .map(|l| format!("      {l}"))
                .collect::<Vec<_>>()
                .join("\n")
        )
    }

    #[test]
    fn every_gce_key_loads_and_says_what_to_reserve() {
        let src = machine(
            "project: p\nregion: us-central1\nzones: [us-central1-b, us-central1-a]\nmachine-type: n2-standard-4\nimage-family: debian-cloud/debian-12\nboot-disk-gb: 30\nboot-disk-type: pd-ssd\ndisks: [{type: pd-balanced, size-gb: 20, count: 6}]\nspot: false\nspot-fallback: false\nreserve: true\nssh-user: tester\nssh-cidr: 10.0.0.0/8\nnetwork: default\nsubnetwork: sub",
        );
        let loaded = qa_core::plan::load_str_with(&src, "p.yaml".as_ref(), &registry()).unwrap();
        let spec = &loaded.plan.machines[0];
        let g = GceMachine::of(spec).unwrap().unwrap();
        assert_eq!(g.extra_disks().len(), 6);
        assert_eq!(
            g.source_image().as_deref(),
            Some("projects/debian-cloud/global/images/family/debian-12")
        );
        assert_eq!(
            GceBackend.reservation_need(spec.options_of(GCE)),
            Some(ReservationNeed::new(
                Some("us-central1".into()),
                "n2-standard-4",
                vec!["us-central1-b".into(), "us-central1-a".into()]
            ))
        );
    }

    #[test]
    fn mistakes_are_refused_at_load_with_the_key_and_what_to_do() {
        let cases: &[(&str, &[&str])] = &[
            (
                "zones: [us-central1-a]\nmachine-type: e2-small",
                &["neither `image` nor `image-family`"],
            ),
            (
                "zones: [us-central1-a]\nmachine-type: e2-small\nimage-family: a/b\nspot: true\nreserve: true",
                &["reserve", "Spot VMs cannot consume reservations"],
            ),
            (
                "zones: [us-central1-a]\nmachine-type: e2-small\nimage-family: debian-12",
                &["image-family", "PROJECT/FAMILY"],
            ),
            (
                "region: europe-west4\nzones: [us-central1-a]\nmachine-type: e2-small\nimage-family: a/b",
                &["zones[0]", "not in region `europe-west4`"],
            ),
            (
                "zones: [uscentral1a]\nmachine-type: e2-small\nimage-family: a/b",
                &["zones[0]", "not a zone name"],
            ),
            (
                "zones: [us-central1-a]\nmachine-type: e2-small\nimage-family: a/b\ndisks: [{type: pd-sdd, size-gb: 20}]",
                &["disks[0].type", "did you mean `pd-ssd`"],
            ),
            (
                "zones: [us-central1-a]\nmachine-type: e2-small\nimage-family: a/b\nspot-fallback: true",
                &["spot-fallback", "spot: true"],
            ),
            (
                "zones: [us-central1-a]\nmachine-type: e2-small\nimage-family: a/b\nssh-cidr: 0.0.0.0",
                &["ssh-cidr", "not a CIDR"],
            ),
            (
                "zones: [us-central1-a]\nmachine-type: e2-small\nimage-family: a/b\ndisks: [{size-gb: 20, count: 200}]",
                &["at most 128"],
            ),
            (
                "zones: [us-central1-a]\nmachine-type: e2-small\nimage-family: a/b\nssh-user: Root",
                &["ssh-user", "not a login name"],
            ),
            (
                "machine-type: e2-small\nimage-family: a/b",
                &["neither `region` nor `zones`"],
            ),
        ];
        for (options, parts) in cases {
            let e = qa_core::plan::load_str_with(&machine(options), "p.yaml".as_ref(), &registry())
                .unwrap_err()
                .to_string();
            for part in *parts {
                assert!(
                    e.contains(part),
                    "`{part}` missing from:\n{e}\nfor:\n{options}"
                );
            }
            assert!(e.contains("p.yaml:"), "no location in:\n{e}");
        }
    }

    #[test]
    fn names_and_regions() {
        assert!(is_gce_name("qa-run-1"));
        for bad in ["", "1a", "a-", "A", "a_b", &"a".repeat(64)] {
            assert!(!is_gce_name(bad), "{bad}");
        }
        assert_eq!(
            region_of_zone("us-central1-a").as_deref(),
            Some("us-central1")
        );
        assert_eq!(region_of_zone("nozone"), None);
    }

    #[test]
    fn the_documentation_names_every_gce_key() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/plan.md");
        let doc = std::fs::read_to_string(path).unwrap();
        let section = &doc[doc.find("### `gce` options").expect("a gce section")..];
        let mut keys = Vec::new();
        for shape in [&GCE_MACHINE, &DISK] {
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
            "docs/plan.md's gce section lacks {missing:?}"
        );
    }
}
