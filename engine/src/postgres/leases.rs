//! Leases with fencing epochs (`engine::Leadership`): the statements, the two-transaction
//! acquisition and why an old leader cannot commit after a takeover (`engine/DESIGN.md`,
//! "Leadership and fencing").

use super::*;

/// The statements of the leases (`engine/DESIGN.md`, "Leadership and fencing").
#[derive(Debug)]
pub(super) struct LeasesSql {
    /// A batch's first statement when the engine is fenced: its token goes in only if the
    /// lease is still at the fenced epoch, under a key-share lock held to the commit.
    pub(super) fenced_insert: String,
    pub(super) current: String,
    pub(super) create: String,
    pub(super) lock: String,
    pub(super) drain: String,
    pub(super) extend: String,
    pub(super) take: String,
    pub(super) renew: String,
    pub(super) release: String,
}

impl LeasesSql {
    pub(super) fn new(schema: &str) -> Self {
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

impl PgEngine {
    pub(super) fn fenced(&self) -> Option<(String, i64)> {
        self.fence.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// `Error::Fenced` when this engine is fenced and its lease has moved past the fenced
    /// epoch; `None` when it is not fenced, still leads, or the lease cannot be read.
    pub(super) fn superseded(&self) -> Option<Error> {
        let (name, epoch) = self.fenced()?;
        let current = self
            .with_retry("read a lease", |conn| {
                let rows = conn.query(&self.leases_sql.current, &[&name])?;
                Ok(rows.first().and_then(|row| row.get::<_, Option<i64>>(0)))
            })
            .ok()?;
        (current != Some(epoch)).then(|| Error::Fenced {
            name,
            epoch: u64::try_from(epoch).unwrap_or(0),
            current: current.and_then(|c| u64::try_from(c).ok()),
        })
    }

    /// One acquisition on `conn` (see [`Leadership::acquire`]): the decision and the epoch
    /// change in one transaction, then, before the epoch is handed out, the wait for the
    /// write transactions of older epochs still in flight (`engine/DESIGN.md`, "Why an old
    /// leader cannot commit after a takeover").
    pub(super) fn acquire_on(
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

    pub(super) fn acknowledged_batch(
        &self,
        token: [u8; 16],
        durability: Durability,
        watermark: u64,
    ) {
        let number = self.acknowledged.fetch_add(1, Ordering::SeqCst);
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        match durability {
            Durability::Buffered => pending.batches.push((number, token, Instant::now())),
            Durability::Sync => pending.batches.retain(|(n, _, _)| *n >= watermark),
            // Its writer finds out itself whether it is there.
            Durability::Derived => {}
        }
    }
}

/// Runs `work` in one transaction on `conn` whose lock waits and statements each end after
/// `timeout`; commits when it succeeds, rolls back when PostgreSQL reported a failure.
pub(super) fn in_transaction<T>(
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

pub(super) fn epoch_sql(epoch: Epoch) -> i64 {
    i64::try_from(epoch.0).unwrap_or(i64::MAX)
}

pub(super) fn epoch_of(epoch: i64) -> Epoch {
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
