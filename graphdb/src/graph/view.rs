//! Read-only views of a namespace: every query of the index.

use std::sync::{Arc, RwLockReadGuard};

use roaring::RoaringBitmap;

use super::namespace::Namespace;
use super::state::{active_at, State};
use super::types::{Depth, Filter, NodeId, NodeKind, Page, Role};
use crate::Result;

/// A read-only view of a namespace at one instant, for several queries under one lock.
#[derive(Debug)]
pub struct View<'a> {
    pub(super) ns: &'a Namespace,
    pub(super) state: RwLockReadGuard<'a, State>,
    pub(super) now: i64,
}

/// Cuts one page of at most `limit` names (a limit of 0 counts as 1, so that a page always
/// makes progress) after `after` (exclusive) from `ids`, sorted by name. Names are compared
/// only to place the cursor (a binary search of the name order); the rest sorts ranks.
pub(super) fn page(state: &State, ids: &RoaringBitmap, after: Option<&str>, limit: usize) -> Page {
    let limit = limit.max(1);
    let from = after.map_or(0, |a| state.order.rank_after(a, |x| state.name(x)));
    let mut keyed: Vec<(u64, u32)> = ids
        .iter()
        .map(|x| (state.order.rank(x), x))
        .filter(|&(rank, _)| rank >= from)
        .collect();
    let more = keyed.len() > limit;
    if more {
        keyed.select_nth_unstable(limit);
        keyed.truncate(limit);
    }
    keyed.sort_unstable();
    let items: Vec<String> = keyed
        .into_iter()
        .map(|(_, x)| state.name(x).to_owned())
        .collect();
    Page {
        next: if more { items.last().cloned() } else { None },
        items,
    }
}

/// The index in `sorted` (ids sorted by name) of the first name after `after`.
fn position_after(state: &State, sorted: &[u32], after: Option<&str>) -> usize {
    after.map_or(0, |a| {
        let from = state.order.rank_after(a, |x| state.name(x));
        sorted.partition_point(|&x| state.order.rank(x) < from)
    })
}

impl View<'_> {
    /// The instant the view answers for (Unix seconds).
    pub fn now(&self) -> i64 {
        self.now
    }

    /// The id of a node.
    pub fn id(&self, name: &str) -> Option<NodeId> {
        self.state.id(name).map(NodeId)
    }

    /// The name of a node.
    pub fn name(&self, id: NodeId) -> Option<&str> {
        self.state.names.name(id.0)
    }

    /// The kind of a node.
    pub fn kind(&self, id: NodeId) -> Option<NodeKind> {
        self.state.node(id.0).map(|n| n.kind)
    }

    fn resolve(&self, name: &str) -> Result<u32> {
        self.ns.resolve(&self.state, name)
    }

    /// The ids of `member` and `group`, looked up side by side (`Names::id_pair`).
    fn resolve_pair(&self, member: &str, group: &str) -> Result<(u32, u32)> {
        let (m, g) = self.state.names.id_pair(member, group);
        let m = m.ok_or_else(|| self.ns.unknown(member))?;
        let g = g.ok_or_else(|| self.ns.unknown(group))?;
        Ok((m, g))
    }

    /// Whether `member` belongs to `group` through active membership edges: one bitmap probe.
    pub fn is_member_id(&self, member: NodeId, group: NodeId) -> bool {
        self.state.reaches(member.0, group.0)
    }

    /// [`View::is_member_id`] by names.
    ///
    /// # Errors
    /// [`crate::Error::UnknownNode`].
    pub fn is_member(&self, member: &str, group: &str) -> Result<bool> {
        let (m, g) = self.resolve_pair(member, group)?;
        Ok(self.is_member_id(NodeId(m), NodeId(g)))
    }

    /// The stored membership edge `member -> group` (expired or not): role and expiry.
    ///
    /// # Errors
    /// [`crate::Error::UnknownNode`].
    pub fn membership(&self, member: &str, group: &str) -> Result<Option<(Role, Option<i64>)>> {
        let m = self.resolve(member)?;
        let g = self.resolve(group)?;
        Ok(self.state.link(m, g).map(|l| (l.role, l.expires())))
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
    /// [`crate::Error::UnknownNode`].
    pub fn member_ids(&self, group: &str, depth: Depth, filter: Filter) -> Result<RoaringBitmap> {
        let g = self.resolve(group)?;
        Ok(self.member_ids_of(NodeId(g), depth, filter))
    }

    /// [`View::member_ids`] by id.
    pub fn member_ids_of(&self, group: NodeId, depth: Depth, filter: Filter) -> RoaringBitmap {
        let state = &self.state;
        let ids = match depth {
            Depth::Transitive => state.reached_by(group.0),
            Depth::Direct => state.node(group.0).map_or_else(RoaringBitmap::new, |n| {
                n.down()
                    .iter()
                    .filter(|l| state.active_down(group.0, l))
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
    /// [`crate::Error::UnknownNode`].
    pub fn members(
        &self,
        group: &str,
        depth: Depth,
        filter: Filter,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page> {
        let g = self.resolve(group)?;
        if depth == Depth::Direct {
            let ids = self.member_ids_of(NodeId(g), depth, filter);
            return Ok(page(&self.state, &ids, after, limit));
        }
        let sorted = self.sorted_member_ids(NodeId(g), filter);
        let start = position_after(&self.state, &sorted, after);
        let end = start.saturating_add(limit.max(1)).min(sorted.len());
        let items: Vec<String> = sorted[start..end]
            .iter()
            .map(|&x| self.state.name(x).to_owned())
            .collect();
        Ok(Page {
            next: if end < sorted.len() {
                items.last().cloned()
            } else {
                None
            },
            items,
        })
    }

    /// The transitive members of `group` sorted by name: kept per group and filter until the
    /// group's members change, so that the pages of a large team each cost a binary search
    /// and their own names, and a server can keep an answer per list (the same `Arc` means
    /// the same members).
    pub fn sorted_member_ids(&self, group: NodeId, filter: Filter) -> Arc<[u32]> {
        self.state.lists.get_or(group.0, filter, || {
            let ids = self.member_ids_of(group, Depth::Transitive, filter);
            self.state.order.sort(&ids)
        })
    }

    /// `ids` sorted by name (a sort of ranks, not of names).
    pub fn sort_by_name(&self, ids: &RoaringBitmap) -> Vec<u32> {
        self.state.order.sort(ids)
    }

    /// The index in `sorted` (from [`View::sorted_member_ids`]) of the first name after
    /// `after` (0 for `None`): where the page after that cursor starts.
    pub fn position_after(&self, sorted: &[u32], after: Option<&str>) -> usize {
        position_after(&self.state, sorted, after)
    }

    /// The groups `member` belongs to, sorted by name: [`View::group_ids_of`] then
    /// [`View::sort_by_name`], except that a leaf's transitive groups, where no hub widens
    /// them, are its `probe` (a sorted slice), sorted without a bitmap built in between (the
    /// teams of a person, a hot read of the directory).
    pub fn sorted_group_ids_of(&self, member: NodeId, depth: Depth) -> Vec<u32> {
        let state = &self.state;
        if depth == Depth::Transitive
            && state.hubs.set.is_empty()
            && state.leaves.contains(member.0)
        {
            return state.order.sort(state.probe.get(member.0).iter().copied());
        }
        self.sort_by_name(&self.group_ids_of(member, depth))
    }

    /// The groups `member` belongs to, as a bitmap of ids.
    pub fn group_ids_of(&self, member: NodeId, depth: Depth) -> RoaringBitmap {
        let state = &self.state;
        match depth {
            Depth::Transitive => state.reach_set(member.0),
            Depth::Direct => state.node(member.0).map_or_else(RoaringBitmap::new, |n| {
                n.up()
                    .iter()
                    .filter(|l| state.active_up(member.0, l))
                    .map(|l| l.other)
                    .collect()
            }),
        }
    }

    /// One page of the groups `member` belongs to, sorted by name.
    ///
    /// # Errors
    /// [`crate::Error::UnknownNode`].
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
    /// [`crate::Error::UnknownNode`].
    pub fn path(&self, member: &str, group: &str) -> Result<Option<Vec<String>>> {
        let (m, g) = self.resolve_pair(member, group)?;
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
    /// [`crate::Error::UnknownNode`].
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
            ids |= self.state.reached_by(h);
        }
        Ok(self.filter(ids, filter))
    }

    /// One page of [`View::holder_ids`], sorted by name.
    ///
    /// # Errors
    /// [`crate::Error::UnknownNode`].
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

    /// The targets on which `holder` holds `relation` (the other way round from
    /// [`View::holder_ids`]): those of unexpired grants to `holder` itself or to a group it is
    /// a transitive member of. Proportional to the number of grants of `relation`.
    ///
    /// # Errors
    /// [`crate::Error::UnknownNode`].
    pub fn relation_target_ids(&self, holder: &str, relation: &str) -> Result<RoaringBitmap> {
        let h = self.resolve(holder)?;
        let state = &self.state;
        let key: Box<str> = relation.into();
        let now = self.now;
        Ok(self
            .state
            .relations
            .range((key.clone(), 0, 0)..=(key, u32::MAX, u32::MAX))
            .filter(|((_, _, d), expires)| {
                active_at(**expires, now) && (*d == h || state.reaches(h, *d))
            })
            .map(|((_, target, _), _)| *target)
            .collect())
    }

    /// One page of [`View::relation_target_ids`], sorted by name.
    ///
    /// # Errors
    /// [`crate::Error::UnknownNode`].
    pub fn relation_targets(
        &self,
        holder: &str,
        relation: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page> {
        let ids = self.relation_target_ids(holder, relation)?;
        Ok(page(&self.state, &ids, after, limit))
    }

    /// Why `holder` holds `relation` on `target`: the shortest chain `[holder, g1, ..., d]`
    /// of membership edges up to a direct holder `d` of an unexpired grant (`[holder]` when
    /// granted directly), or `None` when it does not hold it.
    ///
    /// # Errors
    /// [`crate::Error::UnknownNode`].
    pub fn holder_path(
        &self,
        holder: &str,
        relation: &str,
        target: &str,
    ) -> Result<Option<Vec<String>>> {
        let h = self.resolve(holder)?;
        let t = self.resolve(target)?;
        let mut best: Option<Vec<u32>> = None;
        for d in self.direct_holders(relation, t) {
            let chain = if d == h {
                Some(vec![h])
            } else {
                self.state.path(h, d)
            };
            if let Some(chain) = chain {
                if best.as_ref().is_none_or(|b| chain.len() < b.len()) {
                    best = Some(chain);
                }
            }
        }
        Ok(best.map(|chain| {
            chain
                .into_iter()
                .map(|x| self.state.name(x).to_owned())
                .collect()
        }))
    }

    /// Whether `holder` holds `relation` on `target`, directly or as a transitive member of a
    /// group that holds it.
    ///
    /// # Errors
    /// [`crate::Error::UnknownNode`].
    pub fn is_holder(&self, holder: &str, relation: &str, target: &str) -> Result<bool> {
        let h = self.resolve(holder)?;
        let t = self.resolve(target)?;
        Ok(self
            .direct_holders(relation, t)
            .any(|d| d == h || self.state.reaches(h, d)))
    }
}
