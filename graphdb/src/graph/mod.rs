//! The generic graph store: namespaces of named nodes and typed, expiring edges, with an exact
//! reachability index over membership edges.
//!
//! A [`GraphStore`] opens on an engine and hands out [`Namespace`]s. Every node is a *leaf*
//! (a person, a package: it has no members) or a *group* (a team, a package set). A
//! membership edge `member -> group` carries a [`Role`] and an optional expiry; a relation
//! edge `holder -(relation)-> target` (such as `audits`) carries a name and an optional expiry
//! and never counts as membership.

mod state;
pub(crate) mod storage;

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use engine::{Durability, Engine, GroupCommit, WriteBatch};
use roaring::RoaringBitmap;

use state::active_at;
pub(crate) use state::State;

use crate::clock::{Clock, SystemClock};
use crate::{Error, Result};

/// The keyspaces of the graph store; declare them when opening the engine.
pub const KEYSPACES: &[&str] = &[
    storage::META,
    storage::NODES,
    storage::EDGES,
    storage::CLOSURE,
];

/// A node's dense id inside its namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub u32);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Whether a node can have members.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NodeKind {
    /// A node without members: a person, a package.
    Leaf,
    /// A node with members: a team, a package set.
    Group,
}

impl fmt::Display for NodeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NodeKind::Leaf => "leaf",
            NodeKind::Group => "group",
        })
    }
}

/// Whether a namespace rejects cycles of membership edges.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NamespaceKind {
    /// A membership edge that would close a cycle is rejected with [`Error::Cycle`].
    Acyclic,
    /// Cycles are accepted; the index treats a strongly connected component as one group.
    General,
}

/// The role of a membership edge; both confer membership.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// An ordinary member.
    Member,
    /// A member who administers the group.
    Admin,
}

impl Role {
    /// The name used in TSV files.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Member => "member",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = ();

    fn from_str(s: &str) -> std::result::Result<Self, ()> {
        match s {
            "member" => Ok(Role::Member),
            "admin" => Ok(Role::Admin),
            _ => Err(()),
        }
    }
}

/// Direct edges only, or the transitive closure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Depth {
    /// Only nodes joined by one active edge.
    Direct,
    /// Every node reachable over active edges.
    Transitive,
}

/// Which kinds of members a query returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Filter {
    /// Leaves only (persons, packages).
    Leaves,
    /// Groups only (teams, sets).
    Groups,
    /// Both.
    All,
}

/// One page of names sorted by byte order, with the cursor for the next page.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Page {
    /// The names.
    pub items: Vec<String>,
    /// Pass this as `after` to get the next page; `None` on the last page.
    pub next: Option<String>,
}

/// A stored edge, expired or not, by names: what export writes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct EdgeRecord {
    /// The group (membership) or target (relation).
    pub group: String,
    /// The member (membership) or holder (relation).
    pub member: String,
    /// The role, or the relation name.
    pub kind: EdgeKind,
    /// When it stops counting.
    pub expires: Option<i64>,
}

/// The kind of an edge.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EdgeKind {
    /// A membership edge with its role.
    Membership(Role),
    /// A relation edge (`audits`, `administers`, ...), never membership.
    Relation(String),
}

impl fmt::Display for EdgeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EdgeKind::Membership(role) => role.fmt(f),
            EdgeKind::Relation(name) => f.write_str(name),
        }
    }
}

/// A pair on which the index and a fresh BFS disagree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Difference {
    /// The member.
    pub member: String,
    /// The group.
    pub group: String,
    /// Whether the index holds the pair (and BFS does not), or the reverse.
    pub in_index: bool,
}

/// What [`Namespace::check`] found.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct CheckReport {
    /// Nodes checked.
    pub nodes: u64,
    /// (member, group) pairs found by BFS.
    pub pairs: u64,
    /// Every difference between the index and BFS (empty when the index is exact).
    pub differences: Vec<Difference>,
}

impl CheckReport {
    /// Whether the index agrees with BFS.
    pub fn is_clean(&self) -> bool {
        self.differences.is_empty()
    }
}

/// Sizes of the index, for capacity planning.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct IndexStats {
    /// Live nodes.
    pub nodes: u64,
    /// Stored membership edges (expired ones included).
    pub membership_edges: u64,
    /// (member, group) pairs in the closure.
    pub pairs: u64,
    /// (member, group) pairs whose member is a group: what the persisted closure holds.
    pub group_pairs: u64,
    /// Bytes of the persisted closure values: the groups' serialised roaring bitmaps, keys
    /// excluded (leaves are derived at load).
    pub closure_bytes: u64,
    /// Bytes the closure of every node would take serialised the same way (for comparison).
    pub full_closure_bytes: u64,
}

/// Opens a [`GraphStore`]: engine first, then optional settings.
#[derive(Debug)]
pub struct GraphStoreBuilder {
    engine: Arc<dyn Engine>,
    clock: Arc<dyn Clock>,
    durability: Durability,
}

impl GraphStoreBuilder {
    /// The clock used for expiry. Default: [`SystemClock`].
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The durability of every write. Default: [`Durability::Sync`].
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Opens the store. Namespaces are loaded when first asked for.
    ///
    /// # Errors
    /// [`Error::Engine`] when the engine lacks one of [`crate::KEYSPACES`].
    pub fn open(self) -> Result<GraphStore> {
        let ks = storage::Keyspaces::of(&*self.engine)?;
        Ok(GraphStore {
            committer: Arc::new(GroupCommit::new(Arc::clone(&self.engine))),
            engine: self.engine,
            ks,
            clock: self.clock,
            durability: self.durability,
            namespaces: Mutex::new(HashMap::new()),
        })
    }
}

/// The graph store over one engine: a set of named namespaces.
#[derive(Debug)]
pub struct GraphStore {
    engine: Arc<dyn Engine>,
    /// Shared by every namespace: concurrent synced writes share fsyncs.
    committer: Arc<GroupCommit>,
    ks: storage::Keyspaces,
    clock: Arc<dyn Clock>,
    durability: Durability,
    namespaces: Mutex<HashMap<String, Arc<Namespace>>>,
}

impl GraphStore {
    /// Settings for a store over `engine`, which must declare [`crate::KEYSPACES`].
    pub fn builder(engine: Arc<dyn Engine>) -> GraphStoreBuilder {
        GraphStoreBuilder {
            engine,
            clock: Arc::new(SystemClock),
            durability: Durability::Sync,
        }
    }

    /// The store over `engine` with the system clock and synced writes.
    ///
    /// # Errors
    /// As for [`GraphStoreBuilder::open`].
    pub fn open(engine: Arc<dyn Engine>) -> Result<GraphStore> {
        GraphStore::builder(engine).open()
    }

    /// The engine.
    pub fn engine(&self) -> &Arc<dyn Engine> {
        &self.engine
    }

    /// The group commit shared by the namespaces' synced writes (its counters show how many
    /// batches each fsync covered).
    pub fn committer(&self) -> &GroupCommit {
        &self.committer
    }

    /// The namespace `name`, created empty if absent and loaded on first use (nodes, edges and
    /// the persisted closure: no index rebuild).
    ///
    /// # Errors
    /// [`Error::NamespaceKind`] when it exists with the other kind; engine and corruption
    /// errors while loading.
    pub fn namespace(&self, name: &str, kind: NamespaceKind) -> Result<Arc<Namespace>> {
        let mut open = self.namespaces.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(ns) = open.get(name) {
            return check_kind(ns, kind).map(|()| Arc::clone(ns));
        }
        let key = storage::namespace_key(name);
        let (id, found) = match self.engine.get(self.ks.meta, &key)? {
            Some(value) => storage::decode_namespace(&key, &value)?,
            None => {
                let counter = storage::namespace_counter_key();
                let id = self.engine.counter(self.ks.meta, &counter)?;
                let id = u32::try_from(id).map_err(|_| Error::Corrupt {
                    keyspace: storage::META,
                    key: counter.clone(),
                    reason: "namespace counter out of range",
                })?;
                let mut batch = WriteBatch::new();
                batch.put(self.ks.meta, &key, storage::encode_namespace(id, kind));
                batch.counter_add(self.ks.meta, counter, 1);
                self.committer.commit(batch)?;
                (id, kind)
            }
        };
        let state = {
            let snapshot = self.engine.snapshot()?;
            storage::load(&*snapshot, &self.ks, id)?
        };
        let ns = Arc::new(Namespace {
            name: name.to_owned(),
            id,
            kind: found,
            engine: Arc::clone(&self.engine),
            committer: Arc::clone(&self.committer),
            ks: self.ks,
            clock: Arc::clone(&self.clock),
            durability: self.durability,
            state: RwLock::new(state),
            writer: Mutex::new(()),
            poisoned: Mutex::new(None),
        });
        check_kind(&ns, kind)?;
        open.insert(name.to_owned(), Arc::clone(&ns));
        Ok(ns)
    }

    /// The team namespace (`"teams"`, acyclic).
    ///
    /// # Errors
    /// As for [`GraphStore::namespace`].
    pub fn teams(&self) -> Result<crate::teams::Teams> {
        Ok(crate::teams::Teams::new(self.namespace(
            crate::teams::NAMESPACE,
            NamespaceKind::Acyclic,
        )?))
    }

    /// The package-set namespace (`"packagesets"`, acyclic).
    ///
    /// # Errors
    /// As for [`GraphStore::namespace`].
    pub fn package_sets(&self) -> Result<crate::packagesets::PackageSets> {
        Ok(crate::packagesets::PackageSets::new(self.namespace(
            crate::packagesets::NAMESPACE,
            NamespaceKind::Acyclic,
        )?))
    }
}

fn check_kind(ns: &Namespace, requested: NamespaceKind) -> Result<()> {
    if ns.kind == requested {
        Ok(())
    } else {
        Err(Error::NamespaceKind {
            namespace: ns.name.clone(),
            found: ns.kind,
            requested,
        })
    }
}

/// Checks a node name: not empty, no control characters (tabs and newlines would break TSV).
pub(crate) fn validate_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::InvalidName {
            name: name.into(),
            reason: "empty",
        });
    }
    if name.len() > 1024 {
        return Err(Error::InvalidName {
            name: name.into(),
            reason: "longer than 1024 bytes",
        });
    }
    if name.chars().any(char::is_control) {
        return Err(Error::InvalidName {
            name: name.into(),
            reason: "contains a control character",
        });
    }
    Ok(())
}

/// Checks a relation name: 1 to 64 bytes of `[a-z0-9_-]`, and not a role.
///
/// # Errors
/// [`Error::InvalidRelation`] with the reason.
pub fn validate_relation(name: &str) -> Result<()> {
    let reason = if name.is_empty() || name.len() > 64 {
        "must be 1 to 64 bytes long"
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    {
        "must be made of a-z, 0-9, '_' and '-'"
    } else if name.parse::<Role>().is_ok() {
        "is a membership role"
    } else {
        return Ok(());
    };
    Err(Error::InvalidRelation {
        name: name.into(),
        reason,
    })
}

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
    name: String,
    id: u32,
    kind: NamespaceKind,
    engine: Arc<dyn Engine>,
    committer: Arc<GroupCommit>,
    ks: storage::Keyspaces,
    clock: Arc<dyn Clock>,
    durability: Durability,
    state: RwLock<State>,
    writer: Mutex<()>,
    poisoned: Mutex<Option<String>>,
}

/// A read-only view of a namespace at one instant, for several queries under one lock.
#[derive(Debug)]
pub struct View<'a> {
    ns: &'a Namespace,
    state: RwLockReadGuard<'a, State>,
    now: i64,
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

    fn read_state(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_state(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// A consistent view at the clock's "now": expiries up to now are applied first (in
    /// memory; the next write persists them).
    pub fn view(&self) -> View<'_> {
        let now = self.clock.now();
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
        let now = self.clock.now();
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

    /// Runs a write: `f` validates, then mutates the state and adds its records to the batch;
    /// the changed closures and the index time are added, and the batch is written.
    ///
    /// With [`Durability::Sync`] the batch is written buffered under the writer mutex (so
    /// batches reach the engine's log in the order their changes were applied in memory), and
    /// the writer waits for a group sync after releasing it: concurrent writers, of this
    /// namespace or of others, share one fsync instead of queueing for one each.
    fn write<T>(&self, f: impl FnOnce(&mut State, &mut WriteBatch) -> Result<T>) -> Result<T> {
        let (out, written) = {
            // Writers queue here only for the in-memory change and a buffered engine write;
            // readers only wait for the in-memory part.
            let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(cause) = &*self.poisoned.lock().unwrap_or_else(|e| e.into_inner()) {
                return Err(Error::Poisoned {
                    namespace: self.name.clone(),
                    cause: cause.clone(),
                });
            }
            let now = self.clock.now();
            let (out, batch) = {
                let mut state = self.write_state();
                state.advance(now);
                let mut batch = WriteBatch::new();
                let out = f(&mut state, &mut batch)?;
                storage::persist_dirty(&self.ks, self.id, &mut state, &mut batch);
                (out, batch)
            };
            let written = match self.durability {
                Durability::Sync => self.committer.write(batch).map(Some),
                Durability::Buffered => self
                    .engine
                    .write(batch, Durability::Buffered)
                    .map(|()| None),
            };
            match written {
                Ok(written) => (out, written),
                Err(error) => return Err(self.fail(error)),
            }
        };
        match written {
            None => Ok(out),
            Some(written) => match self.committer.sync(written) {
                Ok(()) => Ok(out),
                Err(error) => {
                    let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
                    Err(self.fail(error))
                }
            },
        }
    }

    /// After a failed engine write or sync (call it holding the writer mutex): memory is ahead
    /// of the engine, so go back to what the engine holds and refuse further writes. Every
    /// writer whose change was in memory when the failure struck fails too and comes here
    /// after its own change, so the last reload follows every change that was not acknowledged.
    fn fail(&self, error: engine::Error) -> Error {
        *self.poisoned.lock().unwrap_or_else(|e| e.into_inner()) = Some(error.to_string());
        let mut state = self.write_state();
        if let Ok(fresh) = self
            .engine
            .snapshot()
            .map_err(Error::from)
            .and_then(|view| storage::load(&*view, &self.ks, self.id))
        {
            *state = fresh;
        }
        error.into()
    }

    fn unknown(&self, name: &str) -> Error {
        Error::UnknownNode {
            namespace: self.name.clone(),
            name: name.to_owned(),
        }
    }

    fn wrong_kind(&self, name: &str, found: NodeKind, expected: NodeKind) -> Error {
        Error::WrongKind {
            namespace: self.name.clone(),
            name: name.to_owned(),
            found,
            expected,
        }
    }

    fn resolve(&self, state: &State, name: &str) -> Result<u32> {
        state
            .ids
            .get(name)
            .copied()
            .ok_or_else(|| self.unknown(name))
    }

    fn resolve_group(&self, state: &State, name: &str) -> Result<u32> {
        let id = self.resolve(state, name)?;
        match state.node(id).map(|n| n.kind) {
            Some(NodeKind::Group) => Ok(id),
            Some(found) => Err(self.wrong_kind(name, found, NodeKind::Group)),
            None => Err(self.unknown(name)),
        }
    }

    /// Adds a node; adding one that exists with the same kind returns its id.
    ///
    /// # Errors
    /// [`Error::InvalidName`], [`Error::WrongKind`] when it exists with the other kind,
    /// [`Error::IdsExhausted`], engine errors.
    pub fn add_node(&self, name: &str, kind: NodeKind) -> Result<NodeId> {
        validate_name(name)?;
        self.write(|state, batch| {
            if let Some(&id) = state.ids.get(name) {
                let found = state.node(id).map_or(kind, |n| n.kind);
                return if found == kind {
                    Ok(NodeId(id))
                } else {
                    Err(self.wrong_kind(name, found, kind))
                };
            }
            let id = state.next_id().ok_or_else(|| Error::IdsExhausted {
                namespace: self.name.clone(),
            })?;
            state.insert_node(id, name, kind);
            batch.put(
                self.ks.nodes,
                storage::node_key(self.id, id),
                storage::node_value(kind, name),
            );
            Ok(NodeId(id))
        })
    }

    /// Removes a node with every edge at either end; the pairs it supported leave the index.
    /// Returns whether it existed.
    ///
    /// # Errors
    /// Engine errors.
    pub fn remove_node(&self, name: &str) -> Result<bool> {
        self.write(|state, batch| {
            let Some(&x) = state.ids.get(name) else {
                return Ok(false);
            };
            let node = state.node(x).expect("named nodes are live").clone();
            let ns = self.id;
            batch.delete(self.ks.nodes, storage::node_key(ns, x));
            let prefix = storage::edges_of_key(ns, x);
            let end = engine::keys::prefix_successor(&prefix).expect("prefix has a successor");
            batch.delete_range(self.ks.edges, prefix, end);
            for l in &node.down {
                batch.delete(self.ks.edges, storage::membership_key(ns, l.other, x));
            }
            for (relation, _, holder) in state.relations.keys().filter(|(_, t, _)| *t == x) {
                batch.delete(
                    self.ks.edges,
                    storage::relation_key(ns, *holder, x, relation),
                );
            }
            state.remove_node(x);
            Ok(true)
        })
    }

    /// The id of a node.
    pub fn id(&self, name: &str) -> Option<NodeId> {
        self.read_state().ids.get(name).copied().map(NodeId)
    }

    /// The name and kind of a node.
    pub fn node(&self, id: NodeId) -> Option<(String, NodeKind)> {
        let state = self.read_state();
        state.node(id.0).map(|n| (n.name.to_string(), n.kind))
    }

    /// Adds the membership edge `member -> group`, or changes its role and expiry. An expiry
    /// at or before now stores the edge without counting it.
    ///
    /// # Errors
    /// [`Error::UnknownNode`], [`Error::WrongKind`] when `group` is a leaf, [`Error::Cycle`] in
    /// an acyclic namespace, engine errors.
    pub fn set_membership(
        &self,
        member: &str,
        group: &str,
        role: Role,
        expires: Option<i64>,
    ) -> Result<()> {
        self.write(|state, batch| {
            let m = self.resolve(state, member)?;
            let g = self.resolve_group(state, group)?;
            let old = state.link(m, g);
            let was_active = old.is_some_and(|l| state.active(&l));
            let now_active = active_at(expires, state.applied);
            if now_active && !was_active && self.kind == NamespaceKind::Acyclic {
                self.check_no_cycle(state, m, g)?;
            }
            let affected = (was_active && !now_active).then(|| state.self_and_desc(m));
            if old.is_some() {
                state.remove_link(m, g);
            }
            state.insert_link(m, g, role, expires);
            if let Some(affected) = affected {
                state.recompute(&affected);
            } else if now_active && !was_active {
                state.add_active(m, g);
            }
            batch.put(
                self.ks.edges,
                storage::membership_key(self.id, m, g),
                storage::edge_value(Some(role), expires),
            );
            Ok(())
        })
    }

    fn check_no_cycle(&self, state: &State, member: u32, group: u32) -> Result<()> {
        if member != group && !state.anc[group as usize].contains(member) {
            return Ok(());
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
    /// Returns whether it existed.
    ///
    /// # Errors
    /// [`Error::UnknownNode`], engine errors.
    pub fn remove_membership(&self, member: &str, group: &str) -> Result<bool> {
        self.write(|state, batch| {
            let m = self.resolve(state, member)?;
            let g = self.resolve(state, group)?;
            let Some(old) = state.link(m, g) else {
                return Ok(false);
            };
            let affected = state.active(&old).then(|| state.self_and_desc(m));
            state.remove_link(m, g);
            if let Some(affected) = affected {
                state.recompute(&affected);
            }
            batch.delete(self.ks.edges, storage::membership_key(self.id, m, g));
            Ok(true)
        })
    }

    /// Grants `relation` on `target` to `holder` (adds or changes the expiry).
    ///
    /// # Errors
    /// [`Error::InvalidRelation`], [`Error::UnknownNode`], engine errors.
    pub fn grant(
        &self,
        holder: &str,
        relation: &str,
        target: &str,
        expires: Option<i64>,
    ) -> Result<()> {
        validate_relation(relation)?;
        self.write(|state, batch| {
            let h = self.resolve(state, holder)?;
            let t = self.resolve(state, target)?;
            state.relations.insert((relation.into(), t, h), expires);
            batch.put(
                self.ks.edges,
                storage::relation_key(self.id, h, t, relation),
                storage::edge_value(None, expires),
            );
            Ok(())
        })
    }

    /// Revokes a relation; returns whether it was stored.
    ///
    /// # Errors
    /// [`Error::UnknownNode`], engine errors.
    pub fn revoke(&self, holder: &str, relation: &str, target: &str) -> Result<bool> {
        self.write(|state, batch| {
            let h = self.resolve(state, holder)?;
            let t = self.resolve(state, target)?;
            let existed = state.relations.remove(&(relation.into(), t, h)).is_some();
            if existed {
                batch.delete(
                    self.ks.edges,
                    storage::relation_key(self.id, h, t, relation),
                );
            }
            Ok(existed)
        })
    }

    /// Recomputes the whole index from the edges and persists it.
    ///
    /// # Errors
    /// Engine errors.
    pub fn rebuild(&self) -> Result<()> {
        self.write(|state, _| {
            state.rebuild();
            Ok(())
        })
    }

    /// Compares the index with a fresh BFS from every node over the active edges. It holds a
    /// read lock throughout (writers wait), for a time proportional to the closure's size.
    pub fn check(&self) -> CheckReport {
        let view = self.view();
        let state = &view.state;
        let mut report = CheckReport::default();
        let mut transpose: HashMap<u32, RoaringBitmap> = HashMap::new();
        for x in 0..state.nodes.len() as u32 {
            if state.node(x).is_none() {
                continue;
            }
            report.nodes += 1;
            let expected = state.bfs_up(x);
            report.pairs += expected.len();
            let actual = &state.anc[x as usize];
            if state.probe[x as usize] != state::Probe::of(actual) {
                report.differences.push(Difference {
                    member: state.name(x).to_owned(),
                    group: "(probe differs from closure)".to_owned(),
                    in_index: true,
                });
            }
            for (set, in_index) in [(actual - &expected, true), (&expected - actual, false)] {
                for g in set {
                    report.differences.push(Difference {
                        member: state.name(x).to_owned(),
                        group: state.name(g).to_owned(),
                        in_index,
                    });
                }
            }
            for g in &expected {
                transpose.entry(g).or_default().insert(x);
            }
        }
        for (g, expected) in &transpose {
            let actual = state.desc.get(g).cloned().unwrap_or_default();
            for (set, in_index) in [(&actual - expected, true), (expected - &actual, false)] {
                for x in set {
                    report.differences.push(Difference {
                        member: state.name(x).to_owned(),
                        group: state.name(*g).to_owned(),
                        in_index,
                    });
                }
            }
        }
        for (g, actual) in &state.desc {
            if !transpose.contains_key(g) {
                for x in actual {
                    report.differences.push(Difference {
                        member: state.name(x).to_owned(),
                        group: state.name(*g).to_owned(),
                        in_index: true,
                    });
                }
            }
        }
        report
    }

    /// Sizes of the index.
    pub fn stats(&self) -> IndexStats {
        let state = self.read_state();
        let mut stats = IndexStats {
            nodes: state.leaves.len() + state.groups.len(),
            ..IndexStats::default()
        };
        for (x, anc) in state.anc.iter().enumerate() {
            let Some(node) = state.node(x as u32) else {
                continue;
            };
            if !anc.is_empty() {
                let bytes = anc.serialized_size() as u64;
                stats.pairs += anc.len();
                stats.full_closure_bytes += bytes;
                if node.kind == NodeKind::Group {
                    stats.group_pairs += anc.len();
                    stats.closure_bytes += bytes;
                }
            }
        }
        stats.membership_edges = state
            .nodes
            .iter()
            .flatten()
            .map(|n| n.up.len() as u64)
            .sum();
        stats
    }

    /// Every stored edge, expired ones included, sorted by (group, member, kind).
    pub fn edges(&self) -> Vec<EdgeRecord> {
        let state = self.read_state();
        let mut out = Vec::new();
        for node in state.nodes.iter().flatten() {
            for l in &node.up {
                out.push(EdgeRecord {
                    group: state.name(l.other).to_owned(),
                    member: node.name.to_string(),
                    kind: EdgeKind::Membership(l.role),
                    expires: l.expires,
                });
            }
        }
        for ((relation, target, holder), expires) in &state.relations {
            out.push(EdgeRecord {
                group: state.name(*target).to_owned(),
                member: state.name(*holder).to_owned(),
                kind: EdgeKind::Relation(relation.to_string()),
                expires: *expires,
            });
        }
        out.sort();
        out
    }

    /// Every live node's name and kind, sorted by name.
    pub fn nodes(&self) -> Vec<(String, NodeKind)> {
        let state = self.read_state();
        let mut out: Vec<(String, NodeKind)> = state
            .nodes
            .iter()
            .flatten()
            .map(|n| (n.name.to_string(), n.kind))
            .collect();
        out.sort();
        out
    }

    /// Applies a bulk load: nodes first, then membership and relation edges (added or
    /// changed), validated entirely before anything changes, then one index update over
    /// everything below the new edges and one atomic batch. `progress` is told of each edge.
    pub(crate) fn bulk(&self, load: &BulkLoad, progress: &dyn Fn(u64)) -> Result<()> {
        for (name, _) in &load.nodes {
            validate_name(name)?;
        }
        for (_, _, kind, _) in &load.edges {
            if let EdgeKind::Relation(r) = kind {
                validate_relation(r)?;
            }
        }
        self.write(|state, batch| {
            // Validation: kinds of existing nodes, edge ends, cycles.
            let mut new_nodes: HashMap<&str, NodeKind> = HashMap::new();
            for (name, kind) in &load.nodes {
                let found = match state.ids.get(name.as_str()) {
                    Some(&id) => state.node(id).map(|n| n.kind),
                    None => new_nodes.insert(name, *kind),
                };
                if let Some(found) = found.filter(|f| f != kind) {
                    return Err(self.wrong_kind(name, found, *kind));
                }
            }
            let kind_of = |name: &str| -> Result<NodeKind> {
                match state.ids.get(name) {
                    Some(&id) => Ok(state.node(id).map_or(NodeKind::Leaf, |n| n.kind)),
                    None => new_nodes
                        .get(name)
                        .copied()
                        .ok_or_else(|| self.unknown(name)),
                }
            };
            for (member, group, kind, _) in &load.edges {
                kind_of(member)?;
                let g = kind_of(group)?;
                if matches!(kind, EdgeKind::Membership(_)) && g != NodeKind::Group {
                    return Err(self.wrong_kind(group, g, NodeKind::Group));
                }
            }
            if self.kind == NamespaceKind::Acyclic {
                self.check_bulk_acyclic(state, load)?;
            }
            // Mutation.
            let ns = self.id;
            let mut next = state.next_id().unwrap_or(u32::MAX);
            for (name, kind) in &load.nodes {
                if state.ids.contains_key(name.as_str()) {
                    continue;
                }
                if next == u32::MAX {
                    return Err(Error::IdsExhausted {
                        namespace: self.name.clone(),
                    });
                }
                state.insert_node(next, name, *kind);
                batch.put(
                    self.ks.nodes,
                    storage::node_key(ns, next),
                    storage::node_value(*kind, name),
                );
                next += 1;
            }
            let mut sources = Vec::new();
            let mut affected = RoaringBitmap::new();
            for (i, (member, group, kind, expires)) in load.edges.iter().enumerate() {
                let m = state.ids[member.as_str()];
                let g = state.ids[group.as_str()];
                match kind {
                    EdgeKind::Membership(role) => {
                        if let Some(old) = state.remove_link(m, g) {
                            if state.active(&old) {
                                affected |= state.self_and_desc(m);
                            }
                        }
                        state.insert_link(m, g, *role, *expires);
                        if active_at(*expires, state.applied) {
                            sources.push(m);
                        }
                        batch.put(
                            self.ks.edges,
                            storage::membership_key(ns, m, g),
                            storage::edge_value(Some(*role), *expires),
                        );
                    }
                    EdgeKind::Relation(relation) => {
                        state
                            .relations
                            .insert((relation.as_str().into(), g, m), *expires);
                        batch.put(
                            self.ks.edges,
                            storage::relation_key(ns, m, g, relation),
                            storage::edge_value(None, *expires),
                        );
                    }
                }
                if i % 4096 == 0 {
                    progress(i as u64);
                }
            }
            progress(load.edges.len() as u64);
            affected |= state.bfs_down(sources);
            if !affected.is_empty() {
                state.recompute(&affected);
            }
            Ok(())
        })
    }

    /// Rejects a bulk load whose active membership edges, with the active edges already
    /// stored (less those the load replaces), would form a cycle; the error names one.
    fn check_bulk_acyclic(&self, state: &State, load: &BulkLoad) -> Result<()> {
        use petgraph::graph::{DiGraph, NodeIndex};
        use std::collections::HashSet;

        let mut graph: DiGraph<&str, ()> = DiGraph::new();
        let mut index: HashMap<&str, NodeIndex> = HashMap::new();
        fn add<'a>(
            graph: &mut DiGraph<&'a str, ()>,
            index: &mut HashMap<&'a str, NodeIndex>,
            name: &'a str,
        ) -> NodeIndex {
            *index.entry(name).or_insert_with(|| graph.add_node(name))
        }
        let mut replaced: HashSet<(&str, &str)> = HashSet::new();
        for (member, group, kind, expires) in &load.edges {
            if let EdgeKind::Membership(_) = kind {
                replaced.insert((member, group));
                if active_at(*expires, state.applied) {
                    let m = add(&mut graph, &mut index, member);
                    let g = add(&mut graph, &mut index, group);
                    graph.add_edge(m, g, ());
                }
            }
        }
        if graph.edge_count() == 0 {
            return Ok(());
        }
        for node in state.nodes.iter().flatten() {
            for l in node.up.iter().filter(|l| state.active(l)) {
                let group = state.name(l.other);
                if !replaced.contains(&(&*node.name, group)) {
                    let m = add(&mut graph, &mut index, &node.name);
                    let g = add(&mut graph, &mut index, group);
                    graph.add_edge(m, g, ());
                }
            }
        }
        for scc in petgraph::algo::kosaraju_scc(&graph) {
            let start = scc[0];
            let in_scc: HashSet<NodeIndex> = scc.iter().copied().collect();
            let self_loop = graph.contains_edge(start, start);
            if scc.len() == 1 && !self_loop {
                continue;
            }
            // Walk inside the component until a node repeats: that closes a cycle.
            let mut walk = vec![start];
            let mut seen: HashMap<NodeIndex, usize> = HashMap::from([(start, 0)]);
            let cycle_start = loop {
                let at = *walk.last().expect("walk is not empty");
                let next = graph
                    .neighbors(at)
                    .find(|n| in_scc.contains(n))
                    .expect("every node of a cyclic component has a successor in it");
                if let Some(&i) = seen.get(&next) {
                    walk.push(next);
                    break i;
                }
                seen.insert(next, walk.len());
                walk.push(next);
            };
            let cycle: Vec<String> = walk[cycle_start..]
                .iter()
                .map(|&i| graph[i].to_owned())
                .collect();
            return Err(Error::Cycle {
                namespace: self.name.clone(),
                member: cycle[cycle.len() - 2].clone(),
                group: cycle[cycle.len() - 1].clone(),
                cycle,
            });
        }
        Ok(())
    }
}

/// A batch of nodes and edges to load at once (from a TSV import).
#[derive(Debug, Default)]
pub(crate) struct BulkLoad {
    /// Nodes to create (existing ones must have the same kind).
    pub nodes: Vec<(String, NodeKind)>,
    /// (member or holder, group or target, kind, expires).
    pub edges: Vec<(String, String, EdgeKind, Option<i64>)>,
}

/// Sorts the names of `ids` after `after` and cuts one page of at most `limit` (a limit of 0
/// counts as 1, so that a page always makes progress).
fn page(state: &State, ids: &RoaringBitmap, after: Option<&str>, limit: usize) -> Page {
    let limit = limit.max(1);
    let mut names: Vec<&str> = ids
        .iter()
        .map(|x| state.name(x))
        .filter(|n| after.is_none_or(|a| *n > a))
        .collect();
    let more = names.len() > limit;
    if more {
        names.select_nth_unstable(limit);
        names.truncate(limit);
    }
    names.sort_unstable();
    Page {
        next: if more {
            names.last().map(|n| (*n).to_owned())
        } else {
            None
        },
        items: names.into_iter().map(str::to_owned).collect(),
    }
}

impl View<'_> {
    /// The instant the view answers for (Unix seconds).
    pub fn now(&self) -> i64 {
        self.now
    }

    /// The id of a node.
    pub fn id(&self, name: &str) -> Option<NodeId> {
        self.state.ids.get(name).copied().map(NodeId)
    }

    /// The name of a node.
    pub fn name(&self, id: NodeId) -> Option<&str> {
        self.state.node(id.0).map(|n| &*n.name)
    }

    /// The kind of a node.
    pub fn kind(&self, id: NodeId) -> Option<NodeKind> {
        self.state.node(id.0).map(|n| n.kind)
    }

    fn resolve(&self, name: &str) -> Result<u32> {
        self.ns.resolve(&self.state, name)
    }

    /// Whether `member` belongs to `group` through active membership edges: one bitmap probe.
    pub fn is_member_id(&self, member: NodeId, group: NodeId) -> bool {
        self.state
            .probe
            .get(member.0 as usize)
            .is_some_and(|probe| probe.contains(group.0))
    }

    /// [`View::is_member_id`] by names.
    ///
    /// # Errors
    /// [`Error::UnknownNode`].
    pub fn is_member(&self, member: &str, group: &str) -> Result<bool> {
        let m = self.resolve(member)?;
        let g = self.resolve(group)?;
        Ok(self.is_member_id(NodeId(m), NodeId(g)))
    }

    /// The stored membership edge `member -> group` (expired or not): role and expiry.
    ///
    /// # Errors
    /// [`Error::UnknownNode`].
    pub fn membership(&self, member: &str, group: &str) -> Result<Option<(Role, Option<i64>)>> {
        let m = self.resolve(member)?;
        let g = self.resolve(group)?;
        Ok(self.state.link(m, g).map(|l| (l.role, l.expires)))
    }

    fn filter(&self, mut ids: RoaringBitmap, filter: Filter) -> RoaringBitmap {
        match filter {
            Filter::All => {}
            Filter::Leaves => ids &= &self.state.leaves,
            Filter::Groups => ids &= &self.state.groups,
        }
        ids
    }

    /// The members of `group` as a bitmap of ids (sorted by id).
    ///
    /// # Errors
    /// [`Error::UnknownNode`].
    pub fn member_ids(&self, group: &str, depth: Depth, filter: Filter) -> Result<RoaringBitmap> {
        let g = self.resolve(group)?;
        Ok(self.member_ids_of(NodeId(g), depth, filter))
    }

    /// [`View::member_ids`] by id.
    pub fn member_ids_of(&self, group: NodeId, depth: Depth, filter: Filter) -> RoaringBitmap {
        let state = &self.state;
        let ids = match depth {
            Depth::Transitive => state.desc.get(&group.0).cloned().unwrap_or_default(),
            Depth::Direct => state.node(group.0).map_or_else(RoaringBitmap::new, |n| {
                n.down
                    .iter()
                    .filter(|l| state.active(l))
                    .map(|l| l.other)
                    .collect()
            }),
        };
        self.filter(ids, filter)
    }

    /// One page of the members of `group`, sorted by name (byte order), after the cursor
    /// `after` (exclusive), at most `limit` (at least 1) long.
    ///
    /// # Errors
    /// [`Error::UnknownNode`].
    pub fn members(
        &self,
        group: &str,
        depth: Depth,
        filter: Filter,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page> {
        let ids = self.member_ids(group, depth, filter)?;
        Ok(page(&self.state, &ids, after, limit))
    }

    /// The groups `member` belongs to, as a bitmap of ids.
    pub fn group_ids_of(&self, member: NodeId, depth: Depth) -> RoaringBitmap {
        let state = &self.state;
        match depth {
            Depth::Transitive => state
                .anc
                .get(member.0 as usize)
                .cloned()
                .unwrap_or_default(),
            Depth::Direct => state.node(member.0).map_or_else(RoaringBitmap::new, |n| {
                n.up.iter()
                    .filter(|l| state.active(l))
                    .map(|l| l.other)
                    .collect()
            }),
        }
    }

    /// One page of the groups `member` belongs to, sorted by name.
    ///
    /// # Errors
    /// [`Error::UnknownNode`].
    pub fn groups_of(
        &self,
        member: &str,
        depth: Depth,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page> {
        let ids = self.group_ids_of(NodeId(self.resolve(member)?), depth);
        Ok(page(&self.state, &ids, after, limit))
    }

    /// A shortest chain of active membership edges from `member` up to `group`: `[member,
    /// g1, ..., group]`, each a member of the next; `None` when `member` is not in `group`.
    ///
    /// # Errors
    /// [`Error::UnknownNode`].
    pub fn path(&self, member: &str, group: &str) -> Result<Option<Vec<String>>> {
        let m = self.resolve(member)?;
        let g = self.resolve(group)?;
        Ok(self.state.path(m, g).map(|chain| {
            chain
                .into_iter()
                .map(|x| self.state.name(x).to_owned())
                .collect()
        }))
    }

    fn direct_holders(&self, relation: &str, target: u32) -> impl Iterator<Item = u32> + '_ {
        let relation: Box<str> = relation.into();
        let now = self.now;
        self.state
            .relations
            .range((relation.clone(), target, 0)..=(relation, target, u32::MAX))
            .filter(move |(_, expires)| active_at(**expires, now))
            .map(|((_, _, holder), _)| *holder)
    }

    /// Who holds `relation` on `target`: the holders of unexpired grants and, for a group
    /// holder, all its transitive members.
    ///
    /// # Errors
    /// [`Error::UnknownNode`].
    pub fn holder_ids(
        &self,
        relation: &str,
        target: &str,
        filter: Filter,
    ) -> Result<RoaringBitmap> {
        let t = self.resolve(target)?;
        let mut ids = RoaringBitmap::new();
        for h in self.direct_holders(relation, t) {
            ids.insert(h);
            if let Some(desc) = self.state.desc.get(&h) {
                ids |= desc;
            }
        }
        Ok(self.filter(ids, filter))
    }

    /// One page of [`View::holder_ids`], sorted by name.
    ///
    /// # Errors
    /// [`Error::UnknownNode`].
    pub fn holders(
        &self,
        relation: &str,
        target: &str,
        filter: Filter,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page> {
        let ids = self.holder_ids(relation, target, filter)?;
        Ok(page(&self.state, &ids, after, limit))
    }

    /// Whether `holder` holds `relation` on `target`, directly or as a transitive member of a
    /// group that holds it.
    ///
    /// # Errors
    /// [`Error::UnknownNode`].
    pub fn is_holder(&self, holder: &str, relation: &str, target: &str) -> Result<bool> {
        let h = self.resolve(holder)?;
        let t = self.resolve(target)?;
        let anc = &self.state.anc[h as usize];
        Ok(self
            .direct_holders(relation, t)
            .any(|d| d == h || anc.contains(d)))
    }
}
