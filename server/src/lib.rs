//! Gatehouse server: configuration, the HTTP API, SQL storage and caches around the engine.

pub mod api;
pub mod cache;
pub mod cli;
pub mod config;
pub mod db;
pub mod identity;
pub mod mail;
pub mod oidc;
pub mod secrets;
pub mod serve;
