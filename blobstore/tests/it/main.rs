//! The blob store's integration tests: one binary, every engine backend.

mod common;
mod crash;
mod faults;
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
);
