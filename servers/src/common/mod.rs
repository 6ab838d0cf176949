//! What both services share: configuration, access control, errors, metrics, limits and the
//! accept loop.

pub mod access;
pub mod backup;
pub mod config;
pub mod error;
pub mod fast_http;
pub mod feed;
pub mod follow;
pub mod leader;
pub mod metrics;
pub mod pool;
pub mod proxy;
pub mod sealed_body;
pub mod serve;
pub mod subscriptions;

pub use access::{AccessPolicy, Credential};
pub use backup::{backup_error, backup_summary, BackupRequest};
pub use config::{Limits, ServerConfig, ServerFlags};
pub use error::ApiError;

/// Why a service's state could not be built from its store and configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// A configured credential is malformed.
    #[error(transparent)]
    Credentials(#[from] access::CredentialError),
    /// The subscriptions' records could not be read.
    #[error("opening the subscriptions: {0}")]
    Consumers(#[source] engine::Error),
    /// The thread that delivers callbacks could not start.
    #[error("starting the subscriptions' delivery thread: {0}")]
    Delivery(#[source] std::io::Error),
    /// The graph store could not open a namespace.
    #[error("opening the graph namespaces: {0}")]
    Graph(#[from] graphdb::Error),
}
pub use feed::{Actor, Revision};
pub use follow::{FollowSettings, Follower, Replica};
pub use leader::Leader;

use std::sync::Arc;

use axum::Router;

/// Adds what every service router has around its routes: the JSON 404 and 405 fallbacks,
/// and [`metrics::track`] (metrics, concurrency limit, request logs) outermost.
pub fn finish(router: Router, tracker: metrics::Tracker) -> Router {
    router
        .fallback(error::no_route)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            tracker,
            metrics::track,
        ))
}

/// Starts `tracing` logs on standard error, filtered by `RUST_LOG` (default `info`);
/// `json` selects JSON lines.
pub fn init_logs(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// A shared access policy, the state of [`access::require_writer`].
pub type SharedPolicy = Arc<AccessPolicy>;
