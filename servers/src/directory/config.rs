//! The directory's configuration file and flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use engine::{Backend, PostgresConfig};
use serde::{Deserialize, Serialize};

use crate::common::config::ConfigError;
use crate::common::ServerConfig;

/// The directory's RocksDB block cache (the engine's default is 256 MiB). The directory
/// answers from memory; RocksDB is read in full once at open, which filled the cache with
/// every block it read (31 MB of the 400 MB resident after a restart at 530,000 nodes, and up
/// to the whole cache at ten times that size), then only by the change feed and history.
/// Index and filter blocks live in this cache too.
pub const DIRECTORY_BLOCK_CACHE_BYTES: usize = 16 << 20;

/// The directory's TOML file: `[server]` (see [`ServerConfig`]) and `[store]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DirectoryConfig {
    /// Listening, access and limits. The default address is `127.0.0.1:8082`.
    pub server: ServerConfig,
    /// The graph store.
    pub store: GraphConfig,
}

impl Default for DirectoryConfig {
    fn default() -> Self {
        DirectoryConfig {
            server: ServerConfig {
                listen: SocketAddr::from(([127, 0, 0, 1], 8082)),
                ..ServerConfig::default()
            },
            store: GraphConfig::default(),
        }
    }
}

impl DirectoryConfig {
    /// Reads the file (or the defaults when `path` is `None`).
    ///
    /// # Errors
    /// As for [`crate::common::config::load_toml`].
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        crate::common::config::load_toml(path)
    }
}

/// The `[store]` table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GraphConfig {
    /// The engine. Default: `rocksdb`.
    pub backend: Backend,
    /// The data directory (unused by the `postgres` backend). Default: `data/directory`.
    pub data_dir: PathBuf,
    /// How long the change feed keeps events, in days; older ones are pruned every hour.
    /// Default: 400.
    pub feed_retention_days: u64,
    /// The database of the `postgres` backend (table `[store.postgres]`: `url`, `schema`,
    /// `pool_idle`, `retry_ms`; see [`PostgresConfig`]). Required by that backend, ignored by
    /// the others.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub postgres: Option<PostgresConfig>,
    /// The most edges one `POST /import/graphs/{graph}` accepts; more is refused with 413.
    /// Default: 5,000,000.
    pub max_import_edges: usize,
}

impl Default for GraphConfig {
    fn default() -> Self {
        GraphConfig {
            backend: Backend::Rocksdb,
            data_dir: PathBuf::from("data/directory"),
            feed_retention_days: 400,
            postgres: None,
            max_import_edges: super::DEFAULT_MAX_IMPORT_EDGES,
        }
    }
}

/// Store flags shared by every subcommand.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct GraphFlags {
    /// The data directory (overrides `store.data_dir`).
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
    /// The engine: rocksdb, sled, memory or postgres (overrides `store.backend`; postgres
    /// needs `[store.postgres]` in the file).
    #[arg(long, global = true)]
    pub backend: Option<Backend>,
}

impl GraphConfig {
    /// Applies the flags over the file's settings.
    pub fn apply_flags(&mut self, flags: &GraphFlags) {
        if let Some(dir) = &flags.data_dir {
            self.data_dir = dir.clone();
        }
        if let Some(backend) = flags.backend {
            self.backend = backend;
        }
    }

    /// The engine these settings describe.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] for the `postgres` backend without `[store.postgres]`.
    pub fn engine_config(&self) -> Result<engine::EngineConfig, ConfigError> {
        let mut config = crate::common::config::engine_config(
            self.backend,
            &self.data_dir,
            self.postgres.as_ref(),
        )?;
        config.block_cache_bytes = DIRECTORY_BLOCK_CACHE_BYTES;
        Ok(config)
    }

    /// Opens the graph store and the commit graphs these settings describe, over one engine.
    ///
    /// # Errors
    /// The settings' error, the engine's (on PostgreSQL, naming `[store.postgres]`: a wrong
    /// database, a schema of a newer version) or the stores'.
    pub fn open(&self) -> Result<(graphdb::GraphStore, commitgraph::CommitGraphs), OpenError> {
        let engine =
            self.engine_config()?
                .open(&keyspaces())
                .map_err(|source| OpenError::Engine {
                    context: crate::common::config::engine_open_context(
                        self.backend,
                        &self.data_dir,
                    ),
                    source,
                })?;
        let graph = graphdb::GraphStore::builder(Arc::clone(&engine))
            .clock(Arc::new(graphdb::SystemClock))
            .retention(Duration::from_secs(
                self.feed_retention_days.saturating_mul(86_400),
            ))
            .open()?;
        let commits = open_commit_graphs(&graph, engine)?;
        Ok((graph, commits))
    }
}

/// Why the directory's stores could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The settings are unusable (the `postgres` backend without `[store.postgres]`).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The engine could not be opened; `context` names the data directory or the PostgreSQL
    /// settings to check.
    #[error("{context}: {source}")]
    Engine {
        /// What to check.
        context: String,
        /// The engine's error.
        source: engine::Error,
    },
    /// The graph store could not load.
    #[error("opening the graph store: {0}")]
    Graph(#[from] graphdb::Error),
    /// The commit graphs could not load.
    #[error("opening the commit graphs: {0}")]
    Commits(#[from] commitgraph::CommitError),
}

/// The directory's commit graphs over `engine` (opened with [`keyspaces`]), writing their
/// events into the directory's change log. Call it once per engine: a change log keeps its
/// revision sequencer in memory.
///
/// # Errors
/// The engine's error (a missing keyspace, a failed flush).
pub fn open_commit_graphs(
    graph: &graphdb::GraphStore,
    engine: Arc<dyn engine::Engine>,
) -> Result<commitgraph::CommitGraphs, commitgraph::CommitError> {
    // The graph store owns the directory's one change log: teams, package sets and
    // repositories take their revisions from the same sequencer.
    commitgraph::CommitGraphs::open(engine, Arc::clone(graph.change_log()))
}

/// The keyspaces of the directory's engine: the graph store's (with the change log's) and
/// the commit graphs'.
pub fn keyspaces() -> Vec<&'static str> {
    let mut all = graphdb::KEYSPACES.to_vec();
    all.extend_from_slice(commitgraph::KEYSPACES);
    all
}
