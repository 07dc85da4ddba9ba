//! Embedded migrations.
//!
//! One migration tree per backend, kept in step: PostgreSQL (also within CockroachDB's dialect)
//! and SQLite. The server runs them at start and `gatehouse migrate` runs them alone.

use diesel_migrations::{EmbeddedMigrations, embed_migrations};

/// Migrations for PostgreSQL (and CockroachDB).
pub const POSTGRES: EmbeddedMigrations = embed_migrations!("postgres");

/// Migrations for SQLite, the embedded default.
pub const SQLITE: EmbeddedMigrations = embed_migrations!("sqlite");
