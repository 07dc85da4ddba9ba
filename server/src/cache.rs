//! Cache coordination between nodes.

pub mod ephemeral;
pub mod limits;
pub mod redis;
