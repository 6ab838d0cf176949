//! The on-disk form of counters: a signed 64-bit integer, 8 bytes big-endian.
//!
//! Counters are changed only by [`crate::WriteBatch::counter_add`]; a key holds either a
//! counter or a plain value, never both over its life.

/// The bytes of a counter holding `value`.
pub fn encode(value: i64) -> [u8; 8] {
    value.to_be_bytes()
}

/// The counter held in `bytes`, or `None` when they are not 8 bytes long.
pub fn decode(bytes: &[u8]) -> Option<i64> {
    Some(i64::from_be_bytes(bytes.try_into().ok()?))
}

/// `existing + delta`, wrapping; an absent or malformed existing value counts as 0 only when
/// absent (a malformed one gives `None`).
pub(crate) fn add(existing: Option<&[u8]>, delta: i64) -> Option<i64> {
    let current = match existing {
        None => 0,
        Some(bytes) => decode(bytes)?,
    };
    Some(current.wrapping_add(delta))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_extremes() {
        for value in [i64::MIN, -1, 0, 1, i64::MAX] {
            assert_eq!(decode(&encode(value)), Some(value));
        }
        assert_eq!(decode(&[1, 2, 3]), None);
    }

    #[test]
    fn add_wraps_and_rejects_malformed() {
        assert_eq!(add(None, 5), Some(5));
        assert_eq!(add(Some(&encode(i64::MAX)), 1), Some(i64::MIN));
        assert_eq!(add(Some(b"xyz"), 1), None);
    }
}
