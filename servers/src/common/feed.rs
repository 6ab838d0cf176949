//! The change feed over HTTP, shared by both services: who made a change ([`Actor`]), the
//! revision every write answers ([`Revision`]), and `GET /changes` as paged JSON, as a long
//! poll and as a `text/event-stream` ([`changes`]), over a store that implements
//! [`ChangeSource`].
//!
//! A page is read by scanning the store's events after the cursor and keeping those that
//! match the filters; a scan looks at no more than [`SCAN_BUDGET`] events per page, so a
//! rare filter cannot make one request read the whole log. The answer says how far it looked
//! (`next`): a client continues with `after=next` whether or not the page had matches.
//!
//! ```text
//! GET /changes?after=41&limit=100&wait=30&kind=file.created
//! -> {"changes": [{"revision": 42, ...}], "next": 42, "head": 42}
//! ```
//!
//! With `wait=SECS` (at most [`MAX_WAIT_SECS`]) and nothing new, the request waits until a
//! matching event is durable or the time is up (then it answers an empty page with
//! `next` at the head). With `Accept: text/event-stream` the answer is an endless stream of
//! `id: REV`, `event: KIND`, `data: JSON` records, resumed from `Last-Event-ID`; a comment
//! line every [`HEARTBEAT`] keeps proxies from closing it. Waiting costs a task parked on a
//! [`tokio::sync::watch`] channel of the store's durable head, no thread.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, IntoResponseParts, Response, ResponseParts};
use serde::Serialize;
use tokio::sync::watch;

use super::error::ApiError;

/// The header a trusted caller names the person it acts for with.
pub const ON_BEHALF_OF: HeaderName = HeaderName::from_static("x-on-behalf-of");
/// The header every write answers its revision in.
pub const X_REVISION: HeaderName = HeaderName::from_static("x-revision");
/// The longest `wait=` accepted.
pub const MAX_WAIT_SECS: u64 = 60;
/// The largest page.
pub const MAX_LIMIT: usize = 1000;
/// The page size when `limit` is not given.
pub const DEFAULT_LIMIT: usize = 100;
/// The most events one page looks at while filtering.
pub const SCAN_BUDGET: usize = 10_000;
/// How often an idle event stream sends a comment line.
pub const HEARTBEAT: Duration = Duration::from_secs(15);

/// Who made a change: the authenticated Basic user, the person a trusted caller acts for
/// (`X-On-Behalf-Of`), or `anonymous` in development mode without credentials.
///
/// The writer middleware ([`super::access::require_writer`]) decides it and puts it into the
/// request's extensions; handlers extract it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Actor(pub String);

impl Actor {
    /// The name recorded when no credentials were sent (development mode).
    pub const ANONYMOUS: &'static str = "anonymous";

    /// The actor's name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Actor {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Actor>()
            .cloned()
            .ok_or_else(|| ApiError::internal("a write route without the writer middleware"))
    }
}

/// Checks an `X-On-Behalf-Of` value: a person's name, 1-255 bytes, no control characters.
///
/// # Errors
/// 400 `bad_on_behalf_of`.
pub fn parse_on_behalf_of(value: &HeaderValue) -> Result<String, ApiError> {
    let bad = || {
        ApiError::bad_request(
            "bad_on_behalf_of",
            "X-On-Behalf-Of must be a name of 1 to 255 bytes without control characters",
        )
    };
    let name = value.to_str().map_err(|_| bad())?.trim();
    if name.is_empty() || name.len() > 255 || name.chars().any(char::is_control) {
        return Err(bad());
    }
    Ok(name.to_owned())
}

/// The revision a write was recorded at: as a response part it sets `X-Revision`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Revision(pub u64);

impl IntoResponseParts for Revision {
    type Error = Infallible;

    fn into_response_parts(self, mut res: ResponseParts) -> Result<ResponseParts, Self::Error> {
        res.headers_mut()
            .insert(X_REVISION, HeaderValue::from(self.0));
        Ok(res)
    }
}

/// A store's change feed as the HTTP layer needs it. Calls that read run on a blocking
/// thread, so they may read the engine.
pub trait ChangeSource: Send + Sync + 'static {
    /// The store's event, serialised as the JSON of one change (with its `revision`).
    type Event: Serialize + Send + Sync + 'static;

    /// The filter names this feed accepts besides `kind` (e.g. `bucket`, `file`, `person`).
    fn filters(&self) -> &'static [&'static str];
    /// The kinds of event this feed has (`kind=` must be one of them).
    fn kinds(&self) -> &'static [&'static str];
    /// Up to `limit` events after `after`, oldest first, never past the durable head.
    ///
    /// # Errors
    /// 410 (`compacted`, with `oldest`) when events after `after` were pruned, 400
    /// (`beyond_head`) when `after` is newer than the head, or the store's error.
    fn read(&self, after: u64, limit: usize) -> Result<Vec<Self::Event>, ApiError>;
    /// The revision of an event.
    fn revision(event: &Self::Event) -> u64;
    /// The kind of an event (one of [`ChangeSource::kinds`]).
    fn kind(event: &Self::Event) -> &str;
    /// Whether an event matches the filter `name=value` (`name` is one of
    /// [`ChangeSource::filters`]; `kind` is matched by the caller).
    fn matches(event: &Self::Event, name: &str, value: &str) -> bool;
    /// The durable head, followed as it moves.
    fn head(&self) -> watch::Receiver<u64>;
}

/// A watch channel fed by a store's head listener (`ChangeLog::subscribe`): hand the
/// returned closure to the store, keep the receiver for [`ChangeSource::head`].
pub fn head_channel(initial: u64) -> (Box<dyn Fn(u64) + Send + Sync>, watch::Receiver<u64>) {
    let (sender, receiver) = watch::channel(initial);
    let listener = move |head: u64| {
        sender.send_if_modified(|current| {
            let newer = head > *current;
            if newer {
                *current = head;
            }
            newer
        });
    };
    (Box::new(listener), receiver)
}

/// Maps the change log's refusal to the HTTP contract: 410 `compacted` (with the oldest kept
/// revision, so a follower knows to resynchronise) or 400 `beyond_head`.
pub fn feed_error(error: engine::FeedError) -> ApiError {
    match error {
        engine::FeedError::Compacted { after, oldest } => ApiError::new(
            StatusCode::GONE,
            "compacted",
            format!("events after revision {after} were pruned; the oldest kept is {oldest}"),
        )
        .with_detail("oldest", oldest.into()),
        engine::FeedError::BeyondHead { after, head } => ApiError::bad_request(
            "beyond_head",
            format!("revision {after} is beyond the newest revision {head}"),
        )
        .with_detail("head", head.into()),
        other => ApiError::internal(other),
    }
}

/// What `GET /changes` was asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangesQuery {
    /// Events after this revision.
    pub after: u64,
    /// At most this many events per page.
    pub limit: usize,
    /// How long to wait for a first matching event.
    pub wait: Duration,
    /// `name=value` filters, all of which must match (`kind` among them).
    pub filters: BTreeMap<String, String>,
}

fn bad_query(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("bad_query", message)
}

fn parse_number(name: &str, value: &str) -> Result<u64, ApiError> {
    value.parse().map_err(|_| {
        bad_query(format!(
            "{name} must be a non-negative integer, not {value:?}"
        ))
    })
}

impl ChangesQuery {
    /// Parses the query pairs against `source`'s filters and kinds.
    ///
    /// # Errors
    /// 400 `bad_query` for an unknown parameter or kind, a repeated one, a non-numeric
    /// revision, a limit of 0 or over [`MAX_LIMIT`], a wait over [`MAX_WAIT_SECS`].
    pub fn parse<S: ChangeSource>(
        source: &S,
        pairs: &[(String, String)],
    ) -> Result<Self, ApiError> {
        let mut query = ChangesQuery {
            after: 0,
            limit: DEFAULT_LIMIT,
            wait: Duration::ZERO,
            filters: BTreeMap::new(),
        };
        let mut seen = std::collections::BTreeSet::new();
        for (name, value) in pairs {
            if !seen.insert(name.as_str()) {
                return Err(bad_query(format!("{name} is given twice")));
            }
            match name.as_str() {
                "after" => query.after = parse_number(name, value)?,
                "limit" => {
                    let limit = parse_number(name, value)?;
                    if limit == 0 || limit > MAX_LIMIT as u64 {
                        return Err(bad_query(format!("limit must be 1 to {MAX_LIMIT}")));
                    }
                    query.limit = limit as usize;
                }
                "wait" => {
                    let secs = parse_number(name, value)?;
                    if secs > MAX_WAIT_SECS {
                        return Err(bad_query(format!(
                            "wait must be at most {MAX_WAIT_SECS} seconds"
                        )));
                    }
                    query.wait = Duration::from_secs(secs);
                }
                "kind" => {
                    if !source.kinds().contains(&value.as_str()) {
                        return Err(bad_query(format!(
                            "unknown kind {value:?}; the kinds are {}",
                            source.kinds().join(", ")
                        )));
                    }
                    query.filters.insert(name.clone(), value.clone());
                }
                other if source.filters().contains(&other) => {
                    query.filters.insert(name.clone(), value.clone());
                }
                other => {
                    return Err(bad_query(format!(
                        "unknown parameter {other:?}; the filters are kind, {}",
                        source.filters().join(", ")
                    )))
                }
            }
        }
        Ok(query)
    }

    fn matches<S: ChangeSource>(&self, event: &S::Event) -> bool {
        self.filters
            .iter()
            .all(|(name, value)| match name.as_str() {
                "kind" => S::kind(event) == value,
                _ => S::matches(event, name, value),
            })
    }
}

/// One page of the feed.
#[derive(Debug, Serialize)]
pub struct ChangesPage<E> {
    /// The matching events, oldest first.
    pub changes: Vec<E>,
    /// The revision to continue after: the last event looked at (matching or not).
    pub next: u64,
    /// The durable head when the page was read.
    pub head: u64,
}

/// One page of the feed after `after`, read on a blocking thread.
pub(crate) async fn read_page<S: ChangeSource>(
    source: &Arc<S>,
    query: &ChangesQuery,
    after: u64,
) -> Result<ChangesPage<S::Event>, ApiError> {
    let source = Arc::clone(source);
    let query = query.clone();
    tokio::task::spawn_blocking(move || {
        let head = *source.head().borrow();
        let mut page = ChangesPage {
            changes: Vec::new(),
            next: after,
            head,
        };
        let mut looked_at = 0;
        'scan: while page.changes.len() < query.limit && looked_at < SCAN_BUDGET {
            let want = (SCAN_BUDGET - looked_at).min(MAX_LIMIT);
            let events = source.read(page.next, want)?;
            if events.is_empty() {
                break;
            }
            for event in events {
                looked_at += 1;
                page.next = S::revision(&event);
                if query.matches::<S>(&event) {
                    page.changes.push(event);
                    if page.changes.len() == query.limit {
                        break 'scan;
                    }
                }
            }
        }
        page.head = page.head.max(page.next);
        Ok(page)
    })
    .await
    .map_err(ApiError::internal)?
}

/// Answers `GET /changes`: a page, a long poll, or (with `Accept: text/event-stream`) a
/// stream. `pairs` are the query's pairs, `headers` the request's (`Accept`,
/// `Last-Event-ID`).
///
/// # Errors
/// The query's 400s, and the store's 410/400 for a revision outside the log.
pub async fn changes<S: ChangeSource>(
    source: Arc<S>,
    pairs: &[(String, String)],
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let mut query = ChangesQuery::parse(source.as_ref(), pairs)?;
    if wants_event_stream(headers) {
        if let Some(last) = headers.get("last-event-id") {
            let value = last
                .to_str()
                .map_err(|_| bad_query("Last-Event-ID must be a revision"))?;
            query.after = parse_number("Last-Event-ID", value.trim())?;
        }
        // Check the starting point now, so a bad one is a plain 400/410, not a broken stream.
        read_page(
            &source,
            &ChangesQuery {
                limit: 1,
                ..query.clone()
            },
            query.after,
        )
        .await?;
        return Ok(event_stream(source, query));
    }
    let mut head = source.head();
    let deadline = tokio::time::Instant::now() + query.wait;
    let mut after = query.after;
    loop {
        let page = read_page(&source, &query, after).await?;
        if !page.changes.is_empty() || tokio::time::Instant::now() >= deadline {
            return Ok(axum::Json(page).into_response());
        }
        after = page.next;
        // Nothing matched up to the head: wait for the head to move past what was read.
        head.mark_unchanged();
        if *head.borrow() > after {
            continue;
        }
        match tokio::time::timeout_at(deadline, head.changed()).await {
            // The head moved: read again.
            Ok(Ok(())) => {}
            // Time is up, or the store is gone: answer the empty page.
            _ => return Ok(axum::Json(page).into_response()),
        }
    }
}

fn wants_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|v| v.trim().starts_with("text/event-stream"))
}

fn sse_record<S: ChangeSource>(event: &S::Event) -> String {
    let data = serde_json::to_string(event).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    format!(
        "id: {}\nevent: {}\ndata: {data}\n\n",
        S::revision(event),
        S::kind(event)
    )
}

fn event_stream<S: ChangeSource>(source: Arc<S>, query: ChangesQuery) -> Response {
    // A task writes records into a small channel; the body reads it. When the client goes
    // away the body is dropped, the send fails, and the task ends.
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<String, Infallible>>(16);
    tokio::spawn(async move {
        let mut head = source.head();
        let mut after = query.after;
        loop {
            let page = match read_page(&source, &query, after).await {
                Ok(page) => page,
                Err(error) => {
                    let record = format!("event: error\ndata: {}\n\n", error.code());
                    let _ = sender.send(Ok(record)).await;
                    return;
                }
            };
            after = page.next;
            for event in &page.changes {
                if sender.send(Ok(sse_record::<S>(event))).await.is_err() {
                    return;
                }
            }
            if page.next < page.head {
                continue;
            }
            head.mark_unchanged();
            if *head.borrow() > after {
                continue;
            }
            tokio::select! {
                changed = head.changed() => if changed.is_err() { return },
                () = tokio::time::sleep(HEARTBEAT) => {
                    if sender.send(Ok(": heartbeat\n\n".to_owned())).await.is_err() {
                        return;
                    }
                }
                () = sender.closed() => return,
            }
        }
    });
    let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|item| (item, receiver))
    });
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

#[cfg(test)]
#[path = "feed_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "test_source.rs"]
pub(crate) mod test_source;
