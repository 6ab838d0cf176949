//! The librarian's configuration file and flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use engine::Backend;
use serde::{Deserialize, Serialize};

use crate::common::config::ConfigError;
use crate::common::ServerConfig;

/// The librarian's TOML file: `[server]` (see [`ServerConfig`]) and `[store]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LibrarianConfig {
    /// Listening, access and limits. The default address is `127.0.0.1:8081`.
    pub server: ServerConfig,
    /// The blob store.
    pub store: StoreConfig,
}

impl Default for LibrarianConfig {
    fn default() -> Self {
        LibrarianConfig {
            server: ServerConfig {
                listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
                ..ServerConfig::default()
            },
            store: StoreConfig::default(),
        }
    }
}

/// The `[store]` table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// The metadata engine. Default: `rocksdb`.
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
        }
    }
}

/// Store flags shared by every subcommand.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct StoreFlags {
    /// The data directory (overrides `store.data_dir`).
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
    /// The metadata engine: rocksdb, sled or memory (overrides `store.backend`).
    #[arg(long, global = true)]
    pub backend: Option<Backend>,
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

    /// Opens the store these settings describe.
    ///
    /// # Errors
    /// A configuration error, or the store's error (another process holds its lock, say).
    pub fn open(&self) -> anyhow::Result<blobstore::Store> {
        let (current, previous) = self.token_secrets()?;
        let engine = engine::EngineConfig::new(self.backend, self.data_dir.join("meta"));
        let store = blobstore::StoreBuilder::new(engine, &self.data_dir)
            .keep_sha1_md5(self.keep_sha1_md5)
            .grace(Duration::from_secs(self.grace_secs))
            .expiry_grace(Duration::from_secs(self.expiry_grace_secs))
            .token_secrets(current, previous)
            .open()?;
        Ok(store)
    }
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
}
