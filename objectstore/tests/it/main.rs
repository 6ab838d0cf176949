//! The object-store backend's integration tests, against a real Swift (native API and S3 API).
//!
//! They need the environment of `scripts/swift-saio.sh` (`SWIFT_AUTH_URL`, `S3_ENDPOINT`, ...)
//! and fail with a message naming it when it is missing; `scripts/with-swift.sh cargo test -p
//! objectstore` provides it. The fault test starts a Swift of its own so that it can stop the
//! proxy without disturbing the others.

// Test code: a failed unwrap is a failed test, which is what it should be.
#![allow(clippy::unwrap_used)]

mod cache;
mod common;
mod fault;
mod migrate;
mod objects;
/// The blob store's own suite (blobstore::testing::suite), every function of it, run here over
/// Swift, S3 and SeaweedFS.
mod suite {
    blobstore::every_suite_function!(blobstore::suite_for_harness!(crate::common::Harness;));
}
blobstore::every_suite_function!(common::protocol_tests!(suite as blobstore_suite:));

common::protocol_tests!(objects as object_store:
    large_objects_are_segmented_and_read_back_as_one,
    containers_roll_over_and_reads_find_every_object,
    unrecorded_uploads_and_orphans_are_swept,
    deleted_blobs_leave_the_object_store,
);

common::protocol_tests!(cache as cache_over:
    cached_blobs_are_served_while_the_object_store_is_unreachable,
);

common::protocol_tests!(migrate as migration:
    local_blobs_move_to_the_object_store_while_reads_continue,
);

// Stalled transfers (through a relay that goes silent) and https with a private CA.
mod timeouts;
mod tls;
