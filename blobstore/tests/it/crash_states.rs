//! Crash states: what a power loss could leave, checked, not assumed.
//!
//! A SIGKILL (the other crash tests) leaves every written byte in the kernel's page cache, so
//! it cannot show that an fsync is there. This test follows the application-level crash
//! checkers (ALICE, Pillai et al., OSDI 2014; CrashMonkey; LazyFS): the test binary re-runs
//! itself as a child under `strace -f`, which records every file-system call with its data;
//! the child writes through the real store and prints a line after each write the store
//! acknowledged (`ACK ...`, and for deletes `DELETING` before the call and `DEL` after it).
//! The parent then replays the trace onto a copy of the directory as it was before the child
//! started, and at each point where a sync returned (and at the end) builds the state a crash
//! there may leave: for every file only the bytes written before its last completed
//! `fsync`/`fdatasync`, for every directory only the entries present at its last fsync
//! (`Mode::Synced`), or that plus a random prefix of what came after, the last write torn
//! (`Mode::Partial`); see `replay.rs` for the exact rules. The acknowledgements are lines the
//! child wrote, so they sit in the same trace: a crash at a point "sees" exactly those
//! printed before it. On each state the store is opened and must hold every acknowledged
//! write whole (its bytes and BLAKE3), keep every acknowledged delete deleted, show no blob
//! file whose bytes do not hash to its name, and pass `check` and `verify`.
//!
//! Four children: the blob store's local backend (blob files with `O_DIRECT`, temporaries,
//! renames, shard directories, a resumable upload's appends) over RocksDB and over sled
//! (their write-ahead log and log file replayed the same way), and the engine alone writing `Durability::Sync` batches on
//! each (the blob store syncs with `Engine::flush` and group commit, so the engine's own
//! synced write is checked apart). CI checks every crash point when there are at most 48
//! (synced) and 24 (partial), evenly spread ones beyond (about 40 s for the four children in a
//! debug build on a busy 2-core machine); `CRASH_STATES_ALL=1` checks all of them (592
//! states since the child appends to a resumable upload, 53 s, 2026-12-05 19:29 UTC, load
//! 7.6). `CRASH_STATES_KEEP_TRACE=PREFIX` keeps a copy of each trace (`PREFIX.<test name>`).
//! Needs Debian's `strace`.
//!
//! # Each fsync removed, once (2026-12-05)
//!
//! Each fsync named in issue 20 was deleted from the code, one at a time, the test run, and
//! the code restored (on which all four pass). Counts are of one run (crash states sampled as
//! in CI: up to 48 synced and 24 partial per child):
//!
//! - `set_sync` in `engine/src/rocks.rs` (`options.set_sync(false)`): the engine child's
//!   WAL got 7 `fdatasync`s instead of 46; `engine_synced_batches_rocksdb` failed in 2 of 28
//!   states: "batch 40 was acknowledged as synced but only 1 batches survived".
//!   `blobstore_local_rocksdb` still passed, and must: an upload's batch is written buffered
//!   and made durable by the group sync, `Engine::flush` (`flush_wal(true)`), never by a
//!   synced write. Removing that one instead (`flush_wal(false)`) made it fail in 32 of 72
//!   states: "acknowledged file 1025 (100 bytes) lost: file 1025 does not exist".
//! - The flush of a `Durability::Sync` write in `engine/src/sled_engine.rs`:
//!   `engine_synced_batches_sled` failed in 4 of 10 states: "batch 3 was acknowledged as
//!   synced but only 1 batches survived".
//! - The flush of `SledEngine::flush` (the blob store's group sync): `blobstore_local_sled`
//!   failed in 57 of 64 states: "acknowledged file 1025 (100 bytes) lost: file 1025 does not
//!   exist".
//! - sled as it was before this test (`Db::flush` alone): failed too, in 2 of 10 and 52 of 64
//!   states with the same messages. sled 0.34 makes its log stable with `sync_file_range`,
//!   which neither writes the file's new length nor flushes the device's cache; the engine
//!   now fsyncs sled's log file after `Db::flush`. The partial states also found a store
//!   that no longer opened ("sled failed to open: Read corrupted data"): sled takes a torn
//!   `snap.*.generating` file for its latest snapshot; the engine removes those before
//!   opening.
//! - `sync_all` of the temporary blob in `blobstore/src/backend.rs` (it is also the only fsync
//!   of the `O_DIRECT` path: `DirectFile::finish` hands the file back to `persist`, which
//!   syncs it; the children's temporaries were opened `O_DIRECT`): 62 of 72 states failed:
//!   "blob file 1d5c… is visible with 0 bytes that are not its content", "acknowledged file
//!   1027 (40000 bytes) unreadable: blob 1d5c… ended 40000 bytes early", and in a partial
//!   state `verify` found the blob 40,960 bytes long: the padded last `O_DIRECT` block whose
//!   `ftruncate` was not durable either.
//! - `sync_dir` of the shard directory after the rename: 60 of 72 states failed:
//!   "acknowledged file 1027 (40000 bytes) lost: blob 1d5c… is corrupt: blob bytes are
//!   missing".
//! - `sync_dir` of the parent after creating a shard directory (`ensure_dir`): 59 of 72
//!   states failed with the same message.
//!
//! - The `fdatasync` of a resumable upload's partial file after an append (2026-12-05, once
//!   appends were written with `O_DIRECT`): `blobstore_local_rocksdb` failed in 47 of 72
//!   states: "resuming upload … at 75001: … the partial upload is shorter than its offset".
//!
//! A model error showed once in 9 runs (34 states "lost" a blob): a `close` was applied when
//! it returned, after another thread's `open` had already got the same number back, so that
//! thread's directory fsync was dropped. A close now takes effect when it starts. Reading that
//! trace also showed a real, narrower race, fixed in `ensure_dir` (see `docs/RELIABILITY.md`).
//!
//! # What it does not show
//!
//! The model is the conservative one above, not a particular file system's (ext4's ordered
//! mode persists more, and in order); a device that lies about its cache flush is out of its
//! reach, as are writes through shared mappings (none of the three writes so). The crash
//! points are where syncs returned; states between two syncs differ only in what was not
//! durable, which the partial mode samples rather than enumerates.

mod replay;

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use blobstore::{
    Access, Blake3Hash, Error, FileId, ManualClock, Store, StoreBuilder, Timestamp, UploadRequest,
};
use engine::{Backend, Durability, Engine, EngineConfig, WriteBatch};
use rand::Rng;

use self::replay::{Mode, Output, Replay, Trace};
use crate::common::{bucket, content};

const ROLE: &str = "CRASH_STATES_CHILD";
const ROOT: &str = "CRASH_STATES_ROOT";

/// What starts the child's lines about its writes (the test harness may have printed part of
/// a line before).
const MARK: &str = "@@ ";

/// The child's lines about its writes, without the mark.
fn marked(output: &[Output]) -> impl Iterator<Item = &str> {
    output
        .iter()
        .filter_map(|o| o.line.split_once(MARK).map(|(_, rest)| rest))
}

/// Crash points checked in each mode before sampling starts.
const MAX_STATES: usize = 48;

fn open_store(dir: &Path, backend: Backend) -> blobstore::Result<Store> {
    StoreBuilder::new(
        EngineConfig::new(backend, dir.join("meta")),
        dir.join("data"),
    )
    .grace(Duration::from_secs(3600))
    .clock(Arc::new(ManualClock::at_millis(
        Timestamp::now().as_unix_millis(),
    )))
    .open()
}

/// A copy of the tree under `from` at `to`.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &to.join(entry.file_name()));
        } else {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

/// Runs `test_name` again as a child with `role`, under strace, on the store under `root`
/// (copied first to `work/initial`); returns the trace.
fn trace_child(test_name: &str, role: &str, root: &Path, work: &Path) -> Trace {
    copy_tree(root, &work.join("initial"));
    let trace_path = work.join("trace");
    let exe = std::env::current_exe().unwrap();
    let started = Instant::now();
    let output = replay::traced(&exe, &trace_path)
        .args([test_name, "--exact", "--nocapture", "--test-threads=1"])
        .env(ROLE, role)
        .env(ROOT, root)
        .current_dir(work)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run strace ({e}): install Debian's strace (`make setup` does)")
        });
    assert!(
        output.status.success(),
        "the traced child failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let text = std::fs::read(&trace_path).unwrap();
    if let Some(keep) = std::env::var_os("CRASH_STATES_KEEP_TRACE") {
        let mut keep = keep;
        keep.push(format!(".{}", test_name.replace("::", ".")));
        std::fs::copy(&trace_path, keep).unwrap();
    }
    let trace = Trace::parse(&text);
    eprintln!(
        "{test_name}: traced {} calls ({} MB of trace) in {:.1} s: {:?}",
        trace.len(),
        text.len() >> 20,
        started.elapsed().as_secs_f64(),
        trace.counts()
    );
    trace
}

/// The crash points to check in each mode: every point where a sync returned, and the end
/// (a crash state changes nowhere else); at most [`MAX_STATES`] of them, evenly spread,
/// unless `CRASH_STATES_ALL` is set.
fn crash_points(trace: &Trace) -> Vec<(usize, Mode)> {
    let mut points = trace.sync_points();
    points.push(trace.len());
    let all = std::env::var_os("CRASH_STATES_ALL").is_some();
    let sample = |points: &[usize], max: usize| -> Vec<usize> {
        if all || points.len() <= max {
            return points.to_vec();
        }
        (0..max)
            .map(|i| points[i * (points.len() - 1) / (max - 1)])
            .collect()
    };
    // The partial states' choices; `CRASH_STATES_SEED` repeats a run's.
    let seed: u64 = std::env::var("CRASH_STATES_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().gen());
    eprintln!("crash states: CRASH_STATES_SEED={seed}");
    let mut out: Vec<(usize, Mode)> = sample(&points, MAX_STATES)
        .into_iter()
        .map(|p| (p, Mode::Synced))
        .collect();
    out.extend(
        sample(&points, MAX_STATES / 2)
            .into_iter()
            .enumerate()
            .map(|(i, p)| (p, Mode::Partial(seed.wrapping_add(i as u64)))),
    );
    out.sort_by_key(|(p, _)| *p);
    out
}

/// Replays `trace` from `root` (as it was before the child started), builds each crash state
/// and runs `check` on it with what the child had printed by then; panics with every state
/// that failed.
fn check_crash_states(
    name: &str,
    root: &Path,
    work: &Path,
    trace: &Trace,
    mut check: impl FnMut(&Path, &[Output]) -> Result<String, String>,
) {
    let mut replay = Replay::new(&work.join("initial"), root, work);
    let points = crash_points(trace);
    let started = Instant::now();
    let mut failures = Vec::new();
    let mut last_summary = String::new();
    for (n, (point, mode)) in points.iter().enumerate() {
        replay.advance(trace, *point);
        let state = work.join(format!("state-{n}"));
        replay.materialize(&state, *mode);
        match check(&state, replay.output()) {
            Ok(summary) => last_summary = summary,
            Err(message) => failures.push(format!(
                "crash after call {point} of {} ({mode:?}): {message}",
                trace.len()
            )),
        }
        std::fs::remove_dir_all(&state).unwrap();
    }
    eprintln!(
        "{name}: {} crash states checked in {:.1} s, {} failed; at the end: {last_summary}",
        points.len(),
        started.elapsed().as_secs_f64(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{name}: {} of {} crash states lose acknowledged writes or show partial ones; the \
         first ones:\n{}",
        failures.len(),
        points.len(),
        failures[..failures.len().min(6)].join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// The blob store on its local backend.

/// What the blob child does: two threads upload (sizes from empty to over one `O_DIRECT`
/// staging buffer, one content shared by both threads so a dedup happens) and each deletes
/// one of its files; a third appends to a resumable upload until it finishes.
fn blob_child(root: &Path, backend: Backend) {
    let store = open_store(root, backend).unwrap();
    let stdout = std::sync::Mutex::new(());
    let say = |line: String| {
        let _guard = stdout.lock().unwrap();
        // One `write` per line: the trace shows where it happened.
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        out.write_all(format!("{MARK}{line}\n").as_bytes()).unwrap();
        out.flush().unwrap();
    };
    std::thread::scope(|scope| {
        for t in 0..2u64 {
            let store = store.clone();
            let say = &say;
            scope.spawn(move || {
                let sizes = [
                    100, 40_000, 0, 300_000, 16_000, 700_000, 20_000, 90_000, 5_000,
                ];
                let mut mine = Vec::new();
                for (i, size) in sizes.into_iter().enumerate() {
                    let seed = if i == 7 { 7 } else { 100 * t + i as u64 };
                    let data = content(seed, size);
                    let file = store
                        .upload_bytes(
                            UploadRequest::new(bucket(&format!("b{t}")), format!("f{i}")),
                            &data,
                            "tester",
                        )
                        .unwrap()
                        .record;
                    say(format!("ACK {} {} {}", file.id, file.blake3, file.size));
                    mine.push(file.id);
                    if i == 4 || i == 8 {
                        let victim = mine.remove(1);
                        say(format!("DELETING {victim}"));
                        store.delete_file(victim, "tester").unwrap();
                        say(format!("DEL {victim}"));
                    }
                }
            });
        }
        // A resumable upload beside them, appended at unaligned offsets (each `O_DIRECT`
        // append rewrites its first block), finished by the last append.
        let store = store.clone();
        let say = &say;
        scope.spawn(move || {
            let data = resumable_content();
            let created = store
                .create_upload(
                    UploadRequest::new(bucket("b2"), "resumed.iso"),
                    data.len() as u64,
                    String::new(),
                    None,
                    "tester",
                )
                .unwrap();
            let id = created.upload.id;
            say(format!("UPLOAD {id}"));
            let mut offset = 0;
            for piece in RESUMABLE_PIECES {
                let patched = store
                    .append_upload(id, offset as u64, &mut &data[offset..offset + piece], None)
                    .unwrap();
                offset += piece;
                say(format!("APPENDED {id} {offset}"));
                if let Some(file) = patched.finished {
                    let file = file.record;
                    say(format!("ACK {} {} {}", file.id, file.blake3, file.size));
                }
            }
        });
    });
}

/// The appends of the child's resumable upload: its length is their sum.
const RESUMABLE_PIECES: [usize; 4] = [5_000, 70_001, 600_000, 124_999];

fn resumable_content() -> Vec<u8> {
    content(900, RESUMABLE_PIECES.iter().sum())
}

/// Checks the child's resumable upload in a crash state: its offset is at least the last one
/// acknowledged, and appending the rest from there gives the whole content (the prefix kept
/// is the right bytes: the rehash of its digests would otherwise give another BLAKE3).
fn check_resumable(store: &Store, output: &[Output]) -> Result<String, String> {
    let mut upload = None;
    let mut acked = 0u64;
    for line in marked(output) {
        match line.split_whitespace().collect::<Vec<_>>().as_slice() {
            ["UPLOAD", id] => upload = Some(id.parse::<blobstore::UploadId>().unwrap()),
            ["APPENDED", _, offset] => acked = offset.parse().unwrap(),
            _ => {}
        }
    }
    let Some(id) = upload else {
        return Ok("no resumable upload yet".into());
    };
    let status = store
        .upload_status(id)
        .map_err(|e| format!("acknowledged upload {id} lost: {e}"))?;
    if status.file.is_some() {
        return Ok("the resumable upload finished".into());
    }
    if status.offset < acked {
        return Err(format!(
            "upload {id} resumes at {} but {acked} was acknowledged",
            status.offset
        ));
    }
    let data = resumable_content();
    let at = usize::try_from(status.offset).unwrap();
    let patched = store
        .append_upload(id, status.offset, &mut &data[at..], None)
        .map_err(|e| format!("resuming upload {id} at {at}: {e}"))?;
    let file = patched
        .finished
        .ok_or_else(|| format!("upload {id} did not finish"))?;
    if file.record.blake3 != Blake3Hash::of(&data) {
        return Err(format!(
            "upload {id} resumed at {at} (acknowledged {acked}) finished with other content"
        ));
    }
    Ok(format!(
        "the resumable upload resumed at {at} (acknowledged {acked})"
    ))
}

/// Checks one crash state of the blob store; returns a summary.
fn check_blob_state(
    state: &Path,
    backend: Backend,
    before: &[(FileId, Blake3Hash, u64)],
    output: &[Output],
) -> Result<String, String> {
    let mut acked: Vec<(FileId, Blake3Hash, u64)> = before.to_vec();
    let mut deleting = std::collections::HashSet::new();
    let mut deleted = std::collections::HashSet::new();
    for line in marked(output) {
        let parts: Vec<&str> = line.split_whitespace().collect();
        match parts.as_slice() {
            ["ACK", id, hash, size] => acked.push((
                FileId(id.parse().unwrap()),
                hash.parse().unwrap(),
                size.parse().unwrap(),
            )),
            ["DELETING", id] => {
                deleting.insert(FileId(id.parse().unwrap()));
            }
            ["DEL", id] => {
                deleted.insert(FileId(id.parse().unwrap()));
            }
            _ => {}
        }
    }
    let store = open_store(state, backend).map_err(|e| format!("the store does not open: {e}"))?;
    let mut present = 0;
    for (id, hash, size) in &acked {
        if deleted.contains(id) {
            match store.file(*id) {
                Err(Error::NotFound { .. }) => continue,
                other => return Err(format!("file {id} was deleted (acknowledged): {other:?}")),
            }
        }
        if deleting.contains(id) {
            continue; // its delete was under way: there or not
        }
        let mut bytes = Vec::new();
        store
            .read(*id, Access::Trusted, None)
            .map_err(|e| format!("acknowledged file {id} ({size} bytes) lost: {e}"))?
            .read_to_end(&mut bytes)
            .map_err(|e| format!("acknowledged file {id} ({size} bytes) unreadable: {e}"))?;
        if bytes.len() as u64 != *size || Blake3Hash::of(&bytes) != *hash {
            return Err(format!(
                "acknowledged file {id} reads {} bytes, not its {size}, or not its BLAKE3",
                bytes.len()
            ));
        }
        present += 1;
    }
    let resumed = check_resumable(&store, output)?;
    let report = store.check().map_err(|e| e.to_string())?;
    if !report.is_ok() {
        return Err(format!("check: {:?}", report.problems));
    }
    let verify = store.verify(None, 1_000_000).map_err(|e| e.to_string())?;
    if !verify.problems.is_empty() {
        return Err(format!("verify: {:?}", verify.problems));
    }
    // No blob file under its final name holds other bytes than its hash says, recorded or not.
    let blobs = state.join("data").join("blobs");
    let mut files = 0;
    for level1 in std::fs::read_dir(&blobs).map_err(|e| format!("{blobs:?}: {e}"))? {
        for level2 in std::fs::read_dir(level1.unwrap().path()).unwrap() {
            for blob in std::fs::read_dir(level2.unwrap().path()).unwrap() {
                let blob = blob.unwrap();
                let bytes = std::fs::read(blob.path()).unwrap();
                let name = blob.file_name().to_string_lossy().into_owned();
                if Blake3Hash::of(&bytes).to_hex() != name {
                    return Err(format!(
                        "blob file {name} is visible with {} bytes that are not its content",
                        bytes.len()
                    ));
                }
                files += 1;
            }
        }
    }
    Ok(format!(
        "{present} acknowledged files read back ({} acknowledged, {} deletes under way), {} \
         deletes stayed, {files} blob files whole; {resumed}",
        acked.len(),
        deleting.len(),
        deleted.len()
    ))
}

fn blob_crash_states(backend: Backend, test_name: &str) {
    if std::env::var(ROLE).as_deref() == Ok("blob") {
        blob_child(Path::new(&std::env::var(ROOT).unwrap()), backend);
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    // The state before the child: a store with two files, closed.
    let mut before = Vec::new();
    {
        let store = open_store(&root, backend).unwrap();
        for (i, size) in [50, 30_000].into_iter().enumerate() {
            let file = store
                .upload_bytes(
                    UploadRequest::new(bucket("b0"), format!("before{i}")),
                    &content(1000 + i as u64, size),
                    "tester",
                )
                .unwrap()
                .record;
            before.push((file.id, file.blake3, file.size));
        }
    }
    let trace = trace_child(test_name, "blob", &root, work.path());
    check_crash_states(test_name, &root, work.path(), &trace, |state, output| {
        check_blob_state(state, backend, &before, output)
    });
}

#[test]
fn blobstore_local_rocksdb() {
    blob_crash_states(Backend::Rocksdb, "crash_states::blobstore_local_rocksdb");
}

#[cfg(feature = "sled")]
#[test]
fn blobstore_local_sled() {
    blob_crash_states(Backend::Sled, "crash_states::blobstore_local_sled");
}

// ---------------------------------------------------------------------------------------------
// The engine's synced write.

const KEYSPACES: &[&str] = &["alpha", "beta"];
const KEYS_PER_BATCH: u64 = 4;
const BATCHES: u64 = 40;

fn batch_key(batch: u64, part: u64) -> Vec<u8> {
    engine::keys::KeyBuilder::new()
        .u64(batch)
        .u64(part)
        .finish()
}

fn write_batch(engine: &dyn Engine, n: u64) {
    let alpha = engine.keyspace("alpha").unwrap();
    let beta = engine.keyspace("beta").unwrap();
    let mut batch = WriteBatch::new();
    for part in 0..KEYS_PER_BATCH {
        batch.put(alpha, batch_key(n, part), vec![n as u8; 300]);
    }
    batch.put(beta, batch_key(n, 0), b"marker");
    batch.counter_add(beta, b"batches", 1);
    engine.write(batch, Durability::Sync).unwrap();
}

fn engine_child(root: &Path, backend: Backend) {
    let engine = EngineConfig::new(backend, root.join("db"))
        .open(KEYSPACES)
        .unwrap();
    let beta = engine.keyspace("beta").unwrap();
    let first = engine.counter(beta, b"batches").unwrap() as u64;
    for n in first..first + BATCHES {
        write_batch(&*engine, n);
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        out.write_all(format!("{MARK}ACK {n}\n").as_bytes())
            .unwrap();
        out.flush().unwrap();
    }
}

/// The batches present must be exactly `0..n`, each whole, with `n` past every acknowledged one.
fn check_engine_state(state: &Path, backend: Backend, output: &[Output]) -> Result<String, String> {
    let last = marked(output)
        .filter_map(|line| line.strip_prefix("ACK "))
        .map(|n| n.parse::<u64>().unwrap())
        .max()
        .unwrap_or(0);
    let engine = EngineConfig::new(backend, state.join("db"))
        .open(KEYSPACES)
        .map_err(|e| format!("the engine does not open: {e}"))?;
    let alpha = engine.keyspace("alpha").unwrap();
    let beta = engine.keyspace("beta").unwrap();
    let present = engine
        .counter(beta, b"batches")
        .map_err(|e| e.to_string())? as u64;
    if present <= last {
        return Err(format!(
            "batch {last} was acknowledged as synced but only {present} batches survived"
        ));
    }
    let mut rows: HashMap<u64, u64> = HashMap::new();
    for item in engine
        .scan(alpha, engine::ScanRange::all(), engine::Direction::Forward)
        .map_err(|e| e.to_string())?
    {
        let (key, value) = item.map_err(|e| e.to_string())?;
        let batch = engine::keys::KeyReader::new(&key).u64().unwrap();
        if value != vec![batch as u8; 300] {
            return Err(format!("batch {batch} has a damaged value"));
        }
        *rows.entry(batch).or_default() += 1;
    }
    for batch in 0..present {
        let marker = engine.get(beta, &batch_key(batch, 0)).unwrap();
        if rows.remove(&batch) != Some(KEYS_PER_BATCH) || marker.is_none() {
            return Err(format!("batch {batch} is partly visible"));
        }
    }
    if let Some(batch) = rows.keys().next() {
        return Err(format!(
            "batch {batch} is visible but its counter add is not"
        ));
    }
    Ok(format!("{present} batches whole, last acknowledged {last}"))
}

fn engine_crash_states(backend: Backend, test_name: &str) {
    if std::env::var(ROLE).as_deref() == Ok("engine") {
        engine_child(Path::new(&std::env::var(ROOT).unwrap()), backend);
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let root: PathBuf = work.path().join("root");
    {
        let engine = EngineConfig::new(backend, root.join("db"))
            .open(KEYSPACES)
            .unwrap();
        write_batch(&*engine, 0);
    }
    let trace = trace_child(test_name, "engine", &root, work.path());
    check_crash_states(test_name, &root, work.path(), &trace, |state, output| {
        check_engine_state(state, backend, output)
    });
}

#[test]
fn engine_synced_batches_rocksdb() {
    engine_crash_states(
        Backend::Rocksdb,
        "crash_states::engine_synced_batches_rocksdb",
    );
}

#[cfg(feature = "sled")]
#[test]
fn engine_synced_batches_sled() {
    engine_crash_states(Backend::Sled, "crash_states::engine_synced_batches_sled");
}
