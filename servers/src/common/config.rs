//! The settings every service shares: where to listen, who may call, and the limits.
//!
//! A service's TOML file has a `[server]` table of these (see [`ServerConfig`]) beside its own
//! tables; command-line flags ([`ServerFlags`]) override the file, and every setting has a
//! default that works on a developer's machine.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::access::Credential;

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this service.
    #[error("invalid configuration file {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parse error.
        source: Box<toml::de::Error>,
    },
    /// The settings contradict each other or are unsafe.
    #[error("invalid configuration: {reason}")]
    Invalid {
        /// What is wrong.
        reason: String,
    },
}

/// Limits that protect a server from large, slow or too many requests.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// The largest streamed request body (an upload or an import). Default: 4 GiB.
    pub max_body_bytes: u64,
    /// The largest JSON request body. Default: 1 MiB.
    pub max_json_bytes: usize,
    /// The largest request head (request line plus headers); larger gets 431. Default: 16 KiB.
    pub max_header_bytes: usize,
    /// Seconds a client has to send a complete request head. Default: 10.
    pub header_read_timeout_secs: u64,
    /// Seconds a connection may go without reading or writing a byte before it is closed
    /// (an idle keep-alive connection, a stalled upload or a client that stopped reading).
    /// Default: 60.
    pub idle_timeout_secs: u64,
    /// Seconds a streamed request body may take in total. Default: 3600.
    pub body_timeout_secs: u64,
    /// Requests handled at once; more get 503 with `Retry-After`. Default: 1024.
    pub max_concurrency: usize,
    /// Seconds in-flight requests get to finish after SIGTERM or SIGINT. Default: 30.
    pub shutdown_grace_secs: u64,
    /// Threads for short blocking store calls (lookups, small reads); streaming uploads and
    /// large downloads use Tokio's blocking pool. Default: 4; 0 sends the short calls to
    /// Tokio's blocking pool too (the fuzz targets, which build a service per input).
    pub store_threads: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 4 << 30,
            max_json_bytes: 1 << 20,
            max_header_bytes: 16 << 10,
            header_read_timeout_secs: 10,
            idle_timeout_secs: 60,
            body_timeout_secs: 3600,
            max_concurrency: 1024,
            shutdown_grace_secs: 30,
            store_threads: 4,
        }
    }
}

impl Limits {
    /// [`Limits::header_read_timeout_secs`] as a duration.
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_secs(self.header_read_timeout_secs)
    }

    /// [`Limits::idle_timeout_secs`] as a duration.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs)
    }

    /// [`Limits::body_timeout_secs`] as a duration.
    pub fn body_timeout(&self) -> Duration {
        Duration::from_secs(self.body_timeout_secs)
    }

    /// [`Limits::shutdown_grace_secs`] as a duration.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }
}

/// The `[server]` table: listening, access and limits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// The address to listen on. Default: `127.0.0.1:8080` (each binary sets its own port).
    pub listen: SocketAddr,
    /// Development mode: no credentials are asked for, and only loopback addresses may be
    /// bound. Default: false.
    pub dev: bool,
    /// The client networks allowed to call the routes that check addresses. Default: loopback
    /// (`127.0.0.0/8` and `::1/128`).
    pub allowed_cidrs: Vec<IpNet>,
    /// The accepted HTTP Basic credentials, passwords stored as salted hashes.
    pub credentials: Vec<Credential>,
    /// Whether read routes are open without credentials (the directory's reads; the
    /// librarian's reader routes are always open). Default: false.
    pub open_reads: bool,
    /// The users (of `credentials`) trusted to name the person they act for with
    /// `X-On-Behalf-Of`; the change feed records that person as the actor. Anyone else
    /// sending the header gets 403. Default: none.
    pub trusted_callers: Vec<String>,
    /// The hosts (`host` or `host:port`) that change-feed subscriptions may call back.
    /// Default: none (no subscription can be created).
    pub callback_hosts: Vec<String>,
    /// The proxies (CIDRs) whose word on the client's address is taken: the PROXY protocol
    /// v2 header on their connections and `X-Forwarded-For` on their requests
    /// ([`super::proxy`]). From anyone else both are ignored. Default: none.
    pub trusted_proxies: Vec<IpNet>,
    /// The limits.
    pub limits: Limits,
    /// The lease of the service's writer, in milliseconds, with several instances on one
    /// PostgreSQL store ([`super::leader`]): the leader renews it every third of this, and
    /// another instance takes over at most this long after the leader stopped renewing
    /// (at once after a graceful shutdown). Ignored by the embedded backends. Default: 3000.
    pub lease_ttl_ms: u64,
    /// How often an instance on a shared PostgreSQL store reads the change log for other
    /// instances' writes, in milliseconds ([`super::follow`]). Default: 5.
    pub follow_poll_ms: u64,
    /// How long an instance may go without reading the change log before `GET /health`
    /// reports it `stale` (its reads, from memory, may then be older). Default: 1000.
    pub max_staleness_ms: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            dev: false,
            allowed_cidrs: loopback_cidrs(),
            credentials: Vec::new(),
            open_reads: false,
            trusted_callers: Vec::new(),
            callback_hosts: Vec::new(),
            trusted_proxies: Vec::new(),
            limits: Limits::default(),
            lease_ttl_ms: 3000,
            follow_poll_ms: 5,
            max_staleness_ms: 1000,
        }
    }
}

/// `127.0.0.0/8` and `::1/128`.
pub fn loopback_cidrs() -> Vec<IpNet> {
    vec![
        "127.0.0.0/8".parse().expect("valid CIDR"),
        "::1/128".parse().expect("valid CIDR"),
    ]
}

impl ServerConfig {
    /// [`ServerConfig::lease_ttl_ms`] as a duration.
    pub fn lease_ttl(&self) -> Duration {
        Duration::from_millis(self.lease_ttl_ms)
    }

    /// How followers poll ([`ServerConfig::follow_poll_ms`], [`ServerConfig::max_staleness_ms`]).
    pub fn follow_settings(&self) -> super::follow::FollowSettings {
        super::follow::FollowSettings {
            poll: Duration::from_millis(self.follow_poll_ms),
            max_staleness: Duration::from_millis(self.max_staleness_ms),
        }
    }

    /// Applies command-line flags over the file's settings.
    pub fn apply_flags(&mut self, flags: &ServerFlags) {
        if let Some(listen) = flags.listen {
            self.listen = listen;
        }
        if flags.dev {
            self.dev = true;
        }
        if !flags.allow.is_empty() {
            self.allowed_cidrs = flags.allow.clone();
        }
        if let Some(max) = flags.max_body_bytes {
            self.limits.max_body_bytes = max;
        }
        if let Some(max) = flags.max_concurrency {
            self.limits.max_concurrency = max;
        }
        if let Some(secs) = flags.idle_timeout_secs {
            self.limits.idle_timeout_secs = secs;
        }
    }

    /// Checks that the settings are safe to serve with.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] when development mode would bind a non-loopback address,
    /// when no credentials are configured outside development mode, or when a limit is zero.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |reason: String| Err(ConfigError::Invalid { reason });
        if self.dev && !is_loopback(self.listen.ip()) {
            return invalid(format!(
                "development mode (no credentials) only binds loopback addresses, not {}",
                self.listen
            ));
        }
        if !self.dev && self.credentials.is_empty() {
            return invalid(
                "no credentials configured: add [[server.credentials]] (see `hash-password`) \
                 or run with --dev on a loopback address"
                    .to_string(),
            );
        }
        let l = &self.limits;
        if l.max_concurrency == 0 || l.idle_timeout_secs == 0 || l.header_read_timeout_secs == 0 {
            return invalid("limits must be positive".to_string());
        }
        if self.follow_poll_ms == 0 || self.follow_poll_ms * 2 > self.max_staleness_ms {
            return invalid(
                "server.follow_poll_ms must be positive and at most half of server.max_staleness_ms"
                    .to_string(),
            );
        }
        if self.lease_ttl_ms < 300 {
            return invalid("server.lease_ttl_ms must be at least 300".to_string());
        }
        if l.max_header_bytes < 8192 {
            return invalid("max_header_bytes must be at least 8192".to_string());
        }
        Ok(())
    }
}

/// The engine of a service's `[store]`: `backend` at `data_dir`, or on PostgreSQL the
/// database of `[store.postgres]`.
///
/// # Errors
/// [`ConfigError::Invalid`] for `backend = "postgres"` without `[store.postgres]`.
pub fn engine_config(
    backend: engine::Backend,
    data_dir: &std::path::Path,
    postgres: Option<&engine::PostgresConfig>,
) -> Result<engine::EngineConfig, ConfigError> {
    if backend != engine::Backend::Postgres {
        return Ok(engine::EngineConfig::new(backend, data_dir));
    }
    match postgres {
        Some(postgres) => Ok(engine::EngineConfig::postgres(postgres.clone())),
        None => Err(ConfigError::Invalid {
            reason: "store.backend = \"postgres\" needs a [store.postgres] table with the \
                     database's url (and optionally its schema)"
                .to_string(),
        }),
    }
}

/// What a failure to open a service's engine is about: the data directory, or the
/// PostgreSQL settings to check (never the connection string itself, which may hold a
/// password).
pub fn engine_open_context(backend: engine::Backend, data_dir: &std::path::Path) -> String {
    match backend {
        engine::Backend::Postgres => "cannot open the store on PostgreSQL: check \
             [store.postgres] url (host, database, user) and schema"
            .to_string(),
        backend => format!(
            "cannot open the {backend} store under {}",
            data_dir.display()
        ),
    }
}

/// Whether `ip` is a loopback address (IPv4-mapped IPv6 included).
pub fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// The flags every service's `serve` accepts.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct ServerFlags {
    /// The address to listen on (overrides `server.listen`).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Development mode: no credentials, loopback addresses only.
    #[arg(long)]
    pub dev: bool,
    /// A client network allowed to call checked routes, as CIDR; repeat for several
    /// (replaces `server.allowed_cidrs`).
    #[arg(long = "allow", value_name = "CIDR")]
    pub allow: Vec<IpNet>,
    /// The largest streamed request body in bytes (overrides `server.limits.max_body_bytes`).
    #[arg(long)]
    pub max_body_bytes: Option<u64>,
    /// Requests handled at once (overrides `server.limits.max_concurrency`).
    #[arg(long)]
    pub max_concurrency: Option<usize>,
    /// Seconds without traffic before a connection is closed.
    #[arg(long)]
    pub idle_timeout_secs: Option<u64>,
}

/// Reads a TOML configuration file into `T`; a missing `path` gives `T::default()`.
///
/// # Errors
/// [`ConfigError::Read`] or [`ConfigError::Parse`].
pub fn load_toml<T>(path: Option<&std::path::Path>) -> Result<T, ConfigError>
where
    T: for<'de> Deserialize<'de> + Default,
{
    let Some(path) = path else {
        return Ok(T::default());
    };
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|source| ConfigError::Parse {
        path: path.to_path_buf(),
        source: Box::new(source),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_loopback_and_need_credentials() {
        let config = ServerConfig::default();
        assert!(is_loopback(config.listen.ip()));
        assert!(matches!(
            config.validate(),
            Err(ConfigError::Invalid { reason }) if reason.contains("no credentials")
        ));
        let dev = ServerConfig {
            dev: true,
            ..ServerConfig::default()
        };
        assert!(dev.validate().is_ok());
    }

    #[test]
    fn dev_mode_refuses_non_loopback() {
        let config = ServerConfig {
            dev: true,
            listen: "0.0.0.0:8080".parse().unwrap(),
            ..ServerConfig::default()
        };
        assert!(matches!(
            config.validate(),
            Err(ConfigError::Invalid { reason }) if reason.contains("loopback")
        ));
        let v6 = ServerConfig {
            dev: true,
            listen: "[::1]:8080".parse().unwrap(),
            ..ServerConfig::default()
        };
        assert!(v6.validate().is_ok());
    }

    #[test]
    fn toml_and_flags_combine() {
        let text = r#"
            listen = "127.0.0.1:9000"
            allowed_cidrs = ["10.0.0.0/8"]
            [limits]
            max_concurrency = 7
        "#;
        let mut config: ServerConfig = toml::from_str(text).unwrap();
        assert_eq!(config.listen.port(), 9000);
        assert_eq!(config.limits.max_concurrency, 7);
        assert_eq!(config.limits.idle_timeout_secs, 60);
        config.apply_flags(&ServerFlags {
            listen: Some("127.0.0.1:9001".parse().unwrap()),
            max_concurrency: Some(3),
            ..ServerFlags::default()
        });
        assert_eq!(config.listen.port(), 9001);
        assert_eq!(config.limits.max_concurrency, 3);
        assert_eq!(
            config.allowed_cidrs,
            vec!["10.0.0.0/8".parse::<IpNet>().unwrap()]
        );
        assert!(toml::from_str::<ServerConfig>("bogus = 1").is_err());
    }
}
