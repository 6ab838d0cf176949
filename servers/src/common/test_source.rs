//! A change source for tests: a real `engine::ChangeLog` in memory whose events name a kind
//! and a bucket.

use std::sync::Arc;

use engine::{ChangeLog, Consumers, EngineConfig, GroupCommit, LogEntry, WriteBatch};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::{feed_error, head_channel, ApiError, ChangeSource};

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct TestEvent {
    #[serde(default)]
    pub(crate) revision: u64,
    pub(crate) kind: String,
    pub(crate) bucket: String,
}

pub(crate) struct LogSource {
    pub(crate) log: Arc<ChangeLog>,
    pub(crate) consumers: Arc<Consumers>,
    head: watch::Receiver<u64>,
}

impl LogSource {
    pub(crate) fn new() -> Arc<Self> {
        let engine = EngineConfig::memory()
            .open(&["changes", "consumers"])
            .unwrap();
        let keyspace = engine.keyspace("changes").unwrap();
        let committer = Arc::new(GroupCommit::new(engine.clone()));
        let consumers = Arc::new(
            Consumers::open(committer.clone(), engine.keyspace("consumers").unwrap()).unwrap(),
        );
        let log = ChangeLog::open(committer, keyspace).unwrap();
        let (listener, head) = head_channel(log.head());
        log.subscribe(listener);
        Arc::new(LogSource {
            log,
            consumers,
            head,
        })
    }

    pub(crate) fn record(&self, kind: &str, bucket: &str) -> u64 {
        let event = TestEvent {
            revision: 0,
            kind: kind.into(),
            bucket: bucket.into(),
        };
        let payload = serde_json::to_vec(&event).unwrap();
        self.log
            .commit(WriteBatch::new(), vec![LogEntry::new(payload)])
            .unwrap()
    }
}

impl ChangeSource for LogSource {
    type Event = TestEvent;

    fn filters(&self) -> &'static [&'static str] {
        &["bucket"]
    }

    fn kinds(&self) -> &'static [&'static str] {
        &["file.created", "file.deleted"]
    }

    fn read(&self, after: u64, limit: usize) -> Result<Vec<TestEvent>, ApiError> {
        let events = self.log.read(after, limit).map_err(feed_error)?;
        Ok(events
            .into_iter()
            .map(|(revision, payload)| TestEvent {
                revision,
                ..serde_json::from_slice(&payload).unwrap()
            })
            .collect())
    }

    fn revision(event: &TestEvent) -> u64 {
        event.revision
    }

    fn kind(event: &TestEvent) -> &str {
        &event.kind
    }

    fn matches(event: &TestEvent, name: &str, value: &str) -> bool {
        name == "bucket" && event.bucket == value
    }

    fn head(&self) -> watch::Receiver<u64> {
        self.head.clone()
    }
}
