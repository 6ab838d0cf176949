//! The testing kit (cargo feature `testing`, for dev-dependencies): one macro that stamps a
//! list of generic test functions out per compiled backend, and throwaway PostgreSQL stores.
//!
//! ```text
//! // In a crate's tests/it/some_suite.rs, with `engine = { ..., features = ["testing"] }`
//! // among its dev-dependencies:
//! engine::backend_tests!(writes_and_reads, scans_in_order);
//!
//! fn writes_and_reads(backend: engine::Backend) { /* ... */ }
//! fn scans_in_order(backend: engine::Backend) { /* ... */ }
//!
//! // Or with a fixture built from the backend for each test:
//! engine::backend_tests!(with crate::support::Fixture::new; joins, leaves);
//!
//! // From elsewhere than the functions' module (calls crate::suite::joins, ...), on some
//! // backends only:
//! engine::backend_tests!(backends [memory, rocksdb, sled]; in suite; joins, leaves);
//! ```
//!
//! The macro writes a module per backend compiled into `engine` (`memory`, `rocksdb`, `sled`,
//! `postgres`), each with one `#[test]` per function, named as the function: so
//! `cargo test rocksdb::` runs one backend and `cargo test scans_in_order` one test on all.
//! Which backends exist is decided by `engine`'s features, not the calling crate's.
//!
//! The PostgreSQL tests need a server: `scripts/with-postgres.sh` (which `make test` uses)
//! starts one and sets [`POSTGRES_ENV`]. Run by hand without it, each PostgreSQL test prints
//! "skipped: LPSTORE_TEST_POSTGRES unset" and passes.

/// The environment variable holding the libpq connection string of the test server.
pub const POSTGRES_ENV: &str = "LPSTORE_TEST_POSTGRES";

/// The test server's connection string, or `None` (after printing that the test is skipped)
/// when [`POSTGRES_ENV`] is unset.
pub fn postgres_url() -> Option<String> {
    match std::env::var(POSTGRES_ENV) {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            eprintln!(
                "skipped: {POSTGRES_ENV} unset (scripts/with-postgres.sh starts a server and sets it)"
            );
            None
        }
    }
}

/// Whether a test of `backend` cannot run here (PostgreSQL without a server), having said so.
pub fn skip(backend: crate::Backend) -> bool {
    backend == crate::Backend::Postgres && postgres_url().is_none()
}

/// Stamps out one `#[test]` per backend compiled into `engine` for each named generic test
/// function. See the [module documentation](crate::testing) for the forms:
///
/// - `backend_tests!(a, b)` calls `super::a(backend)`;
/// - `backend_tests!(with MAKE; a, b)` calls `super::a(MAKE(backend))`;
/// - `backend_tests!(in MODULE; ...)` calls `crate::MODULE::a(...)` instead;
/// - `backend_tests!(backends [memory, rocksdb, sled]; ...)` stamps out only those backends
///   (of the ones compiled in), for a fixture that cannot open the others.
#[macro_export]
macro_rules! backend_tests {
    (backends [$($backend:ident),* $(,)?]; $($rest:tt)*) => {
        $crate::backend_tests!(@parse [$($backend),*] $($rest)*);
    };
    (@parse $backends:tt in $module:ident; with $make:expr; $($name:ident),* $(,)?) => {
        $crate::backend_tests!(@each $backends [in $module] ($make) [$($name),*]);
    };
    (@parse $backends:tt in $module:ident; $($name:ident),* $(,)?) => {
        $crate::backend_tests!(@each $backends [in $module] (|b: $crate::Backend| b) [$($name),*]);
    };
    (@parse $backends:tt with $make:expr; $($name:ident),* $(,)?) => {
        $crate::backend_tests!(@each $backends [super] ($make) [$($name),*]);
    };
    (@parse $backends:tt $($name:ident),* $(,)?) => {
        $crate::backend_tests!(@each $backends [super] (|b: $crate::Backend| b) [$($name),*]);
    };
    (@each [$($backend:ident),*] $caller:tt $make:tt $names:tt) => {
        $( $crate::backend_tests!(@one $backend $caller $make $names); )*
    };
    (@one memory $caller:tt ($make:expr) [$($name:ident),*]) => {
        mod memory {
            $( #[test] fn $name() {
                ($crate::__test_fn!($caller $name))(($make)($crate::Backend::Memory))
            } )*
        }
    };
    (@one rocksdb $caller:tt ($make:expr) [$($name:ident),*]) => {
        $crate::__if_rocksdb! {
            mod rocksdb {
                $( #[test] fn $name() {
                    ($crate::__test_fn!($caller $name))(($make)($crate::Backend::Rocksdb))
                } )*
            }
        }
    };
    (@one sled $caller:tt ($make:expr) [$($name:ident),*]) => {
        $crate::__if_sled! {
            mod sled {
                $( #[test] fn $name() {
                    ($crate::__test_fn!($caller $name))(($make)($crate::Backend::Sled))
                } )*
            }
        }
    };
    (@one postgres $caller:tt ($make:expr) [$($name:ident),*]) => {
        $crate::__if_postgres! {
            mod postgres {
                $( #[test] fn $name() {
                    if $crate::testing::skip($crate::Backend::Postgres) {
                        return;
                    }
                    ($crate::__test_fn!($caller $name))(($make)($crate::Backend::Postgres))
                } )*
            }
        }
    };
    (@parse $($rest:tt)*) => {
        compile_error!("engine::backend_tests!: expected `[backends [..];] [in MODULE;] [with MAKE;] name, ...`");
    };
    ($($rest:tt)*) => {
        $crate::backend_tests!(@parse [memory, rocksdb, sled, postgres] $($rest)*);
    };
}

/// The generic test function a stamped-out test calls.
#[doc(hidden)]
#[macro_export]
// `crate::MODULE` is the calling crate's module on purpose.
#[allow(clippy::crate_in_macro_def)]
macro_rules! __test_fn {
    ([super] $name:ident) => {
        super::$name
    };
    ([in $module:ident] $name:ident) => {
        crate::$module::$name
    };
}

/// Expands to its input when `engine` has the `rocksdb` feature.
#[cfg(feature = "rocksdb")]
#[doc(hidden)]
#[macro_export]
macro_rules! __if_rocksdb {
    ($($item:tt)*) => { $($item)* };
}
/// Expands to its input when `engine` has the `rocksdb` feature.
#[cfg(not(feature = "rocksdb"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __if_rocksdb {
    ($($item:tt)*) => {};
}
/// Expands to its input when `engine` has the `sled` feature.
#[cfg(feature = "sled")]
#[doc(hidden)]
#[macro_export]
macro_rules! __if_sled {
    ($($item:tt)*) => { $($item)* };
}
/// Expands to its input when `engine` has the `sled` feature.
#[cfg(not(feature = "sled"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __if_sled {
    ($($item:tt)*) => {};
}
/// Expands to its input when `engine` has the `postgres` feature.
#[cfg(feature = "postgres")]
#[doc(hidden)]
#[macro_export]
macro_rules! __if_postgres {
    ($($item:tt)*) => { $($item)* };
}
/// Expands to its input when `engine` has the `postgres` feature.
#[cfg(not(feature = "postgres"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __if_postgres {
    ($($item:tt)*) => {};
}

#[cfg(feature = "postgres")]
pub use pg::{HeldTransaction, PgScratch};

mod faults;
pub use faults::every_fault;

use std::path::Path;
use std::sync::Arc;

use crate::{Backend, Engine, EngineConfig, MemEngine};

/// A store of any backend for a test, that can be closed and reopened at the same place: a
/// temporary directory (RocksDB, sled), a kept map (memory), a schema of its own
/// (PostgreSQL, see [`PgScratch`](crate::testing)). Everything goes when it is dropped.
#[derive(Debug)]
pub struct TestStore {
    backend: Backend,
    keyspaces: Vec<String>,
    dir: tempfile::TempDir,
    memory: MemEngine,
    #[cfg(feature = "postgres")]
    postgres: Option<PgScratch>,
}

impl TestStore {
    /// A new, empty store of `backend` with these keyspaces.
    ///
    /// # Panics
    /// When no temporary directory can be made, or for PostgreSQL when
    /// [`POSTGRES_ENV`] is unset (check [`skip`] first).
    pub fn new(backend: Backend, keyspaces: &[&str]) -> Self {
        TestStore {
            backend,
            keyspaces: keyspaces.iter().map(|s| s.to_string()).collect(),
            dir: tempfile::tempdir().unwrap_or_else(|e| panic!("temporary directory: {e}")),
            memory: MemEngine::new(keyspaces),
            #[cfg(feature = "postgres")]
            postgres: (backend == Backend::Postgres).then(PgScratch::new),
        }
    }

    /// The backend.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The temporary directory, for a test's other files (the store is in `db/` under it).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// How to open the store, for backends opened from a configuration (not memory).
    pub fn config(&self) -> EngineConfig {
        #[cfg(feature = "postgres")]
        if let Some(scratch) = &self.postgres {
            return scratch.config();
        }
        EngineConfig::new(self.backend, self.dir.path().join("db"))
    }

    /// The PostgreSQL schema of the store, on PostgreSQL.
    #[cfg(feature = "postgres")]
    pub fn postgres(&self) -> Option<&PgScratch> {
        self.postgres.as_ref()
    }

    /// Opens the store, or reopens it with everything durable kept. Drop the previous engine
    /// first: RocksDB and sled lock their directory.
    ///
    /// # Panics
    /// When the store cannot be opened: a failed test.
    pub fn open(&self) -> Arc<dyn Engine> {
        let keyspaces: Vec<&str> = self.keyspaces.iter().map(String::as_str).collect();
        match self.backend {
            Backend::Memory => Arc::new(self.memory.reopen(&keyspaces)),
            backend => self
                .config()
                .open(&keyspaces)
                .unwrap_or_else(|e| panic!("open {backend}: {e}")),
        }
    }
}

#[cfg(feature = "postgres")]
mod pg {
    use std::sync::atomic::{AtomicU64, Ordering};

    use crate::{EngineConfig, PostgresConfig};

    /// A schema of its own on the test server for one test, dropped with everything in it
    /// when this goes: tests run in parallel on one server without seeing each other. The
    /// engine's connections carry the schema's name as their `application_name`, so that a
    /// test can find and kill them.
    #[derive(Debug)]
    pub struct PgScratch {
        url: String,
        schema: String,
    }

    static NEXT: AtomicU64 = AtomicU64::new(0);

    impl PgScratch {
        /// A fresh schema name on the server of [`super::POSTGRES_ENV`] (created by the
        /// engine when it opens).
        ///
        /// # Panics
        /// When the variable is unset: check [`super::skip`] first.
        pub fn new() -> Self {
            let url = std::env::var(super::POSTGRES_ENV)
                .unwrap_or_else(|_| panic!("{} is unset", super::POSTGRES_ENV));
            Self::on(url)
        }

        /// A fresh schema name on the server of `url`, a libpq connection string.
        pub fn on(url: impl Into<String>) -> Self {
            let url = url.into();
            let schema = format!(
                "t{}_{}_{:08x}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed),
                rand::random::<u32>()
            );
            PgScratch { url, schema }
        }

        /// The schema's name (also the connections' `application_name`).
        pub fn schema(&self) -> &str {
            &self.schema
        }

        /// The connection string of the engine's connections.
        pub fn url(&self) -> String {
            if self.url.contains("://") {
                let separator = if self.url.contains('?') { '&' } else { '?' };
                format!("{}{separator}application_name={}", self.url, self.schema)
            } else {
                format!("{} application_name={}", self.url, self.schema)
            }
        }

        /// The engine's settings for this schema.
        pub fn settings(&self) -> PostgresConfig {
            PostgresConfig::new(self.url()).schema(&self.schema)
        }

        /// An engine configuration for this schema.
        pub fn config(&self) -> EngineConfig {
            EngineConfig::postgres(self.settings())
        }

        /// Runs SQL on a connection of its own (not the engine's) and returns the rows as
        /// text: for tests that look at or change the server behind the engine's back.
        ///
        /// # Panics
        /// When the server cannot be reached or refuses the SQL: a failed test.
        pub fn admin(&self, sql: &str) -> Vec<Vec<Option<String>>> {
            let mut client = postgres::Client::connect(&self.url, postgres::NoTls)
                .unwrap_or_else(|e| panic!("connect to the test server: {e}"));
            let messages = client
                .simple_query(sql)
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
            messages
                .into_iter()
                .filter_map(|message| match message {
                    postgres::SimpleQueryMessage::Row(row) => Some(
                        (0..row.len())
                            .map(|i| row.get(i).map(str::to_string))
                            .collect(),
                    ),
                    _ => None,
                })
                .collect()
        }

        /// Runs SQL in a transaction on a connection of its own and keeps the transaction
        /// open (with the locks it took) until the returned guard is dropped, which rolls it
        /// back: for tests that make the engine's transactions wait.
        ///
        /// # Panics
        /// When the server cannot be reached or refuses the SQL: a failed test.
        pub fn hold(&self, sql: &str) -> HeldTransaction {
            let mut client = postgres::Client::connect(&self.url, postgres::NoTls)
                .unwrap_or_else(|e| panic!("connect to the test server: {e}"));
            client
                .batch_execute(&format!("BEGIN; {sql}"))
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
            HeldTransaction { client }
        }

        /// Terminates every server backend of the engine's connections
        /// (`pg_terminate_backend`), returning how many there were.
        pub fn kill_connections(&self) -> usize {
            self.admin(&format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE application_name = '{}' AND pid <> pg_backend_pid()",
                self.schema
            ))
            .len()
        }
    }

    /// An open transaction of [`PgScratch::hold`], rolled back when dropped.
    pub struct HeldTransaction {
        client: postgres::Client,
    }

    impl std::fmt::Debug for HeldTransaction {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("HeldTransaction").finish_non_exhaustive()
        }
    }

    impl Drop for HeldTransaction {
        fn drop(&mut self) {
            let _ = self.client.batch_execute("ROLLBACK");
        }
    }

    impl Default for PgScratch {
        fn default() -> Self {
            Self::new()
        }
    }

    impl Drop for PgScratch {
        fn drop(&mut self) {
            // Best effort: the server is thrown away at the end of the run anyway.
            if let Ok(mut client) = postgres::Client::connect(&self.url, postgres::NoTls) {
                let _ = client.batch_execute(&format!(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE application_name = '{0}' AND pid <> pg_backend_pid(); \
                     DROP SCHEMA IF EXISTS \"{0}\" CASCADE",
                    self.schema
                ));
            }
        }
    }
}
