//! Key encodings whose byte order is the logical order.
//!
//! RocksDB, sled and the in-memory model all sort keys as unsigned byte strings. The helpers
//! here encode values so that this byte order equals the values' natural order:
//!
//! | value            | encoding                                                         |
//! |------------------|------------------------------------------------------------------|
//! | `u8`             | the byte                                                         |
//! | `u32`, `u64`     | big-endian, fixed width                                          |
//! | `i64`            | big-endian with the sign bit flipped (so -1 sorts before 0)      |
//! | byte string      | each `0x00` written as `0x00 0xFF`, then the terminator `0x00 0x01` |
//! | last byte string | raw (only as the final component: it needs no terminator)        |
//!
//! The escaped form keeps order *and* lets a variable-length component be followed by others:
//! `"ab"` encodes as `61 62 00 01`, which sorts before `"ab\0"` (`61 62 00 FF 00 01`) and
//! `"abc"` (`61 62 63 00 01`), as the strings do. Build composite keys with [`KeyBuilder`] and
//! take them apart with [`KeyReader`]:
//!
//! ```
//! use engine::keys::{KeyBuilder, KeyReader};
//!
//! let key = KeyBuilder::new().u8(b'f').str("archive").u64(42).finish();
//! let mut reader = KeyReader::new(&key);
//! assert_eq!(reader.u8(), Some(b'f'));
//! assert_eq!(reader.string().as_deref(), Some("archive"));
//! assert_eq!(reader.u64(), Some(42));
//! assert!(reader.is_empty());
//! ```

/// The smallest key greater than every key that starts with `prefix`, or `None` when there is
/// none (the prefix is empty or all `0xFF`): the exclusive end of a prefix scan.
pub fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// The smallest key greater than `key`: `key` followed by a zero byte. Use it to resume a scan
/// just after the last key seen.
pub fn successor(key: &[u8]) -> Vec<u8> {
    let mut next = Vec::with_capacity(key.len() + 1);
    next.extend_from_slice(key);
    next.push(0);
    next
}

/// `value` as 8 bytes that sort like the signed integers.
pub fn i64_to_ordered(value: i64) -> [u8; 8] {
    ((value as u64) ^ (1 << 63)).to_be_bytes()
}

/// The inverse of [`i64_to_ordered`].
pub fn i64_from_ordered(bytes: [u8; 8]) -> i64 {
    (u64::from_be_bytes(bytes) ^ (1 << 63)) as i64
}

const ESCAPE: u8 = 0x00;
const ESCAPED_ZERO: u8 = 0xFF;
const TERMINATOR: u8 = 0x01;

/// Builds a composite key, component by component.
#[derive(Clone, Debug, Default)]
pub struct KeyBuilder {
    bytes: Vec<u8>,
}

impl KeyBuilder {
    /// An empty key.
    pub fn new() -> Self {
        KeyBuilder::default()
    }

    /// Appends one byte (a tag that separates kinds of records).
    pub fn u8(mut self, value: u8) -> Self {
        self.bytes.push(value);
        self
    }

    /// Appends a `u32`, big-endian.
    pub fn u32(mut self, value: u32) -> Self {
        self.bytes.extend_from_slice(&value.to_be_bytes());
        self
    }

    /// Appends a `u64`, big-endian.
    pub fn u64(mut self, value: u64) -> Self {
        self.bytes.extend_from_slice(&value.to_be_bytes());
        self
    }

    /// Appends an `i64` in the order-preserving form.
    pub fn i64(mut self, value: i64) -> Self {
        self.bytes.extend_from_slice(&i64_to_ordered(value));
        self
    }

    /// Appends a byte string, escaped and terminated, so that more components may follow.
    pub fn bytes(mut self, value: &[u8]) -> Self {
        for &byte in value {
            self.bytes.push(byte);
            if byte == ESCAPE {
                self.bytes.push(ESCAPED_ZERO);
            }
        }
        self.bytes.push(ESCAPE);
        self.bytes.push(TERMINATOR);
        self
    }

    /// Appends a string, escaped and terminated.
    pub fn str(self, value: &str) -> Self {
        self.bytes(value.as_bytes())
    }

    /// Appends bytes as they are: only for the last component, or fixed-width ones such as
    /// hashes.
    pub fn raw(mut self, value: &[u8]) -> Self {
        self.bytes.extend_from_slice(value);
        self
    }

    /// The key.
    pub fn finish(self) -> Vec<u8> {
        self.bytes
    }
}

/// Takes apart a key made by [`KeyBuilder`]; each method returns `None` when the key does not
/// hold a well-formed component of that kind at the current position.
#[derive(Clone, Debug)]
pub struct KeyReader<'a> {
    rest: &'a [u8],
}

impl<'a> KeyReader<'a> {
    /// A reader at the start of `key`.
    pub fn new(key: &'a [u8]) -> Self {
        KeyReader { rest: key }
    }

    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.rest.split_first_chunk::<N>()?;
        self.rest = rest;
        Some(*head)
    }

    /// Reads one byte.
    pub fn u8(&mut self) -> Option<u8> {
        self.take::<1>().map(|[byte]| byte)
    }

    /// Reads a big-endian `u32`.
    pub fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_be_bytes)
    }

    /// Reads a big-endian `u64`.
    pub fn u64(&mut self) -> Option<u64> {
        self.take().map(u64::from_be_bytes)
    }

    /// Reads an order-preserving `i64`.
    pub fn i64(&mut self) -> Option<i64> {
        self.take().map(i64_from_ordered)
    }

    /// Reads an escaped, terminated byte string.
    pub fn bytes(&mut self) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        let mut index = 0;
        loop {
            let byte = *self.rest.get(index)?;
            if byte == ESCAPE {
                match *self.rest.get(index + 1)? {
                    ESCAPED_ZERO => out.push(0),
                    TERMINATOR => {
                        self.rest = &self.rest[index + 2..];
                        return Some(out);
                    }
                    _ => return None,
                }
                index += 2;
            } else {
                out.push(byte);
                index += 1;
            }
        }
    }

    /// Reads an escaped, terminated UTF-8 string.
    pub fn string(&mut self) -> Option<String> {
        String::from_utf8(self.bytes()?).ok()
    }

    /// Reads `n` raw bytes.
    pub fn raw(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.rest.len() < n {
            return None;
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Some(head)
    }

    /// The bytes not read yet.
    pub fn rest(&self) -> &'a [u8] {
        self.rest
    }

    /// Whether everything was read.
    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn prefix_successor_carries_over_ff() {
        assert_eq!(prefix_successor(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_successor(&[1, 0xFF, 0xFF]), Some(vec![2]));
        assert_eq!(prefix_successor(&[0xFF]), None);
        assert_eq!(prefix_successor(b""), None);
    }

    #[test]
    fn malformed_escape_is_rejected() {
        assert_eq!(KeyReader::new(&[b'a', 0x00, 0x05]).bytes(), None);
        assert_eq!(KeyReader::new(b"a").bytes(), None);
        assert_eq!(KeyReader::new(&[1, 2, 3]).u64(), None);
    }

    proptest! {
        #[test]
        fn i64_order_is_byte_order(a: i64, b: i64) {
            prop_assert_eq!(a.cmp(&b), i64_to_ordered(a).cmp(&i64_to_ordered(b)));
            prop_assert_eq!(i64_from_ordered(i64_to_ordered(a)), a);
        }

        #[test]
        fn u64_order_is_byte_order(a: u64, b: u64) {
            let ka = KeyBuilder::new().u64(a).finish();
            let kb = KeyBuilder::new().u64(b).finish();
            prop_assert_eq!(a.cmp(&b), ka.cmp(&kb));
        }

        #[test]
        fn composite_order_is_tuple_order(
            a in (proptest::collection::vec(any::<u8>(), 0..8), any::<u32>()),
            b in (proptest::collection::vec(any::<u8>(), 0..8), any::<u32>()),
        ) {
            let ka = KeyBuilder::new().bytes(&a.0).u32(a.1).finish();
            let kb = KeyBuilder::new().bytes(&b.0).u32(b.1).finish();
            prop_assert_eq!(a.cmp(&b), ka.cmp(&kb));
            let mut reader = KeyReader::new(&ka);
            prop_assert_eq!(reader.bytes(), Some(a.0.clone()));
            prop_assert_eq!(reader.u32(), Some(a.1));
            prop_assert!(reader.is_empty());
        }
    }
}
