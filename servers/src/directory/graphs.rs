//! The routes of general graphs (`/graphs/...`, `/import/graphs/{graph}`) and the TSV
//! exports of every namespace (`/graphs/{graph}/edges`, `/export/teams`,
//! `/export/packagesets`), streamed as they are written.

use std::io::{BufReader, Write};

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use graphdb::{Direction, Graph, LabelledEdge, NamespaceKind, Traversal};
use serde::Deserialize;
use serde_json::{json, Value};

use super::handlers::{check_names, graph_error};
use super::Directory;
use crate::common::error::{BodyBytes, Json, Path, Query};
use crate::common::{Actor, ApiError, Revision};

/// The default page size of descendants and ancestors.
const DEFAULT_LIMIT: usize = 1000;

/// The graph `name`, or 404.
fn graph(d: &Directory, name: &str) -> Result<Graph, ApiError> {
    d.store
        .graph(name)
        .map_err(graph_error)?
        .ok_or_else(|| ApiError::not_found(format!("no such graph: {name:?}")))
}

fn written(revision: u64, mut body: Value) -> (Revision, axum::Json<Value>) {
    body["revision"] = revision.into();
    (Revision(revision), axum::Json(body))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GraphBody {
    kind: String,
}

/// `PUT /graphs/{graph}` `{"kind": "general" | "acyclic"}`: creates the graph (idempotent;
/// 409 when it exists with the other kind). `X-Revision` is the feed's head (creating a
/// graph records no event).
pub(crate) async fn put_graph(
    State(state): State<Directory>,
    Path(name): Path<String>,
    Json(body): Json<GraphBody>,
) -> Result<(Revision, axum::Json<Value>), ApiError> {
    check_names(&[&name])?;
    let kind = match body.kind.as_str() {
        "general" => NamespaceKind::General,
        "acyclic" => NamespaceKind::Acyclic,
        _ => {
            return Err(ApiError::bad_request(
                "bad_kind",
                "kind is \"general\" or \"acyclic\"",
            ))
        }
    };
    state
        .blocking(move |d| {
            d.store.create_graph(&name, kind).map_err(|e| match e {
                graphdb::Error::NamespaceKind { .. } => ApiError::conflict(
                    "graph_kind",
                    format!("graph {name:?} exists with the other kind"),
                ),
                other => graph_error(other),
            })?;
            let head = d.store.change_log().head();
            Ok(written(head, json!({ "graph": name, "kind": body.kind })))
        })
        .await
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct EdgeBody {
    label: Option<String>,
}

/// `PUT /graphs/{graph}/edges/{from}/{to}` with an optional body `{"label": "depends"}`.
pub(crate) async fn put_edge(
    State(state): State<Directory>,
    actor: Actor,
    Path((name, from, to)): Path<(String, String, String)>,
    BodyBytes(body): BodyBytes,
) -> Result<(Revision, axum::Json<Value>), ApiError> {
    check_names(&[&name, &from, &to])?;
    let body: EdgeBody = if body.iter().all(u8::is_ascii_whitespace) {
        EdgeBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request("bad_json", format!("invalid body: {e}")))?
    };
    state
        .blocking(move |d| {
            let g = graph(d, &name)?.acting_as(actor.as_str());
            let revision = g
                .put_edge(&from, &to, body.label.as_deref())
                .map_err(graph_error)?;
            Ok(written(
                revision,
                json!({ "from": from, "to": to, "label": body.label }),
            ))
        })
        .await
}

/// `DELETE /graphs/{graph}/edges/{from}/{to}`: 204, or 404 when there is no such edge.
pub(crate) async fn delete_edge(
    State(state): State<Directory>,
    actor: Actor,
    Path((name, from, to)): Path<(String, String, String)>,
) -> Result<(Revision, StatusCode), ApiError> {
    check_names(&[&name, &from, &to])?;
    let removed = state
        .blocking(move |d| {
            let g = graph(d, &name)?.acting_as(actor.as_str());
            g.remove_edge(&from, &to).map_err(graph_error)
        })
        .await?;
    match removed {
        Some(revision) => Ok((Revision(revision), StatusCode::NO_CONTENT)),
        None => Err(ApiError::not_found("no such edge")),
    }
}

/// `POST /import/graphs/{graph}`: TSV `from\tto\tlabel`, all or nothing; 413 past the
/// configured edge limit.
pub(crate) async fn import_graph(
    State(state): State<Directory>,
    actor: Actor,
    Path(name): Path<String>,
    BodyBytes(body): BodyBytes,
) -> Result<(Revision, axum::Json<Value>), ApiError> {
    check_names(&[&name])?;
    state
        .blocking_long(move |d| {
            let g = graph(d, &name)?.acting_as(actor.as_str());
            let limit = d.max_import_edges;
            let (nodes, edges, revision) = g
                .import_tsv(BufReader::new(body.as_ref()), Some(limit))
                .map_err(|e| match e {
                    graphdb::Error::Import(graphdb::import::ImportError::Line {
                        line,
                        problem: graphdb::import::LineProblem::TooManyEdges { limit },
                    }) => ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "too_many_edges",
                        format!("line {line}: an import holds at most {limit} edges"),
                    ),
                    other => graph_error(other),
                })?;
            Ok(written(revision, json!({ "nodes": nodes, "edges": edges })))
        })
        .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReachQuery {
    from: String,
    to: String,
    #[serde(default)]
    path: bool,
}

/// `GET /graphs/{graph}/reachable?from=A&to=B[&path=true]`.
pub(crate) async fn reachable(
    State(state): State<Directory>,
    Path(name): Path<String>,
    Query(query): Query<ReachQuery>,
) -> Result<axum::Json<Value>, ApiError> {
    check_names(&[&name, &query.from, &query.to])?;
    state
        .blocking(move |d| {
            let reach = graph(d, &name)?
                .reachable(&query.from, &query.to, query.path)
                .map_err(graph_error)?;
            let mut body = json!({ "reachable": reach.reachable });
            if query.path {
                body["path"] = json!(reach.path);
            }
            Ok(axum::Json(body))
        })
        .await
}

/// The options of a traversal: `after`, `limit`, `depth`, any number of `label`.
fn traversal(pairs: &[(String, String)]) -> Result<Traversal<'_>, ApiError> {
    let bad = |m: &str| ApiError::bad_request("bad_query", m.to_owned());
    let mut query = Traversal {
        limit: DEFAULT_LIMIT,
        ..Traversal::default()
    };
    for (key, value) in pairs {
        match key.as_str() {
            "after" => query.after = Some(value),
            "limit" => match value.parse::<usize>() {
                Ok(n) if n > 0 => query.limit = n,
                _ => return Err(bad("limit is a positive integer")),
            },
            "depth" => match value.parse::<u32>() {
                Ok(n) if n > 0 => query.depth = Some(n),
                _ => return Err(bad("depth is a positive integer")),
            },
            "label" => {
                graphdb::validate_label(value).map_err(|e| bad(&e.to_string()))?;
                query.labels.get_or_insert_with(Vec::new).push(value);
            }
            other => return Err(bad(&format!("unknown parameter {other:?}"))),
        }
    }
    Ok(query)
}

/// The body of a traversal page, serialised from names borrowed from the index.
#[derive(serde::Serialize)]
struct TraversalPage<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    descendants: Option<&'a [&'a str]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ancestors: Option<&'a [&'a str]>,
    next: Option<&'a str>,
}

async fn traverse(
    state: Directory,
    name: String,
    node: String,
    pairs: Vec<(String, String)>,
    direction: Direction,
) -> Result<Response, ApiError> {
    check_names(&[&name, &node])?;
    traversal(&pairs)?;
    let field = match direction {
        Direction::Ancestors => "ancestors",
        Direction::Descendants => "descendants",
    };
    // Serialised on the blocking thread from the names borrowed from the index: no string
    // copied per name (a large set's page holds tens of thousands).
    let body = state
        .blocking(move |d| {
            let query = traversal(&pairs)?;
            graph(d, &name)?
                .traverse_with(&node, direction, &query, |names, next| {
                    let (descendants, ancestors) = if field == "ancestors" {
                        (None, Some(names))
                    } else {
                        (Some(names), None)
                    };
                    serde_json::to_vec(&TraversalPage {
                        descendants,
                        ancestors,
                        next,
                    })
                })
                .map_err(graph_error)?
                .map_err(ApiError::internal)
        })
        .await?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// `GET /graphs/{graph}/nodes/{node}/descendants`.
pub(crate) async fn descendants(
    State(state): State<Directory>,
    Path((name, node)): Path<(String, String)>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    traverse(state, name, node, pairs, Direction::Descendants).await
}

/// `GET /graphs/{graph}/nodes/{node}/ancestors`.
pub(crate) async fn ancestors(
    State(state): State<Directory>,
    Path((name, node)): Path<(String, String)>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    traverse(state, name, node, pairs, Direction::Ancestors).await
}

/// `GET /graphs/{graph}/nodes/{node}`: `{"node", "out", "in", "component"}`.
pub(crate) async fn node(
    State(state): State<Directory>,
    Path((name, node)): Path<(String, String)>,
) -> Result<axum::Json<Value>, ApiError> {
    check_names(&[&name, &node])?;
    state
        .blocking(move |d| {
            let info = graph(d, &name)?.node(&node).map_err(graph_error)?;
            let out: Vec<Value> = info
                .out
                .into_iter()
                .map(|e: LabelledEdge| json!({ "to": e.to, "label": e.label }))
                .collect();
            let into: Vec<Value> = info
                .into
                .into_iter()
                .map(|e| json!({ "from": e.from, "label": e.label }))
                .collect();
            Ok(axum::Json(json!({
                "node": info.node,
                "out": out,
                "in": into,
                "component": info.component,
            })))
        })
        .await
}

/// A writer that sends what it is given to the response body in chunks of 64 KiB; fails
/// (ending the export) when the client has gone.
struct ChunkWriter {
    buf: Vec<u8>,
    sender: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
}

impl ChunkWriter {
    const CHUNK: usize = 64 * 1024;

    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::take(&mut self.buf));
        self.sender
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client gone"))
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= Self::CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

/// Streams what `export` writes as a TSV body. The export runs on Tokio's blocking pool; its
/// first failure (a 404, say) is the answer when nothing was sent yet, else it cuts the body.
async fn stream_tsv<F>(state: Directory, export: F) -> Result<Response, ApiError>
where
    F: FnOnce(&Directory, &mut ChunkWriter) -> Result<(), ApiError> + Send + 'static,
{
    let (sender, mut receiver) = tokio::sync::mpsc::channel(4);
    let (started, first) = tokio::sync::oneshot::channel::<Result<(), ApiError>>();
    let error_sender = sender.clone();
    tokio::task::spawn_blocking(move || {
        let mut writer = ChunkWriter {
            buf: Vec::with_capacity(ChunkWriter::CHUNK),
            sender,
        };
        let result = export(&state, &mut writer).and_then(|()| {
            writer
                .flush()
                .map_err(|e| ApiError::internal(format!("export: {e}")))
        });
        match result {
            Ok(()) => drop(started.send(Ok(()))),
            Err(error) => {
                if let Err(Err(error)) = started.send(Err(error)) {
                    // The body was already under way: cut it.
                    let cause = std::io::Error::other(error.code());
                    drop(error_sender.blocking_send(Err(cause)));
                }
            }
        }
    });
    // Wait for the first chunk or the end, whichever comes first, to answer errors properly.
    // An export that fails before its first chunk reports, then drops its sender, so the
    // channel can be seen closed before the outcome is: a closed channel without a chunk
    // waits for the outcome (answering 200 with an empty body there turned an unknown graph
    // into an empty one, seen once in `make test`).
    let mut first = first;
    let first_chunk = tokio::select! {
        biased;
        result = &mut first => {
            result.map_err(ApiError::internal)??;
            receiver.recv().await
        }
        chunk = receiver.recv() => match chunk {
            Some(chunk) => Some(chunk),
            None => {
                first.await.map_err(ApiError::internal)??;
                None
            }
        },
    };
    let head = futures_util::stream::iter(first_chunk);
    let rest = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|item| (item, receiver))
    });
    use futures_util::StreamExt;
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/tab-separated-values; charset=utf-8",
        )],
        Body::from_stream(head.chain(rest)),
    )
        .into_response())
}

/// `GET /graphs/{graph}/edges`: the graph as the TSV that `POST /import/graphs/{graph}` reads.
pub(crate) async fn export_graph(
    State(state): State<Directory>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    check_names(&[&name])?;
    stream_tsv(state, move |d, out| {
        graph(d, &name)?.export_tsv(out).map_err(graph_error)
    })
    .await
}

/// `GET /export/teams`: the TSV that `POST /import/teams` reads.
pub(crate) async fn export_teams(State(state): State<Directory>) -> Result<Response, ApiError> {
    stream_tsv(state, |d, out| d.teams.export_tsv(out).map_err(graph_error)).await
}

/// `GET /export/packagesets`: the TSV that `POST /import/packagesets` reads.
pub(crate) async fn export_packagesets(
    State(state): State<Directory>,
) -> Result<Response, ApiError> {
    stream_tsv(state, |d, out| d.sets.export_tsv(out).map_err(graph_error)).await
}
