//! The HTTP layer both protocols share: one reqwest client over rustls (the system's roots plus
//! an optional extra CA), a small tokio runtime that the blocking callers drive, and the time
//! limits.
//!
//! Three limits, because one overall timeout cannot tell a stalled transfer from a long one:
//! - a *connect* timeout (`request_timeout_ms`) on every connection;
//! - a *whole-request* timeout (`request_timeout_ms`) on requests without a large body (HEAD,
//!   DELETE, listings, manifests, authentication), body included;
//! - an *idle* timeout (`idle_timeout_ms`) on transfers of blob bytes: an upload fails when the
//!   server has taken no body bytes (and not answered) for that long, a download when no body
//!   byte has arrived for that long, however long the whole transfer takes. The attempt then
//!   fails as transient: the caller retries (uploads) or resumes (downloads) within the retry
//!   budget.

use std::fs::File;
use std::io::{self, Read};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use md5::{Digest as _, Md5};
use reqwest::{Body, Client, Request};
use tokio::io::AsyncReadExt;
use tokio::runtime::Runtime;

use crate::client::{Attempt, AttemptResult};
use crate::config::ObjectStoreConfig;
use crate::error::Error;

/// Bytes of the spool file read per body chunk of an upload.
const UPLOAD_CHUNK: u64 = 1 << 20;

/// Uploads up to this size are checked by the MD5 of their bytes against the server's ETag
/// instead of by a HEAD. Below it the HEAD's round trip costs the servers more than the MD5
/// costs the client (a HEAD is about as much work for Swift as a small PUT); above it the MD5
/// (about 1.5 ms of CPU a MiB) costs more than one HEAD, and a HEAD is used.
pub(crate) const ETAG_CHECK_MAX: u64 = 4 << 20;

/// How a request's answer is awaited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// No large body either way: the whole exchange within the request timeout.
    Small,
    /// The answer carries blob bytes: the idle timeout applies.
    Download,
}

/// A client, its runtime and its time limits; cheap to clone.
#[derive(Clone)]
pub(crate) struct Http {
    runtime: Arc<Runtime>,
    client: Client,
    request_timeout: Duration,
    idle_timeout: Duration,
}

impl std::fmt::Debug for Http {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http")
            .field("request_timeout", &self.request_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .finish_non_exhaustive()
    }
}

impl Http {
    /// The client of `config`, its runtime's threads named `thread_name`.
    pub(crate) fn new(config: &ObjectStoreConfig, thread_name: &str) -> Result<Self, Error> {
        let request_timeout = Duration::from_millis(config.request_timeout_ms.max(1));
        let idle_timeout = Duration::from_millis(config.idle_timeout_ms.max(1));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(thread_name)
            .enable_all()
            .build()
            .map_err(|e| Error::io("starting the HTTP client's runtime", "", e))?;
        let mut builder = Client::builder()
            .use_rustls_tls()
            .connect_timeout(request_timeout)
            .pool_idle_timeout(Duration::from_secs(30));
        if let Some(path) = &config.ca_file {
            let pem = std::fs::read(path)
                .map_err(|e| Error::io("reading the CA certificate file", path, e))?;
            let certificates = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                Error::Config(format!("ca_file {}: {}", path.display(), error_chain(&e)))
            })?;
            if certificates.is_empty() {
                return Err(Error::Config(format!(
                    "ca_file {}: no PEM certificate in it",
                    path.display()
                )));
            }
            for certificate in certificates {
                builder = builder.add_root_certificate(certificate);
            }
        }
        let client = builder
            .build()
            .map_err(|e| Error::Config(format!("HTTP client: {}", error_chain(&e))))?;
        Ok(Http {
            runtime: Arc::new(runtime),
            client,
            request_timeout,
            idle_timeout,
        })
    }

    /// A request builder on this client.
    pub(crate) fn request(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        self.client.request(method, url)
    }

    /// Sends a request without a body of blob bytes, awaiting its answer as `kind` says.
    pub(crate) fn send(&self, kind: Kind, request: Request) -> AttemptResult<Response> {
        match kind {
            Kind::Small => self.send_small(request),
            Kind::Download => self.send_download(request),
        }
    }

    /// Sends a request without a large body; the whole exchange, the answer's body included,
    /// must end within the request timeout.
    pub(crate) fn send_small(&self, mut request: Request) -> AttemptResult<Response> {
        *request.timeout_mut() = Some(self.request_timeout);
        let client = self.client.clone();
        let response = self
            .runtime
            .block_on(async move { client.execute(request).await })
            .map_err(|e| send_error(&e))?;
        Ok(self.response(response))
    }

    /// Sends a request whose answer may carry a large body (a GET of blob bytes): its headers
    /// must come within the idle timeout, then each piece of the body (see [`StreamRead`]).
    pub(crate) fn send_download(&self, request: Request) -> AttemptResult<Response> {
        let client = self.client.clone();
        let url = request.url().clone();
        let idle = self.idle_timeout;
        let response = self
            .runtime
            .block_on(async move { tokio::time::timeout(idle, client.execute(request)).await })
            .map_err(|_| {
                Attempt::Transient(format!(
                    "no answer from {} for {idle:?} (idle timeout)",
                    redacted(&url)
                ))
            })?
            .map_err(|e| send_error(&e))?;
        Ok(self.response(response))
    }

    /// Sends `request` with `len` bytes of `file` (from its current position) as the body,
    /// streamed in 1 MiB chunks, and returns the answer with, for uploads up to
    /// [`ETAG_CHECK_MAX`], the MD5 of the bytes sent (computed on the way, to check the
    /// server's ETag). The attempt fails as transient when the server takes no body bytes, and
    /// does not answer, for the idle timeout: a stalled server cannot hold an upload forever,
    /// while a slow one that keeps taking bytes is never cut off.
    pub(crate) fn send_upload(
        &self,
        mut request: Request,
        file: File,
        len: u64,
    ) -> AttemptResult<(Response, Option<[u8; 16]>)> {
        let progress = Arc::new(Progress::new(len <= ETAG_CHECK_MAX));
        *request.body_mut() = Some(file_body(file, len, progress.clone()));
        let url = request.url().clone();
        let idle = self.idle_timeout;
        let client = self.client.clone();
        let watched = progress.clone();
        let outcome = self.runtime.block_on(async move {
            let send = client.execute(request);
            tokio::pin!(send);
            loop {
                let wait = idle.saturating_sub(watched.idle());
                tokio::select! {
                    result = &mut send => return Some(result),
                    () = tokio::time::sleep(wait) => {
                        if watched.idle() >= idle {
                            // Dropping `send` closes the connection.
                            return None;
                        }
                    }
                }
            }
        });
        match outcome {
            Some(Ok(response)) => Ok((self.response(response), progress.md5())),
            Some(Err(e)) => Err(send_error(&e)),
            None => Err(Attempt::Transient(format!(
                "upload to {} stalled: no progress for {idle:?} (idle timeout) after {} of {len} \
                 bytes were taken",
                redacted(&url),
                progress.sent.load(Ordering::Relaxed)
            ))),
        }
    }

    fn response(&self, inner: reqwest::Response) -> Response {
        Response {
            inner,
            runtime: self.runtime.clone(),
            request_timeout: self.request_timeout,
            idle_timeout: self.idle_timeout,
        }
    }
}

/// The URL without its query (S3 upload ids, listing markers): for messages.
fn redacted(url: &reqwest::Url) -> String {
    let mut url = url.clone();
    url.set_query(None);
    url.to_string()
}

/// An error and its causes, `outer: inner: innermost`: reqwest's own message ("error sending
/// request") does not say what went wrong.
pub(crate) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Whether a TLS handshake failed (an untrusted or mismatched certificate, a protocol
/// mismatch): retrying will not help. The rustls error sits deep in reqwest's chain, inside an
/// `io::Error` and boxed errors whose `source` skips the error they wrap, so each is opened.
fn is_tls_failure(error: &(dyn std::error::Error + 'static)) -> bool {
    if error.is::<rustls::Error>() {
        return true;
    }
    if let Some(inner) = error
        .downcast_ref::<io::Error>()
        .and_then(io::Error::get_ref)
    {
        if is_tls_failure(inner) {
            return true;
        }
    }
    error.source().is_some_and(is_tls_failure)
}

/// Classifies a failure to send a request or to receive its answer.
fn send_error(error: &reqwest::Error) -> Attempt {
    let detail = error_chain(error);
    if is_tls_failure(error) {
        return Attempt::Permanent(Error::Tls {
            url: error.url().map(redacted).unwrap_or_default(),
            detail,
        });
    }
    Attempt::Transient(detail)
}

/// When an upload body last moved, and the MD5 of what it sent.
#[derive(Debug)]
struct Progress {
    start: Instant,
    /// Milliseconds from `start` to the last chunk the client took.
    last: AtomicU64,
    /// Body bytes taken so far.
    sent: AtomicU64,
    md5: Option<std::sync::Mutex<Md5>>,
}

impl Progress {
    fn new(with_md5: bool) -> Self {
        Progress {
            start: Instant::now(),
            last: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            md5: with_md5.then(|| std::sync::Mutex::new(Md5::new())),
        }
    }

    fn moved(&self, chunk: &[u8]) {
        if let Some(md5) = &self.md5 {
            md5.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .update(chunk);
        }
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(now, Ordering::Relaxed);
        self.sent.fetch_add(chunk.len() as u64, Ordering::Relaxed);
    }

    fn md5(&self) -> Option<[u8; 16]> {
        let md5 = self.md5.as_ref()?;
        Some(
            md5.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
                .finalize()
                .into(),
        )
    }

    fn idle(&self) -> Duration {
        self.start
            .elapsed()
            .saturating_sub(Duration::from_millis(self.last.load(Ordering::Relaxed)))
    }
}

/// `len` bytes of `file` from its position, as a body streamed in 1 MiB chunks. The client
/// takes the next chunk only when the previous one went into the socket, so each chunk taken
/// is progress.
fn file_body(file: File, len: u64, progress: Arc<Progress>) -> Body {
    let file = tokio::fs::File::from_std(file);
    let chunks = futures::stream::try_unfold(
        (file, len, progress),
        |(mut file, remaining, progress)| async move {
            if remaining == 0 {
                return Ok(None);
            }
            let n = usize::try_from(remaining.min(UPLOAD_CHUNK)).unwrap_or(1 << 20);
            let mut buf = vec![0u8; n];
            file.read_exact(&mut buf).await?;
            progress.moved(&buf);
            Ok::<_, io::Error>(Some((
                Bytes::from(buf),
                (file, remaining - n as u64, progress),
            )))
        },
    );
    Body::wrap_stream(chunks)
}

/// Whether an upload's answer confirms what was sent: `Some(true)` when its ETag is the MD5 of
/// the bytes sent, `Some(false)` when it is an MD5 but another one (the bytes were damaged on
/// the way), `None` when no MD5 was computed (a large upload) or the ETag is no plain MD5 (S3
/// with server-side encryption, some S3-compatible stores): then a HEAD checks the size.
pub(crate) fn etag_matches(etag: Option<&str>, md5: Option<&[u8; 16]>) -> Option<bool> {
    let md5 = md5?;
    let etag = etag?.trim().trim_matches('"');
    if etag.len() != 32 || !etag.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some(etag.eq_ignore_ascii_case(&hex::encode(md5)))
}

/// An answer whose body is read by blocking on the client's runtime.
pub(crate) struct Response {
    inner: reqwest::Response,
    runtime: Arc<Runtime>,
    request_timeout: Duration,
    idle_timeout: Duration,
}

impl Response {
    pub(crate) fn status(&self) -> u16 {
        self.inner.status().as_u16()
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.inner.headers().get(name).and_then(|v| v.to_str().ok())
    }

    /// The whole (small) body, within the request timeout.
    pub(crate) fn bytes(self) -> Result<Bytes, String> {
        let limit = self.request_timeout;
        let inner = self.inner;
        match self
            .runtime
            .block_on(async move { tokio::time::timeout(limit, inner.bytes()).await })
        {
            Ok(Ok(bytes)) => Ok(bytes),
            Ok(Err(e)) => Err(error_chain(&e)),
            Err(_) => Err(format!("the body did not arrive within {limit:?}")),
        }
    }

    /// The start of the body, for error messages.
    pub(crate) fn text(self) -> String {
        match self.bytes() {
            Ok(bytes) => String::from_utf8_lossy(&bytes[..bytes.len().min(512)]).into_owned(),
            Err(e) => format!("(body unreadable: {e})"),
        }
    }

    /// The body as a blocking reader with the idle timeout.
    pub(crate) fn into_reader(self) -> StreamRead {
        StreamRead {
            url: redacted(self.inner.url()),
            runtime: self.runtime,
            idle_timeout: self.idle_timeout,
            stream: Box::pin(self.inner.bytes_stream()),
            current: Bytes::new(),
        }
    }
}

type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// A blocking `Read` over an answer's body. A read that gets no byte for the idle timeout
/// fails with [`io::ErrorKind::TimedOut`] (the backend's reader then resumes with a new ranged
/// request, within the retry budget).
pub(crate) struct StreamRead {
    url: String,
    runtime: Arc<Runtime>,
    idle_timeout: Duration,
    stream: ByteStream,
    current: Bytes,
}

impl Read for StreamRead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            let idle = self.idle_timeout;
            let stream = &mut self.stream;
            match self
                .runtime
                .block_on(async move { tokio::time::timeout(idle, stream.next()).await })
            {
                Err(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "download from {} stalled: no bytes for {idle:?} (idle timeout)",
                            self.url
                        ),
                    ))
                }
                Ok(None) => return Ok(0),
                Ok(Some(Ok(bytes))) => self.current = bytes,
                Ok(Some(Err(e))) => return Err(io::Error::other(error_chain(&e))),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_etag_proves_the_content_only_when_it_is_the_md5_sent() {
        let md5: [u8; 16] = Md5::digest(b"hello").into();
        let hex = "5d41402abc4b2a76b9719d911017c592";
        assert_eq!(etag_matches(Some(hex), Some(&md5)), Some(true));
        // S3 quotes it; some servers use upper case.
        assert_eq!(
            etag_matches(Some(&format!("\"{hex}\"")), Some(&md5)),
            Some(true)
        );
        assert_eq!(
            etag_matches(Some(&hex.to_uppercase()), Some(&md5)),
            Some(true)
        );
        assert_eq!(
            etag_matches(Some("00000000000000000000000000000000"), Some(&md5)),
            Some(false)
        );
        // A multipart ETag, an encrypted object's ETag, none: only a HEAD can tell.
        assert_eq!(
            etag_matches(Some(&format!("\"{hex}-3\"")), Some(&md5)),
            None
        );
        assert_eq!(etag_matches(Some("opaque"), Some(&md5)), None);
        assert_eq!(etag_matches(None, Some(&md5)), None);
        assert_eq!(etag_matches(Some(hex), None), None, "no MD5 computed");
    }

    #[test]
    fn error_chains_show_every_cause_once() {
        let inner = io::Error::new(io::ErrorKind::InvalidData, "invalid peer certificate");
        let outer = io::Error::other(inner);
        assert_eq!(error_chain(&outer), "invalid peer certificate");
        assert!(!is_tls_failure(&outer));
        let tls = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        assert!(
            is_tls_failure(&io::Error::other(tls)),
            "found inside two io::Errors"
        );
    }
}
