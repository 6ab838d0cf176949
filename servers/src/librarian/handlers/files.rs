//! The routes of files and buckets: listings, metadata, quotas, updates, deletions, tokens
//! and digest search.

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use blobstore::{BucketName, Digest, Visibility};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::common::error::{Json, Path, Query};
use crate::common::feed::{Actor, Revision};
use crate::common::ApiError;
use crate::librarian::Librarian;

use super::{describe, expiry_from_secs, file_url, parse_bucket, parse_id, store_error};

/// The most files a listing page or a search returns.
const MAX_PAGE: usize = 1000;

#[derive(Debug, Deserialize)]
pub(crate) struct PageQuery {
    after: Option<String>,
    limit: Option<usize>,
}

/// `GET /buckets/{bucket}/files`.
pub(crate) async fn list_bucket(
    State(state): State<Librarian>,
    Path(bucket): Path<String>,
    Query(query): Query<PageQuery>,
) -> Result<axum::Json<Value>, ApiError> {
    let bucket = parse_bucket(&bucket)?;
    let after = query.after.as_deref().map(parse_id).transpose()?;
    let limit = query.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::bad_request(
            "bad_query",
            format!("limit must be 1 to {MAX_PAGE}"),
        ));
    }
    state
        .blocking(move |store| {
            let page = store
                .list_bucket(&bucket, after, limit)
                .map_err(store_error)?;
            let files = page
                .files
                .iter()
                .map(|record| describe(store, record))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(axum::Json(json!({
                "files": files,
                "next": page.next.map(|id| id.to_string()),
            })))
        })
        .await
}

fn bucket_json(bucket: &BucketName, stats: &blobstore::BucketStats) -> Value {
    json!({
        "bucket": bucket.as_str(),
        "files": stats.files,
        "logical_bytes": stats.logical_bytes,
        "unique_bytes": stats.unique_bytes,
        "quota_bytes": stats.quota,
    })
}

/// `GET /buckets/{bucket}`.
pub(crate) async fn bucket_stats(
    State(state): State<Librarian>,
    Path(bucket): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    let bucket = parse_bucket(&bucket)?;
    state
        .blocking(move |store| {
            let stats = store.bucket_stats(&bucket).map_err(store_error)?;
            Ok(axum::Json(bucket_json(&bucket, &stats)))
        })
        .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct QuotaBody {
    quota_bytes: Option<u64>,
}

/// `PUT /buckets/{bucket}`: sets (or with `null` removes) the quota.
pub(crate) async fn set_quota(
    State(state): State<Librarian>,
    actor: Actor,
    Path(bucket): Path<String>,
    Json(body): Json<QuotaBody>,
) -> Result<(Revision, axum::Json<Value>), ApiError> {
    let bucket = parse_bucket(&bucket)?;
    state
        .blocking(move |store| {
            let revision = store
                .set_quota(&bucket, body.quota_bytes, actor.as_str())
                .map_err(store_error)?;
            let stats = store.bucket_stats(&bucket).map_err(store_error)?;
            let mut answer = bucket_json(&bucket, &stats);
            answer["revision"] = revision.into();
            Ok((Revision(revision), axum::Json(answer)))
        })
        .await
}

/// `GET /files/{id}`.
pub(crate) async fn file_metadata(
    State(state): State<Librarian>,
    Path(id): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    state
        .blocking(move |store| {
            let record = store.file(id).map_err(store_error)?;
            let mut file = describe(store, &record)?;
            let usage = store.download_summary(id).map_err(store_error)?;
            file["downloads"] = usage.total.into();
            file["last_downloaded"] = usage.last_day.map(|day| day.to_string()).into();
            Ok(axum::Json(file))
        })
        .await
}

/// `DELETE /files/{id}`.
pub(crate) async fn delete_file(
    State(state): State<Librarian>,
    actor: Actor,
    Path(id): Path<String>,
) -> Result<(Revision, StatusCode), ApiError> {
    let id = parse_id(&id)?;
    let deleted = state
        .blocking(move |store| store.delete_file(id, actor.as_str()).map_err(store_error))
        .await?;
    Ok((Revision(deleted.revision), StatusCode::NO_CONTENT))
}

/// The body of `PATCH /files/{id}`: the fields to change, each optional.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileChanges {
    /// Absent: unchanged; `null`: never expires; a number: Unix seconds.
    #[serde(default, deserialize_with = "present")]
    expires: Option<Option<i64>>,
    /// Absent: unchanged; `null` is refused (the OpenAPI document says boolean).
    #[serde(default, deserialize_with = "boolean")]
    restricted: Option<bool>,
}

/// A field that, when present, must be a boolean (not `null`).
fn boolean<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<bool>, D::Error> {
    bool::deserialize(deserializer).map(Some)
}

/// Tells a field given as `null` (`Some(None)`) from one left out (`None`).
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// `PATCH /files/{id}`: changes a file's expiry and/or restricted flag, both in one batch;
/// answers the record.
pub(crate) async fn update_file(
    State(state): State<Librarian>,
    actor: Actor,
    Path(id): Path<String>,
    Json(changes): Json<FileChanges>,
) -> Result<(Revision, axum::Json<Value>), ApiError> {
    let id = parse_id(&id)?;
    if changes.expires.is_none() && changes.restricted.is_none() {
        return Err(ApiError::bad_request(
            "bad_body",
            "nothing to change: give expires (Unix seconds or null) and/or restricted",
        ));
    }
    let expires = changes
        .expires
        .map(|expires| {
            expires
                .map(|secs| expiry_from_secs(secs, "bad_body"))
                .transpose()
        })
        .transpose()?;
    let update = blobstore::FileUpdate {
        expires,
        restricted: changes.restricted,
    };
    state
        .blocking(move |store| {
            let updated = store
                .update_file(id, update, actor.as_str())
                .map_err(store_error)?;
            let mut answer = describe(store, &updated.value)?;
            answer["revision"] = updated.revision.into();
            Ok((Revision(updated.revision), axum::Json(answer)))
        })
        .await
}

/// `DELETE /files/{id}/content`.
pub(crate) async fn delete_content(
    State(state): State<Librarian>,
    actor: Actor,
    Path(id): Path<String>,
) -> Result<(Revision, StatusCode), ApiError> {
    let id = parse_id(&id)?;
    let cut = state
        .blocking(move |store| {
            store
                .delete_content(id, actor.as_str())
                .map_err(store_error)
        })
        .await?;
    Ok((Revision(cut.revision), StatusCode::NO_CONTENT))
}

#[derive(Debug, Deserialize)]
pub(crate) struct TokenQuery {
    ttl: Option<u64>,
}

/// `POST /files/{id}/token?ttl=SECONDS`.
pub(crate) async fn issue_token(
    State(state): State<Librarian>,
    Path(id): Path<String>,
    Query(query): Query<TokenQuery>,
) -> Result<axum::Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    let ttl = query
        .ttl
        .unwrap_or(blobstore::DEFAULT_TOKEN_LIFETIME.as_secs());
    if ttl == 0 || ttl > 366 * 86_400 {
        return Err(ApiError::bad_request(
            "bad_query",
            "ttl must be 1 to 31622400 seconds",
        ));
    }
    state
        .blocking(move |store| {
            let record = store.file(id).map_err(store_error)?;
            let token = store
                .issue_token(id, Some(Duration::from_secs(ttl)))
                .map_err(store_error)?;
            let expires = blobstore::Token::parse(&token)
                .map(|t| t.expires_secs)
                .map_err(ApiError::internal)?;
            Ok(axum::Json(json!({
                "token": token,
                "expires": expires,
                "url": format!("{}?token={token}", file_url(&record)),
            })))
        })
        .await
}

/// `GET /search?sha256=HEX` (or `blake3`, `sha1`, `md5`).
pub(crate) async fn search(
    State(state): State<Librarian>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<axum::Json<Value>, ApiError> {
    let mut digests = query
        .iter()
        .filter(|(k, _)| matches!(k.as_str(), "blake3" | "sha256" | "sha1" | "md5"));
    let (Some((algorithm, hex)), None) = (digests.next(), digests.next()) else {
        return Err(ApiError::bad_request(
            "bad_query",
            "give exactly one of blake3, sha256, sha1 or md5",
        ));
    };
    let digest = Digest::parse(algorithm, hex).map_err(|_| {
        ApiError::bad_request(
            "bad_digest",
            format!("{algorithm} is not valid hex of the right length"),
        )
    })?;
    state
        .blocking(move |store| {
            let mut files = Vec::new();
            for visibility in [Visibility::Public, Visibility::Restricted] {
                for id in store
                    .files_by_digest(&digest, visibility, MAX_PAGE)
                    .map_err(store_error)?
                {
                    match store.file(id) {
                        Ok(record) => files.push(describe(store, &record)?),
                        Err(blobstore::Error::NotFound { .. }) => {}
                        Err(error) => return Err(store_error(error)),
                    }
                }
            }
            Ok(axum::Json(json!({ "files": files })))
        })
        .await
}
