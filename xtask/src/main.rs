//! `cargo run -p xtask -- dashboard`: builds the Leptos dashboard into
//! `frontend/dist`, the folder `waybill serve` serves by default.
//!
//! Steps: `cargo build --profile wasm-release --target wasm32-unknown-unknown
//! -p waybill-dashboard`, then the JS glue with `wasm-bindgen-cli-support` used
//! as a library (pinned with `=` to the `wasm-bindgen` version in Cargo.lock,
//! so the generator and the macro the frontend was compiled with always
//! agree), then `frontend/index.html` and `frontend/style.css` copied next to
//! it. Nothing is downloaded besides crates.io crates. Invariant: `dist` is
//! written to a temporary sibling and renamed into place, so a running node
//! never serves a half-written build.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

const CRATE: &str = "waybill-dashboard";
/// The wasm file cargo writes (crate name with `_`).
const WASM: &str = "waybill_dashboard.wasm";
/// Cargo profile of the wasm build (workspace Cargo.toml: size-optimised,
/// LTO; the server's `release` stays as it is).
const PROFILE: &str = "wasm-release";
/// Static files copied as they are.
const STATIC: &[&str] = &["index.html", "style.css"];

fn main() -> anyhow::Result<()> {
    let task = std::env::args().nth(1).unwrap_or_default();
    match task.as_str() {
        "dashboard" => dashboard(),
        _ => bail!("usage: cargo run -p xtask -- dashboard"),
    }
}

/// The checkout this xtask runs for: `cargo run` sets `CARGO_MANIFEST_DIR`
/// at run time, which stays right when a shared target dir holds a binary
/// built from another checkout; the compile-time value is the fallback.
fn workspace_root() -> anyhow::Result<PathBuf> {
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest
        .parent()
        .map(Path::to_path_buf)
        .context("xtask has no parent folder")
}

fn dashboard() -> anyhow::Result<()> {
    let root = workspace_root()?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(&cargo)
        .current_dir(&root)
        .args([
            "build",
            "--profile",
            PROFILE,
            "--locked",
            "--target",
            "wasm32-unknown-unknown",
            "-p",
            CRATE,
        ])
        .status()
        .with_context(|| format!("cannot run {cargo}"))?;
    if !status.success() {
        bail!(
            "building the dashboard for wasm32 failed ({status}): see the compiler output above \
             (a missing target needs `rustup target add wasm32-unknown-unknown`)"
        );
    }
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let target_dir = if target_dir.is_relative() {
        root.join(target_dir)
    } else {
        target_dir
    };
    let wasm = target_dir.join("wasm32-unknown-unknown").join(PROFILE).join(WASM);

    let frontend = root.join("frontend");
    let dist = frontend.join("dist");
    let staging = frontend.join("dist.tmp");
    if staging.exists() {
        std::fs::remove_dir_all(&staging).with_context(|| format!("cannot clear {}", staging.display()))?;
    }
    std::fs::create_dir_all(&staging).with_context(|| format!("cannot create {}", staging.display()))?;
    wasm_bindgen_cli_support::Bindgen::new()
        .input_path(&wasm)
        .web(true)
        .context("wasm-bindgen web target")?
        // The library's default differs from the CLI's: without this the
        // generated init() has no default URL for the .wasm and the page
        // stays blank.
        .omit_default_module_path(false)
        .typescript(false)
        // Function names are half the file; panics still print their message.
        .remove_name_section(true)
        .remove_producers_section(true)
        .generate(&staging)
        .with_context(|| format!("wasm-bindgen on {}", wasm.display()))?;
    for name in STATIC {
        let from = frontend.join(name);
        std::fs::copy(&from, staging.join(name)).with_context(|| format!("cannot copy {}", from.display()))?;
    }
    if dist.exists() {
        std::fs::remove_dir_all(&dist).with_context(|| format!("cannot replace {}", dist.display()))?;
    }
    std::fs::rename(&staging, &dist).with_context(|| format!("cannot move the build to {}", dist.display()))?;
    let size = std::fs::metadata(dist.join("waybill_dashboard_bg.wasm"))
        .map(|m| m.len())
        .unwrap_or(0);
    println!("dashboard built: {} (wasm {} KB)", dist.display(), size / 1024);
    Ok(())
}
