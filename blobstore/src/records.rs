//! The records the store keeps, and their compact binary encoding.

use engine::codec::ByteReader;

use crate::error::{Error, Result};
use crate::types::{Blake3Hash, BucketName, FileId, Timestamp};

/// Whether a file still links to its content.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ContentState {
    /// The content can be read.
    Present,
    /// The content was deleted; the record stays (reads give [`Error::ContentGone`]).
    Deleted,
    /// The file expired and its content link was cut (reads give [`Error::ContentGone`]).
    Expired,
}

impl ContentState {
    fn code(self) -> u8 {
        match self {
            ContentState::Present => 0,
            ContentState::Deleted => 1,
            ContentState::Expired => 2,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(ContentState::Present),
            1 => Some(ContentState::Deleted),
            2 => Some(ContentState::Expired),
            _ => None,
        }
    }
}

/// A file: what users address as `/<id>/<filename>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileRecord {
    /// The stable id.
    pub id: FileId,
    /// The bucket it belongs to.
    pub bucket: BucketName,
    /// The filename.
    pub filename: String,
    /// The MIME type given at upload.
    pub content_type: String,
    /// The content's size in bytes.
    pub size: u64,
    /// The content's BLAKE3 hash (kept after the link is cut, for the record).
    pub blake3: Blake3Hash,
    /// When it was uploaded.
    pub created: Timestamp,
    /// When it expires, if ever.
    pub expires: Option<Timestamp>,
    /// Whether it is read only with a token.
    pub restricted: bool,
    /// Whether the content is still linked.
    pub content: ContentState,
}

/// What the store knows about one blob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobInfo {
    /// Its BLAKE3 hash.
    pub hash: Blake3Hash,
    /// Its size in bytes.
    pub size: u64,
    /// Its SHA-256.
    pub sha256: [u8; 32],
    /// Its SHA-1, when kept.
    pub sha1: Option<[u8; 20]>,
    /// Its MD5, when kept.
    pub md5: Option<[u8; 16]>,
    /// When it was first stored.
    pub created: Timestamp,
    /// Whether its bytes live in the metadata engine.
    pub inline: bool,
    /// The number of files linking to it.
    pub refcount: u64,
    /// Since when it has had no reference (it is collected a grace period later).
    pub zero_ref_since: Option<Timestamp>,
}

/// The stored form of a blob's metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct BlobMeta {
    /// The files linking to the blob; `None` in a record of version 1 (written before
    /// 2026-12-06), whose count is the `bs.refs` counter until the next change of the count
    /// rewrites the record (see `DESIGN.md`, "The reference count in the blob record").
    pub refs: Option<u64>,
    pub size: u64,
    pub sha256: [u8; 32],
    pub sha1: Option<[u8; 20]>,
    pub md5: Option<[u8; 16]>,
    pub created: Timestamp,
    pub inline: bool,
    pub zero_since: Option<Timestamp>,
}

const VERSION: u8 = 1;
/// A blob record that carries its reference count.
const BLOB_VERSION_WITH_REFS: u8 = 2;

fn put_string(out: &mut Vec<u8>, s: &str) {
    let len = u16::try_from(s.len()).expect("strings in records are shorter than 64 KiB");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

impl BlobMeta {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(104);
        out.push(match self.refs {
            Some(_) => BLOB_VERSION_WITH_REFS,
            None => VERSION,
        });
        let flags = u8::from(self.inline)
            | (u8::from(self.sha1.is_some()) << 1)
            | (u8::from(self.md5.is_some()) << 2)
            | (u8::from(self.zero_since.is_some()) << 3);
        out.push(flags);
        if let Some(refs) = self.refs {
            out.extend_from_slice(&refs.to_be_bytes());
        }
        out.extend_from_slice(&self.size.to_be_bytes());
        out.extend_from_slice(&self.created.0.to_be_bytes());
        out.extend_from_slice(&self.sha256);
        if let Some(d) = &self.sha1 {
            out.extend_from_slice(d);
        }
        if let Some(d) = &self.md5 {
            out.extend_from_slice(d);
        }
        if let Some(t) = self.zero_since {
            out.extend_from_slice(&t.0.to_be_bytes());
        }
        out
    }

    pub(crate) fn decode(key: &[u8], bytes: &[u8]) -> Result<Self> {
        let corrupt = || Error::CorruptRecord {
            what: "blob",
            key: key.to_vec(),
        };
        let mut r = ByteReader::new(bytes);
        (|| {
            let version = r.u8()?;
            let flags = r.u8()?;
            let refs = match version {
                VERSION => None,
                BLOB_VERSION_WITH_REFS => Some(r.u64()?),
                _ => return None,
            };
            let size = r.u64()?;
            let created = Timestamp(r.i64()?);
            let sha256 = r.array()?;
            let sha1 = if flags & 2 != 0 {
                Some(r.array()?)
            } else {
                None
            };
            let md5 = if flags & 4 != 0 {
                Some(r.array()?)
            } else {
                None
            };
            let zero_since = if flags & 8 != 0 {
                Some(Timestamp(r.i64()?))
            } else {
                None
            };
            r.is_empty().then_some(BlobMeta {
                refs,
                size,
                sha256,
                sha1,
                md5,
                created,
                inline: flags & 1 != 0,
                zero_since,
            })
        })()
        .ok_or_else(corrupt)
    }
}

impl FileRecord {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.filename.len() + self.bucket.as_str().len());
        out.push(VERSION);
        let flags = u8::from(self.restricted)
            | (u8::from(self.expires.is_some()) << 1)
            | (self.content.code() << 2);
        out.push(flags);
        out.extend_from_slice(&self.size.to_be_bytes());
        out.extend_from_slice(&self.created.0.to_be_bytes());
        if let Some(t) = self.expires {
            out.extend_from_slice(&t.0.to_be_bytes());
        }
        out.extend_from_slice(&self.blake3.0);
        put_string(&mut out, self.bucket.as_str());
        put_string(&mut out, &self.filename);
        put_string(&mut out, &self.content_type);
        out
    }

    /// The record of a `bs.files` entry: its id from the key, the rest from the value.
    pub(crate) fn decode_entry(key: &[u8], bytes: &[u8]) -> Result<Self> {
        let id = <[u8; 8]>::try_from(key)
            .map(|id| FileId(u64::from_be_bytes(id)))
            .map_err(|_| Error::CorruptRecord {
                what: "file",
                key: key.to_vec(),
            })?;
        Self::decode(id, key, bytes)
    }

    pub(crate) fn decode(id: FileId, key: &[u8], bytes: &[u8]) -> Result<Self> {
        let corrupt = || Error::CorruptRecord {
            what: "file",
            key: key.to_vec(),
        };
        let mut r = ByteReader::new(bytes);
        (|| {
            if r.u8()? != VERSION {
                return None;
            }
            let flags = r.u8()?;
            let size = r.u64()?;
            let created = Timestamp(r.i64()?);
            let expires = if flags & 2 != 0 {
                Some(Timestamp(r.i64()?))
            } else {
                None
            };
            let blake3 = Blake3Hash(r.array()?);
            let bucket = BucketName::new(r.short_string()?).ok()?;
            let filename = r.short_string()?;
            let content_type = r.short_string()?;
            let content = ContentState::from_code((flags >> 2) & 3)?;
            r.is_empty().then_some(FileRecord {
                id,
                bucket,
                filename,
                content_type,
                size,
                blake3,
                created,
                expires,
                restricted: flags & 1 != 0,
                content,
            })
        })()
        .ok_or_else(corrupt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let meta = BlobMeta {
            refs: Some(3),
            size: 5,
            sha256: [7; 32],
            sha1: Some([1; 20]),
            md5: None,
            created: Timestamp(-3),
            inline: true,
            zero_since: Some(Timestamp(9)),
        };
        assert_eq!(BlobMeta::decode(b"k", &meta.encode()).unwrap(), meta);
        // A record of version 1 (its count in `bs.refs`) reads back without a count.
        let older = BlobMeta { refs: None, ..meta };
        assert_eq!(older.encode()[0], 1);
        assert_eq!(
            older.encode().len() + 8,
            BlobMeta {
                refs: Some(0),
                ..older.clone()
            }
            .encode()
            .len()
        );
        assert_eq!(BlobMeta::decode(b"k", &older.encode()).unwrap(), older);
        assert!(BlobMeta::decode(b"k", &older.encode()[..40]).is_err());
        let file = FileRecord {
            id: FileId(3),
            bucket: BucketName::new("b").unwrap(),
            filename: "f.txt".into(),
            content_type: "text/plain".into(),
            size: 10,
            blake3: Blake3Hash([2; 32]),
            created: Timestamp(100),
            expires: Some(Timestamp(200)),
            restricted: true,
            content: ContentState::Expired,
        };
        assert_eq!(
            FileRecord::decode(FileId(3), b"k", &file.encode()).unwrap(),
            file
        );
        assert!(FileRecord::decode(FileId(3), b"k", &file.encode()[..20]).is_err());
    }
}
