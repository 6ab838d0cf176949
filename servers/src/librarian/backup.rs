//! `librarian backup` and `librarian restore`: a self-describing copy of a running store
//! (`docs/RELIABILITY.md`, "Backup and restore").
//!
//! A backup directory mirrors a data directory: `meta/` (the engine's checkpoint), `blobs/`
//! (the blob files its records name), `uploads/` (the acknowledged bytes of resumable uploads
//! in progress), `token-secret` (when the data directory has one), and
//! `manifest.json` ([`engine::backup::Manifest`]) listing them with their hashes, the
//! change-feed revision and the counts a restore is checked against.

use std::collections::BTreeMap;
use std::path::Path;

use engine::backup::{self, BackupError, Manifest};
use engine::{Backend, EngineConfig};

use super::config::StoreConfig;

/// The service name in a librarian backup's manifest.
pub const SERVICE: &str = "librarian";
/// The token-signing secret's file in a data directory (`StoreConfig::token_secrets`).
const TOKEN_SECRET: &str = "token-secret";

/// Why a backup or a restore failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LibrarianBackupError {
    /// Writing, checking or restoring the backup's files failed.
    #[error(transparent)]
    Backup(#[from] BackupError),
    /// The store failed to copy itself (its engine cannot checkpoint, a blob is missing).
    #[error("backing up the store: {0}")]
    Store(#[from] blobstore::Error),
}

/// Backs up `store` (whose data directory and engine `config` describes) into `dir`, a new
/// or empty directory, while the store serves: [`blobstore::Store::backup`], the
/// token-signing secret, then the manifest, sealed and read back. A failed backup removes
/// what it wrote.
///
/// # Errors
/// [`BackupError::NotEmpty`] for a destination that holds anything; the store's error (an
/// engine that cannot checkpoint: PostgreSQL, sled, memory); what the check finds.
pub fn backup(
    store: &blobstore::Store,
    config: &StoreConfig,
    dir: &Path,
) -> Result<Manifest, LibrarianBackupError> {
    backup::prepare_destination(dir)?;
    let result = write_backup(store, config, dir);
    if result.is_err() {
        remove_contents(dir);
    }
    result
}

fn write_backup(
    store: &blobstore::Store,
    config: &StoreConfig,
    dir: &Path,
) -> Result<Manifest, LibrarianBackupError> {
    let report = store.backup(dir, EngineConfig::new(config.backend, dir.join("meta")))?;
    let secret = config.data_dir.join(TOKEN_SECRET);
    if secret.exists() {
        let target = dir.join(TOKEN_SECRET);
        std::fs::copy(&secret, &target).map_err(|source| BackupError::Io {
            operation: "copying",
            path: secret.clone(),
            source,
        })?;
    }
    let counts = BTreeMap::from([
        ("files".to_string(), report.files),
        ("blobs".to_string(), report.blobs),
        ("blob_files".to_string(), report.blob_files),
        ("blob_bytes".to_string(), report.blob_bytes),
        ("stored_bytes".to_string(), report.stored_bytes),
        ("logical_bytes".to_string(), report.logical_bytes),
        ("partial_uploads".to_string(), report.partial_uploads),
        ("partial_bytes".to_string(), report.partial_bytes),
    ]);
    Ok(backup::seal(dir, SERVICE, report.revision, counts)?)
}

/// Restores the backup in `backup_dir` into `config.data_dir`, which must be missing or
/// empty: verified against its manifest, copied beside the data directory, opened there
/// and compared with the manifest's revision and counts (every blob checked against its
/// hash), then renamed into place. Nothing is written into the data directory unless all
/// of that succeeds.
///
/// # Errors
/// [`BackupError::NotEmpty`], [`BackupError::NoManifest`], [`BackupError::Damaged`] (a file
/// altered or missing), [`BackupError::Check`] (the copy does not open or does not match).
pub fn restore(backup_dir: &Path, config: &StoreConfig) -> Result<Manifest, LibrarianBackupError> {
    Ok(backup::restore(
        backup_dir,
        SERVICE,
        &config.data_dir,
        check_copy,
    )?)
}

fn check_copy(staging: &Path, manifest: &Manifest) -> Result<(), blobstore::BoxError> {
    let store = blobstore::StoreBuilder::new(
        EngineConfig::new(Backend::Rocksdb, staging.join("meta")),
        staging,
    )
    .hot_cache_bytes(0)
    .open()?;
    let summary = store.summary()?;
    let found = [
        ("revision", store.change_log().head()),
        ("files", summary.files),
        ("blobs", summary.blobs),
    ];
    for (name, value) in found {
        let expected = match name {
            "revision" => Some(manifest.revision),
            name => manifest.counts.get(name).copied(),
        };
        if expected != Some(value) {
            return Err(format!(
                "the restored store has {name} = {value}, the manifest says {expected:?}"
            )
            .into());
        }
    }
    let mut after = None;
    loop {
        let report = store.verify(after, 1000)?;
        if let Some(problem) = report.problems.first() {
            return Err(format!("a blob of the restored store: {problem:?}").into());
        }
        match report.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    store.flush()?;
    Ok(())
}

/// Empties `dir` after a failed backup (it was empty before: [`backup::prepare_destination`]).
pub(crate) fn remove_contents(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            let _ = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
        }
    }
}
