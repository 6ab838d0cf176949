//! Crash test: the test binary re-runs itself as a child process that uploads (and deletes)
//! concurrently and prints each acknowledged upload and delete; once the first upload is
//! acknowledged the parent kills it with SIGKILL at a random moment, reopens the store, and
//! checks that every acknowledged upload reads back, that every acknowledged delete stayed
//! deleted, that `check` finds no drift and that `verify` finds no partial or corrupt blob.
//! A SIGKILL leaves the page cache intact: this shows what a process crash leaves; what a
//! power loss may leave is `crash_states.rs`.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use blobstore::{Access, Blake3Hash, FileId, ManualClock, StoreBuilder, Timestamp, UploadRequest};
use engine::{Backend, EngineConfig};
use rand::Rng;

use crate::common::{bucket, content};

const CHILD_DIR: &str = "BLOBSTORE_CRASH_CHILD_DIR";
const CHILD_BACKEND: &str = "BLOBSTORE_CRASH_CHILD_BACKEND";

fn open(dir: &std::path::Path, backend: Backend, grace: Duration) -> blobstore::Store {
    StoreBuilder::new(
        EngineConfig::new(backend, dir.join("meta")),
        dir.join("data"),
    )
    .grace(grace)
    .clock(Arc::new(ManualClock::at_millis(
        Timestamp::now().as_unix_millis(),
    )))
    .open()
    .expect("open store")
}

/// The child's body: runs only when the parent sets the environment variables; otherwise it
/// is an ordinary (trivial) test of the test binary.
#[test]
fn crash_child() {
    let (Ok(dir), Ok(backend)) = (std::env::var(CHILD_DIR), std::env::var(CHILD_BACKEND)) else {
        return;
    };
    let backend: Backend = backend.parse().expect("backend name");
    let store = open(
        std::path::Path::new(&dir),
        backend,
        blobstore::DEFAULT_GRACE,
    );
    let stdout = Arc::new(std::sync::Mutex::new(std::io::stdout()));
    std::thread::scope(|scope| {
        for t in 0..4u64 {
            let store = store.clone();
            let stdout = stdout.clone();
            scope.spawn(move || {
                let mut rng = rand::thread_rng();
                let mut mine: Vec<FileId> = Vec::new();
                for i in 0.. {
                    let size = match rng.gen_range(0..10) {
                        0..=5 => rng.gen_range(0..20_000),
                        6..=8 => rng.gen_range(20_000..600_000),
                        _ => rng.gen_range(1..3) << 20,
                    };
                    // Some contents repeat, so dedup and revival happen too.
                    let seed = if rng.gen_bool(0.3) {
                        rng.gen_range(0..5)
                    } else {
                        rng.gen()
                    };
                    let data = content(seed, size);
                    let b = bucket(&format!("crash{}", (t + i) % 3));
                    let file = store
                        .upload_bytes(UploadRequest::new(b, format!("f{t}-{i}")), &data, "tester")
                        .expect("upload")
                        .record;
                    {
                        let mut out = stdout.lock().unwrap();
                        writeln!(out, "ACK {} {} {}", file.id, file.blake3, file.size).unwrap();
                        out.flush().unwrap();
                    }
                    mine.push(file.id);
                    if rng.gen_bool(0.2) {
                        let victim = mine.swap_remove(rng.gen_range(0..mine.len()));
                        {
                            let mut out = stdout.lock().unwrap();
                            writeln!(out, "DELETING {victim}").unwrap();
                            out.flush().unwrap();
                        }
                        store.delete_file(victim, "tester").expect("delete");
                        // Only now is the delete acknowledged.
                        let mut out = stdout.lock().unwrap();
                        writeln!(out, "DEL {victim}").unwrap();
                        out.flush().unwrap();
                    }
                }
            });
        }
    });
}

fn crash_and_recover(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let mut acked: HashMap<FileId, (Blake3Hash, u64)> = HashMap::new();
    // Deletes under way when the child died: the file may be there or not.
    let mut deleting: HashSet<FileId> = HashSet::new();
    let mut deleted: HashSet<FileId> = HashSet::new();
    let mut rng = rand::thread_rng();
    for round in 0..3 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "crash::crash_child",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR, dir.path())
            .env(CHILD_BACKEND, backend.name())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().unwrap();
        let (sender, receiver) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        // Wait for the first acknowledged upload (the store is open and writing), so that no
        // round is killed before it did anything, then kill at a random moment.
        let mut lines = Vec::new();
        loop {
            let line = receiver
                .recv_timeout(Duration::from_secs(120))
                .expect("the child acknowledged an upload");
            let first_ack = line.contains("ACK ");
            lines.push(line);
            if first_ack {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(rng.gen_range(0..700)));
        child.kill().expect("SIGKILL the child");
        let status = child.wait().unwrap();
        assert!(!status.success(), "the child was expected to die");
        reader.join().unwrap();
        lines.extend(receiver.try_iter());
        let mut acks_this_round = 0;
        let mut deletes_this_round = 0;
        for line in lines {
            // The harness may have printed part of a line before the child's first one.
            let parts: Vec<&str> = line.split_whitespace().collect();
            let parts = match parts
                .iter()
                .position(|p| matches!(*p, "ACK" | "DEL" | "DELETING"))
            {
                Some(start) => &parts[start..],
                None => continue,
            };
            match parts {
                ["ACK", id, hash, size] => {
                    acks_this_round += 1;
                    acked.insert(
                        FileId(id.parse().unwrap()),
                        (hash.parse().unwrap(), size.parse().unwrap()),
                    );
                }
                ["DELETING", id] => {
                    deleting.insert(FileId(id.parse().unwrap()));
                }
                ["DEL", id] => {
                    deletes_this_round += 1;
                    let id = FileId(id.parse().unwrap());
                    deleting.remove(&id);
                    deleted.insert(id);
                }
                _ => {}
            }
        }
        assert!(acks_this_round > 0, "round {round} acknowledged nothing");
        // Reopen and check.
        let store = open(dir.path(), backend, Duration::ZERO);
        for id in &deleted {
            assert!(
                matches!(store.file(*id), Err(blobstore::Error::NotFound { .. })),
                "round {round}: file {id} was deleted (acknowledged) but is back"
            );
        }
        for (id, (hash, size)) in &acked {
            if deleted.contains(id) || deleting.contains(id) {
                continue;
            }
            let mut reader = store
                .read(*id, Access::Trusted, None)
                .unwrap_or_else(|e| panic!("round {round}: acknowledged file {id} lost: {e}"));
            let mut bytes = Vec::new();
            reader.read_to_end(&mut bytes).unwrap();
            assert_eq!(bytes.len() as u64, *size);
            assert_eq!(Blake3Hash::of(&bytes), *hash, "file {id}");
        }
        let report = store.check().unwrap();
        assert!(report.is_ok(), "round {round}: {:#?}", report.problems);
        let mut after = None;
        loop {
            let verify = store.verify(after, 1000).unwrap();
            assert!(
                verify.problems.is_empty(),
                "round {round}: {:?}",
                verify.problems
            );
            match verify.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        // With a zero grace, leftovers of the crash (temporaries, renamed but unrecorded
        // blobs) go, and nothing recorded does.
        store.sweep_orphans().unwrap();
        let verify = store.verify(None, 1_000_000).unwrap();
        assert!(
            verify.problems.is_empty(),
            "after sweep: {:?}",
            verify.problems
        );
        eprintln!(
            "{backend} round {round}: {acks_this_round} acknowledged uploads and \
             {deletes_this_round} deletes this round; {} files and {} deletes checked",
            acked.len(),
            deleted.len()
        );
    }
    assert!(!acked.is_empty(), "the child never acknowledged an upload");
}

#[test]
fn crash_rocksdb() {
    crash_and_recover(Backend::Rocksdb);
}

#[cfg(feature = "sled")]
#[test]
fn crash_sled() {
    crash_and_recover(Backend::Sled);
}
