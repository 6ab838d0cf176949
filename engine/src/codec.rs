//! Byte-level pieces of the stores' binary values (file records, change-feed events): a
//! cursor that reads big-endian integers and length-prefixed strings from the front of a byte
//! string, and the matching writer of a string. Each store keeps its own layout on top.

/// A cursor over a byte string: each read takes what it needs from the front, or answers
/// `None` when too few bytes are left (or they do not decode), so a malformed value is refused
/// rather than misread.
#[derive(Clone, Copy, Debug)]
pub struct ByteReader<'a> {
    rest: &'a [u8],
}

impl<'a> ByteReader<'a> {
    /// A cursor at the start of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        ByteReader { rest: bytes }
    }

    /// Whether every byte was read (a value with bytes left over is malformed).
    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// The next `n` bytes.
    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.rest.split_at_checked(n)?;
        self.rest = rest;
        Some(head)
    }

    /// The next `N` bytes as an array.
    pub fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    /// One byte.
    pub fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    /// A byte that must be 0 (false) or 1 (true).
    pub fn bool(&mut self) -> Option<bool> {
        match self.u8()? {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        }
    }

    /// A big-endian `u64`.
    pub fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_be_bytes)
    }

    /// A big-endian `i64`.
    pub fn i64(&mut self) -> Option<i64> {
        self.array().map(i64::from_be_bytes)
    }

    /// UTF-8 prefixed by its length as a big-endian `u32` (as [`put_string`] writes it).
    pub fn string(&mut self) -> Option<String> {
        let len = usize::try_from(u32::from_be_bytes(self.array()?)).ok()?;
        self.utf8(len)
    }

    /// UTF-8 prefixed by its length as a big-endian `u16`, for values whose strings are
    /// known to be short.
    pub fn short_string(&mut self) -> Option<String> {
        let len = u16::from_be_bytes(self.array()?);
        self.utf8(usize::from(len))
    }

    /// A value behind a presence flag ([`ByteReader::bool`]): `Some(None)` when absent.
    pub fn option<T>(&mut self, read: impl FnOnce(&mut Self) -> Option<T>) -> Option<Option<T>> {
        if self.bool()? {
            read(self).map(Some)
        } else {
            Some(None)
        }
    }

    fn utf8(&mut self, len: usize) -> Option<String> {
        String::from_utf8(self.take(len)?.to_vec()).ok()
    }
}

/// Appends `s` prefixed by its length as a big-endian `u32` (read back by
/// [`ByteReader::string`]). Names, actors and the like are far below 4 GiB.
pub fn put_string(out: &mut Vec<u8>, s: &str) {
    let len = u32::try_from(s.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_was_written_and_refuses_short_or_bad_input() {
        let mut out = vec![1, 0];
        out.extend_from_slice(&7u64.to_be_bytes());
        out.extend_from_slice(&(-2i64).to_be_bytes());
        put_string(&mut out, "é");
        out.extend_from_slice(&[0, 2, b'o', b'k']);
        let mut r = ByteReader::new(&out);
        assert_eq!(r.option(ByteReader::u8), Some(Some(0)));
        assert_eq!((r.u64(), r.i64()), (Some(7), Some(-2)));
        assert_eq!(r.string().as_deref(), Some("é"));
        assert_eq!(r.short_string().as_deref(), Some("ok"));
        assert!(r.is_empty());
        assert_eq!(r.u8(), None);
        assert_eq!(ByteReader::new(&[2]).bool(), None);
        assert_eq!(ByteReader::new(&[0, 0, 0, 1, 0xff]).string(), None);
        assert_eq!(ByteReader::new(&[0, 0, 0, 9, b'a']).string(), None);
    }
}
