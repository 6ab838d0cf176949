//! `directory backup` and `directory restore`: a self-describing copy of a running store
//! (`docs/RELIABILITY.md`, "Backup and restore").
//!
//! The directory's data directory is its engine's, so a backup directory is the engine's
//! checkpoint with `manifest.json` ([`engine::backup::Manifest`]) beside its files: the
//! change-feed revision and the index sizes a restore is checked against.

use std::collections::BTreeMap;
use std::path::Path;

use engine::backup::{self, BackupError, Manifest};
use engine::{Backend, Engine};

use super::config::{GraphConfig, OpenError};

/// The service name in a directory backup's manifest.
pub const SERVICE: &str = "directory";

/// Why a backup or a restore failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DirectoryBackupError {
    /// Writing, checking or restoring the backup's files failed.
    #[error(transparent)]
    Backup(#[from] BackupError),
    /// The checkpoint does not open as a directory store.
    #[error("opening the backup's copy of the store: {0}")]
    Open(#[from] OpenError),
    /// The checkpoint's teams do not load.
    #[error("loading the backup's teams: {0}")]
    Graph(#[from] graphdb::Error),
}

/// Backs up the store over `engine` into `dir`, a new or empty directory, while it serves:
/// the engine's checkpoint, opened as a directory store (which loads every index, so a
/// backup that does not load is refused now, not at restore), then the manifest, sealed and
/// read back. A failed backup removes what it wrote.
///
/// # Errors
/// [`BackupError::NotEmpty`] for a destination that holds anything; the engine's error (one
/// that cannot checkpoint: PostgreSQL, sled, memory); a copy that does not open.
pub fn backup(
    engine: &dyn Engine,
    config: &GraphConfig,
    dir: &Path,
) -> Result<Manifest, DirectoryBackupError> {
    backup::prepare_destination(dir)?;
    let result = write_backup(engine, config, dir);
    if result.is_err() {
        crate::librarian::backup::remove_contents(dir);
    }
    result
}

fn write_backup(
    engine: &dyn Engine,
    config: &GraphConfig,
    dir: &Path,
) -> Result<Manifest, DirectoryBackupError> {
    // A checkpoint is made into a directory that does not exist yet.
    std::fs::remove_dir(dir).map_err(|source| BackupError::Io {
        operation: "preparing",
        path: dir.to_path_buf(),
        source,
    })?;
    engine.checkpoint(dir).map_err(BackupError::Engine)?;
    let (revision, counts) = open_copy(config, dir)?;
    Ok(backup::seal(dir, SERVICE, revision, counts)?)
}

/// Opens the store in `dir` and answers its revision and index sizes.
fn open_copy(
    config: &GraphConfig,
    dir: &Path,
) -> Result<(u64, BTreeMap<String, u64>), DirectoryBackupError> {
    let copy = GraphConfig {
        backend: Backend::Rocksdb,
        data_dir: dir.to_path_buf(),
        postgres: None,
        ..config.clone()
    };
    let (graph, commits) = copy.open()?;
    let teams = graphdb::Teams::open(&graph)?;
    let stats = teams.stats();
    let revision = graph.change_log().head();
    let counts = BTreeMap::from([
        ("team_nodes".to_string(), stats.nodes),
        ("membership_edges".to_string(), stats.membership_edges),
    ]);
    drop((teams, commits, graph));
    Ok((revision, counts))
}

/// Restores the backup in `backup_dir` into `config.data_dir`, which must be missing or
/// empty: verified against its manifest, copied beside the data directory, opened there
/// (every index loaded) and compared with the manifest's revision and counts, then renamed
/// into place. Nothing is written into the data directory unless all of that succeeds.
///
/// # Errors
/// [`BackupError::NotEmpty`], [`BackupError::NoManifest`], [`BackupError::Damaged`],
/// [`BackupError::Check`].
pub fn restore(backup_dir: &Path, config: &GraphConfig) -> Result<Manifest, DirectoryBackupError> {
    Ok(backup::restore(
        backup_dir,
        SERVICE,
        &config.data_dir,
        |staging, manifest| {
            let (revision, counts) = open_copy(config, staging)?;
            if revision != manifest.revision || counts != manifest.counts {
                return Err(format!(
                    "the restored store has revision {revision} and counts {counts:?}, the \
                     manifest says {} and {:?}",
                    manifest.revision, manifest.counts
                )
                .into());
            }
            Ok(())
        },
    )?)
}
