//! Checkpoints: the reach vectors of a chain's commits at positions `K-1, 2K-1, ...`, kept as
//! deltas.
//!
//! A whole vector per checkpoint costs one `u32` per chain of the repository, so the
//! checkpoints of a long chain grow as (its length / K) × (chains): 10 bytes per commit at 10^6
//! commits, and ten times that per commit at 10^7, where both factors are ten times larger.
//! But successive checkpoints of a chain differ only in the chains merged between them (the
//! vectors only grow along a chain), so each checkpoint keeps the entries that grew since the
//! previous one, sorted by chain, and a whole vector only once the deltas since the last whole
//! one hold a quarter as many entries as a vector (so whole vectors cost at most twice the
//! deltas) or after [`MAX_RUN`] checkpoints (so a lookup reads at most that many deltas).

use std::sync::Arc;

use super::index::CommitIndex;

/// At most this many deltas are read back to find one entry.
const MAX_RUN: usize = 64;

/// One checkpoint of a chain (see the module docs).
#[derive(Debug)]
pub(crate) struct Checkpoint {
    /// `(chain, reached positions)` for every entry that grew since the previous checkpoint of
    /// the same chain, sorted by chain; empty when `full` is kept.
    delta: Vec<(u32, u32)>,
    /// The whole vector (shared with the cached reach vectors kept as differences from it).
    full: Option<Arc<[u32]>>,
}

impl Checkpoint {
    /// Whether it keeps only a delta.
    #[cfg(test)]
    pub(crate) fn is_delta(&self) -> bool {
        self.full.is_none()
    }

    /// Heap bytes held.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.delta.capacity() * 8 + self.full.as_ref().map_or(0, |f| f.len() * 4)
    }
}

impl CommitIndex {
    /// Checkpoint `i` of chain `c`, computing it (and any missing one below it, each extending
    /// the previous) on first use.
    pub(crate) fn checkpoint(&self, c: u32, i: usize) -> &Checkpoint {
        let slots = self.chains[c as usize].slots();
        if let Some(checkpoint) = slots[i].checkpoint.get() {
            return checkpoint;
        }
        let mut first = i;
        while first > 0 && slots[first - 1].checkpoint.get().is_none() {
            first -= 1;
        }
        for j in first..=i {
            let base = j
                .checked_sub(1)
                .map(|below| self.checkpoint_vector(c, below));
            let vector = self.reach(slots[j].node, base.as_deref());
            let base = base.unwrap_or_default();
            let delta: Vec<(u32, u32)> = vector
                .iter()
                .enumerate()
                .filter(|&(x, &v)| v > base.get(x).copied().unwrap_or(0))
                .map(|(x, &v)| (x as u32, v))
                .collect();
            // The deltas a lookup would read back to the last whole vector.
            let (mut entries, mut run) = (delta.len(), 1);
            for below in slots[..j].iter().rev() {
                match below.checkpoint.get() {
                    Some(cp) if cp.full.is_none() => {
                        entries += cp.delta.len();
                        run += 1;
                    }
                    _ => break,
                }
            }
            let checkpoint = if entries * 4 >= vector.len() || run >= MAX_RUN {
                Checkpoint {
                    delta: Vec::new(),
                    full: Some(Arc::from(vector)),
                }
            } else {
                let mut delta = delta;
                delta.shrink_to_fit();
                Checkpoint { delta, full: None }
            };
            // Another thread may have set it meanwhile: to the same vector.
            let _ = slots[j].checkpoint.set(checkpoint);
        }
        // Set just above, by this thread or another.
        slots[i]
            .checkpoint
            .get()
            .unwrap_or_else(|| unreachable_checkpoint())
    }

    /// Entry `x` of checkpoint `i` of chain `c`: how many positions of chain `x` it reaches.
    pub(crate) fn checkpoint_value(&self, c: u32, i: usize, x: u32) -> u32 {
        self.checkpoint(c, i);
        let slots = &self.chains[c as usize].slots()[..=i];
        for cp in slots.iter().rev().filter_map(|s| s.checkpoint.get()) {
            if let Some(full) = &cp.full {
                return full.get(x as usize).copied().unwrap_or(0);
            }
            if let Ok(k) = cp.delta.binary_search_by_key(&x, |e| e.0) {
                return cp.delta[k].1;
            }
        }
        0
    }

    /// Raises `reach` to at least checkpoint `i` of chain `c`, entry by entry (`reach` covers
    /// every chain).
    pub(crate) fn merge_checkpoint(&self, c: u32, i: usize, reach: &mut [u32]) {
        self.checkpoint(c, i);
        let slots = &self.chains[c as usize].slots()[..=i];
        let start = slots
            .iter()
            .rposition(|s| s.checkpoint.get().is_some_and(|cp| cp.full.is_some()));
        for cp in slots[start.unwrap_or(0)..]
            .iter()
            .filter_map(|s| s.checkpoint.get())
        {
            if let Some(full) = &cp.full {
                for (r, &v) in reach.iter_mut().zip(full.iter()) {
                    *r = (*r).max(v);
                }
            }
            for &(x, v) in &cp.delta {
                if let Some(r) = reach.get_mut(x as usize) {
                    *r = (*r).max(v);
                }
            }
        }
    }

    /// Checkpoint `i` of chain `c`'s whole vector, when it is computed and kept whole.
    pub(crate) fn whole_checkpoint(&self, c: u32, i: usize) -> Option<&Arc<[u32]>> {
        let slot = self.chains.get(c as usize)?.slots().get(i)?;
        slot.checkpoint.get()?.full.as_ref()
    }

    /// Checkpoint `i` of chain `c` as a whole vector (as long as the chains are many).
    fn checkpoint_vector(&self, c: u32, i: usize) -> Vec<u32> {
        let mut vector = vec![0; self.chains.len()];
        self.merge_checkpoint(c, i, &mut vector);
        vector
    }
}

#[cold]
fn unreachable_checkpoint() -> &'static Checkpoint {
    static EMPTY: Checkpoint = Checkpoint {
        delta: Vec::new(),
        full: None,
    };
    &EMPTY
}
