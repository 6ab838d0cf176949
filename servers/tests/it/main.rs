//! The integration tests of the servers crate: one binary (see STYLE.md).

mod badinput;
mod binaries;
mod directory;
mod infra;
mod librarian;
mod soak;
mod support;
