//! The fast path of the directory's hot reads, answered before the router: person-in-team
//! (`GET /teams/{team}/members/{member}`), the teams of a person (`GET
//! /persons/{person}/teams`), the transitive members of a team (`GET /teams/{team}/members`,
//! optionally `?type=person|team|all`) and is-merged (`GET
//! /repos/{repo}/branches/{branch}/merged-into/{target}`).
//!
//! Why: these answers take a microsecond or two from the in-memory indexes, less than the
//! router's matching, extractors and middleware (the librarian's fast path, `fast.rs`
//! there, measured the same). Anything else (another route or query, a percent-encoded or
//! invalid name, a busy index, a repository not loaded, a target tip without its reach
//! vector, a refused client) goes to the router unchanged, so a request answered here follows
//! the router's rules: the same access check, the same answer functions (`answers.rs`), and
//! [`Tracker::begin_route`]'s concurrency limit and metrics.
//!
//! Two ways in: as the router's outermost service ([`FastPath`] wraps the router), and
//! through [`FastRoutes`] for a connection's requests read before hyper
//! (`common/fast_http.rs`), which saves hyper's and axum's work around the answer.

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::future::RouteFuture;
use axum::Router;
use futures_util::future::{Either, Ready};
use graphdb::{Depth, TeamFilter};

use super::handlers::check_names;
use super::{answers, repos, Directory};
use crate::common::fast_http::{FastReply, FastRequest, FastRoutes, ReplyBody};
use crate::common::metrics::{RequestGuard, RouteHandle, Tracker};
use crate::common::ApiError;

/// The router behind a fast path for the hot reads. Cloned per request by the service that
/// holds it, hence one `Arc` (the directory's state alone is a dozen).
#[derive(Clone, Debug)]
pub(crate) struct FastPath(Arc<Parts>);

#[derive(Debug)]
struct Parts {
    state: Directory,
    tracker: Tracker,
    /// The metric series of each hot route, looked up once, in [`Hot::ROUTES`]'s order.
    routes: Vec<RouteHandle>,
    router: Router,
}

impl FastPath {
    pub(crate) fn new(state: Directory, tracker: Tracker, router: Router) -> FastPath {
        let routes = Hot::ROUTES
            .iter()
            .map(|route| tracker.route(route))
            .collect();
        FastPath(Arc::new(Parts {
            state,
            tracker,
            routes,
            router,
        }))
    }
}

/// A hot read, by its path segments (not decoded: the fast path takes no `%`).
enum Hot<'a> {
    IsMember(&'a str, &'a str),
    TeamsOf(&'a str),
    Members(&'a str, TeamFilter),
    Merged(&'a str, &'a str, &'a str),
}

impl Hot<'_> {
    /// The router's templates of the hot routes.
    const ROUTES: [&'static str; 4] = [
        "/teams/{team}/members/{member}",
        "/persons/{person}/teams",
        "/teams/{team}/members",
        "/repos/{repo}/branches/{branch}/merged-into/{target}",
    ];

    /// This read's route, as an index into [`Hot::ROUTES`].
    fn route(&self) -> usize {
        match self {
            Hot::IsMember(..) => 0,
            Hot::TeamsOf(_) => 1,
            Hot::Members(..) => 2,
            Hot::Merged(..) => 3,
        }
    }
}

fn parse<'a>(path: &'a str, query: Option<&str>) -> Option<Hot<'a>> {
    if path.contains('%') {
        return None;
    }
    let mut parts = path.strip_prefix('/')?.split('/');
    let segments: [Option<&str>; 7] = std::array::from_fn(|_| parts.next());
    let hot = match segments {
        [Some("teams"), Some(team), Some("members"), Some(member), None, ..] if query.is_none() => {
            check_names(&[team, member]).ok()?;
            Hot::IsMember(team, member)
        }
        [Some("persons"), Some(person), Some("teams"), None, ..] if query.is_none() => {
            check_names(&[person]).ok()?;
            Hot::TeamsOf(person)
        }
        [Some("teams"), Some(team), Some("members"), None, ..] => {
            let filter = match query {
                None | Some("type=all") => TeamFilter::All,
                Some("type=person") => TeamFilter::Persons,
                Some("type=team") => TeamFilter::Teams,
                Some(_) => return None,
            };
            check_names(&[team]).ok()?;
            Hot::Members(team, filter)
        }
        [Some("repos"), Some(repo), Some("branches"), Some(branch), Some("merged-into"), Some(target), None]
            if query.is_none() =>
        {
            check_names(&[repo, branch, target]).ok()?;
            Hot::Merged(repo, branch, target)
        }
        _ => return None,
    };
    Some(hot)
}

impl Parts {
    /// The answer to a `GET` of `path` and `query` from `client` if it is a hot read
    /// answerable without waiting, with its request's tracking begun; `None` leaves it to
    /// the router.
    fn hot_answer(
        &self,
        path: &str,
        query: Option<&str>,
        client: IpAddr,
        authorization: Option<&[u8]>,
    ) -> Option<(RequestGuard, Result<ReplyBody, ApiError>)> {
        let hot = parse(path, query)?;
        let policy = &self.state.policy;
        // A refusal is the router's to give (same check, same answer).
        policy.check_reader(client, authorization).ok()?;
        // Everything that can send the request to the router comes before the tracking starts.
        if let Hot::Merged(repo, branch, target) = hot {
            let merged = self
                .state
                .commits
                .try_is_merged(repos::repo_id(repo), branch, target)?;
            let guard = self
                .tracker
                .begin_route(&self.routes[hot.route()], &Method::GET)?;
            let answer = merged
                .map(|merged| ReplyBody::Bytes(answers::merged(merged)))
                .map_err(repos::commit_error);
            return Some((guard, answer));
        }
        let view = self.state.teams.try_view()?;
        let guard = self
            .tracker
            .begin_route(&self.routes[hot.route()], &Method::GET)?;
        let answer = match hot {
            Hot::IsMember(team, member) => {
                answers::is_member(&view, team, member).map(ReplyBody::Bytes)
            }
            Hot::TeamsOf(person) => {
                answers::teams_of(&view, person, Depth::Transitive, None, usize::MAX)
                    .map(ReplyBody::Bytes)
            }
            Hot::Members(team, filter) => answers::transitive_members(
                &view,
                &self.state.member_bodies,
                team,
                filter,
                None,
                usize::MAX,
            ),
            Hot::Merged(..) => unreachable!("answered above"),
        };
        Some((guard, answer))
    }
}

impl FastPath {
    /// The answer to `request` if it is a hot read answerable without waiting; `None` leaves
    /// it to the router.
    fn answer(&self, request: &Request) -> Option<Response> {
        if request.method() != Method::GET {
            return None;
        }
        // A read that waits for a revision: the router's middleware waits.
        if request.headers().contains_key("x-min-revision") {
            return None;
        }
        let FastPath(parts) = self;
        let client = parts.state.policy.client_ip(request).ok()?;
        let authorization = request
            .headers()
            .get(header::AUTHORIZATION)
            .map(|v| v.as_bytes());
        let (guard, answer) = parts.hot_answer(
            request.uri().path(),
            request.uri().query(),
            client,
            authorization,
        )?;
        let response = answer
            .map(answers::json_response)
            .unwrap_or_else(IntoResponse::into_response);
        Some(guard.finish(response))
    }
}

/// The same hot reads for a connection's loop before hyper (`common/fast_http.rs`).
impl FastRoutes for FastPath {
    fn answer(&self, request: &FastRequest<'_>) -> Option<FastReply> {
        let FastPath(parts) = self;
        let client = parts
            .state
            .policy
            .client_ip_of(request.peer.ip(), request.proxied, &request.forwarded_for)
            .ok()?;
        let (guard, answer) =
            parts.hot_answer(request.path, request.query, client, request.authorization)?;
        let (status, headers, body) = match answer {
            Ok(body) => (StatusCode::OK, Vec::new(), body),
            Err(error) => {
                let (status, headers, body) = error.into_parts();
                (status, headers, ReplyBody::Bytes(body))
            }
        };
        Some(FastReply {
            status,
            headers,
            body,
            guard,
        })
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
            // A router clone is one `Arc`.
            None => Either::Right(self.0.router.clone().call(request)),
        }
    }
}
