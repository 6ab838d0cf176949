//! [`ApiError`]: the one error type of the HTTP layer, and extractors whose rejections use it.

use std::fmt;

use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::de::DeserializeOwned;

/// An error answered to a client: a status, a stable machine-readable code and a message
/// safe to show. An internal cause, if any, is logged and never sent.
///
/// The body is `{"error": {"code": CODE, "message": MESSAGE}}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    cause: Option<String>,
    headers: Vec<(HeaderName, HeaderValue)>,
    details: Vec<(&'static str, serde_json::Value)>,
}

/// The `Retry-After` of a request refused because the database is out of reach, in seconds.
pub const DATABASE_RETRY_AFTER_SECS: u32 = 1;

impl ApiError {
    /// An error with the given status, code and client-visible message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            cause: None,
            headers: Vec::new(),
            details: Vec::new(),
        }
    }

    /// 400 with `code`.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 410 `gone`.
    pub fn gone(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::GONE, "gone", message)
    }

    /// 409 with `code`.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::CONFLICT, code, message)
    }

    /// 413 `too_large`.
    pub fn too_large(limit: u64) -> Self {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the request body exceeds the limit of {limit} bytes"),
        )
    }

    /// 401 `unauthorized` with a Basic challenge.
    pub fn unauthorized(realm: &str) -> Self {
        let challenge = HeaderValue::from_str(&format!("Basic realm=\"{realm}\""))
            .unwrap_or_else(|_| HeaderValue::from_static("Basic"));
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "valid HTTP Basic credentials are required",
        )
        .with_header(header::WWW_AUTHENTICATE, challenge)
    }

    /// 403 `forbidden_address`.
    pub fn forbidden_address() -> Self {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden_address",
            "this route is not open to the client's address",
        )
    }

    /// 503 `overloaded` with `Retry-After`.
    pub fn overloaded(retry_after_secs: u32) -> Self {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "too many requests in flight; retry later",
        )
        .with_header(header::RETRY_AFTER, HeaderValue::from(retry_after_secs))
    }

    /// 503 `not_leader` with `Retry-After`: this instance does not write now; another one
    /// of the service does (HAProxy retries the request there).
    pub fn not_leader(retry_after_secs: u32) -> Self {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_leader",
            "this instance is not the service's writer now; retry (at the writer)",
        )
        .with_header(header::RETRY_AFTER, HeaderValue::from(retry_after_secs))
    }

    /// The answer to an engine error that is about where the service stands, not about the
    /// request, or `None`: a write refused because another instance took over the lease
    /// (`Fenced`) is 503 `not_leader`, which HAProxy retries at the new writer; a database
    /// out of reach after the engine's retries, or a commit cut by a lost connection and found
    /// not to have landed, is 503 `database_unavailable` with `Retry-After`. None of them
    /// recorded anything ([`engine::Error::is_transient`]).
    pub fn from_engine(error: &engine::Error) -> Option<Self> {
        match error {
            engine::Error::Fenced { .. } => Some(
                ApiError::not_leader(super::leader::NOT_LEADER_RETRY_AFTER_SECS).with_cause(error),
            ),
            // Also a directory write queued behind one refused so: it recorded nothing
            // either, and a retry goes through once the store has reloaded.
            _ if error.is_transient() => Some(
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "database_unavailable",
                    "the service's database cannot be reached or lost the connection; \
                         nothing was recorded; retry",
                )
                .with_header(
                    header::RETRY_AFTER,
                    HeaderValue::from(DATABASE_RETRY_AFTER_SECS),
                )
                .with_cause(error),
            ),
            _ => None,
        }
    }

    /// 500 `internal`: the cause is logged, the client sees a generic message.
    pub fn internal(cause: impl fmt::Display) -> Self {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        )
        .with_cause(cause)
    }

    /// 503 `unavailable`: the cause is logged.
    pub fn unavailable(cause: impl fmt::Display) -> Self {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the service cannot serve this request now",
        )
        .with_cause(cause)
    }

    /// Attaches an internal cause, logged when the response is built.
    pub fn with_cause(mut self, cause: impl fmt::Display) -> Self {
        self.cause = Some(cause.to_string());
        self
    }

    /// Adds a response header.
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// Adds a field to the error object beside `code` and `message` (a cycle, a line number).
    pub fn with_detail(mut self, key: &'static str, value: serde_json::Value) -> Self {
        self.details.push((key, value));
        self
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The machine-readable code.
    pub fn code(&self) -> &'static str {
        self.code
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl ApiError {
    /// The answer's status, extra headers and JSON body, logged as a refusal or failure: what
    /// [`IntoResponse`] sends, for a writer of raw HTTP (`fast_http.rs`).
    pub fn into_parts(self) -> (StatusCode, Vec<(HeaderName, HeaderValue)>, Bytes) {
        if self.status.is_server_error() {
            tracing::error!(
                status = self.status.as_u16(),
                code = self.code,
                cause = self.cause.as_deref().unwrap_or("none"),
                "request failed"
            );
        } else if let Some(cause) = &self.cause {
            tracing::debug!(
                status = self.status.as_u16(),
                code = self.code,
                cause,
                "request refused"
            );
        }
        let mut error = serde_json::json!({"code": self.code, "message": self.message});
        for (key, value) in self.details {
            error[key] = value;
        }
        let body = serde_json::json!({ "error": error });
        (self.status, self.headers, Bytes::from(body.to_string()))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, headers, body) = self.into_parts();
        let mut response = (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response();
        for (name, value) in headers {
            response.headers_mut().insert(name, value);
        }
        response
    }
}

/// Like [`axum::extract::Query`], rejecting with a 400 [`ApiError`] (`bad_query`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        // axum decodes percent-escapes lossily (invalid UTF-8 becomes U+FFFD), which would
        // store a name other than the one sent: refuse it instead.
        if let Some(query) = parts.uri.query() {
            // `+` decodes to a space, which cannot make the bytes invalid UTF-8: the escapes decide.
            if percent_encoding::percent_decode(query.as_bytes())
                .decode_utf8()
                .is_err()
            {
                return Err(ApiError::bad_request(
                    "bad_query",
                    "the query string is not valid UTF-8 once decoded",
                ));
            }
        }
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Query(q.0))
            .map_err(|e: QueryRejection| ApiError::bad_request("bad_query", e.body_text()))
    }
}

/// A whole request body as bytes, rejecting with an [`ApiError`]: 413 (`too_large`) past the
/// route's body limit, 400 (`bad_body`) when the body cannot be read (the client went away).
#[derive(Debug, Clone, Default)]
pub struct BodyBytes(pub bytes::Bytes);

impl<S> FromRequest<S> for BodyBytes
where
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        bytes::Bytes::from_request(req, state)
            .await
            .map(BodyBytes)
            .map_err(|e: BytesRejection| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", e.body_text())
                } else {
                    ApiError::bad_request("bad_body", "the request body could not be read")
                }
            })
    }
}

/// Like [`axum::extract::Path`], rejecting with a 400 [`ApiError`] (`bad_path`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Path(p.0))
            .map_err(|e: PathRejection| ApiError::bad_request("bad_path", e.body_text()))
    }
}

/// Like [`axum::Json`], rejecting with a 400 [`ApiError`] (`bad_json`), or 413 past the
/// route's body limit.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let value = axum::Json::<serde_json::Value>::from_request(req, state)
            .await
            .map_err(|e: JsonRejection| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", e.body_text())
                } else {
                    ApiError::bad_request("bad_json", e.body_text())
                }
            })?
            .0;
        // Every JSON body of both servers is an object; serde would also take a struct from
        // an array of its fields (`[null, null]`), which the OpenAPI documents do not allow.
        if !value.is_object() {
            return Err(ApiError::bad_request(
                "bad_json",
                "the body must be a JSON object",
            ));
        }
        serde_json::from_value(integral(value))
            .map(Json)
            .map_err(|e| ApiError::bad_request("bad_json", format!("invalid body: {e}")))
    }
}

/// `value` with every number that has no fraction (`1266.0`) as an integer: JSON Schema's
/// `integer`, which the OpenAPI documents use, includes them, and serde's integers do not.
fn integral(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            // A float without fraction is an exact integer; within the ranges of u64 and i64
            // the conversions lose nothing.
            if f.fract() != 0.0 {
                Value::Number(n)
            } else if (0.0..18_446_744_073_709_551_616.0).contains(&f) {
                Value::from(f as u64)
            } else if (-9_223_372_036_854_775_808.0..0.0).contains(&f) {
                Value::from(f as i64)
            } else {
                Value::Number(n)
            }
        }
        Value::Array(items) => Value::Array(items.into_iter().map(integral).collect()),
        Value::Object(map) => {
            Value::Object(map.into_iter().map(|(k, v)| (k, integral(v))).collect())
        }
        other => other,
    }
}

/// The fallback for paths no route matches: 404 `no_route`.
pub async fn no_route() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no_route", "no such route")
}

/// The fallback for a known path with another method: 405 `method_not_allowed`.
pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not accept that method",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[derive(Debug, serde::Deserialize)]
    struct Pair {
        a: Option<u8>,
        #[allow(dead_code)]
        b: Option<u8>,
    }

    async fn extract(body: &'static str) -> Result<Json<Pair>, ApiError> {
        let request = Request::builder()
            .header("content-type", "application/json")
            .body(axum::body::Body::from(body))
            .unwrap();
        Json::<Pair>::from_request(request, &()).await
    }

    #[tokio::test]
    async fn a_json_body_must_be_an_object() {
        assert!(extract(r#"{"a": 1}"#).await.is_ok());
        // JSON Schema's integers include 1.0; 1.5 stays refused.
        assert_eq!(extract(r#"{"a": 1.0}"#).await.unwrap().0.a, Some(1));
        assert!(extract(r#"{"a": 1.5}"#).await.is_err());
        // serde alone would take the struct from an array of its fields.
        for body in ["[1, 2]", "[null, null]", "null", "3"] {
            let error = extract(body).await.unwrap_err();
            assert_eq!(error.status(), 400, "{body}");
        }
    }

    #[tokio::test]
    async fn internal_errors_hide_their_cause() {
        let response = ApiError::internal("disk /secret/path failed").into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let text = std::str::from_utf8(&body).unwrap();
        assert!(!text.contains("secret"), "{text}");
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["error"]["code"], "internal");
    }

    #[tokio::test]
    async fn overloaded_carries_retry_after() {
        let response = ApiError::overloaded(2).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
    }
}
