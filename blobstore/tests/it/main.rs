//! The blob store's integration tests: one binary, every engine backend.

// Test code: a failed unwrap is a failed test, which is what it should be.
#![allow(clippy::unwrap_used)]

mod common;
mod crash;
mod crash_states;
mod engine_faults;
mod faults;
mod feed;
mod hot;
mod model;
mod resumable;
mod usage;

/// The store's suite (blobstore::testing::suite) on this crate's harness.
mod suite {
    blobstore::every_suite_function!(blobstore::suite_for_harness!(crate::common::Harness;));
}
blobstore::every_suite_function!(common::backend_tests!(suite:));

mod resumable_tests {
    crate::common::backend_tests!(resumable:
        appends_make_an_ordinary_file,
        bad_appends_change_nothing,
        resumes_after_reopen_with_the_right_digests,
        expiry_and_termination,
        idempotent_uploads,
    );
}

mod usage_tests {
    crate::common::backend_tests!(usage: usage_statistics);
}

mod fault_tests {
    // Its own engine in its own directory, beside a faulty blob backend.
    crate::common::embedded_backend_tests!(faults: disk_full_and_failed_fsync);
}

/// The server moves uploads and readers into blocking tasks and shares the store.
#[test]
fn handles_cross_threads() {
    fn send_sync<T: Send + Sync + 'static>() -> &'static str {
        std::any::type_name::<T>()
    }
    fn send<T: Send + 'static>() -> &'static str {
        std::any::type_name::<T>()
    }
    assert!(send_sync::<blobstore::Store>().ends_with("Store"));
    assert!(send_sync::<blobstore::Error>().ends_with("Error"));
    assert!(send::<blobstore::Upload>().ends_with("Upload"));
    assert!(send::<blobstore::ContentReader>().ends_with("ContentReader"));
}
