//! The online scrub of `serve`: a background task that rehashes every blob once per period at
//! a bounded rate, on the writer only (`blobstore/DESIGN.md`, "Online scrub").

use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::Librarian;

/// Default rate of the scrub, in bytes read per second: 16 MiB/s rehashes 1 TiB in 19 hours,
/// a small share of a disk's bandwidth and of one core's BLAKE3 rate (several GiB/s).
pub const DEFAULT_SCRUB_BYTES_PER_SEC: u64 = 16 << 20;

/// Default period: a new pass starts a week after the previous one started.
pub const DEFAULT_SCRUB_PERIOD_SECS: u64 = 7 * 86_400;

/// Blobs checked per store call: the position is made durable after each.
const STEP_BLOBS: usize = 64;

/// How long the task sleeps, by default, before it looks again when there is nothing to do
/// (not the writer, or the next pass is not due).
pub const DEFAULT_IDLE_CHECK: Duration = Duration::from_secs(30);

/// How the scrub runs: `[store] scrub_bytes_per_sec` and `scrub_period_secs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScrubSettings {
    /// Bytes read per second at most; 0 turns the scrub off.
    pub bytes_per_sec: u64,
    /// The time from the start of one pass to the start of the next.
    pub period: Duration,
    /// How long the task waits before it looks again when there is nothing to do (not the
    /// writer, the next pass not due, or a failed step). Default 30 s.
    pub idle_check: Duration,
}

impl Default for ScrubSettings {
    fn default() -> Self {
        ScrubSettings {
            bytes_per_sec: DEFAULT_SCRUB_BYTES_PER_SEC,
            period: Duration::from_secs(DEFAULT_SCRUB_PERIOD_SECS),
            idle_check: DEFAULT_IDLE_CHECK,
        }
    }
}

/// The scrub's figures in `/metrics`.
#[derive(Debug, Default)]
pub struct ScrubMetrics {
    checked_blobs: Counter,
    checked_bytes: Counter,
    passes: Counter,
    last_pass: Gauge,
    corrupt: Gauge,
    missing: Gauge,
}

impl ScrubMetrics {
    pub(crate) fn register(&self, registry: &mut Registry) {
        registry.register(
            "scrub_checked_blobs",
            "Blobs rehashed by the online scrub",
            self.checked_blobs.clone(),
        );
        registry.register(
            "scrub_checked_bytes",
            "Bytes rehashed by the online scrub",
            self.checked_bytes.clone(),
        );
        registry.register(
            "scrub_passes",
            "Complete passes of the online scrub",
            self.passes.clone(),
        );
        registry.register(
            "scrub_last_pass_timestamp_seconds",
            "When the last complete scrub pass ended",
            self.last_pass.clone(),
        );
        registry.register(
            "scrub_corrupt_blobs",
            "Blobs whose bytes do not hash to their address",
            self.corrupt.clone(),
        );
        registry.register(
            "scrub_missing_blobs",
            "Blobs whose bytes are missing",
            self.missing.clone(),
        );
    }

    /// Sets the gauges from the store's report.
    pub(crate) fn record_report(&self, report: &blobstore::ScrubReport) {
        let count = |kind: &str| {
            let n = report
                .findings
                .iter()
                .filter(|f| f.problem.kind() == kind)
                .count();
            i64::try_from(n).unwrap_or(i64::MAX)
        };
        self.corrupt.set(count("corrupt"));
        self.missing.set(count("missing"));
        if let Some(last) = report.state.last_complete.and_then(|pass| pass.finished) {
            self.last_pass.set(last.as_unix_secs());
        }
    }
}

/// Holds the scrub to `bytes_per_sec`: after each piece read, sleeps until the bytes read
/// since `start` are within the rate.
#[derive(Debug)]
struct Pacer {
    bytes_per_sec: u64,
    start: Instant,
    bytes: u64,
}

impl Pacer {
    fn new(bytes_per_sec: u64) -> Self {
        Pacer {
            bytes_per_sec: bytes_per_sec.max(1),
            start: Instant::now(),
            bytes: 0,
        }
    }

    fn pace(&mut self, bytes: u64) {
        self.bytes += bytes;
        let due = Duration::from_secs_f64(self.bytes as f64 / self.bytes_per_sec as f64);
        if let Some(wait) = due.checked_sub(self.start.elapsed()) {
            std::thread::sleep(wait);
        }
    }
}

/// The most findings `GET /scrub` and the metrics read.
pub const MAX_FINDINGS: usize = 1000;

/// Runs the scrub until the process ends, with the state's settings
/// ([`Librarian::with_scrub`]): steps of 64 blobs at their rate while a pass is
/// in progress or due, on the writer only. Off when the rate is 0.
pub async fn scrub_loop(state: Librarian) {
    let settings = state.scrub_settings;
    if settings.bytes_per_sec == 0 {
        return;
    }
    let mut reported = false;
    let mut pacer: Option<Pacer> = None;
    loop {
        if !state.leader.is_leader() {
            pacer = None;
            tokio::time::sleep(settings.idle_check).await;
            continue;
        }
        let store = state.store.clone();
        let due = tokio::task::spawn_blocking(move || {
            let scrub = store.scrub_state()?;
            let now = store.now();
            Ok::<_, blobstore::Error>(match (scrub.current, scrub.last_complete) {
                (Some(_), _) | (None, None) => None,
                (None, Some(last)) => {
                    let next = last.started.plus(settings.period);
                    (next > now).then(|| {
                        Duration::from_millis(
                            u64::try_from(next.as_unix_millis() - now.as_unix_millis())
                                .unwrap_or(0),
                        )
                    })
                }
            })
        })
        .await;
        match due {
            Ok(Ok(Some(wait))) => {
                pacer = None;
                tokio::time::sleep(wait.min(settings.idle_check)).await;
                continue;
            }
            Ok(Ok(None)) => {}
            Ok(Err(error)) => {
                tracing::error!(%error, "scrub: cannot read its state");
                tokio::time::sleep(settings.idle_check).await;
                continue;
            }
            Err(error) => {
                tracing::error!(%error, "scrub panicked");
                return;
            }
        }
        // Rehashing runs on Tokio's blocking pool, not the store threads that serve requests.
        let store = state.store.clone();
        let mut taken = pacer
            .take()
            .unwrap_or_else(|| Pacer::new(settings.bytes_per_sec));
        let need_report = !reported;
        let result = tokio::task::spawn_blocking(move || {
            let step = store.scrub_step(STEP_BLOBS, &mut |n| taken.pace(n))?;
            let changed = need_report
                || !step.found.is_empty()
                || !step.repaired.is_empty()
                || step.completed.is_some();
            let report = changed
                .then(|| store.scrub_report(MAX_FINDINGS, 0))
                .transpose()?;
            Ok::<_, blobstore::Error>((step, report, taken))
        })
        .await;
        match result {
            Ok(Ok((step, report, taken))) => {
                pacer = Some(taken);
                let metrics = &state.scrub_metrics;
                metrics.checked_blobs.inc_by(step.checked);
                metrics.checked_bytes.inc_by(step.bytes);
                for problem in &step.found {
                    tracing::error!(blake3 = %problem.hash(), problem = problem.kind(), "scrub: damaged blob");
                }
                for hash in &step.repaired {
                    tracing::info!(blake3 = %hash, "scrub: blob checks good again");
                }
                if let Some(pass) = step.completed {
                    metrics.passes.inc();
                    tracing::info!(
                        pass = pass.pass,
                        blobs = pass.blobs,
                        bytes = pass.bytes,
                        "scrub pass complete"
                    );
                }
                if let Some(report) = report {
                    metrics.record_report(&report);
                    reported = true;
                }
            }
            Ok(Err(error)) => {
                tracing::error!(%error, "scrub step failed");
                tokio::time::sleep(settings.idle_check).await;
            }
            Err(error) => {
                tracing::error!(%error, "scrub panicked");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Pacer;

    #[test]
    fn the_pacer_holds_its_rate() {
        let mut pacer = Pacer::new(1 << 20);
        for _ in 0..4 {
            pacer.pace(64 << 10);
        }
        // 256 KiB at 1 MiB/s: at least a quarter of a second (a lower bound, never flaky).
        assert!(pacer.start.elapsed() >= std::time::Duration::from_millis(250));
    }
}
