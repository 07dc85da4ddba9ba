#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#[path = "../../tests/src/conformance.rs"]
mod conformance;
