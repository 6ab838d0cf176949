//! A graph store with exact, incrementally maintained reachability indexes on top of
//! [`engine`].
//!
//! - [`commits`]: per-repository commit graphs and branches, answering ancestry and
//!   branch merged-status questions.

pub mod commits;
