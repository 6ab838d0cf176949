//! Usage statistics: downloads per file per day, per bucket per day, and each file's total
//! and last day, read in constant time per day asked.
//!
//! Counts are gathered in memory and written in batches (`downloads.rs`); each batch adds
//! to three counters per (file, day): the file's day, the file's total (the day
//! [`keys::TOTAL_DAY`]) and the bucket's day (`'d' ‖ bucket ‖ day` in `bs.stats`). The
//! readers here write the pending counts first, so they see every download counted so far.

use engine::{Direction, ScanRange};

use crate::error::{Error, Result};
use crate::keys;
use crate::types::{BucketName, Day, FileId};

use super::{as_u64, Store};

/// The longest range of days one statistics read may ask for: 366.
pub const MAX_USAGE_DAYS: u32 = 366;

/// A file's downloads in total, and the last day it was downloaded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DownloadSummary {
    /// Downloads (reads from byte 0) since the file was uploaded.
    pub total: u64,
    /// The last day with a download, if any.
    pub last_day: Option<Day>,
}

fn check_range(from: Day, to: Day) -> Result<()> {
    if from > to {
        return Err(Error::InvalidDayRange {
            reason: "the range ends before it starts",
        });
    }
    if to.0 - from.0 >= MAX_USAGE_DAYS {
        return Err(Error::InvalidDayRange {
            reason: "a range covers at most 366 days",
        });
    }
    Ok(())
}

impl Store {
    /// The downloads of file `id` on each day from `from` to `to` (inclusive), zeros
    /// included: one range scan of at most 366 counters.
    ///
    /// # Errors
    /// [`Error::InvalidDayRange`] (reversed, or over [`MAX_USAGE_DAYS`]), [`Error::NotFound`],
    /// the engine's error.
    pub fn file_downloads(&self, id: FileId, from: Day, to: Day) -> Result<Vec<(Day, u64)>> {
        check_range(from, to)?;
        self.file(id)?;
        self.flush_downloads()?;
        let range = ScanRange {
            start: keys::download(id, from),
            end: Some(keys::download(id, Day(to.0.saturating_add(1)))),
            read_once: false,
        };
        let mut counts: Vec<(Day, u64)> = (from.0..=to.0).map(|d| (Day(d), 0)).collect();
        for kv in self
            .inner
            .engine
            .scan(self.inner.ks.downloads, range, Direction::Forward)?
        {
            let (key, _) = kv?;
            let day = day_of(&key, 8)?;
            let n = as_u64(self.counter(self.inner.ks.downloads, &key)?);
            if let Some(slot) = counts.get_mut((day.0 - from.0) as usize) {
                slot.1 = n;
            }
        }
        Ok(counts)
    }

    /// The downloads of every file of `bucket` on each day from `from` to `to` (inclusive),
    /// zeros included. Files deleted later still count on the days they were downloaded.
    ///
    /// # Errors
    /// [`Error::InvalidDayRange`], the engine's error.
    pub fn bucket_downloads(
        &self,
        bucket: &BucketName,
        from: Day,
        to: Day,
    ) -> Result<Vec<(Day, u64)>> {
        check_range(from, to)?;
        self.flush_downloads()?;
        let prefix_len = keys::bucket_downloads(bucket.as_str(), Day(0)).len() - 4;
        let range = ScanRange {
            start: keys::bucket_downloads(bucket.as_str(), from),
            end: Some(keys::bucket_downloads(
                bucket.as_str(),
                Day(to.0.saturating_add(1)),
            )),
            read_once: false,
        };
        let mut counts: Vec<(Day, u64)> = (from.0..=to.0).map(|d| (Day(d), 0)).collect();
        for kv in self
            .inner
            .engine
            .scan(self.inner.ks.stats, range, Direction::Forward)?
        {
            let (key, _) = kv?;
            let day = day_of(&key, prefix_len)?;
            let n = as_u64(self.counter(self.inner.ks.stats, &key)?);
            if let Some(slot) = counts.get_mut((day.0 - from.0) as usize) {
                slot.1 = n;
            }
        }
        Ok(counts)
    }

    /// File `id`'s total downloads and its last day with one: one counter and one seek.
    ///
    /// # Errors
    /// The engine's error.
    pub fn download_summary(&self, id: FileId) -> Result<DownloadSummary> {
        self.flush_downloads()?;
        let ks = self.inner.ks;
        let total = as_u64(self.counter(ks.downloads, &keys::download(id, keys::TOTAL_DAY))?);
        let range = ScanRange {
            start: keys::download(id, Day(0)),
            end: Some(keys::download(id, keys::TOTAL_DAY)),
            read_once: false,
        };
        let last_day = match self
            .inner
            .engine
            .scan(ks.downloads, range, Direction::Reverse)?
            .next()
        {
            Some(kv) => Some(day_of(&kv?.0, 8)?),
            None => None,
        };
        Ok(DownloadSummary { total, last_day })
    }
}

/// The day at the end of a counter key whose prefix is `prefix_len` bytes.
fn day_of(key: &[u8], prefix_len: usize) -> Result<Day> {
    key.get(prefix_len..)
        .and_then(|rest| <[u8; 4]>::try_from(rest).ok())
        .map(|bytes| Day(u32::from_be_bytes(bytes)))
        .ok_or_else(|| Error::CorruptRecord {
            what: "download counter",
            key: key.to_vec(),
        })
}
