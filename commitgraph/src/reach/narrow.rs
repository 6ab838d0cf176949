//! A whole reach vector in about 1.2 bytes a chain, one cache line read per lookup.
//!
//! A chain's entry is at most the chain's length, and most chains are short: in the default
//! shape (1,000 branches, 10% merges) 4% of the chains at 10^6 commits and 6.3% at 10^7 are
//! 255 commits or longer, and only the long-lived branches' first-parent lines pass 65,535.
//! So entries are bytes, 52 to a 64-byte line, and the line keeps the values of its first six
//! long entries (255 or more: the byte is [`LONG`]) as `u16` in its other 12 bytes. A lookup
//! reads its line and, for a long entry, counts the long entries before it in the line to
//! find its slot. What does not fit there (a seventh long entry in a line, a value of 65,535
//! or more) is kept in `overflow`, sorted by chain, and found by a binary search: 0.4% of the
//! lines at 10^7 hold more than six.
//!
//! Why in the line: a first version kept the long values in an array of their own, so 6% of
//! the lookups (the long chains are the long-lived branches', which is-merged asks about)
//! read a second place in memory, a dependent miss more than a whole vector costs. Its two
//! runs at 10^7 measured is-merged p99 1.08-1.10 µs against 0.73-0.76 for the build before
//! (weak evidence alone: the same build later measured 0.69-1.28 µs over an hour, see
//! commitgraph/DESIGN.md "Byte entries"), so the layout was made to need no second read.

/// Marks a byte entry whose value is in the line's `long` slots or in `overflow`.
const LONG: u8 = u8::MAX;
/// Marks a `long` slot whose value is in `overflow`.
const OVERFLOW: u16 = u16::MAX;
/// Byte entries to a line.
const ENTRIES: usize = 52;
/// Long values kept in a line.
const SLOTS: usize = 6;

/// One cache line of a [`Narrow`] vector.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(64))]
struct Line {
    entries: [u8; ENTRIES],
    /// The values of the line's first [`SLOTS`] long entries, in order.
    long: [u16; SLOTS],
}

/// A reach vector in byte entries (see the module docs).
#[derive(Debug)]
pub(crate) struct Narrow {
    lines: Box<[Line]>,
    /// Entries in all (the last line's unused ones are 0).
    len: usize,
    /// `(chain, value)` of the long entries that no slot holds, sorted by chain.
    overflow: Box<[(u32, u32)]>,
}

impl Narrow {
    /// At most this many bytes per [`Narrow::PER`] entries: the lines' 64 per 52, and an
    /// overflow of 8 bytes for at most one entry in eight.
    pub(crate) const MAX_BYTES: usize = 64 + 52;
    /// See [`Narrow::MAX_BYTES`].
    pub(crate) const PER: usize = 52;

    /// `vector` in byte entries, or `None` when more than one entry in eight would overflow
    /// (each costs 8 bytes and a binary search).
    pub(crate) fn new(vector: &[u32]) -> Option<Self> {
        const { assert!(std::mem::size_of::<Line>() == 64) };
        let mut overflow = Vec::new();
        let mut lines = Vec::with_capacity(vector.len().div_ceil(ENTRIES));
        for (first, chunk) in (0u32..).step_by(ENTRIES).zip(vector.chunks(ENTRIES)) {
            let mut line = Line {
                entries: [0; ENTRIES],
                long: [0; SLOTS],
            };
            let mut slot = 0;
            for ((x, entry), &value) in (first..).zip(&mut line.entries).zip(chunk) {
                if value < u32::from(LONG) {
                    *entry = value as u8;
                    continue;
                }
                *entry = LONG;
                let fits = u16::try_from(value).ok().filter(|&v| v != OVERFLOW);
                match (line.long.get_mut(slot), fits) {
                    (Some(s), Some(v)) => *s = v,
                    (Some(s), None) => {
                        *s = OVERFLOW;
                        overflow.push((x, value));
                    }
                    (None, _) => overflow.push((x, value)),
                }
                slot += 1;
            }
            lines.push(line);
        }
        if overflow.len() * 8 > vector.len() {
            return None;
        }
        Some(Narrow {
            lines: lines.into_boxed_slice(),
            len: vector.len(),
            overflow: overflow.into_boxed_slice(),
        })
    }

    /// Entry `x` (0 past the end).
    #[inline]
    pub(crate) fn get(&self, x: u32) -> u32 {
        let Some(line) = self.lines.get(x as usize / ENTRIES) else {
            return 0;
        };
        let at = x as usize % ENTRIES;
        let entry = line.entries[at];
        if entry != LONG {
            return u32::from(entry);
        }
        let slot = line.entries[..at].iter().filter(|&&e| e == LONG).count();
        match line.long.get(slot) {
            Some(&value) if value != OVERFLOW => u32::from(value),
            _ => match self.overflow.binary_search_by_key(&x, |e| e.0) {
                Ok(k) => self.overflow[k].1,
                Err(_) => 0,
            },
        }
    }

    /// Every entry, in one pass over the lines (what [`Narrow::get`] of each would give,
    /// without its division and count per entry: `merged_into` spreads a vector out whole).
    pub(crate) fn to_vec(&self) -> Vec<u32> {
        let mut out = Vec::with_capacity(self.len);
        // The overflow holds, in chain order, exactly the long entries no slot holds.
        let mut overflow = self.overflow.iter().map(|&(_, value)| value);
        for line in &self.lines {
            let room = (self.len - out.len()).min(ENTRIES);
            let mut slots = line.long.iter();
            for &entry in &line.entries[..room] {
                let value = if entry != LONG {
                    u32::from(entry)
                } else {
                    match slots.next() {
                        Some(&value) if value != OVERFLOW => u32::from(value),
                        _ => overflow.next().unwrap_or(0),
                    }
                };
                out.push(value);
            }
        }
        out
    }

    /// Heap bytes held.
    pub(crate) fn bytes(&self) -> usize {
        self.lines.len() * 64 + self.overflow.len() * 8
    }

    #[cfg(test)]
    fn overflow(&self) -> &[(u32, u32)] {
        &self.overflow
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// How many entries of `vector` no slot holds, counted apart from [`Narrow::new`].
    fn overflowing(vector: &[u32]) -> usize {
        vector
            .chunks(ENTRIES)
            .map(|line| {
                let long: Vec<u32> = line.iter().copied().filter(|&v| v >= 255).collect();
                let slotted = long.iter().take(SLOTS).filter(|&&v| v < 65_535).count();
                long.len() - slotted
            })
            .sum()
    }

    proptest! {
        /// Vectors of mostly short chains, some long ones and a few past 16 bits: each entry
        /// reads back, or the vector is refused exactly when more than one entry in eight
        /// overflows.
        #[test]
        fn every_entry_reads_back(vector in prop::collection::vec(
            prop_oneof![
                12 => 0u32..255,
                3 => 255u32..65_535,
                1 => 65_535u32..=u32::MAX,
                1 => Just(254u32),
                1 => Just(255u32),
            ],
            0..600,
        )) {
            let overflow = overflowing(&vector);
            match Narrow::new(&vector) {
                None => prop_assert!(overflow * 8 > vector.len()),
                Some(narrow) => {
                    prop_assert!(overflow * 8 <= vector.len());
                    prop_assert_eq!(narrow.overflow().len(), overflow);
                    // The cache's estimate bounds it (the last line may be partly empty).
                    let bound = (vector.len() * Narrow::MAX_BYTES).div_ceil(Narrow::PER) + 64;
                    prop_assert!(narrow.bytes() <= bound, "{} > {}", narrow.bytes(), bound);
                    for (x, &value) in (0u32..).zip(&vector) {
                        prop_assert_eq!(narrow.get(x), value, "entry {}", x);
                    }
                    prop_assert_eq!(&narrow.to_vec(), &vector);
                    prop_assert_eq!(narrow.get(vector.len() as u32), 0);
                }
            }
        }
    }

    fn assert_keeps(vector: &[u32]) -> Narrow {
        let narrow = Narrow::new(vector).expect("narrow");
        for (x, &value) in (0u32..).zip(vector) {
            assert_eq!(narrow.get(x), value, "entry {x}");
        }
        let len = vector.len() as u32;
        assert_eq!(narrow.get(len), 0, "past the end");
        assert_eq!(narrow.get(len + 1_000), 0, "far past the end");
        assert_eq!(narrow.len, vector.len());
        assert_eq!(narrow.to_vec(), vector);
        narrow
    }

    #[test]
    fn long_entries_fill_their_lines_slots_then_overflow() {
        // Line 0: seven long entries (the seventh overflows), one of them too large for a slot.
        let mut vector: Vec<u32> = (0..ENTRIES as u32 * 3).map(|x| x % 250).collect();
        for (k, x) in [1, 4, 9, 10, 20, 30, 51].into_iter().enumerate() {
            vector[x] = 255 + k as u32;
        }
        vector[20] = 70_000;
        // Line 1: 255, 254 and 65,534 / 65,535 (the largest slot value and the first past it).
        vector[ENTRIES] = 255;
        vector[ENTRIES + 1] = 254;
        vector[ENTRIES + 2] = 65_534;
        vector[ENTRIES + 3] = 65_535;
        // Line 2 is short: its unused entries read as 0.
        vector.truncate(ENTRIES * 2 + 10);
        let narrow = assert_keeps(&vector);
        assert_eq!(
            narrow.overflow(),
            &[(20, 70_000), (51, 261), (ENTRIES as u32 + 3, 65_535)]
        );
        assert_eq!(narrow.bytes(), 3 * 64 + 3 * 8);
    }

    #[test]
    fn many_overflows_are_refused() {
        // Every entry long and large: all overflow.
        assert!(Narrow::new(&[100_000; 100]).is_none());
        // Long entries spread over many lines, at most six in any: no overflow.
        let spread: Vec<u32> = (0..5_000u32)
            .map(|x| if x % 11 == 0 { 1_000 + x } else { x % 200 })
            .collect();
        let narrow = assert_keeps(&spread);
        assert!(narrow.overflow().is_empty());
        // One in eight overflows: still kept; more: refused.
        let mut mixed: Vec<u32> = vec![3; 64];
        for x in (0..64).step_by(8) {
            mixed[x] = 1 << 20;
        }
        assert_eq!(assert_keeps(&mixed).overflow().len(), 8);
        mixed[1] = 1 << 20;
        assert!(Narrow::new(&mixed).is_none());
    }
}
