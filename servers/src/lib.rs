//! HTTP services over the stores: the librarian (blobs, over `blobstore`) and the directory
//! (team participation, package sets and branch merged-status, over `graphdb`).
//!
//! Each service is a router built by a function apart from its binary's `main`, so tests
//! call it in-process; [`common::serve::serve`] runs a router on a socket with the limits,
//! timeouts and graceful shutdown of [`common::config::Limits`].

pub mod common;
pub mod directory;
pub mod librarian;
