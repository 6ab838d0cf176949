//! What every harness of the blob store's suite shares, whatever holds the blob bytes: the
//! settings a test may change, test data, and the consistency check.

use std::io::{Read, Write};
use std::time::Duration;

use crate::{Access, Blake3Hash, BlobBackend, BucketName, FileId, Store};

/// The settings a test may change before (re)opening.
#[derive(Clone, Debug)]
pub struct Settings {
    /// [`StoreBuilder::keep_sha1_md5`](crate::StoreBuilder::keep_sha1_md5); default `false`.
    pub keep_sha1_md5: bool,
    /// [`StoreBuilder::grace`](crate::StoreBuilder::grace).
    pub grace: Duration,
    /// [`StoreBuilder::expiry_grace`](crate::StoreBuilder::expiry_grace).
    pub expiry_grace: Duration,
    /// [`StoreBuilder::inline_threshold`](crate::StoreBuilder::inline_threshold).
    pub inline_threshold: usize,
    /// The current and previous token secrets.
    pub secrets: ([u8; 32], Option<[u8; 32]>),
    /// [`StoreBuilder::change_retention`](crate::StoreBuilder::change_retention).
    pub change_retention: Duration,
    /// [`StoreBuilder::upgrade_format`](crate::StoreBuilder::upgrade_format); `None` leaves
    /// the builder's default.
    pub upgrade_format: Option<bool>,
}

impl Settings {
    /// `builder` with these settings.
    pub fn apply(&self, builder: crate::StoreBuilder) -> crate::StoreBuilder {
        let builder = builder
            .keep_sha1_md5(self.keep_sha1_md5)
            .grace(self.grace)
            .expiry_grace(self.expiry_grace)
            .inline_threshold(self.inline_threshold)
            .change_retention(self.change_retention)
            .token_secrets(self.secrets.0, self.secrets.1);
        match self.upgrade_format {
            Some(upgrade) => builder.upgrade_format(upgrade),
            None => builder,
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            keep_sha1_md5: false,
            grace: crate::DEFAULT_GRACE,
            expiry_grace: crate::DEFAULT_EXPIRY_GRACE,
            inline_threshold: crate::DEFAULT_INLINE_THRESHOLD,
            secrets: ([7; 32], None),
            change_retention: crate::DEFAULT_CHANGE_RETENTION,
            upgrade_format: None,
        }
    }
}

/// The bucket `name`, which must be valid.
///
/// # Panics
/// When the name is not a valid bucket name.
pub fn bucket(name: &str) -> BucketName {
    BucketName::new(name).expect("valid bucket name")
}

/// Deterministic pseudo-random bytes.
pub fn content(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Reads a whole file of the store.
pub fn read_all(store: &Store, id: FileId) -> Vec<u8> {
    let mut out = Vec::new();
    store
        .read(id, Access::Trusted, None)
        .expect("open for reading")
        .read_to_end(&mut out)
        .expect("read");
    out
}

/// The store's own checks find nothing: the statistics match the records (`check`) and every
/// blob is present with the bytes its hash names (`verify`, page by page).
pub fn assert_consistent(store: &Store) {
    let report = store.check().expect("check");
    assert!(report.is_ok(), "check found drift: {:#?}", report.problems);
    let mut after = None;
    loop {
        let verify = store.verify(after, 1000).expect("verify");
        assert!(verify.problems.is_empty(), "verify: {:?}", verify.problems);
        match verify.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
}

/// Stores `bytes` in `backend` as a blob that no record points to, as a crash between the
/// backend's `persist` and the store's batch leaves. Returns its hash.
pub fn plant_orphan(backend: &dyn BlobBackend, bytes: &[u8]) -> Blake3Hash {
    let hash = Blake3Hash::of(bytes);
    let mut temp = backend.create_temp().expect("create a temporary blob");
    temp.write_all(bytes).expect("write a temporary blob");
    temp.persist(&hash).expect("persist a blob");
    hash
}

/// Flips one bit of byte `at` of the stored blob `hash` behind the store's back (bit rot, or
/// a bad disk under the object store), keeping its size.
pub fn corrupt_blob(backend: &dyn BlobBackend, hash: &Blake3Hash, at: usize) {
    let mut bytes = Vec::new();
    backend
        .open_range(hash, 0, u64::MAX)
        .expect("open a stored blob")
        .expect("the blob is stored")
        .read_to_end(&mut bytes)
        .expect("read a stored blob");
    bytes[at] ^= 1;
    let mut temp = backend.create_temp().expect("create a temporary blob");
    temp.write_all(&bytes).expect("write a temporary blob");
    temp.persist(hash).expect("persist the damaged blob");
}
