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
#[derive(Debug, thiserror::Error)]
enum PgFailure {
    #[error(
        "the connection was lost while the batch was committing, and on a new connection the \
         batch was found not to have landed (it can no longer land): the batch is refused"
    )]
    NotLanded,
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
    put: String,
    delete: String,
    delete_range: String,
    counter_insert: String,
    counter_lock: String,
    counter_update: String,
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
            put: format!(
                "INSERT INTO {table} (k, v) VALUES ($1, $2) ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v"
            ),
            delete: format!("DELETE FROM {table} WHERE k = $1"),
            delete_range: format!("DELETE FROM {table} WHERE k >= $1 AND k < $2"),
            counter_insert: format!(
                "INSERT INTO {table} (k, v) VALUES ($1, $2) ON CONFLICT (k) DO NOTHING"
            ),
            counter_lock: format!("SELECT v FROM {table} WHERE k = $1 FOR UPDATE"),
            counter_update: format!("UPDATE {table} SET v = $2 WHERE k = $1"),
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
/// order), a batch as one transaction, counters as row-locked read-modify-writes in the
/// transaction, snapshots as repeatable-read read-only transactions.
///
/// Every batch also inserts a random token into `lpstore_batches`; when the connection is
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

/// The statements of the leases (`engine/DESIGN.md`, "Leadership and fencing").
#[derive(Debug)]
struct LeasesSql {
    /// A batch's first statement when the engine is fenced: its token goes in only if the
    /// lease is still at the fenced epoch, under a key-share lock held to the commit.
    fenced_insert: String,
    current: String,
    create: String,
    lock: String,
    drain: String,
    extend: String,
    take: String,
    renew: String,
    release: String,
}

impl LeasesSql {
    fn new(schema: &str) -> Self {
        let leases = format!("{}.{}", quote(schema), LEASES_TABLE);
        let batches = format!("{}.{}", quote(schema), BATCHES_TABLE);
        let expiry = "CURRENT_TIMESTAMP + CAST($2 AS DOUBLE PRECISION) * INTERVAL '1' SECOND";
        LeasesSql {
            fenced_insert: format!(
                "INSERT INTO {batches} (token, fence) SELECT CAST($1 AS BYTEA), FALSE \
                 FROM {leases} WHERE name = CAST($2 AS VARCHAR(128)) AND epoch = $3 FOR KEY SHARE"
            ),
            current: format!("SELECT epoch FROM {leases} WHERE name = CAST($1 AS VARCHAR(128))"),
            create: format!(
                "INSERT INTO {leases} (name, holder, epoch, expires_at) \
                 VALUES (CAST($1 AS VARCHAR(128)), '', 0, TIMESTAMP WITH TIME ZONE '1970-01-01 00:00:00+00') \
                 ON CONFLICT (name) DO NOTHING"
            ),
            lock: format!(
                "SELECT holder, epoch, expires_at < CURRENT_TIMESTAMP FROM {leases} \
                 WHERE name = CAST($1 AS VARCHAR(128)) FOR NO KEY UPDATE"
            ),
            drain: format!(
                "SELECT epoch FROM {leases} WHERE name = CAST($1 AS VARCHAR(128)) FOR UPDATE"
            ),
            extend: format!(
                "UPDATE {leases} SET expires_at = {expiry} WHERE name = CAST($1 AS VARCHAR(128))"
            ),
            take: format!(
                "UPDATE {leases} SET holder = CAST($3 AS VARCHAR(256)), epoch = epoch + 1, \
                 expires_at = {expiry} WHERE name = CAST($1 AS VARCHAR(128)) RETURNING epoch"
            ),
            renew: format!(
                "UPDATE {leases} SET expires_at = {expiry} WHERE name = CAST($1 AS VARCHAR(128)) \
                 AND holder = CAST($3 AS VARCHAR(256)) AND epoch = $4"
            ),
            release: format!(
                "UPDATE {leases} SET expires_at = TIMESTAMP WITH TIME ZONE '1970-01-01 00:00:00+00' \
                 WHERE name = CAST($1 AS VARCHAR(128)) AND holder = CAST($2 AS VARCHAR(256)) AND epoch = $3"
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
            acknowledged: AtomicU64::new(0),
            suspect: AtomicBool::new(false),
            written: AtomicU64::new(0),
        };
        engine.create_tables()?;
        Ok(engine)
    }

    /// Creates what is missing and reads the schema version. Existing objects are found in
    /// `information_schema` first, so that a role without CREATE privileges can open a store
    /// that its administrator created; two processes creating the same objects at once
    /// collide in PostgreSQL's catalog, and the loser looks again.
    fn create_tables(&self) -> Result<()> {
        let mut attempts = 0;
        let version = loop {
            match self.with_retry("open", |conn| self.create_tables_on(conn)) {
                Err(Error::Backend { ref source, .. })
                    if attempts < 5 && is_catalog_race(source.as_ref()) =>
                {
                    attempts += 1;
                }
                other => break other?,
            }
        };
        let Some(version) = version else {
            return Err(self.error(
                "open",
                PgFailure::BadRow("no schema_version row in lpstore_meta".into()),
            ));
        };
        if version > Self::SCHEMA_VERSION {
            return Err(Error::Config {
                reason: format!(
                    "the PostgreSQL store {} is at schema version {version}, newer than this \
                     build's {}: run a newer build (or point postgres.schema \
                     elsewhere)",
                    self.label.display(),
                    Self::SCHEMA_VERSION
                ),
            });
        }
        Ok(())
    }

    fn create_tables_on(&self, conn: &mut Conn) -> Result<Option<i64>, postgres::Error> {
        conn.client.batch_execute("BEGIN")?;
        let result = self.create_tables_in_transaction(conn);
        match &result {
            Ok(_) => conn.client.batch_execute("COMMIT")?,
            Err(_) => {
                let _ = conn.client.batch_execute("ROLLBACK");
            }
        }
        result
    }

    fn create_tables_in_transaction(
        &self,
        conn: &mut Conn,
    ) -> Result<Option<i64>, postgres::Error> {
        let schema = quote(&self.schema);
        let meta = format!("{schema}.{META_TABLE}");
        let schema_exists = !conn
            .query(
                "SELECT 1 FROM information_schema.schemata \
                 WHERE schema_name = CAST($1 AS VARCHAR(128))",
                &[&self.schema],
            )?
            .is_empty();
        if !schema_exists {
            conn.client
                .batch_execute(&format!("CREATE SCHEMA {schema}"))?;
        }
        let existing: Vec<String> = conn
            .query(
                "SELECT CAST(table_name AS VARCHAR(128)) FROM information_schema.tables \
                 WHERE table_schema = CAST($1 AS VARCHAR(128))",
                &[&self.schema],
            )?
            .iter()
            .map(|row| row.try_get(0))
            .collect::<Result<_, _>>()?;
        let mut wanted = vec![
            (
                META_TABLE.to_string(),
                "(name VARCHAR(64) PRIMARY KEY, value BIGINT NOT NULL)",
            ),
            (
                BATCHES_TABLE.to_string(),
                "(token BYTEA PRIMARY KEY, fence BOOLEAN NOT NULL, \
                 written_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT CURRENT_TIMESTAMP)",
            ),
            (
                LEASES_TABLE.to_string(),
                "(name VARCHAR(128) PRIMARY KEY, holder VARCHAR(256) NOT NULL, \
                 epoch BIGINT NOT NULL, expires_at TIMESTAMP WITH TIME ZONE NOT NULL)",
            ),
        ];
        for name in &self.names {
            wanted.push((
                format!("kv_{name}"),
                "(k BYTEA PRIMARY KEY, v BYTEA NOT NULL)",
            ));
        }
        for (table, columns) in wanted {
            if !existing.contains(&table) {
                conn.client.batch_execute(&format!(
                    "CREATE TABLE {schema}.{} {columns}",
                    quote(&table)
                ))?;
            }
        }
        let version_sql = format!("SELECT value FROM {meta} WHERE name = 'schema_version'");
        let mut rows = conn.query(&version_sql, &[])?;
        if rows.is_empty() {
            conn.execute(
                &format!(
                    "INSERT INTO {meta} (name, value) VALUES ('schema_version', {}) \
                     ON CONFLICT (name) DO NOTHING",
                    Self::SCHEMA_VERSION
                ),
                &[],
            )?;
            rows = conn.query(&version_sql, &[])?;
        }
        rows.first().map(|row| row.try_get(0)).transpose()
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

    /// One attempt at a batch on `conn`, in one transaction that starts by inserting `token`.
    fn attempt(
        &self,
        conn: &mut Conn,
        ops: &[(&TableSql, &BatchOp)],
        token: &[u8; 16],
        durability: Durability,
    ) -> Result<(), Attempt> {
        let rollback = |conn: &mut Conn, error: postgres::Error| {
            if !is_connection_error(&error) {
                let _ = conn.client.batch_execute("ROLLBACK");
            }
            if is_connection_error(&error) || is_conflict(&error) {
                Attempt::Retry(error)
            } else {
                Attempt::Refused(self.error("write", error))
            }
        };
        // Buffered: the commit returns before its WAL is flushed; the WAL writer flushes it
        // within a few hundred milliseconds, and any later synced commit flushes it first.
        let synchronous = match durability {
            Durability::Buffered => "; SET LOCAL synchronous_commit TO off",
            Durability::Sync => "",
        };
        let begin = format!(
            "BEGIN; SET LOCAL idle_in_transaction_session_timeout = {}{synchronous}",
            WRITE_IDLE_TIMEOUT.as_millis()
        );
        if let Err(error) = conn.client.batch_execute(&begin) {
            return Err(rollback(conn, error));
        }
        let token_ref: &[u8] = token;
        // An empty batch (a flush) changes nothing, so it needs no fence: it only makes
        // commits already acknowledged durable, whoever leads now.
        let fence = if ops.is_empty() { None } else { self.fenced() };
        match &fence {
            None => {
                if let Err(error) = conn.execute(&self.batches_sql.insert, &[&token_ref]) {
                    return Err(rollback(conn, error));
                }
            }
            Some((name, epoch)) => {
                match conn.execute(&self.leases_sql.fenced_insert, &[&token_ref, name, epoch]) {
                    Ok(1) => {}
                    Ok(_) => {
                        let current =
                            conn.query(&self.leases_sql.current, &[name])
                                .ok()
                                .and_then(|rows| {
                                    rows.first().and_then(|row| row.get::<_, Option<i64>>(0))
                                });
                        let _ = conn.client.batch_execute("ROLLBACK");
                        return Err(Attempt::Refused(Error::Fenced {
                            name: name.clone(),
                            epoch: u64::try_from(*epoch).unwrap_or(0),
                            current: current.and_then(|c| u64::try_from(c).ok()),
                        }));
                    }
                    Err(error) => return Err(rollback(conn, error)),
                }
            }
        }
        for (sql, op) in ops {
            match apply(conn, sql, op) {
                Ok(()) => {}
                Err(Applied::Sql(error)) => return Err(rollback(conn, error)),
                Err(Applied::Engine(error)) => {
                    let _ = conn.client.batch_execute("ROLLBACK");
                    return Err(Attempt::Refused(error));
                }
            }
        }
        match conn.client.batch_execute("COMMIT") {
            Ok(()) => Ok(()),
            // PostgreSQL answered: the transaction was rolled back (a serialization failure
            // at commit, a deferred constraint), so nothing is applied.
            Err(error) if error.code().is_some() && !is_connection_error(&error) => {
                Err(rollback(conn, error))
            }
            Err(error) => Err(Attempt::Unknown(error)),
        }
    }

    /// Settles whether the batch of `token` landed after its COMMIT went unanswered: on a new
    /// connection, inserts the token again as a fence. If the original transaction is still
    /// running, the insert waits for it; if the token is there and is not a fence, the batch
    /// landed; if the fence goes in, the batch did not land and never can.
    fn resolve(&self, token: &[u8; 16]) -> Result<bool, String> {
        let started = Instant::now();
        let mut pause = Duration::from_millis(5);
        let token_ref: &[u8] = token;
        loop {
            let outcome = (|| -> Result<Option<bool>, postgres::Error> {
                let mut conn = self.connect()?;
                // Wait for the original transaction, if it still runs, no longer than the
                // whole resolution may take.
                conn.client.batch_execute(&format!(
                    "BEGIN; SET LOCAL lock_timeout = {}",
                    self.retry.as_millis().max(1)
                ))?;
                conn.execute(&self.batches_sql.fence, &[&token_ref])?;
                let rows = conn.query(&self.batches_sql.lookup, &[&token_ref])?;
                conn.client.batch_execute("COMMIT")?;
                // The fence or the batch's token is there (if neither were, the next round
                // would find out: never guess).
                let fence: Option<bool> = rows.first().map(|row| row.try_get(0)).transpose()?;
                self.checkin(conn);
                Ok(fence.map(|fence| !fence))
            })();
            match outcome {
                Ok(Some(landed)) => return Ok(landed),
                Ok(None) if started.elapsed() >= self.retry => {
                    return Err("the batch's token vanished".to_string())
                }
                Ok(None) => std::thread::sleep(pause),
                Err(error) if started.elapsed() >= self.retry => return Err(error.to_string()),
                Err(_) => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(500));
                }
            }
        }
    }

    /// After a reconnection, checks that the buffered batches not yet covered by a synced
    /// commit are still there (a server crash or a failover may have lost them); poisons the
    /// engine when one is missing.
    fn verify_pending(&self) -> Result<()> {
        if !self.suspect.swap(false, Ordering::SeqCst) {
            return Ok(());
        }
        let pending: Vec<([u8; 16], Instant)> = {
            let pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            pending.batches.iter().map(|(_, t, at)| (*t, *at)).collect()
        };
        if pending.is_empty() {
            return Ok(());
        }
        if let Some((_, oldest)) = pending.first() {
            if oldest.elapsed() > TOKEN_KEEP / 2 {
                let error = self.error("write", PgFailure::BufferedUnverifiable(TOKEN_KEEP / 2));
                self.poison.set(&error);
                return Err(error);
            }
        }
        let lookup = &self.batches_sql.lookup;
        let missing = self.with_retry("write", |conn| {
            let mut missing = 0;
            for (token, _) in &pending {
                let token_ref: &[u8] = token;
                if conn.query(lookup, &[&token_ref])?.is_empty() {
                    missing += 1;
                }
            }
            Ok(missing)
        });
        let missing = match missing {
            Ok(missing) => missing,
            Err(error) => {
                self.suspect.store(true, Ordering::SeqCst);
                return Err(error);
            }
        };
        if missing > 0 {
            let error = self.error("write", PgFailure::BufferedLost(missing));
            self.poison.set(&error);
            return Err(error);
        }
        Ok(())
    }

    fn prune_tokens(&self) {
        if self.written.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY != PRUNE_EVERY - 1 {
            return;
        }
        // Housekeeping, tried once: a failure here loses nothing and is tried again later,
        // and the write that triggered it is not held up by a server gone meanwhile.
        if let Ok(mut conn) = self.checkout() {
            match conn.execute(&self.batches_sql.prune, &[]) {
                Ok(_) => self.checkin(conn),
                Err(error) => self.release(conn, &error),
            }
        }
    }
}

/// Why one operation of a batch failed.
enum Applied {
    Sql(postgres::Error),
    Engine(Error),
}

impl From<postgres::Error> for Applied {
    fn from(error: postgres::Error) -> Self {
        Applied::Sql(error)
    }
}

fn apply(conn: &mut Conn, sql: &TableSql, op: &BatchOp) -> Result<(), Applied> {
    match op {
        BatchOp::Put { key, value, .. } => {
            conn.execute(&sql.put, &[key, value])?;
        }
        BatchOp::Delete { key, .. } => {
            conn.execute(&sql.delete, &[key])?;
        }
        BatchOp::DeleteRange { start, end, .. } => {
            if start < end {
                conn.execute(&sql.delete_range, &[start, end])?;
            }
        }
        BatchOp::CounterAdd { key, delta, .. } => loop {
            // An absent counter is inserted as the delta; a present one is locked, read,
            // added to and written back, so concurrent adders serialize on the row. If the
            // row is deleted between the two statements, start over.
            let initial = counter::encode(*delta).to_vec();
            if conn.execute(&sql.counter_insert, &[key, &initial])? == 1 {
                break;
            }
            let rows = conn.query(&sql.counter_lock, &[key])?;
            let Some(row) = rows.first() else { continue };
            let existing: Vec<u8> = row.try_get(0)?;
            let Some(total) = counter::add(Some(&existing), *delta) else {
                return Err(Applied::Engine(Error::CorruptCounter {
                    key: key.clone(),
                    len: existing.len(),
                }));
            };
            let value = counter::encode(total).to_vec();
            conn.execute(&sql.counter_update, &[key, &value])?;
            break;
        },
    }
    Ok(())
}

/// Reads through a connection: the engine's pool (with retries) or a snapshot's own one.
trait Runner {
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

fn get(runner: &dyn Runner, keyspace: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>> {
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

fn scan<'a>(
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
struct PgScan<'a> {
    runner: &'a dyn Runner,
    table: &'a TableSql,
    range: ScanRange,
    direction: Direction,
    last: Option<Vec<u8>>,
    page: VecDeque<KeyValue>,
    done: bool,
}

impl PgScan<'_> {
    fn fetch(&mut self) -> Result<()> {
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
struct PgSnapshot<'a> {
    engine: &'a PgEngine,
    conn: Mutex<Option<Conn>>,
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

impl Engine for PgEngine {
    fn backend(&self) -> Backend {
        Backend::Postgres
    }

    fn keyspace(&self, name: &str) -> Result<Keyspace> {
        Keyspace::lookup(&self.names, name)
    }

    fn write(&self, batch: WriteBatch, durability: Durability) -> Result<()> {
        self.poison.check(Backend::Postgres, &self.label)?;
        let ops = batch.into_ops();
        let mut resolved = Vec::with_capacity(ops.len());
        for op in &ops {
            let keyspace = match op {
                BatchOp::Put { keyspace, .. }
                | BatchOp::Delete { keyspace, .. }
                | BatchOp::DeleteRange { keyspace, .. }
                | BatchOp::CounterAdd { keyspace, .. } => *keyspace,
            };
            resolved.push((self.table(keyspace)?, op));
        }
        let token: [u8; 16] = rand::random();
        let mut backoff = Backoff::new(self.retry);
        loop {
            // After a lost connection (this attempt's or any other), the buffered batches
            // still pending are looked for before anything more is committed.
            self.verify_pending()?;
            // Synced commits flush the WAL up to themselves, so they cover every buffered
            // commit acknowledged before they started.
            let watermark = self.acknowledged.load(Ordering::SeqCst);
            let mut conn = match self.checkout() {
                Ok(conn) => conn,
                Err(error) => {
                    self.suspect.store(true, Ordering::SeqCst);
                    backoff.wait(self, "write", error)?;
                    continue;
                }
            };
            match self.attempt(&mut conn, &resolved, &token, durability) {
                Ok(()) => {
                    self.checkin(conn);
                    self.acknowledged_batch(token, durability, watermark);
                    self.prune_tokens();
                    return Ok(());
                }
                Err(Attempt::Refused(error)) => {
                    self.checkin(conn);
                    return Err(error);
                }
                Err(Attempt::Retry(error)) => {
                    self.release(conn, &error);
                    backoff.wait(self, "write", error)?;
                }
                Err(Attempt::Unknown(error)) => {
                    self.suspect.store(true, Ordering::SeqCst);
                    drop(conn);
                    return match self.resolve(&token) {
                        Ok(true) => {
                            self.acknowledged_batch(token, durability, watermark);
                            Ok(())
                        }
                        Ok(false) => Err(self.error("write", PgFailure::NotLanded)),
                        Err(cause) => {
                            let error = self.error(
                                "write",
                                PgFailure::Unresolved(
                                    self.retry,
                                    format!("{error}; then: {cause}"),
                                ),
                            );
                            self.poison.set(&error);
                            Err(error)
                        }
                    };
                }
            }
        }
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

impl PgEngine {
    fn fenced(&self) -> Option<(String, i64)> {
        self.fence.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// One acquisition on `conn` (see [`Leadership::acquire`]): the decision and the epoch
    /// change in one transaction, then, before the epoch is handed out, the wait for the
    /// write transactions of older epochs still in flight (`engine/DESIGN.md`, "Why an old
    /// leader cannot commit after a takeover").
    fn acquire_on(
        &self,
        conn: &mut Conn,
        name: &str,
        holder: &str,
        ttl: f64,
    ) -> Result<Option<i64>, postgres::Error> {
        let sql = &self.leases_sql;
        let epoch = in_transaction(conn, ACQUIRE_LOCK_TIMEOUT, |conn| {
            conn.execute(&sql.create, &[&name])?;
            // FOR NO KEY UPDATE orders acquisitions and renewals among themselves but, like
            // the epoch change below, lets the writers' FOR KEY SHARE through: a lock that
            // conflicted with theirs could be starved by writers overlapping one another.
            let rows = conn.query(&sql.lock, &[&name])?;
            let Some(row) = rows.first() else {
                return Ok(None);
            };
            let current: String = row.try_get(0)?;
            let epoch: i64 = row.try_get(1)?;
            let expired: bool = row.try_get(2)?;
            if current == holder && !expired {
                conn.execute(&sql.extend, &[&name, &ttl])?;
                return Ok(Some(epoch));
            }
            if !expired {
                return Ok(None);
            }
            let rows = conn.query(&sql.take, &[&name, &ttl, &holder])?;
            rows.first().map(|row| row.try_get(0)).transpose()
        })?;
        let Some(epoch) = epoch else {
            return Ok(None);
        };
        // An engine already fenced at this epoch waited when it first got it; waiting again
        // would wait for its own writers.
        let known = self.fenced().is_some_and(|(n, e)| n == name && e == epoch);
        if !known {
            // Writers of older epochs that locked the row before the epoch changed hold
            // their FOR KEY SHARE on its newest version to their commit; later ones find
            // the new epoch and lock nothing. FOR UPDATE waits for the former, so a bounded
            // set: every batch of an old epoch has committed or failed when this returns.
            in_transaction(conn, ACQUIRE_LOCK_TIMEOUT, |conn| {
                conn.query(&sql.drain, &[&name]).map(drop)
            })?;
        }
        Ok(Some(epoch))
    }

    fn acknowledged_batch(&self, token: [u8; 16], durability: Durability, watermark: u64) {
        let number = self.acknowledged.fetch_add(1, Ordering::SeqCst);
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        match durability {
            Durability::Buffered => pending.batches.push((number, token, Instant::now())),
            Durability::Sync => pending.batches.retain(|(n, _, _)| *n >= watermark),
        }
    }
}

/// Runs `work` in one transaction on `conn` whose lock waits and statements each end after
/// `timeout`; commits when it succeeds, rolls back when PostgreSQL reported a failure.
fn in_transaction<T>(
    conn: &mut Conn,
    timeout: Duration,
    work: impl FnOnce(&mut Conn) -> Result<T, postgres::Error>,
) -> Result<T, postgres::Error> {
    let millis = timeout.as_millis();
    conn.client.batch_execute(&format!(
        "BEGIN; SET LOCAL lock_timeout = {millis}; SET LOCAL statement_timeout = {millis}"
    ))?;
    let result = work(conn);
    match &result {
        Ok(_) => conn.client.batch_execute("COMMIT")?,
        Err(error) => {
            if !is_connection_error(error) {
                let _ = conn.client.batch_execute("ROLLBACK");
            }
        }
    }
    result
}

fn epoch_sql(epoch: Epoch) -> i64 {
    i64::try_from(epoch.0).unwrap_or(i64::MAX)
}

fn epoch_of(epoch: i64) -> Epoch {
    Epoch(u64::try_from(epoch).unwrap_or(0))
}

/// Leases in `lpstore_leases`; `engine/DESIGN.md` ("Leadership and fencing") lists the
/// statements and argues why an old leader cannot commit after a takeover.
impl Leadership for PgEngine {
    fn acquire(&self, name: &str, holder: &str, ttl: Duration) -> Result<Option<Epoch>> {
        // A poisoned engine refuses every write until it is opened again: it must not lead.
        self.poison.check(Backend::Postgres, &self.label)?;
        let ttl = ttl.as_secs_f64();
        // Safe to run again after a lost COMMIT: a takeover that landed is found as this
        // holder's live lease and extended at the same epoch.
        let epoch = self.with_retry("acquire a lease", |conn| {
            self.acquire_on(conn, name, holder, ttl)
        })?;
        Ok(epoch.map(epoch_of))
    }

    fn renew(&self, name: &str, holder: &str, epoch: Epoch, ttl: Duration) -> Result<bool> {
        self.poison.check(Backend::Postgres, &self.label)?;
        let ttl = ttl.as_secs_f64();
        let epoch = epoch_sql(epoch);
        let sql = &self.leases_sql.renew;
        let updated = self.with_retry("renew a lease", |conn| {
            conn.execute(sql, &[&name, &ttl, &holder, &epoch])
        })?;
        Ok(updated == 1)
    }

    fn release(&self, name: &str, holder: &str, epoch: Epoch) -> Result<()> {
        let epoch = epoch_sql(epoch);
        let sql = &self.leases_sql.release;
        self.with_retry("release a lease", |conn| {
            conn.execute(sql, &[&name, &holder, &epoch])
        })?;
        Ok(())
    }

    fn fence(&self, name: &str, epoch: Epoch) {
        *self.fence.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((name.to_string(), epoch_sql(epoch)));
    }
}
