//! Computing the digests of an upload while it is written.
//!
//! Small uploads are hashed on the writer's thread. Once an upload outgrows one chunk, each
//! digest other than BLAKE3 moves to a thread of its own, fed with shared chunks through a
//! bounded channel, while BLAKE3 and the file write stay on the writer's thread: with two
//! cores the upload runs at about the rate of the slowest digest instead of the sum of all.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use md5::Md5;
use sha1::Sha1;
use sha2::{Digest as _, Sha256};

use crate::types::Blake3Hash;

/// The digests of one piece of content.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Digests {
    /// BLAKE3, the blob's address.
    pub blake3: Blake3Hash,
    /// SHA-256.
    pub sha256: [u8; 32],
    /// SHA-1, when the store keeps it.
    pub sha1: Option<[u8; 20]>,
    /// MD5, when the store keeps it.
    pub md5: Option<[u8; 16]>,
}

/// A digest that can run on its own thread.
enum Side {
    Sha256(Sha256),
    Sha1(Sha1),
    Md5(Md5),
}

enum SideResult {
    Sha256([u8; 32]),
    Sha1([u8; 20]),
    Md5([u8; 16]),
}

impl Side {
    fn update(&mut self, data: &[u8]) {
        match self {
            Side::Sha256(h) => h.update(data),
            Side::Sha1(h) => h.update(data),
            Side::Md5(h) => h.update(data),
        }
    }

    fn finish(self) -> SideResult {
        match self {
            Side::Sha256(h) => SideResult::Sha256(h.finalize().into()),
            Side::Sha1(h) => SideResult::Sha1(h.finalize().into()),
            Side::Md5(h) => SideResult::Md5(h.finalize().into()),
        }
    }
}

struct Worker {
    sender: SyncSender<Arc<Vec<u8>>>,
    handle: JoinHandle<Option<SideResult>>,
}

/// Starts a thread for `side`; gives `side` back when the OS refuses a thread.
fn spawn(side: Side) -> Result<Worker, Side> {
    // Two chunks queued keep the digest busy; each one more is 256 KiB per upload in flight.
    let (sender, receiver): (_, Receiver<Arc<Vec<u8>>>) = sync_channel(2);
    let (side_sender, side_receiver) = sync_channel::<Side>(1);
    let spawned = std::thread::Builder::new()
        .name("blobstore-hash".into())
        .spawn(move || {
            let mut side = side_receiver.recv().ok()?;
            for chunk in receiver {
                side.update(&chunk);
            }
            Some(side.finish())
        });
    match spawned {
        Ok(handle) => match side_sender.send(side) {
            Ok(()) => Ok(Worker { sender, handle }),
            Err(std::sync::mpsc::SendError(side)) => Err(side),
        },
        Err(_) => Err(side),
    }
}

/// The hashers of one upload.
pub(crate) struct Hashing {
    blake3: blake3::Hasher,
    local: Vec<Side>,
    workers: Vec<Worker>,
    spawned: bool,
}

impl std::fmt::Debug for Hashing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hashing")
            .field("threads", &self.workers.len())
            .finish_non_exhaustive()
    }
}

impl Hashing {
    pub(crate) fn new(keep_sha1_md5: bool) -> Self {
        let mut local = vec![Side::Sha256(Sha256::new())];
        if keep_sha1_md5 {
            local.push(Side::Sha1(Sha1::new()));
            local.push(Side::Md5(Md5::new()));
        }
        Hashing {
            blake3: blake3::Hasher::new(),
            local,
            workers: Vec::new(),
            spawned: false,
        }
    }

    /// Hashes `chunk` on this thread.
    pub(crate) fn update_local(&mut self, chunk: &[u8]) {
        self.blake3.update(chunk);
        for side in &mut self.local {
            side.update(chunk);
        }
    }

    /// Whether chunks go to hashing threads.
    pub(crate) fn is_shared(&self) -> bool {
        self.spawned
    }

    /// Hashes a large chunk, moving the side digests to their own threads on first use.
    pub(crate) fn update_shared(&mut self, chunk: Arc<Vec<u8>>) {
        if !self.local.is_empty() && !self.spawned {
            self.spawned = true;
            let mut kept = Vec::new();
            for side in self.local.drain(..) {
                match spawn(side) {
                    Ok(worker) => self.workers.push(worker),
                    Err(side) => kept.push(side),
                }
            }
            self.local = kept;
        }
        for worker in &self.workers {
            // A send fails only if the worker died, which `finish` reports by panicking.
            let _ = worker.sender.send(chunk.clone());
        }
        self.blake3.update(&chunk);
        for side in &mut self.local {
            side.update(&chunk);
        }
    }

    pub(crate) fn finish(self) -> Digests {
        let mut digests = Digests {
            blake3: Blake3Hash(*self.blake3.finalize().as_bytes()),
            sha256: [0; 32],
            sha1: None,
            md5: None,
        };
        let results = self
            .local
            .into_iter()
            .map(Side::finish)
            .chain(self.workers.into_iter().map(|worker| {
                drop(worker.sender);
                worker
                    .handle
                    .join()
                    .ok()
                    .flatten()
                    .expect("a hashing thread received its hasher and cannot fail")
            }));
        for result in results {
            match result {
                SideResult::Sha256(d) => digests.sha256 = d,
                SideResult::Sha1(d) => digests.sha1 = Some(d),
                SideResult::Md5(d) => digests.md5 = Some(d),
            }
        }
        digests
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallel_equals_local() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let mut local = Hashing::new(true);
        local.update_local(&data);
        let mut shared = Hashing::new(true);
        for chunk in data.chunks(256 * 1024) {
            shared.update_shared(Arc::new(chunk.to_vec()));
        }
        let a = local.finish();
        let b = shared.finish();
        assert_eq!(a, b);
        assert_eq!(a.blake3, Blake3Hash::of(&data));
        assert_eq!(a.sha256, <[u8; 32]>::from(Sha256::digest(&data)));
    }
}
