//! Commit ids and repository ids.

use std::fmt;
use std::str::FromStr;

/// A commit id: the raw bytes of a SHA-1 (20 bytes, 40 hex digits) or SHA-256 (32 bytes, 64 hex
/// digits) object name. Stored and compared as raw bytes; shown as lowercase hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CommitId {
    len: u8,
    bytes: [u8; 32],
}

/// Why a string is not a commit id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseIdError {
    /// The string is neither 40 nor 64 characters long.
    #[error("a commit id has 40 or 64 hex digits, not {len}")]
    Length {
        /// The length found, in bytes.
        len: usize,
    },
    /// A character is not a hex digit.
    #[error("byte {byte:#04x} at offset {offset} is not a hex digit")]
    NotHex {
        /// The offending byte.
        byte: u8,
        /// Its offset in the string.
        offset: usize,
    },
}

impl CommitId {
    /// The id with these raw bytes, when there are 20 or 32 of them.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != 20 && bytes.len() != 32 {
            return None;
        }
        let mut id = CommitId {
            len: bytes.len() as u8,
            bytes: [0; 32],
        };
        id.bytes[..bytes.len()].copy_from_slice(bytes);
        Some(id)
    }

    /// Parses 40 or 64 hex digits (either case).
    ///
    /// # Errors
    /// [`ParseIdError`] when the length or a digit is wrong.
    pub fn parse_hex(hex: &str) -> Result<Self, ParseIdError> {
        let raw = hex.as_bytes();
        if raw.len() != 40 && raw.len() != 64 {
            return Err(ParseIdError::Length { len: raw.len() });
        }
        let mut id = CommitId {
            len: (raw.len() / 2) as u8,
            bytes: [0; 32],
        };
        for (i, pair) in raw.chunks_exact(2).enumerate() {
            let hi = hex_value(pair[0]).ok_or(ParseIdError::NotHex {
                byte: pair[0],
                offset: 2 * i,
            })?;
            let lo = hex_value(pair[1]).ok_or(ParseIdError::NotHex {
                byte: pair[1],
                offset: 2 * i + 1,
            })?;
            id.bytes[i] = hi << 4 | lo;
        }
        Ok(id)
    }

    /// The raw bytes (20 or 32).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// The first 7 hex digits, as `git log --oneline` shows them.
    pub fn short(&self) -> String {
        let mut s = self.to_string();
        s.truncate(7);
        s
    }
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

impl fmt::Display for CommitId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.as_bytes() {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for CommitId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CommitId({self})")
    }
}

impl FromStr for CommitId {
    type Err = ParseIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CommitId::parse_hex(s)
    }
}

/// A repository, as numbered by the directory service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoId(pub u64);

impl fmt::Display for RepoId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "repo#{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_errors() {
        let hex = "0123456789abcdef0123456789ABCDEF01234567";
        let id: CommitId = hex.parse().unwrap();
        assert_eq!(id.to_string(), hex.to_lowercase());
        assert_eq!(id.as_bytes().len(), 20);
        assert_eq!(id.short(), "0123456");
        assert_eq!(CommitId::from_bytes(id.as_bytes()), Some(id));
        let long = "ab".repeat(32);
        assert_eq!(CommitId::parse_hex(&long).unwrap().as_bytes().len(), 32);
        assert_eq!(
            CommitId::parse_hex("abc"),
            Err(ParseIdError::Length { len: 3 })
        );
        let bad = format!("{}g", &hex[..39]);
        assert_eq!(
            CommitId::parse_hex(&bad),
            Err(ParseIdError::NotHex {
                byte: b'g',
                offset: 39
            })
        );
        assert_eq!(CommitId::from_bytes(&[0; 21]), None);
        // Multi-byte UTF-8 of the right byte length must not panic.
        assert!(CommitId::parse_hex(&"é".repeat(20)).is_err());
    }
}
