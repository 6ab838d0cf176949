//! Property test: random sequences of upload (deduplicated or not, inline or not), delete,
//! cut, expiry and restriction changes, quotas, clock advance, GC and reopen against the
//! plain model of `blobstore::testing::model`, on every engine backend; each run ends with the
//! replay property (the change feed replayed onto an empty store reproduces it exactly).

use std::time::Duration;

use blobstore::testing::model::{run_against_model, Op, Subject, BUCKETS};
use blobstore::testing::suite::Harness as _;
use blobstore::Store;
use engine::Backend;
use proptest::prelude::*;

use crate::common::{Harness, Settings};

/// Around the 16 KiB inline threshold, so that both inline and file blobs occur.
const SIZES: [usize; 6] = [0, 10, 100, 16 * 1024, 16 * 1024 + 1, 70_000];

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0..BUCKETS.len(), 0..SIZES.len(), proptest::option::of(0u64..300), any::<bool>())
            .prop_map(|(bucket, content, expires_in_hours, restricted)| Op::Upload {
                bucket,
                content,
                expires_in_hours,
                restricted,
            }),
        2 => any::<usize>().prop_map(Op::DeleteFile),
        1 => any::<usize>().prop_map(Op::DeleteContent),
        1 => (any::<usize>(), proptest::option::of(0u64..300))
            .prop_map(|(file, expires_in_hours)| Op::SetExpiry { file, expires_in_hours }),
        1 => (any::<usize>(), any::<bool>())
            .prop_map(|(file, restricted)| Op::SetRestricted { file, restricted }),
        1 => (0..BUCKETS.len(), proptest::option::of(prop_oneof![0u64..100, 0u64..200_000]))
            .prop_map(|(bucket, quota)| Op::SetQuota { bucket, quota }),
        2 => prop_oneof![0u64..30, 0u64..400].prop_map(|hours| Op::Advance { hours }),
        2 => Just(Op::Gc),
        1 => Just(Op::Restart),
        1 => any::<usize>().prop_map(Op::WriteOlderBlobRecord),
        1 => Just(Op::WriteStoreFormat1AndRestart),
    ]
}

/// A store on an engine backend, restarted by a clean close and reopen.
struct Reopening {
    harness: Harness,
    store: Option<Store>,
}

impl Subject for Reopening {
    fn store(&self) -> &Store {
        self.store.as_ref().expect("the store is open")
    }

    fn advance(&mut self, by: Duration) {
        self.harness.advance(by);
    }

    fn restart(&mut self) {
        // RocksDB and sled lock their directory: the old store goes first.
        drop(self.store.take());
        self.store = Some(self.harness.open());
    }
}

fn run(backend: Backend, ops: Vec<Op>) {
    // The feed is replayed from revision 0 at the end: keep all of it, however far the
    // clock moves.
    let settings = Settings {
        change_retention: Duration::from_secs(100 * 365 * 86_400),
        ..Settings::default()
    };
    let harness = Harness::with_settings(backend, settings);
    let store = Some(harness.open());
    run_against_model(&mut Reopening { harness, store }, &SIZES, ops);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn model_memory(ops in proptest::collection::vec(op(), 1..40)) {
        run(Backend::Memory, ops);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]
    #[test]
    fn model_rocksdb(ops in proptest::collection::vec(op(), 1..30)) {
        run(Backend::Rocksdb, ops);
    }
}

#[cfg(feature = "sled")]
proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]
    #[test]
    fn model_sled(ops in proptest::collection::vec(op(), 1..30)) {
        run(Backend::Sled, ops);
    }
}
