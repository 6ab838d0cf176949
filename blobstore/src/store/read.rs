//! Reads: records, tokens, the hot-file cache and content streams (lookups by digest are in
//! `lookup.rs`).

use std::fmt;
use std::io::{self, Read};
use std::ops::Range;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::hot::{HotCache, SmallFile};
use crate::keys;
use crate::records::{BlobInfo, ContentState, FileRecord};
use crate::token::{TokenError, DEFAULT_TOKEN_LIFETIME};
use crate::types::{Blake3Hash, Day, FileId};

use super::{as_u64, Store};

/// Which files a digest lookup returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Visibility {
    /// Files readable by anyone.
    Public,
    /// Files readable only with a token.
    Restricted,
}

/// How a read is authorised.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access<'a> {
    /// An anonymous reader: restricted files are refused.
    Anonymous,
    /// A reader presenting a token (checked for restricted files, ignored for public ones).
    Token(&'a str),
    /// The server itself (admin tools, mirrors): no check.
    Trusted,
}

/// A streaming read of a file's content (whole or a byte range).
pub struct ContentReader {
    record: FileRecord,
    sha256: [u8; 32],
    range: Range<u64>,
    remaining: u64,
    inner: Box<dyn Read + Send>,
}

impl fmt::Debug for ContentReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContentReader")
            .field("record", &self.record)
            .field("range", &self.range)
            .finish_non_exhaustive()
    }
}

impl ContentReader {
    /// The file being read.
    pub fn record(&self) -> &FileRecord {
        &self.record
    }

    /// The SHA-256 of the file's whole content (for `Repr-Digest`), from its blob record.
    pub fn sha256(&self) -> &[u8; 32] {
        &self.sha256
    }

    /// The byte range being read.
    pub fn range(&self) -> Range<u64> {
        self.range.clone()
    }

    /// The number of bytes this reader yields in total.
    pub fn len(&self) -> u64 {
        self.range.end - self.range.start
    }

    /// Whether it yields no byte.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Read for ContentReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let max = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..max])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "blob {} ended {} bytes early",
                    self.record.blake3, self.remaining
                ),
            ));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

impl Store {
    /// The file with this id.
    ///
    /// # Errors
    /// [`Error::NotFound`], or the engine's error.
    pub fn file(&self, id: FileId) -> Result<FileRecord> {
        let key = keys::file(id);
        match self.inner.engine.get(self.inner.ks.files, &key)? {
            Some(bytes) => FileRecord::decode(id, &key, &bytes),
            None => Err(Error::NotFound { id }),
        }
    }

    /// What the store knows about a blob, or `None` when it is not stored.
    ///
    /// # Errors
    /// The engine's error.
    pub fn blob_info(&self, hash: &Blake3Hash) -> Result<Option<BlobInfo>> {
        let Some(meta) = self.blob_meta(hash)? else {
            return Ok(None);
        };
        let refcount = self.refcount(hash, &meta)?;
        Ok(Some(BlobInfo {
            hash: *hash,
            size: meta.size,
            sha256: meta.sha256,
            sha1: meta.sha1,
            md5: meta.md5,
            created: meta.created,
            inline: meta.inline,
            refcount,
            zero_ref_since: meta.zero_since,
        }))
    }

    /// A token for file `id` valid for `lifetime` (default 1 day).
    ///
    /// # Errors
    /// [`Error::NotFound`], or the engine's error.
    pub fn issue_token(&self, id: FileId, lifetime: Option<Duration>) -> Result<String> {
        let record = self.file(id)?;
        let expires = self.now().plus(lifetime.unwrap_or(DEFAULT_TOKEN_LIFETIME));
        Ok(self
            .inner
            .signer
            .sign(id, &record.filename, expires)
            .to_string())
    }

    /// Checks that `access` may read `record`.
    ///
    /// # Errors
    /// [`Error::Forbidden`] with the reason.
    pub fn authorize(&self, record: &FileRecord, access: Access<'_>) -> Result<()> {
        if !record.restricted {
            return Ok(());
        }
        let outcome = match access {
            Access::Trusted => Ok(()),
            Access::Anonymous => Err(TokenError::Missing),
            Access::Token(token) => {
                self.inner
                    .signer
                    .verify(token, record.id, &record.filename, self.now())
            }
        };
        outcome.map_err(|reason| Error::Forbidden {
            id: record.id,
            reason,
        })
    }

    /// Checks that `access` may read the content of `record` now: the file's restriction
    /// (its token), its content state and its expiry. [`Store::read`] applies exactly these
    /// checks; a reader answering from [`Store::cached_file`] must apply them too. Touches
    /// neither the engine nor the disk.
    ///
    /// # Errors
    /// [`Error::Forbidden`], or [`Error::ContentGone`] (deleted, or past its expiry).
    pub fn check_readable(&self, record: &FileRecord, access: Access<'_>) -> Result<()> {
        self.authorize(record, access)?;
        let id = record.id;
        match record.content {
            ContentState::Present => {}
            ContentState::Deleted => {
                return Err(Error::ContentGone {
                    id,
                    reason: "deleted",
                })
            }
            ContentState::Expired => {
                return Err(Error::ContentGone {
                    id,
                    reason: "expired",
                })
            }
        }
        if record.expires.is_some_and(|expires| self.now() >= expires) {
            return Err(Error::ContentGone {
                id,
                reason: "expired",
            });
        }
        Ok(())
    }

    /// File `id` with its whole content if the hot-file cache holds it. Never touches the
    /// engine or the disk, so async code may call it on its own threads; the record has not
    /// been checked: apply [`Store::check_readable`] before serving it.
    pub fn cached_file(&self, id: FileId) -> Option<SmallFile> {
        self.inner.hot.as_ref()?.get(id)
    }

    /// File `id` with its whole content, when its content is present and inline (at most the
    /// inline threshold): from the hot-file cache, else with one read of the record and one
    /// of the content, checked against its BLAKE3 hash and then cached. `Ok(None)` when the
    /// content is not inline or not present: [`Store::read`] handles those. The record has
    /// not been checked: apply [`Store::check_readable`] before serving it. Counts nothing.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::Corrupt`], or the engine's error.
    pub fn small_file(&self, id: FileId) -> Result<Option<SmallFile>> {
        if let Some(file) = self.cached_file(id) {
            return Ok(Some(file));
        }
        // Noted before the engine is read: an invalidation from here on voids the fill.
        let generation = self.inner.hot.as_ref().map(|hot| hot.generation(id));
        let record = self.file(id)?;
        if record.content != ContentState::Present
            || record.size > self.inner.inline_threshold as u64
        {
            return Ok(None);
        }
        let hash = record.blake3;
        let Some(bytes) = self.inner.engine.get(self.inner.ks.inline, &hash.0)? else {
            // Not inline: stored before a change of the threshold, or in a backend.
            return Ok(None);
        };
        if Blake3Hash::of(&bytes) != hash {
            return Err(Error::Corrupt {
                hash,
                detail: "inline content does not match its hash".to_string(),
            });
        }
        if bytes.len() as u64 != record.size {
            return Err(Error::Corrupt {
                hash,
                detail: format!(
                    "inline content is {} bytes, not the file's {}",
                    bytes.len(),
                    record.size
                ),
            });
        }
        let file = SmallFile::new(record, bytes::Bytes::from(bytes));
        if let (Some(hot), Some(generation)) = (&self.inner.hot, generation) {
            hot.fill(generation, file.clone());
        }
        Ok(Some(file))
    }

    /// The number of files in the hot-file cache.
    pub fn cached_files(&self) -> usize {
        self.inner.hot.as_ref().map_or(0, HotCache::len)
    }

    /// Counts one download of file `id` today, in memory: it reaches the engine with the
    /// next [`Store::flush_downloads`]. Never touches the engine (async code may call it).
    pub fn count_download(&self, id: FileId) {
        self.inner.downloads.add(id, self.now().day());
    }

    /// Writes the download counts gathered in memory to the engine, as one buffered batch.
    /// Call it every [`crate::DOWNLOADS_FLUSH_INTERVAL`] when downloads are counted with
    /// [`Store::count_download`] only; [`Store::read`] calls it when counts have waited [`crate::DOWNLOADS_FLUSH_INTERVAL`], and
    /// [`Store::flush`] and closing the store call it too.
    ///
    /// # Errors
    /// The engine's error (the counts stay pending).
    pub fn flush_downloads(&self) -> Result<()> {
        self.inner.flush_downloads()
    }

    /// Opens file `id` for reading, whole or the byte range `range` (`start..end`, end
    /// exclusive). Reading from byte 0 counts a download for today.
    ///
    /// Inline content is checked against its hash before anything is returned; file content
    /// is checked by the online scrub ([`Store::scrub_step`]), and a blob it found damaged is
    /// refused with [`Error::Corrupt`] (a short file also gives an `UnexpectedEof` read error).
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::Forbidden`], [`Error::ContentGone`] (deleted, or past its
    /// expiry), [`Error::InvalidRange`], [`Error::Corrupt`], or an I/O or engine error.
    pub fn read(
        &self,
        id: FileId,
        access: Access<'_>,
        range: Option<Range<u64>>,
    ) -> Result<ContentReader> {
        let record = self.file(id)?;
        self.check_readable(&record, access)?;
        let range = range.unwrap_or(0..record.size);
        if range.start > range.end || range.end > record.size {
            return Err(Error::InvalidRange {
                id,
                start: range.start,
                end: range.end,
                size: record.size,
            });
        }
        let hash = record.blake3;
        let meta = self.blob_meta(&hash)?.ok_or_else(|| Error::Corrupt {
            hash,
            detail: format!("file {id} links to a blob that has no record"),
        })?;
        let len = range.end - range.start;
        let inner: Box<dyn Read + Send> = if meta.inline {
            let bytes = self
                .inner
                .engine
                .get(self.inner.ks.inline, &hash.0)?
                .ok_or_else(|| Error::Corrupt {
                    hash,
                    detail: "inline content missing".to_string(),
                })?;
            if Blake3Hash::of(&bytes) != hash {
                return Err(Error::Corrupt {
                    hash,
                    detail: "inline content does not match its hash".to_string(),
                });
            }
            let start = usize::try_from(range.start).unwrap_or(usize::MAX);
            let end = usize::try_from(range.end).unwrap_or(usize::MAX);
            let slice = bytes.get(start..end).ok_or_else(|| Error::Corrupt {
                hash,
                detail: format!(
                    "inline content is {} bytes, shorter than its size",
                    bytes.len()
                ),
            })?;
            Box::new(io::Cursor::new(slice.to_vec()))
        } else {
            // Bytes read from the backend are not rehashed here (a range is not a whole
            // blob): a blob the scrub found damaged is refused instead.
            self.check_scrubbed(&hash)?;
            self.inner
                .backend
                .open_range(&hash, range.start, len)?
                .ok_or_else(|| Error::Corrupt {
                    hash,
                    detail: "blob bytes are missing".to_string(),
                })?
        };
        if range.start == 0 {
            self.count_download(id);
            if self.inner.downloads.due(self.now()) {
                if let Err(error) = self.flush_downloads() {
                    // A lost download count must not fail the download.
                    tracing::warn!(%id, %error, "could not write download counts");
                }
            }
        }
        Ok(ContentReader {
            record,
            sha256: meta.sha256,
            range,
            remaining: len,
            inner,
        })
    }

    /// The downloads of file `id` on `day`.
    ///
    /// # Errors
    /// The engine's error.
    pub fn downloads(&self, id: FileId, day: Day) -> Result<u64> {
        let written = as_u64(self.counter(self.inner.ks.downloads, &keys::download(id, day))?);
        Ok(written + self.inner.downloads.pending(id, day))
    }
}
