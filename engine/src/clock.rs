//! Time, behind a trait so that tests can move it: the one clock of every store.
//!
//! The blob store counts milliseconds (file creation, expiry, GC grace, tokens, download days)
//! and the graph store whole seconds (membership expiry), so the clock gives both from one
//! count of milliseconds since the Unix epoch.

use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A store's source of "now".
pub trait Clock: Send + Sync + fmt::Debug {
    /// Milliseconds since the Unix epoch (negative before it).
    fn now_millis(&self) -> i64;

    /// Whole seconds since the Unix epoch, rounded down.
    fn now_seconds(&self) -> i64 {
        self.now_millis().div_euclid(1000)
    }
}

/// The system's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_millis(&self) -> i64 {
        match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(elapsed) => saturating_millis(elapsed),
            Err(before) => -saturating_millis(before.duration()),
        }
    }
}

/// A clock that moves only when told to, for tests.
#[derive(Debug, Default)]
pub struct ManualClock {
    millis: AtomicI64,
}

impl ManualClock {
    /// A clock showing `millis` milliseconds since the Unix epoch.
    pub fn at_millis(millis: i64) -> Self {
        ManualClock {
            millis: AtomicI64::new(millis),
        }
    }

    /// A clock showing `seconds` seconds since the Unix epoch.
    pub fn at_seconds(seconds: i64) -> Self {
        ManualClock::at_millis(seconds.saturating_mul(1000))
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.millis
            .fetch_add(saturating_millis(by), Ordering::SeqCst);
    }

    /// Sets the clock to `millis` milliseconds since the Unix epoch.
    pub fn set_millis(&self, millis: i64) {
        self.millis.store(millis, Ordering::SeqCst);
    }

    /// Sets the clock to `seconds` seconds since the Unix epoch.
    pub fn set_seconds(&self, seconds: i64) {
        self.set_millis(seconds.saturating_mul(1000));
    }
}

impl Clock for ManualClock {
    fn now_millis(&self) -> i64 {
        self.millis.load(Ordering::SeqCst)
    }
}

fn saturating_millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_round_down_also_before_the_epoch() {
        let clock = ManualClock::at_millis(1_999);
        assert_eq!(clock.now_seconds(), 1);
        clock.set_millis(-1);
        assert_eq!(clock.now_seconds(), -1);
        clock.set_seconds(5);
        clock.advance(Duration::from_millis(1_500));
        assert_eq!((clock.now_millis(), clock.now_seconds()), (6_500, 6));
    }

    #[test]
    fn the_system_clock_is_after_2020() {
        assert!(SystemClock.now_seconds() > 1_577_836_800);
    }
}
