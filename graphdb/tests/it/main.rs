//! The integration tests of `graphdb`: one binary, one module per store.

mod commits;
