//! Gatehouse benchmarks live in `benches/`.
