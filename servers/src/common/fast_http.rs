//! A connection's first requests read straight from the socket: while they are hot reads a
//! service answers in place (a plain `GET` without a body: person-in-team, is-merged), this
//! loop parses them with `httparse` and writes each answer in one `write` (a large answer
//! the service keeps sealed: its head, then its file with `sendfile`); at the first
//! request it does not take (any other method or route, a body, `Expect`, `Upgrade`, a
//! `Connection` other than `close` or `keep-alive`, HTTP/1.0, a malformed or oversized head)
//! it hands the connection, with every byte it has read and not answered, to hyper and the
//! router for the rest of its life. A request with `Connection: close` (HAProxy's `option
//! http-server-close` sends every request so) is answered and the connection closed, as hyper
//! does; `X-Forwarded-For` goes to the service's access check as it does to the router's.
//!
//! Why: a hot read costs the index a microsecond or two, while hyper and axum around it cost
//! several (a `Request` and its header map, the service stack, a `Response` and its body
//! frames); nginx serving the same answer as a static file spends about 8 us a request on
//! this machine, the directory through hyper 12 (benches/servers/RESULTS.md, issue 18).
//!
//! What stays the router's: every refusal it would give is given by the router (a service's
//! [`FastRoutes::answer`] returns `None` for them), and an answer given here has the router's
//! status, body and headers (`content-type`, `content-length`, `date`), its metrics and its
//! concurrency limit. Pipelined requests are answered in order.

use std::cell::RefCell;
use std::io::{self, Write as _};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use bytes::{Buf, Bytes, BytesMut};
use rustix::net::SendFlags;
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::metrics::RequestGuard;
use super::sealed_body::SealedBody;

/// A request the loop understood: a `GET` of HTTP/1.1 with no body and none of the headers
/// that change how a connection or a request is handled.
#[derive(Debug)]
pub struct FastRequest<'a> {
    /// The path, not decoded.
    pub path: &'a str,
    /// The query string, if any, not decoded.
    pub query: Option<&'a str>,
    /// The `Authorization` header's value.
    pub authorization: Option<&'a [u8]>,
    /// The TCP peer.
    pub peer: SocketAddr,
    /// The PROXY header's source address, when the connection had one.
    pub proxied: Option<IpAddr>,
    /// The request's `X-Forwarded-For` values (none: an empty map, which does not allocate),
    /// for the access check's [`super::proxy::client_address`].
    pub forwarded_for: HeaderMap,
}

/// A complete answer: a JSON body with its status and any extra headers.
#[derive(Debug)]
pub struct FastReply {
    /// The status.
    pub status: StatusCode,
    /// Headers beyond `content-type`, `content-length` and `date` (an error's
    /// `www-authenticate` or `retry-after`, say).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The JSON body.
    pub body: ReplyBody,
    /// The request's metrics and concurrency permit, finished once the answer is written.
    pub guard: RequestGuard,
}

/// An answer's body: bytes, or bytes kept with a sealed copy that the loop sends with
/// `sendfile` (a large answer served many times: no copy from user memory per request).
#[derive(Clone, Debug)]
pub enum ReplyBody {
    /// Bytes written from memory.
    Bytes(Bytes),
    /// Bytes sent from their sealed file.
    Sealed(Arc<SealedBody>),
}

impl ReplyBody {
    /// The body's bytes in memory.
    pub fn bytes(&self) -> &Bytes {
        match self {
            ReplyBody::Bytes(bytes) => bytes,
            ReplyBody::Sealed(sealed) => sealed.bytes(),
        }
    }
}

impl From<ReplyBody> for Bytes {
    fn from(body: ReplyBody) -> Bytes {
        match body {
            ReplyBody::Bytes(bytes) => bytes,
            ReplyBody::Sealed(sealed) => sealed.bytes().clone(),
        }
    }
}

/// The hot reads of a service.
pub trait FastRoutes: Send + Sync + std::fmt::Debug + 'static {
    /// The answer to `request`, or `None` to leave it (and the connection) to the router.
    fn answer(&self, request: &FastRequest<'_>) -> Option<FastReply>;
}

/// How [`answer_hot_reads`] ended.
#[derive(Debug)]
pub(crate) enum Ended {
    /// The client closed, went idle, stalled in a head, or the server is stopping.
    Closed,
    /// A request for the router: these bytes (that request and whatever followed it) come
    /// before anything still unread on the socket.
    HandOff(Bytes),
}

/// The limits the loop applies, the same as hyper's on the connection.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LoopLimits {
    /// The largest head; a longer one goes to hyper, which answers 431.
    pub max_header_bytes: usize,
    /// How long a started head may take.
    pub header_read_timeout: Duration,
    /// How long a connection may wait between requests.
    pub idle_timeout: Duration,
}

/// Answers `stream`'s requests while `routes` takes them (see the module documentation).
pub(crate) async fn answer_hot_reads(
    stream: &mut TcpStream,
    routes: &dyn FastRoutes,
    peer: SocketAddr,
    proxied: Option<IpAddr>,
    limits: LoopLimits,
    stop: &mut watch::Receiver<bool>,
) -> Ended {
    let mut buf = BytesMut::with_capacity(4096);
    let mut out = Vec::with_capacity(1024);
    // One timer for the connection, moved when it fires or when a head arrives in parts: a
    // timer set and cleared around every read cost more than the answer's HTTP. The time of
    // the last read and of a partial head's first bytes are kept instead, and checked when
    // the timer fires.
    let mut last_read = Instant::now();
    let mut head_started: Option<Instant> = None;
    let timer = tokio::time::sleep(limits.idle_timeout);
    tokio::pin!(timer);
    // Made once: a new `changed()` per request would join and leave the channel's waiters.
    let stopping = stop.changed();
    tokio::pin!(stopping);
    loop {
        if !buf.is_empty() {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut request = httparse::Request::new(&mut headers);
            match request.parse(&buf) {
                Ok(httparse::Status::Complete(head_len)) => {
                    let Some((request, close)) = understood(&request, peer, proxied) else {
                        return Ended::HandOff(buf.freeze());
                    };
                    let Some(reply) = routes.answer(&request) else {
                        return Ended::HandOff(buf.freeze());
                    };
                    let FastReply {
                        status,
                        headers,
                        body,
                        guard,
                    } = reply;
                    let length = body.bytes().len();
                    out.clear();
                    write_head(&mut out, status, &headers, length, close);
                    let idle = limits.idle_timeout;
                    let written = match &body {
                        ReplyBody::Bytes(bytes) if bytes.len() <= 16 << 10 => {
                            out.extend_from_slice(bytes);
                            write_moving(stream, &out, idle).await
                        }
                        ReplyBody::Bytes(bytes) => match write_moving(stream, &out, idle).await {
                            Ok(()) => write_moving(stream, bytes, idle).await,
                            Err(error) => Err(error),
                        },
                        ReplyBody::Sealed(sealed) => send_sealed(stream, &out, sealed, idle).await,
                    };
                    guard.finish_written(status, length);
                    if written.is_err() {
                        return Ended::Closed;
                    }
                    if close {
                        // A FIN after the answer, as hyper sends.
                        let _ = stream.shutdown().await;
                        return Ended::Closed;
                    }
                    buf.advance(head_len);
                    head_started = None;
                    continue;
                }
                Ok(httparse::Status::Partial) if buf.len() < limits.max_header_bytes => {
                    if head_started.is_none() {
                        head_started = Some(last_read);
                        let deadline = last_read + limits.header_read_timeout;
                        if deadline < timer.deadline().into_std() {
                            timer.as_mut().reset(deadline.into());
                        }
                    }
                }
                // Too long, malformed, or more headers than kept here: hyper answers.
                Ok(httparse::Status::Partial) | Err(_) => return Ended::HandOff(buf.freeze()),
            }
        }
        let idle = buf.is_empty();
        tokio::select! {
            read = stream.read_buf(&mut buf) => match read {
                Ok(n) if n > 0 => last_read = Instant::now(),
                // End of stream or an error.
                _ => return Ended::Closed,
            },
            () = &mut timer => {
                // Between requests the idle limit applies; within a head, the head's.
                let deadline = match head_started {
                    Some(started) => started + limits.header_read_timeout,
                    None => last_read + limits.idle_timeout,
                };
                if Instant::now() >= deadline {
                    return Ended::Closed;
                }
                timer.as_mut().reset(deadline.into());
            }
            // Stopping: a connection between requests closes; one in a head finishes it.
            _ = &mut stopping, if idle => return Ended::Closed,
        }
    }
}

/// Writes all of `data`, failing once the client has taken no byte for `idle` (a client that
/// stops reading an answer must not hold its connection for ever). A write that completes at
/// once, as the hot answers do, never sets the timer.
async fn write_moving(stream: &mut TcpStream, mut data: &[u8], idle: Duration) -> io::Result<()> {
    while !data.is_empty() {
        let written = tokio::time::timeout(idle, stream.write(data))
            .await
            .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
        if written == 0 {
            return Err(io::Error::from(io::ErrorKind::WriteZero));
        }
        data = &data[written..];
    }
    Ok(())
}

/// Writes `head`, then `sealed`'s file with `sendfile`, under [`write_moving`]'s rule. The
/// head goes with `MSG_MORE`, so that it leaves in the body's first segment rather than in a
/// packet of its own.
async fn send_sealed(
    stream: &TcpStream,
    head: &[u8],
    sealed: &SealedBody,
    idle: Duration,
) -> io::Result<()> {
    let flags = SendFlags::MORE | SendFlags::NOSIGNAL;
    send_moving(stream, head.len(), idle, |done| {
        Ok(rustix::net::send(stream, &head[done..], flags)?)
    })
    .await?;
    let length = sealed.bytes().len();
    send_moving(stream, length, idle, |done| {
        // An offset of our own: the file is shared by every connection sending it.
        let mut offset = done as u64;
        Ok(rustix::fs::sendfile(
            stream,
            sealed.file(),
            Some(&mut offset),
            length - done,
        )?)
    })
    .await
}

/// Calls `send` with the count of bytes sent so far until `length` are, each call when the
/// socket takes more; fails once no byte was taken for `idle`.
async fn send_moving(
    stream: &TcpStream,
    length: usize,
    idle: Duration,
    mut send: impl FnMut(usize) -> io::Result<usize>,
) -> io::Result<()> {
    let mut done = 0;
    while done < length {
        let sent = tokio::time::timeout(idle, stream.async_io(Interest::WRITABLE, || send(done)))
            .await
            .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
        if sent == 0 {
            return Err(io::Error::from(io::ErrorKind::WriteZero));
        }
        done += sent;
    }
    Ok(())
}

/// The request's parts when it is one this loop may answer, and whether it asked for the
/// connection to be closed after it.
fn understood<'a>(
    request: &httparse::Request<'_, 'a>,
    peer: SocketAddr,
    proxied: Option<IpAddr>,
) -> Option<(FastRequest<'a>, bool)> {
    if request.method != Some("GET") || request.version != Some(1) {
        return None;
    }
    let target = request.path?;
    if !target.starts_with('/') {
        return None;
    }
    let mut authorization = None;
    let mut close = false;
    let mut forwarded_for = HeaderMap::new();
    for header in request.headers.iter() {
        let name = header.name;
        if name.eq_ignore_ascii_case("authorization") {
            if authorization.replace(header.value).is_some() {
                return None;
            }
        } else if name.eq_ignore_ascii_case("connection") {
            if header.value.eq_ignore_ascii_case(b"close") {
                close = true;
            } else if !header.value.eq_ignore_ascii_case(b"keep-alive") {
                return None;
            }
        } else if name.eq_ignore_ascii_case("x-forwarded-for") {
            let value = HeaderValue::from_bytes(header.value).ok()?;
            forwarded_for.append(HeaderName::from_static("x-forwarded-for"), value);
        } else if ROUTER_HEADERS
            .iter()
            .any(|router| name.eq_ignore_ascii_case(router))
        {
            return None;
        }
    }
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    };
    let request = FastRequest {
        path,
        query,
        authorization,
        peer,
        proxied,
        forwarded_for,
    };
    Some((request, close))
}

/// Headers that make a request the router's: a body, a change of protocol, an expectation,
/// a read that waits for a revision.
const ROUTER_HEADERS: &[&str] = &[
    "content-length",
    "transfer-encoding",
    "upgrade",
    "expect",
    "te",
    "x-min-revision",
];

fn write_head(
    out: &mut Vec<u8>,
    status: StatusCode,
    headers: &[(HeaderName, HeaderValue)],
    body_len: usize,
    close: bool,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\ncontent-type: application/json\r\n");
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    // Writing into a Vec cannot fail.
    let _ = write!(out, "content-length: {body_len}");
    if close {
        out.extend_from_slice(b"\r\nconnection: close");
    }
    out.extend_from_slice(b"\r\ndate: ");
    http_date(out);
    out.extend_from_slice(b"\r\n\r\n");
}

/// Appends the current `Date` value, formatted once a second per thread (as hyper does).
fn http_date(out: &mut Vec<u8>) {
    thread_local! {
        static DATE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with(|date| {
        let mut date = date.borrow_mut();
        if date.0 != second {
            *date = (second, httpdate::fmt_http_date(now));
        }
        out.extend_from_slice(date.1.as_bytes());
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    type Parsed = (String, Option<String>, Option<Vec<u8>>, bool, usize);

    fn parse(head: &str) -> Option<Parsed> {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut request = httparse::Request::new(&mut headers);
        assert!(request.parse(head.as_bytes()).unwrap().is_complete());
        let peer = "127.0.0.1:1".parse().unwrap();
        understood(&request, peer, None).map(|(r, close)| {
            (
                r.path.to_string(),
                r.query.map(str::to_string),
                r.authorization.map(<[u8]>::to_vec),
                close,
                r.forwarded_for.len(),
            )
        })
    }

    #[test]
    fn only_plain_gets_are_understood() {
        assert_eq!(
            parse("GET /a/b?c=d HTTP/1.1\r\nHost: x\r\nAuthorization: Basic eA==\r\n\r\n"),
            Some((
                "/a/b".into(),
                Some("c=d".into()),
                Some(b"Basic eA==".to_vec()),
                false,
                0
            ))
        );
        assert_eq!(
            parse("GET /a HTTP/1.1\r\nConnection: Keep-Alive\r\n\r\n"),
            Some(("/a".into(), None, None, false, 0))
        );
        assert_eq!(
            parse("GET /a HTTP/1.1\r\nConnection: close\r\nX-Forwarded-For: 10.0.0.1\r\nx-forwarded-for: 10.0.0.2, 10.0.0.3\r\n\r\n"),
            Some(("/a".into(), None, None, true, 2))
        );
        for head in [
            "HEAD /a HTTP/1.1\r\n\r\n",
            "POST /a HTTP/1.1\r\n\r\n",
            "GET /a HTTP/1.0\r\n\r\n",
            "GET * HTTP/1.1\r\n\r\n",
            "GET http://x/a HTTP/1.1\r\n\r\n",
            "GET /a HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
            "GET /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET /a HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: h2c\r\n\r\n",
            "GET /a HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            "GET /a HTTP/1.1\r\nConnection: keep-alive, upgrade\r\n\r\n",
            "GET /a HTTP/1.1\r\nx-min-revision: 3\r\n\r\n",
            "GET /a HTTP/1.1\r\nAuthorization: Basic eA==\r\nAuthorization: Basic eQ==\r\n\r\n",
        ] {
            assert_eq!(parse(head), None, "{head:?}");
        }
    }

    #[test]
    fn the_head_has_the_routers_headers() {
        let mut out = Vec::new();
        let extra = [(
            HeaderName::from_static("www-authenticate"),
            HeaderValue::from_static("Basic realm=\"x\""),
        )];
        write_head(&mut out, StatusCode::UNAUTHORIZED, &extra, 12, false);
        let text = String::from_utf8(out).unwrap();
        let (head, date) = text.split_once("date: ").unwrap();
        assert_eq!(
            head,
            "HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\n\
             www-authenticate: Basic realm=\"x\"\r\ncontent-length: 12\r\n"
        );
        let date = date.strip_suffix("\r\n\r\n").unwrap();
        let parsed = httpdate::parse_http_date(date).unwrap();
        let age = SystemTime::now().duration_since(parsed).unwrap_or_default();
        assert!(age < Duration::from_secs(5), "{date}");
    }
}
