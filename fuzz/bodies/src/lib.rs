//! The bodies of the fuzz targets in `fuzz/fuzz_targets/`.
//!
//! Each body takes the fuzzer's bytes and panics only when it finds a bug. The cargo-fuzz
//! targets call them under libFuzzer; `tests/corpus.rs` replays the committed corpus in
//! `fuzz/corpus/<target>/` through them in every `make test`, so CI exercises each target
//! without a fuzzer. `docs/RELIABILITY.md` lists the targets, what each asserts, and the
//! executions of the last real run.

// Fuzz bodies: a failed unwrap is a finding, which is what the fuzzer looks for.
#![allow(clippy::unwrap_used)]

mod blob_model;
mod bytes;
mod graph_model;
mod http;
mod keys;
mod parsers;

pub use blob_model::blob_model;
pub use graph_model::graph_model;
pub use http::{directory_http, librarian_http};
pub use keys::key_encoding;
pub use parsers::{graph_tsv, package_set_tsv, rev_list, team_tsv, token};
