//! The hot-file cache: small files' records with their inline content, held in memory so
//! that a reader (an HTTP handler on an async thread) answers without touching the engine.
//!
//! Correctness comes before hits: a file deleted, cut or expired must never be served from
//! here. Every change to a file record goes through [`HotCache::invalidate`] once its batch
//! has been applied (and before the change is acknowledged), and a fill can never put back a
//! record older than an invalidation: a filler notes its stripe's generation *before* reading
//! the engine, and [`HotCache::fill`] inserts only when no invalidation of the stripe happened
//! since. Either the invalidation came first (then the engine read saw the new state), or the
//! generation moved (then the fill is dropped). Fill and invalidation take the stripe's mutex;
//! hits take only the cache's shard lock.

use std::any::Any;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use quick_cache::sync::Cache;
use quick_cache::Weighter;

use crate::records::FileRecord;
use crate::types::FileId;

/// Stripes of invalidation generations. Ids are sequential, so `id % STRIPES` spreads them.
const STRIPES: usize = 256;

/// The memory a cached entry costs beyond its content and strings, so that the cache's bound
/// holds for tiny files too: the record's `Arc`, the cache's slot, the content's shared
/// header, the value the embedding service derives (the librarian's response headers: about
/// 600 bytes in six allocations) and the allocator's rounding of each. Measured, not summed:
/// 100,000 cached files of 50 bytes grew the librarian's resident memory by 150-173 MiB, about
/// 1,600 bytes an entry besides its 83 bytes of content and strings (`DESIGN.md`, "Hot-file
/// cache"); weighed at 192 bytes then, a 64 MiB cache of tiny files could grow to ~400 MB.
const ENTRY_OVERHEAD: u64 = 1600;

/// A small file: its record and its whole content, checked against its BLAKE3 hash when it
/// was read from the engine. Cheap to clone (one reference count).
#[derive(Clone)]
pub struct SmallFile {
    inner: Arc<SmallFileInner>,
}

struct SmallFileInner {
    record: FileRecord,
    content: Bytes,
    /// What the embedding service derives from the record once (see [`SmallFile::derived`]).
    derived: OnceLock<Box<dyn Any + Send + Sync>>,
}

impl std::fmt::Debug for SmallFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmallFile")
            .field("record", &self.inner.record)
            .field("content_len", &self.inner.content.len())
            .finish_non_exhaustive()
    }
}

impl SmallFile {
    pub(crate) fn new(record: FileRecord, content: Bytes) -> Self {
        SmallFile {
            inner: Arc::new(SmallFileInner {
                record,
                content,
                derived: OnceLock::new(),
            }),
        }
    }

    /// The file's record as it was when the content was read.
    pub fn record(&self) -> &FileRecord {
        &self.inner.record
    }

    /// The whole content (`record().size` bytes).
    pub fn content(&self) -> &Bytes {
        &self.inner.content
    }

    /// A value derived from this copy of the record, computed by `derive` on first use and
    /// kept with the cached file (an HTTP server keeps its response headers here, so a hit
    /// formats nothing). It lives as long as this copy: a change to the file invalidates the
    /// copy, so derived values never outlive the record they came from. `None` when a value
    /// of another type was kept first (one embedding service should use one type).
    pub fn derived<T: Any + Send + Sync>(
        &self,
        derive: impl FnOnce(&FileRecord) -> T,
    ) -> Option<&T> {
        self.inner
            .derived
            .get_or_init(|| Box::new(derive(&self.inner.record)))
            .downcast_ref::<T>()
    }

    fn weight(&self) -> u64 {
        let record = &self.inner.record;
        ENTRY_OVERHEAD
            + self.inner.content.len() as u64
            + record.filename.len() as u64
            + record.content_type.len() as u64
            + record.bucket.as_str().len() as u64
    }
}

#[derive(Clone, Copy, Debug)]
struct ByBytes;

impl Weighter<FileId, SmallFile> for ByBytes {
    fn weight(&self, _id: &FileId, file: &SmallFile) -> u64 {
        file.weight()
    }
}

/// A bounded map from file id to [`SmallFile`] with invalidation generations.
pub(crate) struct HotCache {
    files: Cache<FileId, SmallFile, ByBytes>,
    generations: Box<[Mutex<u64>]>,
}

impl std::fmt::Debug for HotCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HotCache")
            .field("files", &self.files.len())
            .field("bytes", &self.files.weight())
            .field("capacity", &self.files.capacity())
            .finish()
    }
}

impl HotCache {
    /// A cache holding at most about `capacity_bytes` of entries (see [`ENTRY_OVERHEAD`]).
    pub(crate) fn new(capacity_bytes: u64) -> Self {
        // The estimate sizes the cache's tables; 4 KiB files are the expected common case.
        let estimated_items = usize::try_from(capacity_bytes / 4096).unwrap_or(usize::MAX);
        HotCache {
            files: Cache::with_weighter(estimated_items.max(16), capacity_bytes, ByBytes),
            generations: (0..STRIPES).map(|_| Mutex::new(0)).collect(),
        }
    }

    fn stripe(&self, id: FileId) -> &Mutex<u64> {
        &self.generations[(id.0 % STRIPES as u64) as usize]
    }

    /// The cached file `id`, if any. Never blocks on I/O.
    pub(crate) fn get(&self, id: FileId) -> Option<SmallFile> {
        self.files.get(&id)
    }

    /// The generation to hand to [`HotCache::fill`]: read it *before* reading the engine.
    pub(crate) fn generation(&self, id: FileId) -> u64 {
        *self.stripe(id).lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Caches `file` unless an invalidation of its stripe happened since `generation`.
    pub(crate) fn fill(&self, generation: u64, file: SmallFile) {
        let id = file.record().id;
        let current = self.stripe(id).lock().unwrap_or_else(|e| e.into_inner());
        if *current == generation {
            self.files.insert(id, file);
        }
    }

    /// Forgets file `id` and makes every fill that started before this call a no-op. Call
    /// it after the batch changing the file's record has been applied.
    pub(crate) fn invalidate(&self, id: FileId) {
        let mut current = self.stripe(id).lock().unwrap_or_else(|e| e.into_inner());
        *current = current.wrapping_add(1);
        self.files.remove(&id);
    }

    /// Forgets every file, and makes every fill that started before this call a no-op.
    pub(crate) fn clear(&self) {
        for stripe in &self.generations {
            let mut current = stripe.lock().unwrap_or_else(|e| e.into_inner());
            *current = current.wrapping_add(1);
        }
        self.files.clear();
    }

    /// The number of cached files.
    pub(crate) fn len(&self) -> usize {
        self.files.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::ContentState;
    use crate::types::{Blake3Hash, BucketName, Timestamp};

    fn file(id: u64, content: &'static [u8]) -> SmallFile {
        SmallFile::new(
            FileRecord {
                id: FileId(id),
                bucket: BucketName::new("b").unwrap(),
                filename: "f".into(),
                content_type: "text/plain".into(),
                size: content.len() as u64,
                blake3: Blake3Hash::of(content),
                created: Timestamp(0),
                expires: None,
                restricted: false,
                content: ContentState::Present,
            },
            Bytes::from_static(content),
        )
    }

    #[test]
    fn a_fill_older_than_an_invalidation_is_dropped() {
        let cache = HotCache::new(1 << 20);
        let before = cache.generation(FileId(7));
        cache.invalidate(FileId(7));
        cache.fill(before, file(7, b"stale"));
        assert!(cache.get(FileId(7)).is_none());
        let after = cache.generation(FileId(7));
        cache.fill(after, file(7, b"fresh"));
        assert_eq!(cache.get(FileId(7)).unwrap().content().as_ref(), b"fresh");
        cache.invalidate(FileId(7));
        assert!(cache.get(FileId(7)).is_none());
    }

    #[test]
    fn the_cache_stays_within_its_bytes() {
        let cache = HotCache::new(64 << 10);
        static CONTENT: [u8; 4096] = [b'x'; 4096];
        for id in 0..1000 {
            let generation = cache.generation(FileId(id));
            cache.fill(generation, file(id, &CONTENT));
        }
        assert!(cache.files.weight() <= 64 << 10, "{cache:?}");
        assert!(cache.len() > 0 && cache.len() < 1000, "{cache:?}");
    }
}
