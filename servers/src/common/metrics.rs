//! Request metrics in Prometheus text format, the concurrency limit, and the middleware that
//! records both around every request.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, OnceLock, RwLock};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body::{Body as _, Frame, SizeHint};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::ApiError;

/// The labels of a request counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The route template (`/buckets/{bucket}`), or `unmatched`.
    pub route: String,
    /// The method.
    pub method: String,
    /// The status code.
    pub status: u16,
}

/// The labels of per-route series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// The route template, or `unmatched`.
    pub route: String,
}

/// The HTTP metrics of one server.
#[derive(Debug)]
pub struct HttpMetrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    bytes_in: Family<RouteLabels, Counter>,
    bytes_out: Family<RouteLabels, Counter>,
    in_flight: Gauge,
    rejected: Counter,
}

impl HttpMetrics {
    /// Registers the HTTP metric families under `prefix` (`librarian`, `directory`).
    pub fn new(prefix: &str) -> Self {
        let mut registry = Registry::with_prefix(prefix);
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(0.000_05, 2.0, 20))) as fn() -> Histogram,
        );
        let bytes_in = Family::<RouteLabels, Counter>::default();
        let bytes_out = Family::<RouteLabels, Counter>::default();
        let in_flight = Gauge::default();
        let rejected = Counter::default();
        registry.register(
            "http_requests",
            "Requests answered, by route, method and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time from request to response head, by route",
            latency.clone(),
        );
        registry.register(
            "http_request_body_bytes",
            "Request body bytes read, by route",
            bytes_in.clone(),
        );
        registry.register(
            "http_response_body_bytes",
            "Response body bytes sent, by route",
            bytes_out.clone(),
        );
        registry.register(
            "http_requests_in_flight",
            "Requests being handled",
            in_flight.clone(),
        );
        registry.register(
            "http_requests_rejected_overload",
            "Requests refused with 503 by the concurrency limit",
            rejected.clone(),
        );
        HttpMetrics {
            registry,
            requests: requests.clone(),
            latency: latency.clone(),
            bytes_in,
            bytes_out,
            in_flight,
            rejected,
        }
    }

    /// The registry, to register a service's own metrics beside the HTTP ones.
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// The metrics in Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode_registry(&mut out, &self.registry);
        out
    }

    /// The requests answered so far with `route`, `method` and `status`.
    pub fn requests(&self, route: &str, method: &str, status: u16) -> u64 {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_string(),
                method: method.to_string(),
                status,
            })
            .get()
    }
}

/// The series of one route, taken from the families once: a request then costs no label
/// allocation and no family lookup, only a read lock on the route table and atomic adds.
#[derive(Debug)]
struct RouteSeries {
    route: String,
    latency: Histogram,
    bytes_in: Counter,
    bytes_out: Counter,
    /// The request counters by method and status seen so far (a handful per route).
    requests: RwLock<Vec<(Method, u16, Counter)>>,
    /// The counter of `GET` answered 200, taken once: the fast paths' answers then touch no
    /// lock shared by the HTTP threads.
    get_ok: OnceLock<Counter>,
}

impl RouteSeries {
    fn new(metrics: &HttpMetrics, route: &str) -> Self {
        let labels = RouteLabels {
            route: route.to_string(),
        };
        RouteSeries {
            route: route.to_string(),
            latency: metrics.latency.get_or_create(&labels).clone(),
            bytes_in: metrics.bytes_in.get_or_create(&labels).clone(),
            bytes_out: metrics.bytes_out.get_or_create(&labels).clone(),
            requests: RwLock::new(Vec::new()),
            get_ok: OnceLock::new(),
        }
    }

    fn requests(&self, metrics: &HttpMetrics, method: &Method, status: u16) -> Counter {
        if status == 200 && method == Method::GET {
            return self
                .get_ok
                .get_or_init(|| self.requests_looked_up(metrics, method, status))
                .clone();
        }
        self.requests_looked_up(metrics, method, status)
    }

    fn requests_looked_up(&self, metrics: &HttpMetrics, method: &Method, status: u16) -> Counter {
        let known = self.requests.read().unwrap_or_else(|e| e.into_inner());
        if let Some((_, _, counter)) = known.iter().find(|(m, s, _)| *s == status && m == method) {
            return counter.clone();
        }
        drop(known);
        let counter = metrics
            .requests
            .get_or_create(&RequestLabels {
                route: self.route.clone(),
                method: method.as_str().to_string(),
                status,
            })
            .clone();
        let mut known = self.requests.write().unwrap_or_else(|e| e.into_inner());
        if !known.iter().any(|(m, s, _)| *s == status && m == method) {
            known.push((method.clone(), status, counter.clone()));
        }
        counter
    }
}

/// The state of [`track`]: the metrics and the concurrency limit.
#[derive(Debug, Clone)]
pub struct Tracker {
    /// The metrics.
    pub metrics: Arc<HttpMetrics>,
    limit: Arc<Semaphore>,
    /// The series of each route template (and `unmatched`) seen so far.
    routes: Arc<RwLock<HashMap<String, Arc<RouteSeries>>>>,
}

impl Tracker {
    /// A tracker allowing `max_concurrency` requests at once.
    pub fn new(metrics: Arc<HttpMetrics>, max_concurrency: usize) -> Self {
        Tracker {
            metrics,
            limit: Arc::new(Semaphore::new(max_concurrency)),
            routes: Arc::new(RwLock::new(HashMap::new())),
        }
    }

    fn series(&self, route: &str) -> Arc<RouteSeries> {
        if let Some(series) = self
            .routes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(route)
        {
            return Arc::clone(series);
        }
        let mut routes = self.routes.write().unwrap_or_else(|e| e.into_inner());
        Arc::clone(
            routes
                .entry(route.to_string())
                .or_insert_with(|| Arc::new(RouteSeries::new(&self.metrics, route))),
        )
    }
}

/// Paths exempt from the concurrency limit, so that a load balancer and the monitoring still
/// see an overloaded server.
fn exempt(path: &str) -> bool {
    matches!(path, "/health" | "/metrics")
}

/// Middleware: applies the concurrency limit (503 with `Retry-After`), counts body bytes both
/// ways, records status and latency by route, and logs each request at debug level. The
/// permit is held until the response body has been sent.
pub async fn track(State(tracker): State<Tracker>, request: Request, next: Next) -> Response {
    let start = Instant::now();
    let series = tracker.series(
        request
            .extensions()
            .get::<MatchedPath>()
            .map_or("unmatched", |p| p.as_str()),
    );
    let method = request.method().clone();
    let metrics = &tracker.metrics;

    let permit = if exempt(request.uri().path()) {
        None
    } else {
        match Arc::clone(&tracker.limit).try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) => {
                metrics.rejected.inc();
                let response = ApiError::overloaded(1).into_response();
                record(metrics, &series, &method, response.status().as_u16(), start);
                return response;
            }
        }
    };

    metrics.in_flight.inc();
    // A request without a body (most downloads) needs no counting wrapper.
    let request = if request.body().is_end_stream() {
        request
    } else {
        let bytes_in = series.bytes_in.clone();
        request.map(|body| Body::new(Counted::new(body, bytes_in, None)))
    };
    let response = next.run(request).await;
    metrics.in_flight.dec();
    let status = response.status().as_u16();
    record(metrics, &series, &method, status, start);
    tracing::debug!(%method, route = series.route, status, micros = start.elapsed().as_micros() as u64, "request");
    let bytes_out = series.bytes_out.clone();
    response.map(|body| Body::new(Counted::new(body, bytes_out, permit)))
}

/// A request answered outside the router (a fast path), tracked as [`track`] tracks the
/// router's: in the concurrency limit, in flight, counted by route, method and status, timed,
/// its body bytes counted as sent.
#[derive(Debug)]
pub struct RequestGuard {
    metrics: Arc<HttpMetrics>,
    series: Arc<RouteSeries>,
    method: Method,
    start: Instant,
    permit: OwnedSemaphorePermit,
}

/// The series of one route template, looked up once by a fast path that answers it (see
/// [`Tracker::begin_route`]).
#[derive(Debug, Clone)]
pub struct RouteHandle(Arc<RouteSeries>);

impl Tracker {
    /// The series of `route` (a route template of the router), for [`Tracker::begin_route`].
    pub fn route(&self, route: &str) -> RouteHandle {
        RouteHandle(self.series(route))
    }

    /// Starts tracking a request for `route` answered without the router. `None` when the
    /// concurrency limit is reached: leave that request to the router, which refuses it with
    /// a 503. The route was looked up once before ([`Tracker::route`]): a lookup in the table
    /// of routes per answer took a lock both HTTP threads share.
    pub fn begin_route(&self, route: &RouteHandle, method: &Method) -> Option<RequestGuard> {
        let start = Instant::now();
        let permit = Arc::clone(&self.limit).try_acquire_owned().ok()?;
        self.metrics.in_flight.inc();
        Some(RequestGuard {
            metrics: Arc::clone(&self.metrics),
            series: Arc::clone(&route.0),
            method: method.clone(),
            start,
            permit,
        })
    }
}

impl RequestGuard {
    /// Records `response` and returns it, holding the permit until its body is sent.
    pub fn finish(self, response: Response) -> Response {
        self.answered(response.status());
        let bytes_out = self.series.bytes_out.clone();
        let permit = Some(self.permit);
        response.map(|body| Body::new(Counted::new(body, bytes_out, permit)))
    }

    /// Records an answer of `body_len` bytes that the caller has already written (the
    /// connection's fast loop, `fast_http.rs`); the permit goes with the guard.
    pub fn finish_written(self, status: StatusCode, body_len: usize) {
        self.answered(status);
        self.series.bytes_out.inc_by(body_len as u64);
    }

    /// Out of flight, counted by status and timed, logged.
    fn answered(&self, status: StatusCode) {
        let metrics = &self.metrics;
        metrics.in_flight.dec();
        let status = status.as_u16();
        record(metrics, &self.series, &self.method, status, self.start);
        tracing::debug!(method = %self.method, route = self.series.route, status, micros = self.start.elapsed().as_micros() as u64, "request");
    }
}

fn record(
    metrics: &HttpMetrics,
    series: &RouteSeries,
    method: &Method,
    status: u16,
    start: Instant,
) {
    series.requests(metrics, method, status).inc();
    series.latency.observe(start.elapsed().as_secs_f64());
}

/// A body that counts its data bytes and holds an optional concurrency permit until dropped.
struct Counted {
    inner: Body,
    counter: Counter,
    _permit: Option<OwnedSemaphorePermit>,
}

impl Counted {
    fn new(inner: Body, counter: Counter, permit: Option<OwnedSemaphorePermit>) -> Self {
        Counted {
            inner,
            counter,
            _permit: permit,
        }
    }
}

impl http_body::Body for Counted {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                self.counter.inc_by(data.len() as u64);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
