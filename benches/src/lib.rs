//! Criterion benchmarks of the stores; see `benches/*.rs`.
