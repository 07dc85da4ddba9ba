//! Gatehouse authorization core: OpenFGA-compatible models, relationship tuples at revisions,
//! graph evaluation (check, expand, list objects, list users) and the storage traits behind it.
//! No HTTP and no SQL here: the server crate adapts this to the wire and to databases.

pub mod bounds;
pub mod condition;
pub mod error;
pub mod graph;
pub mod model;
pub mod policy;
pub mod risk;
pub mod service;
pub mod store;
pub mod testfile;
pub mod tuple;

pub use error::{Error, ModelIssue, Result};
