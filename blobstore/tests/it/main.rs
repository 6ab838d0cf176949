//! The blob store's integration tests: one binary, every engine backend.

mod common;
mod crash;
mod engine_faults;
mod faults;
mod hot;
mod model;
mod suite;

common::backend_tests!(suite:
    boundary_sizes,
    dedup_and_stats,
    empty_file_exists_once,
    quota_is_enforced,
    weak_links,
    expiry_with_clock,
    gc_grace_and_revival,
    restricted_tokens,
    bad_input,
    digests_and_lookups,
    pagination_under_concurrent_inserts,
    verify_finds_corruption,
    downloads_are_counted,
    reopen_keeps_everything_and_ids_stay_unique,
    orphans_are_swept,
    concurrent_uploads_and_deletes_stay_exact,
    quota_holds_under_concurrent_uploads,
);

mod fault_tests {
    crate::common::backend_tests!(faults: disk_full_and_failed_fsync);
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
