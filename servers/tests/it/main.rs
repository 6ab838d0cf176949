//! The integration tests of the servers crate: one binary (see STYLE.md).

mod badinput;
mod binaries;
mod directory;
mod hot;
mod infra;
mod librarian;
mod object_store;
mod soak;
mod support;
