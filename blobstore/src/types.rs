//! Newtypes: ids, hashes, bucket names, timestamps, and the filename rules.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::error::{Error, Result};

/// The stable id of a file: its public URL is `/<id>/<filename>`.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct FileId(pub u64);

impl fmt::Display for FileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for FileId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(parse_error("file id", s));
        }
        s.parse::<u64>()
            .map(FileId)
            .map_err(|_| parse_error("file id", s))
    }
}

fn parse_error(what: &'static str, input: &str) -> Error {
    let mut end = input.len().min(100);
    while !input.is_char_boundary(end) {
        end -= 1;
    }
    Error::Parse {
        what,
        input: input[..end].to_string(),
    }
}

fn hex_encode(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

/// Decodes lowercase or uppercase hex of exactly `N` bytes.
pub(crate) fn hex_decode<const N: usize>(s: &str) -> Option<[u8; N]> {
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

/// A BLAKE3 hash: the address of a blob. `Display` is 64 lowercase hex digits; `{:#}` is the
/// short form (12 digits).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Blake3Hash(pub [u8; 32]);

impl Blake3Hash {
    /// The hash of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Blake3Hash(*blake3::hash(bytes).as_bytes())
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        hex_encode(&self.0)
    }
}

impl fmt::Display for Blake3Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hex = self.to_hex();
        if f.alternate() {
            f.write_str(&hex[..12])
        } else {
            f.write_str(&hex)
        }
    }
}

impl fmt::Debug for Blake3Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Blake3Hash({self:#})")
    }
}

impl FromStr for Blake3Hash {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        hex_decode::<32>(s)
            .map(Blake3Hash)
            .ok_or_else(|| parse_error("blake3 hash", s))
    }
}

/// A digest by which files can be looked up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Digest {
    /// BLAKE3 (always kept).
    Blake3(Blake3Hash),
    /// SHA-256 (always kept).
    Sha256([u8; 32]),
    /// SHA-1 (kept when the store is configured with `keep_sha1_md5(true)`).
    Sha1([u8; 20]),
    /// MD5 (kept when the store is configured with `keep_sha1_md5(true)`).
    Md5([u8; 16]),
}

impl Digest {
    /// The algorithm's name.
    pub fn algorithm(&self) -> &'static str {
        match self {
            Digest::Blake3(_) => "blake3",
            Digest::Sha256(_) => "sha256",
            Digest::Sha1(_) => "sha1",
            Digest::Md5(_) => "md5",
        }
    }

    /// The digest's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Digest::Blake3(h) => &h.0,
            Digest::Sha256(d) => d,
            Digest::Sha1(d) => d,
            Digest::Md5(d) => d,
        }
    }

    /// Parses `algorithm` ("blake3", "sha256", "sha1", "md5") and hex digits.
    ///
    /// # Errors
    /// [`Error::Parse`] for an unknown algorithm or malformed hex.
    pub fn parse(algorithm: &str, hex: &str) -> Result<Digest> {
        let digest = match algorithm {
            "blake3" => hex_decode::<32>(hex).map(|d| Digest::Blake3(Blake3Hash(d))),
            "sha256" => hex_decode::<32>(hex).map(Digest::Sha256),
            "sha1" => hex_decode::<20>(hex).map(Digest::Sha1),
            "md5" => hex_decode::<16>(hex).map(Digest::Md5),
            _ => None,
        };
        digest.ok_or_else(|| parse_error("digest", hex))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm(), hex_encode(self.as_bytes()))
    }
}

/// Hex of any digest bytes, lowercase.
pub fn to_hex(bytes: &[u8]) -> String {
    hex_encode(bytes)
}

/// The name of a bucket: 1 to 200 bytes of ASCII letters, digits and `. _ - + : ~ /`, not
/// starting with `.` or `/`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BucketName(String);

impl BucketName {
    /// The longest name accepted, in bytes.
    pub const MAX_LEN: usize = 200;

    /// Validates `name`.
    ///
    /// # Errors
    /// [`Error::InvalidBucketName`] when it breaks the rules above.
    pub fn new(name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        let reason = if name.is_empty() {
            Some("empty")
        } else if name.len() > Self::MAX_LEN {
            Some("longer than 200 bytes")
        } else if name.starts_with('.') || name.starts_with('/') {
            Some("starts with '.' or '/'")
        } else if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-+:~/".contains(&b))
        {
            Some("only ASCII letters, digits and . _ - + : ~ / are allowed")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(Error::InvalidBucketName {
                name: name.chars().take(Self::MAX_LEN + 1).collect(),
                reason,
            }),
            None => Ok(BucketName(name)),
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BucketName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for BucketName {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        BucketName::new(s)
    }
}

/// The longest filename accepted, in bytes.
pub const MAX_FILENAME_LEN: usize = 255;

/// Checks a filename: 1 to 255 bytes, no `/`, no NUL or other control characters, not `.` or
/// `..`.
///
/// # Errors
/// [`Error::InvalidFilename`] with the reason.
pub fn validate_filename(filename: &str) -> Result<()> {
    let reason = if filename.is_empty() {
        Some("empty")
    } else if filename.len() > MAX_FILENAME_LEN {
        Some("longer than 255 bytes")
    } else if filename.contains('/') {
        Some("contains '/'")
    } else if filename.contains('\0') {
        Some("contains NUL")
    } else if filename.chars().any(char::is_control) {
        Some("contains a control character")
    } else if filename == "." || filename == ".." {
        Some("is '.' or '..'")
    } else {
        None
    };
    match reason {
        Some(reason) => {
            let mut end = filename.len().min(300);
            while !filename.is_char_boundary(end) {
                end -= 1;
            }
            Err(Error::InvalidFilename {
                filename: filename[..end].to_string(),
                reason,
            })
        }
        None => Ok(()),
    }
}

/// A point in time: milliseconds since the Unix epoch (UTC).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// From milliseconds since the epoch.
    pub fn from_unix_millis(ms: i64) -> Self {
        Timestamp(ms)
    }

    /// Milliseconds since the epoch.
    pub fn as_unix_millis(self) -> i64 {
        self.0
    }

    /// Whole seconds since the epoch (rounded down).
    pub fn as_unix_secs(self) -> i64 {
        self.0.div_euclid(1000)
    }

    /// The day since the epoch (UTC) this instant falls in.
    pub fn day(self) -> Day {
        Day(u32::try_from(self.0.div_euclid(86_400_000)).unwrap_or(0))
    }

    /// This instant plus `d` (saturating).
    pub fn plus(self, d: Duration) -> Self {
        Timestamp(
            self.0
                .saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
        )
    }

    /// This instant minus `d` (saturating).
    pub fn minus(self, d: Duration) -> Self {
        Timestamp(
            self.0
                .saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
        )
    }

    /// The time `clock` shows.
    pub fn from_clock<C: engine::Clock + ?Sized>(clock: &C) -> Self {
        Timestamp(clock.now_millis())
    }

    /// The current wall-clock time.
    pub fn now() -> Self {
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp(i64::try_from(since.as_millis()).unwrap_or(i64::MAX))
    }
}

/// A day since the Unix epoch (UTC), the unit of download counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Day(pub u32);

impl Day {
    /// The day of a calendar date (proleptic Gregorian, UTC), if it is on or after
    /// 1970-01-01.
    pub fn from_ymd(year: i64, month: u32, day: u32) -> Option<Day> {
        if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
            return None;
        }
        // Howard Hinnant's days_from_civil.
        let y = if month <= 2 { year - 1 } else { year };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let m = i64::from(month);
        let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        u32::try_from(era * 146_097 + doe - 719_468).ok().map(Day)
    }

    /// The calendar date of this day: (year, month, day).
    pub fn to_ymd(self) -> (i64, u32, u32) {
        // Howard Hinnant's civil_from_days.
        let z = i64::from(self.0) + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        (yoe + era * 400 + i64::from(m <= 2), m, d)
    }
}

fn days_in_month(year: i64, month: u32) -> u32 {
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// `YYYY-MM-DD`.
impl fmt::Display for Day {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, m, d) = self.to_ymd();
        write!(f, "{y:04}-{m:02}-{d:02}")
    }
}

/// Parses `YYYY-MM-DD` (from 1970-01-01).
impl FromStr for Day {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let parse = || -> Option<Day> {
            let bytes = s.as_bytes();
            if bytes.len() != 10 || bytes[4] != b'-' || bytes[7] != b'-' {
                return None;
            }
            let digits = |r: std::ops::Range<usize>| -> Option<u32> {
                let part = s.get(r)?;
                part.bytes()
                    .all(|b| b.is_ascii_digit())
                    .then(|| part.parse().ok())?
            };
            Day::from_ymd(i64::from(digits(0..4)?), digits(5..7)?, digits(8..10)?)
        };
        parse().ok_or_else(|| Error::Parse {
            what: "day (YYYY-MM-DD)",
            input: s.chars().take(100).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_hex_round_trips() {
        let h = Blake3Hash::of(b"abc");
        let parsed: Blake3Hash = h.to_string().parse().unwrap();
        assert_eq!(parsed, h);
        assert_eq!(format!("{h:#}").len(), 12);
        assert!("zz".parse::<Blake3Hash>().is_err());
        assert!(h.to_string()[..63].parse::<Blake3Hash>().is_err());
    }

    #[test]
    fn filenames() {
        assert!(validate_filename("a.tar.gz").is_ok());
        assert!(validate_filename("ünïcode ok").is_ok());
        assert!(validate_filename(&"x".repeat(255)).is_ok());
        for bad in ["", "a/b", "a\0b", "a\nb", "\u{7f}", "\u{85}", ".", ".."] {
            assert!(validate_filename(bad).is_err(), "{bad:?}");
        }
        assert!(validate_filename(&"x".repeat(256)).is_err());
    }

    #[test]
    fn bucket_names_and_ids() {
        assert!(BucketName::new("ppa:team/archive").is_ok());
        assert!(BucketName::new("").is_err());
        assert!(BucketName::new(".x").is_err());
        assert!(BucketName::new("a b").is_err());
        assert_eq!("42".parse::<FileId>().unwrap(), FileId(42));
        assert!("-1".parse::<FileId>().is_err());
        assert!("99999999999999999999".parse::<FileId>().is_err());
    }

    #[test]
    fn days() {
        assert_eq!(Timestamp(86_400_000 * 3 + 5).day(), Day(3));
        assert_eq!("1970-01-01".parse::<Day>().unwrap(), Day(0));
        assert_eq!("2026-12-05".parse::<Day>().unwrap(), Day(20_792));
        assert_eq!(Day(20_792).to_string(), "2026-12-05");
        assert_eq!(
            "2024-02-29".parse::<Day>().unwrap().to_string(),
            "2024-02-29"
        );
        for bad in [
            "2023-02-29",
            "1969-12-31",
            "2026-13-01",
            "2026-1-01",
            "+026-01-01",
            "x",
        ] {
            assert!(bad.parse::<Day>().is_err(), "{bad}");
        }
        for day in (0..40_000).step_by(97) {
            assert_eq!(Day(day).to_string().parse::<Day>().unwrap(), Day(day));
        }
    }
}
