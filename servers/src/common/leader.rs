//! Which instance of a service writes: leader election through the store's database.
//!
//! Several instances of a service run on one PostgreSQL store (`store.backend = "postgres"`);
//! one of them at a time holds the store's lease ([`engine::Leadership`]) and writes. A
//! [`Leader`] runs a task that tries to acquire the lease every `server.lease_ttl_ms / 3`,
//! renews it while it leads, and releases it on a graceful shutdown ([`Leader::stop`]), so
//! that another instance takes over at once. Once elected it fences its engine with the
//! lease's epoch: a write of an instance that lost the lease without noticing (paused,
//! partitioned) is refused by the database, never committed.
//!
//! Over HTTP: [`writer_health`] answers `GET /health/writer` with 200 on the leader only
//! (HAProxy's check for the write backend), and [`require_leader`] answers the write routes
//! on any other instance with 503 `not_leader` and `Retry-After: 1`, which HAProxy retries at
//! another server (`retry-on 503` with `option redispatch`; `docs/API.md`, "Several
//! instances"). On the embedded backends ([`Leader::always`]) the one instance always leads.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use engine::{Engine, Epoch};
use tokio::sync::{watch, Notify};

use super::ApiError;

/// The `Retry-After` of a write answered by an instance that is not the leader, in seconds.
pub const NOT_LEADER_RETRY_AFTER_SECS: u32 = 1;

/// Whether this instance is the writer of its store, shared by the handlers, the routers'
/// middleware and the election task. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Leader {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// `None`: an embedded backend, always the leader.
    election: Option<Election>,
    state: Mutex<Term>,
    changes: watch::Sender<Option<Epoch>>,
    stop: Notify,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Run (blocking) when a new epoch was acquired, before the instance counts itself
    /// leader: the follower's catch-up ([`super::follow::Follower::take_over`]).
    elected: Mutex<Option<Hook>>,
    /// Set when the engine was poisoned: the instance stays a reader and never leads again.
    retired: AtomicBool,
}

/// [`Inner::elected`], with a `Debug` that names it only.
#[derive(Clone)]
struct Hook(Arc<ElectedHook>);

impl std::fmt::Debug for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hook")
    }
}

/// What runs when this instance is elected, before it writes.
pub type ElectedHook = dyn Fn() -> Result<(), super::follow::ReplicaError> + Send + Sync;

#[derive(Debug)]
struct Election {
    engine: Arc<dyn Engine>,
    name: String,
    holder: String,
    ttl: Duration,
}

/// The lease as this instance last knew it.
#[derive(Debug, Default, Clone, Copy)]
struct Term {
    /// The epoch of the lease this instance holds (or held until it failed to renew).
    epoch: Option<Epoch>,
    /// Until when it counts itself leader: `ttl` after it sent the last acquire or renewal
    /// that succeeded (the database's expiry is no earlier).
    until: Option<Instant>,
}

impl Leader {
    /// The one instance of an embedded store: always the leader.
    pub fn always() -> Self {
        Leader::with(None)
    }

    /// The election of lease `name` on `engine`'s database with leases of `ttl`, or
    /// [`Leader::always`] when the engine has no leases (the embedded backends). Not yet
    /// running: call [`Leader::start`] on the runtime.
    pub fn elect(engine: Arc<dyn Engine>, name: &str, ttl: Duration) -> Self {
        if engine.leadership().is_none() {
            return Leader::always();
        }
        Leader::with(Some(Election {
            engine,
            name: name.to_string(),
            holder: holder_name(),
            ttl,
        }))
    }

    fn with(election: Option<Election>) -> Self {
        Leader {
            inner: Arc::new(Inner {
                election,
                state: Mutex::new(Term::default()),
                changes: watch::channel(None).0,
                stop: Notify::new(),
                task: Mutex::new(None),
                elected: Mutex::new(None),
                retired: AtomicBool::new(false),
            }),
        }
    }

    fn term(&self) -> Term {
        *self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_term(&self, term: Term) {
        *self.inner.state.lock().unwrap_or_else(|e| e.into_inner()) = term;
        self.inner.changes.send_if_modified(|epoch| {
            let changed = *epoch != term.epoch;
            *epoch = term.epoch;
            changed
        });
    }

    /// Whether this instance leads now: always on an embedded store; on a database, while
    /// its last successful acquire or renewal is less than `ttl` old.
    pub fn is_leader(&self) -> bool {
        match &self.inner.election {
            None => true,
            Some(_) => self
                .term()
                .until
                .is_some_and(|until| Instant::now() < until),
        }
    }

    /// The epoch of the lease this instance holds, while it leads on a database.
    pub fn epoch(&self) -> Option<Epoch> {
        match &self.inner.election {
            Some(_) if self.is_leader() => self.term().epoch,
            _ => None,
        }
    }

    /// This instance's name in the lease (host, process id and a random part), on a
    /// database.
    pub fn holder(&self) -> Option<&str> {
        self.inner.election.as_ref().map(|e| e.holder.as_str())
    }

    /// The epoch held, each time it changes (`None`: not the leader): for a store that must
    /// catch up from the database before it writes as the new leader.
    pub fn watch(&self) -> watch::Receiver<Option<Epoch>> {
        self.inner.changes.subscribe()
    }

    /// Runs `hook` (on a blocking thread) each time this instance acquires the lease at a
    /// new epoch, after its engine is fenced and before it counts itself leader, so no
    /// write is accepted before the hook returned: the follower catching up with what the
    /// old leader wrote. When the hook fails the lease is released, for another instance.
    pub fn on_elected(&self, hook: Box<ElectedHook>) {
        *self.inner.elected.lock().unwrap_or_else(|e| e.into_inner()) = Some(Hook(Arc::from(hook)));
    }

    /// Starts the election task on the current Tokio runtime: one round now, then one every
    /// `ttl / 3`. Nothing to do on an embedded store.
    pub fn start(&self) {
        let Some(election) = &self.inner.election else {
            return;
        };
        let period = election.ttl / 3;
        let leader = self.clone();
        let task = tokio::spawn(async move {
            loop {
                leader.round().await;
                tokio::select! {
                    () = tokio::time::sleep(period) => {}
                    () = leader.inner.stop.notified() => return,
                }
            }
        });
        *self.inner.task.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
    }

    /// One round of the election: renew the lease held, or try to acquire it. Errors (the
    /// database unreachable) are logged; the instance stops counting itself leader once its
    /// last success is `ttl` old.
    pub async fn round(&self) {
        let Some(election) = &self.inner.election else {
            return;
        };
        if self.inner.retired.load(Ordering::SeqCst) {
            return;
        }
        let held = self.term().epoch;
        // An instance that stopped counting itself leader (its renewals failed) catches up
        // again even when it gets the same epoch back: memory may hold a write the database
        // refused while it was away.
        let was_leading = self.is_leader();
        let sent = Instant::now();
        let (engine, name, holder, ttl) = (
            Arc::clone(&election.engine),
            election.name.clone(),
            election.holder.clone(),
            election.ttl,
        );
        let hook = self
            .inner
            .elected
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let outcome = tokio::task::spawn_blocking(move || {
            let Some(leadership) = engine.leadership() else {
                return Ok(None);
            };
            let epoch = match held {
                Some(epoch) => match leadership.renew(&name, &holder, epoch, ttl) {
                    Ok(renewed) => renewed.then_some(epoch),
                    Err(error @ engine::Error::Poisoned { .. }) => {
                        // Every later write of this engine is refused until the process
                        // restarts: hand the lease over now rather than at its expiry.
                        let _ = leadership.release(&name, &holder, epoch);
                        return Err(error);
                    }
                    Err(error) => return Err(error),
                },
                None => leadership.acquire(&name, &holder, ttl)?,
            };
            if let Some(epoch) = epoch {
                // Fenced before the instance counts itself leader: every write it accepts
                // from now on is checked against this epoch.
                leadership.fence(&name, epoch);
                if held != Some(epoch) || !was_leading {
                    if let Some(hook) = hook {
                        if let Err(error) = (hook.0)() {
                            tracing::warn!(lease = %name, %epoch, %error, "could not catch up as the writer: giving the lease back");
                            leadership.release(&name, &holder, epoch)?;
                            return Ok(None);
                        }
                    }
                }
            }
            Ok::<_, engine::Error>(epoch)
        })
        .await;
        match outcome {
            Ok(Ok(Some(epoch))) => {
                if held != Some(epoch) {
                    tracing::info!(lease = %election.name, %epoch, holder = %election.holder, "elected the writer");
                }
                self.set_term(Term {
                    epoch: Some(epoch),
                    until: Some(sent + election.ttl),
                });
            }
            Ok(Ok(None)) => {
                if held.is_some() {
                    tracing::warn!(lease = %election.name, "lost the lease to another instance");
                }
                self.set_term(Term::default());
            }
            Ok(Err(error @ engine::Error::Poisoned { .. })) => {
                tracing::error!(lease = %election.name, %error, "the engine refuses every write until this instance restarts: it no longer stands for writer");
                self.inner.retired.store(true, Ordering::SeqCst);
                self.set_term(Term::default());
            }
            Ok(Err(error)) => {
                tracing::warn!(lease = %election.name, %error, "the lease could not be acquired or renewed");
                if !self.is_leader() {
                    // Counted out; `held` is kept so that the next round renews the same
                    // epoch if nobody took over meanwhile.
                    self.inner
                        .changes
                        .send_if_modified(|epoch| epoch.take().is_some());
                }
            }
            Err(panic) => tracing::error!(%panic, "the lease task panicked"),
        }
    }

    /// Stops the election and releases the lease if this instance holds it, so that another
    /// instance takes over at its next round instead of waiting for the expiry: call it after
    /// the server drained its requests on a graceful shutdown.
    pub async fn stop(&self) {
        let Some(election) = &self.inner.election else {
            return;
        };
        self.inner.stop.notify_one();
        let task = self
            .inner
            .task
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(task) = task {
            let _ = task.await;
        }
        let Some(epoch) = self.term().epoch else {
            return;
        };
        self.set_term(Term::default());
        let (engine, name, holder) = (
            Arc::clone(&election.engine),
            election.name.clone(),
            election.holder.clone(),
        );
        let released = tokio::task::spawn_blocking(move || match engine.leadership() {
            Some(leadership) => leadership.release(&name, &holder, epoch),
            None => Ok(()),
        })
        .await;
        match released {
            Ok(Ok(())) => tracing::info!(lease = %election.name, %epoch, "released the lease"),
            Ok(Err(error)) => tracing::warn!(%error, "the lease could not be released; it expires"),
            Err(panic) => tracing::error!(%panic, "releasing the lease panicked"),
        }
    }
}

/// A name for this process in the lease: the host, the process id and a random part (two
/// processes must never share one).
fn holder_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".to_string());
    format!(
        "{host}:{}:{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}

/// Middleware of the write routes: on an instance that is not the leader, a request that may
/// write (any method but `GET`, `HEAD` and `OPTIONS`) is answered 503 `not_leader` with
/// `Retry-After: 1`, before its body is read; HAProxy retries it at another server.
pub async fn require_leader(
    State(leader): State<Leader>,
    request: Request,
    next: Next,
) -> Response {
    let reads = matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    if reads || leader.is_leader() {
        return next.run(request).await;
    }
    ApiError::not_leader(NOT_LEADER_RETRY_AFTER_SECS).into_response()
}

/// `GET /health/writer`: 200 `{"status": "leader"}` (with the lease's `epoch` on a
/// database) on the leader, 503 `{"status": "follower"}` elsewhere: HAProxy's health check of
/// the write backend.
pub async fn writer_health(State(leader): State<Leader>) -> Response {
    if leader.is_leader() {
        let body = match leader.epoch() {
            Some(epoch) => serde_json::json!({"status": "leader", "epoch": epoch.0}),
            None => serde_json::json!({"status": "leader"}),
        };
        (StatusCode::OK, Json(body)).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"status": "follower"})),
        )
            .into_response()
    }
}

/// The routes every service has for its election (`GET /health/writer`), to merge into its
/// router.
pub fn routes<S>(leader: Leader) -> axum::Router<S> {
    axum::Router::new()
        .route("/health/writer", axum::routing::get(writer_health))
        .with_state(leader)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_embedded_store_always_leads() {
        let engine = engine::EngineConfig::memory()
            .open(&["a"])
            .unwrap_or_else(|e| panic!("{e}"));
        let leader = Leader::elect(engine, "test", Duration::from_secs(3));
        assert!(leader.is_leader());
        assert_eq!(leader.epoch(), None);
        assert_eq!(leader.holder(), None);
        leader.start();
        leader.round().await;
        leader.stop().await;
        assert!(leader.is_leader());
        let response = writer_health(State(leader)).await;
        assert_eq!(response.status(), StatusCode::OK);
    }
}
