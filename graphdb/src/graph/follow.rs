//! Following another instance's writes in memory, and replaying a feed.
//!
//! Several instances of the directory run on one database; one writes, the others follow its
//! change log ([`GraphStore::follow`]). A follower applies each event to the namespace it
//! touches with the same code as [`GraphStore::replay`] (the write that the event records,
//! validated the same way), with the engine left out: the writer stored the change, and
//! this instance only brings its memory to what the engine holds. An event that cannot be
//! applied so (an import, which records counts, not rows; or one that memory refuses), or a
//! namespace whose memory may be ahead of the engine (a write of this instance, when it was
//! the writer, failed and memory could not be reloaded then: the database was away), makes
//! the namespace reload from the engine instead, as every event did before (a reload costs
//! the namespace's size, not the event's).

use std::cell::Cell;
use std::collections::BTreeSet;
use std::sync::atomic::Ordering;

use engine::WriteBatch;

use super::namespace::Namespace;
use super::state::State;
use super::storage;
use super::store::GraphStore;
use crate::changes::{Change, ChangeKind, Recorder};
use crate::{Error, Result};

thread_local! {
    /// Set while this thread applies a followed event: [`Namespace::write`] then changes
    /// memory only. A flag rather than a second set of write methods, so that the follower
    /// runs exactly the code the replay property tests check.
    static IN_MEMORY: Cell<bool> = const { Cell::new(false) };
}

/// Whether the current thread applies a followed event (memory only).
pub(super) fn replaying_in_memory() -> bool {
    IN_MEMORY.with(Cell::get)
}

/// Clears the flag when dropped, also on a panic.
struct InMemory;

impl InMemory {
    fn set() -> Self {
        IN_MEMORY.with(|flag| flag.set(true));
        InMemory
    }
}

impl Drop for InMemory {
    fn drop(&mut self) {
        IN_MEMORY.with(|flag| flag.set(false));
    }
}

impl Namespace {
    /// A write's change applied to memory only: validated and applied as by the writer, its
    /// batch and events dropped (the writer stored them).
    pub(super) fn apply_followed<T>(
        &self,
        actor: &str,
        f: impl FnOnce(&mut State, &mut WriteBatch, &mut Recorder<'_>) -> Result<T>,
    ) -> Result<T> {
        let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let mut recorder = Recorder::new(&self.name, actor);
        let mut state = self.write_state();
        state.advance(self.clock.now_seconds());
        let out = f(&mut state, &mut WriteBatch::new(), &mut recorder)?;
        // The closures it changed were stored by the writer with the event.
        state.dirty.clear();
        Ok(out)
    }
}

/// Applies `change` to `ns` as the write it records (with the event's actor). Returns
/// `false` for an import, which records counts, not rows.
pub(super) fn apply(ns: &Namespace, change: &Change) -> Result<bool> {
    use ChangeKind as K;
    let actor = change.actor.as_str();
    let missing = |reason| Error::Corrupt {
        keyspace: storage::CHANGES,
        key: Vec::new(),
        reason,
    };
    if let Some((name, kind)) = change.node() {
        match change.kind {
            K::TeamRemoved
            | K::PersonRemoved
            | K::SetRemoved
            | K::PackageRemoved
            | K::GroupRemoved
            | K::LeafRemoved => ns.remove_node(actor, name).map(drop)?,
            _ if change.cycles.as_deref() == Some("allow") => {
                ns.add_group_with_cycles(actor, name, true).map(drop)?
            }
            _ => ns.add_node(actor, name, kind).map(drop)?,
        }
        return Ok(true);
    }
    let edge = || -> Result<(&str, &str)> {
        Ok((
            change
                .group_name()
                .ok_or_else(|| missing("event without its group"))?,
            change
                .member_name()
                .ok_or_else(|| missing("event without its member"))?,
        ))
    };
    match change.kind {
        K::MembershipAdded | K::MembershipChanged | K::ItemAdded => {
            let (group, member) = edge()?;
            let after = change
                .after
                .ok_or_else(|| missing("membership without after"))?;
            let role = after.role.unwrap_or(super::types::Role::Member);
            let label = change.label.as_deref();
            ns.set_labelled_membership(actor, member, group, (role, after.expires), label)?;
        }
        K::MembershipRemoved | K::ItemRemoved => {
            let (group, member) = edge()?;
            ns.remove_membership(actor, member, group)?;
        }
        K::RelationGranted | K::RelationChanged => {
            let (target, holder) = edge()?;
            let relation = change
                .relation
                .as_deref()
                .ok_or_else(|| missing("no relation"))?;
            let after = change
                .after
                .ok_or_else(|| missing("relation without after"))?;
            ns.grant(actor, holder, relation, target, after.expires)?;
        }
        K::RelationRevoked => {
            let (target, holder) = edge()?;
            let relation = change
                .relation
                .as_deref()
                .ok_or_else(|| missing("no relation"))?;
            ns.revoke(actor, holder, relation, target)?;
        }
        _ => return Ok(false),
    }
    Ok(true)
}

/// What [`GraphStore::follow`] did.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct Followed {
    /// Events applied in memory.
    pub applied: usize,
    /// Namespaces reloaded from the engine (an import, or an event memory refused).
    pub reloaded: usize,
    /// The first event that memory refused, with the error (its namespace was reloaded):
    /// for the caller's log, since a state equal to the writer's never refuses one.
    pub refused: Option<(u64, Error)>,
}

impl GraphStore {
    /// A follower's step: `events` are the change log's stored events (the graph's and the
    /// log's other writers', as `(revision, payload)`, oldest first) that another instance
    /// wrote after what this one has applied. Each graph event is applied in memory to its
    /// namespace, if this process holds it, with the code of [`GraphStore::replay`] and
    /// nothing written; events the namespace's last load already held are skipped (its
    /// snapshot's revision). A namespace meeting an event it cannot apply so (an import; or
    /// an error, which a state equal to the writer's never gives) is reloaded from the
    /// engine after the batch (its nodes, edges and persisted closures, which include every
    /// event of the batch), and skips the rest of the batch. Namespaces not loaded yet load
    /// fresh on first use.
    ///
    /// # Errors
    /// Engine and corruption errors of a reload.
    pub fn follow(&self, events: &[(u64, Vec<u8>)]) -> Result<Followed> {
        let mut followed = Followed::default();
        let mut reload: BTreeSet<String> = BTreeSet::new();
        let in_memory = InMemory::set();
        for (revision, payload) in events {
            // The log's other writers (the commit graphs) have payloads of their own.
            let Some(change) = Change::from_payload(payload) else {
                continue;
            };
            if reload.contains(&change.namespace) {
                continue;
            }
            let Some(ns) = self.open_namespace(&change.namespace) else {
                continue;
            };
            if *revision <= ns.loaded_at.load(Ordering::SeqCst) {
                continue;
            }
            // A write of this instance failed (it was the writer) and memory could not go
            // back to the engine then (the database away): memory may hold it, so reload.
            if ns
                .poisoned
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_some()
            {
                reload.insert(change.namespace);
                continue;
            }
            match apply(&ns, &change) {
                Ok(true) => followed.applied += 1,
                Ok(false) => {
                    reload.insert(change.namespace);
                }
                Err(error) => {
                    followed.refused.get_or_insert((*revision, error));
                    reload.insert(change.namespace);
                }
            }
        }
        drop(in_memory);
        for name in &reload {
            if let Some(ns) = self.open_namespace(name) {
                ns.reload()?;
                // Memory is the engine's again: a refusal that said nothing about the
                // engine's health (fenced, the database away) no longer stands.
                if *ns.transient.lock().unwrap_or_else(|e| e.into_inner()) {
                    ns.clear_poison();
                }
                followed.reloaded += 1;
            }
        }
        Ok(followed)
    }

    /// Reloads every namespace this process holds from the engine: for a follower that
    /// missed events (pruned before it read them). Returns how many were reloaded.
    ///
    /// # Errors
    /// Engine and corruption errors of a reload.
    pub fn reload_all(&self) -> Result<usize> {
        let open = self.open_namespaces();
        for ns in &open {
            ns.reload()?;
        }
        Ok(open.len())
    }

    /// A new writer's step, after it caught up with the log ([`GraphStore::follow`]): a
    /// namespace that refused a write while another instance led (fenced) or the database
    /// was away reloads and accepts writes again. Returns how many namespaces still refuse
    /// writes (poisoned by a failed fsync, or their reload failed).
    ///
    /// A namespace that followed events in memory needs no reload: a node's id is the
    /// highest live id plus one, in the writer's memory as in a state loaded from the
    /// engine (removing the highest drops its slot), so applying the same events in the
    /// same order from a loaded state gives out the ids the writer stored
    /// (`tests/it/follow.rs` writes after a takeover and compares with a fresh load).
    pub fn take_over(&self) -> usize {
        self.open_namespaces()
            .iter()
            .filter(|ns| {
                ns.recover_if_transient();
                ns.poisoned
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .is_some()
            })
            .count()
    }
}
