//! An answer's bytes kept in a sealed memory file as well as in memory, so that the
//! connection loop before hyper (`fast_http.rs`) can hand them to the socket with `sendfile`:
//! the kernel then sends the file's own pages instead of copying the bytes from user memory
//! on every request, as nginx does for a static file. For large answers that are asked for
//! again and again (the directory's whole member list of a large team, 330 KB) the copy was
//! the difference to nginx (benches/servers/RESULTS.md, issue 18 part 3).
//!
//! The file is sealed against writes, growth and shrinking, so its bytes stay the ones in
//! [`SealedBody::bytes`] for as long as anyone holds it.

use std::fs::File;
use std::io::{self, Write as _};

use bytes::Bytes;
use rustix::fs::{MemfdFlags, SealFlags};

/// Bytes, and a sealed memory file holding the same bytes.
#[derive(Debug)]
pub struct SealedBody {
    bytes: Bytes,
    file: File,
}

impl SealedBody {
    /// A sealed copy of `bytes` (a memory file: not on any disk, gone with its last holder).
    pub fn new(bytes: Bytes) -> io::Result<SealedBody> {
        let fd =
            rustix::fs::memfd_create("answer", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)?;
        let mut file = File::from(fd);
        file.write_all(&bytes)?;
        rustix::fs::fcntl_add_seals(
            &file,
            SealFlags::WRITE | SealFlags::GROW | SealFlags::SHRINK | SealFlags::SEAL,
        )?;
        Ok(SealedBody { bytes, file })
    }

    /// The bytes, in memory.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The sealed file holding [`Self::bytes`], from offset 0.
    pub fn file(&self) -> &File {
        &self.file
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read as _, Seek as _, SeekFrom};

    use super::*;

    #[test]
    fn the_file_holds_the_bytes_and_refuses_changes() {
        let bytes = Bytes::from(
            (0..100_000u32)
                .flat_map(u32::to_le_bytes)
                .collect::<Vec<_>>(),
        );
        let body = SealedBody::new(bytes.clone()).unwrap();
        assert_eq!(body.bytes(), &bytes);
        let mut file = body.file();
        file.seek(SeekFrom::Start(0)).unwrap();
        let mut read = Vec::new();
        file.read_to_end(&mut read).unwrap();
        assert_eq!(read, bytes);
        file.seek(SeekFrom::Start(0)).unwrap();
        assert!(file.write_all(b"changed").is_err(), "sealed against writes");
        assert!(file.set_len(10).is_err(), "sealed against shrinking");
        assert!(file.set_len(1 << 20).is_err(), "sealed against growth");
    }
}
