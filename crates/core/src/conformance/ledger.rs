//! [`CheckingLedger`]: an in-memory [`ResourceLedger`] that notes every breach of the journaling
//! rules instead of trusting the backend to follow them.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;

use crate::journal::{JournalError, ResourceLedger};
use crate::types::{Resource, ResourceKey, ResourceState};

/// Called with each intent as it is recorded; returns why the intent came too late, if it did.
/// A backend's tests use it to check that the resource does not exist yet when its intent is
/// journaled (a local sandbox directory, an instance in an emulator).
pub type IntentProbe = Box<dyn Fn(&Resource) -> Result<(), String> + Send + Sync>;

/// One call the ledger received, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LedgerEvent {
    /// `intent` for a key.
    Intent(ResourceKey),
    /// `created` for a key, with the id.
    Created(ResourceKey, String),
    /// `destroyed` for a key.
    Destroyed(ResourceKey),
    /// `kept` for a key.
    Kept(ResourceKey),
}

#[derive(Default)]
struct Inner {
    resources: Vec<Resource>,
    intents: Vec<Resource>,
    events: Vec<LedgerEvent>,
    violations: Vec<String>,
}

/// A [`ResourceLedger`] for conformance suites: it records every call and every breach of the
/// rules (a `created` without an earlier `intent`, a key recorded twice, an unknown key, an intent
/// the probe says came after the resource existed). It still answers like a journal would, so the
/// backend under test cannot tell it apart.
#[derive(Default)]
pub struct CheckingLedger {
    inner: Mutex<Inner>,
    probe: Option<IntentProbe>,
}

impl std::fmt::Debug for CheckingLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let g = self.inner.lock().expect("ledger lock");
        f.debug_struct("CheckingLedger")
            .field("resources", &g.resources)
            .field("violations", &g.violations)
            .finish_non_exhaustive()
    }
}

impl CheckingLedger {
    /// An empty ledger.
    pub fn new() -> Self {
        Self::default()
    }

    /// A ledger holding `resources` as a journal read back from disk would.
    pub fn from_resources(resources: Vec<Resource>) -> Self {
        CheckingLedger {
            inner: Mutex::new(Inner {
                resources,
                ..Inner::default()
            }),
            probe: None,
        }
    }

    /// Runs `probe` on every intent when it is recorded.
    pub fn with_intent_probe(mut self, probe: IntentProbe) -> Self {
        self.probe = Some(probe);
        self
    }

    /// Every breach seen so far.
    pub fn violations(&self) -> Vec<String> {
        self.inner.lock().expect("ledger lock").violations.clone()
    }

    /// Every call, in order.
    pub fn events(&self) -> Vec<LedgerEvent> {
        self.inner.lock().expect("ledger lock").events.clone()
    }

    /// The resources as they were when their intent was recorded (what a journal holds after a
    /// crash between the intent and the create call).
    pub fn intents(&self) -> Vec<Resource> {
        self.inner.lock().expect("ledger lock").intents.clone()
    }

    /// Panics if any rule was broken.
    pub fn assert_clean(&self, who: &str) {
        let v = self.violations();
        assert!(
            v.is_empty(),
            "{who}: journaling rules broken:\n  {}",
            v.join("\n  ")
        );
    }

    fn update(
        &self,
        key: &ResourceKey,
        event: LedgerEvent,
        f: impl FnOnce(&mut Resource),
    ) -> Result<(), JournalError> {
        let mut g = self.inner.lock().expect("ledger lock");
        g.events.push(event.clone());
        match g.resources.iter_mut().find(|r| &r.key == key) {
            Some(r) => {
                f(r);
                Ok(())
            }
            None => {
                g.violations
                    .push(format!("{event:?} for a key that has no intent"));
                Err(JournalError::Resource(format!("unknown resource {key}")))
            }
        }
    }
}

#[async_trait]
impl ResourceLedger for CheckingLedger {
    async fn intent(&self, resource: Resource) -> Result<(), JournalError> {
        let late = self.probe.as_ref().and_then(|p| p(&resource).err());
        let mut g = self.inner.lock().expect("ledger lock");
        g.events.push(LedgerEvent::Intent(resource.key.clone()));
        if let Some(why) = late {
            g.violations.push(format!(
                "intent for {} recorded after the resource existed: {why}",
                resource.key
            ));
        }
        if resource.id.is_some() {
            g.violations
                .push(format!("intent for {} already carries an id", resource.key));
        }
        if g.resources.iter().any(|r| r.key == resource.key) {
            g.violations
                .push(format!("resource {} recorded twice", resource.key));
            return Err(JournalError::Resource(format!(
                "resource {} recorded twice",
                resource.key
            )));
        }
        let r = Resource {
            state: ResourceState::Intent,
            ..resource
        };
        g.intents.push(r.clone());
        g.resources.push(r);
        Ok(())
    }

    async fn created(
        &self,
        key: &ResourceKey,
        id: &str,
        details: BTreeMap<String, String>,
    ) -> Result<(), JournalError> {
        self.update(
            key,
            LedgerEvent::Created(key.clone(), id.to_string()),
            |r| {
                r.id = Some(id.to_string());
                r.details.extend(details);
                r.state = ResourceState::Created;
            },
        )
    }

    async fn destroyed(&self, key: &ResourceKey) -> Result<(), JournalError> {
        self.update(
            key,
            LedgerEvent::Destroyed(key.clone()),
            crate::journal::mark_destroyed,
        )
    }

    async fn kept(&self, key: &ResourceKey) -> Result<(), JournalError> {
        self.update(key, LedgerEvent::Kept(key.clone()), |r| {
            r.state = ResourceState::Kept
        })
    }

    fn resources(&self) -> Vec<Resource> {
        self.inner.lock().expect("ledger lock").resources.clone()
    }
}
