//! Black-box tests of Gatehouse: the OpenFGA sample stores through `gatehouse model test`'s
//! code path, and the real binary driven over HTTP on SQLite and PostgreSQL.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

mod conformance;

mod account;
mod api;
mod attacks;
mod authzen;
mod bad_input;
mod cli;
mod consistency;
mod decisions;
mod expiry;
mod harness;
mod links;
mod login;
mod manage;
mod mfa;
mod oidc;
mod passkeys;
mod plugins;
mod policies;
mod providers;
mod saml;
mod sdk;
