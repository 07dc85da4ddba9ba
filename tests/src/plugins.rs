//! Login plugins through the real binary: third-party plugins from a directory, checked when
//! the server starts and by `gatehouse plugin check`; the installed plugins over the API.

use std::path::Path;

use gatehouse_plugin_host::embedded::{HOSTILE, PASSWORD};
use serde_json::Value;

use crate::cli::{gatehouse, text};
use crate::harness::{Backend, Server, ServerOptions, TempDir};
use crate::login::{admin, tenant};

/// Every capability a third-party plugin may be granted, for tests of plugins that use them.
pub(crate) const ALL_CAPABILITIES: &str =
    "log,clock,random,kv,accounts,credentials,argon2,http,jwt,email,webauthn,saml";

/// Writes a plugin directory `root/name` with this manifest and component (`None`: no
/// `plugin.wasm`).
pub(crate) fn plugin_dir(root: &Path, name: &str, manifest: &str, wasm: Option<&[u8]>) -> String {
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
        "GATEHOUSE_PLUGIN_CAPABILITIES".into(),
        crate::plugins::ALL_CAPABILITIES.into(),
    ));
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
    let out = gatehouse(
        &["plugin", "check", &one],
        &[("GATEHOUSE_PLUGIN_CAPABILITIES", ALL_CAPABILITIES)],
    )
    .await;
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
                ("GATEHOUSE_PLUGIN_CAPABILITIES", ALL_CAPABILITIES),
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

        let out = gatehouse(
            &["plugin", "check", &dir],
            &[("GATEHOUSE_PLUGIN_CAPABILITIES", ALL_CAPABILITIES)],
        )
        .await;
        let (_, stderr) = text(&out);
        assert!(!out.status.success(), "{name}: the check passed");
        assert!(stderr.contains(says), "{name}: {stderr}");
    }
    // The platform grants third-party plugins only some capabilities: one that declares
    // another (here `email`) is refused, while the first-party ones keep theirs (the server
    // with a directory of acceptable plugins starts, tested below). A name that is not a
    // capability is a configuration error.
    let case_root = root.path().join("withheld");
    let dir = plugin_dir(&case_root, "hostile", HOSTILE.manifest, Some(HOSTILE.wasm));
    for (granted, says) in [
        (
            "log, clock,random,kv,http",
            "declares the capability `email`, which this platform does not grant",
        ),
        ("", "declares the capability `log`"),
        ("log,teleport", "`teleport`, which is not a capability"),
    ] {
        let data = root.path().join("data-withheld");
        let out = gatehouse(
            &["serve"],
            &[
                ("GATEHOUSE_DATA_DIR", data.to_str().unwrap()),
                ("GATEHOUSE_ADDR", "127.0.0.1:0"),
                ("GATEHOUSE_PLUGIN_DIR", case_root.to_str().unwrap()),
                ("GATEHOUSE_PLUGIN_CAPABILITIES", granted),
            ],
        )
        .await;
        let (stdout, stderr) = text(&out);
        assert!(!out.status.success(), "{granted}: started: {stdout}");
        assert!(stderr.contains(says), "{granted}: {stderr}");
        let out = gatehouse(
            &["plugin", "check", &dir],
            &[("GATEHOUSE_PLUGIN_CAPABILITIES", granted)],
        )
        .await;
        let (_, stderr) = text(&out);
        assert!(!out.status.success(), "{granted}: the check passed");
        assert!(stderr.contains(says), "{granted}: {stderr}");
    }
    let out = gatehouse(
        &["plugin", "check", &dir],
        &[(
            "GATEHOUSE_PLUGIN_CAPABILITIES",
            "log,clock,random,kv,http,email",
        )],
    )
    .await;
    assert!(out.status.success(), "{:?}", text(&out));

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

/// `gatehouse plugin run DIR STEP …` with these arguments; the JSON it printed, or its error.
pub(crate) async fn harness_step(dir: &str, args: &[&str]) -> Result<Value, String> {
    let mut all = vec!["plugin", "run", dir];
    all.extend_from_slice(args);
    let out = gatehouse(&all, &[]).await;
    let (stdout, stderr) = text(&out);
    if out.status.success() {
        Ok(serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}")))
    } else {
        Err(stderr)
    }
}

#[tokio::test]
async fn plugin_authors_run_steps_on_the_harness_host() {
    use gatehouse_plugin_host::embedded::TEMPLATE;
    let root = TempDir::new("harness");
    let dir = plugin_dir(
        root.path(),
        "template",
        TEMPLATE.manifest,
        Some(TEMPLATE.wasm),
    );
    let state = root.path().join("state.json").display().to_string();
    let st = ["--state", state.as_str()];

    let d = harness_step(&dir, &["describe"]).await.unwrap();
    assert_eq!(
        (d["id"].as_str(), d["kind"].as_str()),
        (Some("template"), Some("strategy")),
        "{d}"
    );
    // The configuration schema from the manifest, its secret field marked.
    assert_eq!(
        d["config_schema"]["properties"]["code"]["writeOnly"], true,
        "{d}"
    );

    // begin: the form the login page would show.
    let b = harness_step(
        &dir,
        &[&["begin", "--plugin-config", r#"{"code":"4711"}"#][..], &st].concat(),
    )
    .await
    .unwrap();
    let names: Vec<&str> = b["result"]["form"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["email", "code"], "{b}");

    // complete, for an account the state file now holds: who it is, and what it kept.
    let ok = [
        "complete",
        "--plugin-config",
        r#"{"code":"4711"}"#,
        "--account",
        "ada@example.com=01harnessada",
        "--param",
        "email=Ada@Example.com",
        "--param",
        "code=4711",
    ];
    let c = harness_step(&dir, &[&ok[..], &st].concat()).await.unwrap();
    let a = &c["result"]["assertion"];
    assert_eq!(a["subject"], "01harnessada", "{c}");
    assert_eq!(a["methods"], serde_json::json!(["otp"]), "{c}");
    let kept: Value = serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    let keys: Vec<&String> = kept["kv"].as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        ["plugin-kv:template:harness-org:last:01harnessada"],
        "{kept}"
    );

    // A wrong code is the plugin's refusal, naming the account; an unknown address names none.
    let wrong = [
        &ok[..5],
        &["--param", "email=ada@example.com", "--param", "code=1"],
        &st,
    ]
    .concat();
    let c = harness_step(&dir, &wrong).await.unwrap();
    assert_eq!(
        c["failure"]["invalid_credentials"]["user"], "01harnessada",
        "{c}"
    );
    let nobody = [
        &ok[..5],
        &[
            "--param",
            "email=nobody@example.com",
            "--param",
            "code=4711",
        ],
        &st,
    ]
    .concat();
    let c = harness_step(&dir, &nobody).await.unwrap();
    assert_eq!(
        c["failure"]["invalid_credentials"]["user"],
        Value::Null,
        "{c}"
    );

    // A configuration the schema refuses, a bad parameter, a broken state file: errors.
    let e = harness_step(
        &dir,
        &[&["begin", "--plugin-config", "{}"][..], &st].concat(),
    )
    .await
    .unwrap_err();
    assert!(e.contains("not valid") && e.contains("code"), "{e}");
    let e = harness_step(&dir, &["begin", "--param", "novalue"])
        .await
        .unwrap_err();
    assert!(e.contains("NAME=VALUE"), "{e}");
    std::fs::write(&state, "not json").unwrap();
    let e = harness_step(
        &dir,
        &[&["begin", "--plugin-config", r#"{"code":"1"}"#][..], &st].concat(),
    )
    .await
    .unwrap_err();
    assert!(e.contains("not a harness state file"), "{e}");

    // A plugin that breaks the sandbox's limits fails the step with the reason.
    let hostile = plugin_dir(root.path(), "hostile", HOSTILE.manifest, Some(HOSTILE.wasm));
    let fresh = root.path().join("fresh.json").display().to_string();
    let e = harness_step(
        &hostile,
        &["complete", "--param", "do=loop", "--state", &fresh],
    )
    .await
    .unwrap_err();
    assert!(e.contains("guest time"), "{e}");
}

/// The value of the `gatehouse_plugin_failures_total` series for `plugin` and `kind` (0 when
/// the series is not there).
async fn failures(s: &Server, plugin: &str, kind: &str) -> u64 {
    let text = s
        .client
        .get(format!("{}/metrics", s.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|l| {
            l.starts_with("gatehouse_plugin_failures_total{")
                && l.contains(&format!(r#"plugin="{plugin}""#))
                && l.contains(&format!(r#"kind="{kind}""#))
        })
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .unwrap_or(0)
}

/// A third-party plugin that misbehaves, offered by a service and run through the hosted
/// login: each misdeed fails that sign-in with a clear page and a metric, opens no session, and
/// the server and other sign-ins carry on; its word that a user used a second factor is not
/// taken.
#[tokio::test(flavor = "multi_thread")]
async fn a_misbehaving_plugin_fails_only_its_own_sign_ins() {
    use reqwest::Method;

    use crate::account::path_of;
    use crate::login::{
        Browser, PASSWORD, REDIRECT, authorize_path, console_token, pkce, query_of, token,
        tokens_for,
    };
    use crate::mfa::{call, code_at};
    use crate::providers::claims_of;

    let root = TempDir::new("plugins");
    plugin_dir(root.path(), "hostile", HOSTILE.manifest, Some(HOSTILE.wasm));
    let mut opts = ServerOptions::new(Backend::Sqlite);
    opts.env.push((
        "GATEHOUSE_PLUGIN_CAPABILITIES".into(),
        crate::plugins::ALL_CAPABILITIES.into(),
    ));
    opts.env.push((
        "GATEHOUSE_PLUGIN_DIR".into(),
        root.path().display().to_string(),
    ));
    let s = Server::start_with(opts).await;
    let (client_id, secret, ada) = tenant(&s, "acme").await;
    let alice = "alice@acme.example.com";
    admin(
        &s,
        &[
            "user",
            "create",
            "--email",
            alice,
            "--verified",
            "--password-stdin",
            "--org",
            "acme",
            "--role",
            "admin",
        ],
        &format!("{PASSWORD}\n"),
    )
    .await
    .unwrap();
    // Gatehouse's own API takes the console's tokens.
    let alice_token = console_token(&s, alice).await;
    let (st, body) = call(
        &s,
        Method::PUT,
        &format!("/api/services/{client_id}/plugins/hostile"),
        Some(&alice_token),
        Some(serde_json::json!({ "config": {} })),
    )
    .await;
    assert_eq!(st, 200, "{body}");

    // A sign-in in `b` through the hostile plugin's form, doing `what` with `arg`: the page
    // its callback answers with.
    async fn through_the_plugin(
        b: &mut Browser,
        s: &Server,
        client_id: &str,
        challenge: &str,
        what: &str,
        arg: &str,
    ) -> crate::login::Page {
        let start = b
            .get(&authorize_path(
                client_id,
                REDIRECT,
                challenge,
                &[("prompt", "login")],
            ))
            .await;
        assert_eq!(start.status, 303, "{}", start.body);
        let login = start.location.unwrap();
        let request = login.trim_start_matches("/login?request=").to_string();
        let page = b.get(&login).await;
        assert!(
            page.body
                .contains(&format!(r#"href="/login/with/hostile?request={request}""#)),
            "{}",
            page.body
        );
        let form = b
            .get(&format!("/login/with/hostile?request={request}"))
            .await;
        assert_eq!(form.status, 200, "{}", form.body);
        assert!(form.body.contains(r#"name="do""#), "{}", form.body);
        let sent = b
            .post(
                "/login/with/hostile",
                &[("request", &request), ("do", what), ("arg", arg)],
            )
            .await;
        assert_eq!(sent.status, 303, "{}", sent.body);
        let callback = sent.location.unwrap();
        assert!(callback.starts_with(&format!("{}/login/callback/hostile?", s.base)));
        b.get(&path_of(&callback, &s.base)).await
    }

    let (_, challenge) = pkce();
    for (what, kind) in [
        ("loop", "guest_time"),
        ("oom", "memory"),
        ("flood", "output_too_large"),
        ("panic", "trap"),
    ] {
        let before = failures(&s, "hostile", kind).await;
        let mut b = Browser::new(&s);
        let page = through_the_plugin(&mut b, &s, &client_id, &challenge, what, "").await;
        assert_eq!(page.status, 503, "{what}: {}", page.body);
        assert!(
            page.body.contains("Signing in is not possible right now"),
            "{what}: {}",
            page.body
        );
        assert!(!b.cookies.contains_key("gh_session"), "{what}");
        assert_eq!(failures(&s, "hostile", kind).await, before + 1, "{what}");
        // The server carries on: a password sign-in works.
        let mut other = Browser::new(&s);
        let page = other
            .sign_in(
                &authorize_path(&client_id, REDIRECT, &challenge, &[]),
                &ada,
                PASSWORD,
            )
            .await;
        assert_eq!(page.status, 303, "after {what}: {}", page.body);
        assert!(query_of(page.location.as_deref().unwrap()).contains_key("code"));
    }

    // The plugin names Ada by her user id: a third-party strategy's subject is no Gatehouse
    // user id, so nobody signs in (and, vouching for no address, it makes no account).
    let ada_tokens = tokens_for(&s, &client_id, &secret, &ada).await;
    let ada_id = claims_of(ada_tokens["id_token"].as_str().unwrap())["sub"]
        .as_str()
        .unwrap()
        .to_string();
    let (verifier, challenge) = pkce();
    let mut b = Browser::new(&s);
    let page = through_the_plugin(&mut b, &s, &client_id, &challenge, "claim", &ada_id).await;
    assert_eq!(page.status, 403, "a plugin named a user: {}", page.body);
    assert!(!b.cookies.contains_key("gh_session"));
    // Ada links the plugin's account to hers while signed in with her password; from then on
    // it signs her in, its claim of every factor recorded as one (`pwd`), not `mfa`.
    let mut b = Browser::new(&s);
    let page = b
        .sign_in(
            &authorize_path(&client_id, REDIRECT, &challenge, &[]),
            &ada,
            PASSWORD,
        )
        .await;
    assert_eq!(page.status, 303, "{}", page.body);
    let asked = through_the_plugin(&mut b, &s, &client_id, &challenge, "claim", &ada).await;
    let page = crate::login::confirm_link(&mut b, asked).await;
    assert_eq!(page.status, 303, "{}", page.body);
    let mut b = Browser::new(&s);
    let page = through_the_plugin(&mut b, &s, &client_id, &challenge, "claim", &ada).await;
    assert_eq!(page.status, 303, "{}", page.body);
    let q = query_of(page.location.as_deref().unwrap());
    let (st, tokens) = token(
        &s,
        &[
            ("grant_type", "authorization_code"),
            ("code", &q["code"]),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &verifier),
        ],
        Some((&client_id, &secret)),
    )
    .await;
    assert_eq!(st, 200, "{tokens}");
    let amr = claims_of(tokens["id_token"].as_str().unwrap())["amr"].clone();
    assert_eq!(amr, serde_json::json!(["pwd"]), "{tokens}");

    // Once the user has an authenticator app, the plugin's claim does not skip it: the code
    // is asked for, and no session opens before it.
    let pwd = console_token(&s, &ada).await;
    let pwd = pwd.as_str();
    let (st, enrol) = call(&s, Method::POST, "/api/me/mfa/totp", Some(pwd), None).await;
    assert_eq!(st, 200, "{enrol}");
    let totp_secret = enrol["secret"].as_str().unwrap();
    let (st, body) = call(
        &s,
        Method::POST,
        "/api/me/mfa/totp/confirm",
        Some(pwd),
        Some(serde_json::json!({ "code": code_at(totp_secret, 0) })),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    let mut b = Browser::new(&s);
    let page = through_the_plugin(&mut b, &s, &client_id, &challenge, "claim", &ada).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body.contains(r#"name="method" value="totp""#),
        "{}",
        page.body
    );
    assert!(!b.cookies.contains_key("gh_session"));
    // Vouching for nobody signs nobody in.
    let mut b = Browser::new(&s);
    let page = through_the_plugin(&mut b, &s, &client_id, &challenge, "claim", "nobody").await;
    assert_eq!(page.status, 403, "{}", page.body);
    assert!(!b.cookies.contains_key("gh_session"));
}
