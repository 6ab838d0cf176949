//! Download counts gathered in memory and written to the engine in batches.
//!
//! Counting a download used to be one engine write per read; on the hot path of small
//! downloads that write cost as much as the read itself, and a reader answering from the
//! hot-file cache must not touch the engine at all. Counts are therefore added to sharded
//! in-memory sums (no I/O, a short mutex) and written as one batch of counter adds by
//! [`crate::Store::flush_downloads`]: at least every [`DOWNLOADS_FLUSH_INTERVAL`] while reads go
//! through the store, by the embedding server's timer, by [`crate::Store::flush`] and when
//! the store is dropped. What a crash may lose is in `DESIGN.md` ("Download counts").

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::types::{Day, FileId, Timestamp};

/// How long download counts stay in memory at most while the store is used: a blocking read
/// writes them once they are this old, and the librarian's timer writes them this often.
/// This is what a crash may lose. Measured: at 1 s, writing the counts of 10,000 hot files
/// cost 12% of the librarian's CPU under a small-download load (each flush touches every
/// file downloaded since the last); at 5 s a fifth of that.
pub const DOWNLOADS_FLUSH_INTERVAL: Duration = Duration::from_secs(5);

const SHARDS: usize = 16;

/// Counts not written yet, by (file, day).
type Counts = HashMap<(FileId, Day), u64>;

/// Pending counts per (file, day).
#[derive(Debug)]
pub(crate) struct PendingDownloads {
    shards: Box<[Mutex<Counts>]>,
    /// When pending counts were last taken, in Unix milliseconds.
    last_taken_millis: AtomicI64,
    /// Serialises a flush against the deletion of a file's counters (see `Store::cut`).
    pub(crate) flush_lock: Mutex<()>,
}

impl PendingDownloads {
    pub(crate) fn new(now: Timestamp) -> Self {
        PendingDownloads {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            last_taken_millis: AtomicI64::new(now.0),
            flush_lock: Mutex::new(()),
        }
    }

    fn shard(&self, id: FileId) -> &Mutex<Counts> {
        &self.shards[(id.0 % SHARDS as u64) as usize]
    }

    /// Counts one download of `id` on `day`.
    pub(crate) fn add(&self, id: FileId, day: Day) {
        let mut shard = self.shard(id).lock().unwrap_or_else(|e| e.into_inner());
        *shard.entry((id, day)).or_insert(0) += 1;
    }

    /// The counts of `id` on `day` not written yet.
    pub(crate) fn pending(&self, id: FileId, day: Day) -> u64 {
        let shard = self.shard(id).lock().unwrap_or_else(|e| e.into_inner());
        shard.get(&(id, day)).copied().unwrap_or(0)
    }

    /// Drops the pending counts of `id` (the file is being deleted with its counters).
    pub(crate) fn forget(&self, id: FileId) {
        let mut shard = self.shard(id).lock().unwrap_or_else(|e| e.into_inner());
        shard.retain(|(file, _), _| *file != id);
    }

    /// Whether counts have been pending for longer than [`DOWNLOADS_FLUSH_INTERVAL`].
    pub(crate) fn due(&self, now: Timestamp) -> bool {
        let interval = i64::try_from(DOWNLOADS_FLUSH_INTERVAL.as_millis()).unwrap_or(i64::MAX);
        now.0
            .saturating_sub(self.last_taken_millis.load(Ordering::Relaxed))
            >= interval
    }

    /// Takes every pending count, leaving none.
    pub(crate) fn take(&self, now: Timestamp) -> Vec<((FileId, Day), u64)> {
        self.last_taken_millis.store(now.0, Ordering::Relaxed);
        let mut taken = Vec::new();
        for shard in &self.shards {
            let mut shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            taken.extend(shard.drain());
        }
        taken
    }

    /// Puts counts back after a failed write, so a later flush may still record them.
    pub(crate) fn restore(&self, counts: Vec<((FileId, Day), u64)>) {
        for ((id, day), n) in counts {
            let mut shard = self.shard(id).lock().unwrap_or_else(|e| e.into_inner());
            *shard.entry((id, day)).or_insert(0) += n;
        }
    }
}
