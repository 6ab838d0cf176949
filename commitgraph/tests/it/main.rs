//! The integration tests of `commitgraph`: one binary.

// Test code: a failed unwrap is a failed test, which is what it should be.
#![allow(clippy::unwrap_used)]

mod commits;
mod faults;
mod feed;

use std::sync::Arc;

use commitgraph::{CommitGraphs, Writer, STANDALONE_LOG};
use engine::{ChangeLog, Engine, GroupCommit};

/// The writer the tests record their writes as.
pub(crate) const BY: Writer<'static> = Writer {
    actor: "tester",
    repo: "repo",
};

/// Commit graphs over `engine` (opened with [`STANDALONE_KEYSPACES`]) with their own change
/// log, and checkpoints every `every` positions.
pub(crate) fn open_graphs(engine: Arc<dyn Engine>, every: usize) -> CommitGraphs {
    let keyspace = engine.keyspace(STANDALONE_LOG).unwrap();
    let log = ChangeLog::open(Arc::new(GroupCommit::new(Arc::clone(&engine))), keyspace).unwrap();
    // Odd intervals also get a reach cache of 200 bytes: vectors are then cached as
    // differences from a checkpoint of `main` (or not kept at all), so the proptests check
    // that form and the evictions too.
    let graphs = CommitGraphs::with_checkpoint_interval(engine, log, every).unwrap();
    if every % 2 == 1 {
        graphs.with_reach_cache_bytes(200)
    } else {
        graphs
    }
}
