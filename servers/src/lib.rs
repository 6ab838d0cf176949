//! HTTP services over the stores: the librarian (blobs, over `blobstore`) and the directory
//! (team participation, package sets and branch merged-status, over `graphdb`).
//!
//! Each service is a router built by a function apart from its binary's `main`, so tests
//! call it in-process; [`common::serve::serve`] runs a router on a socket with the limits,
//! timeouts and graceful shutdown of [`common::config::Limits`].
//!
//! ```
//! use axum::body::Body;
//! use axum::http::{Request, StatusCode};
//! use tower::ServiceExt;
//! use servers::common::ServerConfig;
//! use servers::librarian::{router, Librarian};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let dir = tempfile::tempdir().unwrap();
//! let store = blobstore::StoreBuilder::new(engine::EngineConfig::memory(), dir.path())
//!     .open()
//!     .unwrap();
//! let config = ServerConfig { dev: true, ..ServerConfig::default() };
//! let app = router(Librarian::new(store.clone(), &config).unwrap());
//!
//! // A file stored directly, then read through the router in-process.
//! let bucket = blobstore::BucketName::new("docs").unwrap();
//! let file = store
//!     .upload_bytes(blobstore::UploadRequest::new(bucket, "hello.txt"), b"hello", "tester")
//!     .unwrap()
//!     .record;
//! let request = Request::get(format!("/{}/hello.txt", file.id)).body(Body::empty()).unwrap();
//! let response = app.oneshot(request).await.unwrap();
//! assert_eq!(response.status(), StatusCode::OK);
//! assert_eq!(response.headers()["etag"], format!("\"{}\"", file.blake3.to_hex()).as_str());
//! # }
//! ```

pub mod common;
pub mod directory;
pub mod librarian;
