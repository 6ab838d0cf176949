//! The Swift proxy stops in the middle of uploads and downloads, then starts again.
//!
//! This test starts a Swift of its own (same script, another port) so that stopping its proxy
//! does not disturb the tests running beside it.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use blobstore::{Access, Blake3Hash, BlobBackend, StoreBuilder, UploadRequest};
use engine::MemEngine;
use objectstore::{CacheConfig, CachedBackend, ObjectStoreBackend, ObjectStoreConfig, RetryConfig};

use crate::common::{assert_consistent, bucket, content, keyspaces, read_all, unique_prefix};

fn script() -> PathBuf {
    Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("run by cargo"))
        .join("../scripts/swift-saio.sh")
}

/// A private Swift, stopped when dropped.
struct PrivateSwift {
    dir: tempfile::TempDir,
    port: u16,
    /// A proxy this test started (reaped after `stop`).
    restarted: Mutex<Option<std::process::Child>>,
}

impl PrivateSwift {
    fn start() -> PrivateSwift {
        // The proxy's port and the four after +10 must be free.
        let free = |port: u16| TcpListener::bind(("127.0.0.1", port)).is_ok();
        let port = (0..200)
            .map(|_| 20_000 + (rand::random::<u16>() % 9_000))
            .find(|&p| free(p) && (10..=13).all(|d| free(p + d)))
            .expect("a free port range");
        let dir = tempfile::tempdir().expect("temporary directory");
        let status = Command::new(script())
            .arg("start")
            .arg(dir.path())
            .env("SWIFT_PORT", port.to_string())
            .stdout(Stdio::null())
            .status()
            .expect("run scripts/swift-saio.sh (Debian's swift packages are needed)");
        assert!(status.success(), "scripts/swift-saio.sh start failed");
        PrivateSwift {
            dir,
            port,
            restarted: Mutex::new(None),
        }
    }

    fn proxy_pid(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pids"))
            .expect("pids file")
            .lines()
            .last()
            .expect("a pid")
            .to_string()
    }

    fn proxy_answers(&self) -> bool {
        TcpStream::connect(("127.0.0.1", self.port)).is_ok()
    }

    fn stop_proxy(&self) {
        let status = Command::new("kill")
            .arg(self.proxy_pid())
            .status()
            .expect("kill");
        assert!(status.success());
        while self.proxy_answers() {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn start_proxy(&self) {
        let dir = self.dir.path();
        let log = std::fs::File::create(dir.join("log/proxy-restarted.log")).unwrap();
        let child = Command::new("swift-proxy-server")
            .arg(dir.join("proxy-server.conf"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("swift-proxy-server");
        // Recorded so that `swift-saio.sh stop` stops it too.
        let mut pids = std::fs::read_to_string(dir.join("pids")).unwrap();
        pids.push_str(&format!("{}\n", child.id()));
        std::fs::write(dir.join("pids"), pids).unwrap();
        *self.restarted.lock().unwrap() = Some(child);
        while !self.proxy_answers() {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for PrivateSwift {
    fn drop(&mut self) {
        let _ = Command::new(script())
            .arg("stop")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .status();
        if let Some(mut child) = self.restarted.lock().unwrap().take() {
            let _ = child.wait();
        }
    }
}

struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[test]
fn stopping_the_proxy_mid_transfer_loses_no_acknowledged_upload() {
    let swift = PrivateSwift::start();
    let work = tempfile::tempdir().unwrap();
    let config = ObjectStoreConfig::swift(
        format!("http://127.0.0.1:{}/auth/v1.0", swift.port),
        "test:tester",
        "testing",
    )
    .container_prefix(unique_prefix())
    .spool_dir(work.path().join("spool"))
    .objects_per_container(25)
    // Uploads and reads ride through short blips and give up within three seconds.
    .retry(RetryConfig::new(
        Duration::from_millis(20),
        Duration::from_millis(400),
        Duration::from_secs(3),
    ));
    let mem = MemEngine::new(&keyspaces());
    {
        // A fresh Swift on a busy machine answers 503 for a while: wait until it stores an
        // object (creating the first container), with a patient retry policy.
        let patient = config.clone().retry(RetryConfig::new(
            Duration::from_millis(100),
            Duration::from_secs(2),
            Duration::from_secs(120),
        ));
        let engine: Arc<dyn engine::Engine> = Arc::new(mem.reopen(&keyspaces()));
        let warm = ObjectStoreBackend::open(&patient, engine).unwrap();
        let bytes = content(u64::MAX, 1000);
        let mut temp = warm.create_temp().unwrap();
        std::io::Write::write_all(&mut temp, &bytes).unwrap();
        temp.persist(&Blake3Hash::of(&bytes)).unwrap();
    }
    let engine: Arc<dyn engine::Engine> = Arc::new(mem.reopen(&keyspaces()));
    let remote = Arc::new(ObjectStoreBackend::open(&config, engine.clone()).unwrap());
    let cached = Arc::new(
        CachedBackend::open(
            remote.clone(),
            &CacheConfig::new(work.path().join("cache"), 64 << 20),
        )
        .unwrap(),
    );
    let store = StoreBuilder::with_engine(engine, work.path().join("data"))
        .backend(cached.clone())
        .open()
        .unwrap();

    let acked: Mutex<Vec<(blobstore::FileId, Blake3Hash)>> = Mutex::new(Vec::new());
    // Some files before the outage, two of them read (so cached).
    for i in 0..6u64 {
        let bytes = content(i, 30_000 + 5_000 * i as usize);
        let file = store
            .upload_bytes(
                UploadRequest::new(bucket("fault"), format!("pre{i}")),
                &bytes,
                "tester",
            )
            .unwrap()
            .record;
        acked.lock().unwrap().push((file.id, file.blake3));
    }
    let hot: Vec<_> = acked.lock().unwrap()[..2].to_vec();
    for (id, _) in &hot {
        read_all(&store, *id);
    }

    let stop = AtomicBool::new(false);
    let next_seed = AtomicU64::new(1000);
    let failed_uploads = AtomicU64::new(0);
    let failed_reads = AtomicU64::new(0);
    let good_reads = AtomicU64::new(0);
    std::thread::scope(|scope| {
        for _ in 0..3 {
            scope.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let seed = next_seed.fetch_add(1, Ordering::Relaxed);
                    let size = 20_000 + (seed as usize * 7919) % 1_500_000;
                    let bytes = content(seed, size);
                    match store.upload_bytes(
                        UploadRequest::new(bucket("fault"), format!("f{seed}")),
                        &bytes,
                        "tester",
                    ) {
                        Ok(blobstore::Uploaded { record: file, .. }) => {
                            assert_eq!(file.blake3, Blake3Hash::of(&bytes));
                            acked.lock().unwrap().push((file.id, file.blake3));
                        }
                        Err(error) => {
                            assert!(
                                matches!(error, blobstore::Error::Backend { .. }),
                                "an outage gives a backend error, not {error}"
                            );
                            failed_uploads.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            });
        }
        // One reader through the store (and its cache), one straight from Swift (so that
        // downloads really are cut by the outage).
        for direct in [false, true] {
            let (store, remote, acked) = (&store, &remote, &acked);
            let (stop, good_reads, failed_reads) = (&stop, &good_reads, &failed_reads);
            scope.spawn(move || {
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let (id, hash) = {
                        let acked = acked.lock().unwrap();
                        acked[i % acked.len()]
                    };
                    i += 7;
                    let mut bytes = Vec::new();
                    let outcome = if direct {
                        remote
                            .open_range(&hash, 0, u64::MAX)
                            .and_then(|r| r.ok_or(blobstore::Error::NotFound { id }))
                            .and_then(|mut r| {
                                r.read_to_end(&mut bytes)
                                    .map_err(|e| blobstore::Error::io("reading", "test", e))
                            })
                    } else {
                        store.read(id, Access::Trusted, None).and_then(|mut r| {
                            r.read_to_end(&mut bytes)
                                .map_err(|e| blobstore::Error::io("reading", "test", e))
                        })
                    };
                    match outcome {
                        // Whatever is read in full is the right content.
                        Ok(_) => {
                            assert_eq!(Blake3Hash::of(&bytes), hash, "file {id}");
                            good_reads.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(error) => {
                            assert!(
                                !matches!(error, blobstore::Error::NotFound { .. }),
                                "an acknowledged blob is missing: {id}"
                            );
                            failed_reads.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            });
        }

        // Stops the workers even if an assertion below fails, so that the scope ends.
        let _stop_on_exit = StopOnDrop(&stop);
        std::thread::sleep(Duration::from_millis(1500));
        swift.stop_proxy();
        // While the proxy is down, cached blobs are still served.
        for (id, hash) in &hot {
            assert_eq!(Blake3Hash::of(&read_all(&store, *id)), *hash);
        }
        std::thread::sleep(Duration::from_secs(5));
        swift.start_proxy();
        std::thread::sleep(Duration::from_millis(2500));
        stop.store(true, Ordering::Relaxed);
    });

    let acked = acked.into_inner().unwrap();
    assert!(
        failed_uploads.load(Ordering::Relaxed) > 0,
        "the outage was not seen by any upload"
    );
    assert!(acked.len() > 6, "no upload succeeded around the outage");
    assert!(good_reads.load(Ordering::Relaxed) > 0);
    assert!(
        failed_reads.load(Ordering::Relaxed) > 0,
        "the outage was not seen by any download"
    );
    // Every acknowledged upload reads back whole and right.
    for (id, hash) in &acked {
        assert_eq!(Blake3Hash::of(&read_all(&store, *id)), *hash, "file {id}");
    }
    // Nothing else is recorded, and every recorded blob is whole in Swift.
    let summary = store.summary().unwrap();
    assert_eq!(summary.files as usize, acked.len());
    assert_consistent(&store);
    assert!(remote.containers() >= 1);
    eprintln!(
        "fault test: {} acknowledged uploads, {} failed uploads, {} good reads, {} failed reads, {} containers",
        acked.len(),
        failed_uploads.load(Ordering::Relaxed),
        good_reads.load(Ordering::Relaxed),
        failed_reads.load(Ordering::Relaxed),
        remote.containers()
    );
}
