//! `MemEngine`: the in-memory model backend.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::config::Poison;
use crate::{
    counter, Backend, BatchOp, Direction, Durability, Engine, Error, KeyValue, Keyspace, KvIter,
    ReadView, Result, ScanRange, WriteBatch,
};

type Table = BTreeMap<Vec<u8>, Vec<u8>>;
/// Every keyspace by name; cloned (cheaply, by `Arc`) for snapshots.
type Tables = BTreeMap<String, Arc<Table>>;

/// An engine over `BTreeMap`s: the model that property tests compare the other backends with.
///
/// Every write is immediately "durable" for as long as the [`MemEngine`] or an engine made by
/// [`MemEngine::reopen`] is alive. Snapshots share the maps and copy a keyspace only when it is
/// written while a snapshot holds it.
#[derive(Debug)]
pub struct MemEngine {
    names: Vec<String>,
    tables: Arc<Mutex<Arc<Tables>>>,
    poison: Poison,
}

impl MemEngine {
    /// An empty store with the given keyspaces.
    pub fn new(keyspaces: &[&str]) -> Self {
        Self::with_tables(Arc::new(Mutex::new(Arc::new(Tables::new()))), keyspaces)
    }

    fn with_tables(tables: Arc<Mutex<Arc<Tables>>>, keyspaces: &[&str]) -> Self {
        {
            let mut guard = tables.lock().unwrap_or_else(|e| e.into_inner());
            let tables = Arc::make_mut(&mut guard);
            for name in keyspaces {
                tables.entry(name.to_string()).or_default();
            }
        }
        MemEngine {
            names: keyspaces.iter().map(|s| s.to_string()).collect(),
            tables,
            poison: Poison::default(),
        }
    }

    /// A new engine over the same data, as if the process had restarted with every write
    /// durable; it may declare more keyspaces. The poisoned state is not carried over.
    pub fn reopen(&self, keyspaces: &[&str]) -> MemEngine {
        Self::with_tables(self.tables.clone(), keyspaces)
    }

    /// A new engine holding a copy of this one's data as it is now; later writes to either
    /// are not seen by the other. The fault-injecting engine uses it for its durable image.
    pub fn fork(&self, keyspaces: &[&str]) -> MemEngine {
        let copy = Arc::new(Mutex::new(self.current()));
        Self::with_tables(copy, keyspaces)
    }

    fn current(&self) -> Arc<Tables> {
        self.tables
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn name(&self, keyspace: Keyspace) -> Result<&str> {
        self.names
            .get(keyspace.index())
            .map(String::as_str)
            .ok_or_else(|| Error::UnknownKeyspace {
                name: format!("#{}", keyspace.index()),
            })
    }
}

/// A frozen view of the tables: what snapshots and scans read.
#[derive(Debug)]
struct MemView<'a> {
    engine: &'a MemEngine,
    tables: Arc<Tables>,
}

impl MemView<'_> {
    fn table(&self, keyspace: Keyspace) -> Result<Arc<Table>> {
        let name = self.engine.name(keyspace)?;
        Ok(self.tables.get(name).cloned().unwrap_or_default())
    }
}

impl ReadView for MemView<'_> {
    fn get(&self, keyspace: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.table(keyspace)?.get(key).cloned())
    }

    fn scan(
        &self,
        keyspace: Keyspace,
        range: ScanRange,
        direction: Direction,
    ) -> Result<KvIter<'_>> {
        Ok(Box::new(MemScan {
            table: self.table(keyspace)?,
            range,
            direction,
            last: None,
            done: false,
        }))
    }
}

/// A scan over a shared map: each step looks up the entry after the last one returned, so the
/// iterator owns its `Arc` instead of borrowing the map.
struct MemScan {
    table: Arc<Table>,
    range: ScanRange,
    direction: Direction,
    last: Option<Vec<u8>>,
    done: bool,
}

impl Iterator for MemScan {
    type Item = Result<KeyValue>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.range.is_empty() {
            return None;
        }
        let start = Bound::Included(self.range.start.clone());
        let end = match &self.range.end {
            Some(end) => Bound::Excluded(end.clone()),
            None => Bound::Unbounded,
        };
        let found = match (self.direction, self.last.take()) {
            (Direction::Forward, None) => self.table.range((start, end)).next(),
            (Direction::Forward, Some(last)) => {
                self.table.range((Bound::Excluded(last), end)).next()
            }
            (Direction::Reverse, None) => self.table.range((start, end)).next_back(),
            (Direction::Reverse, Some(last)) => {
                self.table.range((start, Bound::Excluded(last))).next_back()
            }
        };
        match found {
            Some((key, value)) => {
                self.last = Some(key.clone());
                Some(Ok((key.clone(), value.clone())))
            }
            None => {
                self.done = true;
                None
            }
        }
    }
}

impl ReadView for MemEngine {
    fn get(&self, keyspace: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let name = self.name(keyspace)?;
        let tables = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        Ok(tables.get(name).and_then(|table| table.get(key).cloned()))
    }

    fn scan(
        &self,
        keyspace: Keyspace,
        range: ScanRange,
        direction: Direction,
    ) -> Result<KvIter<'_>> {
        let view = MemView {
            engine: self,
            tables: self.current(),
        };
        let table = view.table(keyspace)?;
        Ok(Box::new(MemScan {
            table,
            range,
            direction,
            last: None,
            done: false,
        }))
    }
}

impl Engine for MemEngine {
    fn backend(&self) -> Backend {
        Backend::Memory
    }

    fn keyspace(&self, name: &str) -> Result<Keyspace> {
        Keyspace::lookup(&self.names, name)
    }

    fn write(&self, batch: WriteBatch, _durability: Durability) -> Result<()> {
        self.poison.check(Backend::Memory, Path::new(""))?;
        // Resolve every keyspace first, so that a bad handle changes nothing.
        let mut resolved = Vec::with_capacity(batch.len());
        for op in batch.ops() {
            resolved.push((self.name(op.keyspace())?.to_string(), op));
        }
        let mut guard = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        // Mutate in place (a keyspace is copied only if a snapshot shares it) and keep an undo
        // log, so that a failing counter add leaves nothing of the batch applied.
        let tables = Arc::make_mut(&mut guard);
        let mut undo: Vec<(String, Vec<u8>, Option<Vec<u8>>)> = Vec::new();
        let mut failure = None;
        for (name, op) in resolved {
            let table = Arc::make_mut(tables.entry(name.clone()).or_default());
            match op {
                BatchOp::Put { key, value, .. } => {
                    let old = table.insert(key.to_vec(), value.to_vec());
                    undo.push((name, key.to_vec(), old));
                }
                BatchOp::Delete { key, .. } => {
                    let old = table.remove(key);
                    undo.push((name, key.to_vec(), old));
                }
                BatchOp::DeleteRange { start, end, .. } => {
                    if start < end {
                        let doomed: Vec<Vec<u8>> = table
                            .range(start.to_vec()..end.to_vec())
                            .map(|(k, _)| k.clone())
                            .collect();
                        for key in doomed {
                            let old = table.remove(&key);
                            undo.push((name.clone(), key, old));
                        }
                    }
                }
                BatchOp::CounterAdd { key, delta, .. } => {
                    let existing = table.get(key);
                    match counter::add(existing.map(Vec::as_slice), delta) {
                        Some(value) => {
                            let old = table.insert(key.to_vec(), counter::encode(value).to_vec());
                            undo.push((name, key.to_vec(), old));
                        }
                        None => {
                            failure = Some(Error::CorruptCounter {
                                len: existing.map_or(0, Vec::len),
                                key: key.to_vec(),
                            });
                            break;
                        }
                    }
                }
            }
        }
        if let Some(error) = failure {
            for (name, key, old) in undo.into_iter().rev() {
                let table = Arc::make_mut(tables.entry(name).or_default());
                match old {
                    Some(value) => table.insert(key, value),
                    None => table.remove(&key),
                };
            }
            return Err(error);
        }
        Ok(())
    }

    fn snapshot(&self) -> Result<Box<dyn ReadView + '_>> {
        Ok(Box::new(MemView {
            engine: self,
            tables: self.current(),
        }))
    }

    fn flush(&self) -> Result<()> {
        self.poison.check(Backend::Memory, Path::new(""))
    }
}
