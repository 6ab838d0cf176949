//! Writing a large upload's chunks to its temporary blob on a thread of its own, so that the
//! copy into the page cache runs beside BLAKE3 (the uploader's thread) and the other digests
//! (their threads) instead of after them.

use std::io::{self, Write};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::backend::TempBlob;

type Outcome = (Box<dyn TempBlob>, io::Result<()>);

/// A thread that owns the temporary blob and writes the chunks it is sent, in order.
#[derive(Debug)]
pub(crate) struct BackgroundWriter {
    sender: Option<SyncSender<Arc<Vec<u8>>>>,
    handle: Option<JoinHandle<Option<Outcome>>>,
}

impl BackgroundWriter {
    /// Starts the thread; gives `temp` back when the OS refuses a thread.
    pub(crate) fn start(temp: Box<dyn TempBlob>) -> Result<Self, Box<dyn TempBlob>> {
        // Two chunks queued keep the writer busy; each one more is 256 KiB per upload in flight.
        let (sender, receiver) = sync_channel::<Arc<Vec<u8>>>(2);
        let (handoff, handed) = sync_channel::<Box<dyn TempBlob>>(1);
        let spawned = std::thread::Builder::new()
            .name("blobstore-write".into())
            .spawn(move || {
                let mut temp = handed.recv().ok()?;
                for chunk in receiver {
                    if let Err(error) = temp.write_all(&chunk) {
                        return Some((temp, Err(error)));
                    }
                }
                Some((temp, Ok(())))
            });
        match spawned {
            Ok(handle) => match handoff.send(temp) {
                Ok(()) => Ok(BackgroundWriter {
                    sender: Some(sender),
                    handle: Some(handle),
                }),
                Err(std::sync::mpsc::SendError(temp)) => Err(temp),
            },
            Err(_) => Err(temp),
        }
    }

    /// Queues `chunk`; `false` when the thread stopped on an error (see [`Self::finish`]).
    pub(crate) fn send(&self, chunk: Arc<Vec<u8>>) -> bool {
        self.sender
            .as_ref()
            .is_some_and(|sender| sender.send(chunk).is_ok())
    }

    /// Waits for every queued chunk to be written; returns the temporary blob (if the thread
    /// ran) and the first write error.
    pub(crate) fn finish(mut self) -> (Option<Box<dyn TempBlob>>, io::Result<()>) {
        self.sender = None;
        match self
            .handle
            .take()
            .and_then(|handle| handle.join().ok())
            .flatten()
        {
            Some((temp, result)) => (Some(temp), result),
            None => (None, Err(io::Error::other("the blob writer thread failed"))),
        }
    }
}

impl Drop for BackgroundWriter {
    /// Joins the thread, so that a dropped upload's temporary blob is gone when the drop
    /// returns.
    fn drop(&mut self) {
        self.sender = None;
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}
