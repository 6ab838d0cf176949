//! Usage statistics: `GET /files/{id}/downloads` and `GET /buckets/{bucket}/downloads`, one
//! count per day of `from..=to` (`YYYY-MM-DD`, UTC; at most 366 days; by default the 30 days
//! up to today).

use axum::extract::State;
use blobstore::{Day, Store};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::common::error::{Path, Query};
use crate::common::ApiError;
use crate::librarian::Librarian;

use super::{parse_bucket, parse_id, store_error};

/// The days asked for when `from` is not given: 30 up to `to`.
const DEFAULT_DAYS: u32 = 30;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DayRange {
    from: Option<String>,
    to: Option<String>,
}

impl DayRange {
    fn resolve(&self, store: &Store) -> Result<(Day, Day), ApiError> {
        let parse = |text: &str| {
            text.parse::<Day>().map_err(|_| {
                ApiError::bad_request("bad_query", "a day is YYYY-MM-DD, from 1970-01-01")
            })
        };
        let to = match &self.to {
            Some(text) => parse(text)?,
            None => store.now().day(),
        };
        let from = match &self.from {
            Some(text) => parse(text)?,
            None => Day(to.0.saturating_sub(DEFAULT_DAYS - 1)),
        };
        Ok((from, to))
    }
}

fn days_json(days: &[(Day, u64)]) -> Value {
    let total: u64 = days.iter().map(|(_, n)| n).sum();
    json!({
        "from": days.first().map(|(d, _)| d.to_string()),
        "to": days.last().map(|(d, _)| d.to_string()),
        "total": total,
        "days": days
            .iter()
            .map(|(day, n)| json!({"day": day.to_string(), "downloads": n}))
            .collect::<Vec<_>>(),
    })
}

/// `GET /files/{id}/downloads?from=DAY&to=DAY`.
pub(crate) async fn file_downloads(
    State(state): State<Librarian>,
    Path(id): Path<String>,
    Query(range): Query<DayRange>,
) -> Result<axum::Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    state
        .blocking(move |store| {
            let (from, to) = range.resolve(store)?;
            let days = store.file_downloads(id, from, to).map_err(store_error)?;
            let mut body = days_json(&days);
            body["file"] = id.0.into();
            Ok(axum::Json(body))
        })
        .await
}

/// `GET /buckets/{bucket}/downloads?from=DAY&to=DAY`.
pub(crate) async fn bucket_downloads(
    State(state): State<Librarian>,
    Path(bucket): Path<String>,
    Query(range): Query<DayRange>,
) -> Result<axum::Json<Value>, ApiError> {
    let bucket = parse_bucket(&bucket)?;
    state
        .blocking(move |store| {
            let (from, to) = range.resolve(store)?;
            let days = store
                .bucket_downloads(&bucket, from, to)
                .map_err(store_error)?;
            let mut body = days_json(&days);
            body["bucket"] = bucket.as_str().into();
            Ok(axum::Json(body))
        })
        .await
}
