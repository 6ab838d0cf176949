//! Blob bytes in memory, for property tests and fuzzing: the filesystem backend fsyncs every
//! blob and its directory, which costs milliseconds each on a busy disk and would make the
//! fuzzers measure the disk. Its own crash behaviour is shown by the blob store's crash test
//! and the soaks. A simulated crash of the engine keeps these bytes, as it keeps files.

use std::collections::BTreeMap;
use std::io::{Cursor, Read, Write};
use std::sync::{Arc, Mutex};

use crate::{Blake3Hash, BlobBackend, StoredBlob, TempBlob, Timestamp};

type Blobs = Arc<Mutex<BTreeMap<[u8; 32], Arc<Vec<u8>>>>>;

/// A [`BlobBackend`] over a map in memory. Clones share the blobs, so a store reopened over a
/// clone finds what the previous one stored. Temporaries are never listed (an unfinished upload
/// leaves nothing), and every blob's modification time is 0 for [`BlobBackend::sweep`].
#[derive(Debug, Default, Clone)]
pub struct MemBackend {
    blobs: Blobs,
}

#[derive(Debug)]
struct MemTemp {
    bytes: Vec<u8>,
    blobs: Blobs,
}

impl Write for MemTemp {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl TempBlob for MemTemp {
    fn persist(self: Box<Self>, hash: &Blake3Hash) -> crate::Result<()> {
        let mut blobs = self.blobs.lock().unwrap_or_else(|e| e.into_inner());
        blobs.insert(*hash.as_bytes(), Arc::new(self.bytes));
        Ok(())
    }
}

impl MemBackend {
    /// An empty backend.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many blobs it holds.
    pub fn len(&self) -> usize {
        self.blobs.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether it holds no blob.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl BlobBackend for MemBackend {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn create_temp(&self) -> crate::Result<Box<dyn TempBlob>> {
        Ok(Box::new(MemTemp {
            bytes: Vec::new(),
            blobs: Arc::clone(&self.blobs),
        }))
    }

    fn open_range(
        &self,
        hash: &Blake3Hash,
        offset: u64,
        len: u64,
    ) -> crate::Result<Option<Box<dyn Read + Send>>> {
        let blobs = self.blobs.lock().unwrap_or_else(|e| e.into_inner());
        Ok(blobs.get(hash.as_bytes()).map(|bytes| {
            let start = usize::try_from(offset)
                .unwrap_or(usize::MAX)
                .min(bytes.len());
            let end = start
                .saturating_add(usize::try_from(len).unwrap_or(usize::MAX))
                .min(bytes.len());
            Box::new(Cursor::new(bytes[start..end].to_vec())) as Box<dyn Read + Send>
        }))
    }

    fn delete(&self, hash: &Blake3Hash) -> crate::Result<()> {
        let mut blobs = self.blobs.lock().unwrap_or_else(|e| e.into_inner());
        blobs.remove(hash.as_bytes());
        Ok(())
    }

    fn sweep(
        &self,
        _older_than: Timestamp,
        visit: &mut dyn FnMut(StoredBlob) -> crate::Result<()>,
    ) -> crate::Result<u64> {
        let hashes: Vec<[u8; 32]> = {
            let blobs = self.blobs.lock().unwrap_or_else(|e| e.into_inner());
            blobs.keys().copied().collect()
        };
        for hash in hashes {
            visit(StoredBlob {
                hash: Blake3Hash(hash),
                modified: Timestamp(0),
            })?;
        }
        Ok(0)
    }
}
