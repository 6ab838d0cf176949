//! A fault-injecting [`BlobBackend`]: a full disk and a failed fsync, switched on and off
//! while a store runs over it.

use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex, PoisonError};

use crate::{Blake3Hash, BlobBackend, Error, StoredBlob, TempBlob, Timestamp};

/// The fault a [`FaultyBackend`] injects from now on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// Everything passes through.
    Healthy,
    /// A temporary refuses, with `ENOSPC`, a write that would make it hold more than `after`
    /// bytes.
    DiskFull {
        /// The bytes a temporary takes before the disk is full.
        after: usize,
    },
    /// Persisting a blob fails with `EIO`, as a failed fsync does.
    FsyncFails,
}

/// Wraps a backend and injects the [`Fault`] set with [`FaultyBackend::set`] (shared by its
/// clones and by the temporaries it created).
#[derive(Debug)]
pub struct FaultyBackend<B> {
    inner: Arc<B>,
    fault: Arc<Mutex<Fault>>,
}

impl<B> Clone for FaultyBackend<B> {
    fn clone(&self) -> Self {
        FaultyBackend {
            inner: Arc::clone(&self.inner),
            fault: Arc::clone(&self.fault),
        }
    }
}

impl<B: BlobBackend> FaultyBackend<B> {
    /// `inner`, healthy for now.
    pub fn new(inner: B) -> Self {
        FaultyBackend {
            inner: Arc::new(inner),
            fault: Arc::new(Mutex::new(Fault::Healthy)),
        }
    }

    /// Injects `fault` from now on (temporaries already created included).
    pub fn set(&self, fault: Fault) {
        *self.fault.lock().unwrap_or_else(PoisonError::into_inner) = fault;
    }

    /// The backend it wraps.
    pub fn inner(&self) -> &B {
        &self.inner
    }
}

fn current(fault: &Mutex<Fault>) -> Fault {
    *fault.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Debug)]
struct FaultyTemp {
    inner: Box<dyn TempBlob>,
    fault: Arc<Mutex<Fault>>,
    written: usize,
}

impl Write for FaultyTemp {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Fault::DiskFull { after } = current(&self.fault) {
            if self.written.saturating_add(buf.len()) > after {
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
        }
        let n = self.inner.write(buf)?;
        self.written += n;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl TempBlob for FaultyTemp {
    fn persist(self: Box<Self>, hash: &Blake3Hash) -> crate::Result<()> {
        if current(&self.fault) == Fault::FsyncFails {
            return Err(Error::io(
                "fsyncing",
                "faulty",
                io::Error::from_raw_os_error(libc::EIO),
            ));
        }
        self.inner.persist(hash)
    }
}

impl<B: BlobBackend> BlobBackend for FaultyBackend<B> {
    fn name(&self) -> &'static str {
        "faulty"
    }

    fn create_temp(&self) -> crate::Result<Box<dyn TempBlob>> {
        Ok(Box::new(FaultyTemp {
            inner: self.inner.create_temp()?,
            fault: Arc::clone(&self.fault),
            written: 0,
        }))
    }

    fn open_range(
        &self,
        hash: &Blake3Hash,
        offset: u64,
        len: u64,
    ) -> crate::Result<Option<Box<dyn Read + Send>>> {
        self.inner.open_range(hash, offset, len)
    }

    fn delete(&self, hash: &Blake3Hash) -> crate::Result<()> {
        self.inner.delete(hash)
    }

    fn sweep(
        &self,
        older_than: Timestamp,
        visit: &mut dyn FnMut(StoredBlob) -> crate::Result<()>,
    ) -> crate::Result<u64> {
        self.inner.sweep(older_than, visit)
    }
}
