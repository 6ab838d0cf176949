//! S3-compatible endpoints: requests signed by `reqsign` (AWS SigV4, the signer OpenDAL itself
//! uses) and sent over the shared HTTP layer ([`crate::http`]), answers read with quick-xml.
//!
//! Not OpenDAL, which this used before: OpenDAL 0.54's writer gathers each part (or a whole
//! small object) in memory before it sends a byte, so an upload was read from the spool file,
//! copied, and only then sent, one part at a time; large uploads reached 0.63-0.69 of the
//! `swift` client where the Swift API, which streams, reached 0.95 and more. Here the body of a
//! PUT (or of each multipart part) streams from the spool file as the Swift client does, the
//! parts go up several at a time, and both protocols share one HTTP client, so the TLS roots
//! and the idle timeout are the same. The payload is sent as `UNSIGNED-PAYLOAD` (the signature
//! covers the headers; TLS protects the body in transit, and the backend verifies the stored
//! size).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use reqwest::{Method, RequestBuilder};
use serde::Deserialize;

use crate::client::{
    parse_utc_millis, plan_segments, run_parallel, status_attempt, Attempt, AttemptResult, Listed,
    ObjectClient, Retry, Verified,
};
use crate::config::{ObjectStoreConfig, Protocol};
use crate::error::Error;
use crate::transport::{etag_matches, Http, Kind, Response};

/// S3's limits on multipart uploads: parts of 5 MiB to 5 GiB (the last may be smaller), at
/// most 10,000 of them.
const MIN_PART: u64 = 5 << 20;
const MAX_PART: u64 = 5 << 30;
const MAX_PARTS: u64 = 10_000;

/// An S3 account.
pub(crate) struct S3Client {
    http: Http,
    endpoint: String,
    access_key: String,
    virtual_host_style: bool,
    signer: reqsign::AwsV4Signer,
    credential: reqsign::AwsCredential,
    retry: Retry,
    part_size: u64,
    part_concurrency: usize,
}

impl std::fmt::Debug for S3Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Client")
            .field("endpoint", &self.endpoint)
            .field("access_key", &self.access_key)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InitiateMultipartUploadResult {
    upload_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListBucketResult {
    #[serde(default)]
    contents: Vec<ListedObject>,
    #[serde(default)]
    is_truncated: bool,
    #[serde(default)]
    next_continuation_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListedObject {
    key: String,
    last_modified: String,
}

impl S3Client {
    /// The client of `config`, whose protocol must be S3.
    pub(crate) fn new(config: &ObjectStoreConfig, retry: Retry) -> Result<Self, Error> {
        let Protocol::S3 {
            endpoint,
            region,
            access_key,
            secret_key,
            virtual_host_style,
        } = &config.protocol
        else {
            return Err(Error::Config("not an S3 configuration".into()));
        };
        Ok(S3Client {
            http: Http::new(config, "objectstore-s3")?,
            endpoint: endpoint.trim_end_matches('/').to_string(),
            access_key: access_key.clone(),
            virtual_host_style: *virtual_host_style,
            signer: reqsign::AwsV4Signer::new("s3", region),
            credential: reqsign::AwsCredential {
                access_key_id: access_key.clone(),
                secret_access_key: secret_key.clone(),
                session_token: None,
                expires_in: None,
            },
            retry,
            part_size: config.segment_size,
            part_concurrency: config.segment_concurrency.max(1),
        })
    }

    fn run<T>(
        &self,
        operation: &'static str,
        bucket: &str,
        key: &str,
        attempt: impl FnMut() -> AttemptResult<T>,
    ) -> Result<T, Error> {
        self.retry.run(operation, bucket, key, attempt, &|| {})
    }

    fn url(&self, bucket: &str, key: &str) -> String {
        if self.virtual_host_style {
            match self.endpoint.split_once("://") {
                Some((scheme, host)) => format!("{scheme}://{bucket}.{host}/{key}"),
                None => format!("{bucket}.{}/{key}", self.endpoint),
            }
        } else if key.is_empty() {
            format!("{}/{bucket}", self.endpoint)
        } else {
            format!("{}/{bucket}/{key}", self.endpoint)
        }
    }

    /// The signed request `build` makes.
    fn build(
        &self,
        method: Method,
        bucket: &str,
        key: &str,
        build: impl FnOnce(RequestBuilder) -> RequestBuilder,
    ) -> AttemptResult<reqwest::Request> {
        let request = self
            .http
            .request(method, &self.url(bucket, key))
            .header("x-amz-content-sha256", "UNSIGNED-PAYLOAD");
        let mut request = build(request)
            .build()
            .map_err(|e| Attempt::Permanent(Error::Config(format!("S3 endpoint: {e}"))))?;
        self.signer
            .sign(&mut request, &self.credential)
            .map_err(|e| {
                Attempt::Permanent(Error::Auth {
                    url: self.endpoint.clone(),
                    detail: format!("signing: {e}"),
                })
            })?;
        Ok(request)
    }

    /// One attempt of a request without a request body of blob bytes.
    fn send(
        &self,
        method: Method,
        bucket: &str,
        key: &str,
        kind: Kind,
        build: impl FnOnce(RequestBuilder) -> RequestBuilder,
    ) -> AttemptResult<Response> {
        let request = self.build(method, bucket, key, build)?;
        self.http.send(kind, request)
    }

    /// An answer that is not a success, classified: 403 is a credential or signature problem.
    fn failure(
        &self,
        response: Response,
        operation: &'static str,
        bucket: &str,
        key: &str,
    ) -> Attempt {
        let status = response.status();
        let body = response.text();
        if status == 403 {
            return Attempt::Permanent(Error::Auth {
                url: self.url(bucket, key),
                detail: format!("HTTP 403: {body}"),
            });
        }
        status_attempt(status, body, operation, bucket, key)
    }

    /// Uploads `len` bytes of `path` from `offset` with the request `build` makes; returns the
    /// successful answer and whether its ETag proved the content (an ETag that is the MD5 of
    /// other bytes makes the attempt fail as transient: the bytes were damaged on the way).
    fn upload(
        &self,
        operation: &'static str,
        bucket: &str,
        key: &str,
        path: &Path,
        (offset, len): (u64, u64),
        build: &dyn Fn(RequestBuilder) -> RequestBuilder,
    ) -> Result<(Response, Verified), Error> {
        self.run(operation, bucket, key, || {
            let mut file =
                File::open(path).map_err(|e| Attempt::Permanent(Error::io("opening", path, e)))?;
            file.seek(SeekFrom::Start(offset))
                .map_err(|e| Attempt::Permanent(Error::io("seeking in", path, e)))?;
            let request = self.build(Method::PUT, bucket, key, |r| {
                build(r.header("Content-Length", len))
            })?;
            let (response, md5) = self.http.send_upload(request, file, len)?;
            if !(200..=204).contains(&response.status()) {
                return Err(self.failure(response, operation, bucket, key));
            }
            match etag_matches(response.header("etag"), md5.as_ref()) {
                Some(true) => Ok((response, Verified::Content)),
                None => Ok((response, Verified::Nothing)),
                Some(false) => Err(Attempt::Transient(format!(
                    "the ETag of {bucket}/{key}, {:?}, is not the MD5 of the bytes sent: \
                     damaged on the way",
                    response.header("etag")
                ))),
            }
        })
    }

    fn put_multipart(&self, bucket: &str, key: &str, path: &Path, size: u64) -> Result<(), Error> {
        let upload_id = self.run("start multipart upload", bucket, key, || {
            let response = self.send(Method::POST, bucket, key, Kind::Small, |r| {
                r.query(&[("uploads", "")])
            })?;
            if response.status() != 200 {
                return Err(self.failure(response, "start multipart upload", bucket, key));
            }
            let body = response
                .bytes()
                .map_err(|e| Attempt::Transient(format!("starting a multipart upload: {e}")))?;
            quick_xml::de::from_reader::<_, InitiateMultipartUploadResult>(&body[..])
                .map(|r| r.upload_id)
                .map_err(|e| Attempt::Transient(format!("starting a multipart upload: {e}")))
        })?;
        let result = self.put_parts(bucket, key, path, size, &upload_id);
        if result.is_err() {
            // Best effort: a bucket lifecycle rule removes what this leaves.
            let _ = self.send(Method::DELETE, bucket, key, Kind::Small, |r| {
                r.query(&[("uploadId", upload_id.as_str())])
            });
        }
        result
    }

    fn put_parts(
        &self,
        bucket: &str,
        key: &str,
        path: &Path,
        size: u64,
        upload_id: &str,
    ) -> Result<(), Error> {
        let plan = plan_segments(size, self.part_size, MIN_PART, MAX_PART, MAX_PARTS);
        let etags = run_parallel(plan.len(), self.part_concurrency, |index| {
            let number = (index + 1).to_string();
            let (response, _) = self.upload("put part", bucket, key, path, plan[index], &|r| {
                r.query(&[("partNumber", number.as_str()), ("uploadId", upload_id)])
            })?;
            response
                .header("etag")
                .map(str::to_string)
                .ok_or_else(|| Error::Refused {
                    operation: "put part",
                    container: bucket.to_string(),
                    key: key.to_string(),
                    status: response.status(),
                    body: "no ETag in the answer".to_string(),
                })
        })?;
        let mut body = String::from("<CompleteMultipartUpload>");
        for (index, etag) in etags.iter().enumerate() {
            let etag = quick_xml::escape::escape(etag.as_str());
            body.push_str(&format!(
                "<Part><PartNumber>{}</PartNumber><ETag>{etag}</ETag></Part>",
                index + 1
            ));
        }
        body.push_str("</CompleteMultipartUpload>");
        self.run("complete multipart upload", bucket, key, || {
            let response = self.send(Method::POST, bucket, key, Kind::Small, |r| {
                r.query(&[("uploadId", upload_id)]).body(body.clone())
            })?;
            if response.status() != 200 {
                return Err(self.failure(response, "complete multipart upload", bucket, key));
            }
            // S3 may answer 200 and report the failure in the body.
            let text = response.text();
            if text.contains("<Error>") {
                return Err(Attempt::Transient(format!(
                    "completing a multipart upload: {text}"
                )));
            }
            Ok(())
        })
    }
}

impl ObjectClient for S3Client {
    fn ensure_container(&self, bucket: &str) -> Result<(), Error> {
        self.run("create bucket", bucket, "", || {
            let response = self.send(Method::PUT, bucket, "", Kind::Small, |r| r)?;
            let status = response.status();
            let body = response.text();
            match status {
                200 | 204 => Ok(()),
                409 if body.contains("BucketAlreadyOwnedByYou") => Ok(()),
                // SeaweedFS answers a PUT racing another PUT of the same new bucket with
                // NoSuchBucket while the other one is half done: worth another attempt.
                404 if body.contains("NoSuchBucket") => Err(Attempt::Transient(format!(
                    "HTTP 404 NoSuchBucket while creating bucket {bucket}"
                ))),
                403 => Err(Attempt::Permanent(Error::Auth {
                    url: self.url(bucket, ""),
                    detail: format!("HTTP 403: {body}"),
                })),
                _ => Err(status_attempt(status, body, "create bucket", bucket, "")),
            }
        })
    }

    fn put(
        &self,
        bucket: &str,
        key: &str,
        path: &Path,
        size: u64,
        segmented: bool,
    ) -> Result<Verified, Error> {
        if segmented {
            // The whole is checked by the caller's HEAD.
            self.put_multipart(bucket, key, path, size)
                .map(|()| Verified::Nothing)
        } else {
            self.upload("put", bucket, key, path, (0, size), &|r| r)
                .map(|(_, verified)| verified)
        }
    }

    fn head(&self, bucket: &str, key: &str) -> Result<Option<u64>, Error> {
        self.run("head", bucket, key, || {
            let response = self.send(Method::HEAD, bucket, key, Kind::Small, |r| r)?;
            match response.status() {
                200 => Ok(Some(
                    response
                        .header("content-length")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0),
                )),
                404 => Ok(None),
                _ => Err(self.failure(response, "head", bucket, key)),
            }
        })
    }

    fn get(
        &self,
        bucket: &str,
        key: &str,
        offset: u64,
        len: u64,
    ) -> Result<Option<Box<dyn Read + Send>>, Error> {
        if len == 0 {
            return Ok(self
                .head(bucket, key)?
                .map(|_| Box::new(io::empty()) as Box<dyn Read + Send>));
        }
        let range = match offset.checked_add(len) {
            Some(end) if len != u64::MAX => format!("bytes={offset}-{}", end - 1),
            _ => format!("bytes={offset}-"),
        };
        self.run("get", bucket, key, || {
            let response = self.send(Method::GET, bucket, key, Kind::Download, |r| {
                r.header("Range", range.as_str())
            })?;
            match response.status() {
                200 | 206 => Ok(Some(
                    Box::new(response.into_reader()) as Box<dyn Read + Send>
                )),
                404 => Ok(None),
                416 => Ok(Some(Box::new(io::empty()) as Box<dyn Read + Send>)),
                _ => Err(self.failure(response, "get", bucket, key)),
            }
        })
    }

    fn delete(&self, bucket: &str, key: &str, _segmented: bool) -> Result<(), Error> {
        self.run("delete", bucket, key, || {
            let response = self.send(Method::DELETE, bucket, key, Kind::Small, |r| r)?;
            match response.status() {
                200 | 204 | 404 => Ok(()),
                _ => Err(self.failure(response, "delete", bucket, key)),
            }
        })
    }

    fn list(
        &self,
        bucket: &str,
        prefix: &str,
        visit: &mut dyn FnMut(Listed) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let mut token: Option<String> = None;
        loop {
            let page = self.run("list", bucket, prefix, || {
                let response = self.send(Method::GET, bucket, "", Kind::Small, |r| {
                    let r = r.query(&[("list-type", "2"), ("prefix", prefix)]);
                    match &token {
                        Some(token) => r.query(&[("continuation-token", token.as_str())]),
                        None => r,
                    }
                })?;
                match response.status() {
                    200 => {
                        let body = response
                            .bytes()
                            .map_err(|e| Attempt::Transient(format!("listing: {e}")))?;
                        quick_xml::de::from_reader::<_, ListBucketResult>(&body[..])
                            .map(Some)
                            .map_err(|e| Attempt::Transient(format!("listing: {e}")))
                    }
                    // A bucket not created yet lists nothing, as a missing Swift container does.
                    404 => Ok(None),
                    _ => Err(self.failure(response, "list", bucket, prefix)),
                }
            })?;
            let Some(page) = page else { return Ok(()) };
            for object in page.contents {
                visit(Listed {
                    modified: parse_utc_millis(&object.last_modified).unwrap_or(i64::MAX),
                    name: object.key,
                })?;
            }
            match page.next_continuation_token {
                Some(next) if page.is_truncated => token = Some(next),
                _ => return Ok(()),
            }
        }
    }

    fn segments_container(&self, _bucket: &str) -> Option<String> {
        None
    }

    fn delete_segment(&self, bucket: &str, name: &str) -> Result<(), Error> {
        self.delete(bucket, name, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_answers_parse() {
        let listing = r#"<?xml version="1.0" encoding="UTF-8"?>
            <ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
              <Name>b</Name><Prefix></Prefix><KeyCount>2</KeyCount><MaxKeys>1000</MaxKeys>
              <IsTruncated>true</IsTruncated><NextContinuationToken>abc</NextContinuationToken>
              <Contents><Key>k1</Key><LastModified>2026-11-28T17:14:30.375Z</LastModified>
                <ETag>"e"</ETag><Size>3</Size><StorageClass>STANDARD</StorageClass></Contents>
              <Contents><Key>k2</Key><LastModified>1970-01-01T00:00:01.000Z</LastModified>
                <ETag>"e"</ETag><Size>3</Size><StorageClass>STANDARD</StorageClass></Contents>
            </ListBucketResult>"#;
        let page: ListBucketResult = quick_xml::de::from_str(listing).unwrap();
        assert!(page.is_truncated);
        assert_eq!(page.next_continuation_token.as_deref(), Some("abc"));
        let keys: Vec<_> = page.contents.iter().map(|c| c.key.as_str()).collect();
        assert_eq!(keys, ["k1", "k2"]);
        assert_eq!(
            parse_utc_millis(&page.contents[1].last_modified),
            Some(1000)
        );

        let empty: ListBucketResult = quick_xml::de::from_str(
            "<ListBucketResult><IsTruncated>false</IsTruncated></ListBucketResult>",
        )
        .unwrap();
        assert!(empty.contents.is_empty() && !empty.is_truncated);

        let started: InitiateMultipartUploadResult = quick_xml::de::from_str(
            "<InitiateMultipartUploadResult><Bucket>b</Bucket><Key>k</Key>\
             <UploadId>MjAx/Nz+g=</UploadId></InitiateMultipartUploadResult>",
        )
        .unwrap();
        assert_eq!(started.upload_id, "MjAx/Nz+g=");
    }
}
