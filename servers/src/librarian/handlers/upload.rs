//! `POST /buckets/{bucket}/files`: an upload, handed to the store on a blocking thread.
//!
//! A body that will be stored inline (its `Content-Length` at most the store's inline
//! threshold) is read whole on the connection's task and handed over in one blocking call;
//! a larger or unsized body is streamed to the uploading thread through a channel. Why two
//! paths: for a 4 KiB upload the channel, the readiness handshake and the chunk hand-offs were
//! thread switches that cost more CPU than the store's own work (`benches/servers/RESULTS.md`,
//! "Durable 4 KiB uploads"), while a large body must not be held in memory whole.

use std::io::Write;
use std::sync::atomic::Ordering;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use blobstore::{Blake3Hash, UploadRequest};
use bytes::Bytes;
use http_body_util::BodyExt;
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::common::error::{Path, Query};
use crate::common::feed::{Actor, Revision};
use crate::common::ApiError;
use crate::librarian::http::{expected_digests, Expected};
use crate::librarian::Librarian;

use super::{expiry_from_secs, file_json, parse_bucket, store_error};

/// Body frames buffered between the connection and the uploading thread. hyper's frames grow
/// with its read buffer (up to hundreds of KiB on a fast connection), and every upload in
/// flight holds this many: 2 keep the thread fed while 200 concurrent uploads stay within the
/// memory budget (benches/servers/RESULTS.md).
const UPLOAD_BUFFER: usize = 2;

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
    if let Some(value) = headers.get("idempotency-key") {
        let key = value.to_str().map_err(|_| {
            ApiError::bad_request(
                "bad_idempotency_key",
                "Idempotency-Key is not visible ASCII",
            )
        })?;
        // Checked (1 to 255 bytes) by the store before the body is read.
        request.idempotency_key = Some(key.to_string());
    }
    for expected in expected_digests(&headers)? {
        match expected {
            Expected::Blake3(hash) => request.expected_blake3 = Some(Blake3Hash(hash)),
            Expected::Sha256(hash) => request.expected_sha256 = Some(hash),
        }
    }

    if let Some(len) = content_length.filter(|&len| len <= state.store.inline_threshold() as u64) {
        // Read whole before the store sees it, so nothing is gained by refusing it early:
        // the commit's check under the bucket's lock is the one that counts (an engine read
        // fewer per small upload).
        request.declared_length = None;
        return upload_whole(state, actor, request, body, len).await;
    }

    let (ready_tx, ready_rx) = oneshot::channel::<Result<(), ApiError>>();
    let (tx, mut rx) = mpsc::channel::<Chunk>(UPLOAD_BUFFER);
    let store = state.store.clone();
    let writer = tokio::task::spawn_blocking(move || -> Result<(Value, bool), ApiError> {
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
        committed(upload)
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
    let (file, repeated) = writer.await.map_err(ApiError::internal)??;
    Ok(created(file, repeated))
}

/// A small body (`len` bytes declared, at most the inline threshold): read whole here, then
/// one blocking call begins, writes and commits the upload (the store refuses an over-quota
/// or unknown bucket there, as it would before a streamed body is read).
async fn upload_whole(
    state: Librarian,
    actor: Actor,
    request: UploadRequest,
    body: Body,
    len: u64,
) -> Result<Response, ApiError> {
    let deadline = tokio::time::Instant::now() + state.limits.body_timeout();
    let bytes = match tokio::time::timeout_at(deadline, body.collect()).await {
        Err(_) => {
            state.uploads_aborted.fetch_add(1, Ordering::Relaxed);
            return Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                "the request body took too long",
            ));
        }
        Ok(Err(error)) => {
            state.uploads_aborted.fetch_add(1, Ordering::Relaxed);
            return Err(
                ApiError::bad_request("upload_aborted", "the request body was cut short")
                    .with_cause(error),
            );
        }
        Ok(Ok(collected)) => collected.to_bytes(),
    };
    // hyper ends a body at its Content-Length and fails a shorter one; this is a guard.
    if bytes.len() as u64 != len {
        state.uploads_aborted.fetch_add(1, Ordering::Relaxed);
        return Err(ApiError::bad_request(
            "upload_aborted",
            "the request body does not match its Content-Length",
        ));
    }
    let store = state.store.clone();
    let (file, repeated) = tokio::task::spawn_blocking(move || {
        let mut upload = store
            .begin_upload(request, actor.as_str())
            .map_err(store_error)?;
        upload
            .write_all(&bytes)
            .map_err(|e| ApiError::internal(format!("writing an upload: {e}")))?;
        committed(upload)
    })
    .await
    .map_err(ApiError::internal)??;
    Ok(created(file, repeated))
}

/// Commits `upload` (returning once it is durable) and describes the file.
fn committed(upload: blobstore::Upload) -> Result<(Value, bool), ApiError> {
    let uploaded = upload.commit().map_err(store_error)?;
    let mut file = file_json(&uploaded.record, Some(&uploaded.blob));
    file["revision"] = uploaded.revision.into();
    Ok((file, uploaded.repeated))
}

/// The answer to a committed upload.
fn created(file: Value, repeated: bool) -> Response {
    let location = file["url"].as_str().unwrap_or("/").to_string();
    let revision = Revision(file["revision"].as_u64().unwrap_or(0));
    // A repeated idempotent upload answers the first one's file: 200, nothing created.
    let status = if repeated {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let mut response = (status, revision, axum::Json(file)).into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}
