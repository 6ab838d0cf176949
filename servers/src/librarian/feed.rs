//! The blob store's change feed as the HTTP layer sees it: a [`ChangeSource`] over
//! [`blobstore::Store`], filtered by `bucket`, `file`, `person` (the actor) and `kind`.

use std::sync::Arc;

use blobstore::{Change, Store, CHANGE_KINDS};
use tokio::sync::watch;

use crate::common::feed::{head_channel, ChangeSource};
use crate::common::ApiError;

use super::handlers::store_error;

/// The librarian's change feed: the store's events and its durable head, followed as it
/// moves (a `watch` channel fed by the store's change log).
#[derive(Debug)]
pub struct BlobFeed {
    store: Store,
    head: watch::Receiver<u64>,
}

impl BlobFeed {
    /// The feed of `store`.
    pub fn new(store: Store) -> Arc<Self> {
        let log = store.change_log();
        let (listener, head) = head_channel(log.head());
        log.subscribe(listener);
        Arc::new(BlobFeed { store, head })
    }
}

impl ChangeSource for BlobFeed {
    type Event = Change;

    fn filters(&self) -> &'static [&'static str] {
        &["bucket", "file", "person"]
    }

    fn kinds(&self) -> &'static [&'static str] {
        CHANGE_KINDS
    }

    fn read(&self, after: u64, limit: usize) -> Result<Vec<Change>, ApiError> {
        self.store.changes(after, limit).map_err(store_error)
    }

    fn revision(event: &Change) -> u64 {
        event.revision
    }

    fn kind(event: &Change) -> &str {
        event.kind.name()
    }

    fn matches(event: &Change, name: &str, value: &str) -> bool {
        match name {
            "bucket" => event.kind.bucket() == Some(value),
            "file" => event
                .kind
                .file()
                .is_some_and(|file| value.parse() == Ok(file.0)),
            "person" => event.actor == value,
            _ => false,
        }
    }

    fn head(&self) -> watch::Receiver<u64> {
        self.head.clone()
    }
}
