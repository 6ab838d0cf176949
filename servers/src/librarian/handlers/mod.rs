//! The librarian's handlers. Every store call runs on the blocking pool; a download of a
//! small file the store holds in memory (its hot-file cache) is answered on the async thread,
//! since that answer touches neither the engine nor the disk.

use std::str::FromStr;

use axum::http::{header, HeaderValue, StatusCode};
use blobstore::{BlobInfo, BucketName, ContentState, FileId, FileRecord, Store, Timestamp};
use serde_json::{json, Value};

use crate::common::ApiError;

mod download;
mod feed;
mod files;
mod ops;
mod tus;
mod upload;
mod usage;

pub(crate) use download::{answer_small, download, download_blob};
pub(crate) use feed::{
    bucket_history, changes, create_subscription, delete_subscription, file_history,
    get_subscription, person_history,
};
pub(crate) use files::{
    bucket_stats, delete_content, delete_file, file_metadata, issue_token, list_bucket, search,
    set_quota, update_file,
};
pub(crate) use ops::{backup, health, metrics, openapi, scrub, stats};
pub(crate) use tus::{tus_create, tus_delete, tus_head, tus_options, tus_patch};
pub(crate) use upload::upload;
pub(crate) use usage::{bucket_downloads, file_downloads};

/// The `Retry-After` of a 503 for an object store that is unavailable, in seconds.
pub(crate) const BACKEND_RETRY_AFTER_SECS: u32 = 10;

/// Maps a store error to the client's answer; internal causes are logged, never sent.
pub(crate) fn store_error(error: blobstore::Error) -> ApiError {
    use blobstore::Error as E;
    if let E::Engine(inner) | E::Feed(engine::FeedError::Engine(inner)) = &error {
        if let Some(answer) = ApiError::from_engine(inner) {
            return answer;
        }
    }
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
        // A file the caller may not see is answered as one that does not exist.
        E::NotFound { .. } | E::Forbidden { .. } => ApiError::not_found("no such file"),
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
        E::InvalidDayRange { reason } => ApiError::bad_request("bad_range", reason),
        E::InvalidIdempotencyKey { reason } => {
            ApiError::bad_request("bad_idempotency_key", reason)
        }
        E::IdempotencyConflict { .. } => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_conflict",
            "this Idempotency-Key was used within 24 hours for other content",
        ),
        E::UploadNotFound { .. } => ApiError::not_found("no such upload"),
        E::UploadExpired { .. } => ApiError::gone("the upload expired"),
        E::OffsetMismatch { offset, .. } => ApiError::conflict(
            "offset_mismatch",
            format!("the upload is at offset {offset}"),
        )
        .with_header(
            header::HeaderName::from_static("upload-offset"),
            HeaderValue::from(offset),
        ),
        E::PastLength { length, .. } => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "past_length",
            format!("the upload is {length} bytes long; nothing was appended"),
        ),
        E::ChecksumMismatch { algorithm } => ApiError::new(
            StatusCode::from_u16(460).expect("460 is a valid status"),
            "checksum_mismatch",
            format!("the {algorithm} checksum does not match; nothing was appended"),
        ),
        E::UploadBusy { .. } => ApiError::new(
            StatusCode::LOCKED,
            "upload_busy",
            "another PATCH to this upload is running",
        ),
        E::Feed(error) => crate::common::feed::feed_error(error),
        // Damaged bytes (found by the read path's own check or by the scrub) are never served
        // as good; the hash and detail go to the log only.
        E::Corrupt { .. } => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "corrupt",
            "the stored content of this file is damaged",
        )
        .with_cause(error),
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

/// What a URL path segment keeps as it is (RFC 3986 `pchar`: unreserved, sub-delims, `:`
/// and `@`); every other byte is percent-encoded.
const PATH_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'!')
    .remove(b'$')
    .remove(b'&')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')')
    .remove(b'*')
    .remove(b'+')
    .remove(b',')
    .remove(b';')
    .remove(b'=')
    .remove(b':')
    .remove(b'@');

/// Percent-encodes a filename for a URL path segment.
pub(crate) fn encode_segment(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, PATH_SEGMENT).to_string()
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

/// An expiry given in Unix seconds, or a 400 with `code` when it does not fit a timestamp.
fn expiry_from_secs(secs: i64, code: &'static str) -> Result<Timestamp, ApiError> {
    secs.checked_mul(1000)
        .map(Timestamp::from_unix_millis)
        .ok_or_else(|| ApiError::bad_request(code, "expires is out of range"))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::response::IntoResponse;
    use http_body_util::BodyExt;

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
