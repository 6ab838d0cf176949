//! What both services share: configuration, access control, errors, metrics, limits and the
//! accept loop.

pub mod access;
pub mod config;
pub mod error;
pub mod metrics;
pub mod serve;

pub use access::{AccessPolicy, Credential};
pub use config::{Limits, ServerConfig, ServerFlags};
pub use error::ApiError;
