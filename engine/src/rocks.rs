//! `RocksEngine`: the default backend, over RocksDB.

use std::path::{Path, PathBuf};

use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, IteratorMode, MergeOperands,
    Options, ReadOptions, WriteOptions, DB,
};

use crate::config::Poison;
use crate::{
    counter, Backend, BatchOp, Direction, Durability, Engine, EngineConfig, Error, Keyspace,
    KvIter, ReadView, Result, ScanRange, WriteBatch,
};

const COUNTER_MERGE_OPERATOR: &str = "engine.counter_add.v1";

/// An engine over RocksDB: one column family per keyspace, counters as an associative merge
/// operator, the write-ahead log fsynced for [`Durability::Sync`] writes (RocksDB groups
/// concurrent synced writers into one fsync).
pub struct RocksEngine {
    db: DB,
    path: PathBuf,
    names: Vec<String>,
    poison: Poison,
}

impl std::fmt::Debug for RocksEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksEngine")
            .field("path", &self.path)
            .field("keyspaces", &self.names)
            .finish_non_exhaustive()
    }
}

/// Adds the 8-byte big-endian operands to the existing counter. Returning `None` makes RocksDB
/// report corruption, which is what a non-counter value under a counter key is.
fn counter_merge(
    _key: &[u8],
    existing: Option<&[u8]>,
    operands: &MergeOperands,
) -> Option<Vec<u8>> {
    let mut total = match existing {
        None => 0,
        Some(bytes) => counter::decode(bytes)?,
    };
    for operand in operands {
        total = total.wrapping_add(counter::decode(operand)?);
    }
    Some(counter::encode(total).to_vec())
}

fn column_family_options(cache: &Cache) -> Options {
    let mut options = Options::default();
    options.set_merge_operator_associative(COUNTER_MERGE_OPERATOR, counter_merge);
    // A hot counter (a bucket's statistics) receives a merge operand per write; without a
    // bound, a read merges every operand not yet compacted (38 ms for 1,000,000 of them).
    // Past this many successive operands in a memtable, RocksDB folds them into a value at
    // write time, so a counter read stays constant-time.
    options.set_max_successive_merges(64);
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(cache);
    table.set_bloom_filter(10.0, false);
    table.set_cache_index_and_filter_blocks(true);
    table.set_pin_l0_filter_and_index_blocks_in_cache(true);
    options.set_block_based_table_factory(&table);
    options.set_compression_type(rocksdb::DBCompressionType::Lz4);
    options
}

impl RocksEngine {
    /// Opens or creates the store at `config.path` with the given keyspaces.
    ///
    /// # Errors
    /// [`Error::Backend`] when RocksDB cannot open the store (a missing or unwritable
    /// directory, a lock held by another process, corruption).
    pub fn open(config: &EngineConfig, keyspaces: &[&str]) -> Result<Self> {
        let path = config.path.clone();
        let fail = |source: rocksdb::Error| Error::Backend {
            backend: Backend::Rocksdb,
            operation: "open",
            path: path.clone(),
            source: source.into(),
        };
        let cache = Cache::new_lru_cache(config.block_cache_bytes);
        let mut db_options = column_family_options(&cache);
        db_options.create_if_missing(true);
        db_options.create_missing_column_families(true);
        db_options.set_max_background_jobs(2);
        db_options.set_bytes_per_sync(1 << 20);
        db_options.set_keep_log_file_num(10);
        // With many column families, one rarely written family keeps every write-ahead log
        // alive until it is flushed, and reopening replays them all (11 s for 1 GB of log
        // after a million uploads). Past this much log, RocksDB flushes the families that pin
        // the oldest one, which bounds the replay at open.
        db_options.set_max_total_wal_size(64 << 20);

        let mut families: Vec<String> = if path.join("CURRENT").exists() {
            DB::list_cf(&db_options, &path).map_err(fail)?
        } else {
            vec!["default".to_string()]
        };
        for name in keyspaces {
            if !families.iter().any(|f| f == name) {
                families.push(name.to_string());
            }
        }
        let descriptors = families
            .iter()
            .map(|name| ColumnFamilyDescriptor::new(name, column_family_options(&cache)));
        let db = DB::open_cf_descriptors(&db_options, &path, descriptors).map_err(fail)?;
        Ok(RocksEngine {
            db,
            path,
            names: keyspaces.iter().map(|s| s.to_string()).collect(),
            poison: Poison::default(),
        })
    }

    fn family(&self, keyspace: Keyspace) -> Result<&ColumnFamily> {
        self.names
            .get(keyspace.index())
            .and_then(|name| self.db.cf_handle(name))
            .ok_or_else(|| Error::UnknownKeyspace {
                name: format!("#{}", keyspace.index()),
            })
    }

    fn error(&self, operation: &'static str, source: rocksdb::Error) -> Error {
        Error::Backend {
            backend: Backend::Rocksdb,
            operation,
            path: self.path.clone(),
            source: source.into(),
        }
    }

    /// The store's directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A RocksDB property of a keyspace (for example `rocksdb.total-sst-files-size`), for
    /// capacity reports.
    ///
    /// # Errors
    /// An unknown keyspace or RocksDB's error.
    pub fn property_int(&self, keyspace: Keyspace, name: &str) -> Result<Option<u64>> {
        let family = self.family(keyspace)?;
        self.db
            .property_int_value_cf(family, name)
            .map_err(|e| self.error("read property", e))
    }

    /// Compacts every table of a keyspace into the bottom level, as a long-running store's
    /// background compactions converge to, so that capacity reports measure its steady size
    /// rather than the levels one bulk fill happened to leave.
    ///
    /// # Errors
    /// An unknown keyspace (RocksDB reports no error from a manual compaction).
    pub fn compact_fully(&self, keyspace: Keyspace) -> Result<()> {
        let family = self.family(keyspace)?;
        let mut options = rocksdb::CompactOptions::default();
        options.set_bottommost_level_compaction(rocksdb::BottommostLevelCompaction::Force);
        self.db
            .compact_range_cf_opt(family, None::<&[u8]>, None::<&[u8]>, &options);
        Ok(())
    }
}

impl Drop for RocksEngine {
    /// Flushes the memtables on a clean shutdown so that the next open has no log to
    /// replay. Everything acknowledged is already in the log, so a failure here loses
    /// nothing: it only makes the next open slower.
    fn drop(&mut self) {
        for name in &self.names {
            if let Some(family) = self.db.cf_handle(name) {
                let _ = self.db.flush_cf(family);
            }
        }
    }
}

fn read_options(range: &ScanRange) -> ReadOptions {
    let mut options = ReadOptions::default();
    options.fill_cache(!range.read_once);
    options.set_iterate_lower_bound(range.start.clone());
    if let Some(end) = &range.end {
        options.set_iterate_upper_bound(end.clone());
    }
    options
}

fn iterator_mode(range: &ScanRange, direction: Direction) -> IteratorMode<'_> {
    match direction {
        Direction::Forward => IteratorMode::From(&range.start, rocksdb::Direction::Forward),
        // With an upper bound set, seeking to the last key stops below it.
        Direction::Reverse => IteratorMode::End,
    }
}

impl ReadView for RocksEngine {
    fn get(&self, keyspace: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let family = self.family(keyspace)?;
        self.db
            .get_cf(family, key)
            .map_err(|e| self.error("read", e))
    }

    fn multi_get(&self, keyspace: Keyspace, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>> {
        let family = self.family(keyspace)?;
        self.db
            .multi_get_cf(keys.iter().map(|key| (family, *key)))
            .into_iter()
            .map(|result| result.map_err(|e| self.error("read", e)))
            .collect()
    }

    fn scan(
        &self,
        keyspace: Keyspace,
        range: ScanRange,
        direction: Direction,
    ) -> Result<KvIter<'_>> {
        let family = self.family(keyspace)?;
        if range.is_empty() {
            return Ok(Box::new(std::iter::empty()));
        }
        let iter = self.db.iterator_cf_opt(
            family,
            read_options(&range),
            iterator_mode(&range, direction),
        );
        Ok(Box::new(iter.map(move |item| {
            item.map(|(k, v)| (k.into_vec(), v.into_vec()))
                .map_err(|e| self.error("scan", e))
        })))
    }
}

/// A RocksDB snapshot: every read sees the store as of its creation.
struct RocksSnapshot<'a> {
    engine: &'a RocksEngine,
    snapshot: rocksdb::Snapshot<'a>,
}

impl ReadView for RocksSnapshot<'_> {
    fn get(&self, keyspace: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let family = self.engine.family(keyspace)?;
        self.snapshot
            .get_cf(family, key)
            .map_err(|e| self.engine.error("read", e))
    }

    fn scan(
        &self,
        keyspace: Keyspace,
        range: ScanRange,
        direction: Direction,
    ) -> Result<KvIter<'_>> {
        let family = self.engine.family(keyspace)?;
        if range.is_empty() {
            return Ok(Box::new(std::iter::empty()));
        }
        let iter = self.snapshot.iterator_cf_opt(
            family,
            read_options(&range),
            iterator_mode(&range, direction),
        );
        let engine = self.engine;
        Ok(Box::new(iter.map(move |item| {
            item.map(|(k, v)| (k.into_vec(), v.into_vec()))
                .map_err(|e| engine.error("scan", e))
        })))
    }
}

impl Engine for RocksEngine {
    fn backend(&self) -> Backend {
        Backend::Rocksdb
    }

    fn keyspace(&self, name: &str) -> Result<Keyspace> {
        Keyspace::lookup(&self.names, name)
    }

    fn write(&self, batch: WriteBatch, durability: Durability) -> Result<()> {
        self.poison.check(Backend::Rocksdb, &self.path)?;
        let mut rocks_batch = rocksdb::WriteBatch::default();
        for op in batch.ops() {
            match op {
                BatchOp::Put {
                    keyspace,
                    key,
                    value,
                } => rocks_batch.put_cf(self.family(keyspace)?, key, value),
                BatchOp::Delete { keyspace, key } => {
                    rocks_batch.delete_cf(self.family(keyspace)?, key)
                }
                BatchOp::DeleteRange {
                    keyspace,
                    start,
                    end,
                } => {
                    // RocksDB rejects an empty or inverted range; it deletes nothing anyway.
                    if start < end {
                        rocks_batch.delete_range_cf(self.family(keyspace)?, start, end)
                    }
                }
                BatchOp::CounterAdd {
                    keyspace,
                    key,
                    delta,
                } => rocks_batch.merge_cf(self.family(keyspace)?, key, counter::encode(delta)),
            }
        }
        // RocksDB holds its own copy of the batch now: free ours before the memtable grows,
        // so a large batch (an import's million operations) is not held three times at once.
        drop(batch);
        let mut options = WriteOptions::default();
        options.set_sync(durability == Durability::Sync);
        self.db.write_opt(rocks_batch, &options).map_err(|e| {
            let error = self.error("write", e);
            self.poison.set(&error);
            error
        })
    }

    fn snapshot(&self) -> Result<Box<dyn ReadView + '_>> {
        Ok(Box::new(RocksSnapshot {
            engine: self,
            snapshot: self.db.snapshot(),
        }))
    }

    fn checkpoint(&self, dir: &Path) -> Result<()> {
        // Flushes the memtables first (a log size of 0 for flush), so the copy's table files
        // hold everything and its write-ahead log is short; RocksDB does not stop writers.
        let checkpoint = rocksdb::checkpoint::Checkpoint::new(&self.db)
            .map_err(|e| self.error("checkpoint", e))?;
        checkpoint
            .create_checkpoint(dir)
            .map_err(|e| self.error("checkpoint", e))
    }

    fn flush(&self) -> Result<()> {
        self.poison.check(Backend::Rocksdb, &self.path)?;
        self.db.flush_wal(true).map_err(|e| {
            let error = self.error("flush", e);
            self.poison.set(&error);
            error
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Durability, EngineConfig, WriteBatch};

    /// A scan marked read-once leaves RocksDB's block cache as it was; the same scan without
    /// the mark fills it (so the test would notice the option being ignored).
    #[test]
    fn a_read_once_scan_leaves_the_block_cache_empty() {
        let dir = tempfile::tempdir().unwrap();
        let engine = RocksEngine::open(&EngineConfig::rocksdb(dir.path()), &["alpha"]).unwrap();
        let alpha = engine.keyspace("alpha").unwrap();
        let mut batch = WriteBatch::new();
        for n in 0u32..20_000 {
            batch.put(alpha, n.to_be_bytes(), vec![7u8; 100]);
        }
        engine.write(batch, Durability::Sync).unwrap();
        // Into SST files, so that the scans read blocks rather than the memtable.
        engine.db.flush_cf(engine.family(alpha).unwrap()).unwrap();
        let usage = || {
            engine
                .property_int(alpha, "rocksdb.block-cache-usage")
                .unwrap()
                .unwrap()
        };
        let before = usage();
        let count = |range: ScanRange| {
            engine
                .scan(alpha, range, Direction::Forward)
                .unwrap()
                .count()
        };
        assert_eq!(count(ScanRange::all().read_once()), 20_000);
        assert_eq!(usage(), before, "a read-once scan filled the cache");
        assert_eq!(count(ScanRange::all()), 20_000);
        assert!(
            usage() > before + 1_000_000,
            "a plain scan cached {} bytes",
            usage() - before
        );
    }
}
