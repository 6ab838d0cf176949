//! The directory: an HTTP service for team participation and package sets over `graphdb`,
//! and branch merged-status over `commitgraph`.
//!
//! Every request must come from an allowed network; writes need HTTP Basic credentials, and
//! reads too unless `server.open_reads` is set. [`router`] builds the service from a
//! [`Directory`]; `docs/API.md` and `/openapi.json` describe the routes.

mod answers;
pub mod backup;
pub mod config;
mod fast;
pub mod feed;
mod graphs;
mod handlers;
pub mod repos;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post, put};
use axum::Router;
use commitgraph::CommitGraphs;
use graphdb::{GraphStore, PackageSets, Teams};
use prometheus_client::metrics::gauge::Gauge;

use crate::common::access::{self, AccessPolicy};
use crate::common::follow::{self, FollowSettings, Follower, Replica, ReplicaError};
use crate::common::leader::{self, Leader};
use crate::common::metrics::{HttpMetrics, Tracker};
use crate::common::pool::BlockingPool;
use crate::common::serve::App;
use crate::common::SetupError;
use crate::common::{finish, ApiError, Limits, ServerConfig};

pub use config::{DirectoryConfig, GraphConfig};
pub use feed::{DirectoryFeed, FeedSubscriptions};

/// The OpenAPI document served at `/openapi.json`.
pub const OPENAPI: &str = include_str!("../../openapi/directory.json");

/// The routes, as `(method, path template)`, that the OpenAPI document must describe.
pub const ROUTES: &[(&str, &str)] = &[
    ("PUT", "/teams/{team}"),
    ("PUT", "/persons/{person}"),
    ("PUT", "/teams/{team}/members/{member}"),
    ("DELETE", "/teams/{team}/members/{member}"),
    ("GET", "/teams/{team}/members"),
    ("GET", "/teams/{team}/members/{member}"),
    ("GET", "/persons/{person}/teams"),
    ("GET", "/teams/{team}/holders/{relation}"),
    ("GET", "/teams/{team}/holders/{relation}/{person}"),
    ("PUT", "/packagesets/{set}"),
    ("PUT", "/packagesets/{set}/items/{item}"),
    ("DELETE", "/packagesets/{set}/items/{item}"),
    ("GET", "/packagesets/{set}/packages"),
    ("GET", "/packages/{package}/packagesets"),
    ("POST", "/repos/{repo}/commits"),
    ("PUT", "/repos/{repo}/branches/{branch}"),
    ("DELETE", "/repos/{repo}/branches/{branch}"),
    ("GET", "/repos/{repo}/ancestry"),
    ("GET", "/repos/{repo}/branches/{branch}/merged"),
    (
        "GET",
        "/repos/{repo}/branches/{branch}/merged-into/{target}",
    ),
    ("GET", "/repos/{repo}/branches/{branch}/history"),
    ("POST", "/import/teams"),
    ("POST", "/import/packagesets"),
    ("POST", "/import/repos/{repo}"),
    ("GET", "/persons/{person}/relations"),
    ("GET", "/packagesets/{set}/packages/{package}"),
    ("PUT", "/graphs/{graph}"),
    ("PUT", "/graphs/{graph}/edges/{from}/{to}"),
    ("DELETE", "/graphs/{graph}/edges/{from}/{to}"),
    ("POST", "/import/graphs/{graph}"),
    ("GET", "/graphs/{graph}/reachable"),
    ("GET", "/graphs/{graph}/nodes/{node}"),
    ("GET", "/graphs/{graph}/nodes/{node}/descendants"),
    ("GET", "/graphs/{graph}/nodes/{node}/ancestors"),
    ("GET", "/graphs/{graph}/edges"),
    ("GET", "/export/teams"),
    ("GET", "/export/packagesets"),
    ("GET", "/changes"),
    ("GET", "/teams/{team}/history"),
    ("GET", "/persons/{person}/history"),
    ("POST", "/subscriptions"),
    ("GET", "/subscriptions/{id}"),
    ("DELETE", "/subscriptions/{id}"),
    ("GET", "/health"),
    ("GET", "/health/writer"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
    ("POST", "/admin/backup"),
];

/// The default of [`Directory::with_max_import_edges`]: ten times Debian's dependency graph.
pub const DEFAULT_MAX_IMPORT_EDGES: usize = 5_000_000;

/// The shared state of the directory's handlers.
#[derive(Debug, Clone)]
pub struct Directory {
    pub(crate) store: Arc<GraphStore>,
    pub(crate) commits: Arc<CommitGraphs>,
    pub(crate) teams: Teams,
    pub(crate) sets: PackageSets,
    pub(crate) limits: Arc<Limits>,
    pub(crate) policy: Arc<AccessPolicy>,
    pub(crate) metrics: Arc<HttpMetrics>,
    pub(crate) graph_metrics: Arc<GraphMetrics>,
    pub(crate) pool: BlockingPool,
    /// `GET /changes` and the subscriptions read the store's change log through it.
    pub(crate) feed: Arc<DirectoryFeed>,
    /// Callbacks on changes, started when first needed.
    pub(crate) subscriptions: Arc<FeedSubscriptions>,
    pub(crate) leader: Leader,
    /// The revision this instance has applied; on a shared database, the thread following
    /// the other instances' writes.
    pub(crate) follower: Follower,
    follow_settings: FollowSettings,
    /// The most edges `POST /import/graphs/{graph}` accepts (413 past it).
    pub(crate) max_import_edges: usize,
    /// Whole-list answers of the largest teams' members, kept while their members last.
    pub(crate) member_bodies: Arc<answers::MemberBodies>,
    /// The store's settings, for `POST /admin/backup`; `None`: the route answers 501.
    pub(crate) store_config: Option<Arc<config::GraphConfig>>,
}

/// Index sizes exported beside the HTTP metrics.
#[derive(Debug, Default)]
pub(crate) struct GraphMetrics {
    pub(crate) team_nodes: Gauge,
    pub(crate) team_edges: Gauge,
    pub(crate) team_pairs: Gauge,
    /// Events of the change feed whose history keys the log's indexer has not written yet.
    pub(crate) feed_history_unindexed: Gauge,
}

impl Directory {
    /// The state for `store` and `commits` (over the same engine) served with `server`'s
    /// access rules and limits.
    ///
    /// # Errors
    /// A malformed credential hash, the store's error opening its namespaces, or the
    /// subscriptions' (their records, their delivery thread).
    pub fn new(
        store: GraphStore,
        commits: CommitGraphs,
        server: &ServerConfig,
    ) -> Result<Self, SetupError> {
        let policy = Arc::new(AccessPolicy::from_config(server, "directory")?);
        let teams = graphdb::Teams::open(&store)?;
        let sets = graphdb::PackageSets::open(&store)?;
        let mut metrics = HttpMetrics::new("directory");
        let graph_metrics = Arc::new(GraphMetrics::default());
        let registry = metrics.registry_mut();
        registry.register(
            "teams_nodes",
            "Persons and teams",
            graph_metrics.team_nodes.clone(),
        );
        registry.register(
            "teams_membership_edges",
            "Stored membership edges",
            graph_metrics.team_edges.clone(),
        );
        registry.register(
            "teams_closure_pairs",
            "(member, team) pairs in the closure",
            graph_metrics.team_pairs.clone(),
        );
        registry.register(
            "feed_history_unindexed",
            "Events whose history keys the change log's indexer has not written yet",
            graph_metrics.feed_history_unindexed.clone(),
        );
        let store = Arc::new(store);
        let commits = Arc::new(commits);
        let follower = Follower::embedded(Arc::new(DirectoryReplica {
            store: Arc::clone(&store),
            commits: Arc::clone(&commits),
        }));
        let feed = DirectoryFeed::new(Arc::clone(&store));
        let subscriptions =
            feed::open_subscriptions(&store, Arc::clone(&feed), server.callback_hosts.clone())?;
        Ok(Directory {
            store,
            feed,
            subscriptions,
            commits,
            max_import_edges: DEFAULT_MAX_IMPORT_EDGES,
            member_bodies: Arc::default(),
            teams,
            sets,
            limits: Arc::new(server.limits.clone()),
            policy,
            metrics: Arc::new(metrics),
            graph_metrics,
            pool: BlockingPool::new(
                "directory-store",
                server.limits.store_threads,
                server.limits.max_concurrency,
            ),
            leader: Leader::always(),
            store_config: None,
            follower,
            follow_settings: server.follow_settings(),
        })
    }

    /// Writes only while `leader` says this instance leads (several instances on one
    /// PostgreSQL store); by default the instance always does. With an election, the
    /// instance follows the others' writes ([`crate::common::follow`]) and catches up before
    /// it writes as the leader.
    pub fn with_leader(mut self, leader: Leader) -> Self {
        let replica = Arc::new(DirectoryReplica {
            store: Arc::clone(&self.store),
            commits: Arc::clone(&self.commits),
        });
        self.follower = Follower::start(replica, &leader, self.follow_settings);
        if let Err(error) = self.subscriptions.follow_leader(&leader) {
            tracing::error!(%error, "the subscriptions' delivery thread could not start: callbacks are not delivered");
        }
        self.leader = leader;
        self
    }

    /// The settings the store was opened with, which `POST /admin/backup` needs.
    pub fn with_store_config(mut self, config: config::GraphConfig) -> Self {
        self.store_config = Some(Arc::new(config));
        self
    }

    /// The revision this instance has applied, and whether it is stale.
    pub fn follower(&self) -> &Follower {
        &self.follower
    }

    /// Sets the most edges one graph import accepts. Default: [`DEFAULT_MAX_IMPORT_EDGES`].
    pub fn with_max_import_edges(mut self, max: usize) -> Self {
        self.max_import_edges = max;
        self
    }

    /// The graph store.
    pub fn store(&self) -> &Arc<GraphStore> {
        &self.store
    }

    /// Deletes the change feed's events older than the store's retention
    /// (`graphdb::GraphStoreBuilder::retention`); for the binary's periodic task. Blocking.
    ///
    /// # Errors
    /// The store's error.
    pub fn prune_changes(&self) -> Result<u64, graphdb::Error> {
        self.store.prune_changes()
    }

    /// The HTTP metrics.
    pub fn metrics(&self) -> &Arc<HttpMetrics> {
        &self.metrics
    }

    /// Answers `f` from the in-memory team index: on this async thread when the index is free
    /// (a lookup takes microseconds, less than a handoff to the store threads), else on the
    /// store threads, so that a long write (an import, nesting a large team) or due expiries
    /// never stall the runtime.
    pub(crate) async fn team_lookup<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        F: FnOnce(&graphdb::View<'_>) -> Result<T, ApiError> + Send + 'static,
        T: Send + 'static,
    {
        if let Some(view) = self.teams.try_view() {
            return f(&view);
        }
        self.blocking(move |d| f(&d.teams.view())).await
    }

    /// Runs a short store call `f` on the store threads, mapping a panic to a 500.
    pub(crate) async fn blocking<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        F: FnOnce(&Directory) -> Result<T, ApiError> + Send + 'static,
        T: Send + 'static,
    {
        let state = self.clone();
        self.pool
            .run(move || f(&state))
            .await
            .map_err(ApiError::internal)?
    }

    /// Runs a long store call `f` (an import) on Tokio's blocking pool, so that it does not
    /// hold a store thread.
    pub(crate) async fn blocking_long<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        F: FnOnce(&Directory) -> Result<T, ApiError> + Send + 'static,
        T: Send + 'static,
    {
        let state = self.clone();
        tokio::task::spawn_blocking(move || f(&state))
            .await
            .map_err(ApiError::internal)?
    }
}

/// What the directory's server runs: [`router`], and its hot reads answered before hyper on
/// a connection that asks only for them (`fast.rs`).
pub fn app(state: Directory) -> App {
    let fast = fast_path(state);
    App {
        // Every request meets the fast path first: a router without routes hands all to it.
        router: Router::new().fallback_service(fast.clone()),
        fast: Some(Arc::new(fast)),
    }
}

/// The directory's router: every route of `docs/API.md` with its access rules and limits.
pub fn router(state: Directory) -> Router {
    app(state).router
}

/// The routes behind the fast path.
fn fast_path(state: Directory) -> fast::FastPath {
    let tracker = Tracker::new(Arc::clone(&state.metrics), state.limits.max_concurrency);
    let json_limit = DefaultBodyLimit::max(state.limits.max_json_bytes);
    let import_limit =
        DefaultBodyLimit::max(usize::try_from(state.limits.max_body_bytes).unwrap_or(usize::MAX));
    let policy = Arc::clone(&state.policy);
    let writes = Router::new()
        .route("/teams/{team}", put(handlers::put_team))
        .route("/persons/{person}", put(handlers::put_person))
        .route(
            "/teams/{team}/members/{member}",
            put(handlers::put_member).delete(handlers::delete_member),
        )
        .route("/packagesets/{set}", put(handlers::put_set))
        .route(
            "/packagesets/{set}/items/{item}",
            put(handlers::put_item).delete(handlers::delete_item),
        )
        .route(
            "/repos/{repo}/branches/{branch}",
            put(repos::put_branch).delete(repos::delete_branch),
        )
        .route("/graphs/{graph}", put(graphs::put_graph))
        .route(
            "/graphs/{graph}/edges/{from}/{to}",
            put(graphs::put_edge).delete(graphs::delete_edge),
        )
        .layer(json_limit)
        .merge(
            Router::new()
                .route("/import/teams", post(handlers::import_teams))
                .route("/import/packagesets", post(handlers::import_packagesets))
                .route("/import/repos/{repo}", post(repos::import_repo))
                .route("/import/graphs/{graph}", post(graphs::import_graph))
                .route("/repos/{repo}/commits", post(repos::post_commits))
                .layer(import_limit),
        )
        .route("/subscriptions", post(feed::create_subscription))
        .route("/admin/backup", post(handlers::backup))
        .route("/subscriptions/{id}", delete(feed::delete_subscription))
        .route_layer(axum::middleware::from_fn_with_state(
            state.leader.clone(),
            leader::require_leader,
        ))
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::clone(&policy),
            access::require_writer,
        ));
    let reads = Router::new()
        .route("/teams/{team}/members", get(handlers::members))
        .route("/teams/{team}/members/{member}", get(handlers::is_member))
        .route("/persons/{person}/teams", get(handlers::teams_of))
        .route("/teams/{team}/holders/{relation}", get(handlers::holders))
        .route(
            "/teams/{team}/holders/{relation}/{person}",
            get(handlers::is_holder),
        )
        .route("/packagesets/{set}/packages", get(handlers::packages))
        .route(
            "/packagesets/{set}/packages/{package}",
            get(handlers::set_contains),
        )
        .route("/persons/{person}/relations", get(handlers::relations_of))
        .route(
            "/packages/{package}/packagesets",
            get(handlers::packagesets_of),
        )
        .route("/graphs/{graph}/reachable", get(graphs::reachable))
        .route("/graphs/{graph}/nodes/{node}", get(graphs::node))
        .route(
            "/graphs/{graph}/nodes/{node}/descendants",
            get(graphs::descendants),
        )
        .route(
            "/graphs/{graph}/nodes/{node}/ancestors",
            get(graphs::ancestors),
        )
        .route("/graphs/{graph}/edges", get(graphs::export_graph))
        .route("/export/teams", get(graphs::export_teams))
        .route("/export/packagesets", get(graphs::export_packagesets))
        .route("/changes", get(feed::changes))
        .route("/teams/{team}/history", get(feed::team_history))
        .route("/persons/{person}/history", get(feed::person_history))
        .route("/subscriptions/{id}", get(feed::get_subscription))
        .route("/repos/{repo}/ancestry", get(repos::ancestry))
        .route("/repos/{repo}/branches/{branch}/merged", get(repos::merged))
        .route(
            "/repos/{repo}/branches/{branch}/merged-into/{target}",
            get(repos::merged_into),
        )
        .route(
            "/repos/{repo}/branches/{branch}/history",
            get(repos::branch_history),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            state.follower.clone(),
            follow::min_revision,
        ))
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::clone(&policy),
            access::require_reader,
        ));
    let ops = Router::new()
        .route("/health", get(handlers::health))
        .route("/metrics", get(handlers::metrics))
        .route("/openapi.json", get(handlers::openapi))
        .merge(leader::routes(state.leader.clone()))
        .route_layer(axum::middleware::from_fn_with_state(
            policy,
            access::require_address,
        ));
    let router = finish(
        writes.merge(reads).merge(ops).with_state(state.clone()),
        tracker.clone(),
    );
    fast::FastPath::new(state, tracker, router)
}

/// The directory's stores as a follower sees them: one change log shared by the graph store
/// and the commit graphs.
struct DirectoryReplica {
    store: Arc<GraphStore>,
    commits: Arc<CommitGraphs>,
}

impl Replica for DirectoryReplica {
    fn change_log(&self) -> &Arc<engine::ChangeLog> {
        self.store.change_log()
    }

    fn follow(&self, events: &[(u64, Vec<u8>)]) -> Result<(), ReplicaError> {
        let followed = self.store.follow(events)?;
        if let Some((revision, error)) = &followed.refused {
            // Memory differed from the engine; the reload put it right.
            tracing::warn!(revision, %error, "a followed event could not be applied in memory: its namespace was reloaded");
        }
        self.commits.follow(events);
        Ok(())
    }

    fn forget(&self) -> Result<(), ReplicaError> {
        self.store.reload_all()?;
        self.commits.unload_all();
        Ok(())
    }

    fn take_over(&self) -> Result<(), ReplicaError> {
        let refusing = self.store.take_over();
        if refusing > 0 {
            tracing::warn!(
                namespaces = refusing,
                "namespaces still refuse writes after the takeover"
            );
        }
        Ok(())
    }
}
