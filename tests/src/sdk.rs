//! OpenFGA's JavaScript SDK, unchanged, against a running Gatehouse (`tests/sdk/sdk.mjs`).

use std::path::PathBuf;
use std::process::Command;

use crate::harness::{Backend, Server};

fn sdk_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("sdk")
}

#[tokio::test(flavor = "multi_thread")]
async fn openfga_js_sdk_works_unchanged() {
    let dir = sdk_dir();
    assert!(
        dir.join("node_modules/@openfga/sdk/package.json").is_file(),
        "the OpenFGA JS SDK is not installed: run `npm ci --prefix tests/sdk` in the workspace first"
    );
    let server = Server::start(Backend::Sqlite).await;
    let (base, key) = (server.base.clone(), server.key.clone());
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg("sdk.mjs")
            .current_dir(&dir)
            .env("FGA_API_URL", base)
            .env("FGA_API_KEY", key)
            .output()
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| panic!("cannot run node (is Node.js 20+ installed?): {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "sdk.mjs failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains("steps matched"),
        "sdk.mjs printed no summary:\n{stdout}\n{stderr}"
    );
    println!("{stdout}");
}
