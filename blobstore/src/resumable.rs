//! Resumable uploads (the tus 1.0 protocol's model): their ids and records, the checksum of
//! one append, and the digests carried from one append to the next.
//!
//! The store methods are in `store/resumable.rs`; `DESIGN.md` ("Resumable uploads") gives
//! the write order and what a crash leaves.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use md5::Md5;
use serde::{Deserialize, Serialize};
use sha1::Sha1;
use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};
use crate::hashing::Digests;
use crate::types::{Blake3Hash, BucketName, FileId, Timestamp};

/// How long an unfinished resumable upload is kept after its last append: 1 day.
pub const DEFAULT_UPLOAD_LIFETIME: Duration = Duration::from_secs(86_400);

/// A resumable upload's id: 128 random bits, written as 32 lowercase hex digits. It is the
/// upload's address, so it is not guessable.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UploadId(pub [u8; 16]);

impl UploadId {
    /// A new random id.
    pub fn random() -> Self {
        UploadId(rand::random())
    }
}

impl fmt::Display for UploadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::types::to_hex(&self.0))
    }
}

impl fmt::Debug for UploadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UploadId({self})")
    }
}

impl FromStr for UploadId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let parse = || -> Option<[u8; 16]> {
            if s.len() != 32 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                return None;
            }
            let mut out = [0u8; 16];
            for (i, byte) in out.iter_mut().enumerate() {
                *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
            }
            Some(out)
        };
        parse().map(UploadId).ok_or_else(|| Error::Parse {
            what: "upload id",
            input: s.chars().take(100).collect(),
        })
    }
}

/// A resumable upload as the store records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumableUpload {
    /// Its id.
    pub id: UploadId,
    /// The bucket the file goes to.
    pub bucket: BucketName,
    /// The file's name.
    pub filename: String,
    /// The file's MIME type.
    pub content_type: String,
    /// When the finished file expires, if ever.
    pub file_expires: Option<Timestamp>,
    /// Whether the finished file is restricted.
    pub restricted: bool,
    /// The announced length (tus `Upload-Length`).
    pub length: u64,
    /// The bytes received and durable so far (tus `Upload-Offset`).
    pub offset: u64,
    /// When it was created.
    pub created: Timestamp,
    /// When an unfinished upload expires (tus `Upload-Expires`): its last append plus its
    /// lifetime.
    pub deadline: Timestamp,
    /// Its lifetime after each append, in milliseconds.
    pub lifetime_ms: i64,
    /// The client's `Upload-Metadata`, kept verbatim to be answered back.
    pub metadata: String,
    /// Who created it (the actor of the file's `file.created` event).
    pub actor: String,
    /// The file it became, once finished.
    pub file: Option<FileId>,
}

impl ResumableUpload {
    /// Whether its deadline passed at `now` (an expired upload answers 410 until GC removes
    /// it). A finished upload's record also goes at its deadline.
    pub fn expired_at(&self, now: Timestamp) -> bool {
        now >= self.deadline
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = vec![RECORD_VERSION];
        // Only strings, integers and booleans: serialising cannot fail.
        out.extend(serde_json::to_vec(self).unwrap_or_default());
        out
    }

    pub(crate) fn decode(key: &[u8], bytes: &[u8]) -> Result<Self> {
        match bytes.split_first() {
            Some((&RECORD_VERSION, json)) => serde_json::from_slice(json).ok(),
            _ => None,
        }
        .ok_or_else(|| Error::CorruptRecord {
            what: "resumable upload",
            key: key.to_vec(),
        })
    }
}

/// The first byte of an encoded [`ResumableUpload`]; the rest is JSON (a record is written
/// once per append, so compactness matters less than for file records).
const RECORD_VERSION: u8 = 1;

impl Serialize for UploadId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for UploadId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for BucketName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for BucketName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        BucketName::new(text).map_err(serde::de::Error::custom)
    }
}

/// The algorithms of the tus checksum extension that the store accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChecksumAlgorithm {
    /// SHA-1 (what tus clients send by default).
    Sha1,
    /// SHA-256.
    Sha256,
    /// MD5.
    Md5,
}

impl ChecksumAlgorithm {
    /// Every algorithm, as named in `Tus-Checksum-Algorithm`.
    pub const ALL: [ChecksumAlgorithm; 3] = [
        ChecksumAlgorithm::Sha1,
        ChecksumAlgorithm::Sha256,
        ChecksumAlgorithm::Md5,
    ];

    /// Its tus name.
    pub fn name(self) -> &'static str {
        match self {
            ChecksumAlgorithm::Sha1 => "sha1",
            ChecksumAlgorithm::Sha256 => "sha256",
            ChecksumAlgorithm::Md5 => "md5",
        }
    }

    /// The algorithm named `name` (tus names, lowercase), if supported.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == name)
    }
}

/// The checksum a client announced for the bytes of one append.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checksum {
    /// The algorithm.
    pub algorithm: ChecksumAlgorithm,
    /// The expected digest.
    pub digest: Vec<u8>,
}

/// The running digest of one append's bytes, for its [`Checksum`].
pub(crate) enum ChecksumHasher {
    Sha1(Sha1),
    Sha256(Sha256),
    Md5(Md5),
}

impl ChecksumHasher {
    pub(crate) fn new(algorithm: ChecksumAlgorithm) -> Self {
        match algorithm {
            ChecksumAlgorithm::Sha1 => ChecksumHasher::Sha1(Sha1::new()),
            ChecksumAlgorithm::Sha256 => ChecksumHasher::Sha256(Sha256::new()),
            ChecksumAlgorithm::Md5 => ChecksumHasher::Md5(Md5::new()),
        }
    }

    pub(crate) fn update(&mut self, data: &[u8]) {
        match self {
            ChecksumHasher::Sha1(h) => h.update(data),
            ChecksumHasher::Sha256(h) => h.update(data),
            ChecksumHasher::Md5(h) => h.update(data),
        }
    }

    pub(crate) fn finish(self) -> Vec<u8> {
        match self {
            ChecksumHasher::Sha1(h) => h.finalize().to_vec(),
            ChecksumHasher::Sha256(h) => h.finalize().to_vec(),
            ChecksumHasher::Md5(h) => h.finalize().to_vec(),
        }
    }
}

/// The digests of a resumable upload's prefix, carried in memory from one append to the
/// next (and recomputed from the partial file after a restart: see `DESIGN.md`).
#[derive(Clone)]
pub(crate) struct PrefixHasher {
    blake3: blake3::Hasher,
    sha256: Sha256,
    sha1_md5: Option<(Sha1, Md5)>,
}

/// One digest of a [`PrefixHasher`] other than BLAKE3 ([`PrefixHasher::parts`]), to be
/// updated on a thread of its own.
pub(crate) enum SideDigest<'a> {
    Sha256(&'a mut Sha256),
    Sha1(&'a mut Sha1),
    Md5(&'a mut Md5),
}

impl SideDigest<'_> {
    pub(crate) fn update(&mut self, data: &[u8]) {
        match self {
            SideDigest::Sha256(h) => h.update(data),
            SideDigest::Sha1(h) => h.update(data),
            SideDigest::Md5(h) => h.update(data),
        }
    }
}

/// Below this many bytes, an update hashes on one thread (a thread costs more than it saves).
const PARALLEL_MIN: usize = 64 * 1024;

impl PrefixHasher {
    pub(crate) fn new(keep_sha1_md5: bool) -> Self {
        PrefixHasher {
            blake3: blake3::Hasher::new(),
            sha256: Sha256::new(),
            sha1_md5: keep_sha1_md5.then(|| (Sha1::new(), Md5::new())),
        }
    }

    /// Hashes `data`: BLAKE3 on this thread, the other digests beside it on a scoped thread.
    pub(crate) fn update(&mut self, data: &[u8]) {
        let PrefixHasher {
            blake3,
            sha256,
            sha1_md5,
        } = self;
        let others = |sha256: &mut Sha256, sha1_md5: &mut Option<(Sha1, Md5)>| {
            sha256.update(data);
            if let Some((sha1, md5)) = sha1_md5 {
                sha1.update(data);
                md5.update(data);
            }
        };
        if data.len() < PARALLEL_MIN {
            blake3.update(data);
            others(sha256, sha1_md5);
            return;
        }
        let spawned = std::thread::scope(|scope| {
            let side = std::thread::Builder::new()
                .name("blobstore-hash".into())
                .spawn_scoped(scope, || others(sha256, sha1_md5));
            blake3.update(data);
            match side {
                Ok(handle) => handle.join().is_ok(),
                Err(_) => false,
            }
        });
        if !spawned {
            // No thread to be had: hash here.
            others(sha256, sha1_md5);
        }
    }

    /// BLAKE3 and each other digest apart, so that an append hashes them on threads of
    /// their own for its whole body (as a streamed upload does, `hashing.rs`) instead of
    /// starting a thread per piece with the other digests one after another.
    pub(crate) fn parts(&mut self) -> (&mut blake3::Hasher, Vec<SideDigest<'_>>) {
        let mut sides = vec![SideDigest::Sha256(&mut self.sha256)];
        if let Some((sha1, md5)) = &mut self.sha1_md5 {
            sides.push(SideDigest::Sha1(sha1));
            sides.push(SideDigest::Md5(md5));
        }
        (&mut self.blake3, sides)
    }

    pub(crate) fn finish(self) -> Digests {
        Digests {
            blake3: Blake3Hash(*self.blake3.finalize().as_bytes()),
            sha256: self.sha256.finalize().into(),
            sha1: self
                .sha1_md5
                .as_ref()
                .map(|(h, _)| h.clone().finalize().into()),
            md5: self.sha1_md5.map(|(_, h)| h.finalize().into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_reject_garbage() {
        let id = UploadId::random();
        assert_eq!(id.to_string().parse::<UploadId>().unwrap(), id);
        assert!("ABCD".parse::<UploadId>().is_err());
        assert!("0123456789abcdef0123456789abcdeF"
            .parse::<UploadId>()
            .is_err());
        assert!("0123456789abcdef0123456789abcdef0"
            .parse::<UploadId>()
            .is_err());
    }

    #[test]
    fn a_prefix_hashed_in_pieces_equals_the_whole() {
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 253) as u8).collect();
        let mut pieces = PrefixHasher::new(true);
        for piece in data.chunks(300_000) {
            pieces.update(piece);
        }
        let mut whole = PrefixHasher::new(true);
        whole.update(&data);
        assert_eq!(pieces.finish(), whole.finish());
    }
}
