//! Where blob bytes live: a narrow trait and its local-filesystem implementation.
//!
//! The store keeps small blobs inline in the engine; larger ones go through a
//! [`BlobBackend`]. The trait is deliberately small so that an object store (OpenStack Swift,
//! S3) can implement it: write a temporary object, make it durable under its hash, open a
//! byte range, delete, and list what is stored for the orphan sweep.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use crate::direct_io::DirectFile;
use crate::error::{Error, Result};
use crate::types::{Blake3Hash, Timestamp};

/// Bytes being written; invisible to readers until [`TempBlob::persist`]. Dropping it without
/// persisting removes what was written.
pub trait TempBlob: Write + Send + fmt::Debug {
    /// Makes the bytes durable and visible under `hash`. After `Ok`, a crash does not lose them;
    /// if a blob with this hash already exists it is replaced by these (identical) bytes.
    ///
    /// # Errors
    /// [`Error::Io`], [`Error::DiskFull`] or [`Error::Backend`]; nothing becomes visible.
    fn persist(self: Box<Self>, hash: &Blake3Hash) -> Result<()>;
}

/// A blob that the orphan sweep may remove.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoredBlob {
    /// The blob's hash.
    pub hash: Blake3Hash,
    /// When it was last written.
    pub modified: Timestamp,
}

/// Storage for blob bytes, addressed by BLAKE3 hash.
pub trait BlobBackend: Send + Sync + fmt::Debug {
    /// A short name for errors and logs ("fs", "swift", ...).
    fn name(&self) -> &'static str;

    /// Starts writing a new blob.
    ///
    /// # Errors
    /// The backend's error (for the filesystem: creating the temporary file).
    fn create_temp(&self) -> Result<Box<dyn TempBlob>>;

    /// Starts a new blob from the complete, fsynced file at `path` (a finished resumable
    /// upload), which stays where it is: the returned blob is persisted like any other.
    /// The default copies the file into [`BlobBackend::create_temp`]; the local filesystem
    /// links it instead (no copy).
    ///
    /// # Errors
    /// The backend's error, or [`Error::Io`] reading `path`.
    fn adopt(&self, path: &Path) -> Result<Box<dyn TempBlob>> {
        let mut temp = self.create_temp()?;
        let mut file = File::open(path).map_err(|e| Error::io("opening", path, e))?;
        io::copy(&mut file, &mut temp).map_err(|e| Error::io("copying", path, e))?;
        Ok(temp)
    }

    /// Reads `len` bytes of `hash` from `offset`, or `None` when the blob is not stored.
    ///
    /// # Errors
    /// The backend's error.
    fn open_range(
        &self,
        hash: &Blake3Hash,
        offset: u64,
        len: u64,
    ) -> Result<Option<Box<dyn Read + Send>>>;

    /// Removes the blob; removing a missing blob is not an error.
    ///
    /// # Errors
    /// The backend's error.
    fn delete(&self, hash: &Blake3Hash) -> Result<()>;

    /// Visits every stored blob last modified before `older_than`, and removes temporaries
    /// older than that (leftovers of crashed uploads). Returns the number of temporaries
    /// removed.
    ///
    /// # Errors
    /// The backend's error, or the first error of `visit`.
    fn sweep(
        &self,
        older_than: Timestamp,
        visit: &mut dyn FnMut(StoredBlob) -> Result<()>,
    ) -> Result<u64>;
}

/// Blobs as files under `root/blobs/ab/cd/<64 hex>`, written through `root/tmp/`.
///
/// Persisting a blob: write the temporary file, `fsync` it, `rename` it into its shard
/// directory (created and its parent `fsync`ed first when new), then `fsync` the shard
/// directory. See `DESIGN.md` for what a crash at each step leaves.
///
/// Temporary files are written with `O_DIRECT` where the filesystem allows it (see
/// [`LocalFsBackend::direct_io`]).
#[derive(Debug)]
pub struct LocalFsBackend {
    blobs: PathBuf,
    tmp: PathBuf,
    direct_io: bool,
}

pub(crate) fn sync_dir(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|dir| dir.sync_all())
        .map_err(|e| Error::io("fsyncing directory", path, e))
}

/// Held by [`ensure_dir`] from its check to its parent's fsync. Without it, an upload that finds
/// a shard directory another upload has just created (whose parent is not fsynced yet) would
/// rename its blob into it and be acknowledged while a power loss could still drop the
/// directory, blob and all; under it, a directory that exists has had its entry synced. (ext4
/// happens to commit the two together; POSIX, and the crash-state test's model, do not.)
static CREATING_DIRS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Creates `dir` if missing, making the new entry durable in its parent.
pub(crate) fn ensure_dir(dir: &Path) -> Result<()> {
    let _creating = CREATING_DIRS.lock().unwrap_or_else(|e| e.into_inner());
    if dir.is_dir() {
        return Ok(());
    }
    match fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(Error::io("creating directory", dir, e)),
    }
    if let Some(parent) = dir.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

/// Whether `path` is on tmpfs (the magic number of `statfs(2)`): there an fsync costs nothing
/// and nothing reaches a device. `false` when `statfs` fails. Benchmarks of durable writes use
/// it to refuse a directory in memory.
// `f_type` is an `i64` on x86_64 but narrower on some targets.
#[allow(clippy::useless_conversion)]
pub fn is_tmpfs(path: &Path) -> bool {
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    rustix::fs::statfs(path).is_ok_and(|stat| i64::from(stat.f_type) == TMPFS_MAGIC)
}

fn modified(meta: &fs::Metadata) -> Timestamp {
    let ms = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    Timestamp(ms)
}

impl LocalFsBackend {
    /// Opens (creating) the layout under `root`.
    ///
    /// # Errors
    /// [`Error::Io`] when the directories cannot be created.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        fs::create_dir_all(&root).map_err(|e| Error::io("creating directory", &root, e))?;
        let blobs = root.join("blobs");
        let tmp = root.join("tmp");
        ensure_dir(&blobs)?;
        ensure_dir(&tmp)?;
        Ok(LocalFsBackend {
            blobs,
            tmp,
            // tmpfs keeps its bytes in the page cache anyway: O_DIRECT there only adds a copy
            // (measured slower in DESIGN.md), and nothing reaches a device.
            direct_io: !is_tmpfs(&root),
        })
    }

    /// Whether blob files are written with `O_DIRECT`, bypassing the page cache (default
    /// `true`, except on tmpfs). It saves the kernel's copy of every byte into the page cache and leaves the
    /// final fsync little to write, which made a 256 MiB ingest hash-bound instead of
    /// copy-bound (`DESIGN.md`). A freshly written blob is then not in the page cache, so its
    /// first read goes to the device. Filesystems that refuse `O_DIRECT` (tmpfs before Linux
    /// 6.6, some network filesystems) get buffered writes either way.
    #[must_use]
    pub fn direct_io(mut self, enabled: bool) -> Self {
        self.direct_io = enabled;
        self
    }

    /// The path of blob `hash`.
    pub fn blob_path(&self, hash: &Blake3Hash) -> PathBuf {
        let hex = hash.to_hex();
        self.blobs.join(&hex[0..2]).join(&hex[2..4]).join(hex)
    }
}

/// Moves the complete, fsynced file at `path` to `blobs/ab/cd/<hash>`: creates the shard
/// directories durably, renames, and fsyncs the shard directory.
fn install(path: &Path, blobs: &Path, hash: &Blake3Hash) -> Result<()> {
    let hex = hash.to_hex();
    let level1 = blobs.join(&hex[0..2]);
    let level2 = level1.join(&hex[2..4]);
    // 2. The shard directories exist durably.
    ensure_dir(&level1)?;
    ensure_dir(&level2)?;
    // 3. The complete file appears under its final name, atomically.
    let target = level2.join(&hex);
    fs::rename(path, &target).map_err(|e| Error::io("renaming into", &target, e))?;
    // 4. The new name is durable.
    sync_dir(&level2)
}

/// A hard link in `tmp/` to a finished resumable upload's file (see [`BlobBackend::adopt`]).
/// Persisting renames the link; dropping it unpersisted removes the link only.
#[derive(Debug)]
struct FsAdopted {
    path: PathBuf,
    blobs: PathBuf,
    renamed: bool,
}

impl Write for FsAdopted {
    fn write(&mut self, _buf: &[u8]) -> io::Result<usize> {
        Err(io::Error::other("an adopted blob is complete"))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl TempBlob for FsAdopted {
    fn persist(mut self: Box<Self>, hash: &Blake3Hash) -> Result<()> {
        // The resumable upload fsynced its bytes before it acknowledged them; the link's
        // directory entry need not be durable (the rename's is, by `install`).
        install(&self.path, &self.blobs, hash)?;
        self.renamed = true;
        Ok(())
    }
}

impl Drop for FsAdopted {
    fn drop(&mut self) {
        if !self.renamed {
            let _ = fs::remove_file(&self.path);
        }
    }
}

#[derive(Debug)]
struct FsTemp {
    file: Option<DirectFile>,
    path: PathBuf,
    blobs: PathBuf,
    /// Set once the file has its final name; until then dropping removes it.
    renamed: bool,
}

impl Write for FsTemp {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.file {
            Some(file) => file.write(buf),
            None => Err(io::Error::other("temporary blob already persisted")),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl TempBlob for FsTemp {
    fn persist(mut self: Box<Self>, hash: &Blake3Hash) -> Result<()> {
        let file = self
            .file
            .take()
            .ok_or_else(|| Error::io("persisting", &self.path, io::Error::other("no file")))?;
        let file = file
            .finish()
            .map_err(|e| Error::io("writing", &self.path, e))?;
        // 1. The bytes reach the disk under the temporary name.
        file.sync_all()
            .map_err(|e| Error::io("fsyncing", &self.path, e))?;
        drop(file);
        // Once renamed (even if the directory's fsync then fails) the temporary name is gone.
        let installed = install(&self.path, &self.blobs, hash);
        self.renamed = !self.path.exists();
        installed
    }
}

impl Drop for FsTemp {
    /// Removes the temporary file of an upload dropped or failed before its rename (a
    /// failed final write or fsync included), so that it does not wait for the sweep.
    fn drop(&mut self) {
        drop(self.file.take());
        if !self.renamed {
            let _ = fs::remove_file(&self.path);
        }
    }
}

impl BlobBackend for LocalFsBackend {
    fn name(&self) -> &'static str {
        "fs"
    }

    fn create_temp(&self) -> Result<Box<dyn TempBlob>> {
        let name: u128 = rand::random();
        let path = self.tmp.join(format!("{name:032x}.tmp"));
        let file = DirectFile::create_new(&path, self.direct_io)
            .map_err(|e| Error::io("creating", &path, e))?;
        Ok(Box::new(FsTemp {
            file: Some(file),
            path,
            blobs: self.blobs.clone(),
            renamed: false,
        }))
    }

    fn adopt(&self, path: &Path) -> Result<Box<dyn TempBlob>> {
        let name: u128 = rand::random();
        let link = self.tmp.join(format!("{name:032x}.tmp"));
        match fs::hard_link(path, &link) {
            Ok(()) => Ok(Box::new(FsAdopted {
                path: link,
                blobs: self.blobs.clone(),
                renamed: false,
            })),
            // Another filesystem (or one without links): copy.
            Err(e)
                if e.raw_os_error() == Some(libc::EXDEV)
                    || e.kind() == io::ErrorKind::Unsupported =>
            {
                let mut temp = self.create_temp()?;
                let mut file = File::open(path).map_err(|e| Error::io("opening", path, e))?;
                io::copy(&mut file, &mut temp).map_err(|e| Error::io("copying", path, e))?;
                Ok(temp)
            }
            Err(e) => Err(Error::io("linking", &link, e)),
        }
    }

    fn open_range(
        &self,
        hash: &Blake3Hash,
        offset: u64,
        len: u64,
    ) -> Result<Option<Box<dyn Read + Send>>> {
        let path = self.blob_path(hash);
        let mut file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("opening", &path, e)),
        };
        if offset > 0 {
            file.seek(SeekFrom::Start(offset))
                .map_err(|e| Error::io("seeking in", &path, e))?;
        }
        Ok(Some(Box::new(file.take(len))))
    }

    fn delete(&self, hash: &Blake3Hash) -> Result<()> {
        let path = self.blob_path(hash);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("removing", &path, e)),
        }
    }

    fn sweep(
        &self,
        older_than: Timestamp,
        visit: &mut dyn FnMut(StoredBlob) -> Result<()>,
    ) -> Result<u64> {
        let mut removed = 0;
        let read_dir = |path: &Path| fs::read_dir(path).map_err(|e| Error::io("listing", path, e));
        for entry in read_dir(&self.tmp)? {
            let entry = entry.map_err(|e| Error::io("listing", &self.tmp, e))?;
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_file() && modified(&meta) < older_than {
                match fs::remove_file(entry.path()) {
                    Ok(()) => removed += 1,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io("removing", entry.path(), e)),
                }
            }
        }
        for level1 in read_dir(&self.blobs)? {
            let level1 = level1.map_err(|e| Error::io("listing", &self.blobs, e))?;
            if !level1.path().is_dir() {
                continue;
            }
            for level2 in read_dir(&level1.path())? {
                let level2 = level2.map_err(|e| Error::io("listing", level1.path(), e))?;
                if !level2.path().is_dir() {
                    continue;
                }
                for blob in read_dir(&level2.path())? {
                    let blob = blob.map_err(|e| Error::io("listing", level2.path(), e))?;
                    let Some(hash) = blob
                        .file_name()
                        .to_str()
                        .and_then(|name| name.parse::<Blake3Hash>().ok())
                    else {
                        continue;
                    };
                    let Ok(meta) = blob.metadata() else { continue };
                    let modified = modified(&meta);
                    if modified < older_than {
                        visit(StoredBlob { hash, modified })?;
                    }
                }
            }
        }
        Ok(removed)
    }
}
