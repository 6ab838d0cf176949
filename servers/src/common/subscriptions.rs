//! Callbacks on changes (the roadmap's subscriptions): `POST /subscriptions` names a filter of
//! the change feed, a callback URL and an expiry; the service then POSTs every matching event
//! to the callback, in revision order, at least once.
//!
//! This is the outbox pattern over the store's [`engine::ChangeLog`]: the events are already
//! durable with the changes, so delivery only reads the log. Each subscription is an
//! [`engine::Consumer`] (its record and the revision its receiver acknowledged, in the
//! store's engine), and one task per subscription, on a runtime of its own thread, reads a
//! page after the acknowledged revision, POSTs it as
//! `{"subscription": ID, "changes": [...], "next": REV}`, and on a 2xx answer records `next`
//! as acknowledged (durably) before reading on. A failure or a timeout is retried with
//! exponential backoff ([`Delivery`]: 0.5 s doubling to 60 s by default) until the subscription expires. After a
//! restart delivery resumes after the last acknowledged revision, so a receiver may see a
//! page again (it was delivered but its acknowledgement was not recorded) but never misses
//! one.
//!
//! A slow or dead receiver never slows writes: a subscription holds one page in memory, and
//! its backlog is the part of the log it has not acknowledged (its *lag*, in revisions,
//! reported by `GET /subscriptions/{id}` and in `/metrics` as `feed_subscription_lag`). When
//! its backlog is pruned by retention before it was delivered the subscription stops with the
//! state `compacted`, and its record says so.
//!
//! Callbacks may only go to the hosts of the server's `callback_hosts` (`host` or
//! `host:port`): a subscription must not turn the service into a proxy for reaching
//! arbitrary addresses.
//!
//! Where several instances share one database ([`super::leader`]), only the writer
//! delivers: the others hold the same records but run no delivery (their subscriptions show
//! the state `standby`), so a receiver gets each page from one instance. Each time an
//! instance becomes the writer it (re)starts every stored subscription from its durable
//! acknowledged revision, which the previous writer moved, so a failover repeats at most the
//! pages whose acknowledgement was not recorded, in revision order, and loses none. An
//! instance that stops being the writer stops delivering at its next step (its
//! acknowledgements are refused by the fence meanwhile).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use engine::{Consumer, Consumers};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::error::ApiError;
use super::feed::{read_page, ChangeSource, ChangesQuery, DEFAULT_LIMIT};
use super::{Leader, SetupError};

/// How deliveries are timed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// How long a callback may take to answer. Default: 10 s.
    pub timeout: Duration,
    /// The first pause after a failed delivery; it doubles up to `max_backoff`.
    /// Default: 0.5 s.
    pub first_backoff: Duration,
    /// The longest pause between attempts. Default: 60 s.
    pub max_backoff: Duration,
}

impl Default for Delivery {
    fn default() -> Self {
        Delivery {
            timeout: Duration::from_secs(10),
            first_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(60),
        }
    }
}
/// How often a subscription whose filter matched nothing records how far it read.
const IDLE_ACK_EVERY: Duration = Duration::from_secs(5);

/// How often an instance on a shared database checks whether it became the writer, besides
/// the election's own notices (leadership also ends by the lease's expiry, which sends none).
const LEADER_CHECK_EVERY: Duration = Duration::from_millis(250);

/// What `POST /subscriptions` takes.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSubscription {
    /// Filters of the change feed (`kind` and the service's own), all of which must match.
    #[serde(default)]
    pub filter: BTreeMap<String, String>,
    /// Where to POST the events: `http://` or `https://`, a host of `callback_hosts`.
    pub callback: String,
    /// When the subscription ends: Unix seconds, in the future.
    pub expires: i64,
    /// Deliver the events after this revision (default: the head, i.e. from now on).
    pub after: Option<u64>,
}

/// A subscription as stored in its consumer record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Record {
    filter: BTreeMap<String, String>,
    callback: String,
    expires: i64,
    created_by: String,
}

/// A subscription as `GET /subscriptions/{id}` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct SubscriptionView {
    /// Its id.
    pub id: u64,
    /// Its filter.
    pub filter: BTreeMap<String, String>,
    /// Its callback URL.
    pub callback: String,
    /// When it ends (Unix seconds).
    pub expires: i64,
    /// Who created it.
    pub created_by: String,
    /// Every event up to this revision was delivered and acknowledged (or did not match).
    pub acked: u64,
    /// Revisions not yet acknowledged: the head minus `acked`.
    pub lag: u64,
    /// `delivering`, `retrying` (the last attempt failed), `compacted` (its backlog was
    /// pruned), `expired`, or `standby` (this instance is not the writer, which delivers).
    pub state: &'static str,
    /// The last delivery failure, if the last attempt failed.
    pub last_error: Option<String>,
}

#[derive(Clone, Debug, Default)]
struct Status {
    state: &'static str,
    last_error: Option<String>,
}

/// A running delivery: the switch that stops it, and its status.
type Running = (watch::Sender<bool>, Arc<Mutex<Status>>);

/// The subscriptions of one service. See the [module documentation](self).
pub struct Subscriptions<S: ChangeSource> {
    source: Arc<S>,
    consumers: Arc<Consumers>,
    callback_hosts: Vec<String>,
    delivery: Delivery,
    runtime: tokio::runtime::Handle,
    client: reqwest::Client,
    /// Per running subscription: a sender whose drop (or `true`) stops its task, and its status.
    running: Mutex<HashMap<u64, Running>>,
    /// Who delivers: `None` until the election is known (an instance on a shared database,
    /// which delivers nothing before), else while this [`Leader`] leads (always on an
    /// embedded store).
    leader: Mutex<Option<Leader>>,
}

impl<S: ChangeSource> std::fmt::Debug for Subscriptions<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriptions")
            .field("callback_hosts", &self.callback_hosts)
            .finish_non_exhaustive()
    }
}

/// A service's subscriptions, started when first needed: at open when stored subscriptions
/// must be resumed, else at the first `POST /subscriptions`. Delivery runs on a thread of its
/// own, which a service without subscriptions (most tests, every fuzz input) does not need.
pub struct LazySubscriptions<S: ChangeSource> {
    source: Arc<S>,
    consumers: Arc<Consumers>,
    callback_hosts: Vec<String>,
    /// What [`Subscriptions::start`] is given: `None` on a shared database until
    /// [`LazySubscriptions::follow_leader`].
    leader: Mutex<Option<Leader>>,
    started: OnceLock<Arc<Subscriptions<S>>>,
    starting: Mutex<()>,
}

impl<S: ChangeSource> std::fmt::Debug for LazySubscriptions<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazySubscriptions")
            .field("callback_hosts", &self.callback_hosts)
            .field("started", &self.started.get().is_some())
            .finish_non_exhaustive()
    }
}

impl<S: ChangeSource> LazySubscriptions<S> {
    /// The subscriptions of `source`'s feed, their durable records in `consumers`. Stored ones
    /// start delivering at once; otherwise nothing starts until the first
    /// [`create`](Self::create). On a `shared` database (several instances may run on it)
    /// nothing is delivered until [`follow_leader`](Self::follow_leader) says who writes.
    ///
    /// # Errors
    /// The engine's error reading the records, or the delivery thread's.
    pub fn open(
        source: Arc<S>,
        consumers: Arc<Consumers>,
        callback_hosts: Vec<String>,
        shared: bool,
    ) -> Result<Arc<Self>, SetupError> {
        let stored = !consumers.list().map_err(SetupError::Consumers)?.is_empty();
        let subscriptions = Arc::new(LazySubscriptions {
            source,
            consumers,
            callback_hosts,
            leader: Mutex::new((!shared).then(Leader::always)),
            started: OnceLock::new(),
            starting: Mutex::new(()),
        });
        if stored {
            subscriptions.start().map_err(SetupError::Delivery)?;
        }
        Ok(subscriptions)
    }

    fn start(&self) -> std::io::Result<&Arc<Subscriptions<S>>> {
        let _starting = lock(&self.starting);
        if let Some(started) = self.started.get() {
            return Ok(started);
        }
        let started = Subscriptions::start_with(
            Arc::clone(&self.source),
            Arc::clone(&self.consumers),
            self.callback_hosts.clone(),
            Delivery::default(),
            lock(&self.leader).clone(),
        )?;
        Ok(self.started.get_or_init(|| started))
    }

    /// Delivers only while `leader` says this instance writes. With an election (a shared
    /// database) the delivery thread starts now, whether or not subscriptions are stored,
    /// since another instance may create them: each time this instance becomes the writer it
    /// starts every stored subscription from its acknowledged revision.
    ///
    /// # Errors
    /// The delivery thread could not start.
    pub fn follow_leader(&self, leader: &Leader) -> std::io::Result<()> {
        *lock(&self.leader) = Some(leader.clone());
        if leader.holder().is_none() {
            if let Some(started) = self.started() {
                *lock(&started.leader) = Some(leader.clone());
            }
            return Ok(());
        }
        self.start()?.follow_leader(leader);
        Ok(())
    }

    /// The running subscriptions, if they started.
    pub fn started(&self) -> Option<&Arc<Subscriptions<S>>> {
        self.started.get()
    }

    /// [`Subscriptions::create`], starting the delivery first. Blocking: call it off the async
    /// threads.
    ///
    /// # Errors
    /// As [`Subscriptions::create`]; 400 `bad_callback` when the server has no
    /// `callback_hosts` (nothing starts then); 500 when the delivery thread cannot start.
    pub fn create(&self, new: NewSubscription, actor: &str) -> Result<SubscriptionView, ApiError> {
        if self.callback_hosts.is_empty() {
            return Err(ApiError::bad_request(
                "bad_callback",
                "the server has no callback_hosts: subscriptions are off",
            ));
        }
        self.start().map_err(ApiError::internal)?.create(new, actor)
    }

    /// [`Subscriptions::get`]; 404 when none started (none was stored at open and none was
    /// created since).
    ///
    /// # Errors
    /// 404 when there is no subscription `id`.
    pub fn get(&self, id: u64) -> Result<SubscriptionView, ApiError> {
        self.started().ok_or_else(|| not_found(id))?.get(id)
    }

    /// [`Subscriptions::delete`]; 404 when none started.
    ///
    /// # Errors
    /// 404 when there is no subscription `id`.
    pub fn delete(&self, id: u64) -> Result<(), ApiError> {
        self.started().ok_or_else(|| not_found(id))?.delete(id)
    }

    /// [`Subscriptions::metrics_text`], empty when none started.
    pub fn metrics_text(&self) -> String {
        self.started().map(|s| s.metrics_text()).unwrap_or_default()
    }
}

fn not_found(id: u64) -> ApiError {
    ApiError::not_found(format!("no subscription {id}"))
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn store_error(error: engine::Error) -> ApiError {
    ApiError::internal(error)
}

fn decode(consumer: &Consumer) -> Result<Record, ApiError> {
    serde_json::from_slice(&consumer.record).map_err(ApiError::internal)
}

/// Drops a handle of a task on the delivery runtime off its thread: it may be the last one,
/// and the engine it then drops (PostgreSQL's synchronous client) must not close its
/// connections on an async thread.
async fn release<T: Send + Sync + 'static>(handle: Arc<T>) {
    let _ = tokio::task::spawn_blocking(move || drop(handle)).await;
}

impl<S: ChangeSource> Subscriptions<S> {
    /// Starts delivery for every stored subscription, on a thread of its own (named
    /// `subscriptions`) running a single-threaded runtime, so deliveries never compete with
    /// the HTTP threads' runtimes.
    ///
    /// # Errors
    /// The thread or runtime could not be started, or the consumers could not be read.
    pub fn start(
        source: Arc<S>,
        consumers: Arc<Consumers>,
        callback_hosts: Vec<String>,
        delivery: Delivery,
    ) -> std::io::Result<Arc<Self>> {
        let always = Some(Leader::always());
        Self::start_with(source, consumers, callback_hosts, delivery, always)
    }

    /// [`Subscriptions::start`], delivering while `leader` leads (`None`: not before
    /// [`Subscriptions::follow_leader`]).
    ///
    /// # Errors
    /// As for [`Subscriptions::start`].
    pub fn start_with(
        source: Arc<S>,
        consumers: Arc<Consumers>,
        callback_hosts: Vec<String>,
        delivery: Delivery,
        leader: Option<Leader>,
    ) -> std::io::Result<Arc<Self>> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        std::thread::Builder::new()
            .name("subscriptions".into())
            .spawn(move || runtime.block_on(std::future::pending::<()>()))?;
        let client = reqwest::Client::builder()
            .timeout(delivery.timeout)
            .build()
            .map_err(std::io::Error::other)?;
        let subscriptions = Arc::new(Subscriptions {
            source,
            consumers,
            callback_hosts,
            delivery,
            runtime: handle,
            client,
            running: Mutex::new(HashMap::new()),
            leader: Mutex::new(leader),
        });
        if !subscriptions.may_deliver() {
            // Started by the election, when this instance becomes the writer.
            return Ok(subscriptions);
        }
        for consumer in subscriptions
            .consumers
            .list()
            .map_err(std::io::Error::other)?
        {
            if let Ok(record) = decode(&consumer) {
                subscriptions.spawn(consumer.id, record);
            }
        }
        Ok(subscriptions)
    }

    /// Whether this instance delivers now: the writer, or the one instance of an embedded
    /// store.
    fn may_deliver(&self) -> bool {
        lock(&self.leader).as_ref().is_some_and(Leader::is_leader)
    }

    /// Delivers while `leader` leads: a task on the delivery runtime watches the election and,
    /// each time this instance becomes the writer, starts every stored subscription afresh
    /// from its durable acknowledged revision (the previous writer's deliveries moved it, and
    /// it may have created or deleted subscriptions).
    pub fn follow_leader(self: &Arc<Self>, leader: &Leader) {
        *lock(&self.leader) = Some(leader.clone());
        let weak = Arc::downgrade(self);
        let leader = leader.clone();
        self.runtime.spawn(async move {
            let mut epochs = leader.watch();
            let mut leading = false;
            loop {
                if weak.strong_count() == 0 {
                    // The leader holds the engine: not dropped on this thread either.
                    let _ = tokio::task::spawn_blocking(move || drop(leader)).await;
                    return;
                }
                let now = leader.is_leader();
                if now && !leading {
                    if let Some(this) = weak.upgrade() {
                        this.restart_all().await;
                        release(this).await;
                    }
                }
                leading = now;
                tokio::select! {
                    changed = epochs.changed() => {
                        if changed.is_err() {
                            tokio::time::sleep(LEADER_CHECK_EVERY).await;
                        }
                    }
                    () = tokio::time::sleep(LEADER_CHECK_EVERY) => {}
                }
            }
        });
    }

    /// Stops every delivery of this instance and starts one per stored subscription, each
    /// from the revision its record says was acknowledged.
    async fn restart_all(self: &Arc<Self>) {
        let consumers = Arc::clone(&self.consumers);
        let stored = match Self::blocking(move || consumers.list()).await {
            Ok(stored) => stored,
            Err(error) => {
                tracing::warn!(%error, "the subscriptions could not be read; delivery waits for the next election");
                return;
            }
        };
        self.stop();
        for consumer in stored {
            if let Ok(record) = decode(&consumer) {
                self.spawn(consumer.id, record);
            }
        }
        tracing::info!(
            subscriptions = lock(&self.running).len(),
            "the writer delivers the subscriptions"
        );
    }

    fn check_callback(&self, callback: &str) -> Result<(), ApiError> {
        let bad = |why: &str| ApiError::bad_request("bad_callback", why.to_owned());
        let url = reqwest::Url::parse(callback).map_err(|_| bad("callback is not a URL"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(bad("callback must be an http:// or https:// URL"));
        }
        let host = url.host_str().ok_or_else(|| bad("callback has no host"))?;
        let with_port = url
            .port_or_known_default()
            .map(|port| format!("{host}:{port}"));
        let allowed = self
            .callback_hosts
            .iter()
            .any(|h| h == host || Some(h) == with_port.as_ref());
        if !allowed {
            return Err(bad(
                "callback host is not in the server's callback_hosts allowlist",
            ));
        }
        Ok(())
    }

    /// Validates and stores a subscription, and starts its delivery. Blocking (it writes the
    /// engine): call it off the async threads.
    ///
    /// # Errors
    /// 400 for an unknown filter or kind (`bad_query`), a callback outside the allowlist
    /// (`bad_callback`), an expiry not in the future (`bad_expires`), an `after` beyond the
    /// head (`beyond_head`); 410 `compacted` for an `after` older than the log keeps.
    pub fn create(
        self: &Arc<Self>,
        new: NewSubscription,
        actor: &str,
    ) -> Result<SubscriptionView, ApiError> {
        let pairs: Vec<(String, String)> = new.filter.clone().into_iter().collect();
        ChangesQuery::parse(self.source.as_ref(), &pairs)?;
        if new
            .filter
            .keys()
            .any(|k| matches!(k.as_str(), "after" | "limit" | "wait"))
        {
            return Err(ApiError::bad_request(
                "bad_query",
                "a subscription's filter takes kind and the feed's filters only",
            ));
        }
        self.check_callback(&new.callback)?;
        if new.expires <= unix_now() {
            return Err(ApiError::bad_request(
                "bad_expires",
                "expires must be in the future (Unix seconds)",
            ));
        }
        let head = *self.source.head().borrow();
        let after = new.after.unwrap_or(head);
        // The same checks as a read of the feed: beyond the head, or already pruned.
        self.source.read(after, 1)?;
        let record = Record {
            filter: new.filter,
            callback: new.callback,
            expires: new.expires,
            created_by: actor.to_owned(),
        };
        let bytes = serde_json::to_vec(&record).map_err(ApiError::internal)?;
        let id = self.consumers.create(&bytes, after).map_err(store_error)?;
        self.spawn(id, record);
        self.get(id)
    }

    /// The subscription `id`, with its progress.
    ///
    /// # Errors
    /// 404 when there is none.
    pub fn get(&self, id: u64) -> Result<SubscriptionView, ApiError> {
        let consumer = self
            .consumers
            .get(id)
            .map_err(store_error)?
            .ok_or_else(|| not_found(id))?;
        let record = decode(&consumer)?;
        let status = lock(&self.running)
            .get(&id)
            .map(|(_, status)| lock(status).clone())
            .unwrap_or(Status {
                state: if self.may_deliver() {
                    "expired"
                } else {
                    "standby"
                },
                last_error: None,
            });
        let head = *self.source.head().borrow();
        Ok(SubscriptionView {
            id,
            filter: record.filter,
            callback: record.callback,
            expires: record.expires,
            created_by: record.created_by,
            acked: consumer.acked,
            lag: head.saturating_sub(consumer.acked),
            state: status.state,
            last_error: status.last_error,
        })
    }

    /// Stops and removes the subscription `id`.
    ///
    /// # Errors
    /// 404 when there is none.
    pub fn delete(&self, id: u64) -> Result<(), ApiError> {
        if let Some((stop, _)) = lock(&self.running).remove(&id) {
            stop.send_replace(true);
        }
        if self.consumers.remove(id).map_err(store_error)? {
            Ok(())
        } else {
            Err(not_found(id))
        }
    }

    /// Stops every delivery (for a shutdown; the records stay, and a new
    /// [`Subscriptions::start`] resumes them after their acknowledged revisions).
    pub fn stop(&self) {
        for (_, (stop, _)) in lock(&self.running).drain() {
            stop.send_replace(true);
        }
    }

    /// The lag of every subscription in the Prometheus text format, for `/metrics`.
    pub fn metrics_text(&self) -> String {
        let head = *self.source.head().borrow();
        let mut text = String::from(
            "# HELP feed_subscription_lag Revisions a subscription has not acknowledged.\n\
             # TYPE feed_subscription_lag gauge\n",
        );
        for consumer in self.consumers.list().unwrap_or_default() {
            let _ = writeln!(
                text,
                "feed_subscription_lag{{subscription=\"{}\"}} {}",
                consumer.id,
                head.saturating_sub(consumer.acked)
            );
        }
        text
    }

    fn spawn(self: &Arc<Self>, id: u64, record: Record) {
        let (stop, stopped) = watch::channel(false);
        let status = Arc::new(Mutex::new(Status {
            state: "delivering",
            last_error: None,
        }));
        lock(&self.running).insert(id, (stop, Arc::clone(&status)));
        let this = Arc::clone(self);
        self.runtime.spawn(async move {
            this.deliver(id, record, status, stopped).await;
            release(this).await;
        });
    }

    async fn blocking<T: Send + 'static>(
        f: impl FnOnce() -> Result<T, engine::Error> + Send + 'static,
    ) -> Result<T, String> {
        match tokio::task::spawn_blocking(f).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(error.to_string()),
            Err(error) => Err(error.to_string()),
        }
    }

    async fn deliver(
        self: &Arc<Self>,
        id: u64,
        record: Record,
        status: Arc<Mutex<Status>>,
        mut stopped: watch::Receiver<bool>,
    ) {
        let set = |state: &'static str, error: Option<String>| {
            *lock(&status) = Status {
                state,
                last_error: error,
            };
        };
        let consumers = Arc::clone(&self.consumers);
        let Ok(Some(consumer)) = Self::blocking(move || consumers.get(id)).await else {
            return;
        };
        let query = ChangesQuery {
            after: consumer.acked,
            limit: DEFAULT_LIMIT,
            wait: Duration::ZERO,
            filters: record.filter.clone(),
        };
        // At most ten years ahead, so the deadline cannot overflow the clock.
        let remaining = u64::try_from(record.expires.saturating_sub(unix_now())).unwrap_or(0);
        let expires =
            tokio::time::Instant::now() + Duration::from_secs(remaining.min(10 * 365 * 24 * 3600));
        let mut head = self.source.head();
        let mut cursor = consumer.acked;
        let mut acked = consumer.acked;
        let mut last_idle_ack = tokio::time::Instant::now();
        let Delivery {
            first_backoff,
            max_backoff,
            ..
        } = self.delivery;
        let mut backoff = first_backoff;
        loop {
            // Stopped, or the service (holder of the stop switch) is gone.
            if *stopped.borrow() || stopped.has_changed().is_err() {
                return;
            }
            // Another instance writes now: it delivers, from the durable cursor.
            if !self.may_deliver() {
                set("standby", None);
                return;
            }
            if tokio::time::Instant::now() >= expires {
                set("expired", None);
                let consumers = Arc::clone(&self.consumers);
                let _ = Self::blocking(move || consumers.remove(id)).await;
                lock(&self.running).remove(&id);
                return;
            }
            let page = match read_page(&self.source, &query, cursor).await {
                Ok(page) => page,
                Err(error) if error.status() == StatusCode::GONE => {
                    set("compacted", Some(error.code().to_owned()));
                    return;
                }
                Err(error) => {
                    set("retrying", Some(error.code().to_owned()));
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(max_backoff);
                    continue;
                }
            };
            if page.changes.is_empty() {
                cursor = page.next;
                let idle_for = last_idle_ack.elapsed();
                if cursor > acked && idle_for >= IDLE_ACK_EVERY {
                    let consumers = Arc::clone(&self.consumers);
                    if Self::blocking(move || consumers.ack(id, cursor))
                        .await
                        .is_ok()
                    {
                        acked = cursor;
                        last_idle_ack = tokio::time::Instant::now();
                    }
                }
                if page.next < page.head {
                    continue;
                }
                head.mark_unchanged();
                if *head.borrow() > cursor {
                    continue;
                }
                tokio::select! {
                    _ = head.changed() => {}
                    _ = stopped.changed() => {}
                    () = tokio::time::sleep_until(expires) => {}
                    () = tokio::time::sleep(IDLE_ACK_EVERY) => {}
                }
                continue;
            }
            let body = serde_json::json!({
                "subscription": id,
                "changes": page.changes,
                "next": page.next,
            });
            let answer = self.client.post(&record.callback).json(&body).send().await;
            match answer {
                Ok(response) if response.status().is_success() => {
                    let next = page.next;
                    let consumers = Arc::clone(&self.consumers);
                    match Self::blocking(move || consumers.ack(id, next)).await {
                        Ok(true) => {
                            cursor = next;
                            acked = next;
                            backoff = first_backoff;
                            set("delivering", None);
                        }
                        // Deleted meanwhile.
                        Ok(false) => return,
                        Err(error) => set("retrying", Some(error)),
                    }
                }
                Ok(response) => {
                    set(
                        "retrying",
                        Some(format!("callback answered {}", response.status())),
                    );
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        _ = stopped.changed() => {}
                    }
                    backoff = (backoff * 2).min(max_backoff);
                }
                Err(error) => {
                    set("retrying", Some(format!("callback failed: {error}")));
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        _ = stopped.changed() => {}
                    }
                    backoff = (backoff * 2).min(max_backoff);
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "subscriptions_tests.rs"]
mod tests;
