//! The commit ids of one repository, back to back in dense-id order, and an open-addressing
//! table from id to dense id that holds only `u32`s.
//!
//! A `HashMap<CommitId, u32>` costs about 75 bytes per commit (a 33-byte `CommitId` and the
//! `u32`, padded to 40, plus control bytes, at a load of 0.44-0.875) on top of the 33-byte ids
//! themselves; here an id costs its own length (20 or 32 bytes) once, and the table 4 bytes per
//! slot at a load between 0.64 and 0.8: about 25.6 bytes per SHA-1 commit in all. A lookup
//! hashes the id (the crate's keyed hasher, so crafted ids cannot aim at one slot), probes
//! linearly, and compares against the stored bytes.

use std::hash::BuildHasher;

use super::id::{CommitId, IdHashBuilder};

/// The table grows (by a quarter) before its load passes `MAX_LOAD_NUM / MAX_LOAD_DEN`.
const MAX_LOAD_NUM: usize = 4;
const MAX_LOAD_DEN: usize = 5;

/// Reserves room for `additional` more elements with at most an eighth of the length as
/// headroom, rather than `Vec`'s doubling (which starts at 4 elements): a per-commit array at
/// 10^7 commits would otherwise hold up to twice its bytes, and the merges of 100,000 short
/// chains four times theirs. Growth is geometric from 8 elements on, so pushes stay amortised
/// O(1).
pub(crate) fn reserve_gently<T>(vec: &mut Vec<T>, additional: usize) {
    if vec.capacity() - vec.len() < additional {
        vec.reserve_exact(additional.max(vec.len() / 8));
    }
}

#[derive(Debug, Default)]
pub(crate) struct IdTable {
    /// The byte length of every id (0 while empty): a repository holds ids of one length.
    id_len: usize,
    /// Id `n` is `bytes[n * id_len..(n + 1) * id_len]`.
    bytes: Vec<u8>,
    /// `node + 1` of the id whose probe sequence passes here, or 0 for an empty slot.
    slots: Vec<u32>,
    hasher: IdHashBuilder,
}

impl IdTable {
    pub(crate) fn len(&self) -> usize {
        self.bytes.len().checked_div(self.id_len).unwrap_or(0)
    }

    /// The byte length of the ids, or `None` while the table is empty.
    pub(crate) fn id_len(&self) -> Option<usize> {
        (self.id_len != 0 && !self.bytes.is_empty()).then_some(self.id_len)
    }

    pub(crate) fn raw(&self, node: u32) -> &[u8] {
        let start = node as usize * self.id_len;
        &self.bytes[start..start + self.id_len]
    }

    pub(crate) fn get(&self, node: u32) -> CommitId {
        CommitId::from_stored(self.raw(node))
    }

    fn home(&self, id: &CommitId) -> usize {
        let hash = self.hasher.hash_one(id);
        ((u128::from(hash) * self.slots.len() as u128) >> 64) as usize
    }

    pub(crate) fn find(&self, id: &CommitId) -> Option<u32> {
        if self.slots.is_empty() || Some(id.as_bytes().len()) != self.id_len() {
            return None;
        }
        let mut slot = self.home(id);
        loop {
            match self.slots[slot] {
                0 => return None,
                v if self.raw(v - 1) == id.as_bytes() => return Some(v - 1),
                _ => slot = (slot + 1) % self.slots.len(),
            }
        }
    }

    /// Makes room for `additional` more ids without regrowing on the way.
    pub(crate) fn reserve(&mut self, additional: usize, id_len: usize) {
        let wanted = self.len() + additional;
        if wanted * MAX_LOAD_DEN > self.slots.len() * MAX_LOAD_NUM {
            let size = (wanted * MAX_LOAD_DEN / MAX_LOAD_NUM + 1).max(self.slots.len() * 5 / 4);
            self.rebuild(size.max(16));
        }
        reserve_gently(&mut self.bytes, additional * id_len);
    }

    fn rebuild(&mut self, size: usize) {
        self.slots = vec![0; size];
        for node in 0..self.len() as u32 {
            self.place(self.get(node), node);
        }
    }

    fn place(&mut self, id: CommitId, node: u32) {
        let mut slot = self.home(&id);
        while self.slots[slot] != 0 {
            slot = (slot + 1) % self.slots.len();
        }
        self.slots[slot] = node + 1;
    }

    /// Appends `id` (not present, of the table's id length) as the next dense id.
    pub(crate) fn push(&mut self, id: &CommitId) -> u32 {
        self.id_len = id.as_bytes().len();
        self.reserve(1, self.id_len);
        let node = self.len() as u32;
        self.bytes.extend_from_slice(id.as_bytes());
        self.place(*id, node);
        node
    }

    /// Removes every id from dense id `len` on (a rollback), newest first.
    pub(crate) fn truncate(&mut self, len: usize) {
        for node in (len..self.len()).rev() {
            let id = self.get(node as u32);
            let mut slot = self.home(&id);
            while self.slots[slot] != node as u32 + 1 {
                slot = (slot + 1) % self.slots.len();
            }
            self.remove_slot(slot);
            self.bytes.truncate(node * self.id_len);
        }
    }

    /// Empties `hole` and shifts later entries of its probe run back (linear probing's
    /// deletion without tombstones: every entry stays reachable from its home slot).
    fn remove_slot(&mut self, mut hole: usize) {
        let n = self.slots.len();
        let mut next = hole;
        loop {
            next = (next + 1) % n;
            let v = self.slots[next];
            if v == 0 {
                break;
            }
            let home = self.home(&self.get(v - 1));
            // The entry may stay when its home lies cyclically in (hole, next].
            let stays = if hole <= next {
                hole < home && home <= next
            } else {
                hole < home || home <= next
            };
            if !stays {
                self.slots[hole] = v;
                hole = next;
            }
        }
        self.slots[hole] = 0;
    }

    /// Heap bytes of the ids and of the table.
    pub(crate) fn memory(&self) -> (usize, usize) {
        (self.bytes.capacity(), self.slots.capacity() * 4)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u32) -> CommitId {
        let mut bytes = [0u8; 20];
        bytes[..4].copy_from_slice(&n.to_le_bytes());
        CommitId::from_stored(&bytes)
    }

    #[test]
    fn finds_grows_and_truncates() {
        let mut table = IdTable::default();
        for n in 0..5_000 {
            assert_eq!(table.push(&id(n)), n);
        }
        assert!((0..5_000).all(|n| table.find(&id(n)) == Some(n)));
        assert_eq!(table.find(&id(5_000)), None);
        table.truncate(1_234);
        assert_eq!(table.len(), 1_234);
        assert!((0..1_234).all(|n| table.find(&id(n)) == Some(n)));
        assert!((1_234..5_000).all(|n| table.find(&id(n)).is_none()));
        assert_eq!(table.push(&id(9_999)), 1_234);
        assert_eq!(table.find(&id(9_999)), Some(1_234));
        let (ids, slots) = table.memory();
        assert!(ids >= 1_235 * 20 && slots * 5 >= 1_235 * 4 * 4);
        assert_eq!(table.find(&CommitId::from_stored(&[1; 32])), None);
    }
}
