//! The directory's handlers. Store calls run on the blocking pool, except point lookups in the
//! in-memory team index, answered in place when the index is free (`Directory::team_lookup`).

use std::io::BufReader;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use graphdb::{Depth, SetFilter, SetItem, TeamFilter};
use serde::Deserialize;
use serde_json::{json, Value};

use std::sync::Arc;

use super::{answers, Directory};
use crate::common::error::{BodyBytes, Json, Path, Query};
use crate::common::{Actor, ApiError, Revision};

/// A write's answer: `X-Revision` and `"revision"` in the JSON body.
fn written(revision: u64, mut body: Value) -> (Revision, axum::Json<Value>) {
    body["revision"] = revision.into();
    (Revision(revision), axum::Json(body))
}

/// The longest name accepted.
const MAX_NAME: usize = 255;

/// Maps a store error to the client's answer; internal causes are logged, never sent.
pub(crate) fn graph_error(error: graphdb::Error) -> ApiError {
    use graphdb::Error as E;
    if let E::Engine(inner) | E::Feed(engine::FeedError::Engine(inner)) = &error {
        if let Some(answer) = ApiError::from_engine(inner) {
            return answer;
        }
    }
    match error {
        E::UnknownNode { name, .. } => ApiError::not_found(format!("no such name: {name:?}")),
        E::WrongKind {
            name,
            found,
            expected,
            ..
        // The name exists as another kind: a conflict with the store's state, not a
        // malformed request (the same request succeeds where the name is free).
        } => ApiError::conflict(
            "wrong_kind",
            format!("{name:?} is a {found}, not a {expected}"),
        ),
        E::HasNoMembers { namespace, name } if namespace == "teams" => ApiError::bad_request(
            "person_has_no_members",
            format!("{name:?} is a person; a person cannot have members"),
        ),
        E::HasNoMembers { name, .. } => {
            ApiError::conflict("wrong_kind", format!("{name:?} is a leaf, not a group"))
        }
        E::Cycle {
            member,
            group,
            cycle,
            ..
        } => ApiError::conflict(
            "cycle",
            format!("making {member:?} a member of {group:?} would close a cycle"),
        )
        .with_detail("cycle", json!(cycle)),
        E::InvalidName { reason, .. } => {
            ApiError::bad_request("bad_name", format!("invalid name: {reason}"))
        }
        E::InvalidLabel { reason, .. } => {
            ApiError::bad_request("bad_label", format!("invalid label: {reason}"))
        }
        E::CyclesFixed { name, .. } => ApiError::conflict(
            "cycles_fixed",
            format!("{name:?} exists with the other choice about cycles"),
        ),
        E::UnknownGraph { name } => ApiError::not_found(format!("no such graph: {name:?}")),
        E::LabelsExhausted { .. } => {
            ApiError::conflict("too_many_labels", "the graph uses 65,535 labels already")
        }
        E::InvalidRelation { reason, .. } => {
            ApiError::bad_request("bad_relation", format!("invalid relation: {reason}"))
        }
        E::Import(graphdb::import::ImportError::Line { line, problem }) => {
            ApiError::bad_request("bad_import", format!("line {line}: {problem}"))
                .with_detail("line", json!(line))
        }
        E::Import(other) => ApiError::bad_request("bad_import", other.to_string()),
        E::Poisoned { .. } => ApiError::unavailable(error),
        other => ApiError::internal(other),
    }
}

/// Refuses names over 255 bytes or with control characters.
pub(crate) fn check_name(name: &str) -> Result<(), ApiError> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(ApiError::bad_request(
            "bad_name",
            format!("a name is 1 to {MAX_NAME} bytes"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "bad_name",
            "a name has no control characters",
        ));
    }
    Ok(())
}

pub(crate) fn check_names(names: &[&str]) -> Result<(), ApiError> {
    names.iter().try_for_each(|n| check_name(n))
}

pub(crate) fn depth(transitive: Option<bool>) -> Depth {
    if transitive.unwrap_or(true) {
        Depth::Transitive
    } else {
        Depth::Direct
    }
}

/// `PUT /teams/{team}`.
pub(crate) async fn put_team(
    State(state): State<Directory>,
    actor: Actor,
    Path(team): Path<String>,
) -> Result<(Revision, axum::Json<Value>), ApiError> {
    check_name(&team)?;
    state
        .blocking(move |d| {
            let teams = d.teams.acting_as(actor.as_str());
            let revision = teams.add_team(&team).map_err(graph_error)?;
            Ok(written(revision, json!({ "team": team })))
        })
        .await
}

/// `PUT /persons/{person}`.
pub(crate) async fn put_person(
    State(state): State<Directory>,
    actor: Actor,
    Path(person): Path<String>,
) -> Result<(Revision, axum::Json<Value>), ApiError> {
    check_name(&person)?;
    state
        .blocking(move |d| {
            let teams = d.teams.acting_as(actor.as_str());
            let revision = teams.add_person(&person).map_err(graph_error)?;
            Ok(written(revision, json!({ "person": person })))
        })
        .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MemberBody {
    role: String,
    #[serde(default)]
    expires: Option<i64>,
}

/// `PUT /teams/{team}/members/{member}`: a membership (`member`, `admin`) or a relation.
pub(crate) async fn put_member(
    State(state): State<Directory>,
    actor: Actor,
    Path((team, member)): Path<(String, String)>,
    Json(body): Json<MemberBody>,
) -> Result<(Revision, axum::Json<Value>), ApiError> {
    check_names(&[&team, &member])?;
    state
        .blocking(move |d| {
            let kind = graphdb::EdgeKind::named(&body.role);
            let revision = d
                .teams
                .acting_as(actor.as_str())
                .put_member(&team, &member, &kind, body.expires)
                .map_err(graph_error)?;
            Ok(written(
                revision,
                json!({
                    "team": team,
                    "member": member,
                    "role": body.role,
                    "expires": body.expires,
                }),
            ))
        })
        .await
}

#[derive(Debug, Deserialize)]
pub(crate) struct DeleteMemberQuery {
    relation: Option<String>,
}

/// `DELETE /teams/{team}/members/{member}[?relation=NAME]`.
pub(crate) async fn delete_member(
    State(state): State<Directory>,
    actor: Actor,
    Path((team, member)): Path<(String, String)>,
    Query(query): Query<DeleteMemberQuery>,
) -> Result<(Revision, StatusCode), ApiError> {
    check_names(&[&team, &member])?;
    let removed = state
        .blocking(move |d| {
            let teams = d.teams.acting_as(actor.as_str());
            match &query.relation {
                None => teams.remove_membership(&team, &member),
                Some(relation) => teams.revoke(&member, relation, &team),
            }
            .map_err(graph_error)
        })
        .await?;
    match removed {
        Some(revision) => Ok((Revision(revision), StatusCode::NO_CONTENT)),
        None => Err(ApiError::not_found("no such membership or relation")),
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct ListQuery {
    transitive: Option<bool>,
    #[serde(rename = "type")]
    kind: Option<String>,
    after: Option<String>,
    limit: Option<usize>,
}

pub(crate) fn team_filter(kind: Option<&str>) -> Result<TeamFilter, ApiError> {
    match kind.unwrap_or("all") {
        "person" => Ok(TeamFilter::Persons),
        "team" => Ok(TeamFilter::Teams),
        "all" => Ok(TeamFilter::All),
        _ => Err(ApiError::bad_request(
            "bad_query",
            "type is person, team or all",
        )),
    }
}

pub(crate) fn limit(limit: Option<usize>) -> Result<usize, ApiError> {
    match limit {
        None => Ok(usize::MAX),
        Some(0) => Err(ApiError::bad_request("bad_query", "limit must be positive")),
        Some(n) => Ok(n),
    }
}

/// Serializes a page without building a `serde_json::Value` per name (the 18,000-member case).
pub(crate) fn page_response(field: &str, page: graphdb::Page) -> Result<Response, ApiError> {
    #[derive(serde::Serialize)]
    struct Out<'a> {
        #[serde(flatten)]
        items: std::collections::BTreeMap<&'a str, &'a [String]>,
        next: Option<&'a str>,
    }
    let mut items = std::collections::BTreeMap::new();
    items.insert(field, page.items.as_slice());
    let body = serde_json::to_vec(&Out {
        items,
        next: page.next.as_deref(),
    })
    .map_err(ApiError::internal)?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// `GET /teams/{team}/members`.
pub(crate) async fn members(
    State(state): State<Directory>,
    Path(team): Path<String>,
    Query(query): Query<ListQuery>,
) -> Result<Response, ApiError> {
    check_name(&team)?;
    let filter = team_filter(query.kind.as_deref())?;
    let limit = limit(query.limit)?;
    if depth(query.transitive) == Depth::Transitive {
        let bodies = Arc::clone(&state.member_bodies);
        return state
            .team_lookup(move |view| {
                answers::transitive_members(
                    view,
                    &bodies,
                    &team,
                    filter,
                    query.after.as_deref(),
                    limit,
                )
                .map(answers::json_response)
            })
            .await;
    }
    let page = state
        .blocking(move |d| {
            d.teams
                .members(
                    &team,
                    depth(query.transitive),
                    filter,
                    query.after.as_deref(),
                    limit,
                )
                .map_err(graph_error)
        })
        .await?;
    page_response("members", page)
}

/// `GET /teams/{team}/members/{member}`: `{"member": bool, "path": [...]}`.
pub(crate) async fn is_member(
    State(state): State<Directory>,
    Path((team, member)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    check_names(&[&team, &member])?;
    state
        .team_lookup(move |view| {
            answers::is_member(view, &team, &member).map(answers::json_response)
        })
        .await
}

/// `GET /persons/{person}/teams`.
pub(crate) async fn teams_of(
    State(state): State<Directory>,
    Path(person): Path<String>,
    Query(query): Query<ListQuery>,
) -> Result<Response, ApiError> {
    check_name(&person)?;
    let limit = limit(query.limit)?;
    // The busiest person's 432 teams take microseconds to sort by rank: answered in place.
    state
        .team_lookup(move |view| {
            answers::teams_of(
                view,
                &person,
                depth(query.transitive),
                query.after.as_deref(),
                limit,
            )
            .map(answers::json_response)
        })
        .await
}

/// `GET /teams/{team}/holders/{relation}`.
pub(crate) async fn holders(
    State(state): State<Directory>,
    Path((team, relation)): Path<(String, String)>,
    Query(query): Query<ListQuery>,
) -> Result<Response, ApiError> {
    check_names(&[&team, &relation])?;
    let filter = team_filter(query.kind.as_deref())?;
    let limit = limit(query.limit)?;
    let page = state
        .blocking(move |d| {
            d.teams
                .holders(&relation, &team, filter, query.after.as_deref(), limit)
                .map_err(graph_error)
        })
        .await?;
    page_response("holders", page)
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PathQuery {
    #[serde(default)]
    path: bool,
}

/// `GET /teams/{team}/holders/{relation}/{person}[?path=true]`: `{"holder": bool}`, with
/// `"path": [person, team, ..., direct holder]` on request.
pub(crate) async fn is_holder(
    State(state): State<Directory>,
    Path((team, relation, person)): Path<(String, String, String)>,
    Query(query): Query<PathQuery>,
) -> Result<axum::Json<Value>, ApiError> {
    check_names(&[&team, &relation, &person])?;
    state
        .team_lookup(move |view| {
            if query.path {
                let path = view
                    .holder_path(&person, &relation, &team)
                    .map_err(graph_error)?;
                return Ok(axum::Json(
                    json!({ "holder": path.is_some(), "path": path }),
                ));
            }
            let holder = view
                .is_holder(&person, &relation, &team)
                .map_err(graph_error)?;
            Ok(axum::Json(json!({ "holder": holder })))
        })
        .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RelationsQuery {
    relation: String,
    after: Option<String>,
    limit: Option<usize>,
}

/// `GET /persons/{person}/relations?relation=audits`: the teams on which the person holds the
/// relation, directly or through the teams it was granted to.
pub(crate) async fn relations_of(
    State(state): State<Directory>,
    Path(person): Path<String>,
    Query(query): Query<RelationsQuery>,
) -> Result<Response, ApiError> {
    check_names(&[&person, &query.relation])?;
    let limit = limit(query.limit)?;
    let page = state
        .blocking(move |d| {
            d.teams
                .relations_of(&person, &query.relation, query.after.as_deref(), limit)
                .map_err(graph_error)
        })
        .await?;
    page_response("teams", page)
}

/// `GET /packagesets/{set}/packages/{package}[?path=true]`: `{"contains": bool}`, with
/// `"path": [package, set1, ..., set]` on request.
pub(crate) async fn set_contains(
    State(state): State<Directory>,
    Path((set, package)): Path<(String, String)>,
    Query(query): Query<PathQuery>,
) -> Result<axum::Json<Value>, ApiError> {
    check_names(&[&set, &package])?;
    state
        .blocking(move |d| {
            let path = d.sets.path(&package, &set).map_err(graph_error)?;
            let mut body = json!({ "contains": path.is_some() });
            if query.path {
                body["path"] = json!(path);
            }
            Ok(axum::Json(body))
        })
        .await
}

#[derive(Debug, Deserialize)]
pub(crate) struct ItemQuery {
    #[serde(rename = "type")]
    kind: Option<String>,
}

/// `PUT /packagesets/{set}/items/{item}?type=package|set`.
pub(crate) async fn put_item(
    State(state): State<Directory>,
    actor: Actor,
    Path((set, item)): Path<(String, String)>,
    Query(query): Query<ItemQuery>,
) -> Result<(Revision, axum::Json<Value>), ApiError> {
    check_names(&[&set, &item])?;
    let kind = query.kind.unwrap_or_else(|| "package".to_string());
    let item_type = match kind.as_str() {
        "package" => SetItem::Package,
        "set" => SetItem::Set,
        _ => return Err(ApiError::bad_request("bad_query", "type is package or set")),
    };
    state
        .blocking(move |d| {
            let revision = d
                .sets
                .acting_as(actor.as_str())
                .put_item(&set, &item, item_type)
                .map_err(graph_error)?;
            Ok(written(
                revision,
                json!({ "set": set, "item": item, "type": kind }),
            ))
        })
        .await
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SetBody {
    cycles: Option<String>,
}

/// `PUT /packagesets/{set}` with an optional body `{"cycles": "allow" | "refuse"}` (default
/// `refuse`, decided at creation: 409 `cycles_fixed` for an existing set with the other one).
pub(crate) async fn put_set(
    State(state): State<Directory>,
    actor: Actor,
    Path(set): Path<String>,
    BodyBytes(body): BodyBytes,
) -> Result<(Revision, axum::Json<Value>), ApiError> {
    check_name(&set)?;
    let body: SetBody = if body.iter().all(u8::is_ascii_whitespace) {
        SetBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request("bad_json", format!("invalid body: {e}")))?
    };
    let allow = match body.cycles.as_deref().unwrap_or("refuse") {
        "allow" => true,
        "refuse" => false,
        _ => {
            return Err(ApiError::bad_request(
                "bad_json",
                "cycles is \"allow\" or \"refuse\"",
            ))
        }
    };
    state
        .blocking(move |d| {
            let revision = d
                .sets
                .acting_as(actor.as_str())
                .add_set_with_cycles(&set, allow)
                .map_err(graph_error)?;
            let cycles = if allow { "allow" } else { "refuse" };
            Ok(written(revision, json!({ "set": set, "cycles": cycles })))
        })
        .await
}

/// `DELETE /packagesets/{set}/items/{item}`.
pub(crate) async fn delete_item(
    State(state): State<Directory>,
    actor: Actor,
    Path((set, item)): Path<(String, String)>,
) -> Result<(Revision, StatusCode), ApiError> {
    check_names(&[&set, &item])?;
    let removed = state
        .blocking(move |d| {
            d.sets
                .acting_as(actor.as_str())
                .take(&set, &item)
                .map_err(graph_error)
        })
        .await?;
    match removed {
        Some(revision) => Ok((Revision(revision), StatusCode::NO_CONTENT)),
        None => Err(ApiError::not_found("the item is not in the set")),
    }
}

/// `GET /packagesets/{set}/packages`.
pub(crate) async fn packages(
    State(state): State<Directory>,
    Path(set): Path<String>,
    Query(query): Query<ListQuery>,
) -> Result<Response, ApiError> {
    check_name(&set)?;
    let limit = limit(query.limit)?;
    let page = state
        .blocking(move |d| {
            d.sets
                .items(
                    &set,
                    depth(query.transitive),
                    SetFilter::Packages,
                    query.after.as_deref(),
                    limit,
                )
                .map_err(graph_error)
        })
        .await?;
    page_response("packages", page)
}

/// `GET /packages/{package}/packagesets`.
pub(crate) async fn packagesets_of(
    State(state): State<Directory>,
    Path(package): Path<String>,
    Query(query): Query<ListQuery>,
) -> Result<Response, ApiError> {
    check_name(&package)?;
    let limit = limit(query.limit)?;
    let page = state
        .blocking(move |d| {
            d.sets
                .sets_of(
                    &package,
                    depth(query.transitive),
                    query.after.as_deref(),
                    limit,
                )
                .map_err(graph_error)
        })
        .await?;
    page_response("packagesets", page)
}

/// `POST /import/teams`: the TSV of graphdb's import, all or nothing.
pub(crate) async fn import_teams(
    State(state): State<Directory>,
    actor: Actor,
    BodyBytes(body): BodyBytes,
) -> Result<(Revision, axum::Json<Value>), ApiError> {
    state
        .blocking_long(move |d| {
            let summary = d
                .teams
                .acting_as(actor.as_str())
                .import_tsv(BufReader::new(body.as_ref()), None)
                .map_err(graph_error)?;
            Ok(written(
                summary.revision,
                json!({ "nodes": summary.nodes, "edges": summary.edges }),
            ))
        })
        .await
}

/// `POST /import/packagesets`.
pub(crate) async fn import_packagesets(
    State(state): State<Directory>,
    actor: Actor,
    BodyBytes(body): BodyBytes,
) -> Result<(Revision, axum::Json<Value>), ApiError> {
    state
        .blocking_long(move |d| {
            let summary = d
                .sets
                .acting_as(actor.as_str())
                .import_tsv(BufReader::new(body.as_ref()), None)
                .map_err(graph_error)?;
            Ok(written(
                summary.revision,
                json!({ "nodes": summary.nodes, "edges": summary.edges }),
            ))
        })
        .await
}

/// `GET /health`: 200 when the engine answers a read, 503 when not.
///
/// `stale` says whether the instance could not read the change log for longer than
/// `server.max_staleness_ms` (the database is away): it still answers reads, from memory, so
/// the answer is 200 `{"status": "stale", "stale": true}` without probing the engine (which
/// would wait for the database); `revision` is the newest revision it has applied.
pub(crate) async fn health(State(state): State<Directory>) -> Result<axum::Json<Value>, ApiError> {
    let follower = state.follower.clone();
    if follower.is_stale() {
        return Ok(axum::Json(follower.health("stale")));
    }
    state
        .blocking(move |d| {
            let engine = d.store.engine();
            let name = graphdb::KEYSPACES.first().copied().unwrap_or("default");
            let keyspace = engine.keyspace(name).map_err(ApiError::unavailable)?;
            engine
                .get(keyspace, b"health-probe")
                .map_err(ApiError::unavailable)?;
            Ok(axum::Json(follower.health("ok")))
        })
        .await
}

/// `GET /metrics`: HTTP metrics and the sizes of the indexes.
pub(crate) async fn metrics(State(state): State<Directory>) -> Result<Response, ApiError> {
    let gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    let teams = state.teams.stats();
    let unindexed = state
        .blocking(|d| {
            let log = d.store.change_log();
            let indexed = log.indexed_through().map_err(ApiError::unavailable)?;
            Ok(log.head().saturating_sub(indexed))
        })
        .await?;
    let g = &state.graph_metrics;
    g.team_nodes.set(gauge(teams.nodes));
    g.team_edges.set(gauge(teams.membership_edges));
    g.team_pairs.set(gauge(teams.pairs));
    g.feed_history_unindexed.set(gauge(unindexed));
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        with_subscriptions(state.metrics.encode(), &state),
    )
        .into_response())
}

/// Adds the subscriptions' lag to the metrics text (before a `# EOF` line, if there is one).
fn with_subscriptions(mut text: String, state: &Directory) -> String {
    let Some(subscriptions) = state.subscriptions.started() else {
        return text;
    };
    let eof = text.rfind("# EOF").unwrap_or(text.len());
    let tail = text.split_off(eof);
    text.push_str(&subscriptions.metrics_text());
    text.push_str(&tail);
    text
}

/// `GET /openapi.json`.
pub(crate) async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], super::OPENAPI).into_response()
}

/// `POST /admin/backup` with `{"dir": "/absolute/path"}`: writes a backup of the running
/// store into that directory on the server's machine (new or empty), verified; answers a
/// stream of JSON lines, the last the manifest's summary ([`crate::common::backup`];
/// `docs/RELIABILITY.md`, "Backup and restore").
pub(crate) async fn backup(
    State(state): State<Directory>,
    crate::common::error::Json(request): crate::common::error::Json<crate::common::BackupRequest>,
) -> Result<Response, ApiError> {
    use crate::directory::backup::DirectoryBackupError;
    let Some(config) = state.store_config.clone() else {
        return Err(crate::common::backup::backup_unavailable());
    };
    let dir = crate::common::backup::check_backup(request, config.backend).await?;
    let engine = std::sync::Arc::clone(state.store.engine());
    Ok(crate::common::backup::streamed_backup(move || {
        let manifest =
            crate::directory::backup::backup(engine.as_ref(), &config, &dir).map_err(|error| {
                match error {
                    DirectoryBackupError::Backup(error) => crate::common::backup_error(error),
                    error => ApiError::internal(error),
                }
            })?;
        Ok(crate::common::backup_summary(&dir, &manifest))
    }))
}
