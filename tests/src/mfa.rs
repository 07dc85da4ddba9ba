//! A second factor: an authenticator app set up through the API (the `totp` plugin), then
//! asked for at every sign-in of the user, before any session opens.

use serde_json::{Value, json};
use totp_rs::{Builder, Secret};

use crate::harness::{Backend, Server};
use crate::login::{
    Browser, CONSOLE, PASSWORD, REDIRECT, authorize_path, console_exchange, console_token,
    console_token_in, pkce, query_of, tenant, token,
};
use crate::providers::claims_of;

/// The code an authenticator app with `secret` shows `offset` seconds from now.
pub(crate) fn code_at(secret: &str, offset: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    Builder::new()
        .with_secret(Secret::try_from_base32(secret).unwrap())
        .build()
        .unwrap()
        .generate((now + offset) as u64)
        .to_string()
}

/// Calls the API at `path`, as `token` if given, with a JSON `body` if given: the status and the JSON answer.
pub(crate) async fn call(
    s: &Server,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut r = s.client.request(method, format!("{}{path}", s.base));
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    if let Some(b) = body {
        r = r.json(&b);
    }
    let r = r.send().await.unwrap();
    let st = r.status().as_u16();
    (st, r.json().await.unwrap_or(Value::Null))
}

/// Password, then the second factor with `code`: the page the second factor answers with.
async fn sign_in_with_code(
    b: &mut Browser,
    client_id: &str,
    challenge: &str,
    email: &str,
    code: &str,
) -> crate::login::Page {
    let page = b
        .sign_in(
            &authorize_path(client_id, REDIRECT, challenge, &[]),
            email,
            PASSWORD,
        )
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body.contains(r#"name="method" value="totp""#),
        "{}",
        page.body
    );
    assert!(
        page.body.contains(r#"name="code""#) && page.body.contains("one-time-code"),
        "{}",
        page.body
    );
    // No session opens on the first factor alone.
    assert!(!b.cookies.contains_key("gh_session"));
    let request = page
        .body
        .split(r#"name="request" value=""#)
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap()
        .to_string();
    b.post(
        "/login",
        &[
            ("request", request.as_str()),
            ("method", "totp"),
            ("code", code),
        ],
    )
    .await
}

/// Signs `email` in to the console with the password and then the second factor `code`, and
/// returns the console's access token: one for Gatehouse's own APIs, with both factors.
async fn console_token_with_code(s: &Server, email: &str, code: &str) -> String {
    let mut b = Browser::new(s);
    let (verifier, challenge) = pkce();
    let page = sign_in_with_code(&mut b, CONSOLE, &challenge, email, code).await;
    assert_eq!(page.status, 303, "{}", page.body);
    let q = query_of(page.location.as_deref().unwrap());
    let tokens = console_exchange(s, &q["code"], &verifier).await;
    let at = tokens["access_token"].as_str().unwrap().to_string();
    let amr = claims_of(&at)["amr"].clone();
    assert!(amr.as_array().unwrap().contains(&json!("mfa")), "{amr}");
    at
}

#[tokio::test(flavor = "multi_thread")]
async fn an_authenticator_app_is_set_up_and_asked_for_at_every_sign_in() {
    let s = Server::start(Backend::Sqlite).await;
    let (client_id, secret, ada) = tenant(&s, "acme").await;
    // Gatehouse's own API takes the console's tokens.
    let pwd_token = console_token(&s, &ada).await;
    let t = Some(pwd_token.as_str());
    use reqwest::Method;

    assert_eq!(
        call(&s, Method::GET, "/api/me/mfa", t, None).await,
        (200, json!({ "totp": false, "passkeys": [] }))
    );
    assert_eq!(
        call(&s, Method::GET, "/api/me/mfa", None, None).await.0,
        401
    );
    assert_eq!(
        call(&s, Method::POST, "/api/me/mfa/totp", None, None)
            .await
            .0,
        401
    );
    // Confirming with nothing waiting.
    let (st, e) = call(
        &s,
        Method::POST,
        "/api/me/mfa/totp/confirm",
        t,
        Some(json!({ "code": "123456" })),
    )
    .await;
    assert_eq!(st, 400, "{e}");

    // A new secret: an otpauth URI and a QR code of it.
    let (st, enrol) = call(&s, Method::POST, "/api/me/mfa/totp", t, None).await;
    assert_eq!(st, 200, "{enrol}");
    let totp_secret = enrol["secret"].as_str().unwrap().to_string();
    let uri = enrol["otpauth_uri"].as_str().unwrap();
    assert!(
        uri.starts_with("otpauth://totp/") && uri.contains(&format!("secret={totp_secret}")),
        "{uri}"
    );
    assert!(
        uri.contains("ada%40acme.example.com") || uri.contains("ada@acme.example.com"),
        "{uri}"
    );
    let svg = enrol["qr_svg"].as_str().unwrap();
    assert!(svg.contains("<svg") && svg.contains("</svg>"), "{svg}");

    // Bad confirmations change nothing.
    for (body, status) in [
        (json!({ "code": "abc" }), 400),
        (json!({ "code": "" }), 400),
        (json!({ "code": code_at(&totp_secret, 0), "extra": 1 }), 400),
        (json!({ "code": code_at(&totp_secret, -600) }), 400),
    ] {
        let (st, e) = call(
            &s,
            Method::POST,
            "/api/me/mfa/totp/confirm",
            t,
            Some(body.clone()),
        )
        .await;
        assert_eq!(st, status, "{body}: {e}");
    }
    assert_eq!(
        call(&s, Method::GET, "/api/me/mfa", t, None).await.1,
        json!({ "totp": false, "passkeys": [] })
    );

    // The first right code sets it up and answers ten recovery codes, this once.
    let (st, done) = call(
        &s,
        Method::POST,
        "/api/me/mfa/totp/confirm",
        t,
        Some(json!({ "code": code_at(&totp_secret, 0) })),
    )
    .await;
    assert_eq!(st, 200, "{done}");
    let recovery: Vec<String> = done["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    assert_eq!(recovery.len(), 10);
    assert_eq!(
        call(&s, Method::GET, "/api/me/mfa", t, None).await.1,
        json!({ "totp": true, "passkeys": [] })
    );
    // Set up, it guards every further change of factors: the password alone no longer
    // reaches them.
    assert_eq!(
        call(&s, Method::POST, "/api/me/mfa/totp", t, None).await.0,
        403
    );
    // Removing it needs a sign-in that used it.
    assert_eq!(
        call(&s, Method::DELETE, "/api/me/mfa/totp", t, None)
            .await
            .0,
        403
    );

    // Signing in now asks for a code; a wrong one is refused and asked again.
    let mut b = Browser::new(&s);
    let (verifier, challenge) = pkce();
    let mut page = sign_in_with_code(&mut b, &client_id, &challenge, &ada, "000000").await;
    assert_eq!(page.status, 401, "{}", page.body);
    assert!(page.body.contains("not right"), "{}", page.body);
    assert!(!b.cookies.contains_key("gh_session"));
    // The drift window is one step either way: codes two steps away are refused.
    for offset in [-60, 60] {
        let request = page
            .body
            .split(r#"name="request" value=""#)
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap()
            .to_string();
        page = b
            .post(
                "/login",
                &[
                    ("request", request.as_str()),
                    ("method", "totp"),
                    ("code", code_at(&totp_secret, offset).as_str()),
                ],
            )
            .await;
        assert_eq!(page.status, 401, "{offset}: {}", page.body);
        assert!(page.body.contains("not right"), "{}", page.body);
        assert!(!b.cookies.contains_key("gh_session"));
    }
    // The next step's code (the current one was spent setting it up) signs in.
    let next = code_at(&totp_secret, 30);
    let request = page
        .body
        .split(r#"name="request" value=""#)
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap()
        .to_string();
    let page = b
        .post(
            "/login",
            &[
                ("request", request.as_str()),
                ("method", "totp"),
                ("code", next.as_str()),
            ],
        )
        .await;
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
    assert_eq!(amr, json!(["pwd", "otp", "mfa"]), "{tokens}");
    // The console's token of the same session carries the same methods.
    let mfa_token = console_token_in(&mut b, &s).await;
    assert_eq!(claims_of(&mfa_token)["amr"], amr);
    assert_eq!(
        call(&s, Method::POST, "/api/me/mfa/totp", Some(&mfa_token), None)
            .await
            .0,
        409,
        "one authenticator app at a time"
    );

    // A code is accepted once.
    let mut b = Browser::new(&s);
    let (_, challenge) = pkce();
    let page = sign_in_with_code(&mut b, &client_id, &challenge, &ada, &next).await;
    assert_eq!(page.status, 401, "{}", page.body);
    // A recovery code signs in, once.
    let mut b = Browser::new(&s);
    let (_, challenge) = pkce();
    let page = sign_in_with_code(
        &mut b,
        &client_id,
        &challenge,
        &ada,
        &recovery[3].to_uppercase(),
    )
    .await;
    assert_eq!(page.status, 303, "{}", page.body);
    let mut b = Browser::new(&s);
    let (_, challenge) = pkce();
    let page = sign_in_with_code(&mut b, &client_id, &challenge, &ada, &recovery[3]).await;
    assert_eq!(page.status, 401, "{}", page.body);
    // A second factor without a first is no sign-in.
    let mut b = Browser::new(&s);
    let (_, challenge) = pkce();
    let start = b
        .get(&authorize_path(&client_id, REDIRECT, &challenge, &[]))
        .await;
    let login = start.location.unwrap();
    let request = login.trim_start_matches("/login?request=").to_string();
    let page = b
        .post(
            "/login",
            &[
                ("request", request.as_str()),
                ("method", "totp"),
                ("code", recovery[4].as_str()),
            ],
        )
        .await;
    assert_eq!(page.status, 400, "{}", page.body);
    assert!(!b.cookies.contains_key("gh_session"));

    // The device page asks for the code too, before any session opens.
    let tv = crate::login::admin(
        &s,
        &[
            "service",
            "create",
            "--first-party",
            "--org",
            "acme",
            "--name",
            "TV",
            "--public",
            "--grant",
            "urn:ietf:params:oauth:grant-type:device_code",
        ],
        "",
    )
    .await
    .unwrap();
    let tv_id = tv["client_id"].as_str().unwrap().to_string();
    let r = s
        .client
        .post(format!("{}/oauth2/device_authorization", s.base))
        .form(&[("client_id", tv_id.as_str()), ("scope", "openid")])
        .send()
        .await
        .unwrap();
    let grant: Value = r.json().await.unwrap();
    let user_code = grant["user_code"].as_str().unwrap().to_string();
    let device_code = grant["device_code"].as_str().unwrap().to_string();
    let mut phone = Browser::new(&s);
    let page = phone.get(&format!("/device?user_code={user_code}")).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let csrf = phone.cookies["gh_csrf"].clone();
    let page = phone
        .post(
            "/device",
            &[
                ("csrf", &csrf),
                ("user_code", &user_code),
                ("email", &ada),
                ("password", PASSWORD),
                ("action", "allow"),
            ],
        )
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("one-time-code"), "{}", page.body);
    assert!(!phone.cookies.contains_key("gh_session"));
    let first_factor = |body: &str| {
        body.split(r#"name="first_factor" value=""#)
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap()
            .to_string()
    };
    let token = first_factor(&page.body);
    let (c, u) = (csrf.as_str(), user_code.as_str());
    // A wrong code: asked again, under a new token; the old one is used up.
    let page = phone
        .post(
            "/device",
            &[
                ("csrf", c),
                ("user_code", u),
                ("first_factor", &token),
                ("code", "000000"),
                ("action", "allow"),
            ],
        )
        .await;
    assert_eq!(page.status, 401, "{}", page.body);
    assert!(page.body.contains("not right"), "{}", page.body);
    let token2 = first_factor(&page.body);
    assert_ne!(token, token2);
    let page = phone
        .post(
            "/device",
            &[
                ("csrf", c),
                ("user_code", u),
                ("first_factor", &token),
                ("code", &recovery[6]),
                ("action", "allow"),
            ],
        )
        .await;
    assert_eq!(page.status, 400, "{}", page.body);
    assert!(page.body.contains("expired"), "{}", page.body);
    assert!(!phone.cookies.contains_key("gh_session"));
    // The right one (here a recovery code) connects the device, with both factors.
    let page = phone
        .post(
            "/device",
            &[
                ("csrf", c),
                ("user_code", u),
                ("first_factor", &token2),
                ("code", &recovery[6]),
                ("action", "allow"),
            ],
        )
        .await;
    let page = crate::login::confirm_device(&mut phone, page).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("Device connected"), "{}", page.body);
    assert!(phone.cookies.contains_key("gh_session"));
    let r = s
        .client
        .post(format!("{}/oauth2/token", s.base))
        .form(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("device_code", device_code.as_str()),
            ("client_id", tv_id.as_str()),
        ])
        .send()
        .await
        .unwrap();
    let tokens: Value = r.json().await.unwrap();
    let amr = claims_of(tokens["id_token"].as_str().unwrap())["amr"].clone();
    assert!(amr.as_array().unwrap().contains(&json!("mfa")), "{tokens}");

    // From a sign-in that used it, it can be removed; then the password alone signs in.
    assert_eq!(
        call(
            &s,
            Method::DELETE,
            "/api/me/mfa/totp",
            Some(&mfa_token),
            None
        )
        .await
        .0,
        204
    );
    assert_eq!(
        call(
            &s,
            Method::DELETE,
            "/api/me/mfa/totp",
            Some(&mfa_token),
            None
        )
        .await
        .0,
        404
    );
    assert_eq!(
        call(&s, Method::GET, "/api/me/mfa", Some(&mfa_token), None)
            .await
            .1,
        json!({ "totp": false, "passkeys": [] })
    );
    let mut b = Browser::new(&s);
    let (_, challenge) = pkce();
    let page = b
        .sign_in(
            &authorize_path(&client_id, REDIRECT, &challenge, &[]),
            &ada,
            PASSWORD,
        )
        .await;
    assert_eq!(page.status, 303, "{}", page.body);
}

/// Platform administration needs the platform's owner signed in with a second factor: with
/// an authenticator app set up, tiers change and plugins are uploaded over HTTP.
#[tokio::test(flavor = "multi_thread")]
async fn the_platform_owner_with_a_second_factor_administers_the_platform() {
    use gatehouse_plugin_host::embedded::{HOSTILE, PASSWORD as PASSWORD_PLUGIN};
    use reqwest::Method;
    let mut opts = crate::harness::ServerOptions::new(Backend::Sqlite);
    opts.env.push((
        "GATEHOUSE_PLUGIN_CAPABILITIES".into(),
        crate::plugins::ALL_CAPABILITIES.into(),
    ));
    opts.env
        .push(("PLATFORM_OWNER_EMAIL".into(), "root@gatehouse.test".into()));
    opts.env
        .push(("PLATFORM_OWNER_PASSWORD".into(), PASSWORD.into()));
    let s = Server::start_with(opts).await;
    let (_, _, ada) = tenant(&s, "acme").await;
    let root = "root@gatehouse.test";
    let pwd = console_token(&s, root).await;
    let ada_token = console_token(&s, &ada).await;
    let limits = json!({ "max_users": 2, "max_services": 1 });
    assert_eq!(
        call(
            &s,
            Method::PUT,
            "/api/tiers/pro",
            Some(&pwd),
            Some(limits.clone())
        )
        .await
        .0,
        403
    );

    // The owner sets up an authenticator app and signs in with it.
    let (st, enrol) = call(&s, Method::POST, "/api/me/mfa/totp", Some(&pwd), None).await;
    assert_eq!(st, 200, "{enrol}");
    let totp_secret = enrol["secret"].as_str().unwrap().to_string();
    let (st, _) = call(
        &s,
        Method::POST,
        "/api/me/mfa/totp/confirm",
        Some(&pwd),
        Some(json!({ "code": code_at(&totp_secret, 0) })),
    )
    .await;
    assert_eq!(st, 200);
    let mfa = console_token_with_code(&s, root, &code_at(&totp_secret, 30)).await;
    let (st, tier) = call(
        &s,
        Method::PUT,
        "/api/tiers/pro",
        Some(&mfa),
        Some(limits.clone()),
    )
    .await;
    assert!(st == 200 || st == 201, "{st} {tier}");
    let (_, tiers) = call(&s, Method::GET, "/api/tiers", Some(&mfa), None).await;
    assert!(
        tiers["tiers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "pro"),
        "{tiers}"
    );
    // Having set it up, the owner's password-only token no longer changes anything.
    assert_eq!(
        call(
            &s,
            Method::PUT,
            "/api/tiers/pro",
            Some(&pwd),
            Some(limits.clone())
        )
        .await
        .0,
        403
    );

    // Uploading a plugin: checked like a directory plugin, refused with the reason.
    use base64::Engine;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let upload = json!({ "manifest": HOSTILE.manifest, "wasm": b64(HOSTILE.wasm) });
    for (who, status) in [(&pwd, 403), (&ada_token, 403)] {
        assert_eq!(
            call(
                &s,
                Method::POST,
                "/api/plugins",
                Some(who),
                Some(upload.clone())
            )
            .await
            .0,
            status
        );
    }
    for (body, needle) in [
        (
            json!({ "manifest": HOSTILE.manifest, "wasm": "not base64!" }),
            "base64",
        ),
        (
            json!({ "manifest": HOSTILE.manifest, "wasm": b64(b"\0asm garbage") }),
            "not a valid WebAssembly component",
        ),
        (
            json!({ "manifest": "id = 3", "wasm": b64(HOSTILE.wasm) }),
            "plugin.toml",
        ),
        (
            json!({ "manifest": HOSTILE.manifest.replace(r#", "http""#, ""), "wasm": b64(HOSTILE.wasm) }),
            "does not declare",
        ),
        (
            json!({ "manifest": PASSWORD_PLUGIN.manifest, "wasm": b64(PASSWORD_PLUGIN.wasm) }),
            "first-party",
        ),
        (json!({ "manifest": HOSTILE.manifest }), "wasm"),
    ] {
        let (st, e) = call(&s, Method::POST, "/api/plugins", Some(&mfa), Some(body)).await;
        assert_eq!(st, 400, "{needle}: {e}");
        assert!(e.to_string().contains(needle), "{needle}: {e}");
    }
    let (_, listed) = call(&s, Method::GET, "/api/plugins", Some(&mfa), None).await;
    assert!(!listed.to_string().contains("\"hostile\""), "{listed}");

    let (st, got) = call(
        &s,
        Method::POST,
        "/api/plugins",
        Some(&mfa),
        Some(upload.clone()),
    )
    .await;
    assert_eq!(st, 201, "{got}");
    assert_eq!(
        (got["id"].as_str(), got["first_party"].as_bool()),
        (Some("hostile"), Some(false)),
        "{got}"
    );
    let (_, listed) = call(&s, Method::GET, "/api/plugins", Some(&ada_token), None).await;
    assert!(
        listed["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["id"] == "hostile"),
        "{listed}"
    );
    // It is kept: the database holds it.
    let db = std::fs::read(s.data_dir().join("gatehouse.db")).unwrap_or_default();
    let wal = std::fs::read(s.data_dir().join("gatehouse.db-wal")).unwrap_or_default();
    let needle = br#"display-name = "Hostile""#;
    assert!(
        [db, wal]
            .iter()
            .any(|f| f.windows(needle.len()).any(|w| w == needle)),
        "the uploaded plugin is not in the database"
    );

    // Removing: not a first-party plugin, only an uploaded one, and only by the owner.
    assert_eq!(
        call(
            &s,
            Method::DELETE,
            "/api/plugins/password",
            Some(&mfa),
            None
        )
        .await
        .0,
        400
    );
    assert_eq!(
        call(
            &s,
            Method::DELETE,
            "/api/plugins/hostile",
            Some(&ada_token),
            None
        )
        .await
        .0,
        403
    );
    assert_eq!(
        call(&s, Method::DELETE, "/api/plugins/hostile", Some(&mfa), None)
            .await
            .0,
        204
    );
    assert_eq!(
        call(&s, Method::DELETE, "/api/plugins/hostile", Some(&mfa), None)
            .await
            .0,
        404
    );
    let (_, listed) = call(&s, Method::GET, "/api/plugins", Some(&mfa), None).await;
    assert!(
        !listed["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["id"] == "hostile"),
        "{listed}"
    );
}

/// The second factor served for a step-up the login policy asks for: a session opened with the
/// password alone, reused from another address and device, is a medium-risk sign-in, which the
/// platform policy refuses with a `@challenge`; the user has an authenticator app, so the
/// sign-in continues with the code form instead of ending there.
#[tokio::test(flavor = "multi_thread")]
async fn a_risky_sign_in_is_stepped_up_with_the_authenticator_app() {
    use reqwest::Method;
    let s = Server::start(Backend::Sqlite).await;
    let (client_id, secret, ada) = tenant(&s, "acme").await;

    // Ada signs in with her password (her first sign-in: the baseline of her history).
    let mut home = Browser::new(&s);
    let (_, challenge) = pkce();
    let page = home
        .sign_in(
            &authorize_path(&client_id, REDIRECT, &challenge, &[]),
            &ada,
            PASSWORD,
        )
        .await;
    assert_eq!(page.status, 303, "{}", page.body);
    assert!(home.cookies.contains_key("gh_session") && home.cookies.contains_key("gh_device"));

    // Then she sets up an authenticator app (through the console: Gatehouse's own API takes
    // its tokens only).
    let t = console_token(&s, &ada).await;
    let (st, enrol) = call(&s, Method::POST, "/api/me/mfa/totp", Some(&t), None).await;
    assert_eq!(st, 200, "{enrol}");
    let totp_secret = enrol["secret"].as_str().unwrap().to_string();
    let (st, e) = call(
        &s,
        Method::POST,
        "/api/me/mfa/totp/confirm",
        Some(&t),
        Some(json!({ "code": code_at(&totp_secret, 0) })),
    )
    .await;
    assert_eq!(st, 200, "{e}");
    let recovery = e["recovery_codes"][0].as_str().unwrap().to_string();

    // Her password-only session, from another address and without the device cookie: new
    // address (10) and new device (20) make a medium risk (30).
    let mut cookies = home.cookies.clone();
    cookies.remove("gh_device");
    let mut away = Browser::from_address(&s, "127.0.0.2".parse().unwrap(), cookies);
    let (verifier, challenge) = pkce();
    let page = away
        .get(&authorize_path(&client_id, REDIRECT, &challenge, &[]))
        .await;
    assert_eq!(page.status, 200, "a step-up, not a redirect: {}", page.body);
    assert!(
        page.body.contains(r#"name="method" value="totp""#),
        "{}",
        page.body
    );
    let request = page
        .body
        .split(r#"name="request" value=""#)
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap()
        .to_string();
    // A wrong code is refused, and nothing is issued.
    let wrong = away
        .post(
            "/login",
            &[
                ("request", request.as_str()),
                ("method", "totp"),
                ("code", "000000"),
            ],
        )
        .await;
    assert_eq!(wrong.status, 401, "{}", wrong.body);
    assert!(wrong.location.is_none());
    let request = wrong
        .body
        .split(r#"name="request" value=""#)
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap()
        .to_string();
    // The right one (the next step's: this one was spent setting the app up) completes the
    // sign-in, with the second factor in the tokens.
    let done = away
        .post(
            "/login",
            &[
                ("request", request.as_str()),
                ("method", "totp"),
                ("code", &code_at(&totp_secret, 30)),
            ],
        )
        .await;
    assert_eq!(done.status, 303, "{}", done.body);
    let q = query_of(done.location.as_deref().unwrap());
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
    assert!(
        amr.as_array().unwrap().contains(&json!("otp"))
            && amr.as_array().unwrap().contains(&json!("mfa")),
        "{amr}"
    );
    // The policy's demand is in the audit log, with what it asked for.
    crate::login::admin(
        &s,
        &[
            "user",
            "create",
            "--email",
            "alice@acme.io",
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
    let alice = console_token(&s, "alice@acme.io").await;
    let (st, audit) = call(
        &s,
        Method::GET,
        "/api/organizations/acme/audit?kind=login.step_up_required",
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(st, 200, "{audit}");
    let events = audit["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{audit}");
    assert_eq!(
        events[0]["details"]["challenge"],
        json!(["otp", "hwk", "webauthn"]),
        "{audit}"
    );

    // Wrong codes count towards a lockout like wrong passwords, for the address guessing:
    // guessing the code after a stolen password locks that address out of the account's
    // second factor, even with the right code; the owner elsewhere is not refused.
    let mut thief = Browser::new(&s);
    let (_, challenge) = pkce();
    let mut page = sign_in_with_code(&mut thief, &client_id, &challenge, &ada, "111111").await;
    let mut tries = 1;
    while page.status == 401 && tries < 10 {
        let request = page
            .body
            .split(r#"name="request" value=""#)
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap()
            .to_string();
        page = thief
            .post(
                "/login",
                &[
                    ("request", request.as_str()),
                    ("method", "totp"),
                    ("code", "111111"),
                ],
            )
            .await;
        tries += 1;
    }
    assert_eq!(page.status, 429, "after {tries} wrong codes: {}", page.body);
    assert!(page.body.contains("locked"), "{}", page.body);
    assert!(tries <= 5, "locked only after {tries} wrong codes");
    // Codes of past steps are spent; a recovery code is as good.
    let right = recovery;
    let mut again = Browser::new(&s);
    let (_, challenge) = pkce();
    let p = sign_in_with_code(&mut again, &client_id, &challenge, &ada, &right).await;
    assert_eq!(p.status, 429, "{}", p.body);
    assert!(p.location.is_none() && !again.cookies.contains_key("gh_session"));
    let mut owner = Browser::from_address(&s, "127.0.0.3".parse().unwrap(), Default::default());
    let p = sign_in_with_code(&mut owner, &client_id, &challenge, &ada, &right).await;
    assert_eq!(p.status, 303, "the owner was locked out: {}", p.body);
}

/// The digest of the `hostile` plugin `s` has installed, as its plugin list shows it.
async fn hostile_on(s: &Server, token: &str) -> Option<String> {
    let (st, listed) = call(s, reqwest::Method::GET, "/api/plugins", Some(token), None).await;
    assert_eq!(st, 200, "{listed}");
    listed["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == "hostile")
        .map(|p| p["sha256"].as_str().unwrap().to_string())
}

/// A plugin uploaded through one node is installed on the others within seconds, and a
/// removal reaches them the same way (each node looks at the uploads every 2 s).
#[tokio::test(flavor = "multi_thread")]
async fn an_uploaded_plugin_reaches_every_node() {
    use gatehouse_plugin_host::embedded::HOSTILE;
    use reqwest::Method;
    let mut opts = crate::login::deployment();
    opts.env.push((
        "GATEHOUSE_PLUGIN_CAPABILITIES".into(),
        crate::plugins::ALL_CAPABILITIES.into(),
    ));
    opts.env
        .push(("PLATFORM_OWNER_EMAIL".into(), "root@gatehouse.test".into()));
    opts.env
        .push(("PLATFORM_OWNER_PASSWORD".into(), PASSWORD.into()));
    // Sessions are shared through Redis, as in any deployment of several nodes.
    opts.redis = Some((
        crate::harness::REDIS_URL.into(),
        format!("gh-test-{}", ulid::Ulid::new()),
    ));
    let a = Server::start_with(opts.clone()).await;
    opts.database = a.database.clone();
    let b = Server::start_with(opts).await;
    let (_, _, ada) = tenant(&a, "acme").await;
    let root = "root@gatehouse.test";
    let pwd = console_token(&a, root).await;
    let (st, enrol) = call(&a, Method::POST, "/api/me/mfa/totp", Some(&pwd), None).await;
    assert_eq!(st, 200, "{enrol}");
    let totp_secret = enrol["secret"].as_str().unwrap().to_string();
    let (st, _) = call(
        &a,
        Method::POST,
        "/api/me/mfa/totp/confirm",
        Some(&pwd),
        Some(json!({ "code": code_at(&totp_secret, 0) })),
    )
    .await;
    assert_eq!(st, 200);
    let mfa = console_token_with_code(&a, root, &code_at(&totp_secret, 30)).await;
    let ada_token = console_token(&a, &ada).await;
    let within = |what: &'static str| {
        let started = std::time::Instant::now();
        move || {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(10),
                "{what} never reached the other node"
            )
        }
    };
    assert_eq!(hostile_on(&b, &ada_token).await, None);

    use base64::Engine;
    let upload = json!({
        "manifest": HOSTILE.manifest,
        "wasm": base64::engine::general_purpose::STANDARD.encode(HOSTILE.wasm),
    });
    let (st, got) = call(&a, Method::POST, "/api/plugins", Some(&mfa), Some(upload)).await;
    assert_eq!(st, 201, "{got}");
    let sha = got["sha256"].as_str().unwrap().to_string();
    assert_eq!(
        hostile_on(&a, &ada_token).await.as_deref(),
        Some(sha.as_str())
    );
    let check = within("the upload");
    while hostile_on(&b, &ada_token).await.as_deref() != Some(sha.as_str()) {
        check();
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }

    let (st, _) = call(&a, Method::DELETE, "/api/plugins/hostile", Some(&mfa), None).await;
    assert_eq!(st, 204);
    assert_eq!(hostile_on(&a, &ada_token).await, None);
    let check = within("the removal");
    while hostile_on(&b, &ada_token).await.is_some() {
        check();
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// An invitation accepted by a user with an authenticator app: the password on the invitation
/// page joins the organization but opens no session (the page does not ask for the code); the
/// user then signs in to the organization's applications with both factors.
#[tokio::test(flavor = "multi_thread")]
async fn an_invitation_is_accepted_by_a_user_with_a_second_factor() {
    use crate::account::{link_in_mail, path_of};
    use reqwest::Method;
    let s = Server::start(Backend::Sqlite).await;
    let (_, _, ada) = tenant(&s, "acme").await;
    let t = console_token(&s, &ada).await;
    let (st, enrol) = call(&s, Method::POST, "/api/me/mfa/totp", Some(&t), None).await;
    assert_eq!(st, 200, "{enrol}");
    let totp_secret = enrol["secret"].as_str().unwrap().to_string();
    let (st, _) = call(
        &s,
        Method::POST,
        "/api/me/mfa/totp/confirm",
        Some(&t),
        Some(json!({ "code": code_at(&totp_secret, 0) })),
    )
    .await;
    assert_eq!(st, 200);

    // Another organization's admin invites her.
    let (g_client, _, _) = tenant(&s, "globex").await;
    crate::login::admin(
        &s,
        &[
            "user",
            "create",
            "--email",
            "boss@globex.io",
            "--password-stdin",
            "--org",
            "globex",
            "--role",
            "admin",
        ],
        &format!("{PASSWORD}\n"),
    )
    .await
    .unwrap();
    let boss = console_token(&s, "boss@globex.io").await;
    let (st, inv) = call(
        &s,
        Method::POST,
        "/api/organizations/globex/invitations",
        Some(&boss),
        Some(json!({ "email": ada, "role": "member" })),
    )
    .await;
    assert_eq!(st, 201, "{inv}");
    let prefix = format!("{}/invitations/accept?token=", s.base);
    let link = link_in_mail(&s.data_dir().join("outbox"), &ada, 1, &prefix).await;
    let token = link.split("token=").nth(1).unwrap().to_string();
    let mut b = Browser::new(&s);
    let page = b.get(&path_of(&link, &s.base)).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let csrf = b.cookies["gh_form"].clone();
    let p = b
        .post(
            "/invitations/accept",
            &[
                ("csrf", &csrf),
                ("token", &token),
                ("password", "wrong password"),
            ],
        )
        .await;
    assert_eq!(p.status, 401, "{}", p.body);
    let p = b
        .post(
            "/invitations/accept",
            &[("csrf", &csrf), ("token", &token), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(p.status, 200, "{}", p.body);
    assert!(p.body.contains("authenticator app"), "{}", p.body);
    assert!(
        !b.cookies.contains_key("gh_session"),
        "a session opened on the password alone"
    );
    let (st, members) = call(
        &s,
        Method::GET,
        "/api/organizations/globex/members",
        Some(&boss),
        None,
    )
    .await;
    assert_eq!(st, 200, "{members}");
    assert!(
        members["members"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["email"] == ada.as_str() && m["role"] == "member"),
        "{members}"
    );
    // She signs in to globex's service with both factors.
    let (_, challenge) = pkce();
    let page = sign_in_with_code(
        &mut b,
        &g_client,
        &challenge,
        &ada,
        &code_at(&totp_secret, 30),
    )
    .await;
    assert_eq!(page.status, 303, "{}", page.body);
    assert!(page.location.as_deref().unwrap().starts_with(REDIRECT));
}
