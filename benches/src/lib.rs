//! Criterion benchmarks of the workspace's stores live in `benches/`; run them with
//! `cargo bench -p benches --bench <name>`. This library is empty on purpose: the package
//! exists so that benchmark dependencies stay out of the default build.
