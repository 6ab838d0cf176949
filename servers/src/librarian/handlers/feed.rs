//! The change feed's routes: `GET /changes` (pages, long polls, event streams), the history
//! of a file, a bucket and a person, and callbacks (`/subscriptions`).

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use blobstore::Change;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::common::error::{Json, Path, Query};
use crate::common::feed::{changes as feed_changes, Actor, DEFAULT_LIMIT, MAX_LIMIT};
use crate::common::subscriptions::{NewSubscription, SubscriptionView};
use crate::common::ApiError;
use crate::librarian::Librarian;

use super::{parse_bucket, parse_id, store_error};

/// `GET /changes?after=REV&limit=N&wait=SECS` with the filters `bucket`, `file`, `person`,
/// `kind`; `Accept: text/event-stream` for a stream.
pub(crate) async fn changes(
    State(state): State<Librarian>,
    Query(pairs): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    feed_changes(state.feed.clone(), &pairs, &headers).await
}

/// The paging of a history: events after `after`, at most `limit`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HistoryQuery {
    after: Option<u64>,
    limit: Option<usize>,
}

impl HistoryQuery {
    fn page(&self) -> Result<(u64, usize), ApiError> {
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        if limit == 0 || limit > MAX_LIMIT {
            return Err(ApiError::bad_request(
                "bad_query",
                format!("limit must be 1 to {MAX_LIMIT}"),
            ));
        }
        Ok((self.after.unwrap_or(0), limit))
    }
}

/// A page of history: the events and the cursor of the next page (the last revision listed,
/// or `after` when there was none).
fn history_page(after: u64, changes: Vec<Change>) -> axum::Json<Value> {
    let next = changes.last().map_or(after, |change| change.revision);
    axum::Json(json!({ "changes": changes, "next": next }))
}

/// `GET /files/{id}/history`: what was done to the file, oldest first.
pub(crate) async fn file_history(
    State(state): State<Librarian>,
    Path(id): Path<String>,
    Query(query): Query<HistoryQuery>,
) -> Result<axum::Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    let (after, limit) = query.page()?;
    let changes = state
        .blocking(move |store| store.file_history(id, after, limit).map_err(store_error))
        .await?;
    Ok(history_page(after, changes))
}

/// `GET /buckets/{bucket}/history`: what was done to the bucket and its files, oldest first.
pub(crate) async fn bucket_history(
    State(state): State<Librarian>,
    Path(bucket): Path<String>,
    Query(query): Query<HistoryQuery>,
) -> Result<axum::Json<Value>, ApiError> {
    let bucket = parse_bucket(&bucket)?;
    let (after, limit) = query.page()?;
    let changes = state
        .blocking(move |store| {
            store
                .bucket_history(&bucket, after, limit)
                .map_err(store_error)
        })
        .await?;
    Ok(history_page(after, changes))
}

/// `GET /persons/{person}/history`: what the person did, oldest first.
pub(crate) async fn person_history(
    State(state): State<Librarian>,
    Path(person): Path<String>,
    Query(query): Query<HistoryQuery>,
) -> Result<axum::Json<Value>, ApiError> {
    let (after, limit) = query.page()?;
    let changes = state
        .blocking(move |store| {
            store
                .actor_history(&person, after, limit)
                .map_err(store_error)
        })
        .await?;
    Ok(history_page(after, changes))
}

fn parse_subscription(text: &str) -> Result<u64, ApiError> {
    text.parse()
        .map_err(|_| ApiError::bad_request("bad_id", "a subscription id is a decimal u64"))
}

/// `POST /subscriptions`: a filter, a callback URL and an expiry; 201 with the subscription.
pub(crate) async fn create_subscription(
    State(state): State<Librarian>,
    actor: Actor,
    Json(new): Json<NewSubscription>,
) -> Result<(StatusCode, axum::Json<SubscriptionView>), ApiError> {
    let subscriptions = state.subscriptions.clone();
    let view = state
        .blocking(move |_| subscriptions.create(new, actor.as_str()))
        .await?;
    Ok((StatusCode::CREATED, axum::Json(view)))
}

/// `GET /subscriptions/{id}`: the subscription with its progress (`acked`, `lag`, `state`).
pub(crate) async fn get_subscription(
    State(state): State<Librarian>,
    Path(id): Path<String>,
) -> Result<axum::Json<SubscriptionView>, ApiError> {
    let id = parse_subscription(&id)?;
    let subscriptions = state.subscriptions.clone();
    let view = state.blocking(move |_| subscriptions.get(id)).await?;
    Ok(axum::Json(view))
}

/// `DELETE /subscriptions/{id}`: stops and removes it.
pub(crate) async fn delete_subscription(
    State(state): State<Librarian>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = parse_subscription(&id)?;
    let subscriptions = state.subscriptions.clone();
    state.blocking(move |_| subscriptions.delete(id)).await?;
    Ok(StatusCode::NO_CONTENT)
}
