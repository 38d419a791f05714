//! Rebuilds the crate when a trace-store migration is added or changed.
//!
//! `sqlx::migrate!` embeds `../migrations/*` at compile time, and cargo
//! reruns a proc macro only when a file it already knows changes: a new
//! migration file alone would leave binaries and tests migrating to the
//! schema of the last build. sqlx recommends exactly this build script.
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
