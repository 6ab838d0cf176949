//! [`ObjectStoreBackend`]: the blob store's [`BlobBackend`] over Swift or S3.

use std::collections::HashSet;
use std::fs;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Instant, UNIX_EPOCH};

use blobstore::{Blake3Hash, BlobBackend, StoredBlob, TempBlob, Timestamp};
use engine::{Durability, Engine, Keyspace, WriteBatch};

use crate::client::{ObjectClient, Retry, Verified};
use crate::config::{ObjectStoreConfig, Protocol};
use crate::error::{Error, Result};
use crate::s3::S3Client;
use crate::swift::SwiftClient;

/// The engine keyspaces the backend keeps its location index in: open the engine with these
/// beside [`blobstore::KEYSPACES`].
pub const KEYSPACES: &[&str] = &["objectstore.locations", "objectstore.meta"];

const META_CURRENT: &[u8] = b"current";
const META_COUNT: &[u8] = b"count/";

/// Where one blob is: its container index, whether it is segmented, its size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Location {
    pub container: u32,
    pub segmented: bool,
    pub size: u64,
}

impl Location {
    fn encode(self) -> [u8; 13] {
        let mut out = [0u8; 13];
        out[0..4].copy_from_slice(&self.container.to_be_bytes());
        out[4] = u8::from(self.segmented);
        out[5..13].copy_from_slice(&self.size.to_be_bytes());
        out
    }

    fn decode(key: &[u8], bytes: &[u8]) -> Result<Self> {
        if bytes.len() != 13 || bytes[4] > 1 {
            return Err(Error::CorruptRecord {
                what: "object location",
                key: key.to_vec(),
            });
        }
        Ok(Location {
            container: u32::from_be_bytes(bytes[0..4].try_into().expect("4 bytes")),
            segmented: bytes[4] == 1,
            size: u64::from_be_bytes(bytes[5..13].try_into().expect("8 bytes")),
        })
    }
}

fn count_key(container: u32) -> Vec<u8> {
    let mut key = META_COUNT.to_vec();
    key.extend_from_slice(&container.to_be_bytes());
    key
}

#[derive(Debug)]
struct Alloc {
    current: u32,
    /// Objects allocated to `current` (persisted ones are counted in the engine).
    allocated: u64,
}

#[derive(Debug)]
struct Shared {
    name: &'static str,
    client: Box<dyn ObjectClient>,
    engine: Arc<dyn Engine>,
    locations: Keyspace,
    meta: Keyspace,
    prefix: String,
    per_container: u64,
    threshold: u64,
    spool: PathBuf,
    retry: Retry,
    alloc: Mutex<Alloc>,
    created: Mutex<HashSet<u32>>,
}

/// Blob bytes on OpenStack Swift (native API, tempauth / v1 auth) or an S3-compatible store.
///
/// **Containers.** Objects are spread over containers (buckets) `<prefix>-000000`,
/// `<prefix>-000001`, ... of at most `objects_per_container` objects each: a persisted counter
/// in the metadata engine says which container is being filled and how many objects it was
/// given; when it is full the next one is created. A container never receives more objects
/// than the limit, whatever is deleted later. Reads find an object through the *location
/// index* (keyspace `objectstore.locations`: BLAKE3 hash → container, segmented flag, size),
/// one engine read per blob read. The object's name in its container is the hash in hex.
///
/// **Uploads.** [`BlobBackend::create_temp`] spools to a local file while the store hashes;
/// `persist` uploads it (in segments above `large_object_threshold`: Swift static large
/// objects in `<container>-segments`, S3 multipart), checks that the object is what was
/// written (up to 4 MiB: the answer's ETag is the MD5 of the bytes sent; above: a HEAD finds
/// the size written), and only then records the location (a synced engine write) and returns
/// `Ok`. A failure leaves no location, so nothing half-written is referenced; what reached the
/// store is an orphan that [`BlobBackend::sweep`] removes after the grace period.
///
/// **Failures.** Transient errors (connection refused or reset, 5xx, 408, 429, an expired
/// token, a transfer that stalls for `idle_timeout_ms`) are retried with exponential backoff
/// within `retry.budget_ms`; then the call fails with [`Error::Unavailable`] inside
/// [`blobstore::Error::Backend`] (see [`crate::is_unavailable`]). Reads that fail mid-stream
/// resume from the byte they reached. A certificate that does not verify is [`Error::Tls`],
/// not retried.
#[derive(Debug, Clone)]
pub struct ObjectStoreBackend {
    shared: Arc<Shared>,
}

impl ObjectStoreBackend {
    /// Connects per `config` (no request is made before the first operation). `engine` must
    /// have been opened with [`KEYSPACES`] (usually the blob store's own engine, so that the
    /// location index is backed up and scaled with the rest of the metadata).
    ///
    /// # Errors
    /// [`Error::Config`], or the engine's error.
    pub fn open(config: &ObjectStoreConfig, engine: Arc<dyn Engine>) -> Result<Self> {
        config.validate()?;
        let retry = Retry::new(&config.retry);
        let (name, client): (&'static str, Box<dyn ObjectClient>) = match &config.protocol {
            Protocol::Swift {
                auth_url,
                user,
                key,
            } => (
                "swift",
                Box::new(SwiftClient::new(config, auth_url, user, key, retry)?),
            ),
            Protocol::S3 { .. } => ("s3", Box::new(S3Client::new(config, retry)?)),
        };
        fs::create_dir_all(&config.spool_dir)
            .map_err(|e| Error::io("creating", &config.spool_dir, e))?;
        let locations = engine.keyspace(KEYSPACES[0])?;
        let meta = engine.keyspace(KEYSPACES[1])?;
        let current = match engine.get(meta, META_CURRENT)? {
            Some(bytes) => u32::from_be_bytes(bytes.as_slice().try_into().map_err(|_| {
                Error::CorruptRecord {
                    what: "current container",
                    key: META_CURRENT.to_vec(),
                }
            })?),
            None => 0,
        };
        let allocated = u64::try_from(engine.counter(meta, &count_key(current))?).unwrap_or(0);
        Ok(ObjectStoreBackend {
            shared: Arc::new(Shared {
                name,
                client,
                engine,
                locations,
                meta,
                prefix: config.container_prefix.clone(),
                per_container: config.objects_per_container,
                threshold: config.large_object_threshold,
                spool: config.spool_dir.clone(),
                retry,
                alloc: Mutex::new(Alloc { current, allocated }),
                created: Mutex::new(HashSet::new()),
            }),
        })
    }

    /// The name of container `index`.
    pub fn container_name(&self, index: u32) -> String {
        self.shared.container_name(index)
    }

    /// The container that holds `hash`, if it is stored.
    ///
    /// # Errors
    /// The engine's error.
    pub fn container_of(&self, hash: &Blake3Hash) -> Result<Option<String>> {
        Ok(self
            .shared
            .location(hash)?
            .map(|l| self.shared.container_name(l.container)))
    }

    /// How many containers have been started.
    pub fn containers(&self) -> u32 {
        self.shared
            .alloc
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .current
            + 1
    }

    /// Whether the object of `hash` is recorded and present in the store with its size (a
    /// HEAD request).
    ///
    /// # Errors
    /// The engine's error, or the object store's after retries.
    pub fn exists(&self, hash: &Blake3Hash) -> Result<bool> {
        let Some(location) = self.shared.location(hash)? else {
            return Ok(false);
        };
        let container = self.shared.container_name(location.container);
        Ok(self.shared.client.head(&container, &hash.to_hex())? == Some(location.size))
    }
    /// Checks that the object store answers (authentication and a listing of the current
    /// container, within the retry budget): for `/health`. An error with
    /// [`Error::is_unavailable`] means the object store is the failing dependency.
    ///
    /// # Errors
    /// The object store's error.
    pub fn probe(&self) -> Result<()> {
        let current = self
            .shared
            .alloc
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .current;
        self.shared.client.list(
            &self.shared.container_name(current),
            "health-probe/",
            &mut |_| Ok(()),
        )
    }

    /// The names of the objects in container `index` (a listing: for tools and tests).
    ///
    /// # Errors
    /// The object store's error after retries.
    pub fn objects(&self, index: u32) -> Result<Vec<String>> {
        let mut names = Vec::new();
        self.shared
            .client
            .list(&self.shared.container_name(index), "", &mut |o| {
                names.push(o.name);
                Ok(())
            })?;
        Ok(names)
    }

    /// The names of the segments of container `index`'s large objects (Swift keeps them in
    /// `<container>-segments`; S3 multipart parts are not objects, so this is empty there).
    ///
    /// # Errors
    /// The object store's error after retries.
    pub fn segments(&self, index: u32) -> Result<Vec<String>> {
        let container = self.shared.container_name(index);
        let Some(segments) = self.shared.client.segments_container(&container) else {
            return Ok(Vec::new());
        };
        let mut names = Vec::new();
        self.shared.client.list(&segments, "", &mut |o| {
            names.push(o.name);
            Ok(())
        })?;
        Ok(names)
    }
}

impl Shared {
    fn container_name(&self, index: u32) -> String {
        format!("{}-{index:06}", self.prefix)
    }

    fn location(&self, hash: &Blake3Hash) -> Result<Option<Location>> {
        match self.engine.get(self.locations, &hash.0)? {
            Some(bytes) => Ok(Some(Location::decode(&hash.0, &bytes)?)),
            None => Ok(None),
        }
    }

    /// Picks the container for a new object, starting the next one when full.
    fn allocate(&self) -> Result<u32> {
        let mut alloc = self.alloc.lock().unwrap_or_else(PoisonError::into_inner);
        if alloc.allocated >= self.per_container {
            let next = alloc.current + 1;
            let mut batch = WriteBatch::new();
            batch.put(self.meta, META_CURRENT, next.to_be_bytes());
            self.engine.write(batch, Durability::Sync)?;
            alloc.current = next;
            alloc.allocated = 0;
        }
        alloc.allocated += 1;
        Ok(alloc.current)
    }

    fn ensure_container(&self, index: u32) -> Result<()> {
        if self
            .created
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&index)
        {
            return Ok(());
        }
        self.client.ensure_container(&self.container_name(index))?;
        self.created
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(index);
        Ok(())
    }

    fn persist(&self, path: &Path, size: u64, hash: &Blake3Hash) -> Result<()> {
        let key = hash.to_hex();
        // A location left by an earlier upload whose record was lost (or a blob whose deletion
        // failed) is reused, so that one hash never has two live objects.
        let (container, fresh) = match self.location(hash)? {
            Some(location) => (location.container, false),
            None => (self.allocate()?, true),
        };
        self.ensure_container(container)?;
        let name = self.container_name(container);
        let segmented = size > self.threshold;
        // Verified when the server's ETag is the MD5 of the bytes sent (a single PUT of up to
        // 4 MiB to Swift or to most S3 stores); otherwise a HEAD checks the size (one more
        // round trip: for small blobs it costs the servers about as much as the upload, for
        // large ones less than an MD5 costs the client).
        if self.client.put(&name, &key, path, size, segmented)? == Verified::Nothing {
            match self.client.head(&name, &key)? {
                Some(stored) if stored == size => {}
                other => {
                    return Err(Error::Verify {
                        container: name,
                        key,
                        detail: format!("expected {size} bytes, HEAD says {other:?}"),
                    })
                }
            }
        }
        let mut batch = WriteBatch::new();
        batch.put(
            self.locations,
            hash.0,
            Location {
                container,
                segmented,
                size,
            }
            .encode(),
        );
        if fresh {
            batch.counter_add(self.meta, count_key(container), 1);
        }
        self.engine.write(batch, Durability::Sync)?;
        Ok(())
    }

    fn open_range(
        self: &Arc<Self>,
        hash: &Blake3Hash,
        offset: u64,
        len: u64,
    ) -> Result<Option<Box<dyn Read + Send>>> {
        let Some(location) = self.location(hash)? else {
            return Ok(None);
        };
        let container = self.container_name(location.container);
        let key = hash.to_hex();
        let len = len.min(location.size.saturating_sub(offset));
        let Some(inner) = self.client.get(&container, &key, offset, len)? else {
            return Ok(None);
        };
        Ok(Some(Box::new(ResumingReader {
            shared: self.clone(),
            container,
            key,
            offset,
            remaining: len,
            inner,
        })))
    }

    fn delete(&self, hash: &Blake3Hash) -> Result<()> {
        let Some(location) = self.location(hash)? else {
            return Ok(());
        };
        self.client.delete(
            &self.container_name(location.container),
            &hash.to_hex(),
            location.segmented,
        )?;
        let mut batch = WriteBatch::new();
        batch.delete(self.locations, hash.0);
        self.engine.write(batch, Durability::Sync)?;
        Ok(())
    }

    fn sweep(
        &self,
        older_than: Timestamp,
        visit: &mut dyn FnMut(StoredBlob) -> blobstore::Result<()>,
    ) -> blobstore::Result<u64> {
        let backend = self.name;
        let mut removed = self
            .sweep_spool(older_than)
            .map_err(|e| e.into_store(backend, "sweep the spool"))?;
        let current = self
            .alloc
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .current;
        let cutoff = older_than.as_unix_millis();
        for index in 0..=current {
            let container = self.container_name(index);
            let mut listed = Vec::new();
            self.client
                .list(&container, "", &mut |object| {
                    listed.push(object);
                    Ok(())
                })
                .map_err(|e| e.into_store(backend, "list a container"))?;
            for object in listed {
                if object.modified >= cutoff {
                    continue;
                }
                let Ok(hash) = object.name.parse::<Blake3Hash>() else {
                    continue;
                };
                let location = self
                    .location(&hash)
                    .map_err(|e| e.into_store(backend, "read a location"))?;
                match location {
                    Some(location) if location.container == index => {}
                    Some(_) => {
                        // A second copy from an upload whose location was lost: unreferenced.
                        self.client
                            .delete(&container, &object.name, false)
                            .map_err(|e| e.into_store(backend, "delete an orphan"))?;
                        removed += 1;
                        continue;
                    }
                    None => {
                        // Uploaded but never recorded (a crash between the upload and the
                        // location write): adopt it, so that the store can judge it and
                        // `delete` can find it.
                        let size = self
                            .client
                            .head(&container, &object.name)
                            .map_err(|e| e.into_store(backend, "head an orphan"))?;
                        let Some(size) = size else { continue };
                        let segmented = size > self.threshold;
                        let mut batch = WriteBatch::new();
                        batch.put(
                            self.locations,
                            hash.0,
                            Location {
                                container: index,
                                segmented,
                                size,
                            }
                            .encode(),
                        );
                        self.engine
                            .write(batch, Durability::Sync)
                            .map_err(|e| Error::from(e).into_store(backend, "adopt an orphan"))?;
                    }
                }
                visit(StoredBlob {
                    hash,
                    modified: Timestamp(object.modified),
                })?;
            }
            removed += self
                .sweep_segments(index, cutoff)
                .map_err(|e| e.into_store(backend, "sweep segments"))?;
        }
        Ok(removed)
    }

    /// Segments that no recorded large object uses: left by uploads that failed before their
    /// manifest.
    fn sweep_segments(&self, index: u32, cutoff: i64) -> Result<u64> {
        let container = self.container_name(index);
        let Some(segments) = self.client.segments_container(&container) else {
            return Ok(0);
        };
        let mut listed = Vec::new();
        self.client.list(&segments, "", &mut |object| {
            listed.push(object);
            Ok(())
        })?;
        let mut removed = 0;
        for object in listed {
            if object.modified >= cutoff {
                continue;
            }
            // `<hash>/<size>/<index>`
            let mut parts = object.name.split('/');
            let hash = parts.next().and_then(|h| h.parse::<Blake3Hash>().ok());
            let size = parts.next().and_then(|s| s.parse::<u64>().ok());
            let used = match (hash, size) {
                (Some(hash), Some(size)) => self
                    .location(&hash)?
                    .is_some_and(|l| l.container == index && l.segmented && l.size == size),
                _ => false,
            };
            if !used {
                self.client.delete_segment(&segments, &object.name)?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    fn sweep_spool(&self, older_than: Timestamp) -> Result<u64> {
        let mut removed = 0;
        let entries = match fs::read_dir(&self.spool) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(Error::io("listing", &self.spool, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("listing", &self.spool, e))?;
            let name = entry.file_name();
            if !name.to_string_lossy().starts_with(SPOOL_PREFIX) {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            let modified = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
            if meta.is_file() && modified < older_than.as_unix_millis() {
                match fs::remove_file(entry.path()) {
                    Ok(()) => removed += 1,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io("removing", entry.path(), e)),
                }
            }
        }
        Ok(removed)
    }
}

const SPOOL_PREFIX: &str = "objectstore-spool-";

/// A range read that re-requests the rest when the connection breaks mid-stream, within the
/// retry budget.
struct ResumingReader {
    shared: Arc<Shared>,
    container: String,
    key: String,
    offset: u64,
    remaining: u64,
    inner: Box<dyn Read + Send>,
}

impl Read for ResumingReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let max = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let started = Instant::now();
        loop {
            let error = match self.inner.read(&mut buf[..max]) {
                Ok(0) => io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("{}/{} ended early", self.container, self.key),
                ),
                Ok(n) => {
                    self.offset += n as u64;
                    self.remaining -= n as u64;
                    return Ok(n);
                }
                Err(e) => e,
            };
            if started.elapsed() > self.shared.retry.budget() {
                return Err(error);
            }
            tracing::debug!(container = %self.container, key = %self.key, offset = self.offset, %error, "resuming a read");
            match self
                .shared
                .client
                .get(&self.container, &self.key, self.offset, self.remaining)
            {
                Ok(Some(inner)) => self.inner = inner,
                Ok(None) => return Err(io::Error::new(io::ErrorKind::NotFound, error)),
                Err(e) => return Err(io::Error::other(e)),
            }
        }
    }
}

/// An upload being spooled.
#[derive(Debug)]
struct SpoolTemp {
    shared: Arc<Shared>,
    file: Option<BufWriter<tempfile::NamedTempFile>>,
    size: u64,
}

impl Write for SpoolTemp {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("temporary blob already persisted"))?;
        let n = file.write(buf)?;
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.file {
            Some(file) => file.flush(),
            None => Ok(()),
        }
    }
}

impl TempBlob for SpoolTemp {
    fn persist(mut self: Box<Self>, hash: &Blake3Hash) -> blobstore::Result<()> {
        let backend = self.shared.name;
        let file = self.file.take().ok_or_else(|| {
            Error::Config("temporary blob already persisted".into()).into_store(backend, "persist")
        })?;
        let temp = file
            .into_inner()
            .map_err(|e| blobstore::Error::io("writing", "spool file", e.into_error()))?;
        // The spool file stays until the upload is verified; it is removed when `temp` drops.
        self.shared
            .persist(temp.path(), self.size, hash)
            .map_err(|e| e.into_store(backend, "persist a blob"))
    }
}

impl BlobBackend for ObjectStoreBackend {
    fn name(&self) -> &'static str {
        self.shared.name
    }

    fn create_temp(&self) -> blobstore::Result<Box<dyn TempBlob>> {
        let file = tempfile::Builder::new()
            .prefix(SPOOL_PREFIX)
            .tempfile_in(&self.shared.spool)
            .map_err(|e| blobstore::Error::io("creating a spool file in", &self.shared.spool, e))?;
        Ok(Box::new(SpoolTemp {
            shared: self.shared.clone(),
            file: Some(BufWriter::with_capacity(1 << 20, file)),
            size: 0,
        }))
    }

    fn open_range(
        &self,
        hash: &Blake3Hash,
        offset: u64,
        len: u64,
    ) -> blobstore::Result<Option<Box<dyn Read + Send>>> {
        self.shared
            .open_range(hash, offset, len)
            .map_err(|e| e.into_store(self.shared.name, "read a blob"))
    }

    fn delete(&self, hash: &Blake3Hash) -> blobstore::Result<()> {
        self.shared
            .delete(hash)
            .map_err(|e| e.into_store(self.shared.name, "delete a blob"))
    }

    fn sweep(
        &self,
        older_than: Timestamp,
        visit: &mut dyn FnMut(StoredBlob) -> blobstore::Result<()>,
    ) -> blobstore::Result<u64> {
        self.shared.sweep(older_than, visit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_round_trip_and_reject_garbage() {
        let location = Location {
            container: 7,
            segmented: true,
            size: 5 << 30,
        };
        assert_eq!(
            Location::decode(b"k", &location.encode()).unwrap(),
            location
        );
        assert!(Location::decode(b"k", &[0; 12]).is_err());
        let mut bad = location.encode();
        bad[4] = 2;
        assert!(Location::decode(b"k", &bad).is_err());
    }
}
