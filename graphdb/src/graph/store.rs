//! The store: an engine, its group commit and change log, and the namespaces opened on it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use engine::{ChangeLog, Direction, Durability, Engine, GroupCommit, WriteBatch};

use super::namespace::Namespace;
use super::storage;
use super::types::NamespaceKind;
use crate::changes::{actor_history_key, object_history_key, Change};
use crate::{Error, Result};
use engine::{Clock, SystemClock};

/// Opens a [`GraphStore`]: engine first, then optional settings.
#[derive(Debug)]
pub struct GraphStoreBuilder {
    engine: Arc<dyn Engine>,
    clock: Arc<dyn Clock>,
    durability: Durability,
    retention: Duration,
    record_changes: bool,
}

/// How long events are kept by default: 400 days.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(400 * 24 * 3600);

impl GraphStoreBuilder {
    /// How long [`GraphStore::prune_changes`] keeps events. Default: [`DEFAULT_RETENTION`]
    /// (400 days).
    pub fn retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// Whether writes record their events in the change feed. Default: `true`. Turning it
    /// off exists only to measure what the feed costs (benchmarks): a store that does not
    /// record its changes cannot be followed, audited or replayed, so never in a service.
    pub fn record_changes(mut self, record: bool) -> Self {
        self.record_changes = record;
        self
    }

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
    /// [`crate::Error::Engine`] when the engine lacks one of [`crate::KEYSPACES`], or the change
    /// log's open error (it flushes the engine first, so every event visible is durable).
    pub fn open(self) -> Result<GraphStore> {
        let ks = storage::Keyspaces::of(&*self.engine)?;
        let committer = Arc::new(GroupCommit::new(Arc::clone(&self.engine)));
        let log = ChangeLog::open(Arc::clone(&committer), ks.changes)?;
        Ok(GraphStore {
            committer,
            log,
            engine: self.engine,
            ks,
            clock: self.clock,
            durability: self.durability,
            retention: self.retention,
            record_changes: Arc::new(AtomicBool::new(self.record_changes)),
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
    /// The directory's one change log (teams, package sets, repositories).
    log: Arc<ChangeLog>,
    ks: storage::Keyspaces,
    clock: Arc<dyn Clock>,
    durability: Durability,
    retention: Duration,
    /// Shared with every namespace ([`GraphStore::set_record_changes`]).
    record_changes: Arc<AtomicBool>,
    namespaces: Mutex<HashMap<String, Arc<Namespace>>>,
}

/// A page of [`GraphStore::changes`].
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ChangesPage {
    /// The graph's events, oldest first, with their revisions.
    pub changes: Vec<(u64, Change)>,
    /// The last revision read (events of the log's other writers, the repositories, are read
    /// and skipped): continue with `after = next`.
    pub next: u64,
}

/// Whose history: [`GraphStore::history_events`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HistoryOf<'a> {
    /// What was done to a team.
    Team(&'a str),
    /// What was done to a person and what the person did.
    Person(&'a str),
}

/// A page of a history as stored payloads (JSON), newest first.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct RawHistoryPage {
    /// `(revision, payload)`, newest first.
    pub events: Vec<(u64, Vec<u8>)>,
    /// Pass as `before` for the next (older) page; `None` on the last page.
    pub next: Option<u64>,
}

impl RawHistoryPage {
    fn decode(self) -> HistoryPage {
        HistoryPage {
            changes: decode_graph_events(self.events),
            next: self.next,
        }
    }
}

/// A page of a history, newest first.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct HistoryPage {
    /// The events with their revisions, newest first.
    pub changes: Vec<(u64, Change)>,
    /// Pass as `before` for the next (older) page; `None` on the last page.
    pub next: Option<u64>,
}

impl GraphStore {
    /// Settings for a store over `engine`, which must declare [`crate::KEYSPACES`].
    pub fn builder(engine: Arc<dyn Engine>) -> GraphStoreBuilder {
        GraphStoreBuilder {
            engine,
            clock: Arc::new(SystemClock),
            durability: Durability::Sync,
            retention: DEFAULT_RETENTION,
            record_changes: true,
        }
    }

    /// Turns the recording of events on or off for the following writes (the builder's
    /// [`GraphStoreBuilder::record_changes`] sets it at open): only so that the `teams` bench
    /// can alternate the feed on and off in one run. Never in a service: writes made without
    /// the feed cannot be followed, audited or replayed.
    pub fn set_record_changes(&self, record: bool) {
        self.record_changes.store(record, Ordering::Relaxed);
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
    /// [`crate::Error::NamespaceKind`] when it exists with the other kind; engine and corruption
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
                batch.put(
                    self.ks.meta,
                    key.as_slice(),
                    storage::encode_namespace(id, kind),
                );
                batch.counter_add(self.ks.meta, counter, 1);
                self.committer.commit(batch)?;
                (id, kind)
            }
        };
        let (state, loaded_at) = {
            let snapshot = self.engine.snapshot()?;
            let revision = self.log.newest_in(&*snapshot)?;
            (storage::load(&*snapshot, &self.ks, id)?, revision)
        };
        let ns = Arc::new(Namespace {
            name: name.to_owned(),
            id,
            kind: found,
            engine: Arc::clone(&self.engine),
            log: Arc::clone(&self.log),
            ks: self.ks,
            clock: Arc::clone(&self.clock),
            durability: self.durability,
            record_changes: Arc::clone(&self.record_changes),
            state: RwLock::new(state),
            writer: Mutex::new(()),
            chain: Mutex::new(Arc::default()),
            poisoned: Mutex::new(None),
            transient: Mutex::new(false),
            loaded_at: AtomicU64::new(loaded_at),
        });
        check_kind(&ns, kind)?;
        open.insert(name.to_owned(), Arc::clone(&ns));
        Ok(ns)
    }
}

/// The change feed: reading, history, retention, replay.
impl GraphStore {
    /// The directory's change log, which every write of the store appends its events to in
    /// the same batch. The directory's other writers (the commit graphs) open on the same log,
    /// so revisions are strictly increasing across teams, package sets and repositories.
    pub fn change_log(&self) -> &Arc<ChangeLog> {
        &self.log
    }

    /// Up to `limit` events after revision `after`, oldest first, never past the durable
    /// head.
    ///
    /// ```
    /// # fn main() -> Result<(), graphdb::Error> {
    /// let engine = engine::EngineConfig::memory().open(graphdb::KEYSPACES)?;
    /// let store = graphdb::GraphStore::open(engine)?;
    /// let teams = graphdb::Teams::open(&store)?.acting_as("alice");
    /// let revision = teams.put_member("ubuntu-dev", "bob", &graphdb::EdgeKind::named("admin"), None)?;
    /// let page = store.changes(0, 100)?;
    /// let kinds: Vec<&str> = page.changes.iter().map(|(_, c)| c.kind.as_str()).collect();
    /// assert_eq!(kinds, ["team.created", "person.created", "membership.added"]);
    /// assert_eq!(page.next, revision);
    /// assert_eq!(page.changes[2].1.actor, "alice");
    /// let history = store.person_history("bob", u64::MAX, 10)?;
    /// assert_eq!(history.changes.len(), 2); // created, then made an admin
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`crate::Error::Feed`] with [`engine::FeedError::Compacted`] when events after `after` were
    /// pruned (resynchronise from a snapshot), [`engine::FeedError::BeyondHead`] when `after`
    /// is newer than the head; engine errors.
    pub fn changes(&self, after: u64, limit: usize) -> Result<ChangesPage> {
        let events = self.log.read(after, limit)?;
        let next = events.last().map_or(after, |(revision, _)| *revision);
        Ok(ChangesPage {
            changes: decode_graph_events(events),
            next,
        })
    }

    /// What was done to `team` (created, removed, its memberships and relations in either
    /// direction), newest first, with revisions below `before` (`u64::MAX`: the newest).
    ///
    /// # Errors
    /// Engine errors.
    pub fn team_history(&self, team: &str, before: u64, limit: usize) -> Result<HistoryPage> {
        self.history_events(HistoryOf::Team(team), before, limit)
            .map(RawHistoryPage::decode)
    }

    /// What was done to `person` (created, removed, their memberships and relations) and what
    /// they did as an actor, newest first, with revisions below `before`.
    ///
    /// # Errors
    /// Engine errors.
    pub fn person_history(&self, person: &str, before: u64, limit: usize) -> Result<HistoryPage> {
        self.history_events(HistoryOf::Person(person), before, limit)
            .map(RawHistoryPage::decode)
    }

    /// A history as the stored payloads, including the events of the log's other writers
    /// indexed under the same keys (a person's pushes, when the commit graphs index their
    /// actor with [`crate::changes::actor_history_key`]): for a server that passes events on
    /// as JSON.
    ///
    /// # Errors
    /// Engine errors.
    pub fn history_events(
        &self,
        of: HistoryOf<'_>,
        before: u64,
        limit: usize,
    ) -> Result<RawHistoryPage> {
        let prefixes = match of {
            HistoryOf::Team(team) => vec![object_history_key("teams", team)],
            HistoryOf::Person(person) => vec![
                object_history_key("teams", person),
                actor_history_key(person),
            ],
        };
        let mut events = Vec::new();
        for prefix in prefixes {
            events.extend(self.log.read_index(
                self.ks.history,
                &prefix,
                before,
                limit,
                Direction::Reverse,
            )?);
        }
        events.sort_by_key(|(revision, _)| std::cmp::Reverse(*revision));
        events.dedup_by_key(|(revision, _)| *revision);
        events.truncate(limit);
        let next = if events.len() >= limit.max(1) {
            events.last().map(|(revision, _)| *revision)
        } else {
            None
        };
        Ok(RawHistoryPage { events, next })
    }

    /// Deletes the events older than the retention ([`GraphStoreBuilder::retention`]), never
    /// the newest; for the server's periodic task. Returns how many were deleted.
    ///
    /// # Errors
    /// Engine errors.
    pub fn prune_changes(&self) -> Result<u64> {
        let retention = i64::try_from(self.retention.as_micros()).unwrap_or(i64::MAX);
        self.prune_changes_before(crate::changes::now_us().saturating_sub(retention))
    }

    /// Deletes every event recorded before `time_us` (microseconds since the epoch), oldest
    /// first, but never the newest event. Returns how many were deleted.
    ///
    /// # Errors
    /// Engine errors.
    pub fn prune_changes_before(&self, time_us: i64) -> Result<u64> {
        let Some(oldest) = self.log.oldest()? else {
            return Ok(0);
        };
        let mut after = oldest - 1;
        let mut through = 0;
        'scan: loop {
            let events = self.log.read(after, 1024)?;
            let Some(&(last, _)) = events.last() else {
                break;
            };
            for (revision, payload) in events {
                // An event without a readable time is kept, and so is everything after it.
                match crate::event_codec::time_us(&payload) {
                    Some(event_time) if event_time < time_us => through = revision,
                    _ => break 'scan,
                }
            }
            after = last;
        }
        Ok(self.log.prune_through(through)?)
    }

    /// Applies an event of another store's feed to this one, with the event's actor, so that
    /// a follower replaying the feed from revision 0 holds the same namespaces. Returns
    /// `false` for an import, whose event carries counts only: a follower reloads that
    /// namespace from an export instead. A namespace not yet in this store is created acyclic.
    ///
    /// # Errors
    /// [`crate::Error::Corrupt`] for an event that lacks a field its kind needs; the errors of the
    /// write it replays.
    pub fn replay(&self, change: &Change) -> Result<bool> {
        let kind = self
            .stored_kind(&change.namespace)?
            .unwrap_or(NamespaceKind::Acyclic);
        let ns = self.namespace(&change.namespace, kind)?;
        super::follow::apply(&ns, change)
    }

    /// The namespaces this process holds (loaded).
    pub(super) fn open_namespaces(&self) -> Vec<Arc<Namespace>> {
        self.namespaces
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// The namespace `name` if this process holds it, without loading it.
    pub(super) fn open_namespace(&self, name: &str) -> Option<Arc<Namespace>> {
        self.namespaces
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    /// The namespace `name` if it exists (loaded on first use), without creating it.
    ///
    /// # Errors
    /// Engine and corruption errors while loading.
    pub fn existing_namespace(&self, name: &str) -> Result<Option<Arc<Namespace>>> {
        match self.stored_kind(name)? {
            Some(kind) => self.namespace(name, kind).map(Some),
            None => Ok(None),
        }
    }

    /// The kind a namespace is stored with, if it exists.
    fn stored_kind(&self, name: &str) -> Result<Option<NamespaceKind>> {
        if let Some(ns) = self
            .namespaces
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
        {
            return Ok(Some(ns.kind()));
        }
        let key = storage::namespace_key(name);
        match self.engine.get(self.ks.meta, &key)? {
            Some(value) => Ok(Some(storage::decode_namespace(&key, &value)?.1)),
            None => Ok(None),
        }
    }
}

/// The graph's events among `events`; the payloads of the log's other writers (which are
/// not [`Change`]s) are skipped.
fn decode_graph_events(events: Vec<(u64, Vec<u8>)>) -> Vec<(u64, Change)> {
    events
        .into_iter()
        .filter_map(|(revision, payload)| {
            Change::from_payload(&payload).map(|change| (revision, change))
        })
        .collect()
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
