//! The test harness: a store on a chosen engine backend, in a temporary directory, with a
//! manual clock, that can be reopened; its blob bytes are files under `data/blobs/`.
//!
//! It is the harness of the store's suite (`blobstore::testing::suite`), which the object-store
//! crate also runs over Swift, S3 and SeaweedFS with a harness of its own.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use blobstore::testing::suite;
use blobstore::{
    BlobBackend, LocalFsBackend, ManualClock, Store, StoreBuilder, Timestamp, KEYSPACES,
};
use engine::testing::TestStore;
use engine::Backend;

pub use blobstore::testing::{bucket, content, Settings};

/// Stamps out one `#[test]` per engine backend for each named function of `suite`, with
/// engine's testing kit (which guards each backend by engine's own features, and skips
/// PostgreSQL, saying so, when no test server is given: `scripts/with-postgres.sh`).
macro_rules! backend_tests {
    ($module:ident: $($name:ident),* $(,)?) => {
        engine::backend_tests!(backends [memory, rocksdb, sled, postgres]; in $module; $($name),*);
    };
}
pub(crate) use backend_tests;

/// The same for the embedded backends only: tests that open an engine in a directory of
/// their own.
macro_rules! embedded_backend_tests {
    ($module:ident: $($name:ident),* $(,)?) => {
        engine::backend_tests!(backends [memory, rocksdb, sled]; in $module; $($name),*);
    };
}
pub(crate) use embedded_backend_tests;

pub struct Harness {
    pub backend: Backend,
    pub dir: tempfile::TempDir,
    pub clock: Arc<ManualClock>,
    pub settings: Settings,
    /// The metadata engine's place: a kept map, a directory, or a PostgreSQL schema.
    engine: TestStore,
}

impl Harness {
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }
}

impl suite::Harness for Harness {
    fn with_settings(backend: Backend, settings: Settings) -> Self {
        Harness {
            backend,
            dir: tempfile::tempdir().expect("temporary directory"),
            clock: Arc::new(ManualClock::at_millis(Timestamp::now().as_unix_millis())),
            settings,
            engine: TestStore::new(backend, KEYSPACES),
        }
    }

    fn settings_mut(&mut self) -> &mut Settings {
        &mut self.settings
    }

    fn try_open(&self) -> blobstore::Result<Store> {
        let data_dir = self.data_dir();
        let builder = match self.backend {
            Backend::Memory => StoreBuilder::with_engine(self.engine.open(), &data_dir),
            _ => StoreBuilder::new(self.engine.config(), &data_dir),
        };
        self.settings
            .apply(builder)
            .clock(self.clock.clone())
            .open()
    }

    /// The backend that holds the blob bytes, for planting or damaging blobs behind the
    /// store's back.
    fn blob_backend(&self) -> Arc<dyn BlobBackend> {
        Arc::new(LocalFsBackend::open(self.data_dir()).expect("open the blob directory"))
    }

    /// How many blobs the backend holds: files under `blobs/`.
    fn stored_blobs(&self) -> usize {
        count_files(&self.data_dir().join("blobs"))
    }

    /// How many temporaries of unfinished uploads are left: files under `tmp/`.
    fn temporaries(&self) -> usize {
        count_files(&self.data_dir().join("tmp"))
    }

    /// Leaves a temporary as an upload that crashed midway does.
    fn plant_temporary(&self) {
        std::fs::write(self.data_dir().join("tmp").join("leftover.tmp"), b"partial")
            .expect("write a temporary");
    }

    fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }
}

fn count_files(dir: &Path) -> usize {
    let mut n = 0;
    for entry in std::fs::read_dir(dir).expect("list a directory") {
        let path = entry.expect("list a directory").path();
        n += if path.is_dir() { count_files(&path) } else { 1 };
    }
    n
}
