//! One write transaction: the token (fenced or not) first, the batch's net effect, the commit;
//! a commit whose answer was lost resolved on a new connection; buffered batches checked
//! after a reconnection.

use super::plan::Plan;
use super::*;

impl PgEngine {
    /// One attempt at a batch on `conn`, in one transaction that starts by inserting `token`.
    pub(super) fn attempt(
        &self,
        conn: &mut Conn,
        plan: &Plan,
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
            Durability::Buffered | Durability::Derived => "; SET LOCAL synchronous_commit TO off",
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
        let fence = if plan.is_empty() { None } else { self.fenced() };
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
        match plan.apply(conn, &self.tables) {
            Ok(()) => {}
            Err(Applied::Sql(error)) => return Err(rollback(conn, error)),
            Err(Applied::Engine(error)) => {
                let _ = conn.client.batch_execute("ROLLBACK");
                return Err(Attempt::Refused(error));
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
    pub(super) fn resolve(&self, token: &[u8; 16]) -> Result<bool, String> {
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
    pub(super) fn verify_pending(&self) -> Result<()> {
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

    pub(super) fn prune_tokens(&self) {
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
pub(super) enum Applied {
    Sql(postgres::Error),
    Engine(Error),
}

impl From<postgres::Error> for Applied {
    fn from(error: postgres::Error) -> Self {
        Applied::Sql(error)
    }
}
