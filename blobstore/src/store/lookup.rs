//! Lookups by content digest: the files whose present content has a given BLAKE3 (through
//! `bs.blob_files`) or SHA-256, SHA-1 or MD5 (through `bs.digests`). Both indexes hold digest
//! fingerprints; every candidate is checked against its records (`DESIGN.md`, "Digest
//! fingerprints").

use engine::{Direction, ScanRange};

use crate::error::{Error, Result};
use crate::keys;
use crate::records::{BlobMeta, ContentState};
use crate::types::{Blake3Hash, Digest, FileId};

use super::{
    blob_file_id, decode_u64, visibility_code, Store, Visibility, ALG_MD5, ALG_SHA1, ALG_SHA256,
};

impl Store {
    /// Up to `limit` files whose present content has `digest`, among the public or the
    /// restricted files: in id order, or for a BLAKE3 digest by bucket, then id.
    ///
    /// # Errors
    /// The engine's error.
    pub fn files_by_digest(
        &self,
        digest: &Digest,
        visibility: Visibility,
        limit: usize,
    ) -> Result<Vec<FileId>> {
        let vis = visibility_code(visibility == Visibility::Restricted);
        let algorithm = match digest {
            Digest::Blake3(hash) => return self.files_of_blob(hash, vis, limit),
            Digest::Sha256(_) => ALG_SHA256,
            Digest::Sha1(_) => ALG_SHA1,
            Digest::Md5(_) => ALG_MD5,
        };
        let prefix = keys::digest_prefix(algorithm, vis, digest.as_bytes());
        let mut out = Vec::new();
        // The entries hold a fingerprint of the digest: each candidate's blob is checked
        // (a popular content's files share one blob, checked once).
        let mut checked: Option<(Blake3Hash, bool)> = None;
        for kv in self.inner.engine.scan(
            self.inner.ks.digests,
            ScanRange::prefix(&prefix),
            Direction::Forward,
        )? {
            if out.len() >= limit {
                break;
            }
            let (key, _) = kv?;
            let id = key
                .get(prefix.len()..)
                .and_then(decode_u64)
                .map(FileId)
                .ok_or_else(|| Error::CorruptRecord {
                    what: "digest index",
                    key: key.clone(),
                })?;
            let hash = match self.file(id) {
                Ok(record) if record.content == ContentState::Present => record.blake3,
                Ok(_) | Err(Error::NotFound { .. }) => continue,
                Err(error) => return Err(error),
            };
            let matches = match checked {
                Some((known, matches)) if known == hash => matches,
                _ => {
                    let matches = self
                        .blob_meta(&hash)?
                        .is_some_and(|meta| blob_has_digest(&meta, digest));
                    checked = Some((hash, matches));
                    matches
                }
            };
            if matches {
                out.push(id);
            }
        }
        Ok(out)
    }

    /// Up to `limit` files of visibility `vis` linking to blob `hash`, by bucket, then id.
    fn files_of_blob(&self, hash: &Blake3Hash, vis: u8, limit: usize) -> Result<Vec<FileId>> {
        let mut out = Vec::new();
        for kv in self.inner.engine.scan(
            self.inner.ks.blob_files,
            ScanRange::prefix(keys::blob_files_of(hash)),
            Direction::Forward,
        )? {
            if out.len() >= limit {
                break;
            }
            let (key, value) = kv?;
            let id = blob_file_id(&key)?;
            if value.as_slice() == [vis] && self.links(id, hash)? {
                out.push(id);
            }
        }
        Ok(out)
    }
}

/// Whether `meta`'s blob has `digest` (a blob without the SHA-1 and MD5 of a store that keeps
/// none has no other).
fn blob_has_digest(meta: &BlobMeta, digest: &Digest) -> bool {
    match digest {
        Digest::Blake3(_) => false,
        Digest::Sha256(d) => meta.sha256 == *d,
        Digest::Sha1(d) => meta.sha1.as_ref() == Some(d),
        Digest::Md5(d) => meta.md5.as_ref() == Some(d),
    }
}

#[cfg(test)]
mod tests {
    use engine::{Backend, Durability, EngineConfig, WriteBatch};

    use crate::keys;
    use crate::store::{visibility_code, ALG_SHA256};
    use crate::{BucketName, Digest, StoreBuilder, UploadRequest, Visibility};

    /// Index entries name a digest by its fingerprint: a file of another blob whose entries
    /// share the fingerprint (planted here: real ones need 2^32 hashes) is neither found by
    /// the lookups nor counted as a link of the bucket to the blob.
    #[test]
    fn fingerprint_neighbours_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let config = EngineConfig::new(Backend::Rocksdb, dir.path().join("meta"));
        let store = StoreBuilder::new(config, dir.path()).open().unwrap();
        let bucket = BucketName::new("b").unwrap();
        let upload = |name: &str, bytes: &[u8]| {
            let request = UploadRequest::new(bucket.clone(), name);
            store.upload_bytes(request, bytes, "t").unwrap().record
        };
        let (x, y) = (vec![1u8; 3_000], vec![2u8; 500]);
        let first = upload("x", &x);
        let neighbour = upload("y", &y);
        let x_sha256 = store.blob_info(&first.blake3).unwrap().unwrap().sha256;
        let (ks, public) = (store.inner.ks, visibility_code(false));
        let mut batch = WriteBatch::new();
        let blob_file = keys::blob_file(&first.blake3, "b", neighbour.id);
        batch.put(ks.blob_files, blob_file, [public]);
        let digest = keys::digest_entry(ALG_SHA256, public, &x_sha256, neighbour.id);
        batch.put(ks.digests, digest, []);
        store.inner.engine.write(batch, Durability::Sync).unwrap();

        let lookup = |digest| {
            store
                .files_by_digest(&digest, Visibility::Public, 10)
                .unwrap()
        };
        assert_eq!(lookup(Digest::Blake3(first.blake3)), [first.id]);
        assert_eq!(lookup(Digest::Sha256(x_sha256)), [first.id]);
        let unique = || store.bucket_stats(&bucket).unwrap().unique_bytes;
        assert_eq!(unique(), 3_500);
        store.delete_file(first.id, "t").unwrap();
        assert_eq!(unique(), 500, "the bucket's last link to x went");
        let again = upload("x-again", &x);
        assert_eq!(unique(), 3_500, "a first link to x again");
        assert_eq!(lookup(Digest::Blake3(first.blake3)), [again.id]);
    }
}
