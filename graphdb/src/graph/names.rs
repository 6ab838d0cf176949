//! The names of a namespace's nodes, both ways: the id of a name (two per person-in-team
//! check) and the name of an id (every name of a listed page).
//!
//! The names are kept end to end in one `String` (the text), each node's span of it by id,
//! and an open-addressing table of 12-byte slots, each holding a node's id, where its name
//! lies in the text and 16 more bits of the name's hash. A lookup reads a slot (linear
//! probing in a table at most three quarters full: almost always the first one or the next,
//! in the same cache line) and then the name's bytes: two cache misses. The table it
//! replaced (a `HashTable<u32>` of ids over the names boxed in each node) read its control
//! bytes, its slot, the node and the node's name: four, which made the name lookups 14% of
//! the directory's CPU on a person-in-team check (graphdb/DESIGN.md, "Names").
//!
//! A removed name leaves its bytes in the text until dead bytes are the larger part of it;
//! the text is then rewritten with the live names only.

use std::fmt;
use std::hash::{BuildHasher, RandomState};

/// Where an id's name lies in the text; `start == NONE` for an id without a name.
#[derive(Clone, Copy)]
struct Span {
    start: u32,
    len: u32,
}

const NONE: u32 = u32::MAX;

impl Span {
    const EMPTY: Span = Span {
        start: NONE,
        len: 0,
    };
}

/// A table slot; `id == NONE` for an empty one (node ids stop below `u32::MAX`).
#[derive(Clone, Copy)]
struct Slot {
    id: u32,
    start: u32,
    /// The name's length (names are at most 1,024 bytes: `types::validate_name`).
    len: u16,
    /// The hash's low 16 bits (the slot's position comes from its high bits).
    tag: u16,
}

// Five slots and a bit to a cache line.
const _: () = assert!(std::mem::size_of::<Slot>() == 12);

impl Slot {
    const EMPTY: Slot = Slot {
        id: NONE,
        start: 0,
        len: 0,
        tag: 0,
    };
}

/// The names of one namespace's nodes (see the module documentation).
#[derive(Default)]
pub(crate) struct Names {
    text: String,
    spans: Vec<Span>,
    /// A power of two long (or empty), never more than three quarters full.
    slots: Vec<Slot>,
    live: usize,
    dead_bytes: usize,
    hasher: RandomState,
}

impl fmt::Debug for Names {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Names")
            .field("live", &self.live)
            .field("text_bytes", &self.text.len())
            .field("dead_bytes", &self.dead_bytes)
            .field("slots", &self.slots.len())
            .finish()
    }
}

impl Names {
    /// The id named `name`.
    #[inline]
    pub fn id(&self, name: &str) -> Option<u32> {
        if self.slots.is_empty() {
            return None;
        }
        let hash = self.hasher.hash_one(name);
        self.find(name, hash, home(hash, self.slots.len() - 1))
    }

    /// The ids of two names (person-in-team asks for two), looked up side by side: both home
    /// slots are read, then both names' first bytes, before either name is compared, so that
    /// the two lookups' cache misses overlap instead of following each other.
    #[inline]
    pub fn id_pair(&self, a: &str, b: &str) -> (Option<u32>, Option<u32>) {
        if self.slots.is_empty() {
            return (None, None);
        }
        let mask = self.slots.len() - 1;
        let (hash_a, hash_b) = (self.hasher.hash_one(a), self.hasher.hash_one(b));
        let (home_a, home_b) = (home(hash_a, mask), home(hash_b, mask));
        let (slot_a, slot_b) = (self.slots[home_a], self.slots[home_b]);
        let text = self.text.as_bytes();
        // Only read here, for their cache lines: `black_box` keeps the reads from being
        // dropped or moved after the comparisons.
        std::hint::black_box((
            text.get(slot_a.start as usize).copied(),
            text.get(slot_b.start as usize).copied(),
        ));
        (self.find(a, hash_a, home_a), self.find(b, hash_b, home_b))
    }

    /// The id named `name`, whose hash is `hash`, probing from slot `at`.
    #[inline]
    fn find(&self, name: &str, hash: u64, mut at: usize) -> Option<u32> {
        if name.len() > usize::from(u16::MAX) {
            return None;
        }
        let mask = self.slots.len() - 1;
        loop {
            let slot = self.slots[at];
            if slot.id == NONE {
                return None;
            }
            if slot.tag == hash as u16
                && usize::from(slot.len) == name.len()
                && self.bytes(slot.start, u32::from(slot.len)) == name.as_bytes()
            {
                return Some(slot.id);
            }
            at = (at + 1) & mask;
        }
    }

    /// The name of `id`.
    #[inline]
    pub fn name(&self, id: u32) -> Option<&str> {
        let span = self.spans.get(id as usize)?;
        if span.start == NONE {
            return None;
        }
        let start = span.start as usize;
        Some(&self.text[start..start + span.len as usize])
    }

    /// Names `id` (which has no name yet) `name` (which no id has).
    ///
    /// # Panics
    /// If the text would pass 4 GiB (a namespace far beyond one machine's memory).
    pub fn insert(&mut self, id: u32, name: &str) {
        debug_assert!(self.name(id).is_none() && self.id(name).is_none());
        assert!(id != NONE && u16::try_from(name.len()).is_ok());
        if (self.live + 1) * 4 > self.slots.len() * 3 {
            self.resize((self.slots.len() * 2).max(16));
        }
        let start = u32::try_from(self.text.len() + name.len())
            .ok()
            .filter(|&end| end < NONE)
            .map(|end| end - name.len() as u32)
            .expect("a namespace's names fit in 4 GiB");
        self.text.push_str(name);
        let index = id as usize;
        if self.spans.len() <= index {
            self.spans.resize(index + 1, Span::EMPTY);
        }
        let len = name.len() as u32;
        self.spans[index] = Span { start, len };
        self.place(id, Span { start, len });
        self.live += 1;
    }

    /// Forgets `id`'s name, if it has one.
    pub fn remove(&mut self, id: u32) {
        let Some(span) = self.spans.get(id as usize).copied() else {
            return;
        };
        if span.start == NONE {
            return;
        }
        let mask = self.slots.len() - 1;
        let mut hole = home(self.hash_of(span), mask);
        while self.slots[hole].id != id {
            hole = (hole + 1) & mask;
        }
        // Backward-shift deletion: each later slot of the run moves into the hole when the
        // hole lies between its home and where it is, so that no lookup meets a gap before
        // its name.
        let mut next = (hole + 1) & mask;
        while self.slots[next].id != NONE {
            let slot = self.slots[next];
            let slot_home = home(self.hash_of(slot_span(slot)), mask);
            if next.wrapping_sub(slot_home) & mask >= next.wrapping_sub(hole) & mask {
                self.slots[hole] = slot;
                hole = next;
            }
            next = (next + 1) & mask;
        }
        self.slots[hole] = Slot::EMPTY;
        self.spans[id as usize] = Span::EMPTY;
        self.live -= 1;
        self.dead_bytes += span.len as usize;
        while self.spans.last().is_some_and(|s| s.start == NONE) {
            self.spans.pop();
        }
        if self.dead_bytes > 4096 && self.dead_bytes * 2 > self.text.len() {
            self.rewrite_text();
        }
    }

    /// Every (id, name), in id order.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &str)> + '_ {
        self.spans
            .iter()
            .enumerate()
            .filter(|(_, span)| span.start != NONE)
            .map(|(id, span)| {
                let start = span.start as usize;
                (id as u32, &self.text[start..start + span.len as usize])
            })
    }

    /// Makes room for `names` more names of `bytes` bytes in all, with new ids from the
    /// highest one up, without growing again.
    pub fn reserve(&mut self, names: usize, bytes: usize) {
        self.text.reserve(bytes);
        self.spans.reserve(names);
        let slots = ((self.live + names) * 4)
            .div_ceil(3)
            .next_power_of_two()
            .max(16);
        if slots > self.slots.len() {
            self.resize(slots);
        }
    }

    /// Gives back the text's and the spans' spare capacity (after a load or a large import).
    pub fn shrink(&mut self) {
        self.text.shrink_to_fit();
        self.spans.shrink_to_fit();
    }

    /// Heap bytes of the text (dead bytes included) with the spans, and of the table.
    pub fn heap_bytes(&self) -> (u64, u64) {
        let text = self.text.capacity() + self.spans.capacity() * std::mem::size_of::<Span>();
        let table = self.slots.capacity() * std::mem::size_of::<Slot>();
        (text as u64, table as u64)
    }

    fn bytes(&self, start: u32, len: u32) -> &[u8] {
        &self.text.as_bytes()[start as usize..(start + len) as usize]
    }

    fn hash_of(&self, span: Span) -> u64 {
        let start = span.start as usize;
        self.hasher
            .hash_one(&self.text[start..start + span.len as usize])
    }

    /// Puts a slot for `id` at the first free place from its home.
    fn place(&mut self, id: u32, span: Span) {
        let hash = self.hash_of(span);
        let mask = self.slots.len() - 1;
        let mut at = home(hash, mask);
        while self.slots[at].id != NONE {
            at = (at + 1) & mask;
        }
        self.slots[at] = Slot {
            id,
            start: span.start,
            len: span.len as u16,
            tag: hash as u16,
        };
    }

    fn resize(&mut self, slots: usize) {
        self.slots = vec![Slot::EMPTY; slots];
        for id in 0..self.spans.len() {
            let span = self.spans[id];
            if span.start != NONE {
                self.place(id as u32, span);
            }
        }
    }

    /// Rewrites the text with the live names only.
    fn rewrite_text(&mut self) {
        let mut text = String::with_capacity(self.text.len() - self.dead_bytes);
        for span in &mut self.spans {
            if span.start != NONE {
                let start = span.start as usize;
                let new_start = text.len() as u32;
                text.push_str(&self.text[start..start + span.len as usize]);
                span.start = new_start;
            }
        }
        self.text = text;
        self.dead_bytes = 0;
        let slots = self.slots.len();
        self.resize(slots);
    }
}

fn slot_span(slot: Slot) -> Span {
    Span {
        start: slot.start,
        len: u32::from(slot.len),
    }
}

/// A hash's home slot: from its high bits (the low 16 are the slot's tag).
#[inline]
fn home(hash: u64, mask: usize) -> usize {
    (hash >> 32) as usize & mask
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// Inserts and removals in a random order, checked against a `HashMap` after each step,
    /// with a table small enough for long probe runs that wrap around its end.
    #[test]
    fn names_agree_with_a_map_through_inserts_and_removals() {
        let mut names = Names::default();
        let mut model: HashMap<u32, String> = HashMap::new();
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut random = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for step in 0..20_000u32 {
            let id = (random() % 600) as u32;
            if let Some(name) = model.remove(&id) {
                names.remove(id);
                assert_eq!(names.id(&name), None, "step {step}");
            } else {
                let name = format!("n-{}-{}", random() % 1000, "x".repeat(step as usize % 40));
                if model.values().any(|n| *n == name) {
                    continue;
                }
                names.insert(id, &name);
                model.insert(id, name);
            }
            if step % 97 == 0 || step > 19_900 {
                for (&id, name) in &model {
                    assert_eq!(names.id(name), Some(id), "step {step}: {name}");
                    assert_eq!(names.name(id), Some(name.as_str()), "step {step}");
                }
                assert_eq!(names.iter().count(), model.len());
                assert!(names.live * 4 <= names.slots.len() * 3);
            }
        }
        assert!(names.dead_bytes * 2 <= names.text.len().max(8192));
        assert_eq!(names.id("never-inserted"), None);
        let (&id, name) = model.iter().next().expect("names left");
        assert_eq!(names.id_pair(name, "never-inserted"), (Some(id), None));
        assert_eq!(names.id_pair("never-inserted", name), (None, Some(id)));
        assert_eq!(names.name(100_000), None);
    }

    /// After `reserve`, that many names go in without the table or the text growing.
    #[test]
    fn reserved_names_go_in_without_growing() {
        let mut names = Names::default();
        names.insert(0, "first");
        let new: Vec<String> = (1..=1000).map(|i| format!("name-{i}")).collect();
        names.reserve(new.len(), new.iter().map(String::len).sum());
        let (slots, text) = (names.slots.len(), names.text.capacity());
        for (id, name) in (1..).zip(&new) {
            names.insert(id, name);
        }
        assert_eq!((names.slots.len(), names.text.capacity()), (slots, text));
        assert!(names.live * 4 <= names.slots.len() * 3);
        assert_eq!(names.id("name-1000"), Some(1000));
    }

    /// Names whose hashes share a home are found past each other, and a removal in the
    /// middle of their run leaves the others findable.
    #[test]
    fn a_run_of_shared_homes_survives_a_removal_in_its_middle() {
        let mut names = Names::default();
        // The first insert makes 16 slots, which five names do not grow.
        let mask = 15;
        let target = home(names.hasher.hash_one("seed"), mask);
        let same_home: Vec<String> = (0..)
            .map(|i| format!("name-{i}"))
            .filter(|n| home(names.hasher.hash_one(n.as_str()), mask) == target)
            .take(5)
            .collect();
        for (id, name) in same_home.iter().enumerate() {
            names.insert(id as u32, name);
        }
        assert_eq!(names.slots.len(), 16);
        let run = names.slots.iter().filter(|s| s.id != NONE).count();
        assert_eq!(run, 5);
        names.remove(2);
        for (id, name) in same_home.iter().enumerate() {
            let expected = (id != 2).then_some(id as u32);
            assert_eq!(names.id(name), expected, "{name}");
        }
    }
}
