//! Cache coordination between nodes.

pub mod ephemeral;
pub mod redis;
