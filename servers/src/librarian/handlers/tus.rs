//! Resumable uploads with the tus 1.0 protocol (core, creation, termination, checksum and
//! expiration): `POST /buckets/{bucket}/uploads` creates, `HEAD /uploads/{id}` says where to
//! resume, `PATCH /uploads/{id}` appends, `DELETE /uploads/{id}` terminates, `OPTIONS` on
//! either says what the server supports. Each route calls one store method; the bytes of a
//! PATCH are durable before its answer (`blobstore`'s `DESIGN.md`, "Resumable uploads").

use std::io::{self, Read};
use std::time::{Duration, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use blobstore::{
    Checksum, ChecksumAlgorithm, Patched, ResumableUpload, Timestamp, UploadId, UploadRequest,
};
use bytes::Bytes;
use http_body_util::BodyExt;
use tokio::sync::mpsc;

use crate::common::error::Path;
use crate::common::feed::{Actor, Revision};
use crate::common::ApiError;
use crate::librarian::Librarian;

use super::{expiry_from_secs, parse_bucket, store_error};

/// The protocol version spoken.
pub(crate) const TUS_VERSION: &str = "1.0.0";
/// The extensions supported.
pub(crate) const TUS_EXTENSIONS: &str = "creation,termination,checksum,expiration";

const TUS_RESUMABLE: HeaderName = HeaderName::from_static("tus-resumable");
const UPLOAD_OFFSET: HeaderName = HeaderName::from_static("upload-offset");
const UPLOAD_LENGTH: HeaderName = HeaderName::from_static("upload-length");
const UPLOAD_METADATA: HeaderName = HeaderName::from_static("upload-metadata");
const UPLOAD_EXPIRES: HeaderName = HeaderName::from_static("upload-expires");
const UPLOAD_CHECKSUM: HeaderName = HeaderName::from_static("upload-checksum");
/// The file a finished upload became (an extension of ours).
const X_FILE_ID: HeaderName = HeaderName::from_static("x-file-id");

/// Body frames buffered between the connection and the appending thread.
const PATCH_BUFFER: usize = 4;

/// Adds `Tus-Resumable` to an answer, errors included.
fn tus(result: Result<Response, ApiError>) -> Response {
    let mut response = result.unwrap_or_else(IntoResponse::into_response);
    response
        .headers_mut()
        .insert(TUS_RESUMABLE, HeaderValue::from_static(TUS_VERSION));
    response
}

/// Refuses a request that does not speak tus 1.0.0 (412 with `Tus-Version`).
fn check_version(headers: &HeaderMap) -> Result<(), ApiError> {
    match headers.get(&TUS_RESUMABLE).map(HeaderValue::as_bytes) {
        Some(b"1.0.0") => Ok(()),
        _ => Err(ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            "tus_version",
            "this server speaks tus 1.0.0: send Tus-Resumable: 1.0.0",
        )
        .with_header(
            HeaderName::from_static("tus-version"),
            HeaderValue::from_static(TUS_VERSION),
        )),
    }
}

/// A decimal header value, or a 400.
fn number(headers: &HeaderMap, name: &HeaderName) -> Result<Option<u64>, ApiError> {
    let Some(value) = headers.get(name) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse().ok())
        .map(Some)
        .ok_or_else(|| ApiError::bad_request("bad_header", format!("malformed {name}")))
}

fn parse_upload_id(text: &str) -> Result<UploadId, ApiError> {
    text.parse()
        .map_err(|_| ApiError::not_found("no such upload"))
}

fn http_date(at: Timestamp) -> HeaderValue {
    let secs = u64::try_from(at.as_unix_secs()).unwrap_or(0);
    let text = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs));
    HeaderValue::from_str(&text).expect("an HTTP date is ASCII")
}

/// The headers every answer about `upload` carries.
fn describe(upload: &ResumableUpload, headers: &mut HeaderMap) {
    headers.insert(UPLOAD_OFFSET, HeaderValue::from(upload.offset));
    match upload.file {
        Some(id) => {
            headers.insert(X_FILE_ID, HeaderValue::from(id.0));
        }
        None => {
            headers.insert(UPLOAD_EXPIRES, http_date(upload.deadline));
        }
    }
}

/// `Upload-Metadata`: comma-separated `key base64(value)` pairs (a value may be absent).
struct Metadata {
    filename: Option<String>,
    content_type: Option<String>,
    expires: Option<i64>,
    restricted: Option<bool>,
}

fn parse_metadata(text: &str) -> Result<Metadata, ApiError> {
    let bad = |message: &str| ApiError::bad_request("bad_metadata", message.to_string());
    let mut out = Metadata {
        filename: None,
        content_type: None,
        expires: None,
        restricted: None,
    };
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = match pair.split_once(' ') {
            Some((key, value)) => (key, value.trim()),
            None => (pair, ""),
        };
        let value = base64::engine::general_purpose::STANDARD
            .decode(value)
            .map_err(|_| bad("an Upload-Metadata value is not base64"))?;
        let value =
            String::from_utf8(value).map_err(|_| bad("an Upload-Metadata value is not UTF-8"))?;
        match key {
            "filename" | "name" => out.filename = Some(value),
            "content_type" | "filetype" | "type" => out.content_type = Some(value),
            "expires" => {
                out.expires = Some(value.parse().map_err(|_| bad("expires is Unix seconds"))?)
            }
            "restricted" => {
                out.restricted = Some(match value.as_str() {
                    "true" | "1" | "" => true,
                    "false" | "0" => false,
                    _ => return Err(bad("restricted is true or false")),
                })
            }
            // Other keys are the client's own: kept verbatim and answered back.
            _ => {}
        }
    }
    Ok(out)
}

/// `OPTIONS /buckets/{bucket}/uploads` and `/uploads/{id}`: what the server supports.
pub(crate) async fn tus_options(State(state): State<Librarian>) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    headers.insert(
        HeaderName::from_static("tus-version"),
        HeaderValue::from_static(TUS_VERSION),
    );
    headers.insert(
        HeaderName::from_static("tus-extension"),
        HeaderValue::from_static(TUS_EXTENSIONS),
    );
    headers.insert(
        HeaderName::from_static("tus-max-size"),
        HeaderValue::from(state.limits.max_body_bytes),
    );
    headers.insert(
        HeaderName::from_static("tus-checksum-algorithm"),
        HeaderValue::from_static("sha1,sha256,md5"),
    );
    tus(Ok(response))
}

/// `POST /buckets/{bucket}/uploads`: creates a resumable upload.
pub(crate) async fn tus_create(
    State(state): State<Librarian>,
    actor: Actor,
    Path(bucket): Path<String>,
    headers: HeaderMap,
) -> Response {
    tus(create(state, actor, bucket, headers).await)
}

async fn create(
    state: Librarian,
    actor: Actor,
    bucket: String,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_version(&headers)?;
    let bucket = parse_bucket(&bucket)?;
    if headers.contains_key("upload-defer-length") {
        return Err(ApiError::bad_request(
            "bad_header",
            "Upload-Defer-Length is not supported: send Upload-Length",
        ));
    }
    let length = number(&headers, &UPLOAD_LENGTH)?
        .ok_or_else(|| ApiError::bad_request("bad_header", "Upload-Length is required"))?;
    let max = state.limits.max_body_bytes;
    if length > max {
        return Err(ApiError::too_large(max));
    }
    let raw_metadata = match headers.get(&UPLOAD_METADATA) {
        Some(value) => value
            .to_str()
            .map_err(|_| ApiError::bad_request("bad_metadata", "Upload-Metadata is not ASCII"))?
            .to_string(),
        None => String::new(),
    };
    let metadata = parse_metadata(&raw_metadata)?;
    let filename = metadata.filename.ok_or_else(|| {
        ApiError::bad_request("bad_metadata", "Upload-Metadata must give a filename")
    })?;
    blobstore::validate_filename(&filename).map_err(store_error)?;
    let mut request = UploadRequest::new(bucket, filename);
    if let Some(content_type) = metadata.content_type {
        request.content_type = content_type;
    }
    request.expires = metadata
        .expires
        .map(|secs| expiry_from_secs(secs, "bad_metadata"))
        .transpose()?;
    request.restricted = metadata.restricted.unwrap_or(false);
    let patched = state
        .blocking(move |store| {
            store
                .create_upload(request, length, raw_metadata, None, actor.as_str())
                .map_err(store_error)
        })
        .await?;
    Ok(answer(StatusCode::CREATED, &patched, true))
}

/// The answer to a creation or an append.
fn answer(status: StatusCode, patched: &Patched, location: bool) -> Response {
    let revision = Revision(patched.finished.as_ref().map_or(0, |f| f.revision));
    let mut response = if patched.finished.is_some() {
        (status, revision, ()).into_response()
    } else {
        status.into_response()
    };
    let headers = response.headers_mut();
    describe(&patched.upload, headers);
    if location {
        let url = format!("/uploads/{}", patched.upload.id);
        headers.insert(
            header::LOCATION,
            HeaderValue::from_str(&url).expect("an upload URL is ASCII"),
        );
    }
    response
}

/// `HEAD /uploads/{id}`: the offset to resume at.
pub(crate) async fn tus_head(
    State(state): State<Librarian>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let status = async {
        check_version(&headers)?;
        let id = parse_upload_id(&id)?;
        let upload = state
            .blocking(move |store| store.upload_status(id).map_err(store_error))
            .await?;
        let mut response = StatusCode::OK.into_response();
        let headers = response.headers_mut();
        describe(&upload, headers);
        headers.insert(UPLOAD_LENGTH, HeaderValue::from(upload.length));
        if let Ok(value) = HeaderValue::from_str(&upload.metadata) {
            if !upload.metadata.is_empty() {
                headers.insert(UPLOAD_METADATA, value);
            }
        }
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        Ok(response)
    };
    tus(status.await)
}

/// `DELETE /uploads/{id}`: terminates an upload (a finished upload's file stays).
pub(crate) async fn tus_delete(
    State(state): State<Librarian>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let terminated = async {
        check_version(&headers)?;
        let id = parse_upload_id(&id)?;
        state
            .blocking(move |store| store.terminate_upload(id).map_err(store_error))
            .await?;
        Ok(StatusCode::NO_CONTENT.into_response())
    };
    tus(terminated.await)
}

/// The `Upload-Checksum` of a PATCH: `ALGORITHM BASE64`.
fn parse_checksum(headers: &HeaderMap) -> Result<Option<Checksum>, ApiError> {
    let Some(value) = headers.get(&UPLOAD_CHECKSUM) else {
        return Ok(None);
    };
    let bad = |message: &'static str| ApiError::bad_request("bad_checksum", message);
    let text = value
        .to_str()
        .map_err(|_| bad("Upload-Checksum is not ASCII"))?;
    let (name, digest) = text
        .trim()
        .split_once(' ')
        .ok_or_else(|| bad("Upload-Checksum is ALGORITHM BASE64"))?;
    let algorithm = ChecksumAlgorithm::from_name(name)
        .ok_or_else(|| bad("unsupported checksum algorithm: see Tus-Checksum-Algorithm"))?;
    let digest = base64::engine::general_purpose::STANDARD
        .decode(digest.trim())
        .map_err(|_| bad("the Upload-Checksum digest is not base64"))?;
    Ok(Some(Checksum { algorithm, digest }))
}

/// The body of a PATCH as the appending thread reads it; a cut body is a read error.
struct ChannelReader {
    receiver: mpsc::Receiver<Result<Bytes, ()>>,
    current: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.receiver.blocking_recv() {
                Some(Ok(bytes)) => self.current = bytes,
                Some(Err(())) => return Err(io::Error::other("the request body was cut short")),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// `PATCH /uploads/{id}`: appends the body at `Upload-Offset`.
pub(crate) async fn tus_patch(
    State(state): State<Librarian>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    tus(patch(state, id, headers, body).await)
}

async fn patch(
    state: Librarian,
    id: String,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    check_version(&headers)?;
    let id = parse_upload_id(&id)?;
    if headers.get(header::CONTENT_TYPE).map(HeaderValue::as_bytes)
        != Some(b"application/offset+octet-stream")
    {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "bad_content_type",
            "a PATCH body is application/offset+octet-stream",
        ));
    }
    let offset = number(&headers, &UPLOAD_OFFSET)?
        .ok_or_else(|| ApiError::bad_request("bad_header", "Upload-Offset is required"))?;
    let checksum = parse_checksum(&headers)?;

    let (sender, receiver) = mpsc::channel(PATCH_BUFFER);
    let store = state.store.clone();
    let appender = tokio::task::spawn_blocking(move || {
        let mut reader = ChannelReader {
            receiver,
            current: Bytes::new(),
        };
        store.append_upload(id, offset, &mut reader, checksum)
    });
    let deadline = tokio::time::Instant::now() + state.limits.body_timeout();
    let mut body = body;
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) | Ok(Some(Err(_))) => {
                state
                    .uploads_aborted
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let _ = sender.send(Err(())).await;
                break;
            }
            Ok(None) => break,
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        // The appender stopped early (a bad offset, past the length): it answers.
        if sender.send(Ok(data)).await.is_err() {
            break;
        }
    }
    drop(sender);
    let patched = appender
        .await
        .map_err(ApiError::internal)?
        .map_err(store_error)?;
    if patched.interrupted {
        return Err(ApiError::bad_request(
            "upload_aborted",
            "the request body was cut short; what arrived before is kept (see HEAD)",
        ));
    }
    Ok(answer(StatusCode::NO_CONTENT, &patched, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_is_parsed_as_tus_sends_it() {
        let m = parse_metadata("filename d29ybGRfZG9taW5hdGlvbl9wbGFuLnBkZg==,is_confidential, filetype dGV4dC9wbGFpbg==").unwrap();
        assert_eq!(m.filename.as_deref(), Some("world_domination_plan.pdf"));
        assert_eq!(m.content_type.as_deref(), Some("text/plain"));
        assert!(parse_metadata("filename !!!").is_err());
        assert!(parse_metadata("restricted bWF5YmU=").is_err());
    }

    #[test]
    fn only_tus_1_0_0_is_spoken() {
        let mut headers = HeaderMap::new();
        assert_eq!(check_version(&headers).unwrap_err().status(), 412);
        headers.insert(TUS_RESUMABLE, HeaderValue::from_static("0.2.2"));
        assert_eq!(check_version(&headers).unwrap_err().status(), 412);
        headers.insert(TUS_RESUMABLE, HeaderValue::from_static("1.0.0"));
        assert!(check_version(&headers).is_ok());
    }
}
