//! The librarian's handlers. Every store call runs on the blocking pool; a download of a
//! small file the store holds in memory (its hot-file cache) is answered on the async thread,
//! since that answer touches neither the engine nor the disk.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::str::FromStr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use blobstore::{
    Access, Blake3Hash, BlobInfo, BucketName, ContentState, Digest, FileId, FileRecord, SmallFile,
    Store, Timestamp, UploadRequest, Visibility,
};
use bytes::Bytes;
use http_body_util::BodyExt;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};

use super::http::{decide, etag, expected_digests, Decision, Expected};
use super::Librarian;
use crate::common::error::{Json, Path, Query};
use crate::common::feed::{Actor, Revision};
use crate::common::ApiError;

/// Content up to this size is read in one piece; larger content is streamed in chunks.
const WHOLE_READ_MAX: u64 = 256 << 10;
/// The chunk size of streamed downloads.
const STREAM_CHUNK: usize = 256 << 10;
/// Chunks buffered between the reading thread and the connection.
const STREAM_BUFFER: usize = 4;
/// Body frames buffered between the connection and the uploading thread. hyper's frames grow
/// with its read buffer (up to hundreds of KiB on a fast connection), and every upload in
/// flight holds this many: 2 keep the thread fed while 200 concurrent uploads stay within the
/// memory budget (benches/servers/RESULTS.md).
const UPLOAD_BUFFER: usize = 2;
/// The most files a listing page or a search returns.
const MAX_PAGE: usize = 1000;

/// The `Retry-After` of a 503 for an object store that is unavailable, in seconds.
pub(crate) const BACKEND_RETRY_AFTER_SECS: u32 = 10;

/// Maps a store error to the client's answer; internal causes are logged, never sent.
pub(crate) fn store_error(error: blobstore::Error) -> ApiError {
    use blobstore::Error as E;
    if objectstore::is_unavailable(&error) {
        // Down, timing out, overloaded or refusing our credentials after the backend's
        // retries: the request recorded nothing and may be repeated later.
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "blob storage is unavailable; retry later",
        )
        .with_cause(error)
        .with_header(
            header::RETRY_AFTER,
            HeaderValue::from(BACKEND_RETRY_AFTER_SECS),
        );
    }
    match error {
        E::NotFound { .. } => ApiError::not_found("no such file"),
        E::Forbidden { .. } => ApiError::not_found("no such file"),
        E::ContentGone { reason, .. } => {
            ApiError::gone(format!("the content of this file is gone ({reason})"))
        }
        E::QuotaExceeded {
            quota,
            used,
            requested,
            ..
        } => ApiError::conflict(
            "quota_exceeded",
            format!(
                "the bucket's quota of {quota} bytes would be exceeded: {used} used, {requested} requested"
            ),
        ),
        E::DigestMismatch {
            algorithm,
            expected,
            actual,
        } => ApiError::bad_request(
            "digest_mismatch",
            format!("the content's {algorithm} is {actual}, not {expected}; nothing was stored"),
        ),
        E::InvalidFilename { reason, .. } => {
            ApiError::bad_request("bad_filename", format!("invalid filename: {reason}"))
        }
        E::InvalidBucketName { reason, .. } => {
            ApiError::bad_request("bad_bucket", format!("invalid bucket name: {reason}"))
        }
        E::Parse { what, .. } => ApiError::bad_request("bad_input", format!("malformed {what}")),
        E::InvalidRange { size, .. } => ApiError::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "bad_range",
            "the range is not within the content",
        )
        .with_header(
            header::CONTENT_RANGE,
            HeaderValue::from_str(&format!("bytes */{size}")).expect("ASCII"),
        ),
        E::DiskFull { .. } => ApiError::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "insufficient_storage",
            "the store is out of space",
        )
        .with_cause(error),
        E::Poisoned { .. } => ApiError::unavailable(error),
        other => ApiError::internal(other),
    }
}

fn parse_id(text: &str) -> Result<FileId, ApiError> {
    FileId::from_str(text)
        .map_err(|_| ApiError::bad_request("bad_id", "a file id is a decimal u64"))
}

fn parse_bucket(text: &str) -> Result<BucketName, ApiError> {
    BucketName::new(text).map_err(store_error)
}

/// Percent-encodes a filename for a URL path segment.
pub(crate) fn encode_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        let keep = byte.is_ascii_alphanumeric()
            || matches!(
                byte,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
                    | b':'
                    | b'@'
            );
        if keep {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn file_url(record: &FileRecord) -> String {
    format!("/{}/{}", record.id, encode_segment(&record.filename))
}

fn file_json(record: &FileRecord, blob: Option<&BlobInfo>) -> Value {
    json!({
        "id": record.id.0,
        "url": file_url(record),
        "bucket": record.bucket.as_str(),
        "filename": record.filename,
        "content_type": record.content_type,
        "size": record.size,
        "blake3": record.blake3.to_hex(),
        "sha256": blob.map(|b| blobstore::to_hex(&b.sha256)),
        "sha1": blob.and_then(|b| b.sha1.map(|d| blobstore::to_hex(&d))),
        "md5": blob.and_then(|b| b.md5.map(|d| blobstore::to_hex(&d))),
        "created": record.created.as_unix_secs(),
        "expires": record.expires.map(Timestamp::as_unix_secs),
        "restricted": record.restricted,
        "content": match record.content {
            ContentState::Present => "present",
            ContentState::Deleted => "deleted",
            _ => "expired",
        },
    })
}

fn describe(store: &Store, record: &FileRecord) -> Result<Value, ApiError> {
    let blob = store.blob_info(&record.blake3).map_err(store_error)?;
    Ok(file_json(record, blob.as_ref()))
}

#[derive(Debug, Deserialize)]
pub(crate) struct UploadQuery {
    filename: String,
    expires: Option<i64>,
    restricted: Option<bool>,
}

enum Chunk {
    Data(Bytes),
    End,
}

/// `POST /buckets/{bucket}/files`: a streamed upload.
pub(crate) async fn upload(
    State(state): State<Librarian>,
    actor: Actor,
    Path(bucket): Path<String>,
    Query(query): Query<UploadQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let bucket = parse_bucket(&bucket)?;
    blobstore::validate_filename(&query.filename).map_err(store_error)?;
    let max = state.limits.max_body_bytes;
    let content_length = match headers.get(header::CONTENT_LENGTH) {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| ApiError::bad_request("bad_header", "malformed Content-Length"))?,
        ),
    };
    if content_length.is_some_and(|len| len > max) {
        return Err(ApiError::too_large(max));
    }
    let mut request = UploadRequest::new(bucket.clone(), query.filename);
    if let Some(value) = headers.get(header::CONTENT_TYPE) {
        request.content_type = value
            .to_str()
            .map_err(|_| ApiError::bad_request("bad_header", "Content-Type is not ASCII"))?
            .to_string();
    }
    request.expires = query
        .expires
        .map(|secs| expiry_from_secs(secs, "bad_query"))
        .transpose()?;
    request.restricted = query.restricted.unwrap_or(false);
    // The store refuses an over-quota upload before the body is read.
    request.declared_length = content_length;
    for expected in expected_digests(&headers)? {
        match expected {
            Expected::Blake3(hash) => request.expected_blake3 = Some(Blake3Hash(hash)),
            Expected::Sha256(hash) => request.expected_sha256 = Some(hash),
        }
    }

    let (ready_tx, ready_rx) = oneshot::channel::<Result<(), ApiError>>();
    let (tx, mut rx) = mpsc::channel::<Chunk>(UPLOAD_BUFFER);
    let store = state.store.clone();
    let writer = tokio::task::spawn_blocking(move || -> Result<Value, ApiError> {
        let refuse = |ready_tx: oneshot::Sender<Result<(), ApiError>>, error: ApiError| {
            let _ = ready_tx.send(Err(error));
            Err(ApiError::internal("refused before the body was read"))
        };
        let mut upload = match store.begin_upload(request, actor.as_str()) {
            Ok(upload) => upload,
            Err(error) => return refuse(ready_tx, store_error(error)),
        };
        let _ = ready_tx.send(Ok(()));
        loop {
            match rx.blocking_recv() {
                Some(Chunk::Data(bytes)) => upload
                    .write_all(&bytes)
                    .map_err(|e| ApiError::internal(format!("writing an upload: {e}")))?,
                Some(Chunk::End) => break,
                // The connection side gave up: dropping `upload` leaves nothing stored.
                None => {
                    return Err(ApiError::bad_request(
                        "upload_aborted",
                        "the upload was aborted",
                    ))
                }
            }
        }
        let uploaded = upload.commit().map_err(store_error)?;
        let mut file = file_json(&uploaded.record, Some(&uploaded.blob));
        file["revision"] = uploaded.revision.into();
        Ok(file)
    });
    match ready_rx.await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => return Err(error),
        Err(_) => {
            return Err(writer
                .await
                .map_err(ApiError::internal)?
                .err()
                .unwrap_or_else(|| ApiError::internal("the upload thread ended before starting")))
        }
    }

    let abort = |state: &Librarian| {
        state.uploads_aborted.fetch_add(1, Ordering::Relaxed);
    };
    let deadline = tokio::time::Instant::now() + state.limits.body_timeout();
    let mut body = body;
    let mut received: u64 = 0;
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => {
                abort(&state);
                drop(tx);
                let _ = writer.await;
                return Err(ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "body_timeout",
                    "the request body took too long",
                ));
            }
            Ok(None) => break,
            Ok(Some(Err(error))) => {
                abort(&state);
                drop(tx);
                let _ = writer.await;
                return Err(ApiError::bad_request(
                    "upload_aborted",
                    "the request body was cut short",
                )
                .with_cause(error));
            }
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        received += data.len() as u64;
        if received > max {
            abort(&state);
            drop(tx);
            let _ = writer.await;
            return Err(ApiError::too_large(max));
        }
        if tx.send(Chunk::Data(data)).await.is_err() {
            break;
        }
    }
    let _ = tx.send(Chunk::End).await;
    drop(tx);
    let file = writer.await.map_err(ApiError::internal)??;
    let location = file["url"].as_str().unwrap_or("/").to_string();
    let revision = Revision(file["revision"].as_u64().unwrap_or(0));
    let mut response = (StatusCode::CREATED, revision, axum::Json(file)).into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    Ok(response)
}

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
            Ok(axum::Json(describe(store, &record)?))
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

/// An expiry given in Unix seconds, or a 400 with `code` when it does not fit a timestamp.
fn expiry_from_secs(secs: i64, code: &'static str) -> Result<Timestamp, ApiError> {
    secs.checked_mul(1000)
        .map(Timestamp::from_unix_millis)
        .ok_or_else(|| ApiError::bad_request(code, "expires is out of range"))
}

/// The body of `PATCH /files/{id}`: the fields to change, each optional.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileChanges {
    /// Absent: unchanged; `null`: never expires; a number: Unix seconds.
    #[serde(default, deserialize_with = "present")]
    expires: Option<Option<i64>>,
    restricted: Option<bool>,
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

/// `GET /stats`.
pub(crate) async fn stats(State(state): State<Librarian>) -> Result<axum::Json<Value>, ApiError> {
    state
        .blocking(|store| {
            let s = store.summary().map_err(store_error)?;
            Ok(axum::Json(json!({
                "files": s.files,
                "blobs": s.blobs,
                "stored_bytes": s.stored_bytes,
                "logical_bytes": s.logical_bytes,
                "dedup_ratio": s.dedup_ratio,
            })))
        })
        .await
}

/// `GET /health`: 200 `{"status":"ok"}` when the store's dependencies answer; 503
/// `{"status":"degraded","failing":[...]}` naming those that do not (`engine`, the metadata
/// engine; `object_store`, when blob bytes live on one).
pub(crate) async fn health(State(state): State<Librarian>) -> Response {
    let store = state.store.clone();
    let engine = async {
        match state.pool.run(move || store.summary().map(|_| ())).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(error.to_string()),
            Err(error) => Err(error.to_string()),
        }
    };
    let object_store = async {
        match &state.object_store {
            Some(probe) => probe.check().await,
            None => Ok(()),
        }
    };
    let (engine, object_store) = tokio::join!(engine, object_store);
    let mut failing = Vec::new();
    for (name, result) in [("engine", engine), ("object_store", object_store)] {
        if let Err(cause) = result {
            tracing::error!(dependency = name, %cause, "health check failing");
            failing.push(name);
        }
    }
    if failing.is_empty() {
        axum::Json(json!({ "status": "ok" })).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({ "status": "degraded", "failing": failing })),
        )
            .into_response()
    }
}

/// `GET /metrics`: the Prometheus text format.
pub(crate) async fn metrics(State(state): State<Librarian>) -> Result<Response, ApiError> {
    let summary = state
        .blocking(|store| store.summary().map_err(store_error))
        .await?;
    let sm = &state.store_metrics;
    let gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    sm.files.set(gauge(summary.files));
    sm.blobs.set(gauge(summary.blobs));
    sm.stored_bytes.set(gauge(summary.stored_bytes));
    sm.logical_bytes.set(gauge(summary.logical_bytes));
    let text = state.metrics.encode();
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

/// `GET /openapi.json`.
pub(crate) async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], super::OPENAPI).into_response()
}

#[derive(Debug, Deserialize)]
pub(crate) struct DownloadQuery {
    token: Option<String>,
}

/// What a download found in the store, before the body is sent.
struct Prepared {
    record: FileRecord,
    decision: Decision,
    content: Option<Content>,
}

enum Content {
    Whole(Bytes),
    Stream(blobstore::ContentReader),
}

/// What a download answers from a small file with its content in memory (from the store's
/// hot-file cache, or just read with [`Store::small_file`]): the same rules as [`prepare`]
/// (filename, token, deleted or expired content, conditionals, ranges) without any I/O, so
/// it may run on an async thread. Counts the download when the content is sent from byte 0,
/// as [`Store::read`] does.
pub(crate) fn answer_small(
    store: &Store,
    file: &SmallFile,
    filename: Option<&str>,
    token: Option<&str>,
    headers: &HeaderMap,
    with_body: bool,
) -> Result<Response, ApiError> {
    let record = file.record();
    if filename.is_some_and(|name| name != record.filename) {
        return Err(ApiError::not_found("no such file"));
    }
    let access = token.map_or(Access::Anonymous, Access::Token);
    store.check_readable(record, access).map_err(store_error)?;
    let formatted;
    let file_headers = match file.derived(FileHeaders::of) {
        Some(kept) => kept,
        None => {
            formatted = FileHeaders::of(record);
            &formatted
        }
    };
    let decision = decide(
        headers,
        &file_headers.etag,
        record.created.as_unix_secs(),
        record.size,
    );
    let content = match decision {
        Decision::Full if with_body => Some(file.content().clone()),
        Decision::Partial { start, end } if with_body => {
            // `decide` keeps ranges within the size, which is the content's length.
            let (start, end) = (start as usize, end as usize);
            Some(file.content().slice(start..=end))
        }
        _ => None,
    };
    if content.is_some()
        && matches!(
            decision,
            Decision::Full | Decision::Partial { start: 0, .. }
        )
    {
        store.count_download(record.id);
    }
    Ok(respond_with(
        record,
        file_headers,
        decision,
        content.map(Content::Whole),
    ))
}

/// A download looked up on a store thread: answered already (a small file), or prepared
/// for [`respond`], which must run on the runtime (a stream starts a blocking task).
enum Found {
    Answered(Response),
    Prepared(Box<Prepared>),
}

/// Looks file `id` up on a store thread: one store call for a small file (record and
/// content, then cached by the store), else [`prepare`].
fn find(
    store: &Store,
    id: FileId,
    filename: Option<&str>,
    token: Option<&str>,
    headers: &HeaderMap,
    with_body: bool,
) -> Result<Found, ApiError> {
    match store.small_file(id) {
        Ok(Some(file)) => {
            answer_small(store, &file, filename, token, headers, with_body).map(Found::Answered)
        }
        // Not inline or not present; or corrupt, which `prepare` reports only after the
        // filename and token checks (a restricted file's existence is never disclosed).
        Ok(None) | Err(blobstore::Error::Corrupt { .. }) => {
            prepare(store, id, filename, token, headers, with_body)
                .map(|prepared| Found::Prepared(Box::new(prepared)))
        }
        Err(error) => Err(store_error(error)),
    }
}

fn finish_found(found: Found) -> Response {
    match found {
        Found::Answered(response) => response,
        Found::Prepared(prepared) => respond(*prepared),
    }
}

/// Looks the file up and checks it may be read: `filename` must match when given, a
/// restricted file needs a valid token (else 404), content deleted or expired is 410.
fn prepare(
    store: &Store,
    id: FileId,
    filename: Option<&str>,
    token: Option<&str>,
    headers: &HeaderMap,
    with_body: bool,
) -> Result<Prepared, ApiError> {
    let record = store.file(id).map_err(store_error)?;
    if filename.is_some_and(|name| name != record.filename) {
        return Err(ApiError::not_found("no such file"));
    }
    let access = token.map_or(Access::Anonymous, Access::Token);
    store.authorize(&record, access).map_err(store_error)?;
    let expired = record.expires.is_some_and(|at| store.now() >= at);
    match record.content {
        ContentState::Present if !expired => {}
        ContentState::Deleted => {
            return Err(ApiError::gone("the content of this file was deleted"))
        }
        _ => return Err(ApiError::gone("this file has expired")),
    }
    let tag = etag(&record.blake3.to_hex());
    let decision = decide(headers, &tag, record.created.as_unix_secs(), record.size);
    let range = match decision {
        Decision::Full => 0..record.size,
        Decision::Partial { start, end } => start..end + 1,
        Decision::NotModified | Decision::Unsatisfiable => {
            return Ok(Prepared {
                record,
                decision,
                content: None,
            })
        }
    };
    if !with_body {
        return Ok(Prepared {
            record,
            decision,
            content: None,
        });
    }
    let mut reader = store
        .read(id, access, Some(range.clone()))
        .map_err(store_error)?;
    let len = range.end - range.start;
    let content = if len <= WHOLE_READ_MAX {
        let mut bytes = Vec::with_capacity(len as usize);
        reader
            .read_to_end(&mut bytes)
            .map_err(|e| ApiError::internal(format!("reading file {id}: {e}")))?;
        Content::Whole(Bytes::from(bytes))
    } else {
        Content::Stream(reader)
    };
    Ok(Prepared {
        record,
        decision,
        content: Some(content),
    })
}

fn stream_body(mut reader: blobstore::ContentReader) -> Body {
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(STREAM_BUFFER);
    tokio::task::spawn_blocking(move || loop {
        let mut buffer = vec![0u8; STREAM_CHUNK];
        let mut filled = 0;
        while filled < buffer.len() {
            match reader.read(&mut buffer[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(error) => {
                    tracing::error!(id = %reader.record().id, %error, "download failed mid-stream");
                    let _ = tx.blocking_send(Err(error));
                    return;
                }
            }
        }
        if filled == 0 {
            return;
        }
        buffer.truncate(filled);
        if tx.blocking_send(Ok(Bytes::from(buffer))).is_err() {
            return; // The client went away.
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Body::from_stream(stream)
}

fn respond(prepared: Prepared) -> Response {
    let headers = FileHeaders::of(&prepared.record);
    respond_with(
        &prepared.record,
        &headers,
        prepared.decision,
        prepared.content,
    )
}

/// The response headers that depend only on a file's immutable fields (hash, upload time,
/// type), formatted once per cached copy of a small file (see [`SmallFile::derived`]).
struct FileHeaders {
    /// The strong entity tag, quoted, for the conditionals.
    etag: String,
    etag_value: HeaderValue,
    last_modified: HeaderValue,
    content_type: HeaderValue,
}

impl FileHeaders {
    fn of(record: &FileRecord) -> Self {
        let etag = etag(&record.blake3.to_hex());
        let modified = std::time::UNIX_EPOCH
            + Duration::from_secs(u64::try_from(record.created.as_unix_secs()).unwrap_or(0));
        FileHeaders {
            etag_value: HeaderValue::from_str(&etag).expect("hex"),
            etag,
            last_modified: HeaderValue::from_str(&httpdate::fmt_http_date(modified))
                .expect("ASCII"),
            content_type: HeaderValue::from_str(&record.content_type)
                .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream")),
        }
    }
}

fn respond_with(
    record: &FileRecord,
    file_headers: &FileHeaders,
    decision: Decision,
    content: Option<Content>,
) -> Response {
    let mut headers = HeaderMap::with_capacity(8);
    headers.insert(header::ETAG, file_headers.etag_value.clone());
    headers.insert(header::LAST_MODIFIED, file_headers.last_modified.clone());
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(if record.restricted {
            "private, max-age=0"
        } else {
            "public, max-age=31536000, immutable"
        }),
    );
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    let (status, len) = match decision {
        Decision::NotModified => return (StatusCode::NOT_MODIFIED, headers).into_response(),
        Decision::Unsatisfiable => {
            let mut response = ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "bad_range",
                "the range is not within the content",
            )
            .into_response();
            response.headers_mut().extend(headers);
            response.headers_mut().insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes */{}", record.size)).expect("ASCII"),
            );
            return response;
        }
        Decision::Full => (StatusCode::OK, record.size),
        Decision::Partial { start, end } => {
            headers.insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes {start}-{end}/{}", record.size))
                    .expect("ASCII"),
            );
            (StatusCode::PARTIAL_CONTENT, end - start + 1)
        }
    };
    headers.insert(header::CONTENT_TYPE, file_headers.content_type.clone());
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    let body = match content {
        None => Body::empty(),
        Some(Content::Whole(bytes)) => Body::from(bytes),
        Some(Content::Stream(reader)) => stream_body(reader),
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// `GET` and `HEAD /{id}/{filename}`.
pub(crate) async fn download(
    State(state): State<Librarian>,
    method: Method,
    Path((id, filename)): Path<(String, String)>,
    Query(query): Query<DownloadQuery>,
    // The whole request rather than a `HeaderMap` extractor, which would copy the headers
    // for every request; they move to the store thread only on a cache miss.
    request: axum::extract::Request,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    if let Some(token) = &query.token {
        if token.len() > blobstore::Token::MAX_LEN {
            return Err(ApiError::bad_request("bad_token", "malformed token"));
        }
    }
    let with_body = method != Method::HEAD;
    if let Some(file) = state.store.cached_file(id) {
        return answer_small(
            &state.store,
            &file,
            Some(&filename),
            query.token.as_deref(),
            request.headers(),
            with_body,
        );
    }
    let headers = request.into_parts().0.headers;
    let found = state
        .blocking(move |store| {
            find(
                store,
                id,
                Some(&filename),
                query.token.as_deref(),
                &headers,
                with_body,
            )
        })
        .await?;
    Ok(finish_found(found))
}

/// `GET` and `HEAD /blobs/{blake3}`: public content by hash.
pub(crate) async fn download_blob(
    State(state): State<Librarian>,
    method: Method,
    Path(hash): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let hash = Blake3Hash::from_str(&hash)
        .map_err(|_| ApiError::bad_request("bad_hash", "a BLAKE3 hash is 64 hex digits"))?;
    let with_body = method != Method::HEAD;
    let prepared = state
        .blocking(move |store| {
            let ids = store
                .files_by_digest(&Digest::Blake3(hash), Visibility::Public, 1)
                .map_err(store_error)?;
            let id = ids
                .first()
                .copied()
                .ok_or_else(|| ApiError::not_found("no public file has this content"))?;
            find(store, id, None, None, &headers, with_body)
        })
        .await?;
    Ok(finish_found(prepared))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_encoded() {
        assert_eq!(
            encode_segment("a b%c?#/é.deb"),
            "a%20b%25c%3F%23%2F%C3%A9.deb"
        );
        assert_eq!(
            encode_segment("pkg_1.0-1~ubuntu+1.deb"),
            "pkg_1.0-1~ubuntu+1.deb"
        );
    }

    #[test]
    fn store_errors_map_to_statuses() {
        assert_eq!(
            store_error(blobstore::Error::NotFound { id: FileId(1) }).status(),
            404
        );
        assert_eq!(
            store_error(blobstore::Error::ContentGone {
                id: FileId(1),
                reason: "deleted"
            })
            .status(),
            410
        );
        let internal = store_error(blobstore::Error::Poisoned {
            cause: "fsync".into(),
        });
        assert_eq!(internal.status(), 503);
    }

    #[tokio::test]
    async fn an_unavailable_object_store_is_503_with_retry_after_and_no_detail() {
        let backend = |source: objectstore::Error| blobstore::Error::Backend {
            backend: "swift",
            operation: "persist",
            source: Box::new(source),
        };
        let down = store_error(backend(objectstore::Error::Unavailable {
            operation: "put",
            container: "secret-container".into(),
            key: "k".into(),
            attempts: 3,
            elapsed: Duration::from_secs(1),
            cause: "connection refused at 10.1.2.3".into(),
        }));
        assert_eq!(down.status(), 503);
        assert_eq!(down.code(), "unavailable");
        let response = down.into_response();
        assert_eq!(
            response.headers()[header::RETRY_AFTER],
            BACKEND_RETRY_AFTER_SECS.to_string().as_str()
        );
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let text = std::str::from_utf8(&body).unwrap();
        assert!(
            !text.contains("secret") && !text.contains("10.1.2.3"),
            "{text}"
        );
        // A permanent refusal is not the client's to retry: 500, still without detail.
        let refused = store_error(backend(objectstore::Error::Refused {
            operation: "put",
            container: "secret-container".into(),
            key: "k".into(),
            status: 403,
            body: "denied".into(),
        }));
        assert_eq!(refused.status(), 500);
    }
}
