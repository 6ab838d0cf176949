//! The harness: stores whose blob bytes live on the real Swift named by the environment,
//! through its native API or its S3 API.
//!
//! `Harness` is a harness of the blob store's own suite (`blobstore::testing::suite`); what does
//! not depend on where the bytes live comes from the same testing kit. The protocol comes from
//! [`with_protocol`], since the suite's functions take an engine backend.

use std::cell::Cell;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use blobstore::testing::suite;
use blobstore::{ManualClock, Store, StoreBuilder, Timestamp};
use engine::{Backend, Engine, MemEngine};
use objectstore::{ObjectStoreBackend, ObjectStoreConfig, RetryConfig};

pub use blobstore::testing::{assert_consistent, bucket, content, read_all, Settings};

/// Which API a test talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Swift,
    S3,
}

/// Which object store, through which API: the Swift cluster of `scripts/swift-saio.sh` over
/// its native API or its s3api middleware, or the SeaweedFS of `scripts/seaweedfs.sh` over
/// S3 (a second, independent S3 implementation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Swift,
    SwiftS3,
    SeaweedfsS3,
}

impl Target {
    pub fn protocol(self) -> Protocol {
        match self {
            Target::Swift => Protocol::Swift,
            Target::SwiftS3 | Target::SeaweedfsS3 => Protocol::S3,
        }
    }
}

thread_local! {
    static TARGET: Cell<Target> = const { Cell::new(Target::Swift) };
}

/// Runs `f` with harnesses created on this thread using `target`.
pub fn with_target(target: Target, f: impl FnOnce()) {
    TARGET.with(|t| t.set(target));
    f();
}

/// Runs `f` with harnesses created on this thread using `protocol` on the Swift cluster.
pub fn with_protocol(protocol: Protocol, f: impl FnOnce()) {
    let target = match protocol {
        Protocol::Swift => Target::Swift,
        Protocol::S3 => Target::SwiftS3,
    };
    with_target(target, f);
}

/// Stamps out one `#[test]` per target for each named function of `$module` (each takes an
/// engine backend, as the blob store's suite does; the memory engine is used): `swift` and
/// `s3` on the Swift cluster, `seaweedfs_s3` on SeaweedFS.
macro_rules! protocol_tests {
    ($module:ident as $tests:ident: $($name:ident),* $(,)?) => {
        mod $tests {
            crate::common::protocol_tests!(@target swift, Swift, $module: $($name),*);
            crate::common::protocol_tests!(@target s3, SwiftS3, $module: $($name),*);
            crate::common::protocol_tests!(@target seaweedfs_s3, SeaweedfsS3, $module: $($name),*);
        }
    };
    (@target $target_module:ident, $target:ident, $module:ident: $($name:ident),*) => {
        mod $target_module {
            $(#[test]
            fn $name() {
                crate::common::with_target(crate::common::Target::$target, || {
                    crate::$module::$name(engine::Backend::Memory)
                });
            })*
        }
    };
}
pub(crate) use protocol_tests;

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: these tests need a real Swift and a real SeaweedFS. Start them \
             with `scripts/swift-saio.sh start DIR` and `scripts/seaweedfs.sh start DIR` and \
             `source DIR/env`, run the tests under `scripts/with-swift.sh \
             scripts/with-seaweedfs.sh cargo test -p objectstore`, or run `make test`"
        )
    })
}

/// A fresh container prefix, so that tests never share containers.
pub fn unique_prefix() -> String {
    format!("t{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff)
}

/// The configuration of the environment's object store `target`, with a fresh prefix.
pub fn config(target: Target, spool: PathBuf) -> ObjectStoreConfig {
    let config = match target {
        Target::Swift => {
            ObjectStoreConfig::swift(env("SWIFT_AUTH_URL"), env("SWIFT_USER"), env("SWIFT_KEY"))
        }
        Target::SwiftS3 => ObjectStoreConfig::s3(
            env("S3_ENDPOINT"),
            env("S3_REGION"),
            env("S3_ACCESS_KEY"),
            env("S3_SECRET_KEY"),
        ),
        Target::SeaweedfsS3 => ObjectStoreConfig::s3(
            env("SEAWEEDFS_S3_ENDPOINT"),
            env("SEAWEEDFS_S3_REGION"),
            env("SEAWEEDFS_S3_ACCESS_KEY"),
            env("SEAWEEDFS_S3_SECRET_KEY"),
        ),
    };
    config
        .container_prefix(unique_prefix())
        .spool_dir(spool)
        .retry(RetryConfig::new(
            Duration::from_millis(20),
            Duration::from_millis(500),
            Duration::from_secs(10),
        ))
}

/// The keyspaces of a store with an object-store backend.
pub fn keyspaces() -> Vec<&'static str> {
    blobstore::KEYSPACES
        .iter()
        .chain(objectstore::KEYSPACES)
        .copied()
        .collect()
}

pub struct Harness {
    #[allow(dead_code)]
    pub backend: Backend,
    pub protocol: Protocol,
    pub dir: tempfile::TempDir,
    pub clock: Arc<ManualClock>,
    pub settings: Settings,
    pub config: ObjectStoreConfig,
    mem: MemEngine,
}

impl Harness {
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The metadata engine (the same data on every call).
    pub fn engine(&self) -> Arc<dyn Engine> {
        Arc::new(self.mem.reopen(&keyspaces()))
    }

    /// A backend on the harness's engine and configuration.
    pub fn object_backend(&self) -> ObjectStoreBackend {
        ObjectStoreBackend::open(&self.config, self.engine()).expect("open the object store")
    }

    /// Opens the store over `backend`.
    pub fn open_with(&self, backend: Arc<dyn blobstore::BlobBackend>) -> Store {
        self.try_open_with(backend).expect("open store")
    }

    fn try_open_with(&self, backend: Arc<dyn blobstore::BlobBackend>) -> blobstore::Result<Store> {
        let builder = StoreBuilder::with_engine(self.engine(), self.data_dir()).backend(backend);
        self.settings
            .apply(builder)
            .clock(self.clock.clone())
            .open()
    }
}

impl suite::Harness for Harness {
    fn with_settings(backend: Backend, settings: Settings) -> Self {
        let target = TARGET.with(Cell::get);
        let protocol = target.protocol();
        let dir = tempfile::tempdir().expect("temporary directory");
        let config = config(target, dir.path().join("spool"));
        Harness {
            backend,
            protocol,
            clock: Arc::new(ManualClock::at_millis(Timestamp::now().as_unix_millis())),
            settings,
            config,
            mem: MemEngine::new(&keyspaces()),
            dir,
        }
    }

    fn settings_mut(&mut self) -> &mut Settings {
        &mut self.settings
    }

    /// Opens the store over the object store.
    fn try_open(&self) -> blobstore::Result<Store> {
        self.try_open_with(Arc::new(self.object_backend()))
    }

    /// The backend that holds the blob bytes, for planting or damaging blobs behind the
    /// store's back.
    fn blob_backend(&self) -> Arc<dyn blobstore::BlobBackend> {
        Arc::new(self.object_backend())
    }

    /// How many blobs the object store holds: the objects listed in every container started.
    fn stored_blobs(&self) -> usize {
        let remote = self.object_backend();
        (0..remote.containers())
            .map(|index| remote.objects(index).expect("list a container").len())
            .sum()
    }

    /// How many temporaries of unfinished uploads are left: files in the spool directory.
    fn temporaries(&self) -> usize {
        std::fs::read_dir(&self.config.spool_dir)
            .expect("list the spool directory")
            .count()
    }

    /// Leaves a spool file as an upload that crashed midway does.
    fn plant_temporary(&self) {
        std::fs::write(
            self.config.spool_dir.join("objectstore-spool-crashed"),
            b"partial",
        )
        .expect("write a spool file");
    }

    fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }
}
