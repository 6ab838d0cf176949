//! The store's on-disk format, and the upgrade from format 1 (`DESIGN.md`, "Store formats").
//!
//! Format 1 (every store written by a build up to 2026-12-06) found a file by BLAKE3 through a
//! `bs.digests` entry (algorithm 0), knew whether a bucket held a blob from a counter per
//! bucket and blob in `bs.bucket_blobs`, and keyed `bs.digests` by whole digests. Format 2
//! keeps one `bs.blob_files` entry per file (`blake3 fingerprint ‖ bucket ‖ file id`) that
//! answers the first two, and digest fingerprints in `bs.digests`: 81 bytes a file fewer on
//! disk (`DESIGN.md`, "Store format 2"). The format is a `u32` under `bs.meta`'s `format`
//! key; format 1 has none.

use engine::{Direction, Durability, Engine, ScanRange, WriteBatch};

use crate::error::{Error, Result};
use crate::keys;
use crate::records::{ContentState, FileRecord};
use crate::types::FileId;

use super::{decode_u64, visibility_code, Keyspaces, ALG_BLAKE3, ALG_MD5, ALG_SHA256};

/// The format this build writes.
pub const STORE_FORMAT: u32 = 2;

/// Keys that one batch of the upgrade writes.
const UPGRADE_BATCH: usize = 10_000;

/// The length of a format-2 `bs.digests` key: algorithm, visibility, fingerprint, file id.
const DIGEST_KEY_LEN: usize = 2 + keys::FINGERPRINT + 8;

/// Brings the store at `engine` to [`STORE_FORMAT`] when it is older and `may_upgrade`
/// allows, and returns how many files the upgrade indexed (0 when there was nothing to do).
///
/// # Errors
/// [`Error::StoreFormat`] for a store of a newer format, or of an older one when
/// `may_upgrade` is false; the engine's error.
pub(super) fn ensure_current(
    engine: &dyn Engine,
    ks: &Keyspaces,
    may_upgrade: bool,
) -> Result<u64> {
    let found = match engine.get(ks.meta, keys::META_FORMAT)? {
        None => 1,
        Some(bytes) => <[u8; 4]>::try_from(bytes.as_slice())
            .map(u32::from_be_bytes)
            .map_err(|_| Error::CorruptRecord {
                what: "store format",
                key: keys::META_FORMAT.to_vec(),
            })?,
    };
    if found == STORE_FORMAT {
        return Ok(0);
    }
    if found > STORE_FORMAT {
        return Err(Error::StoreFormat {
            found,
            reason: "written by a newer build; run that build or a later one",
        });
    }
    let fresh = engine
        .scan(ks.files, ScanRange::all(), Direction::Forward)?
        .next()
        .is_none();
    if fresh {
        write_format(engine, ks)?;
        return Ok(0);
    }
    if !may_upgrade {
        return Err(Error::StoreFormat {
            found,
            reason: "run `librarian upgrade-store` once, with every instance stopped",
        });
    }
    upgrade_from_1(engine, ks)
}

/// Format 1 to 2: an entry in `bs.blob_files` for every file whose content is present; the
/// SHA-256, SHA-1 and MD5 entries of `bs.digests` rewritten with fingerprints; format 1's
/// BLAKE3 digest entries and bucket-blob counters deleted; then the format written (synced).
/// Nothing else writes meanwhile (every instance is stopped, or it is the open of an embedded
/// store, whose directory is locked), and every step can be repeated: a crash before the
/// format is written leaves a store that the next open upgrades again.
fn upgrade_from_1(engine: &dyn Engine, ks: &Keyspaces) -> Result<u64> {
    let mut batch = WriteBatch::new();
    let mut indexed = 0u64;
    for kv in engine.scan(ks.files, ScanRange::all().read_once(), Direction::Forward)? {
        let (key, value) = kv?;
        let record = FileRecord::decode_entry(&key, &value)?;
        if record.content != ContentState::Present {
            continue;
        }
        batch.put(
            ks.blob_files,
            keys::blob_file(&record.blake3, record.bucket.as_str(), record.id),
            [visibility_code(record.restricted)],
        );
        indexed += 1;
        if batch.len() >= UPGRADE_BATCH {
            engine.write(std::mem::take(&mut batch), Durability::Buffered)?;
        }
    }
    // Each phase ends synced, so that a crash may leave any prefix of the phases: the test
    // of an interrupted upgrade (`engine_faults.rs`) then meets each of them.
    engine.write(std::mem::take(&mut batch), Durability::Sync)?;
    // Whole digests become fingerprints. A scan may meet the keys it wrote (not every engine
    // scans a snapshot): they have the new length and are left alone.
    let other_digests = ScanRange::between(&[ALG_SHA256], &[ALG_MD5 + 1]).read_once();
    for kv in engine.scan(ks.digests, other_digests, Direction::Forward)? {
        let (key, _) = kv?;
        if key.len() == DIGEST_KEY_LEN {
            continue;
        }
        let (id, digest) = key
            .len()
            .checked_sub(8)
            .filter(|&end| end > 2)
            .and_then(|end| Some((decode_u64(&key[end..])?, &key[2..end])))
            .ok_or_else(|| Error::CorruptRecord {
                what: "digest index",
                key: key.clone(),
            })?;
        batch.put(
            ks.digests,
            keys::digest_entry(key[0], key[1], digest, FileId(id)),
            [],
        );
        batch.delete(ks.digests, &key);
        if batch.len() >= UPGRADE_BATCH {
            engine.write(std::mem::take(&mut batch), Durability::Buffered)?;
        }
    }
    engine.write(std::mem::take(&mut batch), Durability::Sync)?;
    batch.delete_range(ks.digests, [ALG_BLAKE3], [ALG_BLAKE3 + 1]);
    // Bucket names are printable ASCII: every key of the keyspace sorts before 0xff.
    batch.delete_range(ks.bucket_blobs, [], [0xff]);
    engine.write(batch, Durability::Sync)?;
    write_format(engine, ks)?;
    Ok(indexed)
}

/// Writes [`STORE_FORMAT`] as the store's format, synced (with every write before it).
fn write_format(engine: &dyn Engine, ks: &Keyspaces) -> Result<()> {
    let mut batch = WriteBatch::new();
    batch.put(ks.meta, keys::META_FORMAT, STORE_FORMAT.to_be_bytes());
    engine.write(batch, Durability::Sync)?;
    Ok(())
}

impl super::Store {
    /// Puts the store back in format 1, as a build up to 2026-12-06 left it: whole digests in
    /// `bs.digests` (BLAKE3 among them) and bucket-blob counters instead of `bs.blob_files`,
    /// no format key. For the tests of the upgrade; nothing may write meanwhile. Returns the
    /// files moved.
    ///
    /// # Errors
    /// The engine's error.
    #[cfg(feature = "testing")]
    #[doc(hidden)]
    pub fn write_store_format_1(&self) -> Result<u64> {
        use super::{ALG_SHA1, ALG_SHA256};
        let (engine, ks) = (self.inner.engine.as_ref(), self.inner.ks);
        let mut batch = WriteBatch::new();
        for kv in engine.scan(ks.digests, ScanRange::all(), Direction::Forward)? {
            batch.delete(ks.digests, kv?.0);
        }
        batch.delete_range(ks.blob_files, [], [0xff; keys::FINGERPRINT + 1]);
        let mut moved = 0;
        for kv in engine.scan(ks.files, ScanRange::all(), Direction::Forward)? {
            let (key, value) = kv?;
            let record = FileRecord::decode_entry(&key, &value)?;
            if record.content != ContentState::Present {
                continue;
            }
            let id = record.id;
            let hash = record.blake3;
            let meta = self.blob_meta(&hash)?.ok_or_else(|| Error::Corrupt {
                hash,
                detail: format!("file {id} links to a blob that has no record"),
            })?;
            let vis = visibility_code(record.restricted);
            let digests = [
                Some((ALG_BLAKE3, &hash.0[..])),
                Some((ALG_SHA256, &meta.sha256[..])),
                meta.sha1.as_ref().map(|d| (ALG_SHA1, &d[..])),
                meta.md5.as_ref().map(|d| (ALG_MD5, &d[..])),
            ];
            for (algorithm, digest) in digests.into_iter().flatten() {
                let key = keys::digest_entry_of_format_1(algorithm, vis, digest, id);
                batch.put(ks.digests, key, []);
            }
            let counter = keys::bucket_blob(record.bucket.as_str(), &hash);
            batch.counter_add(ks.bucket_blobs, counter, 1);
            moved += 1;
        }
        batch.delete(ks.meta, keys::META_FORMAT);
        engine.write(batch, Durability::Sync)?;
        Ok(moved)
    }
}
