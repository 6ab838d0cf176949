//! The change feed of teams and package sets: one [`Change`] per write, recorded in the
//! store's [`engine::ChangeLog`] in the same engine batch as the change.
//!
//! Every write of a namespace (a node created or removed, a membership added, changed or
//! removed, a relation granted, changed or revoked, an import) appends its events under the
//! namespace's writer mutex, in the batch that carries the change, and gets revisions that are
//! strictly increasing across the whole directory (teams, package sets and repositories share
//! one log, [`crate::GraphStore::change_log`]). A writer is answered with the revision of its
//! last event once a group sync made it durable.
//!
//! An event's payload is the JSON of a [`Change`]: the envelope every event of the directory
//! has (`kind`, `time_us`, `actor`), then `namespace` and the fields of the objects, named
//! after the namespace: `team`, `member`, `person` in `teams`; `set`, `item` in
//! `packagesets`; `group`, `member`, `node` in any other namespace. `before` and `after` hold
//! an edge's role and expiry around a membership or relation change.
//!
//! ```text
//! {"kind":"membership.changed","time_us":1764937200000000,"actor":"alice","namespace":"teams",
//!  "team":"ubuntu-dev","member":"bob","before":{"role":"member","expires":null},
//!  "after":{"role":"admin","expires":1767225600}}
//! ```
//!
//! History indexes (in the `history` keyspace, read newest first): per object (a team, a
//! person, a set, ...: every event that names it as group, member or node) and per actor.
//! [`crate::GraphStore::team_history`] reads a team's; [`crate::GraphStore::person_history`]
//! merges what was done to a person and what the person did. [`actor_history_key`] is public
//! so that the other writers of the log (the repositories) index their events by actor the
//! same way.
//!
//! Replaying the feed from revision 0 onto an empty store ([`crate::GraphStore::replay`])
//! reproduces every namespace, except after an import: its event carries counts only, and a
//! follower reloads the namespace (an export) instead.

use std::time::{SystemTime, UNIX_EPOCH};

use engine::{keys, Keyspace, LogEntry};
use serde::{Deserialize, Serialize};

use crate::graph::{NodeKind, Role};

/// The actor recorded by handles that were not given one ([`crate::Teams::acting_as`]):
/// command-line tools, tests, maintenance.
pub const SYSTEM_ACTOR: &str = "system";

/// What a change did; serialised as the `kind` string given with each variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ChangeKind {
    /// `team.created`
    #[serde(rename = "team.created")]
    TeamCreated,
    /// `team.removed` (with every membership and relation at either end)
    #[serde(rename = "team.removed")]
    TeamRemoved,
    /// `person.created`
    #[serde(rename = "person.created")]
    PersonCreated,
    /// `person.removed`
    #[serde(rename = "person.removed")]
    PersonRemoved,
    /// `set.created`
    #[serde(rename = "set.created")]
    SetCreated,
    /// `set.removed`
    #[serde(rename = "set.removed")]
    SetRemoved,
    /// `package.created`
    #[serde(rename = "package.created")]
    PackageCreated,
    /// `package.removed`
    #[serde(rename = "package.removed")]
    PackageRemoved,
    /// `group.created` (a namespace other than teams and package sets)
    #[serde(rename = "group.created")]
    GroupCreated,
    /// `group.removed`
    #[serde(rename = "group.removed")]
    GroupRemoved,
    /// `leaf.created`
    #[serde(rename = "leaf.created")]
    LeafCreated,
    /// `leaf.removed`
    #[serde(rename = "leaf.removed")]
    LeafRemoved,
    /// `membership.added`
    #[serde(rename = "membership.added")]
    MembershipAdded,
    /// `membership.changed` (role or expiry; `before` and `after`)
    #[serde(rename = "membership.changed")]
    MembershipChanged,
    /// `membership.removed`
    #[serde(rename = "membership.removed")]
    MembershipRemoved,
    /// `relation.granted`
    #[serde(rename = "relation.granted")]
    RelationGranted,
    /// `relation.changed` (its expiry)
    #[serde(rename = "relation.changed")]
    RelationChanged,
    /// `relation.revoked`
    #[serde(rename = "relation.revoked")]
    RelationRevoked,
    /// `item.added` (package sets)
    #[serde(rename = "item.added")]
    ItemAdded,
    /// `item.removed` (package sets)
    #[serde(rename = "item.removed")]
    ItemRemoved,
    /// `import.teams`: one event per import, with counts
    #[serde(rename = "import.teams")]
    TeamsImported,
    /// `import.packagesets`
    #[serde(rename = "import.packagesets")]
    PackageSetsImported,
    /// `import.graph` (another namespace)
    #[serde(rename = "import.graph")]
    GraphImported,
}

impl ChangeKind {
    /// The `kind` string.
    pub fn as_str(self) -> &'static str {
        use ChangeKind as K;
        match self {
            K::TeamCreated => "team.created",
            K::TeamRemoved => "team.removed",
            K::PersonCreated => "person.created",
            K::PersonRemoved => "person.removed",
            K::SetCreated => "set.created",
            K::SetRemoved => "set.removed",
            K::PackageCreated => "package.created",
            K::PackageRemoved => "package.removed",
            K::GroupCreated => "group.created",
            K::GroupRemoved => "group.removed",
            K::LeafCreated => "leaf.created",
            K::LeafRemoved => "leaf.removed",
            K::MembershipAdded => "membership.added",
            K::MembershipChanged => "membership.changed",
            K::MembershipRemoved => "membership.removed",
            K::RelationGranted => "relation.granted",
            K::RelationChanged => "relation.changed",
            K::RelationRevoked => "relation.revoked",
            K::ItemAdded => "item.added",
            K::ItemRemoved => "item.removed",
            K::TeamsImported => "import.teams",
            K::PackageSetsImported => "import.packagesets",
            K::GraphImported => "import.graph",
        }
    }

    /// Every kind, for validating filters.
    pub const ALL: &'static [ChangeKind] = &[
        ChangeKind::TeamCreated,
        ChangeKind::TeamRemoved,
        ChangeKind::PersonCreated,
        ChangeKind::PersonRemoved,
        ChangeKind::SetCreated,
        ChangeKind::SetRemoved,
        ChangeKind::PackageCreated,
        ChangeKind::PackageRemoved,
        ChangeKind::GroupCreated,
        ChangeKind::GroupRemoved,
        ChangeKind::LeafCreated,
        ChangeKind::LeafRemoved,
        ChangeKind::MembershipAdded,
        ChangeKind::MembershipChanged,
        ChangeKind::MembershipRemoved,
        ChangeKind::RelationGranted,
        ChangeKind::RelationChanged,
        ChangeKind::RelationRevoked,
        ChangeKind::ItemAdded,
        ChangeKind::ItemRemoved,
        ChangeKind::TeamsImported,
        ChangeKind::PackageSetsImported,
        ChangeKind::GraphImported,
    ];
}

/// An edge's state before or after a change: the role (memberships only) and the expiry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeState {
    /// `member` or `admin`; absent for a relation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// When it stops counting (Unix seconds), or `null`.
    pub expires: Option<i64>,
}

/// One event of the feed, as stored (JSON). Fields that do not apply are absent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Change {
    /// What happened.
    pub kind: ChangeKind,
    /// When (microseconds since the Unix epoch, the writer's wall clock).
    pub time_us: i64,
    /// Who did it.
    pub actor: String,
    /// The namespace (`teams`, `packagesets`, ...).
    pub namespace: String,
    /// The team (group of a membership or target of a relation; a team created or removed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    /// A team's member (a person or a team), or a relation's holder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<String>,
    /// A person created or removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub person: Option<String>,
    /// A package set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set: Option<String>,
    /// An item of a package set (a package or a set), or a package created or removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item: Option<String>,
    /// The group, in another namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// A node created or removed, in another namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The relation (`audits`, ...) of a relation change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relation: Option<String>,
    /// The label of an edge of a general graph (`depends`, ...): after the change, or before
    /// it when the edge was removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// The edge before the change (absent when it was added).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<EdgeState>,
    /// The edge after the change (absent when it was removed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<EdgeState>,
    /// `"allow"` on the creation of a group that may lie on cycles (package sets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cycles: Option<String>,
    /// An import's node rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<u64>,
    /// An import's edge rows, or the edges a node removal took with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edges: Option<u64>,
}

/// The namespaces whose events use their own field names.
const TEAMS: &str = "teams";
const PACKAGE_SETS: &str = "packagesets";

impl Change {
    fn new(kind: ChangeKind, namespace: &str, actor: &str, time_us: i64) -> Change {
        Change {
            kind,
            time_us,
            actor: actor.to_owned(),
            namespace: namespace.to_owned(),
            team: None,
            member: None,
            person: None,
            set: None,
            item: None,
            group: None,
            node: None,
            relation: None,
            label: None,
            before: None,
            cycles: None,
            after: None,
            nodes: None,
            edges: None,
        }
    }

    fn with_group(mut self, name: &str) -> Change {
        let field = match self.namespace.as_str() {
            TEAMS => &mut self.team,
            PACKAGE_SETS => &mut self.set,
            _ => &mut self.group,
        };
        *field = Some(name.to_owned());
        self
    }

    fn with_member(mut self, name: &str) -> Change {
        let field = match self.namespace.as_str() {
            PACKAGE_SETS => &mut self.item,
            _ => &mut self.member,
        };
        *field = Some(name.to_owned());
        self
    }

    fn with_node(mut self, name: &str, kind: NodeKind) -> Change {
        let field = match (self.namespace.as_str(), kind) {
            (TEAMS, NodeKind::Group) => &mut self.team,
            (TEAMS, NodeKind::Leaf) => &mut self.person,
            (PACKAGE_SETS, NodeKind::Group) => &mut self.set,
            (PACKAGE_SETS, NodeKind::Leaf) => &mut self.item,
            _ => &mut self.node,
        };
        *field = Some(name.to_owned());
        self
    }

    /// The change a stored payload of the log holds (the binary form this store writes, or
    /// the JSON it wrote before 2026-12-05; see `DESIGN.md`, "Change feed"), or `None` for
    /// another writer's event (the commit graphs' JSON) or one this build cannot read.
    pub fn from_payload(payload: &[u8]) -> Option<Change> {
        crate::event_codec::decode(payload)
    }

    /// The group of a membership change or the target of a relation change.
    pub fn group_name(&self) -> Option<&str> {
        self.team
            .as_deref()
            .or(self.set.as_deref())
            .or(self.group.as_deref())
    }

    /// The member of a membership change or the holder of a relation change.
    pub fn member_name(&self) -> Option<&str> {
        self.member.as_deref().or(self.item.as_deref())
    }

    /// The node a `*.created` or `*.removed` event is about, and its kind.
    pub fn node(&self) -> Option<(&str, NodeKind)> {
        use ChangeKind as K;
        let kind = match self.kind {
            K::TeamCreated
            | K::TeamRemoved
            | K::SetCreated
            | K::SetRemoved
            | K::GroupCreated
            | K::GroupRemoved => NodeKind::Group,
            K::PersonCreated
            | K::PersonRemoved
            | K::PackageCreated
            | K::PackageRemoved
            | K::LeafCreated
            | K::LeafRemoved => NodeKind::Leaf,
            _ => return None,
        };
        let name = self
            .person
            .as_deref()
            .or(self.team.as_deref())
            .or(self.set.as_deref())
            .or(self.item.as_deref())
            .or(self.node.as_deref())?;
        Some((name, kind))
    }
}

/// The history key prefix of an object (a team, a person, a set, ...) of a namespace.
pub fn object_history_key(namespace: &str, name: &str) -> Vec<u8> {
    keys::KeyBuilder::new()
        .str("object")
        .str(namespace)
        .str(name)
        .finish()
}

/// The history key prefix of an actor: every writer of the log indexes its events under it,
/// so a person's history shows what they did in every part of the directory.
pub fn actor_history_key(actor: &str) -> Vec<u8> {
    keys::KeyBuilder::new().str("actor").str(actor).finish()
}

/// Microseconds since the Unix epoch, now.
pub fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// Collects the events of one write, with the objects they are indexed under.
#[derive(Debug)]
pub(crate) struct Recorder<'a> {
    namespace: &'a str,
    actor: &'a str,
    time_us: i64,
    /// The events; the objects each is indexed under are its own names
    /// ([`Recorder::objects`]).
    events: Vec<Change>,
}

impl<'a> Recorder<'a> {
    pub(crate) fn new(namespace: &'a str, actor: &'a str) -> Self {
        Recorder {
            namespace,
            actor,
            time_us: now_us(),
            events: Vec::new(),
        }
    }

    fn change(&self, kind: ChangeKind) -> Change {
        Change::new(kind, self.namespace, self.actor, self.time_us)
    }

    fn kind_for(&self, teams: ChangeKind, sets: ChangeKind, other: ChangeKind) -> ChangeKind {
        match self.namespace {
            TEAMS => teams,
            PACKAGE_SETS => sets,
            _ => other,
        }
    }

    pub(crate) fn node_created(&mut self, name: &str, kind: NodeKind) {
        use ChangeKind as K;
        let change_kind = match kind {
            NodeKind::Group => self.kind_for(K::TeamCreated, K::SetCreated, K::GroupCreated),
            NodeKind::Leaf => self.kind_for(K::PersonCreated, K::PackageCreated, K::LeafCreated),
        };
        let change = self.change(change_kind).with_node(name, kind);
        self.events.push(change);
    }

    /// Marks the group just created as allowing cycles.
    pub(crate) fn cycles_allowed(&mut self) {
        if let Some(change) = self.events.last_mut() {
            change.cycles = Some("allow".to_owned());
        }
    }

    pub(crate) fn node_removed(&mut self, name: &str, kind: NodeKind, edges: u64) {
        use ChangeKind as K;
        let change_kind = match kind {
            NodeKind::Group => self.kind_for(K::TeamRemoved, K::SetRemoved, K::GroupRemoved),
            NodeKind::Leaf => self.kind_for(K::PersonRemoved, K::PackageRemoved, K::LeafRemoved),
        };
        let mut change = self.change(change_kind).with_node(name, kind);
        change.edges = Some(edges);
        self.events.push(change);
    }

    /// A membership edge `member -> group` went from `before` to `after` (`None`: absent),
    /// its label from `labels[0]` to `labels[1]`. Records nothing when both are equal.
    pub(crate) fn membership(
        &mut self,
        group: &str,
        member: &str,
        before: Option<(Role, Option<i64>)>,
        after: Option<(Role, Option<i64>)>,
        labels: [Option<&str>; 2],
    ) {
        use ChangeKind as K;
        let kind = match (before, after) {
            (None, None) => return,
            (Some(b), Some(a)) if b == a && labels[0] == labels[1] => return,
            (None, Some(_)) => self.kind_for(K::MembershipAdded, K::ItemAdded, K::MembershipAdded),
            (Some(_), None) => {
                self.kind_for(K::MembershipRemoved, K::ItemRemoved, K::MembershipRemoved)
            }
            (Some(_), Some(_)) => K::MembershipChanged,
        };
        let state = |edge: Option<(Role, Option<i64>)>| {
            edge.map(|(role, expires)| EdgeState {
                role: Some(role),
                expires,
            })
        };
        let mut change = self.change(kind).with_group(group).with_member(member);
        change.before = state(before);
        change.after = state(after);
        let label = if after.is_some() {
            labels[1]
        } else {
            labels[0]
        };
        change.label = label.map(str::to_owned);
        self.events.push(change);
    }

    /// A relation `holder -(relation)-> target` went from `before` to `after` (the outer
    /// `None`: absent; the inner: no expiry). Records nothing when both are equal.
    pub(crate) fn relation(
        &mut self,
        target: &str,
        holder: &str,
        relation: &str,
        before: Option<Option<i64>>,
        after: Option<Option<i64>>,
    ) {
        use ChangeKind as K;
        let kind = match (before, after) {
            (None, None) => return,
            (Some(b), Some(a)) if b == a => return,
            (None, Some(_)) => K::RelationGranted,
            (Some(_), None) => K::RelationRevoked,
            (Some(_), Some(_)) => K::RelationChanged,
        };
        let state = |edge: Option<Option<i64>>| {
            edge.map(|expires| EdgeState {
                role: None,
                expires,
            })
        };
        let mut change = self.change(kind).with_group(target).with_member(holder);
        change.relation = Some(relation.to_owned());
        change.before = state(before);
        change.after = state(after);
        self.events.push(change);
    }

    pub(crate) fn import(&mut self, nodes: u64, edges: u64) {
        use ChangeKind as K;
        let kind = self.kind_for(K::TeamsImported, K::PackageSetsImported, K::GraphImported);
        let mut change = self.change(kind);
        change.nodes = Some(nodes);
        change.edges = Some(edges);
        self.events.push(change);
    }

    /// The log entries: each event in its stored form ([`crate::event_codec`]), indexed
    /// under what the histories read ([`crate::GraphStore::history_events`]): its objects
    /// in the teams namespace (a team's history, a person's), and its actor unless the actor
    /// is one of those objects (a person's history reads both indexes, so one key finds it).
    /// The other namespaces' objects have no history to read, so no keys: each key costs the
    /// write its bytes twice (the key, and its copy in the event for pruning).
    pub(crate) fn into_entries(self, history: Keyspace) -> Vec<LogEntry> {
        let actor = actor_history_key(self.actor);
        let objects_indexed = self.namespace == TEAMS;
        self.events
            .iter()
            .map(|change| {
                let payload = crate::event_codec::encode(change);
                let mut entry = LogEntry::new(payload);
                let objects = Recorder::objects(change);
                if !(objects_indexed && objects.iter().flatten().any(|&o| o == self.actor)) {
                    entry = entry.index(history, actor.clone());
                }
                if objects_indexed {
                    for object in objects.into_iter().flatten() {
                        entry = entry.index(history, object_history_key(self.namespace, object));
                    }
                }
                entry
            })
            .collect()
    }

    /// The objects an event is indexed under: the node created or removed, or the group
    /// (target) and member (holder) of a membership (relation); none for an import. Read
    /// from the event itself, so that recording does not copy its names once more.
    fn objects(change: &Change) -> [Option<&str>; 2] {
        match change.node() {
            Some((name, _)) => [Some(name), None],
            None => [change.group_name(), change.member_name()],
        }
    }
}
