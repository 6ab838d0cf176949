//! The bytes of one append to a resumable upload, read, hashed and written on threads beside
//! each other, as a streamed upload's are (`writer.rs`, `hashing.rs`): the body is read and
//! hashed with BLAKE3 (and the tus checksum) on the calling thread, each other digest
//! (SHA-256, and SHA-1 and MD5 when kept) on a thread of its own, and the bytes go to the
//! partial file from an aligned staging buffer with `O_DIRECT` on another (`direct_io.rs`).
//! Before, each 1 MiB piece was read, then hashed beside its buffered write (SHA-256, SHA-1
//! and MD5 one after another on one thread started for the piece), then joined, and the
//! fsync waited for the page cache's write-back of the whole append (`DESIGN.md`, "Figures
//! of issue 17").

use std::fs::File;
use std::io::{self, Read, Write};
use std::sync::mpsc::sync_channel;
use std::sync::Arc;

use crate::direct_io::DirectFile;
use crate::resumable::{ChecksumHasher, PrefixHasher};

use super::CHUNK_SIZE;

/// Pieces queued for the writer and for each other digest: two keep each busy, as for a
/// streamed upload; each one more is a [`CHUNK_SIZE`] buffer per append in flight.
const QUEUE: usize = 2;

/// What the bytes of an append came to.
pub(super) struct Appended {
    /// Bytes read, hashed and written.
    pub received: u64,
    /// Whether the body failed before its end (a client gone).
    pub interrupted: bool,
    /// The written file, to be fsynced (`None` when nothing was written).
    pub file: Option<File>,
}

/// Why an append's bytes were not all written.
pub(super) enum Failure {
    /// The body went past the room left (the upload's length).
    PastLength,
    /// A write failed, or no thread could be started.
    Io(&'static str, io::Error),
}

/// Reads `body` to its end (or its failure), hashing it into `prefix` and `check` and writing
/// it through `file`, of which at most `room` bytes are accepted. On a failure the digests
/// and the file hold part of the body: the caller restores both.
pub(super) fn append_body(
    file: DirectFile,
    room: u64,
    body: &mut dyn Read,
    prefix: &mut PrefixHasher,
    mut check: Option<&mut ChecksumHasher>,
) -> Result<Appended, Failure> {
    let (blake3, sides) = prefix.parts();
    std::thread::scope(|scope| {
        let (to_writer, pieces) = sync_channel::<Arc<Vec<u8>>>(QUEUE);
        let writer = std::thread::Builder::new()
            .name("blobstore-append".into())
            .spawn_scoped(scope, move || -> io::Result<Option<File>> {
                let mut file = file;
                let mut wrote = false;
                for piece in pieces {
                    file.write_all(&piece)?;
                    wrote = true;
                }
                // Nothing written: the staged head of the first block need not be rewritten.
                if wrote {
                    file.finish().map(Some)
                } else {
                    Ok(None)
                }
            })
            .map_err(|e| Failure::Io("starting the writer of", e))?;
        let mut hashers = Vec::with_capacity(sides.len());
        for mut side in sides {
            let (to_hasher, pieces) = sync_channel::<Arc<Vec<u8>>>(QUEUE);
            let hasher = std::thread::Builder::new()
                .name("blobstore-hash".into())
                .spawn_scoped(scope, move || {
                    for piece in pieces {
                        side.update(&piece);
                    }
                })
                .map_err(|e| Failure::Io("starting the hashing of", e))?;
            hashers.push((to_hasher, hasher));
        }

        // Buffers come back once the writer and the hasher have dropped them.
        let mut pool: Vec<Arc<Vec<u8>>> = Vec::new();
        let mut received = 0u64;
        let mut interrupted = false;
        let mut past_length = false;
        loop {
            let mut piece = match pool.iter().position(|p| Arc::strong_count(p) == 1) {
                Some(i) => pool.swap_remove(i),
                None => Arc::new(Vec::with_capacity(CHUNK_SIZE)),
            };
            let buffer = Arc::get_mut(&mut piece).expect("a pooled piece is no longer shared");
            buffer.resize(CHUNK_SIZE, 0);
            let (filled, end) = fill(body, buffer, &mut interrupted);
            buffer.truncate(filled);
            if filled > 0 {
                if received + filled as u64 > room {
                    past_length = true;
                    break;
                }
                // A send fails only once the writer stopped on an error, which its join says.
                if to_writer.send(Arc::clone(&piece)).is_err() {
                    break;
                }
                for (to_hasher, _) in &hashers {
                    // A digest's thread ends only with the body (or by a panic, joined below).
                    let _ = to_hasher.send(Arc::clone(&piece));
                }
                blake3.update(&piece);
                if let Some(check) = check.as_deref_mut() {
                    check.update(&piece);
                }
                received += filled as u64;
                pool.push(piece);
            }
            if end || interrupted {
                break;
            }
        }
        drop(to_writer);
        let written = writer
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the writer panicked")));
        for (to_hasher, hasher) in hashers {
            drop(to_hasher);
            if hasher.join().is_err() {
                return Err(Failure::Io(
                    "hashing",
                    io::Error::other("a digest panicked"),
                ));
            }
        }
        if past_length {
            return Err(Failure::PastLength);
        }
        let file = written.map_err(|e| Failure::Io("writing", e))?;
        Ok(Appended {
            received,
            interrupted,
            file,
        })
    })
}

/// Fills `buffer` from `body`; answers the bytes read and whether the body ended. A read
/// error ends the body early and sets `interrupted`.
fn fill(body: &mut dyn Read, buffer: &mut [u8], interrupted: &mut bool) -> (usize, bool) {
    let mut filled = 0;
    while filled < buffer.len() {
        match body.read(&mut buffer[filled..]) {
            Ok(0) => return (filled, true),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => {
                *interrupted = true;
                return (filled, false);
            }
        }
    }
    (filled, false)
}
