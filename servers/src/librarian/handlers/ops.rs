//! Operations: store statistics, health, metrics and the OpenAPI document.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::common::ApiError;
use crate::librarian::Librarian;

use super::store_error;

/// `GET /stats`.
pub(crate) async fn stats(State(state): State<Librarian>) -> Result<axum::Json<Value>, ApiError> {
    state
        .blocking(|store| {
            let s = store.summary().map_err(store_error)?;
            Ok(axum::Json(json!({
                "files": s.files,
                "blobs": s.blobs,
                "stored_bytes": s.stored_bytes,
                "logical_bytes": s.logical_bytes,
                "dedup_ratio": s.dedup_ratio,
            })))
        })
        .await
}

/// `GET /scrub`: the online scrub's settings, progress, last complete pass and the blobs it
/// found damaged, each with the files whose content it is.
pub(crate) async fn scrub(State(state): State<Librarian>) -> Result<axum::Json<Value>, ApiError> {
    let settings = state.scrub_settings;
    state
        .blocking(move |store| {
            let report = store
                .scrub_report(crate::librarian::scrub::MAX_FINDINGS, 100)
                .map_err(store_error)?;
            let pass = |pass: &blobstore::ScrubPass| {
                json!({
                    "pass": pass.pass,
                    "started": pass.started.as_unix_millis(),
                    "finished": pass.finished.map(|t| t.as_unix_millis()),
                    "blobs": pass.blobs,
                    "bytes": pass.bytes,
                    "position": pass.position.map(|h| h.to_hex()),
                })
            };
            let findings: Vec<Value> = report
                .findings
                .iter()
                .map(|finding| {
                    let (found_size, actual) = match &finding.problem {
                        blobstore::BlobProblem::Corrupt { size, actual, .. } => {
                            (Some(*size), Some(actual.to_hex()))
                        }
                        _ => (None, None),
                    };
                    json!({
                        "blake3": finding.problem.hash().to_hex(),
                        "problem": finding.problem.kind(),
                        "size": finding.size,
                        "found_size": found_size,
                        "actual_blake3": actual,
                        "found": finding.found.as_unix_millis(),
                        "files": finding.files.iter().map(|id| id.0).collect::<Vec<_>>(),
                    })
                })
                .collect();
            Ok(axum::Json(json!({
                "rate_bytes_per_sec": settings.bytes_per_sec,
                "period_secs": settings.period.as_secs(),
                "current": report.state.current.as_ref().map(pass),
                "last_complete": report.state.last_complete.as_ref().map(pass),
                "findings": findings,
                "more": report.more,
            })))
        })
        .await
}

/// `POST /admin/backup` with `{"dir": "/absolute/path"}`: writes a backup of the running
/// store into that directory on the server's machine (new or empty), verified; answers a
/// stream of JSON lines, the last the manifest's summary ([`crate::common::backup`];
/// `docs/RELIABILITY.md`, "Backup and restore").
pub(crate) async fn backup(
    State(state): State<Librarian>,
    crate::common::error::Json(request): crate::common::error::Json<crate::common::BackupRequest>,
) -> Result<Response, ApiError> {
    use crate::librarian::backup::LibrarianBackupError;
    let Some(config) = state.store_config.clone() else {
        return Err(crate::common::backup::backup_unavailable());
    };
    let dir = crate::common::backup::check_backup(request, config.backend).await?;
    let store = state.store.clone();
    Ok(crate::common::backup::streamed_backup(move || {
        let manifest = crate::librarian::backup::backup(&store, &config, &dir).map_err(
            |error| match error {
                LibrarianBackupError::Backup(error) => crate::common::backup_error(error),
                LibrarianBackupError::Store(blobstore::Error::Engine(error)) => {
                    crate::common::backup_error(engine::backup::BackupError::Engine(error))
                }
                error => ApiError::internal(error),
            },
        )?;
        Ok(crate::common::backup_summary(&dir, &manifest))
    }))
}

/// `GET /health`: 200 `{"status":"ok"}` when the store's dependencies answer; 503
/// `{"status":"degraded","failing":[...]}` naming those that do not (`engine`, the metadata
/// engine; `object_store`, when blob bytes live on one). With several instances on one
/// database, `stale: true` (and 200 `{"status":"stale"}`, without probing) when the change
/// log could not be read for `server.max_staleness_ms`; `revision` is the newest revision
/// this instance has applied.
pub(crate) async fn health(State(state): State<Librarian>) -> Response {
    let follower = state.follower.clone();
    if follower.is_stale() {
        // The database is away (the change log could not be read for max_staleness): say
        // so without waiting for the engine's retries; cached downloads are still served.
        return axum::Json(follower.health("stale")).into_response();
    }
    let store = state.store.clone();
    let engine = async {
        match state.pool.run(move || store.summary().map(|_| ())).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(error.to_string()),
            Err(error) => Err(error.to_string()),
        }
    };
    let object_store = async {
        match &state.object_store {
            Some(probe) => probe.check().await,
            None => Ok(()),
        }
    };
    let (engine, object_store) = tokio::join!(engine, object_store);
    let mut failing = Vec::new();
    for (name, result) in [("engine", engine), ("object_store", object_store)] {
        if let Err(cause) = result {
            tracing::error!(dependency = name, %cause, "health check failing");
            failing.push(name);
        }
    }
    if failing.is_empty() {
        axum::Json(follower.health("ok")).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({ "status": "degraded", "failing": failing })),
        )
            .into_response()
    }
}

/// `GET /metrics`: the Prometheus text format.
pub(crate) async fn metrics(State(state): State<Librarian>) -> Result<Response, ApiError> {
    let (summary, unindexed) = state
        .blocking(|store| {
            let summary = store.summary().map_err(store_error)?;
            let log = store.change_log();
            let indexed = log.indexed_through().map_err(ApiError::unavailable)?;
            Ok((summary, log.head().saturating_sub(indexed)))
        })
        .await?;
    let sm = &state.store_metrics;
    let gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    sm.files.set(gauge(summary.files));
    sm.blobs.set(gauge(summary.blobs));
    sm.stored_bytes.set(gauge(summary.stored_bytes));
    sm.logical_bytes.set(gauge(summary.logical_bytes));
    sm.feed_history_unindexed.set(gauge(unindexed));
    let subscriptions = state.subscriptions.clone();
    let lag = state
        .blocking(move |_| Ok(subscriptions.metrics_text()))
        .await?;
    let mut text = state.metrics.encode();
    text.push_str(&lag);
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

/// `GET /openapi.json`.
pub(crate) async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        crate::librarian::OPENAPI,
    )
        .into_response()
}
