//! The on-disk layout of the graph keyspaces (see `DESIGN.md`), and loading a namespace.

use engine::keys::{KeyBuilder, KeyReader};
use engine::{Direction, Engine, Keyspace, ReadView, ScanRange, WriteBatch};
use roaring::RoaringBitmap;

use super::state::{active_at, State};
use super::{NamespaceKind, NodeKind, Role};
use crate::{Error, Result};

/// Namespaces, id counter and per-namespace index time.
pub const META: &str = "graph.meta";
/// `ns u32 | id u32 -> kind u8 | name`.
pub const NODES: &str = "graph.nodes";
/// `ns u32 | member u32 | group u32 | tag u8 [| relation] -> role u8 [| expires i64]`.
pub const EDGES: &str = "graph.edges";
/// `ns u32 | id u32 -> roaring bitmap of the groups the group belongs to (transitively)`;
/// groups only: a leaf's closure is derived at load from its direct groups' closures.
pub const CLOSURE: &str = "graph.closure";
/// The change log of the directory (`engine::ChangeLog`): revision -> event.
pub const CHANGES: &str = "changes";
/// The change log's history indexes: `object`/`actor` prefix ++ revision -> empty.
pub const HISTORY: &str = "history";
/// The change feed's durable consumers (`engine::Consumers`, the server's subscriptions).
pub const CONSUMERS: &str = "consumers";

const TAG_MEMBERSHIP: u8 = 0;
const TAG_RELATION: u8 = 1;
const ROLE_RELATION: u8 = 2;
/// Set in a membership edge's role byte when a label follows it.
const LABELLED: u8 = 0x80;

/// The keyspace handles of one engine.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Keyspaces {
    pub meta: Keyspace,
    pub nodes: Keyspace,
    pub edges: Keyspace,
    pub closure: Keyspace,
    pub changes: Keyspace,
    pub history: Keyspace,
}

impl Keyspaces {
    pub fn of(engine: &dyn Engine) -> Result<Self> {
        Ok(Keyspaces {
            meta: engine.keyspace(META)?,
            nodes: engine.keyspace(NODES)?,
            edges: engine.keyspace(EDGES)?,
            closure: engine.keyspace(CLOSURE)?,
            changes: engine.keyspace(CHANGES)?,
            history: engine.keyspace(HISTORY)?,
        })
    }
}

pub fn namespace_key(name: &str) -> Vec<u8> {
    KeyBuilder::new().u8(b'N').str(name).finish()
}

pub fn namespace_counter_key() -> Vec<u8> {
    KeyBuilder::new().u8(b'C').finish()
}

/// The flag of a group that opted into cycles (see `State::cycles_allowed`).
pub fn cycles_key(ns: u32, id: u32) -> Vec<u8> {
    KeyBuilder::new().u8(b'Y').u32(ns).u32(id).finish()
}

/// The hub set of a general graph (`hubs.rs`): a roaring bitmap, absent when empty.
pub fn hubs_key(ns: u32) -> Vec<u8> {
    KeyBuilder::new().u8(b'H').u32(ns).finish()
}

pub fn applied_key(ns: u32) -> Vec<u8> {
    KeyBuilder::new().u8(b'A').u32(ns).finish()
}

pub fn encode_namespace(id: u32, kind: NamespaceKind) -> Vec<u8> {
    let mut v = id.to_be_bytes().to_vec();
    v.push(match kind {
        NamespaceKind::Acyclic => 0,
        NamespaceKind::General => 1,
    });
    v
}

pub fn decode_namespace(key: &[u8], value: &[u8]) -> Result<(u32, NamespaceKind)> {
    let corrupt = |reason| Error::Corrupt {
        keyspace: META,
        key: key.to_vec(),
        reason,
    };
    let (id, rest) = value
        .split_first_chunk::<4>()
        .ok_or_else(|| corrupt("short namespace record"))?;
    let kind = match rest {
        [0] => NamespaceKind::Acyclic,
        [1] => NamespaceKind::General,
        _ => return Err(corrupt("bad namespace kind")),
    };
    Ok((u32::from_be_bytes(*id), kind))
}

pub fn node_key(ns: u32, id: u32) -> Vec<u8> {
    KeyBuilder::new().u32(ns).u32(id).finish()
}

pub fn node_value(kind: NodeKind, name: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(1 + name.len());
    v.push(match kind {
        NodeKind::Leaf => 0,
        NodeKind::Group => 1,
    });
    v.extend_from_slice(name.as_bytes());
    v
}

pub fn membership_key(ns: u32, member: u32, group: u32) -> Vec<u8> {
    KeyBuilder::new()
        .u32(ns)
        .u32(member)
        .u32(group)
        .u8(TAG_MEMBERSHIP)
        .finish()
}

pub fn relation_key(ns: u32, holder: u32, target: u32, relation: &str) -> Vec<u8> {
    KeyBuilder::new()
        .u32(ns)
        .u32(holder)
        .u32(target)
        .u8(TAG_RELATION)
        .raw(relation.as_bytes())
        .finish()
}

/// The prefix of a node's outgoing edges (as member or holder).
pub fn edges_of_key(ns: u32, id: u32) -> Vec<u8> {
    KeyBuilder::new().u32(ns).u32(id).finish()
}

pub fn edge_value(role: Option<Role>, expires: Option<i64>) -> Vec<u8> {
    labelled_edge_value(role, None, expires)
}

/// A membership edge's value with a label: the role byte has [`LABELLED`] set and the label
/// follows as `len u8 | bytes` (labels are 1 to 255 bytes), before the expiry.
pub fn labelled_edge_value(
    role: Option<Role>,
    label: Option<&str>,
    expires: Option<i64>,
) -> Vec<u8> {
    let mut v = vec![match role {
        Some(Role::Member) => 0,
        Some(Role::Admin) => 1,
        None => ROLE_RELATION,
    }];
    if let Some(label) = label {
        v[0] |= LABELLED;
        v.push(u8::try_from(label.len()).expect("labels are at most 255 bytes"));
        v.extend_from_slice(label.as_bytes());
    }
    if let Some(e) = expires {
        v.extend_from_slice(&e.to_be_bytes());
    }
    v
}

pub fn closure_key(ns: u32, id: u32) -> Vec<u8> {
    KeyBuilder::new().u32(ns).u32(id).finish()
}

/// Puts the closure of every dirty group and the index time into `batch`, and clears the
/// dirty set. Leaves are not persisted: [`load`] derives them from their direct groups.
pub fn persist_dirty(ks: &Keyspaces, ns: u32, state: &mut State, batch: &mut WriteBatch) {
    let mut buf = Vec::new();
    for x in &state.dirty {
        let key = closure_key(ns, x);
        let kind = state.node(x).map(|n| n.kind);
        if kind == Some(NodeKind::Leaf) {
            continue;
        }
        match state.anc.get(&x) {
            Some(anc) if !anc.is_empty() && kind.is_some() => {
                buf.clear();
                anc.serialize_into(&mut buf)
                    .expect("writing to a Vec cannot fail");
                batch.put(ks.closure, key, buf.as_slice());
            }
            _ => batch.delete(ks.closure, key),
        }
    }
    batch.put(ks.meta, applied_key(ns), state.applied.to_be_bytes());
    if std::mem::take(&mut state.hubs.dirty) {
        if state.hubs.set.is_empty() {
            batch.delete(ks.meta, hubs_key(ns));
        } else {
            let mut buf = Vec::with_capacity(state.hubs.set.serialized_size());
            state
                .hubs
                .set
                .serialize_into(&mut buf)
                .expect("writing to a Vec cannot fail");
            batch.put(ks.meta, hubs_key(ns), buf);
        }
    }
    state.dirty.clear();
}

fn scan_prefix<'a>(
    view: &'a dyn ReadView,
    keyspace: Keyspace,
    ns: u32,
) -> Result<engine::KvIter<'a>> {
    Ok(view.scan(
        keyspace,
        // Read once: the load keeps everything it needs in memory, and a cache filled with
        // the whole store would stay resident for nothing (graphdb/DESIGN.md, "Memory").
        ScanRange::prefix(&ns.to_be_bytes()).read_once(),
        Direction::Forward,
    )?)
}

/// Loads a namespace from a consistent view: nodes, edges and the persisted closure, then
/// derives `desc`, the kind sets and the expiry queue.
pub fn load(view: &dyn ReadView, ks: &Keyspaces, ns: u32) -> Result<State> {
    let mut state = State {
        applied: match view.get(ks.meta, &applied_key(ns))? {
            None => i64::MIN,
            Some(v) => i64::from_be_bytes(v.as_slice().try_into().map_err(|_| Error::Corrupt {
                keyspace: META,
                key: applied_key(ns),
                reason: "index time is not 8 bytes",
            })?),
        },
        ..State::default()
    };
    // Names come in id order, not name order: one sort at the end places them all.
    state.order.defer();
    for kv in scan_prefix(view, ks.nodes, ns)? {
        let (key, value) = kv?;
        let corrupt = |reason| Error::Corrupt {
            keyspace: NODES,
            key: key.clone(),
            reason,
        };
        let mut reader = KeyReader::new(&key);
        reader.u32();
        let id = reader.u32().ok_or_else(|| corrupt("short node key"))?;
        let (kind, name) = value.split_first().ok_or_else(|| corrupt("empty node"))?;
        let kind = match kind {
            0 => NodeKind::Leaf,
            1 => NodeKind::Group,
            _ => return Err(corrupt("bad node kind")),
        };
        let name = std::str::from_utf8(name).map_err(|_| corrupt("name is not UTF-8"))?;
        state.insert_node(id, name, kind);
    }
    for kv in scan_prefix(view, ks.edges, ns)? {
        let (key, value) = kv?;
        let corrupt = |reason| Error::Corrupt {
            keyspace: EDGES,
            key: key.clone(),
            reason,
        };
        let mut reader = KeyReader::new(&key);
        reader.u32();
        let (Some(member), Some(group), Some(tag)) = (reader.u32(), reader.u32(), reader.u8())
        else {
            return Err(corrupt("short edge key"));
        };
        if state.node(member).is_none() || state.node(group).is_none() {
            return Err(corrupt("edge of a missing node"));
        }
        let (mut role, mut value) = match value.split_first() {
            Some((role, rest)) => (*role, rest),
            None => return Err(corrupt("empty edge value")),
        };
        let mut label = None;
        if role & LABELLED != 0 {
            role &= !LABELLED;
            let (&len, rest) = value.split_first().ok_or_else(|| corrupt("short label"))?;
            let (text, rest) = rest
                .split_at_checked(usize::from(len))
                .ok_or_else(|| corrupt("short label"))?;
            label = Some(std::str::from_utf8(text).map_err(|_| corrupt("label is not UTF-8"))?);
            value = rest;
        }
        let expires = match value {
            [] => None,
            rest => Some(i64::from_be_bytes(
                rest.try_into().map_err(|_| corrupt("bad expiry"))?,
            )),
        };
        match (tag, role) {
            (TAG_MEMBERSHIP, 0 | 1) => {
                let role = if role == 0 { Role::Member } else { Role::Admin };
                let label = state
                    .label_id(label)
                    .ok_or_else(|| corrupt("more than 65,535 labels"))?;
                state.insert_labelled_link(member, group, role, label, expires);
            }
            (TAG_RELATION, ROLE_RELATION) => {
                let relation = std::str::from_utf8(reader.rest())
                    .map_err(|_| corrupt("relation is not UTF-8"))?;
                state
                    .relations
                    .insert((relation.into(), group, member), expires);
            }
            _ => return Err(corrupt("bad edge tag")),
        }
    }
    for kv in scan_prefix(view, ks.closure, ns)? {
        let (key, value) = kv?;
        let corrupt = |reason| Error::Corrupt {
            keyspace: CLOSURE,
            key: key.clone(),
            reason,
        };
        let mut reader = KeyReader::new(&key);
        reader.u32();
        let id = reader.u32().ok_or_else(|| corrupt("short closure key"))?;
        if state.node(id).is_none_or(|n| n.kind != NodeKind::Group) {
            return Err(corrupt("closure of a missing node or of a leaf"));
        }
        let anc = RoaringBitmap::deserialize_from(value.as_slice())
            .map_err(|_| corrupt("bad roaring bitmap"))?;
        if !anc.is_empty() {
            state.anc.insert(id, anc);
        }
    }
    let prefix = KeyBuilder::new().u8(b'Y').u32(ns).finish();
    for kv in view.scan(ks.meta, ScanRange::prefix(&prefix), Direction::Forward)? {
        let (key, _) = kv?;
        let mut reader = KeyReader::new(&key);
        reader.u8();
        reader.u32();
        let id = reader.u32().ok_or_else(|| Error::Corrupt {
            keyspace: META,
            key: key.clone(),
            reason: "short cycles flag key",
        })?;
        state.cycles_allowed.insert(id);
    }
    if let Some(value) = view.get(ks.meta, &hubs_key(ns))? {
        state.hubs.set =
            RoaringBitmap::deserialize_from(value.as_slice()).map_err(|_| Error::Corrupt {
                keyspace: META,
                key: hubs_key(ns),
                reason: "bad hub set",
            })?;
    }
    state.derive_probes();
    state.transpose();
    state.rebuild_order();
    state.shrink();
    // insert_labelled_link queued every edge not expired at `applied`; the index holds exactly those.
    debug_assert!(state
        .expiry
        .iter()
        .all(|&(e, _, _)| active_at(Some(e), state.applied)));
    Ok(state)
}
