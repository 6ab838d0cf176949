//! OpenStack Swift's native API over the shared HTTP layer ([`crate::http`]).
//!
//! Swift needs no request signing: a token from the auth endpoint goes in `X-Auth-Token`. So
//! this talks HTTP directly (reqwest) rather than through OpenDAL, whose Swift service buffers
//! a whole object in memory before a one-shot PUT, has no static large objects, cannot create
//! containers and takes a fixed token (no tempauth, no renewal). Bodies stream from the spool
//! file in 1 MiB chunks and responses stream to the reader; the segments of a large object go
//! up several at a time. (reqwest's blocking client was tried first: it moves bodies in 8 KiB
//! pieces through one background thread shared by all requests, which capped uploads at about
//! 60% of the `swift` command line client.)

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::{PoisonError, RwLock};

use reqwest::{Method, RequestBuilder};
use serde::Deserialize;

use crate::client::{
    parse_utc_millis, plan_segments, run_parallel, status_attempt, Attempt, AttemptResult, Listed,
    ObjectClient, Retry, Verified,
};
use crate::config::ObjectStoreConfig;
use crate::error::Error;
use crate::transport::{etag_matches, Http, Kind, Response};

/// Swift's default limit on the segments of one static large object (`max_manifest_segments`).
const MAX_SLO_SEGMENTS: u64 = 1000;

#[derive(Clone, Debug)]
struct Session {
    storage_url: String,
    token: String,
}

/// A Swift account reached with tempauth / v1 auth.
pub(crate) struct SwiftClient {
    http: Http,
    auth_url: String,
    user: String,
    key: String,
    session: RwLock<Option<Session>>,
    retry: Retry,
    segment_size: u64,
    segment_concurrency: usize,
}

impl std::fmt::Debug for SwiftClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SwiftClient")
            .field("auth_url", &self.auth_url)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct ListEntry {
    name: String,
    last_modified: String,
}

impl SwiftClient {
    pub(crate) fn new(
        config: &ObjectStoreConfig,
        auth_url: &str,
        user: &str,
        key: &str,
        retry: Retry,
    ) -> Result<Self, Error> {
        Ok(SwiftClient {
            http: Http::new(config, "objectstore-swift")?,
            auth_url: auth_url.to_string(),
            user: user.to_string(),
            key: key.to_string(),
            session: RwLock::new(None),
            retry,
            segment_size: config.segment_size,
            segment_concurrency: config.segment_concurrency.max(1),
        })
    }

    fn authenticate(&self) -> AttemptResult<Session> {
        let request = self
            .http
            .request(Method::GET, &self.auth_url)
            .header("X-Auth-User", &self.user)
            .header("X-Auth-Key", &self.key)
            .build()
            .map_err(|e| Attempt::Permanent(Error::Config(format!("auth_url: {e}"))))?;
        let response = self.http.send_small(request)?;
        let status = response.status();
        if !(200..300).contains(&status) {
            return Err(match status {
                401 | 403 => Attempt::Permanent(Error::Auth {
                    url: self.auth_url.clone(),
                    detail: format!("HTTP {status}"),
                }),
                _ => status_attempt(status, response.text(), "authenticate", "", ""),
            });
        }
        let header = |name: &str| response.header(name).map(str::to_string);
        match (header("x-storage-url"), header("x-auth-token")) {
            (Some(storage_url), Some(token)) => Ok(Session {
                storage_url: storage_url.trim_end_matches('/').to_string(),
                token,
            }),
            _ => Err(Attempt::Permanent(Error::Auth {
                url: self.auth_url.clone(),
                detail: "no X-Storage-Url or X-Auth-Token in the answer".to_string(),
            })),
        }
    }

    fn session(&self) -> AttemptResult<Session> {
        if let Some(session) = self
            .session
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
        {
            return Ok(session);
        }
        let session = self.authenticate()?;
        *self.session.write().unwrap_or_else(PoisonError::into_inner) = Some(session.clone());
        Ok(session)
    }

    fn forget_session(&self) {
        *self.session.write().unwrap_or_else(PoisonError::into_inner) = None;
    }

    fn url(session: &Session, container: &str, key: &str) -> String {
        if key.is_empty() {
            format!("{}/{}", session.storage_url, container)
        } else {
            format!("{}/{}/{}", session.storage_url, container, key)
        }
    }

    /// The request `build` makes, with the session's token.
    fn build(
        &self,
        method: Method,
        container: &str,
        key: &str,
        build: impl FnOnce(RequestBuilder) -> RequestBuilder,
    ) -> AttemptResult<reqwest::Request> {
        let session = self.session()?;
        let request = self
            .http
            .request(method, &Self::url(&session, container, key))
            .header("X-Auth-Token", &session.token);
        build(request)
            .build()
            .map_err(|e| Attempt::Permanent(Error::Config(format!("storage URL: {e}"))))
    }

    /// One attempt of a request without a request body of blob bytes.
    fn send(
        &self,
        method: Method,
        container: &str,
        key: &str,
        kind: Kind,
        build: impl FnOnce(RequestBuilder) -> RequestBuilder,
    ) -> AttemptResult<Response> {
        let request = self.build(method, container, key, build)?;
        self.http.send(kind, request)
    }

    fn run<T>(
        &self,
        operation: &'static str,
        container: &str,
        key: &str,
        attempt: impl FnMut() -> AttemptResult<T>,
    ) -> Result<T, Error> {
        self.retry.run(operation, container, key, attempt, &|| {
            self.forget_session()
        })
    }

    fn put_file_range(
        &self,
        container: &str,
        key: &str,
        path: &Path,
        offset: u64,
        len: u64,
    ) -> Result<Verified, Error> {
        self.run("put", container, key, || {
            let mut file =
                File::open(path).map_err(|e| Attempt::Permanent(Error::io("opening", path, e)))?;
            file.seek(SeekFrom::Start(offset))
                .map_err(|e| Attempt::Permanent(Error::io("seeking in", path, e)))?;
            let request = self.build(Method::PUT, container, key, |r| {
                r.header("Content-Length", len)
            })?;
            let (response, md5) = self.http.send_upload(request, file, len)?;
            match response.status() {
                200..=202 => match etag_matches(response.header("etag"), md5.as_ref()) {
                    Some(true) => Ok(Verified::Content),
                    None => Ok(Verified::Nothing),
                    Some(false) => Err(Attempt::Transient(format!(
                        "the ETag of {container}/{key}, {:?}, is not the MD5 of the bytes sent: \
                         damaged on the way",
                        response.header("etag")
                    ))),
                },
                status => Err(status_attempt(
                    status,
                    response.text(),
                    "put",
                    container,
                    key,
                )),
            }
        })
    }
}

impl ObjectClient for SwiftClient {
    fn ensure_container(&self, container: &str) -> Result<(), Error> {
        self.run("create container", container, "", || {
            let response = self.send(Method::PUT, container, "", Kind::Small, |r| r)?;
            match response.status() {
                201 | 202 | 204 => Ok(()),
                status => Err(status_attempt(
                    status,
                    response.text(),
                    "create container",
                    container,
                    "",
                )),
            }
        })
    }

    fn put(
        &self,
        container: &str,
        key: &str,
        path: &Path,
        size: u64,
        segmented: bool,
    ) -> Result<Verified, Error> {
        if !segmented {
            return self.put_file_range(container, key, path, 0, size);
        }
        // A static large object: the segments first, in their own container, then the
        // manifest. Until the manifest is written nothing is visible under `key`; segments of
        // an upload that never got its manifest are removed by the sweep.
        let segments = self
            .segments_container(container)
            .expect("Swift keeps segments apart");
        self.ensure_container(&segments)?;
        let plan = plan_segments(size, self.segment_size, 1, u64::MAX, MAX_SLO_SEGMENTS);
        let manifest = run_parallel(plan.len(), self.segment_concurrency, |index| {
            let (offset, len) = plan[index];
            let name = format!("{key}/{size}/{index:08}");
            // The manifest is checked by the caller's HEAD (Swift checks each segment's size).
            self.put_file_range(&segments, &name, path, offset, len)?;
            Ok(serde_json::json!({
                "path": format!("/{segments}/{name}"),
                "etag": null,
                "size_bytes": len,
            }))
        })?;
        let body = serde_json::to_vec(&manifest).expect("a JSON array");
        let manifest_key = format!("{key}?multipart-manifest=put");
        self.run("put manifest", container, key, || {
            let response = self.send(Method::PUT, container, &manifest_key, Kind::Small, |r| {
                r.body(body.clone())
            })?;
            match response.status() {
                200..=202 => Ok(()),
                status => Err(status_attempt(
                    status,
                    response.text(),
                    "put manifest",
                    container,
                    key,
                )),
            }
        })?;
        Ok(Verified::Nothing)
    }

    fn head(&self, container: &str, key: &str) -> Result<Option<u64>, Error> {
        self.run("head", container, key, || {
            let response = self.send(Method::HEAD, container, key, Kind::Small, |r| r)?;
            match response.status() {
                200 | 204 => Ok(Some(
                    response
                        .header("content-length")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0),
                )),
                404 => Ok(None),
                status => Err(status_attempt(
                    status,
                    String::new(),
                    "head",
                    container,
                    key,
                )),
            }
        })
    }

    fn get(
        &self,
        container: &str,
        key: &str,
        offset: u64,
        len: u64,
    ) -> Result<Option<Box<dyn Read + Send>>, Error> {
        if len == 0 {
            return Ok(self
                .head(container, key)?
                .map(|_| Box::new(std::io::empty()) as Box<dyn Read + Send>));
        }
        let range = match offset.checked_add(len) {
            Some(end) if len != u64::MAX => format!("bytes={offset}-{}", end - 1),
            _ => format!("bytes={offset}-"),
        };
        self.run("get", container, key, || {
            let response = self.send(Method::GET, container, key, Kind::Download, |r| {
                r.header("Range", range.as_str())
            })?;
            match response.status() {
                200 | 206 => Ok(Some(
                    Box::new(response.into_reader()) as Box<dyn Read + Send>
                )),
                404 => Ok(None),
                416 => Ok(Some(Box::new(std::io::empty()) as Box<dyn Read + Send>)),
                status => Err(status_attempt(
                    status,
                    response.text(),
                    "get",
                    container,
                    key,
                )),
            }
        })
    }

    fn delete(&self, container: &str, key: &str, segmented: bool) -> Result<(), Error> {
        let target = if segmented {
            format!("{key}?multipart-manifest=delete")
        } else {
            key.to_string()
        };
        self.run("delete", container, key, || {
            let response = self.send(Method::DELETE, container, &target, Kind::Small, |r| {
                r.header("Accept", "application/json")
            })?;
            match response.status() {
                200 | 204 | 404 if !segmented => Ok(()),
                404 => Ok(()),
                200 | 204 => {
                    // The bulk-delete answer of an SLO: status 200 with the real outcome in
                    // the body.
                    let text = response.text();
                    let parsed: serde_json::Value =
                        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
                    let status = parsed
                        .get("Response Status")
                        .and_then(|s| s.as_str())
                        .unwrap_or("");
                    if status.starts_with("200") || status.starts_with("404") {
                        Ok(())
                    } else if status.starts_with('5') || status.is_empty() {
                        Err(Attempt::Transient(format!("SLO delete: {text}")))
                    } else {
                        Err(Attempt::Permanent(Error::Refused {
                            operation: "delete",
                            container: container.to_string(),
                            key: key.to_string(),
                            status: 200,
                            body: text,
                        }))
                    }
                }
                status => Err(status_attempt(
                    status,
                    response.text(),
                    "delete",
                    container,
                    key,
                )),
            }
        })
    }

    fn list(
        &self,
        container: &str,
        prefix: &str,
        visit: &mut dyn FnMut(Listed) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let mut marker = String::new();
        loop {
            let page: Option<Vec<ListEntry>> = self.run("list", container, prefix, || {
                let response = self.send(Method::GET, container, "", Kind::Small, |r| {
                    r.query(&[
                        ("format", "json"),
                        ("limit", "10000"),
                        ("prefix", prefix),
                        ("marker", marker.as_str()),
                    ])
                })?;
                match response.status() {
                    200 => response
                        .bytes()
                        .map_err(|e| Attempt::Transient(format!("listing: {e}")))
                        .and_then(|body| {
                            serde_json::from_slice::<Vec<ListEntry>>(&body)
                                .map_err(|e| Attempt::Transient(format!("listing: {e}")))
                        })
                        .map(Some),
                    204 => Ok(Some(Vec::new())),
                    404 => Ok(None),
                    status => Err(status_attempt(
                        status,
                        response.text(),
                        "list",
                        container,
                        prefix,
                    )),
                }
            })?;
            let Some(page) = page else { return Ok(()) };
            if page.is_empty() {
                return Ok(());
            }
            marker = page.last().map(|e| e.name.clone()).unwrap_or_default();
            for entry in page {
                let modified = parse_utc_millis(&entry.last_modified).unwrap_or(i64::MAX);
                visit(Listed {
                    name: entry.name,
                    modified,
                })?;
            }
        }
    }

    fn segments_container(&self, container: &str) -> Option<String> {
        Some(format!("{container}-segments"))
    }

    fn delete_segment(&self, container: &str, name: &str) -> Result<(), Error> {
        self.delete(container, name, false)
    }
}
