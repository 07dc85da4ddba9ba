//! Cache coordination between nodes.

pub mod redis;
