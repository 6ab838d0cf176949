//! Durable consumers of a [`crate::ChangeLog`]: a record each (what the consumer wants, in
//! the store's own encoding) and the revision up to which it acknowledged the feed.
//!
//! The change feed's callbacks (the services' subscriptions) are the outbox pattern: events
//! are written with the changes, and delivery reads the log afterwards. What a delivery needs
//! to survive a restart is only this: which consumers exist and how far each got. A consumer
//! acknowledged up to `r` is delivered `r + 1` onwards after a restart, so delivery is at
//! least once and never skips.
//!
//! ```
//! use std::sync::Arc;
//! use engine::{Consumers, EngineConfig, GroupCommit};
//!
//! # fn main() -> Result<(), engine::Error> {
//! let engine = EngineConfig::memory().open(&["consumers"])?;
//! let consumers = Consumers::open(Arc::new(GroupCommit::new(engine.clone())), engine.keyspace("consumers")?)?;
//! let id = consumers.create(b"{\"callback\": \"http://127.0.0.1:9/\"}", 41)?;
//! assert!(consumers.ack(id, 42)?);
//! assert_eq!(consumers.get(id)?.map(|c| c.acked), Some(42));
//! assert!(consumers.remove(id)?);
//! assert!(!consumers.ack(id, 43)?);
//! # Ok(())
//! # }
//! ```

use std::sync::{Arc, Mutex, PoisonError};

use crate::{Direction, GroupCommit, Keyspace, ScanRange, WriteBatch};

/// One consumer: its id, the store's record of it, and how far it acknowledged the feed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Consumer {
    /// The id, given by [`Consumers::create`]: never reused, even after a removal.
    pub id: u64,
    /// The record the store keeps for it (a subscription's filter, callback and expiry).
    pub record: Vec<u8>,
    /// Every event up to this revision was acknowledged.
    pub acked: u64,
}

/// The durable consumers of one store's change log, in a keyspace of their own.
#[derive(Debug)]
pub struct Consumers {
    committer: Arc<GroupCommit>,
    keyspace: Keyspace,
    /// Serialises changes, so an acknowledgement never overwrites a removal, and holds the
    /// last id handed out.
    last_id: Mutex<u64>,
}

/// The key of the last id handed out (the empty key sorts before every 8-byte id), kept so
/// that an id is never reused, even after the newest consumer was removed.
const LAST_ID: &[u8] = b"";

/// Where the consumers' keys begin.
const FIRST_ID: [u8; 8] = [0; 8];

fn encode(acked: u64, record: &[u8]) -> Vec<u8> {
    let mut value = Vec::with_capacity(8 + record.len());
    value.extend_from_slice(&acked.to_be_bytes());
    value.extend_from_slice(record);
    value
}

fn decode(id: u64, value: &[u8]) -> crate::Result<Consumer> {
    let malformed = || crate::Error::Config {
        reason: format!("consumer {id} has a malformed record"),
    };
    let (acked, record) = value.split_at_checked(8).ok_or_else(malformed)?;
    Ok(Consumer {
        id,
        record: record.to_vec(),
        acked: u64::from_be_bytes(acked.try_into().map_err(|_| malformed())?),
    })
}

fn decode_id(key: &[u8]) -> crate::Result<u64> {
    Ok(u64::from_be_bytes(key.try_into().map_err(|_| {
        crate::Error::Config {
            reason: format!("consumer key {key:02x?} is not an 8-byte id"),
        }
    })?))
}

impl Consumers {
    /// Opens the consumers kept in `keyspace`.
    ///
    /// # Errors
    /// The engine's error, or a malformed key.
    pub fn open(committer: Arc<GroupCommit>, keyspace: Keyspace) -> crate::Result<Consumers> {
        let last_id = match committer.engine().get(keyspace, LAST_ID)? {
            None => 0,
            Some(value) => decode_id(&value)?,
        };
        Ok(Consumers {
            committer,
            keyspace,
            last_id: Mutex::new(last_id),
        })
    }

    fn commit(&self, batch: WriteBatch) -> crate::Result<()> {
        self.committer.commit(batch)
    }

    /// Adds a consumer that has seen every event up to `acked`; returns its id. Durable when
    /// it returns.
    ///
    /// # Errors
    /// The engine's error.
    pub fn create(&self, record: &[u8], acked: u64) -> crate::Result<u64> {
        let mut last_id = self.last_id.lock().unwrap_or_else(PoisonError::into_inner);
        // Read again: another instance on the same database may have created consumers
        // since (it was the writer before this one), and an id must never be given twice.
        if let Some(value) = self.committer.engine().get(self.keyspace, LAST_ID)? {
            *last_id = (*last_id).max(decode_id(&value)?);
        }
        let id = *last_id + 1;
        let mut batch = WriteBatch::new();
        batch.put(self.keyspace, id.to_be_bytes(), encode(acked, record));
        batch.put(self.keyspace, LAST_ID, id.to_be_bytes());
        self.commit(batch)?;
        *last_id = id;
        Ok(id)
    }

    /// The consumer `id`, if it exists.
    ///
    /// # Errors
    /// The engine's error, or a malformed record.
    pub fn get(&self, id: u64) -> crate::Result<Option<Consumer>> {
        self.committer
            .engine()
            .get(self.keyspace, &id.to_be_bytes())?
            .map(|value| decode(id, &value))
            .transpose()
    }

    /// Every consumer, by id.
    ///
    /// # Errors
    /// The engine's error, or a malformed record.
    pub fn list(&self) -> crate::Result<Vec<Consumer>> {
        let engine = self.committer.engine();
        let mut consumers = Vec::new();
        for item in engine.scan(
            self.keyspace,
            ScanRange::from(&FIRST_ID),
            Direction::Forward,
        )? {
            let (key, value) = item?;
            consumers.push(decode(decode_id(&key)?, &value)?);
        }
        Ok(consumers)
    }

    /// Records that `id` acknowledged every event up to `revision` (never moving it back).
    /// Returns false when the consumer no longer exists. Durable when it returns.
    ///
    /// # Errors
    /// The engine's error.
    pub fn ack(&self, id: u64, revision: u64) -> crate::Result<bool> {
        let _serial = self.last_id.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(consumer) = self.get(id)? else {
            return Ok(false);
        };
        if revision <= consumer.acked {
            return Ok(true);
        }
        let mut batch = WriteBatch::new();
        batch.put(
            self.keyspace,
            id.to_be_bytes(),
            encode(revision, &consumer.record),
        );
        self.commit(batch)?;
        Ok(true)
    }

    /// Removes the consumer `id`; returns whether it existed. Durable when it returns.
    ///
    /// # Errors
    /// The engine's error.
    pub fn remove(&self, id: u64) -> crate::Result<bool> {
        let _serial = self.last_id.lock().unwrap_or_else(PoisonError::into_inner);
        if self.get(id)?.is_none() {
            return Ok(false);
        }
        let mut batch = WriteBatch::new();
        batch.delete(self.keyspace, id.to_be_bytes());
        self.commit(batch)?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use crate::EngineConfig;

    use super::*;

    #[test]
    fn consumers_survive_a_reopen_with_their_acknowledgements() {
        let engine = EngineConfig::memory().open(&["consumers"]).unwrap();
        let keyspace = engine.keyspace("consumers").unwrap();
        let committer = Arc::new(GroupCommit::new(engine.clone()));
        let consumers = Consumers::open(committer.clone(), keyspace).unwrap();
        let a = consumers.create(b"a", 0).unwrap();
        let b = consumers.create(b"b", 7).unwrap();
        assert_eq!((a, b), (1, 2));
        assert!(consumers.ack(a, 5).unwrap());
        assert!(consumers.ack(a, 3).unwrap(), "an older ack is a no-op");
        assert!(consumers.remove(b).unwrap());
        assert!(!consumers.remove(b).unwrap());

        let consumers = Consumers::open(committer, keyspace).unwrap();
        assert_eq!(
            consumers.list().unwrap(),
            vec![Consumer {
                id: 1,
                record: b"a".to_vec(),
                acked: 5
            }]
        );
        assert_eq!(
            consumers.create(b"c", 0).unwrap(),
            3,
            "ids are never reused"
        );
        assert!(engine.get(keyspace, &1u64.to_be_bytes()).unwrap().is_some());
    }

    /// Two instances on one database, each the writer in turn: the second never gives an id
    /// the first gave, though it opened before the first created.
    #[test]
    fn a_later_writer_continues_the_ids_of_an_earlier_one() {
        let engine = EngineConfig::memory().open(&["consumers"]).unwrap();
        let keyspace = engine.keyspace("consumers").unwrap();
        let committer = Arc::new(GroupCommit::new(engine.clone()));
        let first = Consumers::open(committer.clone(), keyspace).unwrap();
        let second = Consumers::open(committer, keyspace).unwrap();
        assert_eq!(first.create(b"a", 0).unwrap(), 1);
        assert_eq!(first.create(b"b", 0).unwrap(), 2);
        assert_eq!(second.create(b"c", 0).unwrap(), 3);
        assert_eq!(second.list().unwrap().len(), 3);
    }
}
