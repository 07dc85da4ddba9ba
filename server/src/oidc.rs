//! The OpenID provider: signing keys and their publication (JWKS), login sessions,
//! pending authorization requests and codes.

pub mod keys;
pub mod revocations;
pub mod sessions;
