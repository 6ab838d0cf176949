//! Downloads: `/{id}/{filename}` and `/blobs/{blake3}`, and the answer from memory that the
//! fast path (`fast.rs`) shares.

use std::io::Read;
use std::str::FromStr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use blobstore::{
    Access, Blake3Hash, ContentState, Digest, FileId, FileRecord, SmallFile, Store, Visibility,
};
use bytes::Bytes;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;

use crate::common::error::{Path, Query};
use crate::common::ApiError;
use crate::librarian::http::{decide, etag, Decision};
use crate::librarian::Librarian;

use super::{parse_id, store_error};

/// RFC 9530's digest of the whole representation (also on a 206).
const REPR_DIGEST: axum::http::HeaderName = axum::http::HeaderName::from_static("repr-digest");

/// Content up to this size is read in one piece; larger content is streamed in chunks.
const WHOLE_READ_MAX: u64 = 256 << 10;

/// The chunk size of streamed downloads.
const STREAM_CHUNK: usize = 256 << 10;

/// Chunks buffered between the reading thread and the connection.
const STREAM_BUFFER: usize = 4;

#[derive(Debug, Deserialize)]
pub(crate) struct DownloadQuery {
    token: Option<String>,
}

/// What a download found in the store, before the body is sent.
struct Prepared {
    record: FileRecord,
    /// The content's SHA-256, when known without another read (for `Repr-Digest`).
    sha256: Option<[u8; 32]>,
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
    // The SHA-256 of a small file is computed from its content once per cached copy.
    let derive = |record: &FileRecord| {
        let sha256: [u8; 32] = Sha256::digest(file.content()).into();
        FileHeaders::of(record, Some(&sha256))
    };
    let file_headers = match file.derived(derive) {
        Some(kept) => kept,
        None => {
            formatted = derive(record);
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
                sha256: None,
                decision,
                content: None,
            })
        }
    };
    if !with_body {
        // A HEAD of a blob the scrub found damaged answers as its GET would (500 `corrupt`).
        store.check_scrubbed(&record.blake3).map_err(store_error)?;
        // A HEAD: one more read for the digest, so that a client can check before it fetches.
        let sha256 = store
            .blob_info(&record.blake3)
            .map_err(store_error)?
            .map(|blob| blob.sha256);
        return Ok(Prepared {
            record,
            sha256,
            decision,
            content: None,
        });
    }
    let mut reader = store
        .read(id, access, Some(range.clone()))
        .map_err(store_error)?;
    let len = range.end - range.start;
    let sha256 = Some(*reader.sha256());
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
        sha256,
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
    let headers = FileHeaders::of(&prepared.record, prepared.sha256.as_ref());
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
    /// `inline; filename=…` (RFC 6266), with `filename*` for a name that is not plain ASCII.
    disposition: HeaderValue,
    /// `sha-256=:BASE64:` (RFC 9530), when the digest is known.
    repr_digest: Option<HeaderValue>,
}

impl FileHeaders {
    fn of(record: &FileRecord, sha256: Option<&[u8; 32]>) -> Self {
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
            disposition: content_disposition(&record.filename),
            repr_digest: sha256.map(|digest| {
                let b64 = base64::engine::general_purpose::STANDARD.encode(digest);
                HeaderValue::from_str(&format!("sha-256=:{b64}:")).expect("base64 is ASCII")
            }),
        }
    }
}

/// `Content-Disposition: inline; filename="NAME"` (RFC 6266): a name of plain printable
/// ASCII as a quoted string; any other name as `filename*=UTF-8''PERCENT-ENCODED` (RFC 8187)
/// beside an ASCII fallback (`_` for each character it cannot hold), which clients that do
/// not read `filename*` use.
pub(crate) fn content_disposition(filename: &str) -> HeaderValue {
    let plain = filename
        .bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\' && b != b'%');
    let fallback: String = filename
        .chars()
        .map(|c| match c {
            ' '..='~' if c != '"' && c != '\\' && c != '%' => c,
            _ => '_',
        })
        .collect();
    let mut value = format!("inline; filename=\"{fallback}\"");
    if !plain {
        value.push_str("; filename*=UTF-8''");
        for byte in filename.bytes() {
            // RFC 8187's attr-char.
            if byte.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&byte) {
                value.push(byte as char);
            } else {
                value.push_str(&format!("%{byte:02X}"));
            }
        }
    }
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static("inline"))
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
    headers.insert(
        header::CONTENT_DISPOSITION,
        file_headers.disposition.clone(),
    );
    if let Some(digest) = &file_headers.repr_digest {
        headers.insert(REPR_DIGEST, digest.clone());
    }
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
    use super::content_disposition;

    #[test]
    fn dispositions_follow_rfc_6266() {
        assert_eq!(
            content_disposition("hello_1.0_all.deb"),
            "inline; filename=\"hello_1.0_all.deb\""
        );
        assert_eq!(
            content_disposition("a \"b\" 100%.txt"),
            "inline; filename=\"a _b_ 100_.txt\"; filename*=UTF-8''a%20%22b%22%20100%25.txt"
        );
        assert_eq!(
            content_disposition("é.log"),
            "inline; filename=\"_.log\"; filename*=UTF-8''%C3%A9.log"
        );
    }
}
