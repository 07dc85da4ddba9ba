//! The OpenID provider: signing keys and their publication (JWKS).

pub mod keys;
