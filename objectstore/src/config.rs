//! Configuration, as the server reads it from TOML.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// Objects per container (or bucket) before the next one is started: Swift slows down past
/// about a million objects in one container, and the site keeps 500,000.
pub const DEFAULT_OBJECTS_PER_CONTAINER: u64 = 500_000;
/// The largest object uploaded in one request; larger ones are segmented (5 GiB: the single
/// object limit of both Swift and S3).
pub const DEFAULT_LARGE_OBJECT_THRESHOLD: u64 = 5 << 30;
/// The size of one segment of a large object (Swift SLO segment, S3 multipart part).
pub const DEFAULT_SEGMENT_SIZE: u64 = 1 << 30;
/// How many segments (parts) of one large object are uploaded at a time.
pub const DEFAULT_SEGMENT_CONCURRENCY: usize = 4;
/// How long a transfer of blob bytes may make no progress before the attempt fails.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Where blob bytes go and how to reach it.
///
/// In the server's TOML:
///
/// ```toml
/// [object_store]
/// protocol = { type = "swift", auth_url = "https://swift.example/auth/v1.0", user = "librarian:blobs", key = "..." }
/// # or: protocol = { type = "s3", endpoint = "https://s3.example", region = "us-east-1", access_key = "...", secret_key = "..." }
/// container_prefix = "librarian"
/// spool_dir = "/srv/librarian/spool"
/// objects_per_container = 500000        # default
/// large_object_threshold = 5368709120   # default: 5 GiB
/// segment_size = 1073741824             # default: 1 GiB
/// segment_concurrency = 4               # default
/// retry = { initial_backoff_ms = 50, max_backoff_ms = 2000, budget_ms = 10000 }
/// request_timeout_ms = 30000            # default
/// idle_timeout_ms = 30000               # default
/// ca_file = "/etc/librarian/swift-ca.pem"  # none by default: the system's roots
/// [object_store.cache]
/// dir = "/srv/librarian/cache"
/// capacity_bytes = 107374182400
/// ```
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ObjectStoreConfig {
    /// The protocol and credentials.
    pub protocol: Protocol,
    /// Containers (buckets) are named `<prefix>-000000`, `<prefix>-000001`, ... (S3 bucket
    /// names: lowercase letters, digits and `-`). Default `blobs`.
    #[serde(default = "default_prefix")]
    pub container_prefix: String,
    /// Uploads are spooled here while the store hashes them. Default: the system temp dir.
    #[serde(default = "std::env::temp_dir")]
    pub spool_dir: PathBuf,
    /// Objects per container before the next one starts. Default 500,000.
    #[serde(default = "default_per_container")]
    pub objects_per_container: u64,
    /// Objects larger than this are uploaded in segments. Default 5 GiB.
    #[serde(default = "default_threshold")]
    pub large_object_threshold: u64,
    /// The segment size of large objects. Default 1 GiB. Raised when an object would need
    /// more segments than the protocol allows (1,000 in a Swift static large object, 10,000
    /// parts in an S3 multipart upload); S3 parts are kept between 5 MiB and 5 GiB. Segments
    /// stream from the spool file: none is held in memory.
    #[serde(default = "default_segment")]
    pub segment_size: u64,
    /// How many segments of one large object are uploaded at a time. Default 4.
    #[serde(default = "default_segment_concurrency")]
    pub segment_concurrency: usize,
    /// Retries of transient failures.
    #[serde(default)]
    pub retry: RetryConfig,
    /// The time limit of requests without a large body (HEAD, DELETE, listings, manifests,
    /// authentication), in milliseconds, and the connect timeout of every request. Default
    /// 30,000. Transfers of blob bytes have no overall limit (a 5 GiB upload takes as long as
    /// it takes); `idle_timeout_ms` catches the stalled ones.
    #[serde(default = "default_timeout")]
    pub request_timeout_ms: u64,
    /// How long a transfer of blob bytes may make no progress, in milliseconds: an upload
    /// whose body the server stops taking (and that it does not answer), a download whose
    /// answer stops arriving, or a download whose headers do not come. The attempt then fails
    /// as transient: uploads are retried and downloads resume from the byte they reached,
    /// within the retry budget, after which the call fails with [`crate::Error::Unavailable`]
    /// (a read with an I/O error of kind `TimedOut`). Default 30,000.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_ms: u64,
    /// A PEM file of extra CA certificates to trust for `https` endpoints, besides the
    /// system's roots (for a private cluster's own CA). Default none. TLS is rustls; a
    /// certificate that does not verify fails at once with [`crate::Error::Tls`] (not
    /// retried).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The local read cache in front of the store; none by default.
    #[serde(default)]
    pub cache: Option<CacheConfig>,
}

/// The protocol and credentials of the object store.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
#[non_exhaustive]
pub enum Protocol {
    /// OpenStack Swift's native API with tempauth or Keystone v1-style authentication (a GET
    /// of `auth_url` with `X-Auth-User`/`X-Auth-Key` answering `X-Storage-Url` and
    /// `X-Auth-Token`).
    Swift {
        /// For example `http://127.0.0.1:8080/auth/v1.0`.
        auth_url: String,
        /// `account:user`.
        user: String,
        /// The key.
        key: String,
    },
    /// Any S3-compatible endpoint (AWS, Ceph RGW, MinIO, Swift's s3api), path-style
    /// addressing unless `virtual_host_style`.
    S3 {
        /// For example `http://127.0.0.1:8080`.
        endpoint: String,
        /// For example `us-east-1`.
        region: String,
        /// The access key id.
        access_key: String,
        /// The secret key.
        secret_key: String,
        /// Address buckets as `bucket.host` instead of `host/bucket`.
        #[serde(default)]
        virtual_host_style: bool,
    },
}

impl std::fmt::Debug for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Protocol::Swift { auth_url, user, .. } => f
                .debug_struct("Swift")
                .field("auth_url", auth_url)
                .field("user", user)
                .field("key", &"<redacted>")
                .finish(),
            Protocol::S3 {
                endpoint,
                region,
                access_key,
                virtual_host_style,
                ..
            } => f
                .debug_struct("S3")
                .field("endpoint", endpoint)
                .field("region", region)
                .field("access_key", access_key)
                .field("secret_key", &"<redacted>")
                .field("virtual_host_style", virtual_host_style)
                .finish(),
        }
    }
}

/// Exponential backoff of transient failures within a bounded total time.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RetryConfig {
    /// The first pause. Default 50 ms.
    #[serde(default = "default_initial_backoff")]
    pub initial_backoff_ms: u64,
    /// The longest pause (each pause doubles up to this). Default 2,000 ms.
    #[serde(default = "default_max_backoff")]
    pub max_backoff_ms: u64,
    /// No new attempt starts after this much time since the first. Default 10,000 ms: an
    /// upload to a store that is down fails within about ten seconds.
    #[serde(default = "default_budget")]
    pub budget_ms: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            initial_backoff_ms: default_initial_backoff(),
            max_backoff_ms: default_max_backoff(),
            budget_ms: default_budget(),
        }
    }
}

impl RetryConfig {
    /// A policy with these three durations.
    pub fn new(initial_backoff: Duration, max_backoff: Duration, budget: Duration) -> Self {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        RetryConfig {
            initial_backoff_ms: ms(initial_backoff),
            max_backoff_ms: ms(max_backoff),
            budget_ms: ms(budget),
        }
    }
}

/// The local least-recently-used read cache.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct CacheConfig {
    /// Its directory (blob files and a small RocksDB index).
    pub dir: PathBuf,
    /// The bytes it may hold. Default 10 GiB.
    #[serde(default = "default_cache_capacity")]
    pub capacity_bytes: u64,
    /// Blobs larger than this are never cached. Default: an eighth of the capacity.
    #[serde(default)]
    pub max_object_bytes: Option<u64>,
}

impl CacheConfig {
    /// A cache in `dir` of `capacity_bytes`.
    pub fn new(dir: impl Into<PathBuf>, capacity_bytes: u64) -> Self {
        CacheConfig {
            dir: dir.into(),
            capacity_bytes,
            max_object_bytes: None,
        }
    }

    /// Blobs larger than this are never cached. Default: an eighth of the capacity.
    pub fn max_object_bytes(mut self, bytes: u64) -> Self {
        self.max_object_bytes = Some(bytes);
        self
    }
}

fn default_prefix() -> String {
    "blobs".to_string()
}
fn default_per_container() -> u64 {
    DEFAULT_OBJECTS_PER_CONTAINER
}
fn default_threshold() -> u64 {
    DEFAULT_LARGE_OBJECT_THRESHOLD
}
fn default_segment() -> u64 {
    DEFAULT_SEGMENT_SIZE
}
fn default_timeout() -> u64 {
    30_000
}
fn default_idle_timeout() -> u64 {
    u64::try_from(DEFAULT_IDLE_TIMEOUT.as_millis()).unwrap_or(u64::MAX)
}
fn default_segment_concurrency() -> usize {
    DEFAULT_SEGMENT_CONCURRENCY
}
fn default_initial_backoff() -> u64 {
    50
}
fn default_max_backoff() -> u64 {
    2_000
}
fn default_budget() -> u64 {
    10_000
}
fn default_cache_capacity() -> u64 {
    10 << 30
}

impl ObjectStoreConfig {
    /// A configuration for Swift with the defaults.
    pub fn swift(
        auth_url: impl Into<String>,
        user: impl Into<String>,
        key: impl Into<String>,
    ) -> Self {
        Self::with_protocol(Protocol::Swift {
            auth_url: auth_url.into(),
            user: user.into(),
            key: key.into(),
        })
    }

    /// A configuration for an S3-compatible endpoint (path-style) with the defaults.
    pub fn s3(
        endpoint: impl Into<String>,
        region: impl Into<String>,
        access_key: impl Into<String>,
        secret_key: impl Into<String>,
    ) -> Self {
        Self::with_protocol(Protocol::S3 {
            endpoint: endpoint.into(),
            region: region.into(),
            access_key: access_key.into(),
            secret_key: secret_key.into(),
            virtual_host_style: false,
        })
    }

    fn with_protocol(protocol: Protocol) -> Self {
        ObjectStoreConfig {
            protocol,
            container_prefix: default_prefix(),
            spool_dir: std::env::temp_dir(),
            objects_per_container: DEFAULT_OBJECTS_PER_CONTAINER,
            large_object_threshold: DEFAULT_LARGE_OBJECT_THRESHOLD,
            segment_size: DEFAULT_SEGMENT_SIZE,
            segment_concurrency: DEFAULT_SEGMENT_CONCURRENCY,
            retry: RetryConfig::default(),
            request_timeout_ms: default_timeout(),
            idle_timeout_ms: default_idle_timeout(),
            ca_file: None,
            cache: None,
        }
    }

    /// Container names start with this. Default `blobs`.
    pub fn container_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.container_prefix = prefix.into();
        self
    }

    /// Where uploads are spooled. Default: the system temp dir.
    pub fn spool_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.spool_dir = dir.into();
        self
    }

    /// Objects per container. Default 500,000.
    pub fn objects_per_container(mut self, n: u64) -> Self {
        self.objects_per_container = n;
        self
    }

    /// Objects larger than `threshold` are uploaded in segments of `segment_size`. Defaults
    /// 5 GiB and 1 GiB.
    pub fn segments(mut self, threshold: u64, segment_size: u64) -> Self {
        self.large_object_threshold = threshold;
        self.segment_size = segment_size;
        self
    }

    /// The retry policy. Default 50 ms doubling to 2 s, within 10 s.
    pub fn retry(mut self, retry: RetryConfig) -> Self {
        self.retry = retry;
        self
    }

    /// Segments of one large object uploaded at a time. Default 4.
    pub fn segment_concurrency(mut self, n: usize) -> Self {
        self.segment_concurrency = n;
        self
    }

    /// The time limit of small requests, and the connect timeout. Default 30 s.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        self
    }

    /// How long a transfer of blob bytes may make no progress. Default 30 s.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        self
    }

    /// Trust the CA certificates of this PEM file too (for `https` endpoints of a private
    /// cluster). Default: the system's roots only.
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_file = Some(path.into());
        self
    }

    /// A local read cache in front of the store. Default none.
    pub fn cache(mut self, cache: CacheConfig) -> Self {
        self.cache = Some(cache);
        self
    }

    pub(crate) fn validate(&self) -> crate::Result<()> {
        let bad = |what: &str| Err(crate::Error::Config(what.to_string()));
        let prefix = &self.container_prefix;
        if prefix.is_empty()
            || prefix.len() > 40
            || !prefix
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return bad("container_prefix must be 1 to 40 of [a-z0-9-]");
        }
        if self.objects_per_container == 0 {
            return bad("objects_per_container must be at least 1");
        }
        if self.segment_size == 0 || self.large_object_threshold == 0 {
            return bad("segment_size and large_object_threshold must be positive");
        }
        if self.segment_concurrency == 0 {
            return bad("segment_concurrency must be at least 1");
        }
        if self.idle_timeout_ms == 0 || self.request_timeout_ms == 0 {
            return bad("idle_timeout_ms and request_timeout_ms must be positive");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_toml_parses_with_defaults_filled_in() {
        let text = r#"
            protocol = { type = "swift", auth_url = "http://127.0.0.1:8080/auth/v1.0", user = "test:tester", key = "testing" }
            container_prefix = "librarian"
            spool_dir = "/srv/spool"
            retry = { budget_ms = 5000 }
            [cache]
            dir = "/srv/cache"
            capacity_bytes = 1000
        "#;
        let config: ObjectStoreConfig = toml::from_str(text).unwrap();
        assert!(
            matches!(config.protocol, Protocol::Swift { ref user, .. } if user == "test:tester")
        );
        assert_eq!(config.objects_per_container, DEFAULT_OBJECTS_PER_CONTAINER);
        assert_eq!(config.large_object_threshold, 5 << 30);
        assert_eq!(config.retry.budget_ms, 5000);
        assert_eq!(config.retry.initial_backoff_ms, 50);
        assert_eq!(config.idle_timeout_ms, 30_000);
        assert_eq!(config.segment_concurrency, DEFAULT_SEGMENT_CONCURRENCY);
        assert_eq!(config.ca_file, None);
        assert_eq!(config.cache.as_ref().map(|c| c.capacity_bytes), Some(1000));
        config.validate().unwrap();
        assert!(
            !format!("{config:?}").contains("testing"),
            "the key is redacted"
        );

        let s3: ObjectStoreConfig = toml::from_str(
            r#"protocol = { type = "s3", endpoint = "http://h", region = "r", access_key = "a", secret_key = "s" }"#,
        )
        .unwrap();
        assert!(matches!(
            s3.protocol,
            Protocol::S3 {
                virtual_host_style: false,
                ..
            }
        ));
        assert!(toml::from_str::<ObjectStoreConfig>(r#"protocol = { type = "ftp" }"#).is_err());
        assert!(s3.clone().container_prefix("Bad_Name").validate().is_err());
        assert!(s3.clone().objects_per_container(0).validate().is_err());
        assert!(s3.clone().segment_concurrency(0).validate().is_err());
        assert!(s3.idle_timeout(Duration::ZERO).validate().is_err());

        let tls: ObjectStoreConfig = toml::from_str(
            r#"
            protocol = { type = "s3", endpoint = "https://h", region = "r", access_key = "a", secret_key = "s" }
            idle_timeout_ms = 5000
            ca_file = "/etc/ca.pem"
            segment_concurrency = 2
            "#,
        )
        .unwrap();
        assert_eq!(tls.idle_timeout_ms, 5000);
        assert_eq!(tls.ca_file, Some(PathBuf::from("/etc/ca.pem")));
        assert_eq!(tls.segment_concurrency, 2);
    }
}
