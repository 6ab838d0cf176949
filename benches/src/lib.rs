//! Shared helpers of the criterion benchmarks in `benches/benches/`.
//!
//! Run them with `make bench` (or `cargo bench -p benches`); the figures of the last recorded
//! run are in the README and the stores' `DESIGN.md` files.

// Benchmark code: a failed unwrap stops a measurement, which must not carry on past a broken setup.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use engine::{Backend, Engine, EngineConfig};

/// Opens a fresh store of `backend` in `dir` with `keyspaces`.
///
/// # Panics
/// When the store cannot be opened: a benchmark has no better answer.
pub fn open_engine(backend: Backend, dir: &std::path::Path, keyspaces: &[&str]) -> Arc<dyn Engine> {
    EngineConfig::new(backend, dir.join(backend.name()))
        .open(keyspaces)
        .unwrap_or_else(|e| panic!("open {backend}: {e}"))
}

/// A new directory for a benchmark's files on a real disk: under `BLOBSTORE_BENCH_DIR`, or
/// `~/.cache/lpstore/bench`.
///
/// # Panics
/// When that directory cannot be made, or is on tmpfs (durable figures would measure memory).
pub fn disk_dir() -> tempfile::TempDir {
    let base = std::env::var_os("BLOBSTORE_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").expect("HOME or BLOBSTORE_BENCH_DIR");
            std::path::Path::new(&home).join(".cache/lpstore/bench")
        });
    std::fs::create_dir_all(&base).unwrap();
    assert!(
        !blobstore::is_tmpfs(&base),
        "{} is on tmpfs: durable figures need a real disk (set BLOBSTORE_BENCH_DIR)",
        base.display()
    );
    tempfile::tempdir_in(base).unwrap()
}

/// A small deterministic generator (Knuth's MMIX LCG) for picking query samples: the same
/// sequence in every run, so runs compare.
#[derive(Debug)]
pub struct Lcg(pub u64);

impl Lcg {
    /// A number in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) % n as u64) as usize
    }
}

/// Prints the sample count, p50, p99 and maximum of `samples` under `label`.
pub fn percentiles(label: &str, mut samples: Vec<std::time::Duration>) {
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q) as usize];
    println!(
        "{label}: n={} p50={:?} p99={:?} max={:?}",
        samples.len(),
        at(0.5),
        at(0.99),
        samples[samples.len() - 1]
    );
}

/// The CPU time this process has used so far (user + system, every thread), from
/// `/proc/self/stat`, in seconds: on a machine loaded by others it tells the work done apart
/// from the waiting.
pub fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks: f64 = fields.get(11..13).map_or(0.0, |f| {
        f.iter().filter_map(|t| t.parse::<f64>().ok()).sum()
    });
    ticks / 100.0
}
