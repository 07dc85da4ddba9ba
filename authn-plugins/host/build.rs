//! Builds the plugins of `authn-plugins/` (first-party and test plugins) for wasm32-wasip2 with
//! a nested cargo, so that the host can embed them. The nested build has its own target
//! directory (sharing the outer one would deadlock on its lock) and none of the outer build's
//! compiler flags or wrappers (they are meant for the host, not for wasm).
//!
//! `GATEHOUSE_PLUGINS_PREBUILT=<dir>` takes the `.wasm` files from a directory instead.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const COMPONENTS: [&str; 9] = [
    "gatehouse_plugin_template",
    "gatehouse_plugin_saml",
    "gatehouse_plugin_password",
    "gatehouse_plugin_passkey",
    "gatehouse_plugin_magic_link",
    "gatehouse_plugin_oidc",
    "gatehouse_plugin_github",
    "gatehouse_plugin_totp",
    "gatehouse_plugin_hostile",
];

fn main() -> Result<(), String> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").map_err(|e| e.to_string())?);
    let guests = manifest_dir
        .parent()
        .ok_or("the host crate has no parent directory")?
        .to_path_buf();
    let out = PathBuf::from(env::var("OUT_DIR").map_err(|e| e.to_string())?);
    println!(
        "cargo:rustc-env=GATEHOUSE_PLUGIN_WASM_DIR={}",
        out.display()
    );
    println!("cargo:rerun-if-env-changed=GATEHOUSE_PLUGINS_PREBUILT");
    for p in [
        "wit",
        "pdk",
        "plugins",
        "testing",
        "Cargo.toml",
        "Cargo.lock",
    ] {
        println!("cargo:rerun-if-changed={}", guests.join(p).display());
    }

    let built = if let Some(dir) = env::var_os("GATEHOUSE_PLUGINS_PREBUILT") {
        PathBuf::from(dir)
    } else {
        build(&guests, &out)?
    };
    for c in COMPONENTS {
        let from = built.join(format!("{c}.wasm"));
        let bytes = fs::read(&from).map_err(|e| format!("cannot read {}: {e}", from.display()))?;
        let to = out.join(format!("{c}.wasm"));
        if fs::read(&to).ok().as_deref() != Some(&bytes[..]) {
            fs::write(&to, &bytes).map_err(|e| format!("cannot write {}: {e}", to.display()))?;
        }
    }
    Ok(())
}

fn build(guests: &Path, out: &Path) -> Result<PathBuf, String> {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    // Shared by every profile of the outer build: target/plugins beside target/debug.
    let target_dir = out
        .ancestors()
        .nth(4)
        .map(|t| t.join("plugins"))
        .unwrap_or_else(|| out.join("plugins"));

    let libdir = Command::new(&rustc)
        .args(["--print", "target-libdir", "--target", "wasm32-wasip2"])
        .output()
        .map_err(|e| format!("cannot run rustc: {e}"))?;
    let libdir = String::from_utf8_lossy(&libdir.stdout).trim().to_string();
    if libdir.is_empty() || !Path::new(&libdir).exists() {
        return Err(
            "the wasm32-wasip2 target is not installed; run `rustup target add wasm32-wasip2`"
                .into(),
        );
    }

    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "--release",
        "--locked",
        "--target",
        "wasm32-wasip2",
        "--manifest-path",
    ])
    .arg(guests.join("Cargo.toml"))
    .arg("--target-dir")
    .arg(&target_dir)
    .current_dir(guests);
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_WRAPPER",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_PRIMARY_PACKAGE",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run cargo for the plugins: {e}"))?;
    if !status.success() {
        return Err(format!("building the plugins failed ({status})"));
    }
    Ok(target_dir.join("wasm32-wasip2").join("release"))
}
