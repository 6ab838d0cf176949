//! Moving the blobs of a local store to the object store while it serves.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::mpsc::sync_channel;
use std::sync::{Arc, Mutex, PoisonError};

use blobstore::{Blake3Hash, BlobBackend, LocalFsBackend, StoredBlob, TempBlob, Timestamp};

use crate::error::{Error, Result};

/// The backend of a store whose blobs are moving from the local filesystem to an object
/// store: new blobs go to the remote; reads try the remote, then the local copy (so every blob
/// stays readable before, during and after [`migrate`]); deletes remove both copies; the sweep
/// covers both.
#[derive(Debug)]
pub struct MigratingBackend {
    remote: Arc<dyn BlobBackend>,
    local: Arc<LocalFsBackend>,
}

impl MigratingBackend {
    /// Writes to `remote`, reads from `remote` then `local`.
    pub fn new(remote: Arc<dyn BlobBackend>, local: Arc<LocalFsBackend>) -> Self {
        MigratingBackend { remote, local }
    }
}

impl BlobBackend for MigratingBackend {
    fn name(&self) -> &'static str {
        self.remote.name()
    }

    fn create_temp(&self) -> blobstore::Result<Box<dyn TempBlob>> {
        self.remote.create_temp()
    }

    fn open_range(
        &self,
        hash: &Blake3Hash,
        offset: u64,
        len: u64,
    ) -> blobstore::Result<Option<Box<dyn Read + Send>>> {
        // The local copy first: it answers without a round trip, and it exists until the
        // remote copy has been verified.
        if let Some(reader) = self.local.open_range(hash, offset, len)? {
            return Ok(Some(reader));
        }
        // Not local (any more): the local copy is removed only once the remote one was
        // verified, so the remote has it if anyone does.
        self.remote.open_range(hash, offset, len)
    }

    fn delete(&self, hash: &Blake3Hash) -> blobstore::Result<()> {
        self.remote.delete(hash)?;
        self.local.delete(hash)
    }

    fn sweep(
        &self,
        older_than: Timestamp,
        visit: &mut dyn FnMut(StoredBlob) -> blobstore::Result<()>,
    ) -> blobstore::Result<u64> {
        let local = self.local.sweep(older_than, visit)?;
        Ok(local + self.remote.sweep(older_than, visit)?)
    }
}

/// How [`migrate`] runs.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct MigrateOptions {
    /// Blobs moved at once. Default 4.
    pub parallelism: usize,
}

impl Default for MigrateOptions {
    fn default() -> Self {
        MigrateOptions { parallelism: 4 }
    }
}

impl MigrateOptions {
    /// Blobs moved at once. Default 4.
    pub fn parallelism(mut self, n: usize) -> Self {
        self.parallelism = n.max(1);
        self
    }
}

/// What [`migrate`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MigrateReport {
    /// Blobs uploaded, verified and removed locally.
    pub moved: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Blobs that could not be moved, with why; their local copies are untouched. Run again
    /// to retry them.
    pub failed: Vec<(Blake3Hash, String)>,
}

/// Moves every blob file under `local_root` (the data directory of a [`LocalFsBackend`]) to
/// `remote`, `parallelism` at a time: upload, read the remote copy back and check its BLAKE3
/// hash and size, and only then remove the local file. Inline blobs stay in the engine (they
/// never were files).
///
/// Resumable: what was moved is no longer local, so a second run walks only what is left (a
/// blob uploaded but not yet removed when a run stopped is uploaded again, which replaces the
/// object with identical bytes). Reads keep working throughout when the store uses a
/// [`MigratingBackend`] over the same two backends. A blob that the store collects while it
/// is being moved may leave a remote orphan, which the remote's sweep removes.
///
/// # Errors
/// [`Error::Io`] when the local directories cannot be listed. Failures of single blobs are in
/// the report.
pub fn migrate(
    local_root: &Path,
    local: &LocalFsBackend,
    remote: &dyn BlobBackend,
    options: MigrateOptions,
) -> Result<MigrateReport> {
    let report = Mutex::new(MigrateReport::default());
    let blobs = local_root.join("blobs");
    let (sender, receiver) = sync_channel::<(Blake3Hash, PathBuf)>(options.parallelism * 4);
    let receiver = Mutex::new(receiver);
    std::thread::scope(|scope| -> Result<()> {
        for _ in 0..options.parallelism.max(1) {
            scope.spawn(|| loop {
                let next = receiver
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .recv();
                let Ok((hash, path)) = next else { break };
                match move_one(&hash, &path, local, remote) {
                    Ok(Some(size)) => {
                        let mut report = report.lock().unwrap_or_else(PoisonError::into_inner);
                        report.moved += 1;
                        report.bytes += size;
                    }
                    Ok(None) => {}
                    Err(error) => {
                        tracing::warn!(%hash, %error, "could not migrate a blob");
                        report
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .failed
                            .push((hash, error));
                    }
                }
            });
        }
        let walked = walk(&blobs, &mut |hash, path| {
            // The workers only stop when the sender is dropped, so this cannot fail.
            let _ = sender.send((hash, path));
        });
        drop(sender);
        walked
    })?;
    Ok(report.into_inner().unwrap_or_else(PoisonError::into_inner))
}

fn walk(blobs: &Path, send: &mut dyn FnMut(Blake3Hash, PathBuf)) -> Result<()> {
    let read_dir = |path: &Path| match fs::read_dir(path) {
        Ok(entries) => Ok(Some(entries)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("listing", path, e)),
    };
    let Some(level1) = read_dir(blobs)? else {
        return Ok(());
    };
    for l1 in level1 {
        let l1 = l1.map_err(|e| Error::io("listing", blobs, e))?.path();
        let Some(level2) = read_dir(&l1)? else {
            continue;
        };
        for l2 in level2 {
            let l2 = l2.map_err(|e| Error::io("listing", &l1, e))?.path();
            let Some(files) = read_dir(&l2)? else {
                continue;
            };
            for file in files {
                let file = file.map_err(|e| Error::io("listing", &l2, e))?;
                if let Some(hash) = file
                    .file_name()
                    .to_str()
                    .and_then(|name| name.parse::<Blake3Hash>().ok())
                {
                    send(hash, file.path());
                }
            }
        }
    }
    Ok(())
}

/// Uploads, verifies, removes the local copy. `Ok(None)` when the file vanished meanwhile
/// (collected by the store).
fn move_one(
    hash: &Blake3Hash,
    path: &Path,
    local: &LocalFsBackend,
    remote: &dyn BlobBackend,
) -> std::result::Result<Option<u64>, String> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("opening {}: {e}", path.display())),
    };
    let size = file
        .metadata()
        .map_err(|e| format!("stat {}: {e}", path.display()))?
        .len();
    let mut temp = remote.create_temp().map_err(|e| e.to_string())?;
    let copied = io::copy(&mut file, &mut temp).map_err(|e| format!("spooling: {e}"))?;
    if copied != size {
        return Err(format!("read {copied} of {size} bytes"));
    }
    temp.persist(hash).map_err(|e| e.to_string())?;
    // Verify: read the remote copy back whole and hash it.
    let mut reader = remote
        .open_range(hash, 0, u64::MAX)
        .map_err(|e| e.to_string())?
        .ok_or("the uploaded blob is missing")?;
    let mut hasher = blake3::Hasher::new();
    let read = io::copy(&mut reader, &mut hasher).map_err(|e| format!("reading back: {e}"))?;
    let actual = Blake3Hash(*hasher.finalize().as_bytes());
    if read != size || actual != *hash {
        return Err(format!(
            "the remote copy has {read} bytes hashing to {actual}, expected {size} bytes"
        ));
    }
    local.delete(hash).map_err(|e| e.to_string())?;
    Ok(Some(size))
}
