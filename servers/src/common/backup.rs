//! What both services' `POST /admin/backup` and their `backup --server` command share: the
//! request, the answer, the mapping of errors to statuses, and the client.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use engine::backup::{BackupError, Manifest};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::ApiError;

/// The body of `POST /admin/backup`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupRequest {
    /// Where the server writes the backup, on its own machine: an absolute path to a new or
    /// empty directory.
    pub dir: PathBuf,
}

impl BackupRequest {
    /// The destination, refused unless absolute (a relative one would be resolved against
    /// the server's working directory, not the caller's).
    ///
    /// # Errors
    /// 400 `bad_backup_dir`.
    pub fn checked_dir(self) -> Result<PathBuf, ApiError> {
        if !self.dir.is_absolute() {
            return Err(ApiError::bad_request(
                "bad_backup_dir",
                "dir must be an absolute path on the server's machine",
            ));
        }
        Ok(self.dir)
    }
}

/// The answer to a backup: where, the revision, the counts, and the size.
pub fn backup_summary(dir: &Path, manifest: &Manifest) -> Value {
    json!({
        "dir": dir,
        "service": manifest.service,
        "revision": manifest.revision,
        "counts": manifest.counts,
        "files": manifest.files.len(),
        "bytes": manifest.files.iter().map(|f| f.size).sum::<u64>(),
    })
}

/// How often a running backup's answer says that it still runs: well under the servers' idle
/// timeout (60 s by default), which would otherwise close a connection whose backup takes
/// longer.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Checks what can be refused before a backup starts, off the async threads: `dir` absolute
/// and new or empty (created when missing), and an engine that can checkpoint.
///
/// # Errors
/// 400 `bad_backup_dir`, 409 `backup_dir_not_empty`, 501 `backup_unsupported`.
pub async fn check_backup(
    request: BackupRequest,
    backend: engine::Backend,
) -> Result<PathBuf, ApiError> {
    let dir = request.checked_dir()?;
    if backend != engine::Backend::Rocksdb {
        return Err(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "backup_unsupported",
            format!(
                "the {backend} engine cannot be backed up while serving{}",
                if backend == engine::Backend::Postgres {
                    ": use pg_dump or pg_basebackup (docs/RELIABILITY.md, \"Backup and restore\")"
                } else {
                    ": stop the server and copy its data directory"
                }
            ),
        ));
    }
    let checked = dir.clone();
    tokio::task::spawn_blocking(move || engine::backup::prepare_destination(&checked))
        .await
        .map_err(ApiError::internal)?
        .map_err(backup_error)?;
    Ok(dir)
}

/// Runs `work` (a backup) on a blocking thread and answers at once with a stream of JSON
/// lines (`application/x-ndjson`): `{"status":"running","elapsed_secs":N}` every
/// [`PROGRESS_EVERY`], then `{"status":"done","backup":SUMMARY}` or
/// `{"status":"failed","error":{"code","message"}}`. A client that goes away does not stop
/// the backup.
pub fn streamed_backup<F>(work: F) -> Response
where
    F: FnOnce() -> Result<Value, ApiError> + Send + 'static,
{
    let (lines, receiver) = tokio::sync::mpsc::channel::<Bytes>(4);
    tokio::spawn(async move {
        let started = Instant::now();
        let mut job = tokio::task::spawn_blocking(work);
        let mut ticker =
            tokio::time::interval_at(tokio::time::Instant::now() + PROGRESS_EVERY, PROGRESS_EVERY);
        let last = loop {
            tokio::select! {
                result = &mut job => {
                    break match result.map_err(ApiError::internal).and_then(|r| r) {
                        Ok(summary) => json!({"status": "done", "backup": summary}),
                        Err(error) => failed(error).await,
                    };
                }
                _ = ticker.tick() => {
                    let running = json!({
                        "status": "running",
                        "elapsed_secs": started.elapsed().as_secs(),
                    });
                    // A client gone: the backup goes on, its answer unread.
                    let _ = lines.send(json_line(&running)).await;
                }
            }
        };
        let _ = lines.send(json_line(&last)).await;
    });
    let body = Body::from_stream(futures_util::stream::unfold(
        receiver,
        |mut receiver| async move {
            receiver
                .recv()
                .await
                .map(|line| (Ok::<_, std::convert::Infallible>(line), receiver))
        },
    ));
    ([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response()
}

fn json_line(value: &Value) -> Bytes {
    let mut line = value.to_string();
    line.push('\n');
    Bytes::from(line)
}

/// The last line of a failed backup: the error as the API answers it (logged likewise).
async fn failed(error: ApiError) -> Value {
    let response = error.into_response();
    let body = axum::body::to_bytes(response.into_body(), 1 << 16)
        .await
        .unwrap_or_default();
    let error = serde_json::from_slice::<Value>(&body)
        .map(|mut answer| answer["error"].take())
        .unwrap_or(Value::Null);
    json!({"status": "failed", "error": error})
}

/// 501 `backup_unavailable`: a server built without its store settings (in tests, or
/// embedded in another program) has nothing to back up from.
pub fn backup_unavailable() -> ApiError {
    ApiError::new(
        StatusCode::NOT_IMPLEMENTED,
        "backup_unavailable",
        "this server was set up without its store settings and cannot back up",
    )
}

/// Maps a backup's failure to its answer: 409 for a destination that is not empty, 501 for
/// an engine that cannot checkpoint, 500 (the cause logged) otherwise.
pub fn backup_error(error: BackupError) -> ApiError {
    match error {
        BackupError::NotEmpty { .. } => {
            ApiError::conflict("backup_dir_not_empty", error.to_string())
        }
        BackupError::Engine(engine::Error::Unsupported { .. }) => ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "backup_unsupported",
            error.to_string(),
        ),
        error => ApiError::internal(error),
    }
}

/// Why `backup --server` failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupClientError {
    /// The server could not be reached, or its answer not read.
    #[error("asking {url} for a backup: {source}")]
    Http {
        /// The route called.
        url: String,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// `--user` without the password in its environment variable.
    #[error("--user needs the password in the environment variable {env}")]
    Password {
        /// The variable.
        env: String,
    },
    /// The destination cannot be made absolute, or the client's runtime cannot start.
    #[error("{operation}: {source}")]
    Io {
        /// What was being done.
        operation: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The server refused, or the backup failed (its last line).
    #[error("{url} answered {status}: {body}")]
    Refused {
        /// The route called.
        url: String,
        /// The status.
        status: u16,
        /// The answer (a JSON error).
        body: String,
    },
}

/// Asks the server at `server` (`http://host:port`) to back itself up into `dir`, with
/// Basic credentials when `user` is given.
///
/// # Errors
/// [`BackupClientError`].
pub async fn request_backup(
    server: &str,
    dir: &Path,
    user: Option<(&str, &str)>,
) -> Result<Value, BackupClientError> {
    let url = format!("{}/admin/backup", server.trim_end_matches('/'));
    let http = |source| BackupClientError::Http {
        url: url.clone(),
        source,
    };
    let mut request = reqwest::Client::new().post(&url).json(&BackupRequest {
        dir: dir.to_path_buf(),
    });
    if let Some((user, password)) = user {
        request = request.basic_auth(user, Some(password));
    }
    let response = request.send().await.map_err(http)?;
    let status = response.status();
    let body = response.text().await.map_err(http)?;
    if !status.is_success() {
        return Err(BackupClientError::Refused {
            url,
            status: status.as_u16(),
            body,
        });
    }
    // The last line says how it ended (the others that it was still running).
    let last = body
        .lines()
        .rev()
        .find(|line| !line.trim().is_empty())
        .and_then(|line| serde_json::from_str::<Value>(line).ok())
        .unwrap_or(Value::Null);
    match last["status"].as_str() {
        Some("done") => Ok(last["backup"].clone()),
        _ => Err(BackupClientError::Refused {
            url,
            status: status.as_u16(),
            body: last.to_string(),
        }),
    }
}

/// `backup DIR --server URL [--user USER]` of either binary: asks the server to back
/// itself up into `dir` (made absolute here, as a path on the server's machine), with the
/// password read from the environment variable `password_env`, and prints the answer.
///
/// # Errors
/// [`BackupClientError`]: the password variable unset while a user is given, or the
/// request's failure.
pub fn backup_through_server(
    server: &str,
    dir: &Path,
    user: Option<&str>,
    password_env: &str,
) -> Result<(), BackupClientError> {
    let io = |operation| move |source| BackupClientError::Io { operation, source };
    let dir = std::path::absolute(dir).map_err(io("making the backup directory absolute"))?;
    let password = match user {
        Some(_) => Some(
            std::env::var(password_env).map_err(|_| BackupClientError::Password {
                env: password_env.to_string(),
            })?,
        ),
        None => None,
    };
    let credentials = user.zip(password.as_deref());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(io("starting the client's runtime"))?;
    let answer = runtime.block_on(request_backup(server, &dir, credentials))?;
    println!("{answer}");
    Ok(())
}
