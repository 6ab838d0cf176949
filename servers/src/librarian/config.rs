//! The librarian's configuration file and flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use blobstore::{BlobBackend, LocalFsBackend};
use engine::{Backend, PostgresConfig};
use objectstore::{Backends, MigratingBackend, ObjectStoreConfig, Protocol};
use serde::{Deserialize, Serialize};

use crate::common::config::ConfigError;
use crate::common::ServerConfig;

/// The librarian's TOML file: `[server]` (see [`ServerConfig`]), `[store]` and, when blob
/// bytes live on an object store, `[object_store]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LibrarianConfig {
    /// Listening, access and limits. The default address is `127.0.0.1:8081`.
    pub server: ServerConfig,
    /// The blob store.
    pub store: StoreConfig,
    /// Where blob bytes above the inline threshold go: an OpenStack Swift or S3-compatible
    /// object store (see [`ObjectStoreConfig`] for its fields). Default: none, the blob files
    /// stay under `store.data_dir` on the local filesystem.
    pub object_store: Option<ObjectStoreConfig>,
}

impl Default for LibrarianConfig {
    fn default() -> Self {
        LibrarianConfig {
            server: ServerConfig {
                listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
                ..ServerConfig::default()
            },
            store: StoreConfig::default(),
            object_store: None,
        }
    }
}

/// The `[store]` table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// The metadata engine. Default: `rocksdb`. With `postgres` (several instances on one
    /// database), `[store.postgres]`, `[object_store]` and `token_secret` are required.
    pub backend: Backend,
    /// The data directory: metadata under `meta/`, blob files under `blobs/` and `tmp/`.
    /// Default: `data/librarian`.
    pub data_dir: PathBuf,
    /// Keep SHA-1 and MD5 of every blob besides BLAKE3 and SHA-256. Default: true (archive
    /// indexes still publish them).
    pub keep_sha1_md5: bool,
    /// Seconds an unreferenced blob is kept before GC collects it. Default: 86400.
    pub grace_secs: u64,
    /// Seconds past its expiry before a file loses its content link. Default: 604800.
    pub expiry_grace_secs: u64,
    /// The token secret, 64 hex digits. Default: a random secret kept in
    /// `DATA_DIR/token-secret`, created on first start.
    pub token_secret: Option<String>,
    /// The previous token secret, still accepted during a rotation.
    pub previous_token_secret: Option<String>,
    /// Seconds between background GC passes of `serve` (0 disables). Default: 300.
    pub gc_interval_secs: u64,
    /// Bytes per second the online scrub of `serve` reads to rehash blobs (0 disables).
    /// Default: 16 MiB/s.
    pub scrub_bytes_per_sec: u64,
    /// Seconds from the start of one scrub pass (every blob rehashed once) to the start of
    /// the next. Default: 604800 (a week).
    pub scrub_period_secs: u64,
    /// Memory for the hot-file cache: records and content of small (inline) files that were
    /// downloaded, answered without a store call (0 disables). Default: 64 MiB.
    pub hot_cache_bytes: u64,
    /// The database of the `postgres` backend (table `[store.postgres]`: `url`, `schema`,
    /// `pool_idle`, `retry_ms`; see [`PostgresConfig`]). Required by that backend, ignored by
    /// the others.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub postgres: Option<PostgresConfig>,
    /// Whether writes record their change-feed events; only the hidden
    /// `--bench-no-change-feed` flag turns it off, to measure what the feed costs (see
    /// [`blobstore::StoreBuilder::change_feed`]). Not a setting of the file.
    #[serde(skip, default = "yes")]
    pub change_feed: bool,
    /// Whether opening may upgrade a store of an older format; `None` leaves it to the
    /// backend ([`blobstore::StoreBuilder::upgrade_format`]). `librarian upgrade-store` sets
    /// it. Not a setting of the file.
    #[serde(skip)]
    pub upgrade_format: Option<bool>,
}

fn yes() -> bool {
    true
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            backend: Backend::Rocksdb,
            data_dir: PathBuf::from("data/librarian"),
            keep_sha1_md5: true,
            grace_secs: blobstore::DEFAULT_GRACE.as_secs(),
            expiry_grace_secs: blobstore::DEFAULT_EXPIRY_GRACE.as_secs(),
            token_secret: None,
            previous_token_secret: None,
            gc_interval_secs: 300,
            scrub_bytes_per_sec: super::scrub::DEFAULT_SCRUB_BYTES_PER_SEC,
            scrub_period_secs: super::scrub::DEFAULT_SCRUB_PERIOD_SECS,
            hot_cache_bytes: blobstore::DEFAULT_HOT_CACHE_BYTES,
            postgres: None,
            change_feed: true,
            upgrade_format: None,
        }
    }
}

/// Store flags shared by every subcommand.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct StoreFlags {
    /// The data directory (overrides `store.data_dir`).
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
    /// The metadata engine: rocksdb, sled, memory or postgres (overrides `store.backend`;
    /// postgres needs `[store.postgres]` in the file).
    #[arg(long, global = true)]
    pub backend: Option<Backend>,
    /// The object store's secret: the Swift key or the S3 secret key (overrides the one in
    /// `[object_store]`, so that the file need not hold it).
    #[arg(
        long,
        global = true,
        env = "LIBRARIAN_OBJECT_STORE_SECRET",
        hide_env_values = true,
        value_name = "SECRET"
    )]
    pub object_store_secret: Option<String>,
    /// Writes record no change-feed events (benches/servers/feed-watch.sh compares the write
    /// rate with and without them). Hidden: a store run this way leaves gaps in its feed.
    #[arg(long, global = true, hide = true)]
    pub bench_no_change_feed: bool,
}

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The metadata engine could not be opened (another process holds its lock, say).
    #[error("cannot open the metadata engine under {path}: {source}")]
    Engine {
        /// The engine's directory.
        path: PathBuf,
        /// The cause.
        source: engine::Error,
    },
    /// The PostgreSQL engine could not be opened: a wrong host, database or user, a schema
    /// of a newer version, an unreachable server.
    #[error(
        "cannot open the metadata engine on PostgreSQL (check [store.postgres] url and \
         schema): {source}"
    )]
    Postgres {
        /// The cause (it names the hosts, database and schema, never a password).
        source: engine::Error,
    },
    /// The object-store backend could not be set up (invalid settings, spool or cache
    /// directory).
    #[error("cannot set up the object store: {0}")]
    ObjectStore(#[from] objectstore::Error),
    /// The blob store could not be opened.
    #[error("cannot open the blob store: {0}")]
    Store(#[from] blobstore::Error),
    /// `librarian upgrade-store` on a shared database while an instance holds the store's
    /// lease.
    #[error(
        "another instance is the writer of this store (lease \"librarian\"): stop every \
         instance to run `librarian upgrade-store`"
    )]
    NotWriter,
    /// The store's lease could not be taken or given back.
    #[error("the store's lease: {0}")]
    Lease(#[source] engine::Error),
    /// A directory could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// A store opened from a [`LibrarianConfig`], with handles on its object store if any.
#[derive(Debug)]
#[non_exhaustive]
pub struct OpenedStore {
    /// The blob store.
    pub store: blobstore::Store,
    /// The object-store backend and its read cache, when `[object_store]` is configured:
    /// `/health` probes it.
    pub object_store: Option<Backends>,
}

fn parse_secret(hex_text: &str, what: &str) -> Result<[u8; 32], ConfigError> {
    hex::decode(hex_text.trim())
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| ConfigError::Invalid {
            reason: format!("{what} must be 64 hex digits"),
        })
}

impl StoreConfig {
    /// Applies the flags over the file's settings.
    pub fn apply_flags(&mut self, flags: &StoreFlags) {
        if let Some(dir) = &flags.data_dir {
            self.data_dir = dir.clone();
        }
        if let Some(backend) = flags.backend {
            self.backend = backend;
        }
        if flags.bench_no_change_feed {
            self.change_feed = false;
        }
    }

    /// The token secrets: the configured ones, or a random secret kept in the data directory.
    ///
    /// # Errors
    /// A malformed secret, or an I/O error on the secret file.
    pub fn token_secrets(&self) -> Result<([u8; 32], Option<[u8; 32]>), ConfigError> {
        let previous = self
            .previous_token_secret
            .as_deref()
            .map(|s| parse_secret(s, "store.previous_token_secret"))
            .transpose()?;
        if let Some(current) = &self.token_secret {
            return Ok((parse_secret(current, "store.token_secret")?, previous));
        }
        let path = self.data_dir.join("token-secret");
        let read = |path: &Path| -> Result<[u8; 32], ConfigError> {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_path_buf(),
                source,
            })?;
            parse_secret(&text, "the token-secret file")
        };
        if path.exists() {
            return Ok((read(&path)?, previous));
        }
        let secret: [u8; 32] = rand::random();
        let io_error = |source| ConfigError::Read {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(&self.data_dir).map_err(io_error)?;
        write_private(&path, hex::encode(secret).as_bytes()).map_err(io_error)?;
        Ok((secret, previous))
    }

    /// The metadata engine: `backend` under `DATA_DIR/meta`, or on PostgreSQL the database of
    /// `[store.postgres]`.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] for the `postgres` backend without `[store.postgres]`.
    pub fn engine_config(&self) -> Result<engine::EngineConfig, ConfigError> {
        crate::common::config::engine_config(
            self.backend,
            &self.data_dir.join("meta"),
            self.postgres.as_ref(),
        )
    }

    fn open_engine(&self, keyspaces: &[&str]) -> Result<Arc<dyn engine::Engine>, OpenError> {
        self.engine_config()?
            .open(keyspaces)
            .map_err(|source| match self.backend {
                Backend::Postgres => OpenError::Postgres { source },
                _ => OpenError::Engine {
                    path: self.data_dir.join("meta"),
                    source,
                },
            })
    }

    /// The engine with the blob store's and the object store's keyspaces.
    pub(crate) fn open_engine_for_object_store(
        &self,
    ) -> Result<Arc<dyn engine::Engine>, OpenError> {
        self.open_engine(&object_store_keyspaces())
    }
}

/// The keyspaces of a store whose blobs live on an object store.
fn object_store_keyspaces() -> Vec<&'static str> {
    blobstore::KEYSPACES
        .iter()
        .chain(objectstore::KEYSPACES)
        .copied()
        .collect()
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

impl LibrarianConfig {
    /// Reads the file (or the defaults when `path` is `None`).
    ///
    /// # Errors
    /// As for [`crate::common::config::load_toml`].
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        crate::common::config::load_toml(path)
    }

    /// Applies the store flags over the file's settings.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] when `--object-store-secret` is given without an
    /// `[object_store]` section.
    pub fn apply_flags(&mut self, flags: &StoreFlags) -> Result<(), ConfigError> {
        self.store.apply_flags(flags);
        if let Some(secret) = &flags.object_store_secret {
            let Some(object_store) = &mut self.object_store else {
                return Err(ConfigError::Invalid {
                    reason: "--object-store-secret needs an [object_store] section".to_string(),
                });
            };
            match &mut object_store.protocol {
                Protocol::Swift { key, .. } => key.clone_from(secret),
                Protocol::S3 { secret_key, .. } => secret_key.clone_from(secret),
                _ => {
                    return Err(ConfigError::Invalid {
                        reason: "--object-store-secret does not apply to this protocol".to_string(),
                    })
                }
            }
        }
        Ok(())
    }

    /// Checks what several instances on one database need: the blob bytes on a shared
    /// object store (a local blob directory is one machine's) and one token secret for all
    /// (a secret made on first start would differ per instance, so a token issued by one
    /// would be refused by the others).
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the missing setting, with `store.backend = "postgres"`.
    pub fn check_multi_instance(&self) -> Result<(), ConfigError> {
        if self.store.backend != Backend::Postgres {
            return Ok(());
        }
        if self.object_store.is_none() {
            return Err(ConfigError::Invalid {
                reason: format!(
                    "store.backend = \"postgres\" runs several instances on one database, and \
                     they need the blob bytes on a shared store: configure [object_store] \
                     (blob files under store.data_dir = {} are local to one machine)",
                    self.store.data_dir.display()
                ),
            });
        }
        if self.store.token_secret.is_none() {
            return Err(ConfigError::Invalid {
                reason: "store.backend = \"postgres\" runs several instances, which must sign \
                         download tokens with one secret: set store.token_secret (64 hex \
                         digits, the same on every instance)"
                    .to_string(),
            });
        }
        Ok(())
    }

    /// Opens the store these settings describe.
    ///
    /// Without `[object_store]` blob files live under `store.data_dir` (the default). With
    /// it, the engine also holds the object store's keyspaces, and new blobs above the inline
    /// threshold go to the object store (through its read cache when one is configured);
    /// blob files written before it was configured stay readable from the data directory
    /// until `librarian migrate-blobs` moves them ([`MigratingBackend`]: the local copy is
    /// tried first, then the object store).
    ///
    /// Open and drop it outside async code: the object store's clients run small runtimes
    /// of their own.
    ///
    /// # Errors
    /// A configuration error (with `store.backend = "postgres"`: no `[store.postgres]`, no
    /// `[object_store]`, no `store.token_secret`), the engine's (another process holds its
    /// lock; on PostgreSQL a wrong database or a schema of a newer version), the object
    /// store's set-up error, or the store's.
    pub fn open_store(&self) -> Result<OpenedStore, OpenError> {
        self.check_multi_instance()?;
        let store = &self.store;
        let (current, previous) = store.token_secrets()?;
        let (engine, backend, object_store) = match &self.object_store {
            None => (store.open_engine(blobstore::KEYSPACES)?, None, None),
            Some(config) => {
                let engine = store.open_engine_for_object_store()?;
                let backends = objectstore::open_backend(config, Arc::clone(&engine))?;
                let local = Arc::new(LocalFsBackend::open(&store.data_dir)?);
                let backend: Arc<dyn BlobBackend> = Arc::new(MigratingBackend::new(
                    Arc::clone(&backends.blob_backend),
                    local,
                ));
                (engine, Some(backend), Some(backends))
            }
        };
        let mut builder =
            blobstore::StoreBuilder::with_engine(Arc::clone(&engine), &store.data_dir)
                .keep_sha1_md5(store.keep_sha1_md5)
                .grace(Duration::from_secs(store.grace_secs))
                .expiry_grace(Duration::from_secs(store.expiry_grace_secs))
                .hot_cache_bytes(store.hot_cache_bytes)
                .change_feed(store.change_feed)
                .token_secrets(current, previous);
        if let Some(backend) = backend {
            builder = builder.backend(backend);
        }
        let opened = match store.upgrade_format {
            Some(true) => super::open_upgrading(&engine, builder),
            Some(false) => builder
                .upgrade_format(false)
                .open()
                .map_err(OpenError::from),
            None => builder.open().map_err(OpenError::from),
        };
        Ok(OpenedStore {
            store: opened?,
            object_store,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_secret_is_created_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let config = StoreConfig {
            data_dir: dir.path().join("d"),
            ..StoreConfig::default()
        };
        let (first, previous) = config.token_secrets().unwrap();
        assert!(previous.is_none());
        let (again, _) = config.token_secrets().unwrap();
        assert_eq!(first, again);
        let bad = StoreConfig {
            token_secret: Some("abc".into()),
            ..config
        };
        assert!(bad.token_secrets().is_err());
    }

    #[test]
    fn parses_a_file() {
        let config: LibrarianConfig = toml::from_str(
            r#"
            [server]
            dev = true
            [store]
            backend = "memory"
            keep_sha1_md5 = false
            "#,
        )
        .unwrap();
        assert!(config.server.dev);
        assert_eq!(config.store.backend, Backend::Memory);
        assert!(!config.store.keep_sha1_md5);
        assert_eq!(LibrarianConfig::default().server.listen.port(), 8081);
    }

    #[test]
    fn the_object_store_section_is_optional_and_its_secret_can_come_from_a_flag() {
        assert!(LibrarianConfig::default().object_store.is_none());
        let mut plain = LibrarianConfig::default();
        let secret = StoreFlags {
            object_store_secret: Some("from-env".into()),
            ..StoreFlags::default()
        };
        assert!(plain.apply_flags(&secret).is_err(), "no [object_store]");

        let mut config: LibrarianConfig = toml::from_str(
            r#"
            [store]
            data_dir = "/srv/librarian"
            [object_store]
            protocol = { type = "swift", auth_url = "http://127.0.0.1:8080/auth/v1.0", user = "a:b", key = "in-file" }
            container_prefix = "librarian"
            [object_store.cache]
            dir = "/srv/cache"
            capacity_bytes = 1000
            "#,
        )
        .unwrap();
        let object_store = config.object_store.as_ref().unwrap();
        assert_eq!(object_store.container_prefix, "librarian");
        assert_eq!(
            object_store.cache.as_ref().map(|c| c.capacity_bytes),
            Some(1000)
        );
        config.apply_flags(&secret).unwrap();
        assert!(matches!(
            &config.object_store.as_ref().unwrap().protocol,
            Protocol::Swift { key, .. } if key == "from-env"
        ));
        assert!(toml::from_str::<LibrarianConfig>("[object_store]\nbogus = 1").is_err());
    }

    #[test]
    fn opens_a_local_store_without_an_object_store() {
        let dir = tempfile::tempdir().unwrap();
        let config = LibrarianConfig {
            store: StoreConfig {
                backend: Backend::Memory,
                data_dir: dir.path().join("d"),
                ..StoreConfig::default()
            },
            ..LibrarianConfig::default()
        };
        let opened = config.open_store().unwrap();
        assert!(opened.object_store.is_none());
        let bucket = blobstore::BucketName::new("b").unwrap();
        let bytes = vec![7u8; 100_000];
        let record = opened
            .store
            .upload_bytes(blobstore::UploadRequest::new(bucket, "f"), &bytes, "tester")
            .unwrap()
            .record;
        let local = LocalFsBackend::open(dir.path().join("d")).unwrap();
        assert!(local.blob_path(&record.blake3).is_file());
    }

    #[test]
    fn postgres_needs_its_table_a_shared_object_store_and_one_token_secret() {
        let refusal = |text: &str| {
            let config: LibrarianConfig = toml::from_str(text).unwrap();
            match config.open_store() {
                Err(error) => error.to_string(),
                Ok(_) => panic!("opened: {text}"),
            }
        };
        let object_store = r#"
            [object_store]
            protocol = { type = "swift", auth_url = "http://127.0.0.1:9/auth/v1.0", user = "a:b", key = "k" }
        "#;
        let error =
            refusal("[store]\nbackend = \"postgres\"\n[store.postgres]\nurl = \"host=127.0.0.1\"");
        assert!(error.contains("configure [object_store]"), "{error}");
        let error = refusal(&format!(
            "[store]\nbackend = \"postgres\"\n[store.postgres]\nurl = \"host=127.0.0.1\"\n{object_store}"
        ));
        assert!(error.contains("set store.token_secret"), "{error}");
        let error = refusal(&format!(
            "[store]\nbackend = \"postgres\"\ntoken_secret = \"{}\"\n{object_store}",
            "ab".repeat(32)
        ));
        assert!(error.contains("needs a [store.postgres] table"), "{error}");
        let config: LibrarianConfig = toml::from_str(
            "[store]\nbackend = \"postgres\"\n[store.postgres]\nurl = \"host=db1,db2 dbname=lib\"\nschema = \"librarian\"",
        )
        .unwrap();
        let engine = config.store.engine_config().unwrap();
        assert_eq!(
            engine.postgres.map(|p| p.schema).as_deref(),
            Some("librarian")
        );
    }
}
