//! The store's behaviour, one function per property, generic over a [`Harness`]: run on every
//! engine backend by the blob store's tests and over Swift, S3 and SeaweedFS by the
//! object-store crate's. Whatever looks at the blob bytes themselves goes through the harness
//! ([`Harness::stored_blobs`], [`Harness::temporaries`], [`Harness::blob_backend`]), so that no
//! function here assumes where they live.
//!
//! The functions are grouped by what they check: `uploads` (sizes, deduplication, digests,
//! reads, reopening), `quotas`, `lifetime` (weak links, expiry, garbage collection, orphans),
//! `formats` (stores written by earlier builds), `access` (restricted tokens, malformed
//! input), `integrity` (verification, scrubbing) and `concurrency`; this module holds the [`Harness`] and the macros that list them all.
//!
//! A test crate stamps the suite out for its harness, then one `#[test]` per function and
//! backend with its own macro:
//!
//! ```text
//! mod suite {
//!     blobstore::every_suite_function!(blobstore::suite_for_harness!(crate::common::Harness;));
//! }
//! blobstore::every_suite_function!(common::backend_tests!(suite:));
//! ```

// Test code: a failed unwrap is a failed test. Each function's name says what it checks.
#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use engine::Backend;

use super::support::Settings;
use crate::{BlobBackend, BucketName, Store, UploadRequest};

mod access;
mod concurrency;
mod formats;
mod integrity;
mod lifetime;
mod quotas;
mod uploads;

pub use access::*;
pub use concurrency::*;
pub use formats::*;
pub use integrity::*;
pub use lifetime::*;
pub use quotas::*;
pub use uploads::*;

/// What the suite needs of a test harness: a store that can be reopened over the same data, a
/// manual clock, and a view of where the blob bytes live.
pub trait Harness: Sized {
    /// A harness over `backend` (the metadata engine) with `settings`.
    fn with_settings(backend: Backend, settings: Settings) -> Self;

    /// A harness over `backend` with the default settings.
    fn new(backend: Backend) -> Self {
        Self::with_settings(backend, Settings::default())
    }

    /// The settings the next [`open`](Self::open) uses.
    fn settings_mut(&mut self) -> &mut Settings;

    /// Opens the store (drop the previous one first: RocksDB and sled lock their directory).
    ///
    /// # Errors
    /// The store's error.
    fn try_open(&self) -> crate::Result<Store>;

    /// Opens the store, which must open.
    fn open(&self) -> Store {
        self.try_open()
            .unwrap_or_else(|error| panic!("open store: {error}"))
    }

    /// The backend that holds the blob bytes, for planting or damaging blobs behind the
    /// store's back.
    fn blob_backend(&self) -> Arc<dyn BlobBackend>;

    /// How many blobs the backend holds.
    fn stored_blobs(&self) -> usize;

    /// How many temporaries of unfinished uploads are left.
    fn temporaries(&self) -> usize;

    /// Leaves a temporary as an upload that crashed midway does.
    fn plant_temporary(&self);

    /// Moves the store's clock.
    fn advance(&self, by: Duration);
}

/// Hands the name of every function of the suite to a harness's macro that stamps out one
/// `#[test]` per backend, so that a new function runs everywhere the suite runs:
/// `every_suite_function!(common::backend_tests!(suite:))`.
#[macro_export]
macro_rules! every_suite_function {
    ($($stamp:ident)::+ !($($head:tt)*)) => {
        $($stamp)::+!($($head)*
            boundary_sizes,
            dedup_and_stats,
            empty_file_exists_once,
            quota_is_enforced,
            weak_links,
            expiry_with_clock,
            gc_grace_and_revival,
            blob_records_of_version_1_move_their_count_on_the_next_change,
            stores_of_format_1_are_upgraded,
            restricted_tokens,
            bad_input,
            digests_and_lookups,
            pagination_under_concurrent_inserts,
            verify_finds_corruption,
            scrub_records_damage_and_refuses_reads,
            downloads_are_counted,
            reopen_keeps_everything_and_ids_stay_unique,
            orphans_are_swept,
            concurrent_uploads_and_deletes_stay_exact,
            quota_holds_under_concurrent_uploads,
            a_quota_binds_every_upload_after_it_is_set,
            expiry_can_be_moved_or_cleared,
            an_over_quota_declared_length_is_refused_at_once,
        );
    };
}

/// Stamps out the suite for one harness: a non-generic `pub fn NAME(backend: Backend)` per
/// function, for the per-backend test macros. Called through [`every_suite_function!`]:
/// `every_suite_function!(blobstore::suite_for_harness!(crate::common::Harness;))`.
#[macro_export]
macro_rules! suite_for_harness {
    ($harness:ty; $($name:ident),* $(,)?) => {
        $(pub fn $name(backend: $crate::testing::Backend) {
            $crate::testing::suite::$name::<$harness>(backend)
        })*
    };
}

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);

fn upload(store: &Store, bucket: &BucketName, name: &str, bytes: &[u8]) -> crate::FileRecord {
    store
        .upload_bytes(UploadRequest::new(bucket.clone(), name), bytes, "tester")
        .expect("upload")
        .record
}
