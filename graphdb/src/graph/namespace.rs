//! One namespace: writes (validated, applied in memory, one atomic batch) and views; its
//! checks and listings are in `inspect.rs`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use engine::{Chain, ChangeLog, Durability, Engine, WriteBatch};

use super::state::{active_at, State};
use super::storage;
use super::types::{
    validate_name, validate_relation, EdgeKind, NamespaceKind, NodeId, NodeKind, Role,
};
use super::view::View;
use crate::changes::Recorder;
use crate::{Error, Result};
use engine::Clock;

/// One namespace: its nodes, edges and index, in memory and in the engine.
///
/// Reads take a shared lock and never touch the engine. Writes are serialised by a writer
/// mutex; each takes the exclusive lock only to validate and update the in-memory state and
/// index, then writes the edge, the changed closures and the index time in one atomic batch
/// (buffered, in order) and, for synced writes, releases the writer mutex and waits for a group
/// sync shared with concurrent writers. Readers never wait for an fsync, so a reader may see a
/// write shortly before it is durable (and, if the engine write or sync fails, a write that is
/// then rolled back to what the engine holds); a writer's `Ok` always means durable as
/// configured.
#[derive(Debug)]
pub struct Namespace {
    pub(super) name: String,
    pub(super) id: u32,
    pub(super) kind: NamespaceKind,
    pub(super) engine: Arc<dyn Engine>,
    /// The directory's change log: every write appends its events through it, in its batch.
    pub(super) log: Arc<ChangeLog>,
    pub(super) ks: storage::Keyspaces,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) durability: Durability,
    /// Whether writes record their events ([`crate::GraphStore::set_record_changes`]).
    pub(super) record_changes: Arc<std::sync::atomic::AtomicBool>,
    pub(super) state: RwLock<State>,
    pub(super) writer: Mutex<()>,
    /// The namespace's batches in the log depend on one another (each was computed from the
    /// memory the previous ones changed): after a failure, the later ones are refused
    /// unwritten ([`engine::Chain`]), and a new chain starts from the reloaded state.
    pub(super) chain: Mutex<Arc<Chain>>,
    pub(super) poisoned: Mutex<Option<String>>,
    /// Whether the poisoning came from a transient refusal (fenced, database away) whose
    /// reload failed: the next write tries the reload again ([`Namespace::fail`]).
    pub(super) transient: Mutex<bool>,
    /// The newest change-log revision in the snapshot the state was last loaded from: a
    /// follower skips the events up to it, which memory already holds
    /// ([`crate::GraphStore::follow`]).
    pub(super) loaded_at: AtomicU64,
}

impl Namespace {
    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether it rejects cycles.
    pub fn kind(&self) -> NamespaceKind {
        self.kind
    }

    pub(super) fn read_state(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn write_state(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// A consistent view at the clock's "now": expiries up to now are applied first (in
    /// memory; the next write persists them).
    pub fn view(&self) -> View<'_> {
        let now = self.clock.now_seconds();
        loop {
            let state = self.read_state();
            if !state.needs_advance(now) {
                let now = now.max(state.applied);
                return View {
                    ns: self,
                    state,
                    now,
                };
            }
            drop(state);
            self.write_state().advance(now);
        }
    }

    /// A view at "now" if one is available without waiting: `None` while a writer holds or
    /// awaits the index, or when expiries are due (applying them is a write). For callers
    /// that must not block (an async handler), which then fall back to [`Namespace::view`] on
    /// a thread that may.
    pub fn try_view(&self) -> Option<View<'_>> {
        let now = self.clock.now_seconds();
        let state = match self.state.try_read() {
            Ok(state) => state,
            Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return None,
        };
        if state.needs_advance(now) {
            return None;
        }
        let now = now.max(state.applied);
        Some(View {
            ns: self,
            state,
            now,
        })
    }

    /// Runs a write: `f` validates, then mutates the state, adds its records to the batch and
    /// its events to the recorder; the changed closures and the index time are added, and the
    /// batch is appended to the change log with the events (one engine batch). Returns `f`'s
    /// value and the revision of the write's last event (the log's durable head when it
    /// recorded none).
    ///
    /// With [`Durability::Sync`] the batch is written buffered under the writer mutex (so
    /// batches reach the engine's log in the order their changes were applied in memory, and
    /// revisions follow that order), and the writer waits for a group sync after releasing
    /// it: concurrent writers, of this namespace or of others, share one fsync instead of
    /// queueing for one each. With [`Durability::Buffered`] nothing waits, and the feed shows
    /// the events once a later synced write of the store made them durable.
    pub(super) fn write<T>(
        &self,
        actor: &str,
        f: impl FnOnce(&mut State, &mut WriteBatch, &mut Recorder<'_>) -> Result<T>,
    ) -> Result<(T, u64)> {
        if super::follow::replaying_in_memory() {
            return Ok((self.apply_followed(actor, f)?, self.log.head()));
        }
        let (out, enqueued) = {
            // Writers queue here only for the in-memory change and for queueing its batch in
            // the log; readers only wait for the in-memory part.
            let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
            self.recover_if_transient();
            if let Some(cause) = &*self.poisoned.lock().unwrap_or_else(|e| e.into_inner()) {
                return Err(Error::Poisoned {
                    namespace: self.name.clone(),
                    cause: cause.clone(),
                });
            }
            let now = self.clock.now_seconds();
            let mut recorder = Recorder::new(&self.name, actor);
            let (out, batch) = {
                let mut state = self.write_state();
                state.advance(now);
                let mut batch = WriteBatch::new();
                let out = f(&mut state, &mut batch, &mut recorder)?;
                storage::persist_dirty(&self.ks, self.id, &mut state, &mut batch);
                (out, batch)
            };
            let entries = if self
                .record_changes
                .load(std::sync::atomic::Ordering::Relaxed)
            {
                recorder.into_entries(self.ks.history)
            } else {
                Vec::new()
            };
            // Queued under the writer mutex, so the log writes the batches in the order their
            // changes were applied in memory (revision order is that order too); written
            // after it is released, so the next writer applies its change meanwhile and the
            // log may write both as one engine batch. The chain keeps a batch computed after
            // a failed one out of the engine.
            let chain = Arc::clone(&self.chain.lock().unwrap_or_else(|e| e.into_inner()));
            (out, self.log.enqueue(batch, entries, Some(&chain)))
        };
        let appended = match self.log.finish(enqueued) {
            Ok(appended) => appended,
            Err(error) => {
                let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
                return Err(self.fail(error));
            }
        };
        if self.durability == Durability::Buffered {
            let revision = appended.last_revision().unwrap_or_else(|| self.log.head());
            drop(appended);
            return Ok((out, revision));
        }
        match self.log.sync(appended) {
            Ok(revision) => Ok((out, revision)),
            Err(error) => {
                let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
                Err(self.fail(error))
            }
        }
    }

    /// After a failed engine write or sync (call it holding the writer mutex): memory is ahead
    /// of the engine, so go back to what the engine holds and refuse further writes. Every
    /// writer whose change was in memory when the failure struck fails too and comes here
    /// after its own change, so the last reload follows every change that was not acknowledged.
    ///
    /// A refusal that says nothing about the engine's health ([`engine::Error::is_transient`]:
    /// fenced, another instance leads; the database out of reach, or a commit cut by a lost
    /// connection found not to have landed: nothing applied) does not poison the namespace once memory
    /// is back to what the engine holds; while that reload cannot be done (the database is
    /// still away) the namespace refuses writes, and the next write tries the reload again.
    pub(super) fn fail(&self, error: engine::Error) -> Error {
        let transient = error.is_transient();
        *self.poisoned.lock().unwrap_or_else(|e| e.into_inner()) = Some(error.to_string());
        *self.transient.lock().unwrap_or_else(|e| e.into_inner()) = transient;
        // Batches of this namespace still queued are refused unwritten (they were computed
        // from memory that the reload discards), and the reload waits until the log has
        // dealt with every one of them (an empty batch queued behind them on the broken
        // chain: the log answers in queue order), so none reaches the engine after it.
        // Writes admitted from now on start from the reloaded state, on a new chain.
        let old = std::mem::take(&mut *self.chain.lock().unwrap_or_else(|e| e.into_inner()));
        old.break_with(&error);
        let barrier = self.log.enqueue(WriteBatch::new(), Vec::new(), Some(&old));
        let _refused = self.log.finish(barrier);
        if self.reload().is_ok() && transient {
            self.clear_poison();
        }
        error.into()
    }

    /// Replaces the in-memory state with what the engine holds now (nodes, edges and the
    /// persisted closures: no index rebuild). For a follower, after another instance wrote
    /// the namespace; and after a failed write. The state only moves forward: the engine
    /// holds at least what memory showed before.
    ///
    /// # Errors
    /// Engine and corruption errors; the state is unchanged then.
    pub fn reload(&self) -> Result<()> {
        let (fresh, revision) = {
            let view = self.engine.snapshot()?;
            let revision = self.log.newest_in(&*view)?;
            (storage::load(&*view, &self.ks, self.id)?, revision)
        };
        *self.write_state() = fresh;
        self.loaded_at.fetch_max(revision, Ordering::SeqCst);
        Ok(())
    }

    /// A new writer's first step (see [`crate::GraphStore::take_over`]): a namespace refused
    /// by a transient failure reloads and writes again.
    pub(super) fn recover_if_transient(&self) {
        let transient = *self.transient.lock().unwrap_or_else(|e| e.into_inner());
        let poisoned = self
            .poisoned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some();
        if transient && poisoned && self.reload().is_ok() {
            self.clear_poison();
        }
    }

    pub(super) fn clear_poison(&self) {
        *self.poisoned.lock().unwrap_or_else(|e| e.into_inner()) = None;
        *self.transient.lock().unwrap_or_else(|e| e.into_inner()) = false;
    }

    pub(super) fn unknown(&self, name: &str) -> Error {
        Error::UnknownNode {
            namespace: self.name.clone(),
            name: name.to_owned(),
        }
    }

    pub(super) fn wrong_kind(&self, name: &str, found: NodeKind, expected: NodeKind) -> Error {
        Error::WrongKind {
            namespace: self.name.clone(),
            name: name.to_owned(),
            found,
            expected,
        }
    }

    pub(super) fn resolve(&self, state: &State, name: &str) -> Result<u32> {
        state.id(name).ok_or_else(|| self.unknown(name))
    }

    pub(super) fn resolve_group(&self, state: &State, name: &str) -> Result<u32> {
        let id = self.resolve(state, name)?;
        match state.node(id).map(|n| n.kind) {
            Some(NodeKind::Group) => Ok(id),
            Some(found) => Err(self.wrong_kind(name, found, NodeKind::Group)),
            None => Err(self.unknown(name)),
        }
    }

    /// Adds a node; adding one that exists with the same kind returns its id (and records no
    /// event). Returns the id and the revision.
    ///
    /// # Errors
    /// [`crate::Error::InvalidName`], [`crate::Error::WrongKind`] when it exists with the other kind,
    /// [`crate::Error::IdsExhausted`], engine errors.
    pub fn add_node(&self, actor: &str, name: &str, kind: NodeKind) -> Result<(NodeId, u64)> {
        validate_name(name)?;
        self.write(actor, |state, batch, events| {
            if let Some(id) = state.id(name) {
                let found = state.node(id).map_or(kind, |n| n.kind);
                return if found == kind {
                    Ok(NodeId(id))
                } else {
                    Err(self.wrong_kind(name, found, kind))
                };
            }
            self.create_node(state, batch, events, name, kind)
                .map(NodeId)
        })
    }

    /// Creates the node `name` (the caller checked that the name is free and valid).
    pub(super) fn create_node(
        &self,
        state: &mut State,
        batch: &mut WriteBatch,
        events: &mut Recorder<'_>,
        name: &str,
        kind: NodeKind,
    ) -> Result<u32> {
        let id = state.next_id().ok_or_else(|| Error::IdsExhausted {
            namespace: self.name.clone(),
        })?;
        state.insert_node(id, name, kind);
        events.node_created(name, kind);
        batch.put(
            self.ks.nodes,
            storage::node_key(self.id, id),
            storage::node_value(kind, name),
        );
        Ok(id)
    }

    /// Removes a node with every edge at either end; the pairs it supported leave the index.
    /// Returns the revision of its event, or `None` when it did not exist.
    ///
    /// # Errors
    /// Engine errors.
    pub fn remove_node(&self, actor: &str, name: &str) -> Result<Option<u64>> {
        let (existed, revision) = self.write(actor, |state, batch, events| {
            let Some(x) = state.id(name) else {
                return Ok(false);
            };
            let node = state.node(x).expect("named nodes are live").clone();
            let ns = self.id;
            batch.delete(self.ks.nodes, storage::node_key(ns, x));
            if state.cycles_allowed.contains(x) {
                batch.delete(self.ks.meta, storage::cycles_key(ns, x));
            }
            let prefix = storage::edges_of_key(ns, x);
            let end = engine::keys::prefix_successor(&prefix).expect("prefix has a successor");
            batch.delete_range(self.ks.edges, prefix, end);
            for l in node.down() {
                batch.delete(self.ks.edges, storage::membership_key(ns, l.other, x));
            }
            for (relation, _, holder) in state.relations.keys().filter(|(_, t, _)| *t == x) {
                batch.delete(
                    self.ks.edges,
                    storage::relation_key(ns, *holder, x, relation),
                );
            }
            let relations = state
                .relations
                .keys()
                .filter(|(_, t, h)| *t == x || *h == x);
            let edges = (node.up().len() + node.down().len() + relations.count()) as u64;
            events.node_removed(name, node.kind, edges);
            state.remove_node(x);
            Ok(true)
        })?;
        Ok(existed.then_some(revision))
    }

    /// The id of a node.
    pub fn id(&self, name: &str) -> Option<NodeId> {
        self.read_state().id(name).map(NodeId)
    }

    /// The name and kind of a node.
    pub fn node(&self, id: NodeId) -> Option<(String, NodeKind)> {
        let state = self.read_state();
        state
            .node(id.0)
            .map(|n| (state.name(id.0).to_string(), n.kind))
    }

    /// Adds the membership edge `member -> group`, or changes its role and expiry. An expiry
    /// at or before now stores the edge without counting it. Returns the revision (setting
    /// what is stored already records no event and returns the head).
    ///
    /// # Errors
    /// [`crate::Error::UnknownNode`], [`crate::Error::WrongKind`] when `group` is a leaf, [`crate::Error::Cycle`] in
    /// an acyclic namespace, engine errors.
    pub fn set_membership(
        &self,
        actor: &str,
        member: &str,
        group: &str,
        role: Role,
        expires: Option<i64>,
    ) -> Result<u64> {
        self.set_labelled_membership(actor, member, group, (role, expires), None)
    }

    /// [`Namespace::set_membership`] with an edge label (general graphs; `None`: no label).
    ///
    /// # Errors
    /// Those of [`Namespace::set_membership`], [`crate::Error::InvalidLabel`],
    /// [`crate::Error::LabelsExhausted`].
    pub fn set_labelled_membership(
        &self,
        actor: &str,
        member: &str,
        group: &str,
        (role, expires): (Role, Option<i64>),
        label: Option<&str>,
    ) -> Result<u64> {
        if let Some(label) = label {
            super::types::validate_label(label)?;
        }
        self.write(actor, |state, batch, events| {
            let m = self.resolve(state, member)?;
            let g = self.resolve_group(state, group)?;
            self.apply_membership(state, batch, events, (m, g), (role, expires), label)
        })
        .map(|((), revision)| revision)
    }

    /// Sets the membership edge `m -> g` (both exist, `g` is a group) with its label (general
    /// graphs), refusing a cycle before changing anything.
    pub(super) fn apply_membership(
        &self,
        state: &mut State,
        batch: &mut WriteBatch,
        events: &mut Recorder<'_>,
        (m, g): (u32, u32),
        (role, expires): (Role, Option<i64>),
        label: Option<&str>,
    ) -> Result<()> {
        let old = state.link(m, g);
        let was_active = old.is_some_and(|l| state.active(&l));
        let now_active = active_at(expires, state.applied);
        if now_active && !was_active && self.kind == NamespaceKind::Acyclic {
            self.check_no_cycle(state, m, g)?;
        }
        let label_id = state
            .label_id(label)
            .ok_or_else(|| Error::LabelsExhausted {
                namespace: self.name.clone(),
            })?;
        let old_label = old.and_then(|l| state.label(l.label)).map(str::to_owned);
        events.membership(
            state.name(g),
            state.name(m),
            old.map(|l| (l.role, l.expires())),
            Some((role, expires)),
            [old_label.as_deref(), label],
        );
        let affected = (was_active && !now_active).then(|| state.affected_by_loss(m));
        if old.is_some() {
            state.remove_link(m, g);
        }
        state.insert_labelled_link(m, g, role, label_id, expires);
        if let Some(affected) = affected {
            state.recompute(&affected);
        } else if now_active && !was_active {
            state.add_active(m, g);
        }
        batch.put(
            self.ks.edges,
            storage::membership_key(self.id, m, g),
            storage::labelled_edge_value(Some(role), label, expires),
        );
        Ok(())
    }

    /// Puts the edge `member -> group` (a membership with its role, or a relation) and creates
    /// whichever of the two nodes is missing, all in **one** batch: after a crash either the
    /// nodes it created and the edge are there, or none of them. `group` must be a group (it
    /// is created as one); `member_kind` is the kind `member` must have (`None`: any, and a
    /// new member is a leaf). Everything is validated before anything changes. Each created
    /// node and the edge get an event; returns the revision of the last.
    ///
    /// # Errors
    /// [`crate::Error::InvalidName`], [`crate::Error::InvalidRelation`], [`crate::Error::HasNoMembers`] when
    /// `group` is a leaf, [`crate::Error::WrongKind`] when `member` has the other kind,
    /// [`crate::Error::Cycle`] when `member == group` (even for a relation; [`crate::Error::WrongKind`] when
    /// `member_kind` is a leaf then) or the edge would close a
    /// cycle in an acyclic namespace, [`crate::Error::IdsExhausted`], engine errors.
    pub fn put_edge(
        &self,
        actor: &str,
        member: &str,
        member_kind: Option<NodeKind>,
        group: &str,
        kind: &EdgeKind,
        expires: Option<i64>,
    ) -> Result<u64> {
        validate_name(member)?;
        validate_name(group)?;
        if let EdgeKind::Relation(relation) = kind {
            validate_relation(relation)?;
        }
        if member == group {
            // One node cannot be both a new leaf and the group.
            if member_kind == Some(NodeKind::Leaf) {
                return Err(self.wrong_kind(member, NodeKind::Group, NodeKind::Leaf));
            }
            return Err(Error::Cycle {
                namespace: self.name.clone(),
                member: member.to_owned(),
                group: group.to_owned(),
                cycle: vec![group.to_owned(), group.to_owned()],
            });
        }
        self.write(actor, |state, batch, events| {
            let g = state.id(group);
            if let Some(g) = g {
                if state.node(g).map(|n| n.kind) == Some(NodeKind::Leaf) {
                    return Err(Error::HasNoMembers {
                        namespace: self.name.clone(),
                        name: group.to_owned(),
                    });
                }
            }
            let m = state.id(member);
            if let (Some(m), Some(expected)) = (m, member_kind) {
                let found = state.node(m).map_or(expected, |n| n.kind);
                if found != expected {
                    return Err(self.wrong_kind(member, found, expected));
                }
            }
            let new = u32::from(g.is_none()) + u32::from(m.is_none());
            if state
                .next_id()
                .is_none_or(|next| next.checked_add(new).is_none())
            {
                return Err(Error::IdsExhausted {
                    namespace: self.name.clone(),
                });
            }
            // Only an edge between two existing nodes can close a cycle (checked before any
            // change by `apply_membership`), so creating the missing nodes first is safe.
            let g = match g {
                Some(g) => g,
                None => self.create_node(state, batch, events, group, NodeKind::Group)?,
            };
            let m = match m {
                Some(m) => m,
                None => {
                    let kind = member_kind.unwrap_or(NodeKind::Leaf);
                    self.create_node(state, batch, events, member, kind)?
                }
            };
            match kind {
                EdgeKind::Membership(role) => {
                    self.apply_membership(state, batch, events, (m, g), (*role, expires), None)
                }
                EdgeKind::Relation(relation) => {
                    self.apply_grant(state, batch, events, (m, g), relation, expires);
                    Ok(())
                }
            }
        })
        .map(|((), revision)| revision)
    }

    pub(super) fn check_no_cycle(&self, state: &State, member: u32, group: u32) -> Result<()> {
        if member != group && !state.anc(group).contains(member) {
            return Ok(());
        }
        if !state.cycles_allowed.is_empty() {
            // The nodes on the cycles the edge closes: above `group` and below `member`.
            let mut on = state.anc(group).into_owned();
            on.insert(group);
            on &= state.self_and_desc(member);
            if on.is_subset(&state.cycles_allowed) {
                return Ok(());
            }
        }
        let mut cycle: Vec<String> = if member == group {
            vec![state.name(group).to_owned()]
        } else {
            state
                .path(group, member)
                .unwrap_or_default()
                .into_iter()
                .map(|x| state.name(x).to_owned())
                .collect()
        };
        cycle.push(state.name(group).to_owned());
        Err(Error::Cycle {
            namespace: self.name.clone(),
            member: state.name(member).to_owned(),
            group: state.name(group).to_owned(),
            cycle,
        })
    }

    /// Removes the membership edge `member -> group`; pairs that other paths support stay.
    /// Returns the revision of its event, or `None` when it did not exist.
    ///
    /// # Errors
    /// [`crate::Error::UnknownNode`], engine errors.
    pub fn remove_membership(&self, actor: &str, member: &str, group: &str) -> Result<Option<u64>> {
        let (existed, revision) = self.write(actor, |state, batch, events| {
            let m = self.resolve(state, member)?;
            let g = self.resolve(state, group)?;
            let Some(old) = state.link(m, g) else {
                return Ok(false);
            };
            let label = state.label(old.label).map(str::to_owned);
            events.membership(
                group,
                member,
                Some((old.role, old.expires())),
                None,
                [label.as_deref(), None],
            );
            let affected = state.active(&old).then(|| state.affected_by_loss(m));
            state.remove_link(m, g);
            if let Some(affected) = affected {
                state.recompute(&affected);
            }
            batch.delete(self.ks.edges, storage::membership_key(self.id, m, g));
            Ok(true)
        })?;
        Ok(existed.then_some(revision))
    }

    /// Grants `relation` on `target` to `holder` (adds or changes the expiry).
    ///
    /// # Errors
    /// [`crate::Error::InvalidRelation`], [`crate::Error::UnknownNode`], engine errors.
    pub fn grant(
        &self,
        actor: &str,
        holder: &str,
        relation: &str,
        target: &str,
        expires: Option<i64>,
    ) -> Result<u64> {
        validate_relation(relation)?;
        self.write(actor, |state, batch, events| {
            let h = self.resolve(state, holder)?;
            let t = self.resolve(state, target)?;
            self.apply_grant(state, batch, events, (h, t), relation, expires);
            Ok(())
        })
        .map(|((), revision)| revision)
    }

    fn apply_grant(
        &self,
        state: &mut State,
        batch: &mut WriteBatch,
        events: &mut Recorder<'_>,
        (h, t): (u32, u32),
        relation: &str,
        expires: Option<i64>,
    ) {
        let before = state.relations.insert((relation.into(), t, h), expires);
        events.relation(
            state.name(t),
            state.name(h),
            relation,
            before,
            Some(expires),
        );
        batch.put(
            self.ks.edges,
            storage::relation_key(self.id, h, t, relation),
            storage::edge_value(None, expires),
        );
    }

    /// Revokes a relation; returns the revision of its event, or `None` when it was not
    /// stored.
    ///
    /// # Errors
    /// [`crate::Error::UnknownNode`], engine errors.
    pub fn revoke(
        &self,
        actor: &str,
        holder: &str,
        relation: &str,
        target: &str,
    ) -> Result<Option<u64>> {
        let (existed, revision) = self.write(actor, |state, batch, events| {
            let h = self.resolve(state, holder)?;
            let t = self.resolve(state, target)?;
            let before = state.relations.remove(&(relation.into(), t, h));
            events.relation(target, holder, relation, before, None);
            let existed = before.is_some();
            if existed {
                batch.delete(
                    self.ks.edges,
                    storage::relation_key(self.id, h, t, relation),
                );
            }
            Ok(existed)
        })?;
        Ok(existed.then_some(revision))
    }
}
