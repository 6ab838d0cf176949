//! Backup directories: a store's files with a manifest that describes and checks them.
//!
//! A service writes its backup into a fresh directory (the engine's
//! [`Engine::checkpoint`](crate::Engine::checkpoint) and whatever files of its own belong with
//! it), then [`seal`]s it: every file is listed in `manifest.json` with its size and BLAKE3
//! hash, next to the service's name, the change-feed revision the backup holds, and counts the
//! service chose; the manifest is made durable and the directory read back against it.
//! [`verify`] checks a backup against its manifest, and [`restore`] copies a verified backup
//! into a fresh directory, all or nothing: into a temporary sibling first, checked by the
//! caller there, then renamed into place.
//!
//! The manifest is self-describing JSON, so an operator can read what a backup holds:
//!
//! ```json
//! {"format": "lpstore-backup", "version": 1, "service": "librarian", "revision": 1234,
//!  "created_at_ms": 1700000000000, "counts": {"files": 10, "blobs": 8},
//!  "files": [{"path": "meta/CURRENT", "size": 16, "blake3": "..."}]}
//! ```

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The name of the manifest inside a backup directory.
pub const MANIFEST: &str = "manifest.json";
/// The `format` every manifest carries.
pub const FORMAT: &str = "lpstore-backup";
/// The manifest version this build writes and reads.
pub const VERSION: u32 = 1;

/// What a backup holds: written last, by [`seal`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: String,
    /// The manifest version ([`VERSION`]).
    pub version: u32,
    /// The service whose store this is ("librarian", "directory").
    pub service: String,
    /// The newest change-feed revision in the backup: every write acknowledged with a
    /// revision up to this one is in it, none after.
    pub revision: u64,
    /// When the backup was sealed, in milliseconds since the Unix epoch.
    pub created_at_ms: u64,
    /// Counts the service records to check a restore against (files, blobs, edges, ...).
    pub counts: BTreeMap<String, u64>,
    /// Every file of the backup but the manifest, by path relative to the backup directory
    /// (`/`-separated), in path order.
    pub files: Vec<FileEntry>,
}

/// A file of a backup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// The path relative to the backup directory, `/`-separated.
    pub path: String,
    /// Its length in bytes.
    pub size: u64,
    /// The BLAKE3 hash of its content, in hex.
    pub blake3: String,
}

/// Why a backup could not be written, verified or restored.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// A file-system operation failed.
    #[error("backup: {operation} {path}: {source}")]
    Io {
        /// What was being done.
        operation: &'static str,
        /// On what.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The destination of a backup or a restore already holds something.
    #[error(
        "{path} exists and is not empty: a backup or a restore writes only into a new or \
         empty directory"
    )]
    NotEmpty {
        /// The destination.
        path: PathBuf,
    },
    /// The directory has no manifest: not a backup, or one whose writing did not finish.
    #[error("{dir} is not a complete backup: it has no {MANIFEST}")]
    NoManifest {
        /// The directory.
        dir: PathBuf,
    },
    /// The manifest cannot be read, or describes another format, version or service.
    #[error("the backup manifest {path} is unusable: {reason}")]
    BadManifest {
        /// The manifest's path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A file of the backup differs from its manifest: missing, another size, another hash,
    /// or not listed.
    #[error("the backup is damaged: {path}: {reason}")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// How it differs.
        reason: String,
    },
    /// The engine failed (a checkpoint).
    #[error(transparent)]
    Engine(#[from] crate::Error),
    /// The service's check of the restored copy failed; nothing was restored.
    #[error("the restored copy failed its check, nothing was restored: {0}")]
    Check(#[source] crate::error::BoxError),
}

type Result<T, E = BackupError> = std::result::Result<T, E>;

fn io_error(operation: &'static str, path: &Path) -> impl FnOnce(io::Error) -> BackupError {
    let path = path.to_path_buf();
    move |source| BackupError::Io {
        operation,
        path,
        source,
    }
}

/// Makes `dir` ready to receive a backup or a restore: creates it (and its parents) when
/// missing, accepts it when empty.
///
/// # Errors
/// [`BackupError::NotEmpty`] when it holds anything; [`BackupError::Io`].
pub fn prepare_destination(dir: &Path) -> Result<()> {
    ensure_empty(dir)?;
    fs::create_dir_all(dir).map_err(io_error("creating", dir))
}

fn ensure_empty(dir: &Path) -> Result<()> {
    match fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(BackupError::NotEmpty {
                    path: dir.to_path_buf(),
                });
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotADirectory => Err(BackupError::NotEmpty {
            path: dir.to_path_buf(),
        }),
        Err(e) => Err(io_error("listing", dir)(e)),
    }
}

/// Lists, hashes and fsyncs every file under `dir`, writes the manifest (durably: a
/// temporary name, fsync, rename, fsync of the directory), then reads the directory back
/// with [`verify`].
///
/// # Errors
/// [`BackupError::Io`], or what [`verify`] finds.
pub fn seal(
    dir: &Path,
    service: &str,
    revision: u64,
    counts: BTreeMap<String, u64>,
) -> Result<Manifest> {
    let mut files = Vec::new();
    for relative in list_files(dir)? {
        let path = dir.join(&relative);
        let (size, blake3) = hash_file(&path)?;
        File::open(&path)
            .and_then(|file| file.sync_all())
            .map_err(io_error("syncing", &path))?;
        files.push(FileEntry {
            path: relative,
            size,
            blake3,
        });
    }
    sync_directories(dir)?;
    let manifest = Manifest {
        format: FORMAT.to_string(),
        version: VERSION,
        service: service.to_string(),
        revision,
        created_at_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        counts,
        files,
    };
    let json = serde_json::to_vec_pretty(&manifest).map_err(|e| BackupError::BadManifest {
        path: dir.join(MANIFEST),
        reason: e.to_string(),
    })?;
    let temporary = dir.join(".manifest.json.tmp");
    let mut file = File::create(&temporary).map_err(io_error("creating", &temporary))?;
    file.write_all(&json)
        .and_then(|()| file.sync_all())
        .map_err(io_error("writing", &temporary))?;
    drop(file);
    let path = dir.join(MANIFEST);
    fs::rename(&temporary, &path).map_err(io_error("renaming", &path))?;
    sync_dir(dir)?;
    verify(dir, service)
}

/// Reads the manifest of the backup in `dir` and checks every file against it: present,
/// of its size and hash, and no file that it does not list.
///
/// # Errors
/// [`BackupError::NoManifest`], [`BackupError::BadManifest`] (another format, version or
/// service than `service`), [`BackupError::Damaged`], [`BackupError::Io`].
pub fn verify(dir: &Path, service: &str) -> Result<Manifest> {
    let manifest = read_manifest(dir)?;
    let path = dir.join(MANIFEST);
    if manifest.service != service {
        return Err(BackupError::BadManifest {
            path,
            reason: format!(
                "it is a backup of the {}, not of the {service}",
                manifest.service
            ),
        });
    }
    let present = list_files(dir)?;
    for entry in &manifest.files {
        let file = dir.join(&entry.path);
        if present.binary_search(&entry.path).is_err() {
            return Err(BackupError::Damaged {
                path: file,
                reason: "missing".to_string(),
            });
        }
        let (size, blake3) = hash_file(&file)?;
        if size != entry.size || blake3 != entry.blake3 {
            return Err(BackupError::Damaged {
                path: file,
                reason: format!(
                    "{size} bytes with BLAKE3 {blake3}, the manifest says {} bytes with {}",
                    entry.size, entry.blake3
                ),
            });
        }
    }
    if let Some(extra) = present
        .iter()
        .find(|p| manifest.files.binary_search_by(|e| e.path.cmp(p)).is_err())
    {
        return Err(BackupError::Damaged {
            path: dir.join(extra),
            reason: "not listed in the manifest".to_string(),
        });
    }
    Ok(manifest)
}

/// Reads and checks the manifest of `dir` (format and version), without checking the files.
///
/// # Errors
/// [`BackupError::NoManifest`], [`BackupError::BadManifest`], [`BackupError::Io`].
pub fn read_manifest(dir: &Path) -> Result<Manifest> {
    let path = dir.join(MANIFEST);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(BackupError::NoManifest {
                dir: dir.to_path_buf(),
            })
        }
        Err(e) => return Err(io_error("reading", &path)(e)),
    };
    let manifest: Manifest =
        serde_json::from_slice(&bytes).map_err(|e| BackupError::BadManifest {
            path: path.clone(),
            reason: e.to_string(),
        })?;
    if manifest.format != FORMAT || manifest.version != VERSION {
        return Err(BackupError::BadManifest {
            path,
            reason: format!(
                "format {:?} version {}; this build reads {FORMAT:?} version {VERSION}",
                manifest.format, manifest.version
            ),
        });
    }
    if manifest.files.windows(2).any(|w| w[0].path >= w[1].path) {
        return Err(BackupError::BadManifest {
            path,
            reason: "its files are not listed in path order".to_string(),
        });
    }
    Ok(manifest)
}

/// Restores the backup in `backup` (of `service`) into `destination`, which must be missing
/// or empty. The backup is verified first; its files are copied into a temporary sibling of
/// `destination` and fsynced, `check` is called on that copy (open it, compare its counts
/// with the manifest), and only then is the copy renamed to `destination`. On any error the
/// copy is removed and `destination` is left as it was.
///
/// # Errors
/// [`BackupError::NotEmpty`], what [`verify`] finds, [`BackupError::Check`] when `check`
/// fails, [`BackupError::Io`].
pub fn restore(
    backup: &Path,
    service: &str,
    destination: &Path,
    check: impl FnOnce(&Path, &Manifest) -> Result<(), crate::error::BoxError>,
) -> Result<Manifest> {
    ensure_empty(destination)?;
    let manifest = verify(backup, service)?;
    let name = destination
        .file_name()
        .ok_or_else(|| BackupError::Io {
            operation: "naming",
            path: destination.to_path_buf(),
            source: io::Error::new(io::ErrorKind::InvalidInput, "the path has no file name"),
        })?
        .to_string_lossy()
        .into_owned();
    let parent = match destination.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent).map_err(io_error("creating", &parent))?;
    let staging = parent.join(format!(".{name}.restoring-{}", std::process::id()));
    let result = (|| {
        if staging.exists() {
            fs::remove_dir_all(&staging).map_err(io_error("removing", &staging))?;
        }
        for entry in &manifest.files {
            let from = backup.join(&entry.path);
            let to = staging.join(&entry.path);
            if let Some(dir) = to.parent() {
                fs::create_dir_all(dir).map_err(io_error("creating", dir))?;
            }
            fs::copy(&from, &to).map_err(io_error("copying", &from))?;
            File::open(&to)
                .and_then(|file| file.sync_all())
                .map_err(io_error("syncing", &to))?;
        }
        // Re-read the copy: a restore must not trust the bytes it just wrote more than the
        // backup's.
        for entry in &manifest.files {
            let to = staging.join(&entry.path);
            let (size, blake3) = hash_file(&to)?;
            if size != entry.size || blake3 != entry.blake3 {
                return Err(BackupError::Damaged {
                    path: to,
                    reason: "the copy differs from the backup".to_string(),
                });
            }
        }
        check(&staging, &manifest).map_err(BackupError::Check)?;
        sync_directories(&staging)?;
        if destination.exists() {
            // Empty (checked above): rename cannot replace a directory that has entries.
            fs::remove_dir(destination).map_err(io_error("removing", destination))?;
        }
        fs::rename(&staging, destination).map_err(io_error("renaming", &staging))?;
        sync_dir(&parent)
    })();
    if result.is_err() {
        let _ = fs::remove_dir_all(&staging);
    }
    result.map(|()| manifest)
}

/// Every regular file under `dir` but the manifest (and its temporary), as sorted
/// `/`-separated relative paths.
fn list_files(dir: &Path) -> Result<Vec<String>> {
    let mut found = Vec::new();
    let mut pending = vec![(dir.to_path_buf(), String::new())];
    while let Some((path, prefix)) = pending.pop() {
        for entry in fs::read_dir(&path).map_err(io_error("listing", &path))? {
            let entry = entry.map_err(io_error("listing", &path))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let relative = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}/{name}")
            };
            let kind = entry
                .file_type()
                .map_err(io_error("reading", &entry.path()))?;
            if kind.is_dir() {
                pending.push((entry.path(), relative));
            } else if !(prefix.is_empty() && (name == MANIFEST || name == ".manifest.json.tmp")) {
                found.push(relative);
            }
        }
    }
    found.sort();
    Ok(found)
}

fn hash_file(path: &Path) -> Result<(u64, String)> {
    let mut file = File::open(path).map_err(io_error("opening", path))?;
    let mut hasher = blake3::Hasher::new();
    let mut buffer = vec![0u8; 1 << 16];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buffer).map_err(io_error("reading", path))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hasher.update(&buffer[..n]);
    }
    Ok((size, hasher.finalize().to_hex().to_string()))
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|file| file.sync_all())
        .map_err(io_error("syncing", dir))
}

/// Fsyncs `dir` and every directory under it, so that the names of the files are durable.
fn sync_directories(dir: &Path) -> Result<()> {
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        for entry in fs::read_dir(&path).map_err(io_error("listing", &path))? {
            let entry = entry.map_err(io_error("listing", &path))?;
            if entry
                .file_type()
                .map_err(io_error("reading", &entry.path()))?
                .is_dir()
            {
                pending.push(entry.path());
            }
        }
        sync_dir(&path)?;
    }
    Ok(())
}
