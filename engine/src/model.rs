//! Authorization models: the OpenFGA DSL (schema 1.1, and modular 1.2) and JSON forms, and type checking.

pub mod dsl;
pub mod modular;
pub mod typecheck;
pub mod types;

pub use dsl::parse_dsl;
pub use typecheck::validate_model;
pub use types::*;
