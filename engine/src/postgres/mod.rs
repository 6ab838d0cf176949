//! `PgEngine`: the engine over PostgreSQL, for several instances of a service on one
//! replicated database. The SQL it sends, and what survives which crash, is in
//! `engine/DESIGN.md` ("The PostgreSQL backend").

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use postgres::error::SqlState;
use postgres::types::ToSql;
use postgres::{Client, NoTls, Row, Statement};

mod combine;
mod leases;
mod plan;
mod read;
mod schema;
mod write;

use leases::LeasesSql;
use read::PgSnapshot;

use crate::config::{Poison, PostgresConfig};
use crate::error::BoxError;
use crate::{
    counter, Backend, BatchOp, Direction, Durability, Engine, Epoch, Error, KeyValue, Keyspace,
    KvIter, Leadership, ReadView, Result, ScanRange, WriteBatch,
};

/// Rows fetched per query of a scan: scans page through the range in key order.
const SCAN_PAGE_ROWS: i64 = 256;

/// Batch tokens older than this are deleted (every [`PRUNE_EVERY`] batches). A token only
/// matters until its writer has resolved an unknown commit outcome, or has verified its
/// buffered batches after reconnecting, both of which happen within `retry_ms`.
const TOKEN_KEEP: Duration = Duration::from_secs(3600);
const PRUNE_EVERY: u64 = 1024;

/// The internal tables, beside the keyspaces' `kv_<name>` tables in the same schema.
const META_TABLE: &str = "lpstore_meta";
const BATCHES_TABLE: &str = "lpstore_batches";
const LEASES_TABLE: &str = "lpstore_leases";

/// A write transaction left idle this long (its client paused or partitioned between two
/// statements) is ended by the server, releasing its locks: so a takeover, which waits for
/// the write transactions in flight under the old epoch, never waits longer.
const WRITE_IDLE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long an acquisition waits for the lease row's lock (held by another acquisition, or
/// by write transactions in flight under the old epoch, at most [`WRITE_IDLE_TIMEOUT`] idle)
/// before it gives up for this round; also the bound on each of its statements, so that no
/// sequence of short waits can hold it longer.
const ACQUIRE_LOCK_TIMEOUT: Duration = Duration::from_secs(10);

/// What went wrong beyond what PostgreSQL reported itself.
#[derive(Debug, Clone, thiserror::Error)]
enum PgFailure {
    #[error(
        "the connection was lost while the batch was committing and its outcome could not be \
         resolved within {0:?}: the batch may or may not have landed ({1})"
    )]
    Unresolved(Duration, String),
    #[error(
        "{0} buffered batch(es) acknowledged earlier are missing after a reconnection: the \
         server restarted or failed over before they were made durable"
    )]
    BufferedLost(usize),
    #[error(
        "buffered batches acknowledged over {0:?} ago, not flushed since, cannot be verified \
         after a reconnection"
    )]
    BufferedUnverifiable(Duration),
    #[error("unexpected row from PostgreSQL: {0}")]
    BadRow(String),
    #[error("the snapshot's connection was lost; take a new snapshot")]
    SnapshotLost,
}

/// One connection and the statements prepared on it.
struct Conn {
    client: Client,
    statements: HashMap<String, Statement>,
}

impl Conn {
    fn statement(&mut self, sql: &str) -> Result<Statement, postgres::Error> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.client.prepare(sql)?;
        self.statements.insert(sql.to_string(), statement.clone());
        Ok(statement)
    }

    fn query(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, postgres::Error> {
        let statement = self.statement(sql)?;
        self.client.query(&statement, params)
    }

    fn execute(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, postgres::Error> {
        let statement = self.statement(sql)?;
        self.client.execute(&statement, params)
    }
}

/// Whether an error means the connection (or the server behind it) is gone or unusable for
/// writes, so that the operation may be retried on a new connection: an I/O error, a closed
/// connection, a timeout or a garbled exchange on our side; on the server's, the connection
/// exception class, a shutdown or a terminated backend (`pg_terminate_backend`), or a
/// read-only server (a standby, during a failover). Not: bad parameters, bad rows, bad
/// configuration, authentication.
fn is_connection_error(error: &postgres::Error) -> bool {
    if let Some(code) = error.code() {
        return code.code().starts_with("08")
            || *code == SqlState::ADMIN_SHUTDOWN
            || *code == SqlState::CRASH_SHUTDOWN
            || *code == SqlState::CANNOT_CONNECT_NOW
            || *code == SqlState::READ_ONLY_SQL_TRANSACTION
            || *code == SqlState::IDLE_SESSION_TIMEOUT
            || *code == SqlState::IDLE_IN_TRANSACTION_SESSION_TIMEOUT;
    }
    if error.is_closed() {
        return true;
    }
    match std::error::Error::source(error) {
        Some(source) => source.is::<std::io::Error>(),
        // The client's own timeout, or a message it did not expect (the exchange is lost).
        None => {
            let text = error.to_string();
            text.starts_with("timeout") || text.starts_with("unexpected message")
        }
    }
}

/// Whether creating the tables failed because another process created the same objects at
/// the same moment.
fn is_catalog_race(source: &(dyn std::error::Error + Send + Sync + 'static)) -> bool {
    let Some(error) = source.downcast_ref::<postgres::Error>() else {
        return false;
    };
    matches!(
        error.code(),
        Some(code) if *code == SqlState::UNIQUE_VIOLATION
            || *code == SqlState::DUPLICATE_TABLE
            || *code == SqlState::DUPLICATE_SCHEMA
    )
}

/// Whether PostgreSQL rolled the transaction back for a conflict with another one, so that
/// running it again is right.
fn is_conflict(error: &postgres::Error) -> bool {
    matches!(
        error.code(),
        Some(code) if *code == SqlState::T_R_DEADLOCK_DETECTED
            || *code == SqlState::T_R_SERIALIZATION_FAILURE
    )
}

/// Waits between attempts after a lost connection or a conflict, doubling the pause, until
/// the configured time has passed.
struct Backoff {
    started: Instant,
    pause: Duration,
    limit: Duration,
}

impl Backoff {
    fn new(limit: Duration) -> Self {
        Backoff {
            started: Instant::now(),
            pause: Duration::from_millis(5),
            limit,
        }
    }

    /// Sleeps before the next attempt, or fails with `error` when it is not worth retrying
    /// or the time is up.
    fn wait(
        &mut self,
        engine: &PgEngine,
        operation: &'static str,
        error: postgres::Error,
    ) -> Result<()> {
        if !(is_connection_error(&error) || is_conflict(&error)) {
            return Err(engine.error(operation, error));
        }
        if self.started.elapsed() >= self.limit {
            return Err(engine.error(
                operation,
                crate::error::Unreachable {
                    waited: self.limit,
                    last: error.to_string(),
                },
            ));
        }
        std::thread::sleep(self.pause);
        self.pause = (self.pause * 2).min(Duration::from_millis(500));
        Ok(())
    }
}

/// Why one attempt at a batch failed.
enum Attempt {
    /// Rolled back (or never sent): nothing applied, and running it again is right.
    Retry(postgres::Error),
    /// Rolled back: nothing applied, and running it again would fail the same way.
    Refused(Error),
    /// COMMIT was sent and no answer came back: the batch may or may not have landed.
    Unknown(postgres::Error),
}

/// A quoted identifier (`"name"` with inner quotes doubled).
fn quote(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

/// The SQL of one keyspace's table.
#[derive(Debug)]
struct TableSql {
    get: String,
    put_many: String,
    delete_many: String,
    delete_range: String,
    counter_lock_many: String,
    counter_update_many: String,
    counter_insert_many: String,
    /// Scans: `[direction][lower bound inclusive?][upper bound present?]`, see `scan_sql`.
    scans: Vec<String>,
}

impl TableSql {
    fn new(table: &str) -> Self {
        let mut scans = Vec::new();
        for forward in [true, false] {
            for lower_inclusive in [true, false] {
                for upper in [true, false] {
                    scans.push(scan_sql(table, forward, lower_inclusive, upper));
                }
            }
        }
        TableSql {
            get: format!("SELECT v FROM {table} WHERE k = $1"),
            // Arrays of keys and values, one statement for all the rows of a batch's
            // keyspace (`plan.rs`); a key appears once per statement.
            put_many: format!(
                "INSERT INTO {table} (k, v) SELECT * FROM unnest(CAST($1 AS BYTEA[]), CAST($2 AS BYTEA[])) \
                 ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v"
            ),
            delete_many: format!("DELETE FROM {table} WHERE k = ANY(CAST($1 AS BYTEA[]))"),
            delete_range: format!("DELETE FROM {table} WHERE k >= $1 AND k < $2"),
            counter_lock_many: format!(
                "SELECT k, v FROM {table} WHERE k = ANY(CAST($1 AS BYTEA[])) ORDER BY k FOR UPDATE"
            ),
            counter_update_many: format!(
                "UPDATE {table} AS t SET v = u.v \
                 FROM unnest(CAST($1 AS BYTEA[]), CAST($2 AS BYTEA[])) AS u (k, v) WHERE t.k = u.k"
            ),
            counter_insert_many: format!(
                "INSERT INTO {table} (k, v) SELECT * FROM unnest(CAST($1 AS BYTEA[]), CAST($2 AS BYTEA[])) \
                 ON CONFLICT (k) DO NOTHING RETURNING k"
            ),
            scans,
        }
    }

    fn scan(&self, forward: bool, lower_inclusive: bool, upper: bool) -> &str {
        let index =
            usize::from(!forward) * 4 + usize::from(!lower_inclusive) * 2 + usize::from(!upper);
        &self.scans[index]
    }
}

/// A page of a scan. Forward: `$1` is the lower bound (inclusive on the first page, the last
/// key returned afterwards), `$2` the end. Reverse: `$1` is the start (inclusive), `$2` the
/// upper bound (the end on the first page, the last key returned afterwards), always
/// exclusive; `lower_inclusive` is then always true and `upper` says whether `$2` is given.
fn scan_sql(table: &str, forward: bool, lower_inclusive: bool, upper: bool) -> String {
    let lower = if lower_inclusive { ">=" } else { ">" };
    let upper_clause = if upper { " AND k < $2" } else { "" };
    let order = if forward { "ASC" } else { "DESC" };
    let limit = if upper { "$3" } else { "$2" };
    format!(
        "SELECT k, v FROM {table} WHERE k {lower} $1{upper_clause} ORDER BY k {order} LIMIT {limit}"
    )
}

/// Buffered batches acknowledged but not yet covered by a synced commit: after a
/// reconnection their tokens are looked for, since a server crash or a failover may have
/// lost them.
#[derive(Default)]
struct Pending {
    /// `(acknowledgement number, token, when)`.
    batches: Vec<(u64, [u8; 16], Instant)>,
}

/// An engine over PostgreSQL: one table per keyspace (`kv_<name>`, `bytea` keys in byte
/// order), a batch as one transaction (shared with the batches other threads queued
/// meanwhile, `combine.rs`), reduced to a few multi-row statements (`plan.rs`), counters as
/// row-locked read-modify-writes in the transaction, snapshots as repeatable-read
/// read-only transactions.
///
/// Every transaction also inserts a random token into `lpstore_batches`; when the connection is
/// lost during COMMIT, the engine reconnects and settles whether the batch landed by
/// inserting the same token as a fence, so the answer is exact, never a guess.
pub struct PgEngine {
    config: postgres::Config,
    label: PathBuf,
    schema: String,
    names: Vec<String>,
    tables: Vec<TableSql>,
    batches_sql: BatchesSql,
    leases_sql: LeasesSql,
    /// The lease name and epoch every write checks, once [`Leadership::fence`] was called.
    fence: Mutex<Option<(String, i64)>>,
    pool: Mutex<Vec<Conn>>,
    pool_idle: usize,
    retry: Duration,
    poison: Poison,
    pending: Mutex<Pending>,
    /// Batches waiting for the transaction in flight, to be combined into the next one.
    combiner: combine::Combiner,
    acknowledged: AtomicU64,
    /// Set when a connection failed or a new one was opened: buffered batches still pending
    /// are verified before the next write or flush.
    suspect: AtomicBool,
    written: AtomicU64,
}

impl fmt::Debug for PgEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgEngine")
            .field("store", &self.label)
            .field("keyspaces", &self.names)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct BatchesSql {
    insert: String,
    fence: String,
    lookup: String,
    prune: String,
}

impl BatchesSql {
    fn new(schema: &str) -> Self {
        let table = format!("{}.{}", quote(schema), BATCHES_TABLE);
        BatchesSql {
            insert: format!("INSERT INTO {table} (token, fence) VALUES ($1, FALSE)"),
            fence: format!(
                "INSERT INTO {table} (token, fence) VALUES ($1, TRUE) ON CONFLICT (token) DO NOTHING"
            ),
            lookup: format!("SELECT fence FROM {table} WHERE token = $1"),
            prune: format!(
                "DELETE FROM {table} WHERE written_at < CURRENT_TIMESTAMP - INTERVAL '{}' SECOND",
                TOKEN_KEEP.as_secs()
            ),
        }
    }
}

/// A description of the store for errors: hosts, database and schema, never a password.
fn label(config: &postgres::Config, schema: &str) -> PathBuf {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let name = match host {
                postgres::config::Host::Tcp(name) => name.clone(),
                postgres::config::Host::Unix(path) => path.display().to_string(),
            };
            match config.get_ports().get(i).or(config.get_ports().first()) {
                Some(port) => format!("{name}:{port}"),
                None => name,
            }
        })
        .collect();
    PathBuf::from(format!(
        "postgres://{}/{}?schema={schema}",
        hosts.join(","),
        config.get_dbname().unwrap_or("")
    ))
}

impl PgEngine {
    /// The version of the tables' layout this build writes. A database at a newer version is
    /// refused at open; an older one would be migrated here (there is none yet).
    pub const SCHEMA_VERSION: i64 = 1;

    /// Connects, creates the schema and the tables that are missing, and checks the schema
    /// version.
    ///
    /// # Errors
    /// [`Error::Config`] for a connection string that does not parse, a keyspace name too long
    /// for a table name, or a database whose tables are of a newer version than this build;
    /// [`Error::Backend`] when the database cannot be reached within `retry_ms` or refuses the
    /// tables.
    pub fn open(settings: &PostgresConfig, keyspaces: &[&str]) -> Result<Self> {
        let mut config: postgres::Config = settings.url.parse().map_err(|e| Error::Config {
            reason: format!("postgres.url does not parse as a connection string: {e}"),
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        if config.get_application_name().is_none() {
            config.application_name("lpstore");
        }
        // A server or network that goes silent must not hold a writer for hours (TCP's
        // defaults): keepalives find an idle connection dead within about 25 s, and sent data
        // left unacknowledged for 30 s (a COMMIT to a vanished server) ends the connection.
        // Values set in the connection string are kept.
        if config.get_keepalives() && config.get_keepalives_idle() == Duration::from_secs(7200) {
            config.keepalives_idle(Duration::from_secs(10));
        }
        if config.get_keepalives_interval().is_none() {
            config.keepalives_interval(Duration::from_secs(5));
        }
        if config.get_keepalives_retries().is_none() {
            config.keepalives_retries(3);
        }
        if config.get_tcp_user_timeout().is_none() {
            config.tcp_user_timeout(Duration::from_secs(30));
        }
        let schema = settings.schema.clone();
        let mut tables = Vec::with_capacity(keyspaces.len());
        for name in keyspaces {
            let table = format!("kv_{name}");
            if table.len() > 63 {
                return Err(Error::Config {
                    reason: format!(
                        "keyspace {name:?} is too long for a PostgreSQL table name (kv_ + 60 bytes at most)"
                    ),
                });
            }
            tables.push(TableSql::new(&format!(
                "{}.{}",
                quote(&schema),
                quote(&table)
            )));
        }
        let engine = PgEngine {
            label: label(&config, &schema),
            config,
            batches_sql: BatchesSql::new(&schema),
            leases_sql: LeasesSql::new(&schema),
            fence: Mutex::new(None),
            schema,
            names: keyspaces.iter().map(|s| s.to_string()).collect(),
            tables,
            pool: Mutex::new(Vec::new()),
            pool_idle: settings.pool_idle,
            retry: Duration::from_millis(settings.retry_ms),
            poison: Poison::default(),
            pending: Mutex::new(Pending::default()),
            combiner: combine::Combiner::default(),
            acknowledged: AtomicU64::new(0),
            suspect: AtomicBool::new(false),
            written: AtomicU64::new(0),
        };
        engine.create_tables()?;
        Ok(engine)
    }

    fn error(&self, operation: &'static str, source: impl Into<BoxError>) -> Error {
        Error::Backend {
            backend: Backend::Postgres,
            operation,
            path: self.label.clone(),
            source: source.into(),
        }
    }

    fn table(&self, keyspace: Keyspace) -> Result<&TableSql> {
        self.tables
            .get(keyspace.index())
            .ok_or_else(|| Error::UnknownKeyspace {
                name: format!("#{}", keyspace.index()),
            })
    }

    /// The schema that holds the store's tables.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    fn connect(&self) -> Result<Conn, postgres::Error> {
        let mut client = self.config.connect(NoTls)?;
        // Synced batches rely on commits waiting for the WAL flush; a server configured with
        // synchronous_commit = off would acknowledge them early. Other settings (local,
        // remote_write, remote_apply, on) all wait at least for the local flush.
        let rows = client.simple_query("SHOW synchronous_commit")?;
        let off = rows.iter().any(|message| {
            matches!(message, postgres::SimpleQueryMessage::Row(row) if row.get(0) == Some("off"))
        });
        if off {
            client.batch_execute("SET synchronous_commit TO on")?;
        }
        self.suspect.store(true, Ordering::SeqCst);
        Ok(Conn {
            client,
            statements: HashMap::new(),
        })
    }

    fn checkout(&self) -> Result<Conn, postgres::Error> {
        let pooled = self.pool.lock().unwrap_or_else(|e| e.into_inner()).pop();
        match pooled {
            Some(conn) if !conn.client.is_closed() => Ok(conn),
            _ => self.connect(),
        }
    }

    fn checkin(&self, conn: Conn) {
        if conn.client.is_closed() {
            return;
        }
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        if pool.len() < self.pool_idle {
            pool.push(conn);
        }
    }

    /// Runs `work` on a pooled connection; on a lost connection (or a conflict with another
    /// transaction), runs it again on a new one until `retry_ms` has passed. `work` must
    /// leave no transaction open when it fails, or be safe to run twice.
    fn with_retry<T>(
        &self,
        operation: &'static str,
        mut work: impl FnMut(&mut Conn) -> Result<T, postgres::Error>,
    ) -> Result<T> {
        let mut backoff = Backoff::new(self.retry);
        loop {
            let error = match self.checkout() {
                Ok(mut conn) => match work(&mut conn) {
                    Ok(value) => {
                        self.checkin(conn);
                        return Ok(value);
                    }
                    Err(error) => {
                        self.release(conn, &error);
                        error
                    }
                },
                Err(error) => {
                    self.suspect.store(true, Ordering::SeqCst);
                    error
                }
            };
            backoff.wait(self, operation, error)?;
        }
    }

    /// Returns a connection to the pool after `error`, or drops it when the error says it is
    /// lost (and marks the engine suspect, see [`PgEngine::verify_pending`]).
    fn release(&self, conn: Conn, error: &postgres::Error) {
        if is_connection_error(error) {
            self.suspect.store(true, Ordering::SeqCst);
        } else {
            self.checkin(conn);
        }
    }
}

impl Engine for PgEngine {
    fn backend(&self) -> Backend {
        Backend::Postgres
    }

    fn keyspace(&self, name: &str) -> Result<Keyspace> {
        Keyspace::lookup(&self.names, name)
    }

    fn write(&self, batch: WriteBatch, durability: Durability) -> Result<()> {
        self.poison.check(Backend::Postgres, &self.label)?;
        for op in batch.ops() {
            self.table(op.keyspace())?;
        }
        // An empty batch (a flush) is never combined: it is not fenced, and must not be
        // refused for another batch's fence.
        if batch.is_empty() {
            return self.write_alone(&batch, durability);
        }
        self.write_combined(batch, durability)
    }

    fn snapshot(&self) -> Result<Box<dyn ReadView + '_>> {
        let mut backoff = Backoff::new(self.retry);
        loop {
            let error = match self.checkout() {
                // The snapshot of a repeatable-read transaction is taken by its first
                // statement, so one runs now.
                Ok(mut conn) => match conn
                    .client
                    .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SELECT 1")
                {
                    Ok(()) => {
                        return Ok(Box::new(PgSnapshot {
                            engine: self,
                            conn: Mutex::new(Some(conn)),
                        }))
                    }
                    Err(error) => {
                        self.release(conn, &error);
                        error
                    }
                },
                Err(error) => error,
            };
            backoff.wait(self, "snapshot", error)?;
        }
    }

    fn leadership(&self) -> Option<&dyn Leadership> {
        Some(self)
    }

    fn flush(&self) -> Result<()> {
        self.poison.check(Backend::Postgres, &self.label)?;
        self.verify_pending()?;
        let pending = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .batches
            .len();
        if pending == 0 {
            // Every batch this engine acknowledged was synced, or covered by a synced commit.
            return Ok(());
        }
        // A synced commit of an (otherwise empty) batch: PostgreSQL flushes the WAL up to its
        // commit record, which covers every commit acknowledged before it.
        self.write(WriteBatch::new(), Durability::Sync)
    }
}
