//! Starting a librarian on 127.0.0.1:0 inside the test process, over a fresh store.

use std::net::SocketAddr;
use std::sync::Arc;

use blobstore::{ManualClock, StoreBuilder};
use engine::Engine;
use servers::common::access::hash_password;
use servers::common::{serve, Credential, Limits, ServerConfig};
use servers::librarian::{self, Librarian};
use tokio::sync::oneshot;

pub const USER: &str = "writer";
pub const PASSWORD: &str = "correct horse";
/// The clock's start: 2023-11-14T22:13:20Z.
pub const START_SECS: i64 = 1_700_000_000;

pub struct Options {
    pub limits: Limits,
    pub allowed: Vec<ipnet::IpNet>,
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub secrets: ([u8; 32], Option<[u8; 32]>),
    /// Hosts subscriptions may call back (`host:port`).
    pub callback_hosts: Vec<String>,
    /// Runs the online scrub with these settings (none by default).
    pub scrub: Option<librarian::scrub::ScrubSettings>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            limits: Limits::default(),
            allowed: servers::common::config::loopback_cidrs(),
            trusted_proxies: Vec::new(),
            secrets: ([1; 32], None),
            callback_hosts: Vec::new(),
            scrub: None,
        }
    }
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub state: Librarian,
    pub clock: Arc<ManualClock>,
    pub engine: Arc<dyn Engine>,
    pub dir: Arc<tempfile::TempDir>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    pub async fn start(options: Options) -> Self {
        let engine = engine::EngineConfig::memory()
            .open(blobstore::KEYSPACES)
            .unwrap();
        let dir = Arc::new(tempfile::tempdir().unwrap());
        let clock = Arc::new(ManualClock::at_millis(START_SECS * 1000));
        Self::start_over(engine, dir, clock, options).await
    }

    /// Starts over an existing engine and directory (a restart).
    pub async fn start_over(
        engine: Arc<dyn Engine>,
        dir: Arc<tempfile::TempDir>,
        clock: Arc<ManualClock>,
        options: Options,
    ) -> Self {
        let store = StoreBuilder::with_engine(Arc::clone(&engine), dir.path())
            .keep_sha1_md5(true)
            .clock(clock.clone())
            .token_secrets(options.secrets.0, options.secrets.1)
            .open()
            .unwrap();
        let config = ServerConfig {
            credentials: vec![Credential {
                user: USER.into(),
                hash: hash_password(PASSWORD),
            }],
            allowed_cidrs: options.allowed,
            trusted_proxies: options.trusted_proxies,
            limits: options.limits.clone(),
            callback_hosts: options.callback_hosts.clone(),
            ..ServerConfig::default()
        };
        let mut state = Librarian::new(store, &config).unwrap();
        if let Some(settings) = options.scrub {
            state = state.with_scrub(settings);
            tokio::spawn(librarian::scrub::scrub_loop(state.clone()));
        }
        let app = librarian::router(state.clone());
        let listener = serve::bind("127.0.0.1:0".parse().unwrap(), true)
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(serve::serve(listener, app, options.limits, async {
            let _ = rx.await;
        }));
        TestServer {
            addr,
            state,
            clock,
            engine,
            dir,
            stop: Some(tx),
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }

    /// GETs `path` as a writer and returns the JSON answer (of a 200).
    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        let response = reqwest::Client::new()
            .get(self.url(path))
            .basic_auth(USER, Some(PASSWORD))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "GET {path}");
        response.json().await.unwrap()
    }

    /// Uploads `body` as a writer and returns the JSON record.
    pub async fn upload(&self, bucket: &str, filename: &str, body: Vec<u8>) -> serde_json::Value {
        let response = reqwest::Client::new()
            .post(self.url(&format!("/buckets/{bucket}/files?filename={filename}")))
            .basic_auth(USER, Some(PASSWORD))
            .header("content-type", "text/plain")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "{:?}", response.text().await);
        response.json().await.unwrap()
    }
}

/// `n` bytes of a fixed pseudo-random pattern.
pub fn content(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

pub fn client() -> reqwest::Client {
    reqwest::Client::new()
}

/// The body of `GET url` as text (a server's `/metrics`).
pub async fn get_text(url: &str) -> String {
    client()
        .get(url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Polls the metrics at `url` until the gauge `name` reads 0, for up to 10 s; fails if the
/// gauge is missing or stays above 0.
pub async fn wait_for_zero_gauge(url: &str, name: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let (present, zero) = (format!("\n{name} "), format!("\n{name} 0\n"));
    loop {
        let metrics = get_text(url).await;
        if metrics.contains(&zero) {
            return;
        }
        assert!(metrics.contains(&present), "{metrics}");
        assert!(
            std::time::Instant::now() < deadline,
            "{name} did not come back to 0: {metrics}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

pub async fn error_code(response: reqwest::Response) -> String {
    let body: serde_json::Value = response.json().await.unwrap();
    body["error"]["code"].as_str().unwrap_or("").to_string()
}
