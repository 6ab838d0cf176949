//! Team participation: persons and teams, roles, relations, and the queries of the directory.

use std::io::{BufRead, Write};
use std::sync::Arc;

use roaring::RoaringBitmap;

use crate::graph::{
    Depth, EdgeKind, Filter, GraphStore, Namespace, NamespaceKind, NodeKind, Page, Role, View,
};
use crate::import::{self, ImportSummary};
use crate::{CheckReport, IndexStats, Result};

/// The name of the team namespace.
pub const NAMESPACE: &str = "teams";

/// Which members a team query returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TeamFilter {
    /// Persons only.
    Persons,
    /// Teams only.
    Teams,
    /// Both.
    All,
}

impl From<TeamFilter> for Filter {
    fn from(f: TeamFilter) -> Filter {
        match f {
            TeamFilter::Persons => Filter::Leaves,
            TeamFilter::Teams => Filter::Groups,
            TeamFilter::All => Filter::All,
        }
    }
}

/// The team namespace: persons are leaves, teams are groups; `member` and `admin` confer
/// membership, relations (`audits`, `administers`, ...) do not. Obtained from
/// [`Teams::open`]; cheap to clone.
///
/// Every write records its event in the change feed with the handle's actor
/// ([`Teams::acting_as`]; [`crate::SYSTEM_ACTOR`] until set) and returns its revision.
#[derive(Clone, Debug)]
pub struct Teams {
    ns: Arc<Namespace>,
    actor: Arc<str>,
}

impl Teams {
    /// The team namespace of `store` (`"teams"`, acyclic), created empty if absent.
    ///
    /// # Errors
    /// As for [`GraphStore::namespace`].
    pub fn open(store: &GraphStore) -> Result<Teams> {
        Ok(Teams {
            ns: store.namespace(NAMESPACE, NamespaceKind::Acyclic)?,
            actor: Arc::from(crate::SYSTEM_ACTOR),
        })
    }

    /// The same namespace, writing as `actor` (the person a request acts for): a cheap clone,
    /// made per request.
    #[must_use]
    pub fn acting_as(&self, actor: &str) -> Teams {
        Teams {
            ns: Arc::clone(&self.ns),
            actor: Arc::from(actor),
        }
    }

    /// The actor this handle's writes are recorded with.
    pub fn actor(&self) -> &str {
        &self.actor
    }

    /// The underlying namespace.
    pub fn namespace(&self) -> &Arc<Namespace> {
        &self.ns
    }

    /// A consistent view at "now", for several queries (or id-based hot paths) under one lock.
    pub fn view(&self) -> View<'_> {
        self.ns.view()
    }

    /// A view at "now" if one is available without waiting; see [`Namespace::try_view`].
    pub fn try_view(&self) -> Option<View<'_>> {
        self.ns.try_view()
    }

    /// Adds a person (idempotent); returns the revision.
    ///
    /// # Errors
    /// [`crate::Error::WrongKind`] when a team has the name; see [`Namespace::add_node`].
    pub fn add_person(&self, name: &str) -> Result<u64> {
        Ok(self.ns.add_node(&self.actor, name, NodeKind::Leaf)?.1)
    }

    /// Adds a team (idempotent); returns the revision.
    ///
    /// # Errors
    /// [`crate::Error::WrongKind`] when a person has the name; see [`Namespace::add_node`].
    pub fn add_team(&self, name: &str) -> Result<u64> {
        Ok(self.ns.add_node(&self.actor, name, NodeKind::Group)?.1)
    }

    /// Removes a person or a team with all its memberships and relations (one event); returns
    /// its revision, or `None` when there was no such name.
    ///
    /// # Errors
    /// Engine errors.
    pub fn remove(&self, name: &str) -> Result<Option<u64>> {
        self.ns.remove_node(&self.actor, name)
    }

    /// Makes `member` (a person or a team) a member of `team` with `role` until `expires`, or
    /// changes the role and expiry of an existing membership. Returns the revision.
    ///
    /// # Errors
    /// [`crate::Error::UnknownNode`], [`crate::Error::WrongKind`] when `team` is a person,
    /// [`crate::Error::Cycle`] when `team` is (transitively) a member of `member`.
    pub fn set_membership(
        &self,
        team: &str,
        member: &str,
        role: Role,
        expires: Option<i64>,
    ) -> Result<u64> {
        self.ns
            .set_membership(&self.actor, member, team, role, expires)
    }

    /// `PUT /teams/{team}/members/{member}` as one store command: makes `member` a member of
    /// `team` with the role of `kind`, or grants it the relation of `kind` on `team`, creating
    /// the team and (as a person) the member when they do not exist, all validated first and
    /// written as **one** atomic batch (one group sync) with its events (the team and person
    /// created, the membership or relation). Returns the revision of the last.
    ///
    /// # Errors
    /// [`crate::Error::InvalidName`], [`crate::Error::InvalidRelation`],
    /// [`crate::Error::HasNoMembers`] when `team` is a person, [`crate::Error::Cycle`] when
    /// `member == team` or `team` is (transitively) a member of `member`, engine errors;
    /// nothing is written then.
    pub fn put_member(
        &self,
        team: &str,
        member: &str,
        kind: &EdgeKind,
        expires: Option<i64>,
    ) -> Result<u64> {
        self.ns
            .put_edge(&self.actor, member, None, team, kind, expires)
    }

    /// Ends a membership; returns the revision, or `None` when it was not stored.
    ///
    /// # Errors
    /// [`crate::Error::UnknownNode`], engine errors.
    pub fn remove_membership(&self, team: &str, member: &str) -> Result<Option<u64>> {
        self.ns.remove_membership(&self.actor, member, team)
    }

    /// Grants `relation` (e.g. `audits`) on `target` to `holder` (a person or a team); returns
    /// the revision.
    ///
    /// # Errors
    /// [`crate::Error::InvalidRelation`], [`crate::Error::UnknownNode`], engine errors.
    pub fn grant(
        &self,
        holder: &str,
        relation: &str,
        target: &str,
        expires: Option<i64>,
    ) -> Result<u64> {
        self.ns
            .grant(&self.actor, holder, relation, target, expires)
    }

    /// Revokes a relation; returns the revision, or `None` when it was not stored.
    ///
    /// # Errors
    /// [`crate::Error::UnknownNode`], engine errors.
    pub fn revoke(&self, holder: &str, relation: &str, target: &str) -> Result<Option<u64>> {
        self.ns.revoke(&self.actor, holder, relation, target)
    }

    /// Whether `person` (or a team) is a member of `team`, directly or through nested teams.
    ///
    /// # Errors
    /// [`crate::Error::UnknownNode`].
    pub fn is_member(&self, person: &str, team: &str) -> Result<bool> {
        self.view().is_member(person, team)
    }

    /// One page of the members of `team`, sorted by name, after the cursor `after`.
    ///
    /// # Errors
    /// [`crate::Error::UnknownNode`].
    pub fn members(
        &self,
        team: &str,
        depth: Depth,
        filter: TeamFilter,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page> {
        self.view()
            .members(team, depth, filter.into(), after, limit)
    }

    /// The members of `team` as ids, sorted by id.
    ///
    /// # Errors
    /// [`crate::Error::UnknownNode`].
    pub fn member_ids(
        &self,
        team: &str,
        depth: Depth,
        filter: TeamFilter,
    ) -> Result<RoaringBitmap> {
        self.view().member_ids(team, depth, filter.into())
    }

    /// One page of the teams `person` belongs to, sorted by name.
    ///
    /// # Errors
    /// [`crate::Error::UnknownNode`].
    pub fn teams_of(
        &self,
        person: &str,
        depth: Depth,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page> {
        self.view().groups_of(person, depth, after, limit)
    }

    /// The teams `person` belongs to, as ids sorted by id.
    ///
    /// # Errors
    /// [`crate::Error::UnknownNode`].
    pub fn team_ids_of(&self, person: &str, depth: Depth) -> Result<RoaringBitmap> {
        let view = self.view();
        let id = view.id(person).ok_or_else(|| crate::Error::UnknownNode {
            namespace: NAMESPACE.to_owned(),
            name: person.to_owned(),
        })?;
        Ok(view.group_ids_of(id, depth))
    }

    /// The stored membership of `member` in `team` (expired or not): role and expiry.
    ///
    /// # Errors
    /// [`crate::Error::UnknownNode`].
    pub fn membership(&self, team: &str, member: &str) -> Result<Option<(Role, Option<i64>)>> {
        self.view().membership(member, team)
    }

    /// Whether `name` is a person, a team, or unknown.
    pub fn kind(&self, name: &str) -> Option<NodeKind> {
        let view = self.view();
        view.id(name).and_then(|id| view.kind(id))
    }

    /// The chain `[person, team1, ..., team]` that makes `person` a member of `team`.
    ///
    /// # Errors
    /// [`crate::Error::UnknownNode`].
    pub fn path(&self, person: &str, team: &str) -> Result<Option<Vec<String>>> {
        self.view().path(person, team)
    }

    /// One page of who holds `relation` on `target`, sorted by name; a team holder brings all
    /// its transitive members.
    ///
    /// # Errors
    /// [`crate::Error::UnknownNode`].
    pub fn holders(
        &self,
        relation: &str,
        target: &str,
        filter: TeamFilter,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page> {
        self.view()
            .holders(relation, target, filter.into(), after, limit)
    }

    /// One page of the teams on which `person` holds `relation`, directly or through the
    /// teams it was granted to (see [`View::relation_targets`]).
    ///
    /// # Errors
    /// [`crate::Error::UnknownNode`].
    pub fn relations_of(
        &self,
        person: &str,
        relation: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page> {
        self.view().relation_targets(person, relation, after, limit)
    }

    /// Why `person` holds `relation` on `target`: `[person, team, ..., direct holder]`, or
    /// `None` (see [`View::holder_path`]).
    ///
    /// # Errors
    /// [`crate::Error::UnknownNode`].
    pub fn holder_path(
        &self,
        person: &str,
        relation: &str,
        target: &str,
    ) -> Result<Option<Vec<String>>> {
        self.view().holder_path(person, relation, target)
    }

    /// Whether `person` holds `relation` on `target`, directly or through a team.
    ///
    /// # Errors
    /// [`crate::Error::UnknownNode`].
    pub fn is_holder(&self, person: &str, relation: &str, target: &str) -> Result<bool> {
        self.view().is_holder(person, relation, target)
    }

    /// Recomputes the index from the edges.
    ///
    /// # Errors
    /// Engine errors.
    pub fn rebuild(&self) -> Result<()> {
        self.ns.rebuild()
    }

    /// Compares the index with a fresh BFS.
    pub fn check(&self) -> CheckReport {
        self.ns.check()
    }

    /// Sizes of the index.
    pub fn stats(&self) -> IndexStats {
        self.ns.stats()
    }

    /// Where the team namespace's memory goes, estimated; see [`crate::MemoryStats`].
    pub fn memory(&self) -> crate::MemoryStats {
        self.ns.memory()
    }

    /// Imports a TSV file (`team\tmember\trole\texpires`), all or nothing, recorded as one
    /// `import.teams` event with the counts; see
    /// [`crate::import`]. `progress`, when given, is called with `(edges applied, edges in
    /// the file)` every few thousand edges and at the end (a binary draws its bar with it).
    ///
    /// # Errors
    /// [`crate::Error::Import`] naming the line of a malformed row, [`crate::Error::Cycle`],
    /// [`crate::Error::WrongKind`], engine errors; nothing is written then.
    pub fn import_tsv(
        &self,
        reader: impl BufRead,
        progress: Option<&dyn Fn(u64, u64)>,
    ) -> Result<ImportSummary> {
        let file = import::parse_teams(reader)?;
        import::load_teams(&self.ns, &self.actor, file, progress)
    }

    /// Writes every person, team and edge (expired ones included) as TSV that
    /// [`Teams::import_tsv`] reads back.
    ///
    /// # Errors
    /// [`crate::Error::Io`].
    pub fn export_tsv(&self, writer: impl Write) -> Result<()> {
        import::export_teams(&self.ns, writer)
    }
}
