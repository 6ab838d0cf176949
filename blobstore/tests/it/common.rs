//! The test harness: a store on a chosen engine backend, in a temporary directory, with a
//! manual clock, that can be reopened.

use std::sync::Arc;
use std::time::Duration;

use blobstore::{BucketName, ManualClock, Store, StoreBuilder, Timestamp, KEYSPACES};
use engine::{Backend, EngineConfig, MemEngine};

/// Stamps out one `#[test]` per engine backend for each named function of `suite`.
macro_rules! backend_tests {
    ($module:ident: $($name:ident),* $(,)?) => {
        mod rocksdb {
            $(#[test]
            fn $name() {
                crate::$module::$name(engine::Backend::Rocksdb);
            })*
        }
        #[cfg(feature = "sled")]
        mod sled {
            $(#[test]
            fn $name() {
                crate::$module::$name(engine::Backend::Sled);
            })*
        }
        mod memory {
            $(#[test]
            fn $name() {
                crate::$module::$name(engine::Backend::Memory);
            })*
        }
    };
}
pub(crate) use backend_tests;

/// The settings a test may change before (re)opening.
#[derive(Clone, Debug)]
pub struct Settings {
    pub keep_sha1_md5: bool,
    pub grace: Duration,
    pub expiry_grace: Duration,
    pub inline_threshold: usize,
    pub secrets: ([u8; 32], Option<[u8; 32]>),
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            keep_sha1_md5: false,
            grace: blobstore::DEFAULT_GRACE,
            expiry_grace: blobstore::DEFAULT_EXPIRY_GRACE,
            inline_threshold: blobstore::DEFAULT_INLINE_THRESHOLD,
            secrets: ([7; 32], None),
        }
    }
}

pub struct Harness {
    pub backend: Backend,
    pub dir: tempfile::TempDir,
    pub clock: Arc<ManualClock>,
    pub settings: Settings,
    mem: Option<MemEngine>,
}

impl Harness {
    pub fn new(backend: Backend) -> Self {
        Self::with_settings(backend, Settings::default())
    }

    pub fn with_settings(backend: Backend, settings: Settings) -> Self {
        Harness {
            backend,
            dir: tempfile::tempdir().expect("temporary directory"),
            clock: Arc::new(ManualClock::new(Timestamp::now())),
            settings,
            mem: (backend == Backend::Memory).then(|| MemEngine::new(KEYSPACES)),
        }
    }

    /// Opens the store (drop the previous one first: RocksDB and sled lock their directory).
    pub fn open(&self) -> Store {
        self.try_open()
            .unwrap_or_else(|error| panic!("open store: {error}"))
    }

    fn try_open(&self) -> blobstore::Result<Store> {
        let data_dir = self.dir.path().join("data");
        let builder = match &self.mem {
            Some(mem) => StoreBuilder::with_engine(Arc::new(mem.reopen(KEYSPACES)), &data_dir),
            None => StoreBuilder::new(
                EngineConfig::new(self.backend, self.dir.path().join("meta")),
                &data_dir,
            ),
        };
        builder
            .keep_sha1_md5(self.settings.keep_sha1_md5)
            .grace(self.settings.grace)
            .expiry_grace(self.settings.expiry_grace)
            .inline_threshold(self.settings.inline_threshold)
            .token_secrets(self.settings.secrets.0, self.settings.secrets.1)
            .clock(self.clock.clone())
            .open()
    }

    pub fn data_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("data")
    }

    pub fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }
}

pub fn bucket(name: &str) -> BucketName {
    BucketName::new(name).expect("valid bucket name")
}

/// Deterministic pseudo-random bytes.
pub fn content(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

pub fn assert_consistent(store: &Store) {
    let report = store.check().expect("check");
    assert!(report.is_ok(), "check found drift: {:#?}", report.problems);
    let mut after = None;
    loop {
        let verify = store.verify(after, 1000).expect("verify");
        assert!(verify.problems.is_empty(), "verify: {:?}", verify.problems);
        match verify.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
}
