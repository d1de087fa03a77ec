//! Backends by name: what a backend is called, what its plan options look like, and the
//! registry that maps each name to its provisioner, capacity reservation and janitor.
//!
//! The engine and the plan loader know no backend by name except the two built in (`local` and
//! `static`). Every other backend — the clouds qa-run ships behind cargo features, or one an
//! embedding harness writes — is [registered](BackendRegistry::register) with a
//! [`BackendDescriptor`] (its plan options and what they ask of the run) and, once it is needed,
//! its [`Provisioner`], [`CapacityReservation`] and [`Janitor`].
//!
//! A name the build knows but does not include (a cloud whose cargo feature is off) is recorded
//! with [`BackendRegistry::absent`], so that a plan naming it is refused at load time with the
//! feature to turn on.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};

use async_trait::async_trait;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::capacity::CapacityReservation;
use crate::plan::schema::Shape;
use crate::provision::{ProvisionError, Provisioner};
use crate::types::Resource;

/// The name of a backend, as plans, tags, journals and messages spell it (`local`, `static`, or
/// the name a registered backend chose).
///
/// Names are few and live as long as the process, so they are interned: the type is `Copy` and
/// compares as cheaply as a pointer to a string.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendName(&'static str);

impl BackendName {
    /// The built-in backend of sandbox directories on this machine.
    pub const LOCAL: BackendName = BackendName("local");
    /// The built-in backend of hosts that already exist, reached over SSH.
    pub const STATIC: BackendName = BackendName("static");

    /// A name known at compile time.
    pub const fn new(name: &'static str) -> Self {
        BackendName(name)
    }

    /// A name read at run time (from a plan or a journal); interned once per distinct name.
    pub fn intern(name: &str) -> Self {
        static NAMES: OnceLock<Mutex<BTreeSet<&'static str>>> = OnceLock::new();
        let names = NAMES.get_or_init(Default::default);
        let mut names = names.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = names.get(name) {
            return BackendName(n);
        }
        let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
        names.insert(leaked);
        BackendName(leaked)
    }

    /// The name.
    pub fn as_str(self) -> &'static str {
        self.0
    }
}

impl fmt::Display for BackendName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl fmt::Debug for BackendName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.0, f)
    }
}

impl Serialize for BackendName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0)
    }
}

impl<'de> Deserialize<'de> for BackendName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(BackendName::intern(&s))
    }
}

impl From<&str> for BackendName {
    fn from(s: &str) -> Self {
        BackendName::intern(s)
    }
}

/// What a machine asks a capacity reservation for, read from its backend options.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReservationNeed {
    /// Region, for backends with regions (`None`: the reservation backend's default region).
    pub region: Option<String>,
    /// The instance type (machine type, VM size, shape) to reserve one of.
    pub instance_type: String,
    /// Zones in preference order (empty: any zone of the region that offers the type).
    pub zones: Vec<String>,
}

impl ReservationNeed {
    /// One instance of `instance_type`, in `region` (or the default one), in any of `zones`.
    pub fn new(
        region: Option<String>,
        instance_type: impl Into<String>,
        zones: Vec<String>,
    ) -> Self {
        ReservationNeed {
            region,
            instance_type: instance_type.into(),
            zones,
        }
    }
}

/// One problem a backend found in its plan options, at a key path below its options block
/// (`volumes[1].type`; empty for the block itself).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct OptionProblem {
    /// Key path inside the options block.
    pub key_path: String,
    /// What is wrong.
    pub message: String,
    /// What to do, if there is something to say.
    pub hint: Option<String>,
}

impl OptionProblem {
    /// A problem at `key_path`.
    pub fn new(
        key_path: impl Into<String>,
        message: impl Into<String>,
        hint: Option<String>,
    ) -> Self {
        OptionProblem {
            key_path: key_path.into(),
            message: message.into(),
            hint,
        }
    }
}

/// What the plan loader and the engine know of a backend before any of its clients exist: its
/// name, the shape of its options block in a machine (`my-cloud:`), the checks a plan
/// must pass before the run touches anything, and what a machine asks to be reserved.
///
/// # Contract
/// - Everything here is pure: no I/O, no credentials, no network; `qa-run validate` calls it.
/// - `check_options` reports every problem at once; the loader has already checked the options
///   against `options_shape`, so the value has that shape.
pub trait BackendDescriptor: Send + Sync + fmt::Debug + 'static {
    /// The backend's name; also the key of its options block in a machine.
    fn name(&self) -> BackendName;

    /// The shape of the options block, or `None` if machines of this backend take none.
    fn options_shape(&self) -> Option<&'static Shape> {
        None
    }

    /// Whether a machine of this backend must have an options block.
    fn requires_options(&self) -> bool {
        false
    }

    /// What the backend's API would refuse only after the run has begun making things.
    fn check_options(&self, options: &serde_json::Value) -> Vec<OptionProblem> {
        let _ = options;
        Vec::new()
    }

    /// What a machine with these options asks to be reserved before it is made (`None`: no
    /// reservation).
    fn reservation_need(&self, options: Option<&serde_json::Value>) -> Option<ReservationNeed> {
        let _ = options;
        None
    }

    /// Whether machines are made by a cloud: billed, tagged, swept by tag, and just born when
    /// first reached (their first logins may be refused while they boot).
    fn is_cloud(&self) -> bool {
        false
    }
}

/// A backend that takes no options and reserves nothing: the default descriptor of a
/// provisioner registered on its own.
#[derive(Debug, Clone, Copy)]
pub struct PlainBackend(pub BackendName);

impl BackendDescriptor for PlainBackend {
    fn name(&self) -> BackendName {
        self.0
    }
}

/// Where a sweep or a cancel by test id looks.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum SweepScope<'a> {
    /// The backend's configured region (or everywhere, for backends without regions).
    Configured,
    /// Every region of the account.
    AllRegions,
    /// Where a run's journal `records` say it made something, and the configured region.
    Run(&'a [Resource]),
}

/// A resource that outlived its keep-until tag.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExpiredResource {
    /// Region it is in (empty for backends without regions).
    pub region: String,
    /// Kind (`instance`, `volume`, `reservation`, …).
    pub kind: String,
    /// The backend's id.
    pub id: String,
    /// Its test id tag.
    pub test_id: Option<String>,
    /// Its keep-until tag (RFC 3339).
    pub keep_until: String,
}

impl ExpiredResource {
    /// A listed resource.
    pub fn new(
        region: impl Into<String>,
        kind: impl Into<String>,
        id: impl Into<String>,
        test_id: Option<String>,
        keep_until: impl Into<String>,
    ) -> Self {
        ExpiredResource {
            region: region.into(),
            kind: kind.into(),
            id: id.into(),
            test_id,
            keep_until: keep_until.into(),
        }
    }
}

/// Finds and removes what a backend's runs left past their keep-until tag.
///
/// # Contract
/// - `expired` lists only what carries qa-run's `created-by` tag and a keep-until before
///   `cutoff_unix`; it removes nothing.
/// - `remove_expired` removes exactly what `expired` would list (by test id, so everything of an
///   expired run goes together) and returns a line per resource removed. It is idempotent.
#[async_trait]
pub trait Janitor: Send + Sync + fmt::Debug + 'static {
    /// Regions to look in when asked for all of them; backends without regions return one
    /// empty name.
    async fn regions(&self) -> Result<Vec<String>, ProvisionError>;

    /// The configured region (empty for backends without regions).
    fn default_region(&self) -> String;

    /// What outlived its keep-until in `region`.
    async fn expired(
        &self,
        region: &str,
        cutoff_unix: i64,
    ) -> Result<Vec<ExpiredResource>, ProvisionError>;

    /// Removes what [`Janitor::expired`] lists in `region`.
    async fn remove_expired(
        &self,
        region: &str,
        cutoff_unix: i64,
    ) -> Result<Vec<String>, ProvisionError>;
}

/// One registered backend: its descriptor and, once built, its clients.
#[derive(Clone)]
pub struct Backend {
    descriptor: Arc<dyn BackendDescriptor>,
    provisioner: Option<Arc<dyn Provisioner>>,
    reservation: Option<Arc<dyn CapacityReservation>>,
    janitor: Option<Arc<dyn Janitor>>,
}

impl fmt::Debug for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Backend")
            .field("name", &self.descriptor.name())
            .field("provisioner", &self.provisioner.is_some())
            .field("reservation", &self.reservation.is_some())
            .field("janitor", &self.janitor.is_some())
            .finish()
    }
}

impl Backend {
    /// A backend described by `descriptor`, with no clients yet.
    pub fn new(descriptor: Arc<dyn BackendDescriptor>) -> Self {
        Backend {
            descriptor,
            provisioner: None,
            reservation: None,
            janitor: None,
        }
    }

    /// A backend that takes no plan options, served by `provisioner`.
    pub fn plain(provisioner: Arc<dyn Provisioner>) -> Self {
        Backend::new(Arc::new(PlainBackend(provisioner.backend()))).with_provisioner(provisioner)
    }

    /// Sets the provisioner.
    pub fn with_provisioner(mut self, p: Arc<dyn Provisioner>) -> Self {
        self.provisioner = Some(p);
        self
    }

    /// Sets the capacity reservation.
    pub fn with_reservation(mut self, r: Arc<dyn CapacityReservation>) -> Self {
        self.reservation = Some(r);
        self
    }

    /// Sets the janitor.
    pub fn with_janitor(mut self, j: Arc<dyn Janitor>) -> Self {
        self.janitor = Some(j);
        self
    }

    /// The name.
    pub fn name(&self) -> BackendName {
        self.descriptor.name()
    }

    /// The descriptor.
    pub fn descriptor(&self) -> &Arc<dyn BackendDescriptor> {
        &self.descriptor
    }

    /// The provisioner, once set.
    pub fn provisioner(&self) -> Option<&Arc<dyn Provisioner>> {
        self.provisioner.as_ref()
    }

    /// The capacity reservation, once set and enabled.
    pub fn reservation(&self) -> Option<&Arc<dyn CapacityReservation>> {
        self.reservation.as_ref().filter(|r| r.is_enabled())
    }

    /// The janitor, once set.
    pub fn janitor(&self) -> Option<&Arc<dyn Janitor>> {
        self.janitor.as_ref()
    }
}

/// Why a backend could not be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// Two registrations claim one name.
    #[error("backend `{name}` is registered twice")]
    Duplicate {
        /// The name.
        name: BackendName,
    },
    /// A client was given for a backend that was never registered.
    #[error("backend `{name}` is not registered")]
    NotRegistered {
        /// The name.
        name: BackendName,
    },
}

/// Every backend a build (or an embedding harness) has, by name, plus the names it knows but
/// lacks. [`BackendRegistry::new`] holds the two built-in backends' descriptors.
#[derive(Clone, Debug)]
pub struct BackendRegistry {
    backends: BTreeMap<BackendName, Backend>,
    absent: BTreeMap<BackendName, String>,
}

impl Default for BackendRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl BackendRegistry {
    /// The built-in backends `local` and `static`, with no clients yet.
    pub fn new() -> Self {
        let mut backends = BTreeMap::new();
        for name in [BackendName::LOCAL, BackendName::STATIC] {
            backends.insert(name, Backend::new(Arc::new(PlainBackend(name))));
        }
        BackendRegistry {
            backends,
            absent: BTreeMap::new(),
        }
    }

    /// Adds a backend. A name registered before is an error, whatever the two registrations
    /// hold (use [`BackendRegistry::set_provisioner`] and its siblings to give clients to a
    /// registered backend); registering a name recorded as absent makes it present.
    pub fn register(&mut self, backend: Backend) -> Result<&mut Self, RegistryError> {
        let name = backend.name();
        let builtin_unclaimed = matches!(name, BackendName::LOCAL | BackendName::STATIC)
            && self
                .backends
                .get(&name)
                .is_some_and(|b| b.provisioner.is_none());
        if self.backends.contains_key(&name) && !builtin_unclaimed {
            return Err(RegistryError::Duplicate { name });
        }
        self.absent.remove(&name);
        self.backends.insert(name, backend);
        Ok(self)
    }

    /// Records a backend this build knows of but does not include, with the cargo feature that
    /// would include it.
    pub fn absent(&mut self, name: BackendName, feature: impl Into<String>) -> &mut Self {
        if !self.backends.contains_key(&name) {
            self.absent.insert(name, feature.into());
        }
        self
    }

    /// Sets the provisioner of a backend: of its own registered backend, or a new plain one.
    pub fn set_provisioner(&mut self, p: Arc<dyn Provisioner>) -> &mut Self {
        let name = p.backend();
        self.absent.remove(&name);
        match self.backends.get_mut(&name) {
            Some(b) => b.provisioner = Some(p),
            None => {
                self.backends.insert(name, Backend::plain(p));
            }
        }
        self
    }

    /// Sets the capacity reservation of a registered backend.
    pub fn set_reservation(
        &mut self,
        r: Arc<dyn CapacityReservation>,
    ) -> Result<&mut Self, RegistryError> {
        let name = r.backend();
        let b = self
            .backends
            .get_mut(&name)
            .ok_or(RegistryError::NotRegistered { name })?;
        b.reservation = Some(r);
        Ok(self)
    }

    /// Sets the janitor of a registered backend.
    pub fn set_janitor(
        &mut self,
        name: BackendName,
        j: Arc<dyn Janitor>,
    ) -> Result<&mut Self, RegistryError> {
        let b = self
            .backends
            .get_mut(&name)
            .ok_or(RegistryError::NotRegistered { name })?;
        b.janitor = Some(j);
        Ok(self)
    }

    /// A registered backend.
    pub fn get(&self, name: BackendName) -> Option<&Backend> {
        self.backends.get(&name)
    }

    /// The provisioner of a backend, if registered and built.
    pub fn provisioner(&self, name: BackendName) -> Option<&Arc<dyn Provisioner>> {
        self.get(name).and_then(Backend::provisioner)
    }

    /// The enabled capacity reservation of a backend, if registered and built.
    pub fn reservation(&self, name: BackendName) -> Option<&Arc<dyn CapacityReservation>> {
        self.get(name).and_then(Backend::reservation)
    }

    /// Every registered backend, by name.
    pub fn iter(&self) -> impl Iterator<Item = &Backend> {
        self.backends.values()
    }

    /// The cargo feature of a backend this build lacks.
    pub fn absent_feature(&self, name: BackendName) -> Option<&str> {
        self.absent.get(&name).map(String::as_str)
    }

    /// Every name a plan may use: registered and absent ones.
    pub fn names(&self) -> impl Iterator<Item = BackendName> + '_ {
        self.backends.keys().chain(self.absent.keys()).copied()
    }

    /// Whether machines of `name` are made by a cloud.
    pub fn is_cloud(&self, name: BackendName) -> bool {
        self.get(name).is_some_and(|b| b.descriptor.is_cloud())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_read_at_run_time_are_interned_once_and_compare_equal_to_constants() {
        let a = BackendName::intern("local");
        assert_eq!(a, BackendName::LOCAL);
        let x = BackendName::intern("my-cloud");
        let y = BackendName::intern(&String::from("my-cloud"));
        assert!(std::ptr::eq(x.as_str(), y.as_str()));
        let json = serde_json::to_string(&x).unwrap();
        assert_eq!(json, "\"my-cloud\"");
        assert_eq!(serde_json::from_str::<BackendName>(&json).unwrap(), x);
    }

    #[test]
    fn a_second_registration_of_one_name_is_refused() {
        let mut r = BackendRegistry::new();
        let mine = BackendName::new("mine");
        r.register(Backend::new(Arc::new(PlainBackend(mine))))
            .unwrap();
        let e = r
            .register(Backend::new(Arc::new(PlainBackend(mine))))
            .unwrap_err();
        assert_eq!(e, RegistryError::Duplicate { name: mine });
        assert_eq!(e.to_string(), "backend `mine` is registered twice");
    }

    #[test]
    fn an_absent_backend_names_its_feature_until_it_is_registered() {
        let mut r = BackendRegistry::new();
        let cloud = BackendName::new("far-cloud");
        r.absent(cloud, "far-cloud");
        assert_eq!(r.absent_feature(cloud), Some("far-cloud"));
        assert!(r.names().any(|n| n == cloud));
        r.register(Backend::new(Arc::new(PlainBackend(cloud))))
            .unwrap();
        assert_eq!(r.absent_feature(cloud), None);
    }
}
