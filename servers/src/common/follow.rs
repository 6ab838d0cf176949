//! Followers: the instances that do not write keep their memory current from the database.
//!
//! Several instances of a service run on one PostgreSQL store; one writes ([`super::leader`]),
//! every one answers reads, most of them from memory (the directory's closures and commit
//! graphs, the librarian's hot-file cache). A [`Follower`] runs a thread that polls the
//! store's change log every `poll` (5 ms by default): it reads the newest revision stored
//! ([`engine::ChangeLog::newest_stored`], one key), and when another instance wrote past what
//! this one applied, it reads those events, hands them to the service's [`Replica`] (the
//! directory applies them to its namespaces in memory, reloading only for an import; the
//! librarian drops the files they touch from its cache) and only then moves the log's head
//! there ([`engine::ChangeLog::follow_to`]). The head is what `min_revision`
//! waits for ([`min_revision`]), what `GET /changes` reads up to, and where this instance's
//! revisions continue if it becomes the writer.
//!
//! Why polling, not `LISTEN/NOTIFY`: the engine uses portable SQL only (CockroachDB and
//! YugabyteDB have no `LISTEN`), and a notification would still have to be followed by the
//! same read; a one-key reverse scan every 5 ms costs the database little (about 200 queries
//! a second per instance) and bounds the lag by the poll period plus the apply.
//!
//! When the instance is elected, the [`Leader`] calls [`Follower::take_over`] before it
//! counts itself leader, so no write is accepted before the instance has caught up to the
//! durable head (the old leader is fenced and drained by then) and its stores took over
//! ([`Replica::take_over`]). The poll also runs on the leader, as a probe of the database:
//! an instance that could not read the log for `max_staleness` (1 s by default) says so in
//! `GET /health` (`"stale": true`) and keeps answering reads from memory.

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use engine::ChangeLog;
use tokio::sync::watch;

use super::{ApiError, Leader};

/// The error of a replica's step, logged by the follower.
pub type ReplicaError = Box<dyn std::error::Error + Send + Sync>;

/// The longest a read with `min_revision` waits for this instance to apply that revision.
pub const MIN_REVISION_WAIT: Duration = Duration::from_secs(2);

/// The `Retry-After` of a read answered 503 `behind`, in seconds.
pub const BEHIND_RETRY_AFTER_SECS: u32 = 1;

/// A service's stores, as a follower sees them.
pub trait Replica: Send + Sync + 'static {
    /// The change log the service's stores write (one per service).
    fn change_log(&self) -> &Arc<ChangeLog>;

    /// Brings memory up to date with `events` (stored `(revision, payload)` pairs another
    /// instance wrote, oldest first, with nothing missing before them).
    ///
    /// # Errors
    /// The stores' errors; the events are then read and applied again at the next poll.
    fn follow(&self, events: &[(u64, Vec<u8>)]) -> Result<(), ReplicaError>;

    /// Drops everything held in memory that the log may have changed: after a gap (events
    /// pruned before this instance read them).
    ///
    /// # Errors
    /// The stores' errors.
    fn forget(&self) -> Result<(), ReplicaError>;

    /// Called once the instance has caught up as the new writer, before it writes.
    ///
    /// # Errors
    /// The stores' errors: the instance then gives the lease back.
    fn take_over(&self) -> Result<(), ReplicaError>;
}

/// How a follower polls.
#[derive(Clone, Copy, Debug)]
pub struct FollowSettings {
    /// Between two polls of the log. Default: 5 ms.
    pub poll: Duration,
    /// How long the instance may go without reading the log before `/health` calls it
    /// stale. Default: 1 s.
    pub max_staleness: Duration,
}

impl Default for FollowSettings {
    fn default() -> Self {
        FollowSettings {
            poll: Duration::from_millis(5),
            max_staleness: Duration::from_secs(1),
        }
    }
}

/// This instance's view of its store's revisions: the head it has applied, whether it
/// follows the log, when it last read it. Cheap to clone.
#[derive(Clone)]
pub struct Follower {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Follower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Follower")
            .field("head", &self.head())
            .field("stale", &self.is_stale())
            .finish_non_exhaustive()
    }
}

struct Inner {
    replica: Arc<dyn Replica>,
    /// Whether this instance writes now: then a poll only probes the database (the head is
    /// moved by its own synced writes, never past them).
    leader: Leader,
    settings: FollowSettings,
    /// The log's head, each time it moves (this instance's writes, or what it followed).
    head: watch::Receiver<u64>,
    /// When the log was last read successfully; `None` on an embedded store, which has no
    /// other writer and never polls.
    last_read: Mutex<Option<Instant>>,
    /// Held by a poll and by [`Follower::take_over`]: they never interleave.
    applying: Mutex<()>,
    /// The newest revision stored when the database was last found behind this instance's
    /// head (it lost events this instance applied), so memory is reloaded once for it.
    lost_at: Mutex<Option<u64>>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Follower {
    /// The revisions of `replica`'s log, without a polling thread: one instance of an
    /// embedded store, which writes everything it serves.
    pub fn embedded(replica: Arc<dyn Replica>) -> Self {
        Follower::with(replica, Leader::always(), FollowSettings::default(), None)
    }

    fn with(
        replica: Arc<dyn Replica>,
        leader: Leader,
        settings: FollowSettings,
        last_read: Option<Instant>,
    ) -> Self {
        let log = replica.change_log();
        let (sender, head) = watch::channel(log.head());
        log.subscribe(Box::new(move |revision| {
            sender.send_if_modified(|head| {
                let moved = revision > *head;
                *head = (*head).max(revision);
                moved
            });
        }));
        Follower {
            inner: Arc::new(Inner {
                replica,
                leader,
                settings,
                head,
                last_read: Mutex::new(last_read),
                applying: Mutex::new(()),
                lost_at: Mutex::new(None),
            }),
        }
    }

    /// Follows `replica`'s log for an instance elected by `leader`: starts the polling
    /// thread and makes the leader catch up through it when elected. On an embedded store
    /// (no election) this is [`Follower::embedded`]. Should the thread not start (the
    /// process is out of threads), the error is logged and the instance is soon reported
    /// stale by `/health`, as when the database is away.
    pub fn start(replica: Arc<dyn Replica>, leader: &Leader, settings: FollowSettings) -> Self {
        if leader.holder().is_none() {
            return Follower::embedded(replica);
        }
        let follower = Follower::with(replica, leader.clone(), settings, Some(Instant::now()));
        let weak = Arc::downgrade(&follower.inner);
        leader.on_elected(Box::new({
            let weak = weak.clone();
            move || match weak.upgrade() {
                Some(inner) => Follower { inner }.take_over(),
                None => Err("the service stopped".into()),
            }
        }));
        let started = std::thread::Builder::new()
            .name("follower".into())
            .spawn(move || poll_loop(&weak));
        if let Err(error) = started {
            tracing::error!(%error, "the follower thread could not start: this instance will not see other writers' changes");
        }
        follower
    }

    /// The newest revision this instance has applied (written itself, or followed).
    pub fn head(&self) -> u64 {
        *self.inner.head.borrow()
    }

    /// Whether the log could not be read for longer than `max_staleness`: reads are still
    /// answered, from what memory holds.
    pub fn is_stale(&self) -> bool {
        self.since_read()
            .is_some_and(|since| since > self.inner.settings.max_staleness)
    }

    /// How long since the log was last read (`None`: an embedded store, never behind).
    pub fn since_read(&self) -> Option<Duration> {
        lock(&self.inner.last_read).map(|at| at.elapsed())
    }

    /// `GET /health`'s answer with `status`: `stale`, the `revision` this instance has
    /// applied, and its `role` (`leader`: it writes, as `/health/writer` says; or `follower`).
    pub fn health(&self, status: &str) -> serde_json::Value {
        let role = if self.inner.leader.is_leader() {
            "leader"
        } else {
            "follower"
        };
        serde_json::json!({
            "status": status,
            "stale": self.is_stale(),
            "revision": self.head(),
            "role": role,
        })
    }

    /// Waits until this instance has applied `revision`, at most `timeout`; returns the head
    /// then.
    pub async fn wait_for(&self, revision: u64, timeout: Duration) -> u64 {
        let mut head = self.inner.head.clone();
        let reached = tokio::time::timeout(timeout, head.wait_for(|head| *head >= revision)).await;
        match reached {
            Ok(Ok(head)) => *head,
            _ => self.head(),
        }
    }

    /// One poll, on a blocking thread: reads the events another instance wrote since the
    /// head and applies them. Returns the new head.
    ///
    /// # Errors
    /// The engine's or the replica's error; nothing moves then.
    pub fn poll(&self) -> Result<u64, ReplicaError> {
        let _applying = lock(&self.inner.applying);
        if self.inner.leader.is_leader() {
            // The writer's own appends may be stored and not yet durable: only probe.
            self.inner.replica.change_log().newest_stored()?;
            *lock(&self.inner.last_read) = Some(Instant::now());
            return Ok(self.head());
        }
        self.catch_up()
    }

    fn catch_up(&self) -> Result<u64, ReplicaError> {
        let log = self.inner.replica.change_log();
        let newest = log.newest_stored()?;
        let mut after = log.head();
        *lock(&self.inner.last_read) = Some(Instant::now());
        if newest < after {
            // The database lost events this instance applied: a standby promoted before a
            // buffered batch reached it (its writer was never acknowledged and poisons
            // itself). Memory may hold them: reload it, once for this state of the log.
            let mut noted = lock(&self.inner.lost_at);
            if *noted != Some(newest) {
                tracing::warn!(
                    after,
                    newest,
                    "the database lost followed events: reloading what memory holds"
                );
                self.inner.replica.forget()?;
                *noted = Some(newest);
            }
            return Ok(after);
        }
        if newest == after {
            return Ok(after);
        }
        let mut first = true;
        while after < newest {
            // From the head's own event on: it must still be there (see above).
            let mut events = log.read_stored(after.saturating_sub(1), newest, 1024)?;
            if after > 0 && events.first().map(|(revision, _)| *revision) == Some(after) {
                events.remove(0);
            } else if after > 0 && first {
                // The head's event is gone: lost by the database (as above) and written over
                // by a new writer, or pruned. What memory holds of it is unknown.
                return self.forget(log, after, newest, "the head's event is gone");
            }
            let Some(&(last, _)) = events.last() else {
                break;
            };
            // The first event is not the next revision: were events pruned before this
            // instance read them? (Asked only then: one query less per poll.)
            if first
                && events[0].0 != after + 1
                && log.oldest()?.is_some_and(|oldest| after + 1 < oldest)
            {
                return self.forget(log, after, newest, "followed events were pruned");
            }
            first = false;
            self.inner.replica.follow(&events)?;
            log.follow_to(last);
            after = last;
        }
        Ok(after)
    }

    /// Reloads everything memory holds (events it applied or missed are unknown) and moves
    /// the head to `newest`.
    fn forget(
        &self,
        log: &ChangeLog,
        after: u64,
        newest: u64,
        why: &'static str,
    ) -> Result<u64, ReplicaError> {
        tracing::warn!(after, newest, why, "dropping what memory holds");
        self.inner.replica.forget()?;
        log.follow_to(newest);
        Ok(newest)
    }

    /// The new writer's first step, called by the [`Leader`] (blocking) after the lease was
    /// acquired and the engine fenced, before the instance counts itself leader: reads the
    /// log to the durable head (every write of the old leader committed before the lease
    /// moved), applies it, then lets the stores take over.
    ///
    /// # Errors
    /// As for [`Follower::poll`], or the stores' take-over.
    pub fn take_over(&self) -> Result<(), ReplicaError> {
        let _applying = lock(&self.inner.applying);
        let log = self.inner.replica.change_log();
        // Every buffered batch of this engine durable first, so the head read is durable.
        log.committer().engine().flush()?;
        let head = self.catch_up()?;
        self.inner.replica.take_over()?;
        tracing::info!(revision = head, "caught up as the writer");
        Ok(())
    }
}

fn poll_loop(weak: &Weak<Inner>) {
    let mut failing_since: Option<Instant> = None;
    loop {
        let Some(inner) = weak.upgrade() else {
            return;
        };
        let period = inner.settings.poll;
        let follower = Follower { inner };
        match follower.poll() {
            Ok(_) => {
                if let Some(since) = failing_since.take() {
                    tracing::info!(after = ?since.elapsed(), "following the change log again");
                }
            }
            Err(error) => {
                if failing_since.is_none() {
                    tracing::warn!(%error, "cannot follow the change log; reads are served from memory");
                    failing_since = Some(Instant::now());
                }
            }
        }
        drop(follower);
        std::thread::sleep(period);
    }
}

/// The revision a read asks for: `min_revision=N` in the query or `X-Min-Revision: N`.
///
/// # Errors
/// 400 `bad_revision` when it is not a number.
fn requested_revision(request: &Request) -> Result<Option<u64>, ApiError> {
    let bad = || ApiError::bad_request("bad_revision", "min_revision must be a revision number");
    if let Some(value) = request.headers().get("x-min-revision") {
        let text = value.to_str().map_err(|_| bad())?;
        return text.trim().parse().map(Some).map_err(|_| bad());
    }
    let Some(query) = request.uri().query() else {
        return Ok(None);
    };
    for pair in query.split('&') {
        if let Some(value) = pair.strip_prefix("min_revision=") {
            return value.parse().map(Some).map_err(|_| bad());
        }
    }
    Ok(None)
}

/// Middleware of every route: a read (`GET`, `HEAD`) that carries `min_revision=N` or
/// `X-Min-Revision: N` waits until this instance has applied revision `N` (what a write
/// answered in `X-Revision`), at most [`MIN_REVISION_WAIT`], then answers as usual; past
/// that, 503 `behind` with `Retry-After` and the instance's `revision`. Other requests pass.
///
/// The parameter is taken out of the query before the handler sees it, so routes whose
/// query refuses unknown parameters accept it.
pub async fn min_revision(
    State(follower): State<Follower>,
    mut request: Request,
    next: Next,
) -> Response {
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        return next.run(request).await;
    }
    let wanted = match requested_revision(&request) {
        Ok(Some(wanted)) => wanted,
        Ok(None) => return next.run(request).await,
        Err(error) => return error.into_response(),
    };
    let head = follower.wait_for(wanted, MIN_REVISION_WAIT).await;
    if head < wanted {
        return ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "behind",
            format!("this instance has applied revision {head}, not yet {wanted}; retry"),
        )
        .with_header(
            header::RETRY_AFTER,
            HeaderValue::from(BEHIND_RETRY_AFTER_SECS),
        )
        .with_detail("revision", head.into())
        .into_response();
    }
    strip_min_revision(&mut request);
    next.run(request).await
}

/// Removes `min_revision=...` from the request's query.
fn strip_min_revision(request: &mut Request) {
    let uri = request.uri();
    let Some(query) = uri.query() else { return };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| !pair.starts_with("min_revision="))
        .collect();
    let path_and_query = if kept.is_empty() {
        uri.path().to_string()
    } else {
        format!("{}?{}", uri.path(), kept.join("&"))
    };
    let mut parts = uri.clone().into_parts();
    match path_and_query.parse() {
        Ok(parsed) => parts.path_and_query = Some(parsed),
        Err(_) => return,
    }
    if let Ok(stripped) = axum::http::Uri::from_parts(parts) {
        *request.uri_mut() = stripped;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_revision_is_read_from_the_header_or_the_query() {
        let request = |uri: &str, header: Option<&str>| {
            let mut builder = axum::http::Request::get(uri);
            if let Some(value) = header {
                builder = builder.header("x-min-revision", value);
            }
            builder.body(axum::body::Body::empty()).unwrap()
        };
        assert_eq!(requested_revision(&request("/a", None)).unwrap(), None);
        assert_eq!(
            requested_revision(&request("/a?x=1&min_revision=42", None)).unwrap(),
            Some(42)
        );
        assert_eq!(
            requested_revision(&request("/a", Some("7"))).unwrap(),
            Some(7)
        );
        assert!(requested_revision(&request("/a?min_revision=x", None)).is_err());
        assert!(requested_revision(&request("/a", Some("-1"))).is_err());
        let mut stripped = request("/r/ancestry?ancestor=a&min_revision=3&descendant=b", None);
        strip_min_revision(&mut stripped);
        assert_eq!(stripped.uri(), "/r/ancestry?ancestor=a&descendant=b");
        let mut alone = request("/teams/t/members?min_revision=3", None);
        strip_min_revision(&mut alone);
        assert_eq!(alone.uri(), "/teams/t/members");
    }
}
