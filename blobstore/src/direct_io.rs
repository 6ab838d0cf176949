//! Writing a temporary blob file with `O_DIRECT`, from an aligned staging buffer.
//!
//! Why: on the 2-core machine the store was measured on, the kernel's copy of each written
//! byte into the page cache cost more CPU than SHA-256 itself (`DESIGN.md`, "Ingest of one
//! 256 MiB upload"), and the final fsync then had to write all of those pages back. With
//! `O_DIRECT` the device takes the bytes straight from the staging buffer, so the writer
//! thread mostly waits for the device while the hashing threads have the cores. The one copy
//! left, into the staging buffer, stays within the CPU's caches.
//!
//! `O_DIRECT` wants the buffer's address, the file offset and the length to be multiples of
//! the device's logical block size; [`ALIGN`] (4 KiB) is a multiple of every common one. The
//! last, partial block is written padded with zeros and the file is then cut back to its
//! length (`ftruncate`), before the caller's fsync. A filesystem that refuses `O_DIRECT` when
//! the file is opened, or on a write (`EINVAL`), gets ordinary buffered writes from the same
//! offset instead. `O_DIRECT` does not make anything durable: the caller still fsyncs.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The alignment of the staging buffer, of every write's offset and of its length.
pub(crate) const ALIGN: usize = 4096;

/// The bytes gathered before one `O_DIRECT` write. Larger writes cost fewer system calls and
/// keep the device busier, but every upload in flight holds one such buffer: at 1 MiB, 200
/// concurrent uploads kept the librarian above its 512 MiB budget (621 MiB peak); the
/// uploader's chunks are 256 KiB.
pub(crate) const STAGING_SIZE: usize = 512 << 10;

/// A zeroed buffer of `len` bytes whose start is aligned to [`ALIGN`], cut out of a `Vec`
/// that is [`ALIGN`] bytes longer (no `unsafe` allocation with a layout needed).
struct AlignedBuffer {
    storage: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuffer {
    fn new(len: usize) -> Self {
        let storage = vec![0u8; len + ALIGN];
        let start = storage.as_ptr().align_offset(ALIGN);
        assert!(start < ALIGN, "a byte pointer can always be aligned");
        AlignedBuffer {
            storage,
            start,
            len,
        }
    }

    fn as_slice(&self) -> &[u8] {
        &self.storage[self.start..self.start + self.len]
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.storage[self.start..self.start + self.len]
    }
}

/// While writing through the page cache, write-back of each completed step of this many bytes
/// is started at once, so that the final fsync finds little left to write.
pub(crate) const WRITEBACK_STEP: u64 = 8 << 20;

/// A new file written with `O_DIRECT` where the filesystem allows it.
pub(crate) struct DirectFile {
    file: File,
    path: PathBuf,
    /// Whether `file` was opened with `O_DIRECT` (false after a fallback).
    direct: bool,
    /// Present when writes go through the staging buffer (the file was opened `O_DIRECT`).
    staging: Option<AlignedBuffer>,
    /// Bytes in the staging buffer not yet written.
    staged: usize,
    /// Bytes written to the file so far, padding included.
    position: u64,
    /// Bytes accepted from the caller: the file's final length.
    len: u64,
    /// Where the write-back started by [`DirectFile::start_writeback`] ends.
    writeback_from: u64,
}

impl std::fmt::Debug for DirectFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectFile")
            .field("path", &self.path)
            .field("direct", &self.direct)
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

fn is_einval(error: &io::Error) -> bool {
    error.raw_os_error() == Some(libc::EINVAL)
}

impl DirectFile {
    /// Creates `path`, which must not exist; with `O_DIRECT` if `direct` and the filesystem
    /// accepts it, otherwise for ordinary buffered writes.
    pub(crate) fn create_new(path: &Path, direct: bool) -> io::Result<Self> {
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        let (file, direct) = if direct {
            match options.clone().custom_flags(libc::O_DIRECT).open(path) {
                Ok(file) => (file, true),
                // Some kernels create the file before refusing the flag: open what is there.
                Err(error) if is_einval(&error) => (
                    OpenOptions::new()
                        .write(true)
                        .create(true)
                        .truncate(true)
                        .open(path)?,
                    false,
                ),
                Err(error) => return Err(error),
            }
        } else {
            (options.open(path)?, false)
        };
        Ok(DirectFile {
            file,
            path: path.to_path_buf(),
            direct,
            staging: None,
            staged: 0,
            position: 0,
            len: 0,
            writeback_from: 0,
        })
    }

    /// Opens the existing file `path` to write from `offset` on (an append to a partial
    /// upload), with `O_DIRECT` if `direct` and the filesystem accepts it. `O_DIRECT` writes
    /// start on a block boundary, so the bytes of `offset`'s block before it are read back
    /// into the staging buffer and written again with what follows: the same bytes over
    /// themselves, so a crash that tears that write leaves them as they were. The file must
    /// be at least `offset` long; [`DirectFile::finish`] cuts it to the last byte written.
    pub(crate) fn open_at(path: &Path, offset: u64, direct: bool) -> io::Result<Self> {
        let opened = if direct {
            match OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_DIRECT)
                .open(path)
            {
                Ok(file) => Some(file),
                Err(error) if is_einval(&error) => None,
                Err(error) => return Err(error),
            }
        } else {
            None
        };
        let Some(mut file) = opened else {
            let mut file = OpenOptions::new().write(true).open(path)?;
            file.seek(SeekFrom::Start(offset))?;
            return Ok(DirectFile {
                file,
                path: path.to_path_buf(),
                direct: false,
                staging: None,
                staged: 0,
                position: offset,
                len: offset,
                writeback_from: offset - offset % WRITEBACK_STEP,
            });
        };
        let head = offset % ALIGN as u64;
        let start = offset - head;
        let mut staging = AlignedBuffer::new(STAGING_SIZE);
        if head > 0 {
            use std::os::unix::fs::FileExt as _;
            // Read through the page cache: the kernel keeps it coherent with direct writes.
            File::open(path)?.read_exact_at(&mut staging.as_mut_slice()[..head as usize], start)?;
        }
        file.seek(SeekFrom::Start(start))?;
        Ok(DirectFile {
            file,
            path: path.to_path_buf(),
            direct: true,
            staging: Some(staging),
            staged: head as usize,
            position: start,
            len: offset,
            writeback_from: start,
        })
    }

    /// Whether writes currently bypass the page cache.
    #[cfg(test)]
    pub(crate) fn is_direct(&self) -> bool {
        self.direct
    }

    /// For buffered writes: starts the write-back of every complete [`WRITEBACK_STEP`] written
    /// since the last call, without waiting for it. `POSIX_FADV_DONTNEED` is Linux's one
    /// safe-to-call way to do that (it starts write-back of the range's dirty pages, like
    /// `sync_file_range(SYNC_FILE_RANGE_WRITE)`, and drops the pages already clean), and it
    /// keeps a large upload from filling the page cache. It is advice: a failure loses
    /// nothing, because the fsync that follows writes whatever is still dirty and reports
    /// any error.
    fn start_writeback(&mut self) {
        let end = self.position - self.position % WRITEBACK_STEP;
        if end > self.writeback_from {
            // One step back as well: its pages have been written back meanwhile and can go.
            let from = self.writeback_from.saturating_sub(WRITEBACK_STEP);
            let _ = rustix::fs::fadvise(
                &self.file,
                from,
                std::num::NonZeroU64::new(end - from),
                rustix::fs::Advice::DontNeed,
            );
            self.writeback_from = end;
        }
    }

    /// Reopens the file for buffered writes at the current offset, after the filesystem
    /// refused an `O_DIRECT` write.
    fn fall_back_to_buffered(&mut self, offset: u64) -> io::Result<()> {
        let mut file = OpenOptions::new().write(true).open(&self.path)?;
        file.seek(SeekFrom::Start(offset))?;
        self.file = file;
        self.direct = false;
        Ok(())
    }

    /// Writes `data` (from the staging buffer: aligned, and a multiple of [`ALIGN`] long,
    /// while the file is `O_DIRECT`) at the current position, falling back to buffered writes if the
    /// filesystem refuses it.
    fn write_fully(&mut self, data: &[u8]) -> io::Result<()> {
        let mut done = 0;
        while done < data.len() {
            match self.file.write(&data[done..]) {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
                Ok(n) => done += n,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) if self.direct && is_einval(&error) => {
                    self.fall_back_to_buffered(self.position + done as u64)?;
                }
                Err(error) => return Err(error),
            }
        }
        self.position += data.len() as u64;
        Ok(())
    }

    /// Writes the first `end` bytes of the staging buffer and empties it.
    fn write_staged(&mut self, end: usize) -> io::Result<()> {
        let staging = self.staging.take().expect("staged bytes have a buffer");
        let result = self.write_fully(&staging.as_slice()[..end]);
        self.staging = Some(staging);
        result?;
        self.staged = 0;
        Ok(())
    }

    /// Writes what is still staged (its last block padded with zeros, then cut off again) and
    /// returns the file, ready for `fsync`.
    ///
    /// # Errors
    /// The write's or the truncation's error.
    pub(crate) fn finish(mut self) -> io::Result<File> {
        if self.staged > 0 {
            let padded = self.staged.next_multiple_of(ALIGN);
            let staged = self.staged;
            if let Some(staging) = &mut self.staging {
                staging.as_mut_slice()[staged..padded].fill(0);
            }
            self.write_staged(padded)?;
        }
        if self.position != self.len {
            self.file.set_len(self.len)?;
        }
        Ok(self.file)
    }
}

impl Write for DirectFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !self.direct && self.staging.is_none() {
            let n = self.file.write(buf)?;
            self.len += n as u64;
            self.position += n as u64;
            self.start_writeback();
            return Ok(n);
        }
        // A full buffer is written before more is taken, so that a failed write consumes
        // nothing of `buf`.
        if self.staged == STAGING_SIZE {
            self.write_staged(STAGING_SIZE)?;
        }
        let staging = self
            .staging
            .get_or_insert_with(|| AlignedBuffer::new(STAGING_SIZE));
        let n = buf.len().min(STAGING_SIZE - self.staged);
        staging.as_mut_slice()[self.staged..self.staged + n].copy_from_slice(&buf[..n]);
        self.staged += n;
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 4099) as u8).collect()
    }

    fn write_in_pieces(file: &mut DirectFile, data: &[u8], piece: usize) {
        for part in data.chunks(piece) {
            file.write_all(part).unwrap();
        }
    }

    #[test]
    fn aligned_buffer_is_aligned() {
        for len in [ALIGN, STAGING_SIZE, 3 * ALIGN] {
            let mut buffer = AlignedBuffer::new(len);
            assert_eq!(buffer.as_slice().as_ptr().align_offset(ALIGN), 0);
            assert_eq!(buffer.as_mut_slice().len(), len);
        }
    }

    #[test]
    fn reads_back_every_length_and_piece_size() {
        let dir = tempfile::tempdir().unwrap();
        let lengths = [
            0,
            1,
            ALIGN - 1,
            ALIGN,
            ALIGN + 1,
            STAGING_SIZE - 1,
            STAGING_SIZE,
            STAGING_SIZE + 1,
            3 * STAGING_SIZE + 12_345,
        ];
        for direct in [true, false] {
            for (i, &len) in lengths.iter().enumerate() {
                for piece in [1000, 256 * 1024, STAGING_SIZE + 17] {
                    let data = pattern(len);
                    let path = dir.path().join(format!("{direct}-{i}-{piece}"));
                    let mut file = DirectFile::create_new(&path, direct).unwrap();
                    write_in_pieces(&mut file, &data, piece);
                    let file = file.finish().unwrap();
                    file.sync_all().unwrap();
                    drop(file);
                    let back = std::fs::read(&path).unwrap();
                    assert_eq!(back.len(), len, "{path:?}");
                    assert!(back == data, "{path:?}: content differs");
                }
            }
        }
    }

    #[test]
    fn appends_at_every_offset_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let data = pattern(3 * STAGING_SIZE + 5_000);
        let cuts = [
            0,
            1,
            ALIGN - 1,
            ALIGN,
            ALIGN + 1,
            STAGING_SIZE - 3,
            STAGING_SIZE + ALIGN,
            2 * STAGING_SIZE + 777,
            data.len(),
        ];
        for direct in [true, false] {
            let path = dir.path().join(format!("append-{direct}"));
            std::fs::write(&path, b"").unwrap();
            for pair in cuts.windows(2) {
                let (from, to) = (pair[0], pair[1]);
                let mut file = DirectFile::open_at(&path, from as u64, direct).unwrap();
                write_in_pieces(&mut file, &data[from..to], 70_000);
                file.finish().unwrap().sync_data().unwrap();
                let back = std::fs::read(&path).unwrap();
                assert_eq!(back.len(), to, "{path:?} after {to}");
                assert!(back == data[..to], "{path:?}: content differs after {to}");
            }
        }
    }

    #[test]
    fn create_new_refuses_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("taken");
        std::fs::write(&path, b"old").unwrap();
        for direct in [true, false] {
            let error = DirectFile::create_new(&path, direct).unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::AlreadyExists);
        }
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
    }

    #[test]
    fn falls_back_to_buffered_writes_mid_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fallback");
        let mut file = DirectFile::create_new(&path, true).unwrap();
        let data = pattern(2 * STAGING_SIZE + 777);
        write_in_pieces(&mut file, &data[..STAGING_SIZE + 5], 4096);
        // As after an EINVAL from the filesystem: the rest goes through the page cache.
        let offset = file.position;
        file.fall_back_to_buffered(offset).unwrap();
        assert!(!file.is_direct());
        write_in_pieces(&mut file, &data[STAGING_SIZE + 5..], 999);
        file.finish().unwrap().sync_all().unwrap();
        assert!(std::fs::read(&path).unwrap() == data, "content differs");
    }
}
