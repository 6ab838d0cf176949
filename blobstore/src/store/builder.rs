//! Opening a store: the builder and its settings.

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use engine::{ChangeLog, Direction, Engine, EngineConfig, GroupCommit, ScanRange};

use crate::backend::{BlobBackend, LocalFsBackend};
use crate::downloads::PendingDownloads;
use crate::error::{Error, Result};
use crate::hot::HotCache;
use crate::keys::{self, KEYSPACES};
use crate::locks::{SharedStripes, Stripes};
use crate::token::TokenSigner;
use crate::types::Timestamp;
use engine::{Clock, SystemClock};

use super::{decode_u64, Ids, Inner, Keyspaces, Store, LOCK_STRIPES};
use super::{CHUNK_SIZE, DEFAULT_EXPIRY_GRACE, DEFAULT_GRACE};
use super::{DEFAULT_HOT_CACHE_BYTES, DEFAULT_INLINE_THRESHOLD};

/// The default retention of change-feed events: 400 days (a year and a season of audit).
pub const DEFAULT_CHANGE_RETENTION: Duration = Duration::from_secs(400 * 86_400);

enum EngineSource {
    Config(EngineConfig),
    Engine(Arc<dyn Engine>),
}

/// Configures and opens a [`Store`].
pub struct StoreBuilder {
    engine: EngineSource,
    data_dir: PathBuf,
    keep_sha1_md5: bool,
    grace: Duration,
    expiry_grace: Duration,
    inline_threshold: usize,
    clock: Arc<dyn Clock>,
    signer: Option<TokenSigner>,
    backend: Option<Arc<dyn BlobBackend>>,
    hot_cache_bytes: u64,
    change_feed: bool,
    change_retention: Duration,
    upgrade_format: Option<bool>,
}

impl fmt::Debug for StoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreBuilder")
            .field("data_dir", &self.data_dir)
            .field("keep_sha1_md5", &self.keep_sha1_md5)
            .field("grace", &self.grace)
            .field("expiry_grace", &self.expiry_grace)
            .field("inline_threshold", &self.inline_threshold)
            .field("hot_cache_bytes", &self.hot_cache_bytes)
            .field("change_feed", &self.change_feed)
            .field("change_retention", &self.change_retention)
            .field("upgrade_format", &self.upgrade_format)
            .finish_non_exhaustive()
    }
}

impl StoreBuilder {
    /// A store whose metadata engine is opened from `engine` and whose blob files live under
    /// `data_dir` (`data_dir/blobs`, `data_dir/tmp`).
    pub fn new(engine: EngineConfig, data_dir: impl Into<PathBuf>) -> Self {
        Self::from_source(EngineSource::Config(engine), data_dir.into())
    }

    /// A store over an engine that is already open with (at least) [`KEYSPACES`]. Tests use
    /// it to reopen a `MemEngine`.
    pub fn with_engine(engine: Arc<dyn Engine>, data_dir: impl Into<PathBuf>) -> Self {
        Self::from_source(EngineSource::Engine(engine), data_dir.into())
    }

    fn from_source(engine: EngineSource, data_dir: PathBuf) -> Self {
        StoreBuilder {
            engine,
            data_dir,
            keep_sha1_md5: false,
            grace: DEFAULT_GRACE,
            expiry_grace: DEFAULT_EXPIRY_GRACE,
            inline_threshold: DEFAULT_INLINE_THRESHOLD,
            clock: Arc::new(SystemClock),
            signer: None,
            backend: None,
            hot_cache_bytes: DEFAULT_HOT_CACHE_BYTES,
            change_feed: true,
            change_retention: DEFAULT_CHANGE_RETENTION,
            upgrade_format: None,
        }
    }

    /// Whether [`open`](Self::open) may bring a store of an older format to this build's
    /// ([`STORE_FORMAT`](crate::STORE_FORMAT); `DESIGN.md`, "Store formats"). Default: on the
    /// embedded backends, whose one process owns the store, yes; on PostgreSQL, whose store
    /// several instances share, no: `librarian upgrade-store` does it with every instance
    /// stopped, and an open of an older store fails with [`crate::Error::StoreFormat`].
    pub fn upgrade_format(mut self, upgrade: bool) -> Self {
        self.upgrade_format = Some(upgrade);
        self
    }

    /// Whether to compute and index SHA-1 and MD5 too. Default: `false`.
    pub fn keep_sha1_md5(mut self, keep: bool) -> Self {
        self.keep_sha1_md5 = keep;
        self
    }

    /// How long an unreferenced blob, or an orphan file, is kept. Default: 1 day.
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// How long after its expiry a file keeps its content link. Default: 7 days.
    pub fn expiry_grace(mut self, grace: Duration) -> Self {
        self.expiry_grace = grace;
        self
    }

    /// Blobs of at most this many bytes are stored inline in the engine. Default: 16 KiB;
    /// clamped to [`CHUNK_SIZE`].
    pub fn inline_threshold(mut self, bytes: usize) -> Self {
        self.inline_threshold = bytes.min(CHUNK_SIZE);
        self
    }

    /// The source of time. Default: the system clock.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The token secrets: tokens are signed with `current` and accepted under `current` or
    /// `previous`. Default: a random secret (tokens do not survive a restart).
    pub fn token_secrets(mut self, current: [u8; 32], previous: Option<[u8; 32]>) -> Self {
        self.signer = Some(TokenSigner::new(current, previous));
        self
    }

    /// The memory the hot-file cache may hold: records and content of inline files that were
    /// read, answered by [`Store::cached_file`] without touching the engine. Default:
    /// [`DEFAULT_HOT_CACHE_BYTES`]; 0 disables the cache.
    pub fn hot_cache_bytes(mut self, bytes: u64) -> Self {
        self.hot_cache_bytes = bytes;
        self
    }

    /// Whether writes record their events in the change feed. Default: `true`. Turning it
    /// off is for measuring what the feed costs (`benches`): a store without it leaves gaps
    /// that no follower or audit can fill, and its writes answer revision 0.
    pub fn change_feed(mut self, on: bool) -> Self {
        self.change_feed = on;
        self
    }

    /// How long events of the change feed are kept: [`Store::gc`] prunes older ones.
    /// Default: [`DEFAULT_CHANGE_RETENTION`] (400 days).
    pub fn change_retention(mut self, retention: Duration) -> Self {
        self.change_retention = retention;
        self
    }

    /// Where blob bytes go. Default: [`LocalFsBackend`] under the data directory.
    pub fn backend(mut self, backend: Arc<dyn BlobBackend>) -> Self {
        self.backend = Some(backend);
        self
    }

    /// Opens the store. Nothing is scanned: opening reads three keys and the newest event of
    /// the change feed (after a flush of the engine, so that every event seen is durable),
    /// unless the store is of an older format and this open upgrades it, which reads every
    /// file record once.
    ///
    /// # Errors
    /// The engine's error, [`Error::StoreFormat`] for a store of a newer format or of an
    /// older one that this open may not upgrade, or [`Error::Io`] when the data directory
    /// cannot be prepared.
    pub fn open(self) -> Result<Store> {
        let engine = match self.engine {
            EngineSource::Config(config) => config.open(KEYSPACES)?,
            EngineSource::Engine(engine) => engine,
        };
        let backend: Arc<dyn BlobBackend> = match self.backend {
            Some(backend) => backend,
            None => Arc::new(LocalFsBackend::open(&self.data_dir)?),
        };
        let ks = Keyspaces::resolve(engine.as_ref())?;
        // Several instances share a PostgreSQL store: one of them upgrading while the others
        // serve would race them, so there it takes `librarian upgrade-store`.
        let may_upgrade = self
            .upgrade_format
            .unwrap_or_else(|| engine.leadership().is_none());
        let upgraded = super::format::ensure_current(engine.as_ref(), &ks, may_upgrade)?;
        if upgraded > 0 {
            tracing::info!(
                files = upgraded,
                format = super::STORE_FORMAT,
                "upgraded the store's format"
            );
        }
        let next = next_file_id(engine.as_ref(), &ks)?;
        let now = Timestamp::from_clock(&*self.clock);
        let committer = Arc::new(GroupCommit::new(engine.clone()));
        let log = ChangeLog::open(committer.clone(), engine.keyspace(keys::CHANGES)?)?;
        Ok(Store {
            inner: Arc::new(Inner {
                committer,
                log,
                feed: self.change_feed,
                change_retention: self.change_retention,
                engine,
                ks,
                backend,
                blob_locks: Stripes::new(LOCK_STRIPES),
                blob_deletions: std::sync::RwLock::new(()),
                pair_locks: Stripes::new(LOCK_STRIPES),
                bucket_locks: SharedStripes::new(LOCK_STRIPES),
                idempotency_locks: Stripes::new(LOCK_STRIPES),
                ids: Mutex::new(Ids {
                    next,
                    high_water: next,
                }),
                clock: self.clock,
                signer: self.signer.unwrap_or_else(TokenSigner::random),
                keep_sha1_md5: self.keep_sha1_md5,
                grace: self.grace,
                expiry_grace: self.expiry_grace,
                inline_threshold: self.inline_threshold,
                poison: Mutex::new(None),
                hot: (self.hot_cache_bytes > 0).then(|| HotCache::new(self.hot_cache_bytes)),
                downloads: PendingDownloads::new(now),
                uploads_dir: self.data_dir.join("uploads"),
                sessions: super::resumable::Sessions::default(),
                scrub: Mutex::new(()),
            }),
        })
    }
}

/// The first file id this process may hand out: above the high-water mark of the blocks
/// reserved so far (by any instance) and above every stored file.
pub(super) fn next_file_id(engine: &dyn engine::Engine, ks: &Keyspaces) -> Result<u64> {
    let high_water = match engine.get(ks.meta, keys::META_ID_HIGH_WATER)? {
        Some(value) => decode_u64(&value).ok_or_else(|| Error::CorruptRecord {
            what: "file id high-water mark",
            key: keys::META_ID_HIGH_WATER.to_vec(),
        })?,
        None => 0,
    };
    let max_id = match engine
        .scan(ks.files, ScanRange::all(), Direction::Reverse)?
        .next()
    {
        Some(kv) => decode_u64(&kv?.0).unwrap_or(0),
        None => 0,
    };
    Ok(high_water.max(max_id + 1).max(1))
}
