//! Attacks on Gatehouse's trust boundaries (DESIGN.md, "Trust boundaries"; docs/security.md),
//! each performed end to end against the real binary as a hostile relying party, tenant or
//! anonymous client would, asserting that the harm does not happen.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Backend, Server, ServerOptions, for_each_backend};
use crate::login::{
    Browser, PASSWORD, REDIRECT, admin, authorize_path, code_for, console_token, pkce, tenant,
    token, tokens_for,
};

/// `method path` with `Authorization: Bearer <bearer>`; the status and the JSON body (null if
/// it is not JSON).
async fn call(
    s: &Server,
    method: reqwest::Method,
    path: &str,
    bearer: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut r = s
        .client
        .request(method, format!("{}{path}", s.base))
        .bearer_auth(bearer);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let r = r.send().await.unwrap();
    let st = r.status().as_u16();
    let text = r.text().await.unwrap();
    (st, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Whether the server still answers `/healthz`.
async fn alive(s: &Server) -> bool {
    s.client
        .get(format!("{}/healthz", s.base))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .is_ok_and(|r| r.status() == 200)
}

/// A service API key (`ak_live_…`) of a new active organization `slug`, its service and the
/// service's secret.
async fn tenant_key(s: &Server, slug: &str) -> (String, String, String) {
    let (client_id, secret, _) = tenant(s, slug).await;
    let key = admin(
        s,
        &["apikey", "create", "--service", &client_id, "--name", "k"],
        "",
    )
    .await
    .unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string();
    (key, client_id, secret)
}

/// Item 1: a relying party holding a user's access token for itself tries Gatehouse's own
/// APIs with it — read the user's sessions, enrol its own authenticator app on the account,
/// create a service in the user's organization, sign the user out everywhere.
#[tokio::test(flavor = "multi_thread")]
async fn a_relying_partys_token_does_not_reach_gatehouses_apis() {
    let s = Server::start(Backend::Sqlite).await;
    let (client_id, secret, email) = tenant(&s, "acme").await;
    let theirs = tokens_for(&s, &client_id, &secret, &email).await;
    let at = theirs["access_token"].as_str().unwrap();
    let claims = crate::providers::claims_of(at);
    assert_eq!(claims["aud"], json!(client_id), "{claims}");

    use reqwest::Method as M;
    for (method, path, body) in [
        (M::GET, "/api/me/sessions", None),
        (M::GET, "/api/me/mfa", None),
        (M::POST, "/api/me/mfa/totp", None),
        (M::POST, "/api/me/mfa/passkey", None),
        (M::POST, "/api/me/verify-email", None),
        (M::GET, "/api/organizations", None),
        (M::GET, "/api/organizations/acme/members", None),
        (
            M::POST,
            "/api/organizations/acme/services",
            Some(json!({ "name": "evil", "grant_types": ["client_credentials"] })),
        ),
        (M::DELETE, "/api/me/sessions", None),
    ] {
        let (st, out) = call(&s, method.clone(), path, at, body).await;
        assert_eq!(
            st, 401,
            "{method} {path} with a relying party's token: {out}"
        );
    }
    // Nothing happened: no factor enrolled, no service created, the sessions still live.
    let console = console_token(&s, &email).await;
    let (st, mfa) = call(&s, M::GET, "/api/me/mfa", &console, None).await;
    assert_eq!(st, 200, "{mfa}");
    assert_eq!(mfa["totp"], json!(false), "{mfa}");
    let (st, sessions) = call(&s, M::GET, "/api/me/sessions", &console, None).await;
    assert_eq!(st, 200, "{sessions}");
    assert!(
        sessions["sessions"].as_array().unwrap().len() >= 2,
        "the relying party's token ended sessions: {sessions}"
    );
    // The relying party's token still does what it is for.
    let r = s
        .client
        .get(format!("{}/oauth2/userinfo", s.base))
        .bearer_auth(at)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // A service's own client-credentials token is no key to the management API either.
    let (st, cc) = token(
        &s,
        &[("grant_type", "client_credentials")],
        Some((&client_id, &secret)),
    )
    .await;
    if st == 200 {
        let (st, out) = call(
            &s,
            M::GET,
            "/api/organizations/acme",
            cc["access_token"].as_str().unwrap(),
            None,
        )
        .await;
        assert_eq!(st, 401, "{out}");
    }
}

/// Item 1: a stolen console token that is no longer fresh cannot add a factor to the account
/// (a recent sign-in is needed), while it still reads.
#[tokio::test(flavor = "multi_thread")]
async fn factors_change_only_after_a_recent_sign_in() {
    let mut opts = ServerOptions::new(Backend::Sqlite);
    opts.env.push(("GATEHOUSE_REAUTH_SECS".into(), "2".into()));
    let s = Server::start_with(opts).await;
    let (_, _, email) = tenant(&s, "acme").await;
    let console = console_token(&s, &email).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    use reqwest::Method as M;
    let (st, out) = call(&s, M::POST, "/api/me/mfa/totp", &console, None).await;
    assert_eq!(st, 401, "{out}");
    assert_eq!(out["code"], "reauthentication_required", "{out}");
    let (st, out) = call(&s, M::POST, "/api/me/mfa/passkey", &console, None).await;
    assert_eq!(st, 401, "{out}");
    let (st, mfa) = call(&s, M::GET, "/api/me/mfa", &console, None).await;
    assert_eq!((st, &mfa["totp"]), (200, &json!(false)), "{mfa}");
    // A fresh sign-in may.
    let fresh = console_token(&s, &email).await;
    let (st, out) = call(&s, M::POST, "/api/me/mfa/totp", &fresh, None).await;
    assert_eq!(st, 200, "{out}");
}

/// Item 5: an attacker sends the victim's browser to the logout endpoint with the
/// attacker's own ID token as `id_token_hint`: the victim is asked, not signed out.
#[tokio::test(flavor = "multi_thread")]
async fn someone_elses_id_token_does_not_sign_the_browser_out() {
    let s = Server::start(Backend::Sqlite).await;
    let (victim_app, victim_secret, victim) = tenant(&s, "acme").await;
    let (evil_app, evil_secret, attacker) = tenant(&s, "evil").await;
    let mut b = Browser::new(&s);
    let (_, challenge) = pkce();
    code_for(&mut b, &victim_app, &challenge, &victim).await;
    let theirs = tokens_for(&s, &evil_app, &evil_secret, &attacker).await;
    let hint = theirs["id_token"].as_str().unwrap();
    let path = format!(
        "/oauth2/logout?{}",
        serde_urlencoded::to_string([
            ("id_token_hint", hint),
            ("post_logout_redirect_uri", REDIRECT),
        ])
        .unwrap()
    );
    let page = b.get(&path).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("Sign out?"), "{}", page.body);
    assert!(
        b.cookies.contains_key("gh_session"),
        "signed out by a stranger's hint"
    );
    // Still signed in: the next authorization needs no form.
    assert!(crate::login::still_signed_in(&mut b, &victim_app).await);
    // The browser's own ID token does sign it out without asking.
    let mut own = Browser::new(&s);
    let (verifier, challenge) = pkce();
    let code = code_for(&mut own, &victim_app, &challenge, &victim).await;
    let (st, mine) = token(
        &s,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &verifier),
        ],
        Some((&victim_app, &victim_secret)),
    )
    .await;
    assert_eq!(st, 200, "{mine}");
    let path = format!(
        "/oauth2/logout?{}",
        serde_urlencoded::to_string([("id_token_hint", mine["id_token"].as_str().unwrap())])
            .unwrap()
    );
    let page = own.get(&path).await;
    assert!(!own.cookies.contains_key("gh_session"), "{}", page.body);
    // The victim's browser is still signed in.
    assert!(b.cookies.contains_key("gh_session"));
}

/// Item 7: a stolen refresh token raced against its owner — two refreshes at once — never
/// yields two live branches of one grant: one wins, the other counts as reuse and revokes the
/// family, so neither side keeps refreshing.
async fn concurrent_refreshes_fork_no_family(backend: Backend) {
    let s = Server::start(backend).await;
    let (client_id, secret, email) = tenant(&s, "acme").await;
    for round in 0..10 {
        let t = tokens_for(&s, &client_id, &secret, &email).await;
        let rt = t["refresh_token"].as_str().unwrap().to_string();
        let form = [
            ("grant_type", "refresh_token"),
            ("refresh_token", rt.as_str()),
        ];
        let (a, b) = tokio::join!(
            token(&s, &form, Some((&client_id, &secret))),
            token(&s, &form, Some((&client_id, &secret))),
        );
        let winners: Vec<&Value> = [&a, &b]
            .into_iter()
            .filter(|(st, _)| *st == 200)
            .map(|(_, v)| v)
            .collect();
        assert_eq!(winners.len(), 1, "round {round}: {a:?} {b:?}");
        let loser = if a.0 == 200 { &b } else { &a };
        assert_eq!(
            (loser.0, loser.1["error"].as_str()),
            (400, Some("invalid_grant")),
            "round {round}: {loser:?}"
        );
        // The reuse revoked the family: the winner's new refresh token is dead as well.
        let next = winners[0]["refresh_token"].as_str().unwrap();
        let (st, out) = token(
            &s,
            &[("grant_type", "refresh_token"), ("refresh_token", next)],
            Some((&client_id, &secret)),
        )
        .await;
        assert_eq!(st, 400, "round {round}: the family forked: {out}");
    }
}

for_each_backend!(concurrent_refreshes_fork_no_family);

/// Item 10: a suspended organization keeps using its API key and its service's tokens.
#[tokio::test(flavor = "multi_thread")]
async fn suspension_stops_the_organizations_keys_and_tokens() {
    let s = Server::start(Backend::Sqlite).await;
    let (key, client_id, secret) = tenant_key(&s, "acme").await;
    let (st, store) = call(
        &s,
        reqwest::Method::POST,
        "/stores",
        &key,
        Some(json!({ "name": "acme's" })),
    )
    .await;
    assert_eq!(st, 201, "{store}");
    let store = store["id"].as_str().unwrap().to_string();
    let user_token =
        tokens_for(&s, &client_id, &secret, "ada@acme.example.com").await["access_token"]
            .as_str()
            .unwrap()
            .to_string();
    admin(&s, &["org", "suspend", "acme"], "").await.unwrap();
    let store_path = format!("/stores/{store}");
    // The suspension was written by the admin command, beside the server: it counts within
    // the engine's staleness bound (0.5 s).
    let started = std::time::Instant::now();
    loop {
        let (st, _) = call(&s, reqwest::Method::GET, &store_path, &key, None).await;
        if st == 403 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "the suspended organization's key still reads its store ({st})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    use reqwest::Method as M;
    for (method, path, body) in [
        (M::GET, "/stores".to_string(), None),
        (
            M::POST,
            "/stores".to_string(),
            Some(json!({ "name": "more" })),
        ),
        (M::GET, store_path.clone(), None),
        (
            M::POST,
            format!("{store_path}/check"),
            Some(json!({ "tuple_key": { "user": "user:a", "relation": "r", "object": "d:1" } })),
        ),
        (M::GET, "/api/organizations/acme".to_string(), None),
    ] {
        let (st, out) = call(&s, method.clone(), &path, &key, body).await;
        assert_eq!(st, 403, "{method} {path}: {out}");
        assert_eq!(out["code"], "organization_suspended", "{out}");
    }
    // The service's tokens are inactive while it is suspended.
    let introspect = |t: String| {
        let s = &s;
        let (client_id, secret) = (client_id.clone(), secret.clone());
        async move {
            let r = s
                .client
                .post(format!("{}/oauth2/introspect", s.base))
                .basic_auth(client_id, Some(secret))
                .form(&[("token", t.as_str())])
                .send()
                .await
                .unwrap();
            r.json::<Value>().await.unwrap()["active"].clone()
        }
    };
    assert_eq!(introspect(user_token.clone()).await, json!(false));
    let r = s
        .client
        .get(format!("{}/oauth2/userinfo", s.base))
        .bearer_auth(&user_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Lifting the suspension restores them.
    admin(&s, &["org", "unsuspend", "acme"], "").await.unwrap();
    let started = std::time::Instant::now();
    loop {
        let (st, _) = call(&s, M::GET, &store_path, &key, None).await;
        if st == 200 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "still refused: {st}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(introspect(user_token).await, json!(true));
}

/// Item 9: a tenant, with its own API key, sends the inputs that used to abort or pin the
/// whole server: deeply nested Cedar, long `if` chains, CEL conditions of thousands of terms
/// or member accesses, and a condition whose evaluation is cubic in its input. Each is a 400
/// for that request; the server keeps serving everybody.
#[tokio::test(flavor = "multi_thread")]
async fn tenant_input_cannot_stop_the_server() {
    let s = Server::start(Backend::Sqlite).await;
    let (key, _, _) = tenant_key(&s, "acme").await;
    use reqwest::Method as M;
    let (st, store) = call(&s, M::POST, "/stores", &key, Some(json!({ "name": "x" }))).await;
    assert_eq!(st, 201, "{store}");
    let store = store["id"].as_str().unwrap().to_string();
    let model = |conditions: Value| {
        json!({
            "schema_version": "1.1",
            "type_definitions": [
                { "type": "user" },
                { "type": "doc", "relations": { "viewer": { "this": {} } },
                  "metadata": { "relations": { "viewer": { "directly_related_user_types": [
                      { "type": "user" }, { "type": "user", "condition": "c" }
                  ] } } } }
            ],
            "conditions": conditions
        })
    };
    let condition = |expression: String, params: Value| json!({ "c": { "name": "c", "expression": expression, "parameters": params } });
    let int = json!({ "x": { "type_name": "TYPE_NAME_INT" } });
    let models = format!("/stores/{store}/authorization-models");
    for (what, expression, params) in [
        (
            "7,000 `+` terms",
            vec!["x"; 7000].join(" + ") + " > 0",
            int.clone(),
        ),
        (
            "10,000-deep member access",
            format!("m{} == 1", ".a".repeat(10_000)),
            json!({ "m": { "type_name": "TYPE_NAME_MAP", "generic_types": [{ "type_name": "TYPE_NAME_ANY" }] } }),
        ),
        (
            "3,000 nested parentheses",
            format!("{}x{} > 0", "(".repeat(3000), ")".repeat(3000)),
            int.clone(),
        ),
    ] {
        let (st, out) = call(
            &s,
            M::POST,
            &models,
            &key,
            Some(model(condition(expression, params))),
        )
        .await;
        assert_eq!(st, 400, "{what}: {out}");
        assert!(alive(&s).await, "{what} stopped the server");
    }

    // A model and a policy set to attack the policy endpoints with.
    let (st, out) = call(&s, M::POST, &models, &key, Some(model(json!({})))).await;
    let ok_model = json!({
        "schema_version": "1.1",
        "type_definitions": [
            { "type": "user" },
            { "type": "doc", "relations": { "viewer": { "this": {} } },
              "metadata": { "relations": { "viewer": { "directly_related_user_types": [{ "type": "user" }] } } } }
        ]
    });
    if st != 201 {
        let (st, out2) = call(&s, M::POST, &models, &key, Some(ok_model)).await;
        assert_eq!(st, 201, "{out} / {out2}");
    }
    let nested = format!(
        "permit (principal, action, resource) when {{ {}true{} }};",
        "(".repeat(200),
        ")".repeat(200)
    );
    let ifs = format!(
        "permit (principal, action, resource) when {{ {}true }};",
        "if true then true else ".repeat(3000)
    );
    let nots = format!(
        "permit (principal, action, resource) when {{ {}true }};",
        "!".repeat(20_000)
    );
    for (what, policies) in [
        ("200 nested parentheses", nested),
        ("3,000 `if` deep", ifs),
        ("20,000 `!`", nots),
    ] {
        for path in [
            format!("/stores/{store}/policies"),
            format!("/stores/{store}/policies/dry-run"),
        ] {
            let method = if path.ends_with("dry-run") {
                M::POST
            } else {
                M::PUT
            };
            let (st, out) = call(
                &s,
                method,
                &path,
                &key,
                Some(json!({ "policies": policies })),
            )
            .await;
            assert_eq!(st, 400, "{what} at {path}: {out}");
            assert!(alive(&s).await, "{what} at {path} stopped the server");
        }
    }

    // A condition cubic in its list: refused at evaluation, for this check only.
    let cubic = condition(
        "xs.all(a, xs.all(b, xs.all(c, true)))".into(),
        json!({ "xs": { "type_name": "TYPE_NAME_LIST", "generic_types": [{ "type_name": "TYPE_NAME_INT" }] } }),
    );
    let (st, out) = call(&s, M::POST, &models, &key, Some(model(cubic))).await;
    assert_eq!(st, 201, "{out}");
    let (st, out) = call(
        &s,
        M::POST,
        &format!("/stores/{store}/write"),
        &key,
        Some(json!({ "writes": { "tuple_keys": [
            { "user": "user:anne", "relation": "viewer", "object": "doc:1", "condition": { "name": "c" } }
        ] } })),
    )
    .await;
    assert_eq!(st, 200, "{out}");
    let xs: Vec<i64> = (0..300).collect();
    let check = json!({
        "tuple_key": { "user": "user:anne", "relation": "viewer", "object": "doc:1" },
        "context": { "xs": xs }
    });
    let check_path = format!("/stores/{store}/check");
    let attacks = (0..4).map(|_| call(&s, M::POST, &check_path, &key, Some(check.clone())));
    for (st, out) in futures::future::join_all(attacks).await {
        assert_eq!(st, 400, "{out}");
        assert!(
            out["message"]
                .as_str()
                .unwrap_or_default()
                .contains("cost budget"),
            "{out}"
        );
    }
    // The same condition over a short list is evaluated as usual.
    let small = json!({
        "tuple_key": { "user": "user:anne", "relation": "viewer", "object": "doc:1" },
        "context": { "xs": [1, 2, 3] }
    });
    let (st, out) = call(
        &s,
        M::POST,
        &format!("/stores/{store}/check"),
        &key,
        Some(small),
    )
    .await;
    assert_eq!((st, out["allowed"].as_bool()), (200, Some(true)), "{out}");
    assert!(alive(&s).await);
}

/// A browser at loopback address `127.0.0.<n>`: another client address to the server.
fn browser_at(s: &Server, n: u8) -> Browser {
    Browser::from_address(
        s,
        std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, n)),
        Default::default(),
    )
}

/// Item 6: an attacker who knows a person's address and a client's id tries to lock them
/// out — wrong passwords for the account, wrong secrets for the client — from an address of
/// their own. The owner, elsewhere, is never refused.
#[tokio::test(flavor = "multi_thread")]
async fn lockouts_cannot_be_turned_against_the_owner() {
    let mut opts = ServerOptions::new(Backend::Sqlite);
    opts.env
        .push(("GATEHOUSE_LOGIN_RATE_PER_IP".into(), "0".into()));
    let s = Server::start_with(opts).await;
    let (client_id, secret, email) = tenant(&s, "acme").await;
    let (_, challenge) = pkce();
    let path = authorize_path(&client_id, REDIRECT, &challenge, &[]);
    let mut attacker = browser_at(&s, 66);
    for _ in 0..8 {
        attacker.sign_in(&path, &email, "wrong password").await;
    }
    let p = attacker.sign_in(&path, &email, PASSWORD).await;
    assert_eq!(p.status, 429, "the guessing address is locked: {}", p.body);
    // The owner, from their own address, signs in with the right password.
    let mut owner = Browser::new(&s);
    let p = owner.sign_in(&path, &email, PASSWORD).await;
    assert_eq!(p.status, 303, "{}", p.body);
    let refresh = tokens_for(&s, &client_id, &secret, &email).await["refresh_token"]
        .as_str()
        .unwrap()
        .to_string();

    // Wrong client secrets from the attacker's address lock that address only.
    let at_66 = reqwest::Client::builder()
        .local_address(std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 66)))
        .build()
        .unwrap();
    let guess = |secret: String| {
        let (http, base, client_id) = (at_66.clone(), s.base.clone(), client_id.clone());
        async move {
            http.post(format!("{base}/oauth2/token"))
                .basic_auth(client_id, Some(secret))
                .form(&[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", "rt_nothing"),
                ])
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    for _ in 0..12 {
        guess("cs_wrong".into()).await;
    }
    assert_eq!(
        guess(secret.clone()).await,
        429,
        "the guessing address is locked"
    );
    let (st, out) = token(
        &s,
        &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
        Some((&client_id, &secret)),
    )
    .await;
    assert_eq!(st, 200, "the client's own call was refused: {out}");
}

/// Item 6: behind a trusted proxy, each client is counted under the address the proxy saw;
/// without one configured, a client's own `X-Forwarded-For` chooses nothing.
#[tokio::test(flavor = "multi_thread")]
async fn forwarded_addresses_count_only_from_trusted_proxies() {
    let mut opts = ServerOptions::new(Backend::Sqlite);
    opts.env
        .push(("GATEHOUSE_LOGIN_RATE_PER_IP".into(), "0".into()));
    opts.env.push((
        "GATEHOUSE_TRUSTED_PROXIES".into(),
        "127.0.0.1/32, ::1".into(),
    ));
    let s = Server::start_with(opts).await;
    let (client_id, _, email) = tenant(&s, "acme").await;
    let (_, challenge) = pkce();
    let path = authorize_path(&client_id, REDIRECT, &challenge, &[]);
    // Through the proxy (127.0.0.1): the attacker at 203.0.113.9 locks only themselves.
    let mut attacker = Browser::new(&s);
    attacker
        .headers
        .push(("x-forwarded-for".into(), "203.0.113.9".into()));
    for _ in 0..8 {
        attacker.sign_in(&path, &email, "wrong password").await;
    }
    assert_eq!(attacker.sign_in(&path, &email, PASSWORD).await.status, 429);
    let mut owner = Browser::new(&s);
    owner
        .headers
        .push(("x-forwarded-for".into(), "198.51.100.7".into()));
    let p = owner.sign_in(&path, &email, PASSWORD).await;
    assert_eq!(
        p.status, 303,
        "the owner behind the same proxy was refused: {}",
        p.body
    );
    // A client that is no proxy names an address of its choice: ignored, it stays locked.
    let mut direct = browser_at(&s, 77);
    for _ in 0..8 {
        direct.sign_in(&path, &email, "wrong password").await;
    }
    direct
        .headers
        .push(("x-forwarded-for".into(), "192.0.2.1".into()));
    assert_eq!(direct.sign_in(&path, &email, PASSWORD).await.status, 429);
}

/// Item 11: a tenant forges a list's continuation token to read an older revision of its
/// store (who could see what before a revocation), or replays one against another query.
#[tokio::test(flavor = "multi_thread")]
async fn continuation_tokens_cannot_be_forged_or_moved() {
    use base64::Engine as _;
    let s = Server::start(Backend::Sqlite).await;
    let (store, _) = s.sample_store().await;
    let tuples: Vec<Value> = (0..5)
        .map(|i| crate::harness::tk("user:anne", "viewer", &format!("document:{i}")))
        .collect();
    s.write_ok(&store, &tuples).await;
    let list = |user: &str, token: Option<&str>| {
        let mut body =
            json!({ "type": "document", "relation": "viewer", "user": user, "page_size": 2 });
        if let Some(t) = token {
            body["continuation_token"] = json!(t);
        }
        let (s, store) = (&s, store.clone());
        async move {
            s.post(&format!("/stores/{store}/list-objects"), &body)
                .await
        }
    };
    let first = list("user:anne", None).await.ok();
    let token = first["continuation_token"].as_str().unwrap().to_string();
    assert!(!token.is_empty(), "{first}");
    assert_eq!(list("user:anne", Some(&token)).await.status, 200);
    // Edited to name another revision: refused.
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(&token)
        .unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (rev, rest) = text.split_once('|').unwrap();
    let older: u64 = rev.parse::<u64>().unwrap().saturating_sub(1);
    let forged = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{older}|{rest}"));
    list("user:anne", Some(&forged))
        .await
        .assert_error(400, Some("invalid_continuation_token"));
    // The old, unsigned form: refused.
    let unsigned =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{older}|document:1"));
    list("user:anne", Some(&unsigned))
        .await
        .assert_error(400, Some("invalid_continuation_token"));
    // Another query's token: refused.
    list("user:bob", Some(&token))
        .await
        .assert_error(400, Some("invalid_continuation_token"));
}

/// Item 11: a stolen code replayed after its client redeemed it revokes the access token it
/// issued, for a client without refresh tokens too; a rotated refresh token introspects as
/// inactive; another client's revocation learns nothing.
#[tokio::test(flavor = "multi_thread")]
async fn replays_and_spent_tokens_are_dead() {
    let s = Server::start(Backend::Sqlite).await;
    let (client_id, secret, email) = tenant(&s, "acme").await;
    let introspect = |t: String| {
        let (s, client_id, secret) = (&s, client_id.clone(), secret.clone());
        async move {
            s.client
                .post(format!("{}/oauth2/introspect", s.base))
                .basic_auth(client_id, Some(secret))
                .form(&[("token", t.as_str())])
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()["active"]
                .clone()
        }
    };
    // A client that may not refresh.
    let svc = admin(
        &s,
        &[
            "service",
            "create",
            "--first-party",
            "--org",
            "acme",
            "--name",
            "No refresh",
            "--grant",
            "authorization_code",
            "--redirect-uri",
            REDIRECT,
        ],
        "",
    )
    .await
    .unwrap();
    let (nr_id, nr_secret) = (
        svc["client_id"].as_str().unwrap().to_string(),
        svc["client_secret"].as_str().unwrap().to_string(),
    );
    let mut b = Browser::new(&s);
    let (verifier, challenge) = pkce();
    let code = code_for(&mut b, &nr_id, &challenge, &email).await;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
        ("code_verifier", verifier.as_str()),
    ];
    let (st, first) = token(&s, &form, Some((&nr_id, &nr_secret))).await;
    assert_eq!(st, 200, "{first}");
    assert!(first.get("refresh_token").is_none(), "{first}");
    let at = first["access_token"].as_str().unwrap().to_string();
    let userinfo = |t: String| {
        let s = &s;
        async move {
            s.client
                .get(format!("{}/oauth2/userinfo", s.base))
                .bearer_auth(t)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(userinfo(at.clone()).await, 200);
    let (st, replay) = token(&s, &form, Some((&nr_id, &nr_secret))).await;
    assert_eq!(
        (st, replay["error"].as_str()),
        (400, Some("invalid_grant")),
        "{replay}"
    );
    assert_eq!(
        userinfo(at).await,
        401,
        "the replayed code's token still works"
    );

    // A rotated refresh token is spent.
    let t = tokens_for(&s, &client_id, &secret, &email).await;
    let old = t["refresh_token"].as_str().unwrap().to_string();
    let (st, next) = token(
        &s,
        &[("grant_type", "refresh_token"), ("refresh_token", &old)],
        Some((&client_id, &secret)),
    )
    .await;
    assert_eq!(st, 200, "{next}");
    assert_eq!(introspect(old).await, json!(false));
    let new = next["refresh_token"].as_str().unwrap().to_string();
    assert_eq!(introspect(new.clone()).await, json!(true));

    // Another client revoking this client's token hears what an unknown token gets, and the
    // token lives on.
    let r = s
        .client
        .post(format!("{}/oauth2/revoke", s.base))
        .basic_auth(&nr_id, Some(&nr_secret))
        .form(&[("token", new.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({}));
    assert_eq!(introspect(new).await, json!(true));
}

/// Item 11: a third-party plugin dropped into the plugin directory gets no capability the
/// operator did not list.
#[tokio::test(flavor = "multi_thread")]
async fn third_party_plugins_get_no_capability_unless_granted() {
    use gatehouse_plugin_host::embedded::HOSTILE;
    let root = crate::harness::TempDir::new("plugins");
    let dir =
        crate::plugins::plugin_dir(root.path(), "hostile", HOSTILE.manifest, Some(HOSTILE.wasm));
    let out = crate::cli::gatehouse(&["plugin", "check", &dir], &[]).await;
    let (_, stderr) = crate::cli::text(&out);
    assert!(
        !out.status.success(),
        "a plugin got capabilities nobody granted"
    );
    assert!(stderr.contains("declares the capability"), "{stderr}");
}

/// Item 11: the embedded default's outbox (sign-in links, reset tokens) is the server's
/// user's alone.
#[tokio::test(flavor = "multi_thread")]
async fn the_outbox_is_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt as _;
    let s = Server::start(Backend::Sqlite).await;
    let mode = std::fs::metadata(s.data_dir().join("outbox"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "outbox mode {mode:o}");
}

/// Item 8: a caller leaves out the parameter of the condition behind a `blocked` relation, so
/// that the relation cannot be evaluated, hoping the `forbid` reading it is skipped. The
/// decision fails closed — decide, AuthZEN evaluation and evaluations — and with the parameter
/// (which the generated schema now accepts) the forbid fires.
#[tokio::test(flavor = "multi_thread")]
async fn decisions_fail_closed_on_what_could_not_be_evaluated() {
    let s = Server::start(Backend::Sqlite).await;
    let store = s.create_store("fail-closed").await;
    let model = json!({
        "schema_version": "1.1",
        "type_definitions": [
            { "type": "user" },
            { "type": "document", "relations": { "viewer": { "this": {} }, "blocked": { "this": {} } },
              "metadata": { "relations": {
                  "viewer": { "directly_related_user_types": [{ "type": "user" }] },
                  "blocked": { "directly_related_user_types": [{ "type": "user", "condition": "over" }] }
              } } }
        ],
        "conditions": { "over": { "name": "over", "expression": "amount > 100",
            "parameters": { "amount": { "type_name": "TYPE_NAME_INT" } } } }
    });
    s.write_model(&store, &model).await;
    s.write_ok(
        &store,
        &[
            crate::harness::tk("user:mallory", "viewer", "document:1"),
            json!({ "user": "user:mallory", "relation": "blocked", "object": "document:1", "condition": { "name": "over" } }),
        ],
    )
    .await;
    let policies = "@id(\"baseline\")\npermit (principal, action, resource) when { context.rebac };\n\
                    @id(\"blocked\")\nforbid (principal, action, resource) when { context.relations.contains(\"blocked\") };\n";
    s.put(
        &format!("/stores/{store}/policies"),
        &json!({ "policies": policies }),
    )
    .await
    .ok();
    let decide = |ctx: Value| {
        let (s, store) = (&s, store.clone());
        async move {
            s.post(
                &format!("/stores/{store}/decide"),
                &json!({ "subject": "user:mallory", "action": "viewer", "resource": "document:1", "context": ctx }),
            )
            .await
            .ok()
        }
    };
    // Without the parameter: `blocked` cannot be evaluated, so no allow.
    let d = decide(json!({})).await;
    assert_eq!(d["allowed"], false, "{d}");
    assert!(
        d["errors"].to_string().contains("blocked"),
        "the error is reported: {d}"
    );
    let subject = json!({ "type": "user", "id": "mallory" });
    let resource = json!({ "type": "document", "id": "1" });
    let az = s
        .post(
            &format!("/stores/{store}/access/v1/evaluation"),
            &json!({ "subject": subject, "action": { "name": "viewer" }, "resource": resource }),
        )
        .await
        .ok();
    assert_eq!(az["decision"], false, "{az}");
    let many = s
        .post(
            &format!("/stores/{store}/access/v1/evaluations"),
            &json!({ "subject": subject, "action": { "name": "viewer" },
                     "evaluations": [{ "resource": resource }] }),
        )
        .await
        .ok();
    assert_eq!(many["evaluations"][0]["decision"], false, "{many}");
    // With it, the schema generated from the model takes it, and the forbid decides.
    let d = decide(json!({ "amount": 500 })).await;
    assert_eq!(
        (&d["allowed"], &d["policies"][0]["id"]),
        (&json!(false), &json!("blocked")),
        "{d}"
    );
    let d = decide(json!({ "amount": 5 })).await;
    assert_eq!(d["allowed"], true, "{d}");
    let schema = s.get(&format!("/stores/{store}/policy-schema")).await.ok();
    assert!(schema.to_string().contains("\"amount\""), "{schema}");
}

/// Item 4: a sign-in the decision refuses (here a member of one organization at another's
/// service) leaves no session behind in the browser.
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_sign_in_opens_no_session() {
    let s = Server::start(Backend::Sqlite).await;
    let (_, _, ada) = tenant(&s, "acme").await;
    let (globex_app, _, _) = tenant(&s, "globex").await;
    let mut b = Browser::new(&s);
    let (_, challenge) = pkce();
    let p = b
        .sign_in(
            &authorize_path(&globex_app, REDIRECT, &challenge, &[]),
            &ada,
            PASSWORD,
        )
        .await;
    assert_eq!(p.status, 403, "{}", p.body);
    assert!(
        !b.cookies.contains_key("gh_session"),
        "a refused sign-in left a session"
    );
}

/// The value of the hidden field `name` in a page's form.
fn hidden(body: &str, name: &str) -> String {
    let re = regex::Regex::new(&format!(r#"name="{name}" value="([^"]*)""#)).unwrap();
    re.captures(body)
        .unwrap_or_else(|| panic!("no `{name}` in {body}"))[1]
        .to_string()
}

/// Item 2: a relying party that the person never approved gets no code from a live session:
/// the person is asked once (which application, which organization, which scopes), may
/// refuse, sees the approval listed and withdraws it; `prompt=none` answers
/// `consent_required` and `prompt=consent` asks again.
#[tokio::test(flavor = "multi_thread")]
async fn a_service_learns_who_you_are_only_with_your_consent() {
    let s = Server::start(Backend::Sqlite).await;
    let (own_app, _, ada) = tenant(&s, "acme").await;
    // A service of acme that acme did not mark as its own.
    let svc = admin(
        &s,
        &[
            "service",
            "create",
            "--org",
            "acme",
            "--name",
            "Partner app",
            "--grant",
            "authorization_code",
            "--grant",
            "refresh_token",
            "--redirect-uri",
            REDIRECT,
        ],
        "",
    )
    .await
    .unwrap();
    let app = svc["client_id"].as_str().unwrap().to_string();
    let secret = svc["client_secret"].as_str().unwrap().to_string();
    let mut b = Browser::new(&s);
    let (_, challenge) = pkce();
    // Signed in to acme's own application: no page.
    let p = b
        .sign_in(
            &authorize_path(&own_app, REDIRECT, &challenge, &[]),
            &ada,
            PASSWORD,
        )
        .await;
    assert_eq!(p.status, 303, "{}", p.body);
    // The partner application with the live session: nothing without a page.
    let none = b
        .get(&authorize_path(
            &app,
            REDIRECT,
            &challenge,
            &[("prompt", "none")],
        ))
        .await;
    let q = crate::login::query_of(none.location.as_deref().unwrap());
    assert_eq!(
        q.get("error").map(String::as_str),
        Some("consent_required"),
        "{q:?}"
    );
    assert!(!q.contains_key("code"));
    let asked = b
        .get(&authorize_path(
            &app,
            REDIRECT,
            &challenge,
            &[("scope", "openid email")],
        ))
        .await;
    assert_eq!(
        asked.status, 200,
        "a code went out without consent: {:?}",
        asked.location
    );
    for says in ["Partner app", "Acme", "email address"] {
        assert!(asked.body.contains(says), "{says}: {}", asked.body);
    }
    // A forged answer does nothing.
    let request = hidden(&asked.body, "request");
    let forged = b
        .post(
            "/login/consent",
            &[
                ("request", request.as_str()),
                ("csrf", "forged"),
                ("action", "allow"),
            ],
        )
        .await;
    assert_eq!(forged.status, 400, "{}", forged.body);
    // Denied: the application hears `access_denied`.
    let csrf = hidden(&asked.body, "csrf");
    let denied = b
        .post(
            "/login/consent",
            &[
                ("request", request.as_str()),
                ("csrf", csrf.as_str()),
                ("action", "deny"),
            ],
        )
        .await;
    let q = crate::login::query_of(denied.location.as_deref().unwrap());
    assert_eq!(
        q.get("error").map(String::as_str),
        Some("access_denied"),
        "{q:?}"
    );
    // Allowed: a code, and from then on no page for these scopes.
    let (verifier, challenge) = pkce();
    let asked = b
        .get(&authorize_path(
            &app,
            REDIRECT,
            &challenge,
            &[("scope", "openid email offline_access")],
        ))
        .await;
    assert_eq!(asked.status, 200);
    let allowed = b
        .post(
            "/login/consent",
            &[
                ("request", hidden(&asked.body, "request").as_str()),
                ("csrf", hidden(&asked.body, "csrf").as_str()),
                ("action", "allow"),
            ],
        )
        .await;
    assert_eq!(allowed.status, 303, "{}", allowed.body);
    let q = crate::login::query_of(allowed.location.as_deref().unwrap());
    let (st, t) = token(
        &s,
        &[
            ("grant_type", "authorization_code"),
            ("code", &q["code"]),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &verifier),
        ],
        Some((&app, &secret)),
    )
    .await;
    assert_eq!(st, 200, "{t}");
    let (_, challenge) = pkce();
    let again = b
        .get(&authorize_path(
            &app,
            REDIRECT,
            &challenge,
            &[("scope", "openid email")],
        ))
        .await;
    assert_eq!(again.status, 303, "asked twice: {}", again.body);
    let forced = b
        .get(&authorize_path(
            &app,
            REDIRECT,
            &challenge,
            &[("prompt", "consent")],
        ))
        .await;
    assert_eq!(forced.status, 200, "`prompt=consent` did not ask");
    // Listed, and withdrawn: the application's refresh token dies, and it asks again.
    let console = console_token(&s, &ada).await;
    let (st, list) = call(&s, reqwest::Method::GET, "/api/me/consents", &console, None).await;
    assert_eq!(st, 200, "{list}");
    assert_eq!(list["consents"][0]["client_id"], json!(app), "{list}");
    assert_eq!(list["consents"][0]["application"], "Partner app", "{list}");
    let (st, _) = call(
        &s,
        reqwest::Method::DELETE,
        &format!("/api/me/consents/{app}"),
        &console,
        None,
    )
    .await;
    assert_eq!(st, 204);
    let (st, out) = token(
        &s,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", t["refresh_token"].as_str().unwrap()),
        ],
        Some((&app, &secret)),
    )
    .await;
    assert_eq!(st, 400, "the withdrawn application still refreshes: {out}");
    let (_, challenge) = pkce();
    let after = b
        .get(&authorize_path(&app, REDIRECT, &challenge, &[]))
        .await;
    assert_eq!(after.status, 200, "no page after the consent was withdrawn");
    let (st, _) = call(
        &s,
        reqwest::Method::DELETE,
        &format!("/api/me/consents/{app}"),
        &console,
        None,
    )
    .await;
    assert_eq!(st, 404);
}

/// Item 9: one tenant's API key floods the check endpoint; it is held to its own rate
/// (`GATEHOUSE_API_KEY_RATE`), while another tenant's key and the operator's go on.
#[tokio::test(flavor = "multi_thread")]
async fn one_tenants_key_cannot_take_the_node() {
    let mut opts = ServerOptions::new(Backend::Sqlite);
    opts.env.push(("GATEHOUSE_API_KEY_RATE".into(), "5".into()));
    let s = Server::start_with(opts).await;
    let (flood, _, _) = tenant_key(&s, "acme").await;
    let (calm, _, _) = tenant_key(&s, "globex").await;
    use reqwest::Method as M;
    let burst = (0..40).map(|_| call(&s, M::GET, "/stores", &flood, None));
    let answers = futures::future::join_all(burst).await;
    let ok = answers.iter().filter(|(st, _)| *st == 200).count();
    let limited: Vec<&Value> = answers
        .iter()
        .filter(|(st, _)| *st == 429)
        .map(|(_, v)| v)
        .collect();
    assert!(ok <= 10, "{ok} of 40 got through at 5 a second");
    assert!(!limited.is_empty(), "no request was limited");
    assert_eq!(limited[0]["code"], "rate_limited", "{}", limited[0]);
    assert_eq!(call(&s, M::GET, "/stores", &calm, None).await.0, 200);
    assert_eq!(s.get("/stores").await.status, 200, "the operator's key");
}

/// Item 9: a node under a tenant's heaviest allowed load still stops within seconds of
/// SIGTERM, as an orchestrator expects (no worker pinned by an evaluation).
#[tokio::test(flavor = "multi_thread")]
async fn a_loaded_node_shuts_down_promptly() {
    let mut s = Server::start(Backend::Sqlite).await;
    let (key, _, _) = tenant_key(&s, "acme").await;
    use reqwest::Method as M;
    let (_, store) = call(&s, M::POST, "/stores", &key, Some(json!({ "name": "x" }))).await;
    let store = store["id"].as_str().unwrap().to_string();
    let model = json!({
        "schema_version": "1.1",
        "type_definitions": [
            { "type": "user" },
            { "type": "doc", "relations": { "viewer": { "this": {} } },
              "metadata": { "relations": { "viewer": { "directly_related_user_types": [
                  { "type": "user", "condition": "c" }
              ] } } } }
        ],
        "conditions": { "c": { "name": "c", "expression": "xs.all(a, xs.all(b, a + b >= 0))",
            "parameters": { "xs": { "type_name": "TYPE_NAME_LIST", "generic_types": [{ "type_name": "TYPE_NAME_INT" }] } } } }
    });
    let models = format!("/stores/{store}/authorization-models");
    assert_eq!(call(&s, M::POST, &models, &key, Some(model)).await.0, 201);
    let write = json!({ "writes": { "tuple_keys": [
        { "user": "user:anne", "relation": "viewer", "object": "doc:1", "condition": { "name": "c" } }
    ] } });
    assert_eq!(
        call(
            &s,
            M::POST,
            &format!("/stores/{store}/write"),
            &key,
            Some(write)
        )
        .await
        .0,
        200
    );
    // Checks that each spend the whole evaluation budget, from 16 clients at once.
    let xs: Vec<i64> = (0..100).collect();
    let body = json!({
        "tuple_key": { "user": "user:anne", "relation": "viewer", "object": "doc:1" },
        "context": { "xs": xs }
    });
    let path = format!("{}/stores/{store}/check", s.base);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..16 {
        let (client, path, key, body, stop) = (
            s.client.clone(),
            path.clone(),
            key.clone(),
            body.clone(),
            stop.clone(),
        );
        load.push(tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = client
                    .post(&path)
                    .bearer_auth(&key)
                    .json(&body)
                    .send()
                    .await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let status = tokio::task::block_in_place(|| s.terminate(Duration::from_secs(20)));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for l in load {
        let _ = l.await;
    }
    assert!(
        status.is_some(),
        "the server did not stop within 20 s of SIGTERM under load"
    );
}

/// Item 1: a management token copied from an admin's browser long ago deletes nothing: it
/// still reads, but a deletion needs a recent sign-in.
#[tokio::test(flavor = "multi_thread")]
async fn deleting_needs_a_recent_sign_in() {
    let mut opts = ServerOptions::new(Backend::Sqlite);
    opts.env.push(("GATEHOUSE_REAUTH_SECS".into(), "2".into()));
    let s = Server::start_with(opts).await;
    let (client_id, _, _) = tenant(&s, "acme").await;
    crate::login::add_user(&s, "acme", "alice@acme.io", "admin").await;
    let stale = console_token(&s, "alice@acme.io").await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    use reqwest::Method as M;
    let path = format!("/api/services/{client_id}");
    let (st, out) = call(&s, M::DELETE, &path, &stale, None).await;
    assert_eq!(
        (st, &out["code"]),
        (401, &json!("reauthentication_required")),
        "{out}"
    );
    let (st, out) = call(&s, M::GET, &path, &stale, None).await;
    assert_eq!(
        st, 200,
        "the stale token still reads, and the service is there: {out}"
    );
    let fresh = console_token(&s, "alice@acme.io").await;
    assert_eq!(call(&s, M::DELETE, &path, &fresh, None).await.0, 204);
}
