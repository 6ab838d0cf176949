//! The accept loop: HTTP/1.1 over hyper with a header size limit, a header read timeout, an
//! idle timeout per connection, the client address given to the router, and graceful
//! shutdown; before hyper, a service's hot reads answered from the socket
//! ([`super::fast_http`]).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use axum::Router;
use bytes::{Buf, Bytes};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tower::ServiceExt;

use super::config::Limits;
use super::fast_http::{self, Ended, FastRoutes, LoopLimits};
use super::proxy::{self, ProxiedPeer};

/// What a server runs: its router, and the hot reads a fresh connection has answered
/// before the router sees it (none for a plain `Router`).
#[derive(Clone, Debug)]
pub struct App {
    /// Every route.
    pub router: Router,
    /// The hot reads answered from the socket while a connection asks only for them.
    pub fast: Option<Arc<dyn FastRoutes>>,
}

impl From<Router> for App {
    fn from(router: Router) -> App {
        App { router, fast: None }
    }
}

/// Serves `app` on `listener` until `shutdown` completes, then stops accepting, lets
/// in-flight requests finish for up to [`Limits::shutdown_grace`], and returns.
///
/// # Errors
/// None in practice: accept errors (a full file table, say) are logged and retried.
pub async fn serve(
    listener: TcpListener,
    app: impl Into<App> + Send,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()> {
    let app = app.into();
    let source = Source::Listener {
        listener,
        others: Vec::new(),
        next: 0,
    };
    serve_from(source, app, limits, shutdown).await
}

/// Where a serving loop gets its connections.
enum Source {
    /// Accepts from the socket, keeping every `others.len() + 1`-th connection and handing
    /// the rest round-robin to the other threads.
    Listener {
        listener: TcpListener,
        others: Vec<mpsc::UnboundedSender<(std::net::TcpStream, SocketAddr)>>,
        next: usize,
    },
    /// Takes connections handed over by the accepting thread; ends when it stops.
    Handed(mpsc::UnboundedReceiver<(std::net::TcpStream, SocketAddr)>),
}

impl Source {
    /// The next connection of this thread; `None` once the accepting thread has stopped.
    async fn next(&mut self) -> Option<io::Result<(TcpStream, SocketAddr)>> {
        match self {
            Source::Listener {
                listener,
                others,
                next,
            } => loop {
                let (stream, peer) = match listener.accept().await {
                    Ok(pair) => pair,
                    Err(error) => return Some(Err(error)),
                };
                let turn = *next;
                *next = (turn + 1) % (others.len() + 1);
                if turn == 0 {
                    return Some(Ok((stream, peer)));
                }
                let handed = stream
                    .into_std()
                    .map(|stream| others[turn - 1].send((stream, peer)));
                match handed {
                    Ok(Ok(())) => {}
                    // That thread is gone (it failed): serve the connection here.
                    Ok(Err(mpsc::error::SendError((stream, peer)))) => {
                        return Some(TcpStream::from_std(stream).map(|s| (s, peer)))
                    }
                    Err(error) => return Some(Err(error)),
                }
            },
            Source::Handed(receiver) => {
                let (stream, peer) = receiver.recv().await?;
                Some(TcpStream::from_std(stream).map(|s| (s, peer)))
            }
        }
    }
}

async fn serve_from(
    mut source: Source,
    app: App,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    let limits = Arc::new(limits);
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = source.next() => accepted,
        };
        while connections.try_join_next().is_some() {}
        let (stream, peer) = match accepted {
            // The accepting thread stopped.
            None => break,
            Some(Ok(pair)) => pair,
            Some(Err(error)) => {
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        connections.spawn(connection(
            stream,
            peer,
            app.clone(),
            Arc::clone(&limits),
            stop_rx.clone(),
        ));
    }
    // Stops accepting, and ends the threads' sources that this one fed.
    drop(source);
    tracing::info!(
        connections = connections.len(),
        "shutting down: no longer accepting"
    );
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(limits.shutdown_grace(), async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            connections = connections.len(),
            "grace period over: aborting connections"
        );
        connections.shutdown().await;
    }
    Ok(())
}

/// The answer to a connection whose PROXY header cannot be used (the JSON error of
/// [`super::ApiError`]): after it there is no telling where the HTTP request begins, so the
/// connection is closed.
fn bad_proxy_header_response(error: &proxy::ProxyHeaderError) -> Vec<u8> {
    let body =
        serde_json::json!({"error": {"code": "bad_proxy_header", "message": error.to_string()}})
            .to_string();
    format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

async fn connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    app: App,
    limits: Arc<Limits>,
    mut stop: watch::Receiver<bool>,
) {
    let proxied = match proxy::read_header(&mut stream, limits.header_read_timeout()).await {
        Ok(proxied) => proxied,
        Err(error) => {
            tracing::debug!(%peer, %error, "refusing a connection's PROXY header");
            let _ = stream.write_all(&bad_proxy_header_response(&error)).await;
            return;
        }
    };
    let mut unanswered = Bytes::new();
    if let Some(fast) = &app.fast {
        let loop_limits = LoopLimits {
            max_header_bytes: limits.max_header_bytes.max(8192),
            header_read_timeout: limits.header_read_timeout(),
            idle_timeout: limits.idle_timeout(),
        };
        let proxied_ip = proxied.map(|client| client.ip());
        let ended = fast_http::answer_hot_reads(
            &mut stream,
            fast.as_ref(),
            peer,
            proxied_ip,
            loop_limits,
            &mut stop,
        )
        .await;
        match ended {
            Ended::Closed => return,
            Ended::HandOff(bytes) => unanswered = bytes,
        }
    }
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(IdleIo {
        inner: stream,
        unanswered,
        activity: Arc::clone(&activity),
    });
    let service = app.router.map_request(
        move |mut request: axum::extract::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            if let Some(client) = proxied {
                request.extensions_mut().insert(ProxiedPeer(client));
            }
            request
        },
    );
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout())
        .max_buf_size(limits.max_header_bytes.max(8192))
        .keep_alive(true);
    let conn = builder.serve_connection(io, TowerToHyperService::new(service));
    tokio::pin!(conn);
    let idle = limits.idle_timeout();
    let tick = (idle / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    let mut stopping = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%peer, %error, "connection ended with an error");
                }
                return;
            }
            changed = stop.changed(), if !stopping => {
                stopping = true;
                if changed.is_ok() {
                    conn.as_mut().graceful_shutdown();
                }
            }
            () = tokio::time::sleep(tick) => {
                if activity.idle_for() >= idle {
                    tracing::debug!(%peer, "closing idle connection");
                    return;
                }
            }
        }
    }
}

/// The time of a connection's last read or write.
#[derive(Debug)]
struct Activity {
    base: Instant,
    last_millis: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Activity {
            base: Instant::now(),
            last_millis: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let now = self.base.elapsed().as_millis() as u64;
        self.last_millis.store(now, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let now = self.base.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_millis.load(Ordering::Relaxed)))
    }
}

/// A stream that records when bytes last moved, and first gives back what the fast loop read
/// and left to the router.
#[derive(Debug)]
struct IdleIo {
    inner: TcpStream,
    unanswered: Bytes,
    activity: Arc<Activity>,
}

impl AsyncRead for IdleIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.unanswered.is_empty() {
            let n = self.unanswered.len().min(buf.remaining());
            buf.put_slice(&self.unanswered[..n]);
            self.unanswered.advance(n);
            self.activity.touch();
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl AsyncWrite for IdleIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// How many HTTP threads [`serve_threads`] should run: `TOKIO_WORKER_THREADS` if set (as for
/// a Tokio multi-thread runtime), else one per available core.
pub fn http_threads() -> usize {
    std::env::var("TOKIO_WORKER_THREADS")
        .ok()
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Serves `app` on `threads` threads, each running its own single-threaded Tokio runtime,
/// until `shutdown` completes; then each stops as [`serve`] does. The calling thread (its
/// runtime should be a current-thread one) accepts and hands connections round-robin to the
/// others, keeping its share; a connection stays on its thread for its whole life.
///
/// Why: with Tokio's work-stealing runtime a small download cost more in wake-ups of the
/// other worker (a context switch per request at 2 workers) than in HTTP; here a thread
/// sleeps only when none of its connections has work, as nginx's workers do. Handing
/// connections out (rather than letting every thread accept) keeps the threads evenly
/// loaded: the first thread to wake would otherwise take a whole burst of connections.
/// Blocking work still goes to each runtime's blocking pool and to the store threads.
///
/// # Errors
/// A runtime or a thread cannot be started.
pub async fn serve_threads(
    listener: TcpListener,
    threads: usize,
    app: impl Into<App> + Send,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()> {
    let app = app.into();
    let mut others = Vec::new();
    let mut workers = Vec::new();
    for n in 1..threads.max(1) {
        let (sender, receiver) = mpsc::unbounded_channel();
        others.push(sender);
        let app = app.clone();
        let limits = limits.clone();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        workers.push(
            std::thread::Builder::new()
                .name(format!("http-{n}"))
                .spawn(move || {
                    let source = Source::Handed(receiver);
                    runtime.block_on(serve_from(source, app, limits, std::future::pending()))
                })?,
        );
    }
    let source = Source::Listener {
        listener,
        others,
        next: 0,
    };
    let result = serve_from(source, app, limits, shutdown).await;
    let joined = tokio::task::spawn_blocking(move || {
        for worker in workers {
            match worker.join() {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::error!(%error, "an HTTP thread failed"),
                Err(_) => tracing::error!("an HTTP thread panicked"),
            }
        }
    })
    .await;
    if joined.is_err() {
        tracing::error!("waiting for the HTTP threads failed");
    }
    result
}

/// Completes on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => tracing::info!("SIGINT received"),
        () = terminate => tracing::info!("SIGTERM received"),
    }
}

/// Binds `addr`, refusing non-loopback addresses when `loopback_only` (development mode).
///
/// # Errors
/// The bind error, or `PermissionDenied` for a non-loopback address in development mode.
pub async fn bind(addr: SocketAddr, loopback_only: bool) -> io::Result<TcpListener> {
    if loopback_only && !super::config::is_loopback(addr.ip()) {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("development mode only binds loopback addresses, not {addr}"),
        ));
    }
    TcpListener::bind(addr).await
}
