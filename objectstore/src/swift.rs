//! OpenStack Swift's native API over reqwest, on a small tokio runtime owned by the client.
//!
//! Swift needs no request signing: a token from the auth endpoint goes in `X-Auth-Token`. So
//! this talks HTTP directly (reqwest) rather than through OpenDAL, whose Swift service buffers
//! a whole object in memory before a one-shot PUT, has no static large objects, cannot create
//! containers and takes a fixed token (no tempauth, no renewal). Bodies stream from the spool
//! file in 1 MiB chunks and responses stream to the reader. (reqwest's blocking client was
//! tried first: it moves bodies in 8 KiB pieces through one background thread shared by all
//! requests, which capped uploads at about 60% of the `swift` command line client.)

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::RwLock;
use std::time::Duration;

use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use reqwest::{Body, Client, Method, RequestBuilder};
use serde::Deserialize;
use tokio::io::AsyncReadExt;
use tokio::runtime::Runtime;

use crate::client::{
    parse_utc_millis, status_attempt, Attempt, AttemptResult, Listed, ObjectClient, Retry,
};
use crate::error::Error;

#[derive(Clone, Debug)]
struct Session {
    storage_url: String,
    token: String,
}

/// A Swift account reached with tempauth / v1 auth.
pub(crate) struct SwiftClient {
    runtime: Arc<Runtime>,
    http: Client,
    auth_url: String,
    user: String,
    key: String,
    session: RwLock<Option<Session>>,
    retry: Retry,
    timeout: Duration,
    segment_size: u64,
}

impl std::fmt::Debug for SwiftClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SwiftClient")
            .field("auth_url", &self.auth_url)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

fn transient(error: &reqwest::Error) -> Attempt {
    Attempt::Transient(error.to_string())
}

/// A response whose body is read by blocking on the client's runtime.
struct Response {
    inner: reqwest::Response,
    runtime: Arc<Runtime>,
}

impl Response {
    fn status(&self) -> reqwest::StatusCode {
        self.inner.status()
    }

    fn headers(&self) -> &reqwest::header::HeaderMap {
        self.inner.headers()
    }

    fn bytes(self) -> reqwest::Result<Bytes> {
        self.runtime
            .block_on(async move { self.inner.bytes().await })
    }

    fn into_reader(self) -> StreamRead {
        StreamRead {
            runtime: self.runtime,
            stream: Box::pin(self.inner.bytes_stream()),
            current: Bytes::new(),
        }
    }
}

fn body_text(response: Response) -> String {
    match response.bytes() {
        Ok(bytes) => String::from_utf8_lossy(&bytes[..bytes.len().min(512)]).into_owned(),
        Err(e) => format!("(body unreadable: {e})"),
    }
}

type ByteStream = std::pin::Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// A blocking `Read` over a response body.
struct StreamRead {
    runtime: Arc<Runtime>,
    stream: ByteStream,
    current: Bytes,
}

impl Read for StreamRead {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.runtime.block_on(self.stream.next()) {
                None => return Ok(0),
                Some(Ok(bytes)) => self.current = bytes,
                Some(Err(e)) => return Err(std::io::Error::other(e)),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// `len` bytes of the file from `offset`, as a body streamed in 1 MiB chunks.
fn file_body(file: std::fs::File, len: u64) -> Body {
    let file = tokio::fs::File::from_std(file);
    let chunks = futures::stream::try_unfold((file, len), |(mut file, remaining)| async move {
        if remaining == 0 {
            return Ok(None);
        }
        let n = usize::try_from(remaining.min(1 << 20)).unwrap_or(1 << 20);
        let mut buf = vec![0u8; n];
        file.read_exact(&mut buf).await?;
        Ok::<_, std::io::Error>(Some((Bytes::from(buf), (file, remaining - n as u64))))
    });
    Body::wrap_stream(chunks)
}

#[derive(Deserialize)]
struct ListEntry {
    name: String,
    last_modified: String,
}

impl SwiftClient {
    pub(crate) fn new(
        auth_url: &str,
        user: &str,
        key: &str,
        retry: Retry,
        timeout: Duration,
        segment_size: u64,
    ) -> Result<Self, Error> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("objectstore-swift")
            .enable_all()
            .build()
            .map_err(|e| Error::io("starting the Swift client's runtime", "", e))?;
        let http = Client::builder()
            .connect_timeout(timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| Error::Config(format!("HTTP client: {e}")))?;
        Ok(SwiftClient {
            runtime: Arc::new(runtime),
            http,
            auth_url: auth_url.to_string(),
            user: user.to_string(),
            key: key.to_string(),
            session: RwLock::new(None),
            retry,
            timeout,
            segment_size,
        })
    }

    fn authenticate(&self) -> AttemptResult<Session> {
        let response = self
            .http
            .get(&self.auth_url)
            .header("X-Auth-User", &self.user)
            .header("X-Auth-Key", &self.key)
            .timeout(self.timeout);
        let response = Response {
            inner: self
                .runtime
                .block_on(async move { response.send().await })
                .map_err(|e| transient(&e))?,
            runtime: self.runtime.clone(),
        };
        let status = response.status().as_u16();
        if !(200..300).contains(&status) {
            return Err(match status {
                401 | 403 => Attempt::Permanent(Error::Auth {
                    url: self.auth_url.clone(),
                    detail: format!("HTTP {status}"),
                }),
                _ => status_attempt(status, body_text(response), "authenticate", "", ""),
            });
        }
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
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
        if let Some(session) = self.session.read().expect("session lock").clone() {
            return Ok(session);
        }
        let session = self.authenticate()?;
        *self.session.write().expect("session lock") = Some(session.clone());
        Ok(session)
    }

    fn forget_session(&self) {
        *self.session.write().expect("session lock") = None;
    }

    fn url(session: &Session, container: &str, key: &str) -> String {
        if key.is_empty() {
            format!("{}/{}", session.storage_url, container)
        } else {
            format!("{}/{}/{}", session.storage_url, container, key)
        }
    }

    /// One attempt of a request: the session, the request built by `build`, sent.
    fn send(
        &self,
        method: Method,
        container: &str,
        key: &str,
        build: impl FnOnce(RequestBuilder) -> AttemptResult<RequestBuilder>,
    ) -> AttemptResult<Response> {
        let session = self.session()?;
        let request = self
            .http
            .request(method, Self::url(&session, container, key))
            .header("X-Auth-Token", &session.token);
        let request = build(request)?;
        Ok(Response {
            inner: self
                .runtime
                .block_on(async move { request.send().await })
                .map_err(|e| transient(&e))?,
            runtime: self.runtime.clone(),
        })
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
    ) -> Result<(), Error> {
        self.run("put", container, key, || {
            let mut file =
                File::open(path).map_err(|e| Attempt::Permanent(Error::io("opening", path, e)))?;
            file.seek(SeekFrom::Start(offset))
                .map_err(|e| Attempt::Permanent(Error::io("seeking in", path, e)))?;
            let response = self.send(Method::PUT, container, key, |r| {
                Ok(r.header("Content-Length", len).body(file_body(file, len)))
            })?;
            match response.status().as_u16() {
                200..=202 => Ok(()),
                status => Err(status_attempt(
                    status,
                    body_text(response),
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
            let response =
                self.send(Method::PUT, container, "", |r| Ok(r.timeout(self.timeout)))?;
            match response.status().as_u16() {
                201 | 202 | 204 => Ok(()),
                status => Err(status_attempt(
                    status,
                    body_text(response),
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
    ) -> Result<(), Error> {
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
        let mut manifest = Vec::new();
        let mut offset = 0;
        let mut index = 0u32;
        while offset < size {
            let len = self.segment_size.min(size - offset);
            let name = format!("{key}/{size}/{index:08}");
            self.put_file_range(&segments, &name, path, offset, len)?;
            manifest.push(serde_json::json!({
                "path": format!("/{segments}/{name}"),
                "etag": null,
                "size_bytes": len,
            }));
            offset += len;
            index += 1;
        }
        let body = serde_json::to_vec(&manifest).expect("a JSON array");
        let manifest_key = format!("{key}?multipart-manifest=put");
        self.run("put manifest", container, key, || {
            let response = self.send(Method::PUT, container, &manifest_key, |r| {
                Ok(r.timeout(self.timeout).body(body.clone()))
            })?;
            match response.status().as_u16() {
                200..=202 => Ok(()),
                status => Err(status_attempt(
                    status,
                    body_text(response),
                    "put manifest",
                    container,
                    key,
                )),
            }
        })
    }

    fn head(&self, container: &str, key: &str) -> Result<Option<u64>, Error> {
        self.run("head", container, key, || {
            let response =
                self.send(
                    Method::HEAD,
                    container,
                    key,
                    |r| Ok(r.timeout(self.timeout)),
                )?;
            match response.status().as_u16() {
                200 | 204 => Ok(Some(
                    response
                        .headers()
                        .get("content-length")
                        .and_then(|v| v.to_str().ok())
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
            let response = self.send(Method::GET, container, key, |r| {
                Ok(r.header("Range", range.as_str()))
            })?;
            match response.status().as_u16() {
                200 | 206 => Ok(Some(
                    Box::new(response.into_reader()) as Box<dyn Read + Send>
                )),
                404 => Ok(None),
                416 => Ok(Some(Box::new(std::io::empty()) as Box<dyn Read + Send>)),
                status => Err(status_attempt(
                    status,
                    body_text(response),
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
            let response = self.send(Method::DELETE, container, &target, |r| {
                Ok(r.timeout(self.timeout).header("Accept", "application/json"))
            })?;
            match response.status().as_u16() {
                200 | 204 | 404 if !segmented => Ok(()),
                404 => Ok(()),
                200 | 204 => {
                    // The bulk-delete answer of an SLO: status 200 with the real outcome in
                    // the body.
                    let text = body_text(response);
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
                    body_text(response),
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
                let response = self.send(Method::GET, container, "", |r| {
                    Ok(r.timeout(self.timeout).query(&[
                        ("format", "json"),
                        ("limit", "10000"),
                        ("prefix", prefix),
                        ("marker", marker.as_str()),
                    ]))
                })?;
                match response.status().as_u16() {
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
                        body_text(response),
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
