//! The librarian: an HTTP blob service over `blobstore`.
//!
//! Writers (trusted services, checked by address and HTTP Basic credentials) upload files
//! into buckets and manage them; readers download `/{id}/{filename}` and `/blobs/{blake3}`
//! without credentials, restricted files with a token. [`router`] builds the whole service
//! from a [`Librarian`]; `docs/API.md` and `/openapi.json` describe the routes.

pub mod backup;
pub mod config;
mod fast;
pub mod feed;
mod handlers;
pub mod http;
pub mod migrate;
pub mod scrub;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, head, post};
use axum::Router;
use blobstore::Store;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

use crate::common::access::{self, AccessPolicy};
use crate::common::follow::{self, Follower, Replica, ReplicaError};
use crate::common::leader::{self, Leader};
use crate::common::metrics::{HttpMetrics, Tracker};
use crate::common::pool::BlockingPool;
use crate::common::subscriptions::LazySubscriptions;
use crate::common::SetupError;
use crate::common::{finish, ApiError, Limits, ServerConfig};
use feed::BlobFeed;
use handlers::store_error;
use scrub::{ScrubMetrics, ScrubSettings};

pub use config::{LibrarianConfig, OpenError, OpenedStore, StoreConfig};

/// The longest `/health` waits for the object store's answer; a slower one counts as
/// failing (a load balancer's check must not hang for the whole retry budget).
pub const OBJECT_STORE_PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// The OpenAPI document served at `/openapi.json`.
pub const OPENAPI: &str = include_str!("../../openapi/librarian.json");

/// The routes, as `(method, path template)`, that the OpenAPI document must describe.
pub const ROUTES: &[(&str, &str)] = &[
    ("POST", "/buckets/{bucket}/files"),
    ("POST", "/buckets/{bucket}/uploads"),
    ("OPTIONS", "/buckets/{bucket}/uploads"),
    ("HEAD", "/uploads/{id}"),
    ("PATCH", "/uploads/{id}"),
    ("DELETE", "/uploads/{id}"),
    ("OPTIONS", "/uploads/{id}"),
    ("GET", "/buckets/{bucket}/files"),
    ("PUT", "/buckets/{bucket}"),
    ("GET", "/buckets/{bucket}"),
    ("GET", "/files/{id}"),
    ("DELETE", "/files/{id}"),
    ("PATCH", "/files/{id}"),
    ("DELETE", "/files/{id}/content"),
    ("POST", "/files/{id}/token"),
    ("GET", "/search"),
    ("GET", "/changes"),
    ("GET", "/files/{id}/history"),
    ("GET", "/files/{id}/downloads"),
    ("GET", "/buckets/{bucket}/downloads"),
    ("GET", "/buckets/{bucket}/history"),
    ("GET", "/persons/{person}/history"),
    ("POST", "/subscriptions"),
    ("GET", "/subscriptions/{id}"),
    ("DELETE", "/subscriptions/{id}"),
    ("GET", "/stats"),
    ("GET", "/scrub"),
    ("GET", "/{id}/{filename}"),
    ("HEAD", "/{id}/{filename}"),
    ("GET", "/blobs/{blake3}"),
    ("HEAD", "/blobs/{blake3}"),
    ("GET", "/health"),
    ("GET", "/health/writer"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
    ("POST", "/admin/backup"),
];

/// Store and GC figures exported beside the HTTP metrics.
#[derive(Debug, Default)]
pub struct StoreMetrics {
    files: Gauge,
    blobs: Gauge,
    stored_bytes: Gauge,
    logical_bytes: Gauge,
    gc_passes: Counter,
    gc_expired_files: Counter,
    gc_collected_blobs: Counter,
    gc_freed_bytes: Counter,
    gc_last_success: Gauge,
    /// Events of the change feed whose history keys the log's indexer has not written yet:
    /// it should stay near 0; growing, the indexer is stuck and history reads slow down.
    feed_history_unindexed: Gauge,
}

impl StoreMetrics {
    /// Records one GC pass.
    pub fn record_gc(&self, report: &blobstore::GcReport) {
        self.gc_passes.inc();
        self.gc_expired_files.inc_by(report.expired_files);
        self.gc_collected_blobs.inc_by(report.collected_blobs);
        self.gc_freed_bytes.inc_by(report.freed_bytes);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        self.gc_last_success.set(now);
    }
}

/// The shared state of the librarian's handlers. Cheap to clone (one reference count: axum
/// clones the state for every extractor of every request).
#[derive(Debug, Clone)]
pub struct Librarian {
    shared: Arc<Shared>,
}

impl std::ops::Deref for Librarian {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.shared
    }
}

/// What [`Librarian`] shares between its clones.
#[derive(Debug, Clone)]
pub struct Shared {
    pub(crate) store: Store,
    pub(crate) limits: Arc<Limits>,
    pub(crate) policy: Arc<AccessPolicy>,
    pub(crate) metrics: Arc<HttpMetrics>,
    pub(crate) store_metrics: Arc<StoreMetrics>,
    pub(crate) uploads_aborted: Arc<AtomicU64>,
    pub(crate) pool: BlockingPool,
    pub(crate) object_store: Option<ObjectStoreProbe>,
    pub(crate) feed: Arc<BlobFeed>,
    /// Callbacks on changes, started when first needed.
    pub(crate) subscriptions: Arc<LazySubscriptions<BlobFeed>>,
    pub(crate) leader: Leader,
    pub(crate) scrub_settings: ScrubSettings,
    pub(crate) scrub_metrics: Arc<ScrubMetrics>,
    /// The store's settings, for `POST /admin/backup` (its data directory and engine);
    /// `None`: the route answers 501.
    pub(crate) store_config: Option<Arc<config::StoreConfig>>,
    /// The revision this instance has applied; on a shared database, the thread following
    /// the other instances' writes.
    pub(crate) follower: Follower,
    follow_settings: crate::common::FollowSettings,
}

/// The object store as `/health` sees it: one probe at a time (a probe that outlives its
/// health check keeps the lock until it ends, so slow probes never pile up), answered
/// within [`OBJECT_STORE_PROBE_TIMEOUT`].
#[derive(Debug, Clone)]
pub(crate) struct ObjectStoreProbe {
    backend: objectstore::ObjectStoreBackend,
    lock: Arc<tokio::sync::Mutex<()>>,
    timeout: Duration,
}

impl ObjectStoreProbe {
    /// Whether the object store answers; `Err` says why not (for the log).
    pub(crate) async fn check(&self) -> Result<(), String> {
        let attempt = async {
            let guard = Arc::clone(&self.lock).lock_owned().await;
            let backend = self.backend.clone();
            tokio::task::spawn_blocking(move || {
                let _guard = guard;
                backend.probe()
            })
            .await
        };
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(error))) => Err(error.to_string()),
            Ok(Err(panic)) => Err(format!("the probe panicked: {panic}")),
            Err(_) => Err(format!("no answer within {:?}", self.timeout)),
        }
    }
}

impl Librarian {
    /// The state for `store` served with `server`'s access rules and limits. The delivery of
    /// subscriptions (callbacks) starts on a thread of its own when there are stored ones, else
    /// at the first `POST /subscriptions`.
    ///
    /// # Errors
    /// A malformed credential hash in the configuration, or subscriptions that cannot start.
    pub fn new(store: Store, server: &ServerConfig) -> Result<Self, SetupError> {
        let policy = Arc::new(AccessPolicy::from_config(server, "librarian")?);
        let store_for_follower = store.clone();
        let feed = BlobFeed::new(store.clone());
        let consumers = engine::Consumers::open(
            store.change_log().committer().clone(),
            store.consumers_keyspace(),
        )
        .map_err(SetupError::Consumers)?;
        let subscriptions = LazySubscriptions::open(
            Arc::clone(&feed),
            Arc::new(consumers),
            server.callback_hosts.clone(),
            store.engine().leadership().is_some(),
        )?;
        let mut metrics = HttpMetrics::new("librarian");
        let store_metrics = Arc::new(StoreMetrics::default());
        let registry = metrics.registry_mut();
        let sm = &store_metrics;
        registry.register("store_files", "File records", sm.files.clone());
        registry.register("store_blobs", "Blobs stored", sm.blobs.clone());
        registry.register(
            "store_stored_bytes",
            "Bytes of distinct blobs",
            sm.stored_bytes.clone(),
        );
        registry.register(
            "store_logical_bytes",
            "Bytes of files with content",
            sm.logical_bytes.clone(),
        );
        registry.register("gc_passes", "Completed GC passes", sm.gc_passes.clone());
        registry.register(
            "gc_expired_files",
            "Files whose content link GC cut",
            sm.gc_expired_files.clone(),
        );
        registry.register(
            "gc_collected_blobs",
            "Blobs collected by GC",
            sm.gc_collected_blobs.clone(),
        );
        registry.register(
            "gc_freed_bytes",
            "Bytes freed by GC",
            sm.gc_freed_bytes.clone(),
        );
        registry.register(
            "gc_last_success_timestamp_seconds",
            "When the last GC pass finished",
            sm.gc_last_success.clone(),
        );
        registry.register(
            "feed_history_unindexed",
            "Events whose history keys the change log's indexer has not written yet",
            sm.feed_history_unindexed.clone(),
        );
        let scrub_metrics = Arc::new(ScrubMetrics::default());
        scrub_metrics.register(registry);
        Ok(Librarian {
            shared: Arc::new(Shared {
                store,
                limits: Arc::new(server.limits.clone()),
                policy,
                metrics: Arc::new(metrics),
                store_metrics,
                uploads_aborted: Arc::new(AtomicU64::new(0)),
                pool: BlockingPool::new(
                    "librarian-store",
                    server.limits.store_threads,
                    server.limits.max_concurrency,
                ),
                object_store: None,
                feed,
                subscriptions,
                leader: Leader::always(),
                scrub_settings: ScrubSettings::default(),
                scrub_metrics,
                store_config: None,
                follower: Follower::embedded(Arc::new(LibrarianReplica(store_for_follower))),
                follow_settings: server.follow_settings(),
            }),
        })
    }

    /// Writes (and collects garbage) only while `leader` says this instance leads (several
    /// instances on one PostgreSQL store); by default the instance always does. With an
    /// election, the instance follows the others' writes ([`crate::common::follow`]) and
    /// catches up before it writes as the leader.
    pub fn with_leader(mut self, leader: Leader) -> Self {
        let replica = Arc::new(LibrarianReplica(self.store.clone()));
        let shared = Arc::make_mut(&mut self.shared);
        shared.follower = Follower::start(replica, &leader, shared.follow_settings);
        if let Err(error) = shared.subscriptions.follow_leader(&leader) {
            tracing::error!(%error, "the subscriptions' delivery thread could not start: callbacks are not delivered");
        }
        shared.leader = leader;
        self
    }

    /// The online scrub's rate and period, as `GET /scrub` reports them (the task itself is
    /// [`scrub::scrub_loop`]); by default [`ScrubSettings::default`].
    pub fn with_scrub(mut self, settings: ScrubSettings) -> Self {
        Arc::make_mut(&mut self.shared).scrub_settings = settings;
        self
    }

    /// The settings the store was opened with, which `POST /admin/backup` needs (the data
    /// directory's token secret goes into a backup).
    pub fn with_store_config(mut self, config: config::StoreConfig) -> Self {
        Arc::make_mut(&mut self.shared).store_config = Some(Arc::new(config));
        self
    }

    /// The revision this instance has applied, and whether it is stale.
    pub fn follower(&self) -> &Follower {
        &self.follower
    }

    /// Names `backend` as a dependency of the store: `/health` probes it (within
    /// [`OBJECT_STORE_PROBE_TIMEOUT`]) and reports `object_store` failing when it does not
    /// answer.
    pub fn with_object_store(mut self, backend: objectstore::ObjectStoreBackend) -> Self {
        Arc::make_mut(&mut self.shared).object_store = Some(ObjectStoreProbe {
            backend,
            lock: Arc::new(tokio::sync::Mutex::new(())),
            timeout: OBJECT_STORE_PROBE_TIMEOUT,
        });
        self
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The HTTP metrics.
    pub fn metrics(&self) -> &Arc<HttpMetrics> {
        &self.metrics
    }

    /// The store and GC metrics.
    pub fn store_metrics(&self) -> &Arc<StoreMetrics> {
        &self.store_metrics
    }

    /// Uploads abandoned by their client (or over a limit) so far.
    pub fn uploads_aborted(&self) -> u64 {
        self.uploads_aborted.load(Ordering::Relaxed)
    }

    /// Runs a short store call `f` on the store threads, mapping a panic to a 500.
    pub(crate) async fn blocking<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        F: FnOnce(&Store) -> Result<T, ApiError> + Send + 'static,
        T: Send + 'static,
    {
        let store = self.store.clone();
        self.pool
            .run(move || f(&store))
            .await
            .map_err(ApiError::internal)?
    }
}

/// The librarian's router: every route of `docs/API.md` with its access rules and limits.
pub fn router(state: Librarian) -> Router {
    let tracker = Tracker::new(Arc::clone(&state.metrics), state.limits.max_concurrency);
    let json_limit = DefaultBodyLimit::max(state.limits.max_json_bytes);
    let writers = Router::new()
        .route(
            "/buckets/{bucket}/files",
            post(handlers::upload)
                .layer(DefaultBodyLimit::disable())
                .get(handlers::list_bucket),
        )
        .route(
            "/buckets/{bucket}/uploads",
            post(handlers::tus_create).options(handlers::tus_options),
        )
        .route(
            "/uploads/{id}",
            head(handlers::tus_head)
                .patch(handlers::tus_patch)
                .layer(DefaultBodyLimit::disable())
                .delete(handlers::tus_delete)
                .options(handlers::tus_options),
        )
        .route(
            "/buckets/{bucket}",
            get(handlers::bucket_stats)
                .put(handlers::set_quota)
                .layer(json_limit),
        )
        .route(
            "/files/{id}",
            get(handlers::file_metadata)
                .delete(handlers::delete_file)
                .patch(handlers::update_file)
                .layer(json_limit),
        )
        .route("/files/{id}/content", delete(handlers::delete_content))
        .route("/files/{id}/token", post(handlers::issue_token))
        .route("/search", get(handlers::search))
        .route("/stats", get(handlers::stats))
        .route("/scrub", get(handlers::scrub))
        .route("/changes", get(handlers::changes))
        .route("/files/{id}/history", get(handlers::file_history))
        .route("/files/{id}/downloads", get(handlers::file_downloads))
        .route(
            "/buckets/{bucket}/downloads",
            get(handlers::bucket_downloads),
        )
        .route("/buckets/{bucket}/history", get(handlers::bucket_history))
        .route("/persons/{person}/history", get(handlers::person_history))
        .route("/admin/backup", post(handlers::backup).layer(json_limit))
        .route(
            "/subscriptions",
            post(handlers::create_subscription).layer(json_limit),
        )
        .route(
            "/subscriptions/{id}",
            get(handlers::get_subscription).delete(handlers::delete_subscription),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            state.leader.clone(),
            leader::require_leader,
        ))
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state.policy),
            access::require_writer,
        ));
    let readers = Router::new()
        .route(fast::DOWNLOAD_ROUTE, get(handlers::download))
        .route("/blobs/{blake3}", get(handlers::download_blob))
        .route("/health", get(handlers::health))
        .route("/metrics", get(handlers::metrics))
        .route("/openapi.json", get(handlers::openapi))
        .merge(leader::routes(state.leader.clone()));
    let routes = writers
        .merge(readers)
        .layer(axum::middleware::from_fn_with_state(
            state.follower.clone(),
            follow::min_revision,
        ));
    let router = finish(routes.with_state(state.clone()), tracker.clone());
    // Every request meets the fast path first: a router without routes hands all to it.
    Router::new().fallback_service(fast::FastPath {
        state,
        download_route: tracker.route(fast::DOWNLOAD_ROUTE),
        tracker,
        router,
    })
}

/// Writes the download counts the store gathers in memory every [`blobstore::DOWNLOADS_FLUSH_INTERVAL`]
/// until the process ends (downloads answered from the hot-file cache count only in memory;
/// `DESIGN.md` of blobstore says what a crash may lose).
pub async fn flush_downloads_loop(state: Librarian) {
    let mut ticker = tokio::time::interval(blobstore::DOWNLOADS_FLUSH_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let flushed = state
            .blocking(|store| store.flush_downloads().map_err(store_error))
            .await;
        if let Err(error) = flushed {
            tracing::warn!(?error, "could not write download counts");
        }
    }
}

/// Why [`collect_as_writer`] did not collect.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OfflineGcError {
    /// Another instance holds the store's lease: it collects, not this process.
    #[error(
        "another instance is the writer of this store (lease \"librarian\"): GC and the orphan \
         sweep run on the writer only (`[store] gc_interval_secs` of `librarian serve`); stop \
         the servers to run `librarian gc`"
    )]
    NotWriter,
    /// The lease could not be taken or given back.
    #[error("the store's lease: {0}")]
    Lease(#[source] engine::Error),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] blobstore::Error),
}

/// The name of the store's lease, which the writer among several instances holds
/// ([`crate::common::Leader`]).
pub const LEASE: &str = "librarian";

/// How long `librarian upgrade-store` holds a shared store's lease: longer than an upgrade of
/// tens of millions of files takes, so that no instance takes it over meanwhile (and were one
/// to, the fence refuses the upgrade's writes).
const UPGRADE_LEASE_TTL: Duration = Duration::from_secs(3600);

/// Opens `builder`'s store over `engine` and brings it to this build's format
/// (`librarian upgrade-store`; blobstore/DESIGN.md, "Store formats"). On a database shared by
/// several instances it runs as the writer: it takes the store's lease (refused while an
/// instance holds it), fences its engine with it, and gives it back after. Blocking.
///
/// # Errors
/// [`OpenError::NotWriter`] while another instance leads, [`OpenError::Lease`], or the
/// store's error.
pub fn open_upgrading(
    engine: &Arc<dyn engine::Engine>,
    builder: blobstore::StoreBuilder,
) -> Result<Store, OpenError> {
    let holder = format!("librarian upgrade-store (pid {})", std::process::id());
    let opened = as_writer(engine.as_ref(), &holder, UPGRADE_LEASE_TTL, || {
        builder.upgrade_format(true).open()
    })
    .map_err(|refused| match refused {
        LeaseRefused::Held => OpenError::NotWriter,
        LeaseRefused::Failed(error) => OpenError::Lease(error),
    })?;
    Ok(opened?)
}

/// Why [`as_writer`] did not run its work as the writer.
enum LeaseRefused {
    /// Another instance holds the store's lease.
    Held,
    /// The lease could not be taken or given back.
    Failed(engine::Error),
}

/// Runs `work` as the writer of the store on `engine`. On a database shared by several
/// instances: holding the store's lease as `holder` for at most `ttl` (refused while another
/// instance holds it), with the engine fenced by it (were the lease to move on, the
/// database refuses the work's writes), and giving it back after. On an embedded store, whose
/// one process always writes: simply runs it.
fn as_writer<T>(
    engine: &dyn engine::Engine,
    holder: &str,
    ttl: Duration,
    work: impl FnOnce() -> T,
) -> Result<T, LeaseRefused> {
    let Some(leadership) = engine.leadership() else {
        return Ok(work());
    };
    let epoch = leadership
        .acquire(LEASE, holder, ttl)
        .map_err(LeaseRefused::Failed)?
        .ok_or(LeaseRefused::Held)?;
    leadership.fence(LEASE, epoch);
    let done = work();
    leadership
        .release(LEASE, holder, epoch)
        .map_err(LeaseRefused::Failed)?;
    Ok(done)
}

/// `librarian gc`: GC passes until no work is left, then the orphan sweep. On a database
/// shared by several instances it runs only as the writer: it takes the store's lease
/// (refused while a server holds it), fences its engine with it, and gives it back after,
/// so an orphan sweep never runs beside a writer's uploads. Blocking.
///
/// # Errors
/// [`OfflineGcError::NotWriter`] while another instance leads, or the store's error.
pub fn collect_as_writer(
    store: &Store,
    batch: usize,
) -> Result<(blobstore::GcReport, blobstore::SweepReport), OfflineGcError> {
    let holder = format!("librarian gc (pid {})", std::process::id());
    let collected = as_writer(
        store.engine().as_ref(),
        &holder,
        Duration::from_secs(60),
        || {
            let total = gc_until_done(store, batch)?;
            let sweep = store.sweep_orphans()?;
            store.flush()?;
            Ok::<_, blobstore::Error>((total, sweep))
        },
    )
    .map_err(|refused| match refused {
        LeaseRefused::Held => OfflineGcError::NotWriter,
        LeaseRefused::Failed(error) => OfflineGcError::Lease(error),
    })?;
    Ok(collected?)
}

/// GC passes of at most `batch` items each until one reports no more work, their reports
/// summed.
fn gc_until_done(store: &Store, batch: usize) -> Result<blobstore::GcReport, blobstore::Error> {
    let mut total = blobstore::GcReport::default();
    loop {
        let report = store.gc(batch.max(1))?;
        total.expired_files += report.expired_files;
        total.collected_blobs += report.collected_blobs;
        total.freed_bytes += report.freed_bytes;
        total.pruned_changes += report.pruned_changes;
        total.expired_uploads += report.expired_uploads;
        total.expired_idempotency_keys += report.expired_idempotency_keys;
        if !report.more {
            return Ok(total);
        }
    }
}

/// Runs GC passes every `interval` until the process ends, on the writer only (see
/// [`Librarian::with_leader`]): each pass repeats bounded batches while GC reports more work.
pub async fn gc_loop(state: Librarian, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        // One instance collects: the writer (several instances on one database).
        if !state.leader.is_leader() {
            continue;
        }
        // A GC pass may take long: it runs on Tokio's blocking pool, not the store threads.
        let store = state.store.clone();
        let result = tokio::task::spawn_blocking(move || gc_until_done(&store, 1000)).await;
        match result {
            Ok(Ok(report)) => {
                state.store_metrics.record_gc(&report);
                tracing::info!(
                    expired_files = report.expired_files,
                    collected_blobs = report.collected_blobs,
                    freed_bytes = report.freed_bytes,
                    pruned_changes = report.pruned_changes,
                    expired_uploads = report.expired_uploads,
                    "GC pass"
                );
            }
            Ok(Err(error)) => tracing::error!(%error, "GC pass failed"),
            Err(error) => tracing::error!(%error, "GC pass panicked"),
        }
    }
}

/// The librarian's store as a follower sees it.
struct LibrarianReplica(Store);

impl Replica for LibrarianReplica {
    fn change_log(&self) -> &Arc<engine::ChangeLog> {
        self.0.change_log()
    }

    fn follow(&self, events: &[(u64, Vec<u8>)]) -> Result<(), ReplicaError> {
        self.0.follow(events)?;
        Ok(())
    }

    fn forget(&self) -> Result<(), ReplicaError> {
        self.0.forget_cached();
        Ok(())
    }

    fn take_over(&self) -> Result<(), ReplicaError> {
        Ok(self.0.take_over()?)
    }
}
