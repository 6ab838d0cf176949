//! Idempotent uploads: an upload that names an idempotency key is recorded under (actor,
//! key) in the upload's own batch; the same key with the same content within
//! [`IDEMPOTENCY_WINDOW`] answers the first upload's file instead of storing a second, and
//! with other content is refused ([`Error::IdempotencyConflict`]). GC removes keys past the
//! window. `DESIGN.md` ("Idempotent uploads") gives the layout and the locking.

use std::time::Duration;

use engine::keys::{KeyBuilder, KeyReader};
use engine::{ScanRange, WriteBatch};

use crate::error::{Error, Result};
use crate::types::{Blake3Hash, FileId, Timestamp};

use super::{Store, Uploaded};

/// How long an idempotency key answers with its first upload: 24 hours.
pub const IDEMPOTENCY_WINDOW: Duration = Duration::from_secs(86_400);

/// The longest idempotency key accepted, in bytes.
pub const MAX_IDEMPOTENCY_KEY: usize = 255;

const RECORD_VERSION: u8 = 1;

/// `'k' ‖ actor ‖ key` → the key's record.
fn record_key(actor: &str, key: &str) -> Vec<u8> {
    KeyBuilder::new().u8(b'k').str(actor).str(key).finish()
}

/// `'t' ‖ time ‖ actor ‖ key` → empty: keys by the time of their upload, for GC.
fn time_key(time: Timestamp, actor: &str, key: &str) -> Vec<u8> {
    KeyBuilder::new()
        .u8(b't')
        .i64(time.0)
        .str(actor)
        .str(key)
        .finish()
}

fn parse_time_key(key: &[u8]) -> Option<(Timestamp, String, String)> {
    let mut r = KeyReader::new(key);
    if r.u8()? != b't' {
        return None;
    }
    let time = Timestamp(r.i64()?);
    let actor = r.string()?;
    let idem = r.string()?;
    r.is_empty().then_some((time, actor, idem))
}

/// What a key remembers: the file, its content's hash, and when.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct KeyRecord {
    file: FileId,
    blake3: Blake3Hash,
    time: Timestamp,
}

impl KeyRecord {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(49);
        out.push(RECORD_VERSION);
        out.extend_from_slice(&self.file.0.to_be_bytes());
        out.extend_from_slice(&self.blake3.0);
        out.extend_from_slice(&self.time.0.to_be_bytes());
        out
    }

    fn decode(key: &[u8], bytes: &[u8]) -> Result<Self> {
        let corrupt = || Error::CorruptRecord {
            what: "idempotency key",
            key: key.to_vec(),
        };
        if bytes.len() != 49 || bytes[0] != RECORD_VERSION {
            return Err(corrupt());
        }
        Ok(KeyRecord {
            file: FileId(u64::from_be_bytes(
                bytes[1..9].try_into().map_err(|_| corrupt())?,
            )),
            blake3: Blake3Hash(bytes[9..41].try_into().map_err(|_| corrupt())?),
            time: Timestamp(i64::from_be_bytes(
                bytes[41..49].try_into().map_err(|_| corrupt())?,
            )),
        })
    }
}

/// Checks an idempotency key: 1 to [`MAX_IDEMPOTENCY_KEY`] bytes of visible ASCII.
pub(super) fn validate_key(key: &str) -> Result<()> {
    if key.is_empty()
        || key.len() > MAX_IDEMPOTENCY_KEY
        || !key.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
    {
        return Err(Error::InvalidIdempotencyKey {
            reason: "an idempotency key is 1 to 255 bytes of visible ASCII",
        });
    }
    Ok(())
}

impl Store {
    fn key_record(&self, actor: &str, key: &str) -> Result<Option<KeyRecord>> {
        let record_key = record_key(actor, key);
        match self.inner.engine.get(self.inner.ks.uploads, &record_key)? {
            Some(bytes) => Ok(Some(KeyRecord::decode(&record_key, &bytes)?)),
            None => Ok(None),
        }
    }

    /// The answer to a repeated upload under `key` with content `hash`: the first upload's
    /// file when the key is known within the window and the file still exists, `None` when
    /// the upload is to be stored (and the key recorded with it). Called under the key's lock.
    ///
    /// # Errors
    /// [`Error::IdempotencyConflict`] when the key names other content.
    pub(super) fn idempotent_answer(
        &self,
        actor: &str,
        key: &str,
        hash: &Blake3Hash,
    ) -> Result<Option<Uploaded>> {
        let Some(known) = self.key_record(actor, key)? else {
            return Ok(None);
        };
        if known.time.plus(IDEMPOTENCY_WINDOW) <= self.now() {
            return Ok(None);
        }
        if known.blake3 != *hash {
            return Err(Error::IdempotencyConflict {
                key: key.chars().take(100).collect(),
            });
        }
        let record = match self.file(known.file) {
            Ok(record) => record,
            // Deleted since: the upload is stored anew.
            Err(Error::NotFound { .. }) => return Ok(None),
            Err(error) => return Err(error),
        };
        let Some(blob) = self.blob_info(&record.blake3)? else {
            return Ok(None);
        };
        Ok(Some(Uploaded {
            record,
            blob,
            revision: self.inner.log.head(),
            repeated: true,
        }))
    }

    /// Records `key` for the upload of file `id` in its batch (replacing an expired record).
    pub(super) fn record_key(
        &self,
        batch: &mut WriteBatch,
        actor: &str,
        key: &str,
        id: FileId,
        hash: Blake3Hash,
        time: Timestamp,
    ) -> Result<()> {
        let ks = self.inner.ks;
        if let Some(old) = self.key_record(actor, key)? {
            batch.delete(ks.uploads, time_key(old.time, actor, key));
        }
        let record = KeyRecord {
            file: id,
            blake3: hash,
            time,
        };
        batch.put(ks.uploads, record_key(actor, key), record.encode());
        batch.put(ks.uploads, time_key(time, actor, key), []);
        Ok(())
    }

    /// Removes up to `limit` idempotency keys older than the window; returns how many, and
    /// whether more are due.
    pub(super) fn expire_idempotency_keys(&self, limit: usize) -> Result<(u64, bool)> {
        let ks = self.inner.ks;
        let cutoff = self.now().minus(IDEMPOTENCY_WINDOW);
        let range = ScanRange {
            start: vec![b't'],
            end: Some(KeyBuilder::new().u8(b't').i64(cutoff.0).finish()),
            read_once: false,
        };
        let (due, more) = self.due_entries(
            ks.uploads,
            range,
            limit,
            "idempotency key time",
            parse_time_key,
        )?;
        let mut removed = 0;
        for (time, actor, key) in due {
            let _guard = self
                .inner
                .idempotency_locks
                .lock(&(actor.as_str(), key.as_str()));
            let mut batch = WriteBatch::new();
            batch.delete(ks.uploads, time_key(time, &actor, &key));
            if self
                .key_record(&actor, &key)?
                .is_some_and(|record| record.time == time)
            {
                batch.delete(ks.uploads, record_key(&actor, &key));
                removed += 1;
            }
            self.inner.committer.commit(batch)?;
        }
        Ok((removed, more))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked() {
        assert!(validate_key("a").is_ok());
        assert!(validate_key(&"k".repeat(255)).is_ok());
        assert!(validate_key("").is_err());
        assert!(validate_key(&"k".repeat(256)).is_err());
        assert!(validate_key("tab\there").is_err());
    }

    #[test]
    fn records_round_trip() {
        let record = KeyRecord {
            file: FileId(7),
            blake3: Blake3Hash([3; 32]),
            time: Timestamp(1_700_000_000_000),
        };
        assert_eq!(KeyRecord::decode(b"k", &record.encode()).unwrap(), record);
        let key = time_key(record.time, "alice", "key 1");
        assert_eq!(
            parse_time_key(&key),
            Some((record.time, "alice".into(), "key 1".into()))
        );
    }
}
