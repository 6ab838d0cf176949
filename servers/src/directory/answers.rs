//! The answers of the hot team reads, shared by their router handlers and the fast path
//! (`fast.rs`), so that both give the same bytes: person-in-team, teams of a person, and the
//! transitive members of a team, whose whole-list answer is kept per team while its members
//! do not change.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::http::header;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use graphdb::{Depth, TeamFilter, View};

use super::handlers::graph_error;
use crate::common::fast_http::ReplyBody;
use crate::common::sealed_body::SealedBody;
use crate::common::ApiError;

/// Lists shorter than this are rendered on every request (cheaper than keeping them).
const KEEP_FROM: usize = 256;

/// At most this many whole-list answers are kept (the largest teams' are a few hundred KB).
const KEEP_AT_MOST: usize = 64;

/// Kept answers from this size on also get a sealed file, which the connection loop sends
/// with `sendfile` (`common/sealed_body.rs`); the loop writes smaller ones with the head in
/// one `write` anyway. The file is a second copy of the bytes, in the kernel's shared memory
/// (not in the process's resident set): at most [`KEEP_AT_MOST`] of them, about 20 MB if all
/// were the largest team's.
const SEAL_FROM: usize = 16 << 10;

/// Whole-list answers of `GET /teams/{team}/members`, per (team id, filter), each with the
/// sorted member list it was rendered from. graphdb hands out a new list (a new `Arc`) as
/// soon as the team's members change, from whatever write path changed them, so an answer
/// is served only while its list is still the current one: nothing to invalidate here.
#[derive(Debug, Default)]
pub(crate) struct MemberBodies {
    bodies: Mutex<HashMap<(u32, TeamFilter), KeptBody>>,
}

/// An answer and the sorted list it was rendered from.
type KeptBody = (Arc<[u32]>, ReplyBody);

impl MemberBodies {
    fn get(&self, key: (u32, TeamFilter), list: &Arc<[u32]>) -> Option<ReplyBody> {
        let bodies = self.bodies.lock().unwrap_or_else(|e| e.into_inner());
        let (kept, body) = bodies.get(&key)?;
        // The kept `Arc` holds its list alive, so an equal pointer is the same list.
        Arc::ptr_eq(kept, list).then(|| body.clone())
    }

    /// Keeps `body` (sealed when large) and returns what was kept.
    fn put(&self, key: (u32, TeamFilter), list: Arc<[u32]>, body: Bytes) -> ReplyBody {
        let body = if body.len() >= SEAL_FROM {
            // Without a sealed file (memfd_create refused, say) the bytes are written as
            // they are: the file only saves a copy.
            match SealedBody::new(body.clone()) {
                Ok(sealed) => ReplyBody::Sealed(Arc::new(sealed)),
                Err(_) => ReplyBody::Bytes(body),
            }
        } else {
            ReplyBody::Bytes(body)
        };
        let mut bodies = self.bodies.lock().unwrap_or_else(|e| e.into_inner());
        if bodies.len() >= KEEP_AT_MOST && !bodies.contains_key(&key) {
            bodies.clear();
        }
        bodies.insert(key, (list, body.clone()));
        body
    }
}

/// A JSON body as the router's answer.
pub(crate) fn json_response(body: impl Into<Bytes>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body.into()).into_response()
}

/// `{"<field>": [names of ids], "next": <last name, or null when this is the last page>}`.
fn render_names(field: &str, view: &View<'_>, ids: &[u32], more: bool) -> Bytes {
    let mut out = Vec::with_capacity(16 + ids.len() * 24);
    out.extend_from_slice(b"{\"");
    out.extend_from_slice(field.as_bytes());
    out.extend_from_slice(b"\":[");
    let mut last = None;
    for (i, &id) in ids.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let name = view.name(graphdb::NodeId(id)).unwrap_or_default();
        // Writing a string into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut out, name);
        last = Some(name);
    }
    out.extend_from_slice(b"],\"next\":");
    match last.filter(|_| more) {
        Some(name) => {
            let _ = serde_json::to_writer(&mut out, name);
        }
        None => out.extend_from_slice(b"null"),
    }
    out.push(b'}');
    out.into()
}

/// `GET /teams/{team}/members` (transitive): a page of the team's members sorted by name, cut
/// from graphdb's sorted list at the cursor; the whole list's answer is kept.
pub(crate) fn transitive_members(
    view: &View<'_>,
    bodies: &MemberBodies,
    team: &str,
    filter: TeamFilter,
    after: Option<&str>,
    limit: usize,
) -> Result<ReplyBody, ApiError> {
    let id = view
        .id(team)
        .ok_or_else(|| ApiError::not_found(format!("no such name: {team:?}")))?;
    let sorted = view.sorted_member_ids(id, filter.into());
    let whole = after.is_none() && limit >= sorted.len() && sorted.len() >= KEEP_FROM;
    let key = (id.0, filter);
    if whole {
        if let Some(body) = bodies.get(key, &sorted) {
            return Ok(body);
        }
    }
    let start = view.position_after(&sorted, after);
    let end = start.saturating_add(limit.max(1)).min(sorted.len());
    let body = render_names("members", view, &sorted[start..end], end < sorted.len());
    if whole {
        return Ok(bodies.put(key, Arc::clone(&sorted), body));
    }
    Ok(ReplyBody::Bytes(body))
}

/// `GET /teams/{team}/members/{member}`: `{"member": bool, "path": [...]}`, written without
/// building a `serde_json::Value`.
pub(crate) fn is_member(view: &View<'_>, team: &str, member: &str) -> Result<Bytes, ApiError> {
    let path = view.path(member, team).map_err(graph_error)?;
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(match path {
        Some(_) => b"{\"member\":true,\"path\":[",
        None => b"{\"member\":false,\"path\":[",
    });
    for (i, name) in path.iter().flatten().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        // Writing a string into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut out, name);
    }
    out.extend_from_slice(b"]}");
    Ok(out.into())
}

/// `GET /persons/{person}/teams`: the person's teams sorted by name (by rank), a page cut at
/// the cursor, names written straight from the index.
pub(crate) fn teams_of(
    view: &View<'_>,
    person: &str,
    depth: Depth,
    after: Option<&str>,
    limit: usize,
) -> Result<Bytes, ApiError> {
    let id = view
        .id(person)
        .ok_or_else(|| ApiError::not_found(format!("no such name: {person:?}")))?;
    let sorted = view.sorted_group_ids_of(id, depth);
    let start = view.position_after(&sorted, after);
    let end = start.saturating_add(limit.max(1)).min(sorted.len());
    Ok(render_names(
        "teams",
        view,
        &sorted[start..end],
        end < sorted.len(),
    ))
}

/// `GET /repos/{repo}/branches/{branch}/merged-into/{target}`: `{"merged": bool}`.
pub(crate) fn merged(merged: bool) -> Bytes {
    Bytes::from_static(if merged {
        b"{\"merged\":true}"
    } else {
        b"{\"merged\":false}"
    })
}
