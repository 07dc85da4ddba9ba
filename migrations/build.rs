//! Rebuilds the crate when a migration is added or changed: `embed_migrations!` reads the
//! directories at compile time, which cargo does not otherwise track.

fn main() {
    println!("cargo:rerun-if-changed=postgres");
    println!("cargo:rerun-if-changed=sqlite");
}
