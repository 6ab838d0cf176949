//! The object-store backend's error type.

use std::path::PathBuf;
use std::time::Duration;

/// What went wrong talking to the object store, or around it.
///
/// Every variant reaches the blob store as [`blobstore::Error::Backend`] whose `source` is this
/// error; [`is_unavailable`] tells the HTTP layer to answer 503.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The object store could not be reached or kept failing with transient errors (connection
    /// refused, timeouts, 5xx, 429) until the retry budget ran out.
    #[error("object store unavailable: {operation} {container}/{key} failed after {attempts} attempts in {elapsed:?}: {cause}")]
    Unavailable {
        /// What was being done ("put", "get", "head", ...).
        operation: &'static str,
        /// The container or bucket.
        container: String,
        /// The object key (empty for container operations).
        key: String,
        /// How many attempts were made.
        attempts: u32,
        /// How long they took in total.
        elapsed: Duration,
        /// The last failure.
        cause: String,
    },
    /// The object store answered with an error that retrying will not fix.
    #[error("object store refused {operation} {container}/{key}: HTTP {status}: {body}")]
    Refused {
        /// What was being done.
        operation: &'static str,
        /// The container or bucket.
        container: String,
        /// The object key.
        key: String,
        /// The HTTP status.
        status: u16,
        /// The start of the response body.
        body: String,
    },
    /// Authentication failed (bad credentials, or the token could not be renewed).
    #[error("object store authentication failed at {url}: {detail}")]
    Auth {
        /// The authentication URL.
        url: String,
        /// What went wrong.
        detail: String,
    },
    /// The TLS handshake with the object store failed: its certificate is not trusted (set
    /// `ca_file` for a private CA), names another host, or has expired. Not retried.
    #[error("TLS with the object store failed at {url}: {detail}")]
    Tls {
        /// The URL being reached.
        url: String,
        /// What the TLS layer said (for example `invalid peer certificate: UnknownIssuer`).
        detail: String,
    },
    /// An uploaded object does not read back as written.
    #[error("object {container}/{key} did not verify after upload: {detail}")]
    Verify {
        /// The container or bucket.
        container: String,
        /// The object key.
        key: String,
        /// What differs.
        detail: String,
    },
    /// The configuration is not usable.
    #[error("invalid object store configuration: {0}")]
    Config(String),
    /// A local file (spool, cache) could not be used.
    #[error("I/O error while {operation} {path}: {source}")]
    Io {
        /// What was being done.
        operation: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The metadata engine (locations, cache index) failed.
    #[error(transparent)]
    Engine(#[from] engine::Error),
    /// A record of the location index or the cache index that cannot be decoded.
    #[error("corrupt {what} record at key {key:02x?}")]
    CorruptRecord {
        /// Which kind of record.
        what: &'static str,
        /// Its key.
        key: Vec<u8>,
    },
}

impl Error {
    pub(crate) fn io(
        operation: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Error {
        Error::Io {
            operation,
            path: path.into(),
            source,
        }
    }

    /// Whether the object store (or the way to it) is down or overloaded, as opposed to a
    /// permanent refusal or a local problem: the HTTP layer answers 503 for these. Failed
    /// authentication and failed TLS count: the object store cannot be used until fixed.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            Error::Unavailable { .. } | Error::Auth { .. } | Error::Tls { .. }
        )
    }

    /// Wraps this error for the blob store's trait.
    pub(crate) fn into_store(
        self,
        backend: &'static str,
        operation: &'static str,
    ) -> blobstore::Error {
        match self {
            Error::Io {
                operation,
                path,
                source,
            } => blobstore::Error::io(operation, path, source),
            other => blobstore::Error::Backend {
                backend,
                operation,
                source: Box::new(other),
            },
        }
    }
}

/// Whether a blob-store error comes from an object store that is unavailable (down, timing
/// out, overloaded, or refusing our credentials): the HTTP layer answers 503 and `/health`
/// names the object store.
pub fn is_unavailable(error: &blobstore::Error) -> bool {
    match error {
        blobstore::Error::Backend { source, .. } => source
            .downcast_ref::<Error>()
            .is_some_and(Error::is_unavailable),
        _ => false,
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
