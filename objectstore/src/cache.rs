//! [`CachedBackend`]: a bounded least-recently-used read cache on local disk.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use blobstore::{Blake3Hash, BlobBackend, StoredBlob, TempBlob, Timestamp};
use engine::{Direction, Durability, Engine, EngineConfig, Keyspace, ScanRange, WriteBatch};

use crate::config::CacheConfig;
use crate::error::{Error, Result};

/// The keyspaces of the cache's own index.
const CACHE_KEYSPACES: &[&str] = &["entries", "lru", "meta"];
const META_TOTAL: &[u8] = b"total";

/// Hits and misses since the cache was opened, and what it holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheStats {
    /// Reads served from the cache.
    pub hits: u64,
    /// Reads that went to the backend behind it.
    pub misses: u64,
    /// Blobs inserted since opening.
    pub inserted: u64,
    /// Blobs evicted since opening.
    pub evicted: u64,
    /// The bytes of the cached blobs.
    pub bytes: u64,
}

#[derive(Debug)]
struct Cache {
    files: PathBuf,
    tmp: PathBuf,
    engine: Arc<dyn Engine>,
    entries: Keyspace,
    lru: Keyspace,
    meta: Keyspace,
    capacity: u64,
    max_object: u64,
    /// Serializes inserts, touches and evictions; holds the next LRU sequence number.
    seq: Mutex<u64>,
    total: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
    inserted: AtomicU64,
    evicted: AtomicU64,
}

/// A read cache of bounded size on local disk in front of another backend (the object store).
///
/// A whole-blob read that misses streams from the backend and, as it goes, into a temporary
/// file; when the last byte has been read and the content hashes to the blob's BLAKE3, the
/// file is renamed into the cache. Range reads from offset 0 are cached the same way only if
/// they cover the whole blob (the hash says so). Hits are served from the file with no request
/// to the backend, so cached blobs stay readable while the object store is down.
///
/// The index is a small RocksDB in `dir/index`: blob → (size, sequence number) and sequence
/// number → blob, plus the total size as a counter. Each hit moves the blob to the newest
/// sequence number (a buffered write); an insert evicts from the oldest end until the total
/// fits the capacity. Opening reads two keys: nothing is scanned. A crash can lose the last
/// buffered touches (the order is then slightly stale) and, between a rename and its synced
/// index write, leak one file; an index entry whose file is missing is dropped on its next
/// read.
#[derive(Debug)]
pub struct CachedBackend {
    inner: Arc<dyn BlobBackend>,
    cache: Arc<Cache>,
}

fn seq_key(seq: u64, hash: &Blake3Hash) -> [u8; 40] {
    let mut key = [0u8; 40];
    key[..8].copy_from_slice(&seq.to_be_bytes());
    key[8..].copy_from_slice(&hash.0);
    key
}

fn entry_value(size: u64, seq: u64) -> [u8; 16] {
    let mut value = [0u8; 16];
    value[..8].copy_from_slice(&size.to_be_bytes());
    value[8..].copy_from_slice(&seq.to_be_bytes());
    value
}

impl CachedBackend {
    /// Opens (creating) the cache in `config.dir` in front of `inner`.
    ///
    /// # Errors
    /// The index engine's error, or [`Error::Io`] preparing the directories.
    pub fn open(inner: Arc<dyn BlobBackend>, config: &CacheConfig) -> Result<Self> {
        let files = config.dir.join("blobs");
        let tmp = config.dir.join("tmp");
        for dir in [&files, &tmp] {
            fs::create_dir_all(dir).map_err(|e| Error::io("creating", dir, e))?;
        }
        // Temporaries of reads that were cut short by a crash; the directory only ever holds
        // reads in flight.
        if let Ok(entries) = fs::read_dir(&tmp) {
            for entry in entries.flatten() {
                let _ = fs::remove_file(entry.path());
            }
        }
        let engine = EngineConfig::rocksdb(config.dir.join("index")).open(CACHE_KEYSPACES)?;
        let entries = engine.keyspace(CACHE_KEYSPACES[0])?;
        let lru = engine.keyspace(CACHE_KEYSPACES[1])?;
        let meta = engine.keyspace(CACHE_KEYSPACES[2])?;
        let next_seq = match engine
            .scan(lru, ScanRange::all(), Direction::Reverse)?
            .next()
        {
            Some(kv) => {
                let (key, _) = kv?;
                let bytes: [u8; 8] =
                    key.get(..8)
                        .and_then(|b| b.try_into().ok())
                        .ok_or(Error::CorruptRecord {
                            what: "cache order",
                            key: key.clone(),
                        })?;
                u64::from_be_bytes(bytes) + 1
            }
            None => 0,
        };
        let total = u64::try_from(engine.counter(meta, META_TOTAL)?).unwrap_or(0);
        Ok(CachedBackend {
            inner,
            cache: Arc::new(Cache {
                files,
                tmp,
                engine,
                entries,
                lru,
                meta,
                capacity: config.capacity_bytes,
                max_object: config
                    .max_object_bytes
                    .unwrap_or(config.capacity_bytes / 8)
                    .min(config.capacity_bytes),
                seq: Mutex::new(next_seq),
                total: AtomicU64::new(total),
                hits: AtomicU64::new(0),
                misses: AtomicU64::new(0),
                inserted: AtomicU64::new(0),
                evicted: AtomicU64::new(0),
            }),
        })
    }

    /// The counters since opening and the bytes held.
    pub fn stats(&self) -> CacheStats {
        let c = &self.cache;
        CacheStats {
            hits: c.hits.load(Ordering::Relaxed),
            misses: c.misses.load(Ordering::Relaxed),
            inserted: c.inserted.load(Ordering::Relaxed),
            evicted: c.evicted.load(Ordering::Relaxed),
            bytes: c.total.load(Ordering::Relaxed),
        }
    }

    /// Whether `hash` is cached.
    ///
    /// # Errors
    /// The index engine's error.
    pub fn contains(&self, hash: &Blake3Hash) -> Result<bool> {
        Ok(self.cache.entry(hash)?.is_some())
    }
}

impl Cache {
    fn path(&self, hash: &Blake3Hash) -> PathBuf {
        let hex = hash.to_hex();
        self.files.join(&hex[..2]).join(hex)
    }

    fn entry(&self, hash: &Blake3Hash) -> Result<Option<(u64, u64)>> {
        match self.engine.get(self.entries, &hash.0)? {
            Some(value) if value.len() == 16 => Ok(Some((
                u64::from_be_bytes(value[..8].try_into().expect("8 bytes")),
                u64::from_be_bytes(value[8..].try_into().expect("8 bytes")),
            ))),
            Some(_) => Err(Error::CorruptRecord {
                what: "cache entry",
                key: hash.0.to_vec(),
            }),
            None => Ok(None),
        }
    }

    /// Serves a hit: the file, positioned, and the entry moved to the newest end.
    fn open_hit(
        &self,
        hash: &Blake3Hash,
        offset: u64,
        len: u64,
    ) -> Result<Option<Box<dyn Read + Send>>> {
        let Some((size, _)) = self.entry(hash)? else {
            return Ok(None);
        };
        let path = self.path(hash);
        let mut file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.remove(hash)?;
                return Ok(None);
            }
            Err(e) => return Err(Error::io("opening", &path, e)),
        };
        file.seek(SeekFrom::Start(offset))
            .map_err(|e| Error::io("seeking in", &path, e))?;
        {
            let mut seq = self.seq.lock().unwrap_or_else(PoisonError::into_inner);
            // Re-read under the lock: an eviction may have raced.
            if let Some((size, old)) = self.entry(hash)? {
                let mut batch = WriteBatch::new();
                batch.delete(self.lru, seq_key(old, hash));
                batch.put(self.lru, seq_key(*seq, hash), []);
                batch.put(self.entries, hash.0, entry_value(size, *seq));
                self.engine.write(batch, Durability::Buffered)?;
                *seq += 1;
            }
        }
        self.hits.fetch_add(1, Ordering::Relaxed);
        let len = len.min(size.saturating_sub(offset));
        Ok(Some(Box::new(file.take(len))))
    }

    fn insert(&self, hash: &Blake3Hash, temp: tempfile::NamedTempFile, size: u64) -> Result<()> {
        let mut seq = self.seq.lock().unwrap_or_else(PoisonError::into_inner);
        if self.entry(hash)?.is_some() {
            return Ok(());
        }
        let path = self.path(hash);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|e| Error::io("creating", parent, e))?;
        }
        temp.persist(&path)
            .map_err(|e| Error::io("renaming into", &path, e.error))?;
        let mut batch = WriteBatch::new();
        batch.put(self.entries, hash.0, entry_value(size, *seq));
        batch.put(self.lru, seq_key(*seq, hash), []);
        batch.counter_add(
            self.meta,
            META_TOTAL,
            i64::try_from(size).unwrap_or(i64::MAX),
        );
        self.engine.write(batch, Durability::Sync)?;
        *seq += 1;
        self.total.fetch_add(size, Ordering::Relaxed);
        self.inserted.fetch_add(1, Ordering::Relaxed);
        self.evict_locked()
    }

    /// Evicts the least recently used blobs until the total fits. The caller holds the lock.
    fn evict_locked(&self) -> Result<()> {
        while self.total.load(Ordering::Relaxed) > self.capacity {
            let Some(kv) = self
                .engine
                .scan(self.lru, ScanRange::all(), Direction::Forward)?
                .next()
            else {
                break;
            };
            let (key, _) = kv?;
            let hash = Blake3Hash(key.get(8..40).and_then(|h| h.try_into().ok()).ok_or(
                Error::CorruptRecord {
                    what: "cache order",
                    key: key.clone(),
                },
            )?);
            self.remove_locked(&hash, Some(key))?;
            self.evicted.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    fn remove(&self, hash: &Blake3Hash) -> Result<()> {
        let _guard = self.seq.lock().unwrap_or_else(PoisonError::into_inner);
        self.remove_locked(hash, None)
    }

    fn remove_locked(&self, hash: &Blake3Hash, lru_key: Option<Vec<u8>>) -> Result<()> {
        let mut batch = WriteBatch::new();
        let mut size = 0;
        if let Some((s, seq)) = self.entry(hash)? {
            size = s;
            batch.delete(self.lru, seq_key(seq, hash));
            batch.delete(self.entries, hash.0);
            batch.counter_add(self.meta, META_TOTAL, -i64::try_from(s).unwrap_or(i64::MAX));
        }
        if let Some(key) = lru_key {
            batch.delete(self.lru, key);
        }
        if batch.is_empty() {
            return Ok(());
        }
        // The record goes first: an entry without its file heals itself, a file without
        // its entry would leak.
        self.engine.write(batch, Durability::Buffered)?;
        self.total.fetch_sub(size, Ordering::Relaxed);
        let path = self.path(hash);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("removing", &path, e)),
        }
    }
}

/// Reads from the backend and copies into a temporary cache file; caches the blob when what
/// was read hashes to it.
struct TeeReader {
    inner: Box<dyn Read + Send>,
    cache: Arc<Cache>,
    hash: Blake3Hash,
    want: u64,
    seen: u64,
    hasher: blake3::Hasher,
    file: Option<BufWriter<tempfile::NamedTempFile>>,
}

impl TeeReader {
    fn finish(&mut self) {
        let Some(file) = self.file.take() else { return };
        if Blake3Hash(*self.hasher.finalize().as_bytes()) != self.hash {
            // Only part of the blob was read.
            return;
        }
        let result = file
            .into_inner()
            .map_err(|e| Error::io("writing", &self.cache.tmp, e.into_error()))
            .and_then(|temp| self.cache.insert(&self.hash, temp, self.seen));
        if let Err(error) = result {
            tracing::warn!(hash = %self.hash, %error, "could not cache a blob");
        }
    }
}

impl Read for TeeReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(file) = &mut self.file {
            if self.seen + n as u64 > self.cache.max_object {
                self.file = None;
            } else if file.write_all(&buf[..n]).is_err() {
                // A full cache disk must not fail the read.
                self.file = None;
            } else {
                self.hasher.update(&buf[..n]);
            }
        }
        self.seen += n as u64;
        if n == 0 || self.seen >= self.want {
            self.finish();
        }
        Ok(n)
    }
}

impl BlobBackend for CachedBackend {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn create_temp(&self) -> blobstore::Result<Box<dyn TempBlob>> {
        self.inner.create_temp()
    }

    fn open_range(
        &self,
        hash: &Blake3Hash,
        offset: u64,
        len: u64,
    ) -> blobstore::Result<Option<Box<dyn Read + Send>>> {
        match self.cache.open_hit(hash, offset, len) {
            Ok(Some(reader)) => return Ok(Some(reader)),
            Ok(None) => {}
            Err(error) => tracing::warn!(%hash, %error, "cache lookup failed"),
        }
        self.cache.misses.fetch_add(1, Ordering::Relaxed);
        let Some(inner) = self.inner.open_range(hash, offset, len)? else {
            return Ok(None);
        };
        if offset != 0 || len == 0 {
            return Ok(Some(inner));
        }
        let file = tempfile::Builder::new()
            .prefix("read-")
            .tempfile_in(&self.cache.tmp)
            .ok()
            .map(|f| BufWriter::with_capacity(1 << 20, f));
        Ok(Some(Box::new(TeeReader {
            inner,
            cache: self.cache.clone(),
            hash: *hash,
            want: len,
            seen: 0,
            hasher: blake3::Hasher::new(),
            file,
        })))
    }

    fn delete(&self, hash: &Blake3Hash) -> blobstore::Result<()> {
        self.cache
            .remove(hash)
            .map_err(|e| e.into_store(self.inner.name(), "drop a cached blob"))?;
        self.inner.delete(hash)
    }

    fn sweep(
        &self,
        older_than: Timestamp,
        visit: &mut dyn FnMut(StoredBlob) -> blobstore::Result<()>,
    ) -> blobstore::Result<u64> {
        self.inner.sweep(older_than, visit)
    }
}
