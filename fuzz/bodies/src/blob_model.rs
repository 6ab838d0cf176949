//! The blob store against a plain model: random uploads, deletes, content cuts, clock
//! advances, GC passes and crashes (a [`FaultyEngine`] keeping only what was synced; the blob
//! bytes, in memory here, staying as files would). The model and its checks are the blob
//! store's own (`blobstore::testing::model`); this file decodes the fuzzer's bytes into its
//! operations and restarts the store through a crash.

use std::sync::Arc;
use std::time::Duration;

use blobstore::testing::model::{run_against_model, Op, Subject, BUCKETS};
use blobstore::testing::{MemBackend, UNUSED_DATA_DIR};
use blobstore::{ManualClock, Store, StoreBuilder};
use engine::FaultyEngine;

use crate::bytes::Bytes;

/// Around the inline threshold of 64 used here, so both inline and file blobs occur.
const SIZES: [usize; 6] = [0, 10, 63, 64, 65, 5000];
const MAX_OPS: usize = 64;

/// A store on a [`FaultyEngine`] with blob bytes in memory, restarted by a crash.
struct Crashing {
    clock: Arc<ManualClock>,
    engine: Arc<FaultyEngine>,
    blobs: MemBackend,
    store: Store,
}

fn open(engine: &Arc<FaultyEngine>, blobs: &MemBackend, clock: &Arc<ManualClock>) -> Store {
    // Blob bytes in memory: no data directory is used, so none is made.
    let store = StoreBuilder::with_engine(
        Arc::clone(engine) as Arc<dyn engine::Engine>,
        UNUSED_DATA_DIR,
    )
    .backend(Arc::new(blobs.clone()))
    .inline_threshold(64)
    // A small hot-file cache (16 entries): the default 64 MiB one sizes its tables for
    // 16,384 files at every open, a cost per input and per crash that finds nothing.
    .hot_cache_bytes(64 << 10)
    // The feed is replayed from revision 0 at the end: keep all of it.
    .change_retention(Duration::from_secs(100 * 365 * 86_400))
    .clock(Arc::clone(clock) as Arc<dyn blobstore::Clock>)
    .open()
    .expect("open store");
    // The history keys are written on this thread, at each GC pass and at the end (the
    // model calls `index_pending`), not by a thread started per store and input.
    store.change_log().set_background_indexing(false);
    store
}

impl Subject for Crashing {
    fn store(&self) -> &Store {
        &self.store
    }

    fn advance(&mut self, by: Duration) {
        self.clock.advance(by);
    }

    fn restart(&mut self) {
        // A crash: only what was synced survives; blob bytes stay, as files on disk would.
        self.engine = Arc::new(self.engine.crash());
        self.store = open(&self.engine, &self.blobs, &self.clock);
    }
}

fn decode(bytes: &mut Bytes<'_>) -> Op {
    match bytes.below(15) {
        0..=4 => {
            let (bucket, content) = (bytes.below(BUCKETS.len()), bytes.below(SIZES.len()));
            let expiry = bytes.u8();
            Op::Upload {
                bucket,
                content,
                expires_in_hours: (expiry < 128).then_some(u64::from(expiry)),
                restricted: bytes.bool(),
            }
        }
        5 => Op::DeleteFile(bytes.below(256)),
        6 => {
            let file = bytes.below(256);
            let expiry = bytes.u8();
            Op::SetExpiry {
                file,
                expires_in_hours: (expiry < 128).then_some(u64::from(expiry)),
            }
        }
        7 => Op::DeleteContent(bytes.below(256)),
        8 => Op::Advance {
            hours: u64::from(bytes.u8()),
        },
        9 | 10 => Op::Gc,
        11 => Op::SetRestricted {
            file: bytes.below(256),
            restricted: bytes.bool(),
        },
        12 => {
            let bucket = bytes.below(BUCKETS.len());
            let quota = bytes.u8();
            Op::SetQuota {
                bucket,
                quota: (quota < 200).then_some(u64::from(quota) * 64),
            }
        }
        13 => Op::WriteOlderBlobRecord(bytes.below(SIZES.len())),
        _ if bytes.below(4) == 0 => Op::WriteStoreFormat1AndRestart,
        _ => Op::Restart,
    }
}

/// Ops: upload, delete a file, cut its content, change its expiry or restriction, set a
/// quota, advance the clock, GC, crash and reopen, put a blob record back in version 1 (the
/// lazy migration of the reference count), put the store back in store format 1 and reopen
/// it (the upgrade at open); at the end, the change feed replayed onto
/// an empty store must reproduce the store.
pub fn blob_model(input: &[u8]) {
    let mut bytes = Bytes::new(input);
    let engine = Arc::new(FaultyEngine::new(blobstore::KEYSPACES));
    let blobs = MemBackend::default();
    let clock = Arc::new(ManualClock::at_millis(1_700_000_000_000));
    let store = open(&engine, &blobs, &clock);
    let mut subject = Crashing {
        clock,
        engine,
        blobs,
        store,
    };
    let mut decoded = 0;
    let ops = std::iter::from_fn(|| {
        if bytes.is_empty() || decoded == MAX_OPS {
            return None;
        }
        decoded += 1;
        Some(decode(&mut bytes))
    });
    run_against_model(&mut subject, &SIZES, ops);
}
