//! Reads: single keys, scans paged with keyset pagination, and snapshots as repeatable-read
//! transactions on a connection of their own.

use super::*;

/// Reads through a connection: the engine's pool (with retries) or a snapshot's own one.
pub(super) trait Runner {
    fn engine(&self) -> &PgEngine;
    fn run(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>>;
}

impl Runner for PgEngine {
    fn engine(&self) -> &PgEngine {
        self
    }

    fn run(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>> {
        self.with_retry("read", |conn| conn.query(sql, params))
    }
}

pub(super) fn get(runner: &dyn Runner, keyspace: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>> {
    let engine = runner.engine();
    let sql = &engine.table(keyspace)?.get;
    let rows = runner.run(sql, &[&key])?;
    match rows.first() {
        None => Ok(None),
        Some(row) => row
            .try_get(0)
            .map(Some)
            .map_err(|e| engine.error("read", e)),
    }
}

pub(super) fn scan<'a>(
    runner: &'a dyn Runner,
    keyspace: Keyspace,
    range: ScanRange,
    direction: Direction,
) -> Result<KvIter<'a>> {
    let table = runner.engine().table(keyspace)?;
    Ok(Box::new(PgScan {
        runner,
        table,
        done: range.is_empty(),
        range,
        direction,
        last: None,
        page: VecDeque::new(),
    }))
}

/// A scan, one page of [`SCAN_PAGE_ROWS`] rows at a time, each page starting after the last
/// key returned.
pub(super) struct PgScan<'a> {
    pub(super) runner: &'a dyn Runner,
    pub(super) table: &'a TableSql,
    pub(super) range: ScanRange,
    pub(super) direction: Direction,
    pub(super) last: Option<Vec<u8>>,
    pub(super) page: VecDeque<KeyValue>,
    pub(super) done: bool,
}

impl PgScan<'_> {
    pub(super) fn fetch(&mut self) -> Result<()> {
        let engine = self.runner.engine();
        let limit = SCAN_PAGE_ROWS;
        let rows = match self.direction {
            Direction::Forward => {
                let (lower, inclusive) = match &self.last {
                    None => (&self.range.start, true),
                    Some(last) => (last, false),
                };
                match &self.range.end {
                    Some(end) => self.runner.run(
                        self.table.scan(true, inclusive, true),
                        &[lower, end, &limit],
                    )?,
                    None => self
                        .runner
                        .run(self.table.scan(true, inclusive, false), &[lower, &limit])?,
                }
            }
            Direction::Reverse => match self.last.as_ref().or(self.range.end.as_ref()) {
                Some(upper) => self.runner.run(
                    self.table.scan(false, true, true),
                    &[&self.range.start, upper, &limit],
                )?,
                None => self.runner.run(
                    self.table.scan(false, true, false),
                    &[&self.range.start, &limit],
                )?,
            },
        };
        if (rows.len() as i64) < limit {
            self.done = true;
        }
        for row in rows {
            let key: Vec<u8> = row.try_get(0).map_err(|e| engine.error("scan", e))?;
            let value: Vec<u8> = row.try_get(1).map_err(|e| engine.error("scan", e))?;
            self.page.push_back((key, value));
        }
        if let Some((key, _)) = self.page.back() {
            self.last = Some(key.clone());
        }
        Ok(())
    }
}

impl Iterator for PgScan<'_> {
    type Item = Result<KeyValue>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.page.is_empty() && !self.done {
            if let Err(error) = self.fetch() {
                self.done = true;
                return Some(Err(error));
            }
        }
        self.page.pop_front().map(Ok)
    }
}

impl ReadView for PgEngine {
    fn get(&self, keyspace: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>> {
        get(self, keyspace, key)
    }

    fn multi_get(&self, keyspace: Keyspace, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>> {
        let sql = &self.table(keyspace)?.get;
        let values = self.with_retry("read", |conn| {
            keys.iter()
                .map(|key| {
                    let rows = conn.query(sql, &[key])?;
                    rows.first().map(|row| row.try_get(0)).transpose()
                })
                .collect::<Result<Vec<Option<Vec<u8>>>, postgres::Error>>()
        })?;
        Ok(values)
    }

    /// The entries of `range`, fetched a page at a time in key order: each page sees what
    /// was committed when it was fetched, so a scan of the live engine that spans several
    /// pages is not a snapshot (use [`Engine::snapshot`] for one).
    fn scan(
        &self,
        keyspace: Keyspace,
        range: ScanRange,
        direction: Direction,
    ) -> Result<KvIter<'_>> {
        scan(self, keyspace, range, direction)
    }
}

/// A repeatable-read, read-only transaction on a connection of its own: every read sees the
/// database as of the snapshot's first statement, taken when it is created.
pub(super) struct PgSnapshot<'a> {
    pub(super) engine: &'a PgEngine,
    pub(super) conn: Mutex<Option<Conn>>,
}

impl Runner for PgSnapshot<'_> {
    fn engine(&self) -> &PgEngine {
        self.engine
    }

    fn run(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>> {
        let mut guard = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        let conn = guard
            .as_mut()
            .ok_or_else(|| self.engine.error("read", PgFailure::SnapshotLost))?;
        match conn.query(sql, params) {
            Ok(rows) => Ok(rows),
            Err(error) => {
                // A snapshot cannot move to another connection: its transaction is gone.
                if is_connection_error(&error) {
                    self.engine.suspect.store(true, Ordering::SeqCst);
                    *guard = None;
                }
                Err(self.engine.error("read", error))
            }
        }
    }
}

impl ReadView for PgSnapshot<'_> {
    fn get(&self, keyspace: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>> {
        get(self, keyspace, key)
    }

    fn scan(
        &self,
        keyspace: Keyspace,
        range: ScanRange,
        direction: Direction,
    ) -> Result<KvIter<'_>> {
        scan(self, keyspace, range, direction)
    }
}

impl Drop for PgSnapshot<'_> {
    fn drop(&mut self) {
        let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(mut conn) = conn {
            if conn.client.batch_execute("ROLLBACK").is_ok() {
                self.engine.checkin(conn);
            }
        }
    }
}
