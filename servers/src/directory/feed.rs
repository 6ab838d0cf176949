//! The directory's change feed over HTTP: `GET /changes`, the team and person histories, and
//! the subscriptions, over the graph store's one change log (teams, package sets and
//! repositories write into it).
//!
//! Every payload of the log is shown as a `serde_json::Value`, whichever store wrote it
//! (graphdb's `Change`, stored binary and decoded by graphdb; the commit graphs' push and
//! branch events, stored as JSON): they share the envelope
//! `kind`, `time_us`, `actor`, and the filters look at top-level fields only, so this module
//! needs no knowledge of each kind's shape.

use std::sync::{Arc, LazyLock};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use engine::Consumers;
use graphdb::{GraphStore, HistoryOf, RawHistoryPage};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::watch;

use super::handlers::{check_names, graph_error};
use super::repos::commit_error;
use super::Directory;
use crate::common::error::{Json, Path, Query};
use crate::common::feed::{self, feed_error, head_channel, ChangeSource};
use crate::common::subscriptions::{LazySubscriptions, NewSubscription};
use crate::common::{Actor, ApiError, SetupError};

/// The kinds the commit graphs record in the same log.
const COMMIT_KINDS: &[&str] = &[
    "commits.pushed",
    "branch.set",
    "branch.deleted",
    "import.repo",
];

/// Every kind of the directory's feed: graphdb's and the commit graphs'.
static KINDS: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
    graphdb::ChangeKind::ALL
        .iter()
        .map(|k| k.as_str())
        .chain(COMMIT_KINDS.iter().copied())
        .collect()
});

/// The directory's [`ChangeSource`]: the graph store's log, events as JSON values with their
/// `revision`.
pub struct DirectoryFeed {
    store: Arc<GraphStore>,
    head: watch::Receiver<u64>,
}

impl std::fmt::Debug for DirectoryFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectoryFeed")
            .field("head", &*self.head.borrow())
            .finish_non_exhaustive()
    }
}

impl DirectoryFeed {
    /// The feed of `store`'s change log, following its durable head.
    pub fn new(store: Arc<GraphStore>) -> Arc<Self> {
        let log = store.change_log();
        let (listener, head) = head_channel(log.head());
        log.subscribe(listener);
        Arc::new(DirectoryFeed { store, head })
    }
}

/// An event as the feed shows it: its payload's fields and its `revision`. A payload that is
/// not a JSON object (no writer of the log makes one) is shown as `kind: "unknown"`.
fn event(revision: u64, payload: &[u8]) -> Value {
    // The commit graphs' events (and the teams' events stored before 2026-12-05) are JSON,
    // but for their binary pushes (since 2026-12-05); the teams' events are stored binary,
    // decoded by graphdb.
    let decoded = match payload.first() {
        Some(b'{') => serde_json::from_slice::<Value>(payload).ok(),
        Some(&commitgraph::PUSHED_V1) => commitgraph::RepoEvent::decode(payload)
            .ok()
            .flatten()
            .and_then(|event| serde_json::to_value(event).ok()),
        _ => graphdb::Change::from_payload(payload).and_then(|c| serde_json::to_value(c).ok()),
    };
    let mut value = match decoded {
        Some(Value::Object(map)) => Value::Object(map),
        _ => json!({ "kind": "unknown" }),
    };
    value["revision"] = revision.into();
    value
}

fn field_is(event: &Value, field: &str, value: &str) -> bool {
    event.get(field).and_then(Value::as_str) == Some(value)
}

impl ChangeSource for DirectoryFeed {
    type Event = Value;

    fn filters(&self) -> &'static [&'static str] {
        &["team", "person", "repo"]
    }

    fn kinds(&self) -> &'static [&'static str] {
        &KINDS
    }

    fn read(&self, after: u64, limit: usize) -> Result<Vec<Value>, ApiError> {
        let events = self
            .store
            .change_log()
            .read(after, limit)
            .map_err(feed_error)?;
        Ok(events
            .iter()
            .map(|(r, payload)| event(*r, payload))
            .collect())
    }

    fn revision(event: &Value) -> u64 {
        event["revision"].as_u64().unwrap_or(0)
    }

    fn kind(event: &Value) -> &str {
        event["kind"].as_str().unwrap_or("unknown")
    }

    /// `team`: the event's team (a team's own events and its memberships), or the team as a
    /// member of another; `person`: the member, the person created or removed, or the actor;
    /// `repo`: the repository.
    fn matches(event: &Value, name: &str, value: &str) -> bool {
        match name {
            "team" => field_is(event, "team", value) || field_is(event, "member", value),
            "person" => ["member", "person", "actor"]
                .iter()
                .any(|field| field_is(event, field, value)),
            "repo" => field_is(event, "repo", value),
            _ => false,
        }
    }

    fn head(&self) -> watch::Receiver<u64> {
        self.head.clone()
    }
}

/// The directory's subscriptions, started when first needed.
pub type FeedSubscriptions = LazySubscriptions<DirectoryFeed>;

/// The subscriptions of `store`'s feed: their durable records are in the `consumers` keyspace
/// of its engine, written through its group commit. Stored ones start delivering at once.
///
/// # Errors
/// The engine's error reading the records, or the delivery thread's.
pub(crate) fn open_subscriptions(
    store: &GraphStore,
    feed: Arc<DirectoryFeed>,
    callback_hosts: Vec<String>,
) -> Result<Arc<FeedSubscriptions>, SetupError> {
    let committer = Arc::clone(store.change_log().committer());
    let keyspace = store
        .engine()
        .keyspace("consumers")
        .map_err(SetupError::Consumers)?;
    let consumers = Consumers::open(committer, keyspace).map_err(SetupError::Consumers)?;
    let shared = store.engine().leadership().is_some();
    LazySubscriptions::open(feed, Arc::new(consumers), callback_hosts, shared)
}

/// `GET /changes`: pages, long polls (`wait=`) and `text/event-stream`; filters `team`,
/// `person`, `repo`, `kind`.
pub(crate) async fn changes(
    State(state): State<Directory>,
    Query(pairs): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    feed::changes(Arc::clone(&state.feed), &pairs, &headers).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HistoryQuery {
    before: Option<u64>,
    limit: Option<usize>,
}

#[derive(Clone, Copy, Debug)]
enum Whose {
    Team,
    Person,
}

async fn history(
    state: Directory,
    whose: Whose,
    name: String,
    query: HistoryQuery,
) -> Result<Response, ApiError> {
    let limit = match query.limit {
        None => feed::DEFAULT_LIMIT,
        Some(n) if (1..=feed::MAX_LIMIT).contains(&n) => n,
        Some(_) => {
            return Err(ApiError::bad_request(
                "bad_query",
                format!("limit must be 1 to {}", feed::MAX_LIMIT),
            ))
        }
    };
    let before = query.before.unwrap_or(u64::MAX);
    let page = state
        .blocking(move |d| {
            let of = match whose {
                Whose::Team => HistoryOf::Team(&name),
                Whose::Person => HistoryOf::Person(&name),
            };
            let graph = d
                .store
                .history_events(of, before, limit)
                .map_err(graph_error)?;
            let Whose::Person = whose else {
                return Ok(graph);
            };
            // The person's pushes and branch moves, from the commit graphs' own index.
            let pushes = d
                .commits
                .actor_history_before(&name, before, limit)
                .map_err(commit_error)?
                .into_iter()
                .map(|(revision, event)| (revision, event.encode()));
            Ok(merge_newest_first(graph, pushes, limit))
        })
        .await?;
    let changes: Vec<Value> = page
        .events
        .iter()
        .map(|(revision, payload)| event(*revision, payload))
        .collect();
    Ok(axum::Json(json!({ "changes": changes, "next": page.next })).into_response())
}

/// The newest `limit` events of a page and of other events below the same `before` (each
/// source read `limit` deep, so their newest `limit` together are the union's): `next` is the
/// page's oldest revision when the page is full, so the next page skips nothing of either.
fn merge_newest_first(
    page: RawHistoryPage,
    other: impl Iterator<Item = (u64, Vec<u8>)>,
    limit: usize,
) -> RawHistoryPage {
    let mut events = page.events;
    events.extend(other);
    events.sort_by_key(|(revision, _)| std::cmp::Reverse(*revision));
    events.dedup_by_key(|(revision, _)| *revision);
    events.truncate(limit);
    let next = (events.len() >= limit.max(1))
        .then(|| events.last().map(|(revision, _)| *revision))
        .flatten();
    RawHistoryPage { events, next }
}

/// `GET /teams/{team}/history?before=REV&limit=N`: newest first.
pub(crate) async fn team_history(
    State(state): State<Directory>,
    Path(team): Path<String>,
    Query(query): Query<HistoryQuery>,
) -> Result<Response, ApiError> {
    check_names(&[&team])?;
    history(state, Whose::Team, team, query).await
}

/// `GET /persons/{person}/history?before=REV&limit=N`: what was done to the person and what
/// they did (their pushes and branch moves included), newest first.
pub(crate) async fn person_history(
    State(state): State<Directory>,
    Path(person): Path<String>,
    Query(query): Query<HistoryQuery>,
) -> Result<Response, ApiError> {
    check_names(&[&person])?;
    history(state, Whose::Person, person, query).await
}

/// `POST /subscriptions`.
pub(crate) async fn create_subscription(
    State(state): State<Directory>,
    actor: Actor,
    Json(new): Json<NewSubscription>,
) -> Result<Response, ApiError> {
    let view = state
        .blocking(move |d| d.subscriptions.create(new, actor.as_str()))
        .await?;
    Ok((StatusCode::CREATED, axum::Json(view)).into_response())
}

/// `GET /subscriptions/{id}`.
pub(crate) async fn get_subscription(
    State(state): State<Directory>,
    Path(id): Path<u64>,
) -> Result<Response, ApiError> {
    let view = state.blocking(move |d| d.subscriptions.get(id)).await?;
    Ok(axum::Json(view).into_response())
}

/// `DELETE /subscriptions/{id}`.
pub(crate) async fn delete_subscription(
    State(state): State<Directory>,
    Path(id): Path<u64>,
) -> Result<StatusCode, ApiError> {
    state.blocking(move |d| d.subscriptions.delete(id)).await?;
    Ok(StatusCode::NO_CONTENT)
}
