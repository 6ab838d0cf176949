//! The stored form of a [`Change`]: a compact binary layout, versioned by its first byte, and
//! the JSON that builds before it wrote, still read.
//!
//! Until 2026-12-05 an event was stored as the JSON of its [`Change`] (first byte `{`, 0x7B).
//! Building that JSON inside the namespace's writer mutex was part of the feed's cost to
//! concurrent membership writes (`DESIGN.md`, "Change feed"), so new events are written as
//! version 1 of this layout:
//!
//! ```text
//! 0x01  time_us: i64  kind: u8  actor: str  namespace: str  present: u16  fields
//! ```
//!
//! with integers big-endian, `kind` the position in [`ChangeKind::ALL`], `str` a `u32` length
//! and UTF-8 bytes, and `present` one bit per optional field of [`Change`] in declaration
//! order (`team` is bit 0, ..., `edges` bit 13), each present field following in that order:
//! names as `str`, an [`EdgeState`] as a role byte (0 none, 1 member, 2 admin) then a flag
//! byte and, when set, the expiry `i64`, the counts as `u64`. Both forms are read; any other
//! first byte is not an event of this store (the commit graphs write JSON and, for pushes,
//! binary starting with 0x81 into the same log,
//! a newer build may write a version 2), and decoding it gives `None`.

use engine::codec::{put_string, ByteReader};

use crate::changes::{Change, ChangeKind, EdgeState};
use crate::graph::Role;

/// The first byte of an event in this layout.
const VERSION_1: u8 = 1;

/// The first byte of the commit graphs' binary `commits.pushed` (`commitgraph::PUSHED_V1`,
/// which this crate cannot name): its time is at the same place as in ours.
const COMMITS_PUSHED_V1: u8 = 0x81;

/// The stored payload of `change` (its revision is the log's key, not part of it).
pub(crate) fn encode(change: &Change) -> Vec<u8> {
    let mut out = Vec::with_capacity(96);
    out.push(VERSION_1);
    out.extend_from_slice(&change.time_us.to_be_bytes());
    let kind = ChangeKind::ALL
        .iter()
        .position(|k| *k == change.kind)
        .and_then(|i| u8::try_from(i).ok())
        .unwrap_or(u8::MAX);
    out.push(kind);
    put_string(&mut out, &change.actor);
    put_string(&mut out, &change.namespace);
    let names = [
        &change.team,
        &change.member,
        &change.person,
        &change.set,
        &change.item,
        &change.group,
        &change.node,
        &change.relation,
        &change.label,
    ];
    let mut present = 0u16;
    for (bit, name) in names.iter().enumerate() {
        present |= u16::from(name.is_some()) << bit;
    }
    present |= u16::from(change.before.is_some()) << 9;
    present |= u16::from(change.after.is_some()) << 10;
    present |= u16::from(change.cycles.is_some()) << 11;
    present |= u16::from(change.nodes.is_some()) << 12;
    present |= u16::from(change.edges.is_some()) << 13;
    out.extend_from_slice(&present.to_be_bytes());
    for name in names.into_iter().flatten() {
        put_string(&mut out, name);
    }
    for edge in [change.before, change.after].into_iter().flatten() {
        out.push(match edge.role {
            None => 0,
            Some(Role::Member) => 1,
            Some(Role::Admin) => 2,
        });
        match edge.expires {
            None => out.push(0),
            Some(expires) => {
                out.push(1);
                out.extend_from_slice(&expires.to_be_bytes());
            }
        }
    }
    if let Some(cycles) = &change.cycles {
        put_string(&mut out, cycles);
    }
    for count in [change.nodes, change.edges].into_iter().flatten() {
        out.extend_from_slice(&count.to_be_bytes());
    }
    out
}

/// The [`Change`] a stored payload holds, in either form; `None` for a payload that is not
/// one (another writer's event, a malformed or newer one).
pub(crate) fn decode(payload: &[u8]) -> Option<Change> {
    match payload.first() {
        Some(b'{') => serde_json::from_slice(payload).ok(),
        Some(&VERSION_1) => {
            let mut reader = ByteReader::new(payload.get(1..)?);
            let change = change(&mut reader)?;
            reader.is_empty().then_some(change)
        }
        _ => None,
    }
}

/// The `time_us` of a stored payload of either form, this store's or the log's other writers'
/// (whose JSON shares the envelope): for pruning by age without decoding whole events.
pub(crate) fn time_us(payload: &[u8]) -> Option<i64> {
    #[derive(serde::Deserialize)]
    struct Envelope {
        time_us: i64,
    }
    match payload.first() {
        Some(b'{') => serde_json::from_slice::<Envelope>(payload)
            .ok()
            .map(|e| e.time_us),
        Some(&VERSION_1 | &COMMITS_PUSHED_V1) => {
            Some(i64::from_be_bytes(payload.get(1..9)?.try_into().ok()?))
        }
        _ => None,
    }
}

fn edge(r: &mut ByteReader<'_>) -> Option<EdgeState> {
    let role = match r.u8()? {
        0 => None,
        1 => Some(Role::Member),
        2 => Some(Role::Admin),
        _ => return None,
    };
    let expires = match r.u8()? {
        0 => None,
        1 => Some(r.i64()?),
        _ => return None,
    };
    Some(EdgeState { role, expires })
}

fn change(r: &mut ByteReader<'_>) -> Option<Change> {
    let time_us = r.i64()?;
    let kind = *ChangeKind::ALL.get(usize::from(r.u8()?))?;
    let actor = r.string()?;
    let namespace = r.string()?;
    let present = u16::from_be_bytes(r.array()?);
    if present >> 14 != 0 {
        return None;
    }
    let has = |bit: u16| present & (1 << bit) != 0;
    let mut names: [Option<String>; 9] = Default::default();
    for (bit, name) in (0..).zip(names.iter_mut()) {
        if has(bit) {
            *name = Some(r.string()?);
        }
    }
    let before = if has(9) { Some(edge(r)?) } else { None };
    let after = if has(10) { Some(edge(r)?) } else { None };
    let cycles = if has(11) { Some(r.string()?) } else { None };
    let count = |reader: &mut ByteReader<'_>, bit| -> Option<Option<u64>> {
        if has(bit) {
            Some(Some(reader.u64()?))
        } else {
            Some(None)
        }
    };
    let nodes = count(r, 12)?;
    let edges = count(r, 13)?;
    let [team, member, person, set, item, group, node, relation, label] = names;
    Some(Change {
        kind,
        time_us,
        actor,
        namespace,
        team,
        member,
        person,
        set,
        item,
        group,
        node,
        relation,
        label,
        before,
        after,
        cycles,
        nodes,
        edges,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn membership() -> Change {
        Change {
            kind: ChangeKind::MembershipChanged,
            time_us: 1_764_937_200_000_000,
            actor: "alice".to_owned(),
            namespace: "teams".to_owned(),
            team: Some("ubuntu-dev".to_owned()),
            member: Some("bob".to_owned()),
            person: None,
            set: None,
            item: None,
            group: None,
            node: None,
            relation: None,
            label: None,
            before: Some(EdgeState {
                role: Some(Role::Member),
                expires: None,
            }),
            after: Some(EdgeState {
                role: Some(Role::Admin),
                expires: Some(1_767_225_600),
            }),
            cycles: None,
            nodes: None,
            edges: None,
        }
    }

    #[test]
    fn every_field_and_kind_round_trips_and_the_old_json_is_still_read() {
        let mut changes = vec![membership()];
        for (i, kind) in ChangeKind::ALL.iter().enumerate() {
            let mut change = membership();
            change.kind = *kind;
            change.time_us = -(i as i64);
            change.person = Some(format!("p{i}"));
            change.set = Some("s".to_owned());
            change.item = Some(String::new());
            change.group = Some("g".to_owned());
            change.node = Some("n\u{e9}".to_owned());
            change.relation = Some("audits".to_owned());
            change.label = Some("depends".to_owned());
            change.before = None;
            change.after = Some(EdgeState {
                role: None,
                expires: Some(i64::MIN),
            });
            change.cycles = Some("allow".to_owned());
            change.nodes = Some(i as u64);
            change.edges = Some(u64::MAX);
            changes.push(change);
        }
        for change in changes {
            let stored = encode(&change);
            assert_eq!(stored[0], VERSION_1);
            assert_eq!(decode(&stored), Some(change.clone()));
            assert_eq!(time_us(&stored), Some(change.time_us));
            let json = serde_json::to_vec(&change).unwrap();
            assert_eq!(decode(&json), Some(change.clone()));
            assert_eq!(time_us(&json), Some(change.time_us));
        }
    }

    #[test]
    fn the_binary_form_is_smaller_than_the_json() {
        let change = membership();
        let (binary, json) = (encode(&change), serde_json::to_vec(&change).unwrap());
        assert!(
            binary.len() * 2 < json.len(),
            "{} vs {}",
            binary.len(),
            json.len()
        );
    }

    #[test]
    fn truncated_padded_and_foreign_payloads_are_not_changes() {
        let stored = encode(&membership());
        for len in 0..stored.len() {
            assert_eq!(decode(&stored[..len]), None, "{len}");
        }
        let mut padded = stored.clone();
        padded.push(0);
        assert_eq!(decode(&padded), None);
        let mut newer = stored;
        newer[0] = 2;
        assert_eq!(decode(&newer), None);
        // A commit graph's event in the same log.
        let push = br#"{"kind":"commits.pushed","time_us":5,"actor":"a","repo":"r"}"#;
        assert_eq!(decode(push), None);
        assert_eq!(time_us(push), Some(5));
        // And its binary push: not ours, but its time is read.
        let mut binary_push = vec![COMMITS_PUSHED_V1];
        binary_push.extend_from_slice(&7i64.to_be_bytes());
        binary_push.extend_from_slice(b"rest");
        assert_eq!(decode(&binary_push), None);
        assert_eq!(time_us(&binary_push), Some(7));
    }
}
