//! The repository routes: commit graphs and branch merged-status over `commitgraph`.
//!
//! A repository is named in the URL; its [`RepoId`] is the first eight bytes of the BLAKE3
//! hash of the name (big-endian), so any name of up to 255 bytes works without a registry.

use axum::body::Bytes;
use axum::extract::State;
use axum::response::Response;
use commitgraph::{CommitError, CommitId, MergedChange, RepoId, Writer};
use serde::Deserialize;
use serde_json::{json, Value};

use super::answers;
use super::handlers::check_names;
use super::Directory;
use crate::common::error::{BodyBytes, Json, Path, Query};
use crate::common::feed::{Actor, Revision, DEFAULT_LIMIT, MAX_LIMIT};
use crate::common::ApiError;

/// The id of the repository named `name`.
pub fn repo_id(name: &str) -> RepoId {
    let hash = blake3::hash(name.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash.as_bytes()[..8]);
    RepoId(u64::from_be_bytes(first))
}

/// Maps a commit-graph error to the client's answer.
pub(crate) fn commit_error(error: CommitError) -> ApiError {
    if let CommitError::Engine(inner) | CommitError::Feed(engine::FeedError::Engine(inner)) = &error
    {
        if let Some(answer) = ApiError::from_engine(inner) {
            return answer;
        }
    }
    match error {
        CommitError::UnknownCommit { commit, .. } => {
            ApiError::not_found(format!("no such commit: {commit}"))
        }
        CommitError::UnknownBranch { branch, .. } => {
            ApiError::not_found(format!("no such branch: {branch:?}"))
        }
        CommitError::InvalidBranchName { .. } => {
            ApiError::bad_request("bad_name", "invalid branch name")
        }
        CommitError::UnknownParent { index, parent, .. } => ApiError::bad_request(
            "bad_commits",
            format!("commit #{index} names parent {parent}, which is unknown; nothing was written"),
        ),
        CommitError::ConflictingParents { index, commit, .. } => ApiError::conflict(
            "conflicting_parents",
            format!("commit #{index} ({commit}) is already known with other parents; nothing was written"),
        ),
        CommitError::IdLength {
            index,
            commit,
            expected,
            ..
        } => ApiError::bad_request(
            "bad_commits",
            format!(
                "commit #{index} ({commit}) is not a {expected}-byte id like the repository's \
                 (SHA-1 and SHA-256 ids do not mix); nothing was written"
            ),
        ),
        CommitError::Import { input, line, error } => {
            ApiError::bad_request("bad_import", format!("{input} line {line}: {error}"))
                .with_detail("line", json!(line))
        }
        CommitError::TooManyCommits { .. } => ApiError::new(
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            "the repository cannot hold that many commits",
        )
        .with_cause(error),
        other => ApiError::internal(other),
    }
}

fn parse_commit(hex: &str, what: &str) -> Result<CommitId, ApiError> {
    CommitId::parse_hex(hex.trim()).map_err(|_| {
        ApiError::bad_request("bad_hex", format!("{what} must be 40 or 64 hex digits"))
    })
}

fn changes_json(changes: &[MergedChange]) -> Value {
    Value::Array(
        changes
            .iter()
            .map(|c| json!({"branch": c.branch, "target": c.target, "merged": c.merged}))
            .collect(),
    )
}

fn body_text(body: &Bytes) -> Result<&str, ApiError> {
    std::str::from_utf8(body)
        .map_err(|_| ApiError::bad_request("bad_body", "the body is not UTF-8"))
}

/// A write's answer: `X-Revision` and the JSON body (which carries `revision` too).
type Written = (Revision, axum::Json<Value>);

/// `POST /repos/{repo}/commits`: `git rev-list --parents` output, all or nothing.
pub(crate) async fn post_commits(
    State(state): State<Directory>,
    actor: Actor,
    Path(repo): Path<String>,
    BodyBytes(body): BodyBytes,
) -> Result<Written, ApiError> {
    check_names(&[&repo])?;
    body_text(&body)?;
    state
        .blocking_long(move |d| {
            let text = std::str::from_utf8(&body).unwrap_or_default();
            let by = Writer::new(actor.as_str(), &repo);
            let summary = d
                .commits
                .push_rev_list(repo_id(&repo), text, by)
                .map_err(commit_error)?;
            Ok((
                Revision(summary.revision),
                axum::Json(json!({
                    "repo": repo,
                    "added": summary.appended.added,
                    "known": summary.appended.known,
                    "revision": summary.revision,
                })),
            ))
        })
        .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TipBody {
    tip: String,
}

/// `PUT /repos/{repo}/branches/{branch}` with `{"tip": HEX}`.
pub(crate) async fn put_branch(
    State(state): State<Directory>,
    actor: Actor,
    Path((repo, branch)): Path<(String, String)>,
    Json(body): Json<TipBody>,
) -> Result<Written, ApiError> {
    check_names(&[&repo, &branch])?;
    let tip = parse_commit(&body.tip, "tip")?;
    state
        .blocking(move |d| {
            let by = Writer::new(actor.as_str(), &repo);
            let outcome = d
                .commits
                .set_branch(repo_id(&repo), &branch, tip, by)
                .map_err(commit_error)?;
            Ok((
                Revision(outcome.revision),
                axum::Json(json!({
                    "branch": branch,
                    "tip": tip.to_string(),
                    "changes": changes_json(&outcome.changes),
                    "revision": outcome.revision,
                })),
            ))
        })
        .await
}

/// `DELETE /repos/{repo}/branches/{branch}`.
pub(crate) async fn delete_branch(
    State(state): State<Directory>,
    actor: Actor,
    Path((repo, branch)): Path<(String, String)>,
) -> Result<Written, ApiError> {
    check_names(&[&repo, &branch])?;
    state
        .blocking(move |d| {
            let by = Writer::new(actor.as_str(), &repo);
            let outcome = d
                .commits
                .delete_branch(repo_id(&repo), &branch, by)
                .map_err(commit_error)?;
            Ok((
                Revision(outcome.revision),
                axum::Json(json!({
                    "branch": branch,
                    "changes": changes_json(&outcome.changes),
                    "revision": outcome.revision,
                })),
            ))
        })
        .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HistoryQuery {
    after: Option<String>,
    limit: Option<String>,
}

/// `GET /repos/{repo}/branches/{branch}/history?after=REV&limit=N`: the branch's events
/// (moves, deletion, imports that set it), oldest first, with their revisions; `next` is the
/// revision to pass as `after` for the next page, `null` on the last one. A branch that never
/// existed has an empty history (a deleted one keeps its own).
pub(crate) async fn branch_history(
    State(state): State<Directory>,
    Path((repo, branch)): Path<(String, String)>,
    Query(query): Query<HistoryQuery>,
) -> Result<axum::Json<Value>, ApiError> {
    check_names(&[&repo, &branch])?;
    let bad = |message: String| ApiError::bad_request("bad_query", message);
    let after = match query.after.as_deref() {
        None => 0,
        Some(text) => text
            .parse::<u64>()
            .map_err(|_| bad("after must be a revision number".into()))?,
    };
    let limit = match query.limit.as_deref() {
        None => DEFAULT_LIMIT,
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| bad(format!("limit must be 1 to {MAX_LIMIT}")))?,
    };
    state
        .blocking(move |d| {
            let page = d
                .commits
                .branch_history(repo_id(&repo), &branch, after, limit)
                .map_err(commit_error)?;
            let next = page.last().map(|e| e.0).filter(|_| page.len() == limit);
            let mut history = Vec::with_capacity(page.len());
            for (revision, event) in page {
                let mut value = serde_json::to_value(&event).map_err(ApiError::internal)?;
                if let Some(object) = value.as_object_mut() {
                    object.insert("revision".into(), json!(revision));
                }
                history.push(value);
            }
            Ok(axum::Json(json!({
                "repo": repo,
                "branch": branch,
                "history": history,
                "next": next,
            })))
        })
        .await
}

#[derive(Debug, Deserialize)]
pub(crate) struct AncestryQuery {
    ancestor: String,
    descendant: String,
}

/// `GET /repos/{repo}/ancestry?ancestor=A&descendant=B`.
pub(crate) async fn ancestry(
    State(state): State<Directory>,
    Path(repo): Path<String>,
    Query(query): Query<AncestryQuery>,
) -> Result<axum::Json<Value>, ApiError> {
    check_names(&[&repo])?;
    let a = parse_commit(&query.ancestor, "ancestor")?;
    let b = parse_commit(&query.descendant, "descendant")?;
    state
        .blocking(move |d| {
            let answer = d
                .commits
                .is_ancestor(repo_id(&repo), &a, &b)
                .map_err(commit_error)?;
            Ok(axum::Json(json!({ "ancestor": answer })))
        })
        .await
}

/// `GET /repos/{repo}/branches/{branch}/merged`: the branches merged into it.
pub(crate) async fn merged(
    State(state): State<Directory>,
    Path((repo, branch)): Path<(String, String)>,
) -> Result<axum::Json<Value>, ApiError> {
    check_names(&[&repo, &branch])?;
    state
        .blocking(move |d| {
            let merged = d
                .commits
                .merged_into(repo_id(&repo), &branch)
                .map_err(commit_error)?;
            Ok(axum::Json(json!({ "branch": branch, "merged": merged })))
        })
        .await
}

/// `GET /repos/{repo}/branches/{x}/merged-into/{y}`.
pub(crate) async fn merged_into(
    State(state): State<Directory>,
    Path((repo, x, y)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    check_names(&[&repo, &x, &y])?;
    state
        .blocking(move |d| {
            let merged = d
                .commits
                .is_merged(repo_id(&repo), &x, &y)
                .map_err(commit_error)?;
            Ok(answers::json_response(answers::merged(merged)))
        })
        .await
}

/// `POST /import/repos/{repo}`: `git rev-list --all --parents` output, an empty line, then
/// `git for-each-ref --format='%(refname) %(objectname)'` output; all or nothing.
pub(crate) async fn import_repo(
    State(state): State<Directory>,
    actor: Actor,
    Path(repo): Path<String>,
    BodyBytes(body): BodyBytes,
) -> Result<Written, ApiError> {
    check_names(&[&repo])?;
    body_text(&body)?;
    state
        .blocking_long(move |d| {
            let text = std::str::from_utf8(&body).unwrap_or_default();
            let (rev_list, refs) = split_import(text);
            let by = Writer::new(actor.as_str(), &repo);
            let summary = d
                .commits
                .import(repo_id(&repo), rev_list, refs, by)
                .map_err(commit_error)?;
            Ok((
                Revision(summary.revision),
                axum::Json(json!({
                    "repo": repo,
                    "added": summary.appended.added,
                    "known": summary.appended.known,
                    "branches": summary.branches,
                    "other_refs": summary.other_refs,
                    "revision": summary.revision,
                })),
            ))
        })
        .await
}

/// Splits an import body at its first empty line: the rev-list before, the refs after.
pub fn split_import(text: &str) -> (&str, &str) {
    for separator in ["\n\n", "\r\n\r\n"] {
        if let Some(at) = text.find(separator) {
            return (&text[..=at], &text[at + separator.len()..]);
        }
    }
    (text, "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids_are_stable_and_distinct() {
        assert_eq!(repo_id("launchpad"), repo_id("launchpad"));
        assert_ne!(repo_id("launchpad"), repo_id("launchpad2"));
    }

    #[test]
    fn import_bodies_split_at_the_first_empty_line() {
        assert_eq!(
            split_import("a b\nb\n\nrefs/heads/main a\n"),
            ("a b\nb\n", "refs/heads/main a\n")
        );
        assert_eq!(split_import("a b\n"), ("a b\n", ""));
    }
}
