//! The few object operations the backend needs, retried, over Swift or S3.

use std::fmt;
use std::io::Read;
use std::path::Path;
use std::sync::PoisonError;
use std::time::{Duration, Instant};

use crate::config::RetryConfig;
use crate::error::Error;

/// How one attempt failed.
#[derive(Debug)]
pub(crate) enum Attempt {
    /// Worth retrying: connection refused or reset, timeout, 5xx, 408, 429.
    Transient(String),
    /// The token expired: authenticate again, then retry.
    Unauthorized,
    /// Retrying will not help.
    Permanent(Error),
}

pub(crate) type AttemptResult<T> = std::result::Result<T, Attempt>;

/// What an upload's answer proved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verified {
    /// The server's ETag is the MD5 of the bytes sent: stored whole and intact.
    Content,
    /// Nothing beyond success (segmented objects, ETags that are not an MD5).
    Nothing,
}

/// One object as listed.
#[derive(Debug, Clone)]
pub(crate) struct Listed {
    pub name: String,
    /// Unix milliseconds.
    pub modified: i64,
}

/// Object operations, each already retried within the policy's budget.
pub(crate) trait ObjectClient: Send + Sync + fmt::Debug {
    /// Creates the container (bucket) if missing.
    fn ensure_container(&self, container: &str) -> Result<(), Error>;
    /// Uploads `size` bytes of the file at `path` as `container/key`; in segments when
    /// `segmented` (read back as one object). Returns [`Verified::Content`] when the server's
    /// answer proved it stored exactly the bytes sent (its ETag is their MD5); otherwise the
    /// caller checks with a HEAD.
    fn put(
        &self,
        container: &str,
        key: &str,
        path: &Path,
        size: u64,
        segmented: bool,
    ) -> Result<Verified, Error>;
    /// The object's size, or `None` when missing.
    fn head(&self, container: &str, key: &str) -> Result<Option<u64>, Error>;
    /// `len` bytes from `offset` (`u64::MAX` for "to the end"), or `None` when missing.
    fn get(
        &self,
        container: &str,
        key: &str,
        offset: u64,
        len: u64,
    ) -> Result<Option<Box<dyn Read + Send>>, Error>;
    /// Removes the object (and its segments when `segmented`); missing is fine.
    fn delete(&self, container: &str, key: &str, segmented: bool) -> Result<(), Error>;
    /// Every object of the container whose name starts with `prefix`; a missing container
    /// lists nothing.
    fn list(
        &self,
        container: &str,
        prefix: &str,
        visit: &mut dyn FnMut(Listed) -> Result<(), Error>,
    ) -> Result<(), Error>;
    /// The container that holds the segments of `container`'s large objects, if the protocol
    /// keeps them apart (Swift); S3 multipart parts are not objects.
    fn segments_container(&self, container: &str) -> Option<String>;
    /// Removes a segment left by an unfinished upload.
    fn delete_segment(&self, container: &str, name: &str) -> Result<(), Error>;
}

/// Exponential backoff within a bounded total time.
///
/// Hand-written on purpose (`backon` was weighed): the loop is a few lines, and
/// what it does beyond doubling a pause — re-authenticating at once on a 401, giving up when
/// the *next* pause would overrun the budget, and reporting attempts and elapsed time in
/// [`Error::Unavailable`] — would sit outside a backoff crate anyway; the crate would replace
/// only the line that doubles the pause.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Retry {
    initial: Duration,
    max: Duration,
    budget: Duration,
}

impl Retry {
    pub(crate) fn new(config: &RetryConfig) -> Self {
        Retry {
            initial: Duration::from_millis(config.initial_backoff_ms.max(1)),
            max: Duration::from_millis(config.max_backoff_ms.max(1)),
            budget: Duration::from_millis(config.budget_ms),
        }
    }

    /// Runs `attempt` until it succeeds, fails permanently, or the budget is spent.
    /// `reauth` is called after an [`Attempt::Unauthorized`].
    pub(crate) fn run<T>(
        &self,
        operation: &'static str,
        container: &str,
        key: &str,
        mut attempt: impl FnMut() -> AttemptResult<T>,
        reauth: &dyn Fn(),
    ) -> Result<T, Error> {
        let start = Instant::now();
        let mut pause = self.initial;
        let mut attempts = 0u32;
        let mut unauthorized = 0u32;
        loop {
            attempts += 1;
            let cause = match attempt() {
                Ok(value) => return Ok(value),
                Err(Attempt::Permanent(error)) => return Err(error),
                Err(Attempt::Unauthorized) => {
                    unauthorized += 1;
                    reauth();
                    if unauthorized <= 2 {
                        // A fresh token: retry at once.
                        continue;
                    }
                    "HTTP 401 even with a fresh token".to_string()
                }
                Err(Attempt::Transient(cause)) => cause,
            };
            let elapsed = start.elapsed();
            if elapsed + pause > self.budget {
                tracing::warn!(operation, container, key, attempts, %cause, "giving up");
                return Err(Error::Unavailable {
                    operation,
                    container: container.to_string(),
                    key: key.to_string(),
                    attempts,
                    elapsed,
                    cause,
                });
            }
            tracing::debug!(operation, container, key, attempts, %cause, ?pause, "retrying");
            std::thread::sleep(pause);
            pause = (pause * 2).min(self.max);
        }
    }

    pub(crate) fn budget(&self) -> Duration {
        self.budget
    }
}

/// The `(offset, len)` pieces of an object of `size` bytes uploaded in segments (parts):
/// `segment_size` each, clamped to the protocol's `min..=max`, and larger when `size` would
/// need more than `max_count` pieces. The last piece may be shorter.
pub(crate) fn plan_segments(
    size: u64,
    segment_size: u64,
    min: u64,
    max: u64,
    max_count: u64,
) -> Vec<(u64, u64)> {
    let piece = segment_size
        .max(size.div_ceil(max_count.max(1)))
        .clamp(min.max(1), max.max(1));
    let mut plan = Vec::new();
    let mut offset = 0;
    while offset < size {
        let len = piece.min(size - offset);
        plan.push((offset, len));
        offset += len;
    }
    if plan.is_empty() {
        plan.push((0, 0));
    }
    plan
}

/// Runs `job(0)`, ..., `job(count - 1)` on at most `concurrency` threads and returns their
/// results in order. After the first error no further job starts, and that error is returned.
/// (The segments of one large object go up several at a time: one TCP stream through a busy
/// proxy rarely fills the link.)
pub(crate) fn run_parallel<T: Send>(
    count: usize,
    concurrency: usize,
    job: impl Fn(usize) -> Result<T, Error> + Sync,
) -> Result<Vec<T>, Error> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failed = std::sync::atomic::AtomicBool::new(false);
    let results: Vec<std::sync::Mutex<Option<Result<T, Error>>>> =
        (0..count).map(|_| std::sync::Mutex::new(None)).collect();
    let worker = || loop {
        if failed.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let index = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if index >= count {
            return;
        }
        let result = job(index);
        if result.is_err() {
            failed.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        *results[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(result);
    };
    let threads = concurrency.clamp(1, count.max(1));
    if threads == 1 {
        worker();
    } else {
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(worker);
            }
        });
    }
    let mut out = Vec::with_capacity(count);
    let mut first_error = None;
    for slot in results {
        match slot.into_inner().unwrap_or_else(PoisonError::into_inner) {
            Some(Ok(value)) => out.push(value),
            Some(Err(error)) => {
                first_error.get_or_insert(error);
            }
            None => {}
        }
    }
    match first_error {
        Some(error) => Err(error),
        None => Ok(out),
    }
}

/// Classifies an HTTP status that is not a success.
pub(crate) fn status_attempt(
    status: u16,
    body: String,
    operation: &'static str,
    container: &str,
    key: &str,
) -> Attempt {
    match status {
        401 => Attempt::Unauthorized,
        408 | 429 | 498 | 500..=599 => Attempt::Transient(format!("HTTP {status}: {body}")),
        _ => Attempt::Permanent(Error::Refused {
            operation,
            container: container.to_string(),
            key: key.to_string(),
            status,
            body,
        }),
    }
}

/// Parses Swift's listing time, `2026-11-28T17:14:30.375350` (UTC, no zone), or RFC 3339 with
/// a `Z`, into Unix milliseconds.
pub(crate) fn parse_utc_millis(text: &str) -> Option<i64> {
    let text = text.trim_end_matches('Z');
    let (date, time) = text.split_once('T')?;
    let mut d = date.splitn(3, '-').map(str::parse::<i64>);
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.splitn(3, ':').map(str::parse::<i64>);
    let (hh, mm, ss) = (t.next()?.ok()?, t.next()?.ok()?, t.next()?.ok()?);
    let frac_ms: i64 = {
        let digits: String = frac.chars().take(3).collect();
        let padded = format!("{digits:0<3}");
        padded.parse().ok()?
    };
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 24 + hh) * 60 + mm) * 60_000 + ss * 1000 + frac_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_swift_listing_times() {
        assert_eq!(parse_utc_millis("1970-01-01T00:00:00"), Some(0));
        assert_eq!(
            parse_utc_millis("2026-11-28T17:14:30.375350"),
            Some(1_795_886_070_375)
        );
        assert_eq!(
            parse_utc_millis("2000-02-29T23:59:59.5Z"),
            Some(951_868_799_500)
        );
        assert_eq!(parse_utc_millis("yesterday"), None);
    }

    #[test]
    fn segments_cover_the_object_within_the_protocol_limits() {
        let covers = |plan: &[(u64, u64)], size: u64| {
            let mut offset = 0;
            for &(o, len) in plan {
                assert_eq!(o, offset);
                offset += len;
            }
            assert_eq!(offset, size);
        };
        let plan = plan_segments(10, 4, 1, u64::MAX, 1000);
        assert_eq!(plan, vec![(0, 4), (4, 4), (8, 2)]);
        // S3: parts of at least 5 MiB, at most 10,000 of them.
        let plan = plan_segments(100 << 20, 1 << 20, 5 << 20, 5 << 30, 10_000);
        assert_eq!(plan.len(), 20);
        covers(&plan, 100 << 20);
        let huge = 5u64 << 40;
        let plan = plan_segments(huge, 64 << 20, 5 << 20, 5 << 30, 10_000);
        assert!(plan.len() <= 10_000, "{} parts", plan.len());
        covers(&plan, huge);
    }

    #[test]
    fn parallel_jobs_keep_their_order_and_stop_at_an_error() {
        let squares = run_parallel(50, 4, |i| Ok(i * i)).unwrap();
        assert_eq!(squares, (0..50).map(|i| i * i).collect::<Vec<_>>());
        let started = std::sync::atomic::AtomicUsize::new(0);
        let error = run_parallel(1000, 2, |i| {
            started.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if i == 3 {
                Err(Error::Config("job 3".into()))
            } else {
                Ok(i)
            }
        })
        .unwrap_err();
        assert!(
            matches!(error, Error::Config(ref m) if m == "job 3"),
            "{error}"
        );
        assert!(
            started.load(std::sync::atomic::Ordering::Relaxed) < 1000,
            "jobs went on after the error"
        );
    }

    #[test]
    fn retry_gives_up_within_budget_and_reports_unavailable() {
        let retry = Retry::new(&RetryConfig::new(
            Duration::from_millis(1),
            Duration::from_millis(4),
            Duration::from_millis(30),
        ));
        let mut calls = 0;
        let result: Result<(), Error> = retry.run(
            "get",
            "c",
            "k",
            || {
                calls += 1;
                Err(Attempt::Transient("refused".into()))
            },
            &|| {},
        );
        let error = result.unwrap_err();
        assert!(error.is_unavailable(), "{error}");
        assert!(calls > 2, "only {calls} attempts");
    }

    #[test]
    fn retry_stops_at_a_permanent_error_and_recovers_from_transient_ones() {
        let retry = Retry::new(&RetryConfig::default());
        let mut calls = 0;
        let value = retry
            .run(
                "get",
                "c",
                "k",
                || {
                    calls += 1;
                    if calls < 3 {
                        Err(Attempt::Transient("503".into()))
                    } else {
                        Ok(calls)
                    }
                },
                &|| {},
            )
            .unwrap();
        assert_eq!(value, 3);
        let mut calls = 0;
        let error = retry
            .run::<()>(
                "put",
                "c",
                "k",
                || {
                    calls += 1;
                    Err(status_attempt(403, "no".into(), "put", "c", "k"))
                },
                &|| {},
            )
            .unwrap_err();
        assert_eq!(calls, 1);
        assert!(
            matches!(error, Error::Refused { status: 403, .. }),
            "{error}"
        );
    }
}
