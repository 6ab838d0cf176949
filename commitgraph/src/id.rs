//! Commit ids and repository ids.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher};
use std::str::FromStr;

/// A commit id: the raw bytes of a SHA-1 (20 bytes, 40 hex digits) or SHA-256 (32 bytes, 64 hex
/// digits) object name. Stored and compared as raw bytes; shown as lowercase hex.
///
/// `Hash` feeds only the first 16 bytes (ids are cryptographic hashes already) as two `u64`s;
/// the crate's id maps mix them with per-process random keys, so crafted ids cannot aim at
/// one bucket.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
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

    /// The id of bytes that were a valid id when stored (20 or 32 of them, as the crate's
    /// own tables hold them); other lengths are cut or padded, never a panic.
    pub(crate) fn from_stored(bytes: &[u8]) -> Self {
        let len = bytes.len().min(32);
        let mut id = CommitId {
            len: len as u8,
            bytes: [0; 32],
        };
        id.bytes[..len].copy_from_slice(&bytes[..len]);
        id
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
        hex::decode_to_slice(raw, &mut id.bytes[..raw.len() / 2]).map_err(|error| match error {
            // The hex crate names the offending byte as a char (`byte as char`): undo that.
            hex::FromHexError::InvalidHexCharacter { c, index } => ParseIdError::NotHex {
                byte: u8::try_from(u32::from(c)).unwrap_or(u8::MAX),
                offset: index,
            },
            // The length was checked above.
            hex::FromHexError::OddLength | hex::FromHexError::InvalidStringLength => {
                ParseIdError::Length { len: raw.len() }
            }
        })?;
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

impl Hash for CommitId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let (head, tail) = self.bytes.split_at(8);
        state.write_u64(u64::from_le_bytes(head.try_into().unwrap_or_default()));
        state.write_u64(u64::from_le_bytes(tail[..8].try_into().unwrap_or_default()));
    }
}

/// A keyed hasher for [`CommitId`] maps: a folded 128-bit multiply per `u64` written, with
/// random keys drawn once per map from the standard library's `RandomState`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct IdHashBuilder {
    k0: u64,
    k1: u64,
}

impl Default for IdHashBuilder {
    fn default() -> Self {
        let random = std::collections::hash_map::RandomState::new();
        IdHashBuilder {
            k0: random.hash_one(0x51u8),
            k1: random.hash_one(0xA7u8) | 1,
        }
    }
}

impl BuildHasher for IdHashBuilder {
    type Hasher = IdHasher;

    fn build_hasher(&self) -> IdHasher {
        IdHasher {
            state: self.k0,
            key: self.k1,
        }
    }
}

/// The hasher of [`IdHashBuilder`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct IdHasher {
    state: u64,
    key: u64,
}

impl IdHasher {
    #[inline]
    fn mix(&mut self, value: u64) {
        let product = u128::from(self.state ^ value) * u128::from(self.key);
        self.state = (product as u64) ^ ((product >> 64) as u64);
    }
}

impl Hasher for IdHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.mix(u64::from_le_bytes(word));
        }
    }

    #[inline]
    fn write_u64(&mut self, value: u64) {
        self.mix(value);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.state
    }
}

/// A map keyed by commit ids.
pub(crate) type IdMap<V> = HashMap<CommitId, V, IdHashBuilder>;

impl fmt::Display for CommitId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut digits = [0u8; 64];
        let digits = &mut digits[..2 * self.as_bytes().len()];
        // Cannot fail: the buffer is exactly twice the id's length.
        hex::encode_to_slice(self.as_bytes(), digits).map_err(|_| fmt::Error)?;
        f.write_str(std::str::from_utf8(digits).map_err(|_| fmt::Error)?)
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

/// As its hex form.
impl serde::Serialize for CommitId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// From its hex form (40 or 64 digits).
impl<'de> serde::Deserialize<'de> for CommitId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        CommitId::parse_hex(&text).map_err(serde::de::Error::custom)
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
