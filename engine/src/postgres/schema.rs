//! Opening a store: the schema, the tables of its keyspaces, and the schema version, created
//! when missing by a role that may, found in `information_schema` by one that may not.

use super::*;

impl PgEngine {
    /// Creates what is missing and reads the schema version. Existing objects are found in
    /// `information_schema` first, so that a role without CREATE privileges can open a store
    /// that its administrator created; two processes creating the same objects at once
    /// collide in PostgreSQL's catalog, and the loser looks again.
    pub(super) fn create_tables(&self) -> Result<()> {
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

    pub(super) fn create_tables_on(&self, conn: &mut Conn) -> Result<Option<i64>, postgres::Error> {
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

    pub(super) fn create_tables_in_transaction(
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
}
