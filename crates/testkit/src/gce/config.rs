//! What a test tells the emulator: the project and its zones, how slowly operations finish, which
//! calls fail and how; and what the emulator tells the test back (the request log).

use std::fmt;

/// The project, its zones and the emulator's pace. Build it with [`GceConfig::new`] and
/// [`GceConfig::zone`]; [`GceConfig::default`] is one project with three zones in two regions.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct GceConfig {
    /// The one project the emulator serves; every other project is unknown to it.
    pub project: String,
    /// The zones it has, each with the machine types it offers.
    pub zones: Vec<ZoneConfig>,
    /// How many reads (`get` or `wait`) of an operation answer before the one that says `DONE`:
    /// 0 makes every mutating call answer with a `DONE` operation, 1 (the default) finishes it
    /// on the first poll.
    pub operation_polls: u32,
    /// How many `get`s of a new instance answer `STAGING` after its insert operation is `DONE`,
    /// before it is `RUNNING` (it is `PROVISIONING` while the operation runs). Default 0.
    pub boot_polls: u32,
    /// The external address every access config gets (`natIP`); default `127.0.0.1`, so that a
    /// test can put an sshd there.
    pub nat_ip: String,
}

impl Default for GceConfig {
    fn default() -> Self {
        GceConfig::new("qa-test-project")
            .zone(ZoneConfig::new(
                "us-central1-a",
                &["e2-standard-2", "n2-standard-2", "n2-standard-4"],
            ))
            .zone(ZoneConfig::new(
                "us-central1-b",
                &["e2-standard-2", "n2-standard-2"],
            ))
            .zone(ZoneConfig::new("europe-west4-a", &["e2-standard-2"]))
    }
}

impl GceConfig {
    /// A project with no zones yet, operations done on their first poll, instances `RUNNING` as
    /// soon as their insert is done.
    pub fn new(project: impl Into<String>) -> GceConfig {
        GceConfig {
            project: project.into(),
            zones: Vec::new(),
            operation_polls: 1,
            boot_polls: 0,
            nat_ip: "127.0.0.1".into(),
        }
    }

    /// Adds a zone.
    pub fn zone(mut self, zone: ZoneConfig) -> GceConfig {
        self.zones.push(zone);
        self
    }

    /// Sets the [`operation_polls`](GceConfig#structfield.operation_polls) field.
    pub fn operation_polls(mut self, n: u32) -> GceConfig {
        self.operation_polls = n;
        self
    }

    /// Sets the [`boot_polls`](GceConfig#structfield.boot_polls) field.
    pub fn boot_polls(mut self, n: u32) -> GceConfig {
        self.boot_polls = n;
        self
    }

    /// Sets the [`nat_ip`](GceConfig#structfield.nat_ip) field.
    pub fn nat_ip(mut self, ip: impl Into<String>) -> GceConfig {
        self.nat_ip = ip.into();
        self
    }
}

/// One zone: its name, its region and the machine types it offers.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ZoneConfig {
    /// `us-central1-a`.
    pub name: String,
    /// `us-central1`.
    pub region: String,
    /// The machine types `machineTypes.list` shows here and inserts may use.
    pub machine_types: Vec<String>,
}

impl ZoneConfig {
    /// A zone whose region is its name without the last `-x` part, as in GCE.
    pub fn new(name: &str, machine_types: &[&str]) -> ZoneConfig {
        let region = name.rsplit_once('-').map_or(name, |(r, _)| r).to_string();
        ZoneConfig {
            name: name.to_string(),
            region,
            machine_types: machine_types.iter().map(|t| t.to_string()).collect(),
        }
    }
}

/// The REST methods the emulator serves, by their discovery names (see [`Call::method_id`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Call {
    /// `compute.instances.insert`
    InstancesInsert,
    /// `compute.instances.get`
    InstancesGet,
    /// `compute.instances.delete`
    InstancesDelete,
    /// `compute.instances.list`
    InstancesList,
    /// `compute.instances.aggregatedList`
    InstancesAggregatedList,
    /// `compute.instances.setLabels`
    InstancesSetLabels,
    /// `compute.reservations.insert`
    ReservationsInsert,
    /// `compute.reservations.get`
    ReservationsGet,
    /// `compute.reservations.delete`
    ReservationsDelete,
    /// `compute.reservations.list`
    ReservationsList,
    /// `compute.reservations.aggregatedList`
    ReservationsAggregatedList,
    /// `compute.reservations.update`
    ReservationsUpdate,
    /// `compute.disks.get`
    DisksGet,
    /// `compute.disks.delete`
    DisksDelete,
    /// `compute.disks.list`
    DisksList,
    /// `compute.disks.aggregatedList`
    DisksAggregatedList,
    /// `compute.firewalls.insert`
    FirewallsInsert,
    /// `compute.firewalls.get`
    FirewallsGet,
    /// `compute.firewalls.delete`
    FirewallsDelete,
    /// `compute.firewalls.list`
    FirewallsList,
    /// `compute.zoneOperations.get` (also every zonal client's `get_operation`)
    ZoneOperationsGet,
    /// `compute.zoneOperations.wait`
    ZoneOperationsWait,
    /// `compute.globalOperations.get`
    GlobalOperationsGet,
    /// `compute.globalOperations.wait`
    GlobalOperationsWait,
    /// `compute.regionOperations.get`
    RegionOperationsGet,
    /// `compute.regionOperations.wait`
    RegionOperationsWait,
    /// `compute.zones.list`
    ZonesList,
    /// `compute.zones.get`
    ZonesGet,
    /// `compute.regions.list`
    RegionsList,
    /// `compute.regions.get`
    RegionsGet,
    /// `compute.machineTypes.list`
    MachineTypesList,
    /// `compute.machineTypes.get`
    MachineTypesGet,
    /// `compute.machineTypes.aggregatedList`
    MachineTypesAggregatedList,
}

impl Call {
    /// The method's id in the Compute Engine discovery document, e.g. `compute.instances.insert`.
    pub fn method_id(self) -> &'static str {
        use Call::*;
        match self {
            InstancesInsert => "compute.instances.insert",
            InstancesGet => "compute.instances.get",
            InstancesDelete => "compute.instances.delete",
            InstancesList => "compute.instances.list",
            InstancesAggregatedList => "compute.instances.aggregatedList",
            InstancesSetLabels => "compute.instances.setLabels",
            ReservationsInsert => "compute.reservations.insert",
            ReservationsGet => "compute.reservations.get",
            ReservationsDelete => "compute.reservations.delete",
            ReservationsList => "compute.reservations.list",
            ReservationsAggregatedList => "compute.reservations.aggregatedList",
            ReservationsUpdate => "compute.reservations.update",
            DisksGet => "compute.disks.get",
            DisksDelete => "compute.disks.delete",
            DisksList => "compute.disks.list",
            DisksAggregatedList => "compute.disks.aggregatedList",
            FirewallsInsert => "compute.firewalls.insert",
            FirewallsGet => "compute.firewalls.get",
            FirewallsDelete => "compute.firewalls.delete",
            FirewallsList => "compute.firewalls.list",
            ZoneOperationsGet => "compute.zoneOperations.get",
            ZoneOperationsWait => "compute.zoneOperations.wait",
            GlobalOperationsGet => "compute.globalOperations.get",
            GlobalOperationsWait => "compute.globalOperations.wait",
            RegionOperationsGet => "compute.regionOperations.get",
            RegionOperationsWait => "compute.regionOperations.wait",
            ZonesList => "compute.zones.list",
            ZonesGet => "compute.zones.get",
            RegionsList => "compute.regions.list",
            RegionsGet => "compute.regions.get",
            MachineTypesList => "compute.machineTypes.list",
            MachineTypesGet => "compute.machineTypes.get",
            MachineTypesAggregatedList => "compute.machineTypes.aggregatedList",
        }
    }

    /// Whether the method answers with an Operation (the mutating ones).
    pub fn returns_operation(self) -> bool {
        use Call::*;
        matches!(
            self,
            InstancesInsert
                | InstancesDelete
                | InstancesSetLabels
                | ReservationsInsert
                | ReservationsDelete
                | ReservationsUpdate
                | DisksDelete
                | FirewallsInsert
                | FirewallsDelete
        )
    }
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.method_id())
    }
}

/// Where an injected error shows up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Delivery {
    /// The call itself fails with this HTTP status and Google's error body, the code as
    /// `errors[].reason` (`quotaExceeded`, `rateLimitExceeded`, …).
    Sync {
        /// The HTTP status of the answer.
        status: u16,
    },
    /// The call is accepted (200 and an Operation) and nothing is made; the operation ends `DONE`
    /// with the code in `error.errors[].code` (`ZONE_RESOURCE_POOL_EXHAUSTED`, `QUOTA_EXCEEDED`,
    /// …) and this status in `httpErrorStatusCode`. On a call that returns no Operation it is
    /// delivered as [`Delivery::Sync`] with the same status.
    InOperation {
        /// `httpErrorStatusCode` of the finished operation.
        http_status: u16,
    },
}

/// One injected error: the next `times` calls of `call` (in `zone`, if given) fail so.
///
/// Rules are tried in the order they were added; the first that matches and still has `times`
/// left fires. A replayed `requestId` answers with its original operation and never fires a rule.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct FaultRule {
    /// The method it applies to.
    pub call: Call,
    /// Only calls in this zone (the zone of the request path); `None` for any.
    pub zone: Option<String>,
    /// How many calls it still fails.
    pub times: u32,
    /// The error code: an operation error code for [`Delivery::InOperation`], a reason for
    /// [`Delivery::Sync`].
    pub code: String,
    /// The message; empty for the emulator's wording for known codes.
    pub message: String,
    /// Where the error shows up.
    pub delivery: Delivery,
}

impl FaultRule {
    /// An error inside the `DONE` operation, with the `httpErrorStatusCode` GCE pairs with the
    /// code: 503 for the `*_RESOURCE_POOL_EXHAUSTED*` stockouts, 403 for `QUOTA_EXCEEDED`, 404
    /// for `RESOURCE_NOT_FOUND`, 400 otherwise. Fires once; see [`FaultRule::times`].
    pub fn in_operation(call: Call, code: &str) -> FaultRule {
        let http_status = match code {
            c if c.contains("RESOURCE_POOL_EXHAUSTED") => 503,
            "QUOTA_EXCEEDED" => 403,
            "RESOURCE_NOT_FOUND" => 404,
            _ => 400,
        };
        FaultRule {
            call,
            zone: None,
            times: 1,
            code: code.to_string(),
            message: String::new(),
            delivery: Delivery::InOperation { http_status },
        }
    }

    /// A synchronous HTTP error with `reason` in `errors[].reason`. Fires once.
    pub fn sync(call: Call, status: u16, reason: &str) -> FaultRule {
        FaultRule {
            call,
            zone: None,
            times: 1,
            code: reason.to_string(),
            message: String::new(),
            delivery: Delivery::Sync { status },
        }
    }

    /// Only in `zone`.
    pub fn zone(mut self, zone: &str) -> FaultRule {
        self.zone = Some(zone.to_string());
        self
    }

    /// Fires `n` times.
    pub fn times(mut self, n: u32) -> FaultRule {
        self.times = n;
        self
    }

    /// With this message instead of the emulator's wording.
    pub fn message(mut self, message: &str) -> FaultRule {
        self.message = message.to_string();
        self
    }

    /// With this `httpErrorStatusCode` (for [`Delivery::InOperation`]) or HTTP status.
    pub fn http_status(mut self, status: u16) -> FaultRule {
        self.delivery = match self.delivery {
            Delivery::Sync { .. } => Delivery::Sync { status },
            Delivery::InOperation { .. } => Delivery::InOperation {
                http_status: status,
            },
        };
        self
    }
}

/// One request the emulator received, as the client sent it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RequestRecord {
    /// `GET`, `POST`, `DELETE`.
    pub method: String,
    /// The decoded path, e.g. `/compute/v1/projects/p/zones/z/instances`.
    pub path: String,
    /// The decoded query parameters, in order (`requestId`, `filter`, `$alt`, …).
    pub query: Vec<(String, String)>,
    /// The request headers, names as sent (`authorization` shows what credentials the client
    /// sent; anonymous clients send none).
    pub headers: Vec<(String, String)>,
    /// The JSON body, if there was one and it parsed.
    pub body: Option<serde_json::Value>,
    /// The method it was routed to; `None` for paths the emulator does not serve.
    pub call: Option<Call>,
    /// The zone of the path, for zonal methods.
    pub zone: Option<String>,
    /// The HTTP status it was answered with.
    pub status: u16,
}

impl RequestRecord {
    /// The first value of query parameter `name`.
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}
