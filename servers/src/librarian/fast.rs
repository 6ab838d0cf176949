//! The fast path of small downloads: `GET` and `HEAD /{id}/{filename}` of a file the store
//! holds in its hot-file cache, answered before the router.
//!
//! Why: once the store call is gone (a cache hit touches neither the engine nor the disk),
//! routing, extractors and the middleware stack cost more CPU than the answer itself (the
//! profile is in `benches/servers/RESULTS.md`). Everything else (a miss, a token in the query, a percent-encoded name, any
//! other route) goes to the router unchanged, and a request answered here follows exactly
//! the router's rules: [`answer_small`] is the function the download handler calls on a
//! cache hit, and [`Tracker::begin_route`] applies the same concurrency limit and metrics.

use std::convert::Infallible;
use std::str::FromStr;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use axum::routing::future::RouteFuture;
use axum::Router;
use blobstore::FileId;
use futures_util::future::{Either, Ready};

use super::handlers::answer_small;
use super::Librarian;
use crate::common::metrics::{RouteHandle, Tracker};

/// The route template the fast path answers for (its metrics series is the router's).
pub(crate) const DOWNLOAD_ROUTE: &str = "/{id}/{filename}";

/// The router behind a fast path for cached small downloads.
#[derive(Clone, Debug)]
pub(crate) struct FastPath {
    pub(crate) state: Librarian,
    pub(crate) tracker: Tracker,
    /// [`DOWNLOAD_ROUTE`]'s metric series, looked up once.
    pub(crate) download_route: RouteHandle,
    pub(crate) router: Router,
}

impl FastPath {
    /// The answer to `request` if it is a plain download of a cached file; `None` leaves it
    /// to the router.
    fn answer(&self, request: &Request) -> Option<Response> {
        let method = request.method();
        if method != Method::GET && method != Method::HEAD {
            return None;
        }
        // A query (a token) or percent-encoding: the router's extractors decode those.
        if request.uri().query().is_some() {
            return None;
        }
        // A read that waits for a revision: the router's middleware waits.
        if request.headers().contains_key("x-min-revision") {
            return None;
        }
        let (id, filename) = request.uri().path().strip_prefix('/')?.split_once('/')?;
        if id.is_empty()
            || !id.bytes().all(|b| b.is_ascii_digit())
            || filename.is_empty()
            || filename.contains(['/', '%'])
        {
            return None;
        }
        let id = FileId::from_str(id).ok()?;
        let file = self.state.store.cached_file(id)?;
        let guard = self.tracker.begin_route(&self.download_route, method)?;
        let with_body = method != Method::HEAD;
        let response = answer_small(
            &self.state.store,
            &file,
            Some(filename),
            None,
            request.headers(),
            with_body,
        )
        .unwrap_or_else(IntoResponse::into_response);
        Some(guard.finish(response))
    }
}

impl tower::Service<Request> for FastPath {
    type Response = Response;
    type Error = Infallible;
    type Future = Either<Ready<Result<Response, Infallible>>, RouteFuture<Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        match self.answer(&request) {
            Some(response) => Either::Left(futures_util::future::ready(Ok(response))),
            None => Either::Right(self.router.call(request)),
        }
    }
}
