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
        return axum::Json(
            json!({ "status": "stale", "stale": true, "revision": follower.head() }),
        )
        .into_response();
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
        axum::Json(json!({ "status": "ok", "stale": false, "revision": follower.head() }))
            .into_response()
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
    let summary = state
        .blocking(|store| store.summary().map_err(store_error))
        .await?;
    let sm = &state.store_metrics;
    let gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    sm.files.set(gauge(summary.files));
    sm.blobs.set(gauge(summary.blobs));
    sm.stored_bytes.set(gauge(summary.stored_bytes));
    sm.logical_bytes.set(gauge(summary.logical_bytes));
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
