//! Login plugins through the real binary: third-party plugins from a directory, checked when
//! the server starts and by `gatehouse plugin check`; the installed plugins over the API.

use std::path::Path;

use gatehouse_plugin_host::embedded::{HOSTILE, PASSWORD};
use serde_json::Value;

use crate::cli::{gatehouse, text};
use crate::harness::{Backend, Server, ServerOptions, TempDir};
use crate::login::{admin, tenant};

/// Writes a plugin directory `root/name` with this manifest and component (`None`: no
/// `plugin.wasm`).
fn plugin_dir(root: &Path, name: &str, manifest: &str, wasm: Option<&[u8]>) -> String {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("plugin.toml"), manifest).unwrap();
    if let Some(w) = wasm {
        std::fs::write(dir.join("plugin.wasm"), w).unwrap();
    }
    dir.display().to_string()
}

#[tokio::test]
async fn third_party_plugins_load_from_a_directory_and_are_listed() {
    let root = TempDir::new("plugins");
    let one = plugin_dir(root.path(), "hostile", HOSTILE.manifest, Some(HOSTILE.wasm));
    let mut opts = ServerOptions::new(Backend::Sqlite);
    opts.env.push((
        "GATEHOUSE_PLUGIN_DIR".into(),
        root.path().display().to_string(),
    ));
    let s = Server::start_with(opts).await;
    let (client_id, _, _) = tenant(&s, "acme").await;
    let key = admin(
        &s,
        &["apikey", "create", "--service", &client_id, "--name", "ci"],
        "",
    )
    .await
    .unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string();
    let url = format!("{}/api/plugins", s.base);
    let r = s.client.get(&url).bearer_auth(&key).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let plugins = body["plugins"].as_array().unwrap();
    let ids: Vec<_> = plugins.iter().map(|p| p["id"].as_str().unwrap()).collect();
    // The directory's plugin and every first-party one, by id.
    let mut expected: Vec<String> = gatehouse_plugin_host::embedded::ALL
        .iter()
        .map(|e| {
            gatehouse_plugin_host::Manifest::parse(e.manifest)
                .unwrap()
                .id
        })
        .chain(["hostile".to_string()])
        .collect();
    expected.sort();
    assert_eq!(ids, expected, "{body}");
    assert!(ids.contains(&"oidc") && ids.contains(&"password"), "{body}");
    let hostile = plugins.iter().find(|p| p["id"] == "hostile").unwrap();
    assert_eq!(hostile["first_party"], false, "{body}");
    assert_eq!(hostile["kind"], "strategy");
    assert_eq!(
        hostile["capabilities"],
        serde_json::json!(["log", "clock", "random", "kv", "http", "email"])
    );
    let password = plugins.iter().find(|p| p["id"] == "password").unwrap();
    assert_eq!(password["first_party"], true, "{body}");
    assert_eq!(password["display_name"], "Password");
    assert_eq!(password["config_schema"]["type"], "object", "{body}");

    // Signed-in callers only; uploading is platform administration (tests/src/mfa.rs).
    let r = s.client.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = s
        .client
        .post(&url)
        .bearer_auth(&key)
        .json(&serde_json::json!({ "manifest": HOSTILE.manifest, "wasm": "" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = s.client.put(&url).bearer_auth(&key).send().await.unwrap();
    assert_eq!(r.status(), 405);

    // The CLI checks a directory the same way and prints what the plugin is.
    let out = gatehouse(&["plugin", "check", &one], &[]).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let checked: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(checked["id"], "hostile");
    assert_eq!(checked["version"], "0.1.0");
}

#[tokio::test]
async fn a_plugin_that_fails_its_checks_stops_the_server_with_the_reason() {
    let root = TempDir::new("bad-plugins");
    let undeclared = HOSTILE.manifest.replace(r#", "kv""#, "");
    assert_ne!(undeclared, HOSTILE.manifest);
    let cases: [(&str, &str, Option<&[u8]>, &str); 5] = [
        (
            "undeclared",
            &undeclared,
            Some(HOSTILE.wasm),
            "imports the capability `kv` but its manifest does not declare it",
        ),
        (
            "garbage",
            HOSTILE.manifest,
            Some(b"not a component"),
            "not a valid WebAssembly component",
        ),
        ("missing", HOSTILE.manifest, None, "plugin.wasm"),
        (
            "impostor",
            PASSWORD.manifest,
            Some(PASSWORD.wasm),
            "is the id of a first-party plugin",
        ),
        (
            "badmanifest",
            "id = \"x\"",
            Some(HOSTILE.wasm),
            "plugin.toml",
        ),
    ];
    for (name, manifest, wasm, says) in cases {
        let case_root = root.path().join(name);
        let dir = plugin_dir(&case_root, name, manifest, wasm);
        let data = root.path().join(format!("data-{name}"));
        let out = gatehouse(
            &["serve"],
            &[
                ("GATEHOUSE_DATA_DIR", data.to_str().unwrap()),
                ("GATEHOUSE_ADDR", "127.0.0.1:0"),
                ("GATEHOUSE_PLUGIN_DIR", case_root.to_str().unwrap()),
            ],
        )
        .await;
        let (stdout, stderr) = text(&out);
        assert!(
            !out.status.success(),
            "{name}: the server started: {stdout}"
        );
        assert!(stderr.contains(says), "{name}: {stderr}");
        assert!(
            stderr.contains(&dir),
            "{name} does not name its directory: {stderr}"
        );

        let out = gatehouse(&["plugin", "check", &dir], &[]).await;
        let (_, stderr) = text(&out);
        assert!(!out.status.success(), "{name}: the check passed");
        assert!(stderr.contains(says), "{name}: {stderr}");
    }
    // A plugin directory that is not there.
    let out = gatehouse(
        &["serve"],
        &[
            (
                "GATEHOUSE_DATA_DIR",
                root.path().join("data").to_str().unwrap(),
            ),
            ("GATEHOUSE_ADDR", "127.0.0.1:0"),
            ("GATEHOUSE_PLUGIN_DIR", "/nonexistent/plugins"),
        ],
    )
    .await;
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("/nonexistent/plugins"), "{stderr}");
}
