//! Choosing and opening a backend at run time.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::{Engine, Error, MemEngine, Result};

/// The storage backends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// RocksDB (cargo feature `rocksdb`, the default).
    Rocksdb,
    /// sled 0.34 (cargo feature `sled`).
    Sled,
    /// In memory; nothing survives the process.
    Memory,
    /// PostgreSQL over the network (cargo feature `postgres`); see [`PostgresConfig`].
    Postgres,
}

impl Backend {
    /// The backends compiled into this build, the default first.
    pub fn compiled() -> Vec<Backend> {
        let mut backends = Vec::new();
        if cfg!(feature = "rocksdb") {
            backends.push(Backend::Rocksdb);
        }
        if cfg!(feature = "sled") {
            backends.push(Backend::Sled);
        }
        backends.push(Backend::Memory);
        if cfg!(feature = "postgres") {
            backends.push(Backend::Postgres);
        }
        backends
    }

    /// The name used in configuration files.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Rocksdb => "rocksdb",
            Backend::Sled => "sled",
            Backend::Memory => "memory",
            Backend::Postgres => "postgres",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Backend {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "rocksdb" => Ok(Backend::Rocksdb),
            "sled" => Ok(Backend::Sled),
            "memory" => Ok(Backend::Memory),
            "postgres" => Ok(Backend::Postgres),
            other => Err(Error::Config {
                reason: format!(
                    "unknown backend {other:?}; expected rocksdb, sled, memory or postgres"
                ),
            }),
        }
    }
}

/// Which backend to open, and where.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineConfig {
    /// The backend. Default: RocksDB.
    pub backend: Backend,
    /// The directory of the store (ignored by the memory and PostgreSQL backends).
    #[serde(default)]
    pub path: PathBuf,
    /// RocksDB's block cache in bytes. Default: 256 MiB.
    #[serde(default = "default_block_cache_bytes")]
    pub block_cache_bytes: usize,
    /// Where the PostgreSQL backend keeps the store (required by it, ignored by the others).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<PostgresConfig>,
}

/// The PostgreSQL backend's settings (configuration table `[postgres]` beside `backend =
/// "postgres"`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostgresConfig {
    /// A libpq connection string, key-value (`host=db1,db2 port=5432 user=lpstore
    /// dbname=lpstore target_session_attrs=read-write`) or URL form. Several hosts are tried
    /// in turn; with `target_session_attrs=read-write` only a primary is accepted, so that
    /// after a failover the engine reconnects to the promoted standby.
    pub url: String,
    /// The SQL schema that holds the store's tables, created when missing; several stores
    /// can share a database under different schemas. Default: `lpstore`.
    #[serde(default = "default_schema")]
    pub schema: String,
    /// Idle connections kept for reuse; more are opened while more threads need one.
    /// Default: 8.
    #[serde(default = "default_pool_idle")]
    pub pool_idle: usize,
    /// How long a write, read or flush keeps reconnecting and retrying after the connection
    /// was lost (a server restart, a failover, a killed backend) before it fails, in
    /// milliseconds. Default: 15,000.
    #[serde(default = "default_retry_ms")]
    pub retry_ms: u64,
}

fn default_schema() -> String {
    "lpstore".to_string()
}

fn default_pool_idle() -> usize {
    8
}

fn default_retry_ms() -> u64 {
    15_000
}

impl PostgresConfig {
    /// The store in schema `lpstore` of the database that `url` names, with the defaults.
    pub fn new(url: impl Into<String>) -> Self {
        PostgresConfig {
            url: url.into(),
            schema: default_schema(),
            pool_idle: default_pool_idle(),
            retry_ms: default_retry_ms(),
        }
    }

    /// The same store under another schema.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }
}

fn default_block_cache_bytes() -> usize {
    256 << 20
}

impl EngineConfig {
    /// RocksDB at `path`.
    pub fn rocksdb(path: impl Into<PathBuf>) -> Self {
        EngineConfig {
            backend: Backend::Rocksdb,
            path: path.into(),
            block_cache_bytes: default_block_cache_bytes(),
            postgres: None,
        }
    }

    /// PostgreSQL with the given settings.
    pub fn postgres(postgres: PostgresConfig) -> Self {
        EngineConfig {
            backend: Backend::Postgres,
            postgres: Some(postgres),
            ..EngineConfig::rocksdb(PathBuf::new())
        }
    }

    /// sled at `path`.
    pub fn sled(path: impl Into<PathBuf>) -> Self {
        EngineConfig {
            backend: Backend::Sled,
            ..EngineConfig::rocksdb(path)
        }
    }

    /// A fresh in-memory store.
    pub fn memory() -> Self {
        EngineConfig {
            backend: Backend::Memory,
            ..EngineConfig::rocksdb(PathBuf::new())
        }
    }

    /// `backend` at `path`.
    pub fn new(backend: Backend, path: impl Into<PathBuf>) -> Self {
        EngineConfig {
            backend,
            ..EngineConfig::rocksdb(path)
        }
    }

    /// Opens (creating if needed) the store with the given keyspaces. Keyspaces that exist on
    /// disk (or in the database) but are not named stay untouched.
    ///
    /// # Errors
    /// [`Error::Config`] when the backend was not compiled in; the backend's error when the
    /// store cannot be opened (for example, another process holds its lock).
    pub fn open(&self, keyspaces: &[&str]) -> Result<Arc<dyn Engine>> {
        match self.backend {
            Backend::Memory => Ok(Arc::new(MemEngine::new(keyspaces))),
            #[cfg(feature = "rocksdb")]
            Backend::Rocksdb => Ok(Arc::new(crate::RocksEngine::open(self, keyspaces)?)),
            #[cfg(feature = "sled")]
            Backend::Sled => Ok(Arc::new(crate::SledEngine::open(&self.path, keyspaces)?)),
            #[cfg(feature = "postgres")]
            Backend::Postgres => match &self.postgres {
                Some(postgres) => Ok(Arc::new(crate::PgEngine::open(postgres, keyspaces)?)),
                None => Err(Error::Config {
                    reason: "backend postgres needs its settings ([postgres] url = ...)"
                        .to_string(),
                }),
            },
            #[allow(unreachable_patterns)]
            other => Err(Error::Config {
                reason: format!(
                    "backend {other} is not compiled into this build (cargo feature {other})"
                ),
            }),
        }
    }
}

/// The poisoned state shared by the backends: the first write or sync failure is kept, and
/// every later write is refused with it.
#[derive(Debug, Default)]
pub(crate) struct Poison {
    cause: std::sync::Mutex<Option<String>>,
}

impl Poison {
    pub(crate) fn check(&self, backend: Backend, path: &std::path::Path) -> Result<()> {
        let cause = self.cause.lock().unwrap_or_else(|e| e.into_inner());
        match &*cause {
            None => Ok(()),
            Some(cause) => Err(Error::Poisoned {
                backend,
                path: path.to_path_buf(),
                cause: cause.clone(),
            }),
        }
    }

    pub(crate) fn set(&self, cause: &dyn fmt::Display) {
        let mut slot = self.cause.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            *slot = Some(cause.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_is_named_and_needs_its_settings() {
        assert_eq!("postgres".parse::<Backend>().unwrap(), Backend::Postgres);
        assert_eq!(Backend::Postgres.to_string(), "postgres");
        let error = EngineConfig::new(Backend::Postgres, "ignored")
            .open(&["a"])
            .unwrap_err();
        let expected = if cfg!(feature = "postgres") {
            "needs its settings"
        } else {
            "not compiled into this build"
        };
        assert!(error.to_string().contains(expected), "{error}");
        assert_eq!(
            Backend::compiled().contains(&Backend::Postgres),
            cfg!(feature = "postgres")
        );
    }
}
