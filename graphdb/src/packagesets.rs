//! Package sets: sets contain packages and other sets, acyclically.

use std::io::{BufRead, Write};
use std::sync::Arc;

use roaring::RoaringBitmap;

use crate::graph::{
    Depth, EdgeKind, Filter, GraphStore, Namespace, NamespaceKind, NodeKind, Page, Role, View,
};
use crate::import::{self, ImportSummary};
use crate::{CheckReport, Result};

/// The name of the package-set namespace.
pub const NAMESPACE: &str = "packagesets";

/// What an item of a set is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SetItem {
    /// A package.
    Package,
    /// A package set.
    Set,
}

impl SetItem {
    /// The name used in TSV files.
    pub fn as_str(self) -> &'static str {
        match self {
            SetItem::Package => "package",
            SetItem::Set => "set",
        }
    }

    pub(crate) fn kind(self) -> NodeKind {
        match self {
            SetItem::Package => NodeKind::Leaf,
            SetItem::Set => NodeKind::Group,
        }
    }
}

/// Which items a query returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SetFilter {
    /// Packages only.
    Packages,
    /// Sets only.
    Sets,
    /// Both.
    All,
}

impl From<SetFilter> for Filter {
    fn from(f: SetFilter) -> Filter {
        match f {
            SetFilter::Packages => Filter::Leaves,
            SetFilter::Sets => Filter::Groups,
            SetFilter::All => Filter::All,
        }
    }
}

/// The package-set namespace. Obtained from [`PackageSets::open`]; every write records its
/// event with the handle's actor ([`PackageSets::acting_as`]) and returns its revision.
#[derive(Clone, Debug)]
pub struct PackageSets {
    ns: Arc<Namespace>,
    actor: Arc<str>,
}

impl PackageSets {
    /// The package-set namespace of `store` (`"packagesets"`, acyclic), created empty if
    /// absent.
    ///
    /// # Errors
    /// As for [`GraphStore::namespace`].
    pub fn open(store: &GraphStore) -> Result<PackageSets> {
        Ok(PackageSets {
            ns: store.namespace(NAMESPACE, NamespaceKind::Acyclic)?,
            actor: Arc::from(crate::SYSTEM_ACTOR),
        })
    }

    /// The same namespace, writing as `actor`: a cheap clone, made per request.
    #[must_use]
    pub fn acting_as(&self, actor: &str) -> PackageSets {
        PackageSets {
            ns: Arc::clone(&self.ns),
            actor: Arc::from(actor),
        }
    }

    /// The underlying namespace.
    pub fn namespace(&self) -> &Arc<Namespace> {
        &self.ns
    }

    /// A consistent view at "now".
    pub fn view(&self) -> View<'_> {
        self.ns.view()
    }

    /// Adds a package (idempotent); returns the revision.
    ///
    /// # Errors
    /// See [`Namespace::add_node`].
    pub fn add_package(&self, name: &str) -> Result<u64> {
        Ok(self.ns.add_node(&self.actor, name, NodeKind::Leaf)?.1)
    }

    /// Adds a set (idempotent); returns the revision.
    ///
    /// # Errors
    /// See [`Namespace::add_node`].
    pub fn add_set(&self, name: &str) -> Result<u64> {
        Ok(self.ns.add_node(&self.actor, name, NodeKind::Group)?.1)
    }

    /// Adds a set that may lie on cycles (`allow`; sets refuse them by default, as
    /// Launchpad's do): an item may close a cycle when every set on it allows cycles. Decided
    /// at creation: an existing set with the other choice is [`crate::Error::CyclesFixed`].
    ///
    /// # Errors
    /// [`crate::Error::InvalidName`], [`crate::Error::WrongKind`] for a package,
    /// [`crate::Error::CyclesFixed`], engine errors.
    pub fn add_set_with_cycles(&self, name: &str, allow: bool) -> Result<u64> {
        self.ns.add_group_with_cycles(&self.actor, name, allow)
    }

    /// Whether the set `name` allows cycles.
    pub fn allows_cycles(&self, name: &str) -> bool {
        self.ns.allows_cycles(name)
    }

    /// Removes a package or a set with its edges; returns the revision, or `None` when there
    /// was no such name.
    ///
    /// # Errors
    /// Engine errors.
    pub fn remove(&self, name: &str) -> Result<Option<u64>> {
        self.ns.remove_node(&self.actor, name)
    }

    /// Puts `item` (a package or a set) into `set`; returns the revision.
    ///
    /// # Errors
    /// [`crate::Error::UnknownNode`], [`crate::Error::WrongKind`], [`crate::Error::Cycle`].
    pub fn insert(&self, set: &str, item: &str) -> Result<u64> {
        self.ns
            .set_membership(&self.actor, item, set, Role::Member, None)
    }

    /// `PUT /packagesets/{set}/items/{item}` as one store command: puts `item` (a package or
    /// a set, as `item_type` says) into `set`, creating whichever is missing, validated first
    /// and written as one atomic batch.
    ///
    /// # Errors
    /// [`crate::Error::HasNoMembers`] when `set` is a package, [`crate::Error::WrongKind`]
    /// when `item` exists with the other type, [`crate::Error::Cycle`], name and engine
    /// errors; nothing is written then.
    pub fn put_item(&self, set: &str, item: &str, item_type: SetItem) -> Result<u64> {
        self.ns.put_edge(
            &self.actor,
            item,
            Some(item_type.kind()),
            set,
            &EdgeKind::Membership(Role::Member),
            None,
        )
    }

    /// Takes `item` out of `set`; returns the revision, or `None` when it was not there
    /// directly.
    ///
    /// # Errors
    /// [`crate::Error::UnknownNode`], engine errors.
    pub fn take(&self, set: &str, item: &str) -> Result<Option<u64>> {
        self.ns.remove_membership(&self.actor, item, set)
    }

    /// Whether `item` is in `set`, directly or through nested sets.
    ///
    /// # Errors
    /// [`crate::Error::UnknownNode`].
    pub fn is_in(&self, item: &str, set: &str) -> Result<bool> {
        self.view().is_member(item, set)
    }

    /// Why `item` is in `set`: the shortest chain `[item, set1, ..., set]`, each in the next,
    /// or `None`.
    ///
    /// # Errors
    /// [`crate::Error::UnknownNode`].
    pub fn path(&self, item: &str, set: &str) -> Result<Option<Vec<String>>> {
        self.view().path(item, set)
    }

    /// One page of the items of `set`, sorted by name.
    ///
    /// # Errors
    /// [`crate::Error::UnknownNode`].
    pub fn items(
        &self,
        set: &str,
        depth: Depth,
        filter: SetFilter,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page> {
        self.view().members(set, depth, filter.into(), after, limit)
    }

    /// The packages of `set` as ids.
    ///
    /// # Errors
    /// [`crate::Error::UnknownNode`].
    pub fn package_ids(&self, set: &str, depth: Depth) -> Result<RoaringBitmap> {
        self.view().member_ids(set, depth, Filter::Leaves)
    }

    /// One page of the sets that contain `item`, sorted by name.
    ///
    /// # Errors
    /// [`crate::Error::UnknownNode`].
    pub fn sets_of(
        &self,
        item: &str,
        depth: Depth,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page> {
        self.view().groups_of(item, depth, after, limit)
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

    /// Imports a TSV file (`set\titem\ttype`), all or nothing.
    ///
    /// # Errors
    /// As for [`crate::Teams::import_tsv`].
    pub fn import_tsv(
        &self,
        reader: impl BufRead,
        progress: Option<&dyn Fn(u64, u64)>,
    ) -> Result<ImportSummary> {
        let rows = import::parse_package_sets(reader)?;
        import::load_package_sets(&self.ns, &self.actor, &rows, progress)
    }

    /// Writes every set, package and edge as TSV.
    ///
    /// # Errors
    /// [`crate::Error::Io`].
    pub fn export_tsv(&self, writer: impl Write) -> Result<()> {
        import::export_package_sets(&self.ns, writer)
    }
}
