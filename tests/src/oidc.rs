//! The OpenID provider's keys through the real server: the JWKS, and the master key of the
//! embedded default.

use std::os::unix::fs::PermissionsExt;

use crate::harness::{Backend, Server, ServerOptions, for_each_backend};

/// A master key for servers that share a database (32 zero-free bytes, base64).
pub const TEST_MASTER_KEY: &str = "Z2F0ZWhvdXNlLXRlc3QtbWFzdGVyLWtleS0zMi1ieXQ=";

for_each_backend!(jwks_is_public_and_lists_the_signing_key);

async fn jwks_is_public_and_lists_the_signing_key(backend: Backend) {
    let s = Server::start(backend).await;
    // No API key needed: relying parties fetch it.
    let r = s
        .client
        .get(format!("{}/.well-known/jwks.json", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"].to_str().unwrap(),
        "application/jwk-set+json"
    );
    assert_eq!(
        r.headers()["cache-control"].to_str().unwrap(),
        "public, max-age=3600"
    );
    let jwks: serde_json::Value = r.json().await.unwrap();
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1, "{jwks}");
    let k = &keys[0];
    assert_eq!(k["kty"], "RSA", "{k}");
    assert_eq!(k["alg"], "RS256", "{k}");
    assert_eq!(k["use"], "sig", "{k}");
    assert!(k["kid"].as_str().is_some_and(|s| !s.is_empty()), "{k}");
    // A 2048-bit modulus (256 bytes, base64url without padding), and no private parts.
    assert_eq!(k["n"].as_str().unwrap().len(), 342, "{k}");
    for private in ["d", "p", "q", "dp", "dq", "qi"] {
        assert!(k.get(private).is_none(), "{private} published: {k}");
    }
    let r = s
        .client
        .post(format!("{}/.well-known/jwks.json", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);

    // The embedded default generated its master key, readable by its owner only.
    if backend == Backend::Sqlite {
        let path = s.data_dir().join("master.key");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}: {mode:o}", path.display());
    }
}

/// `GATEHOUSE_SIGNING_ALG` selects ES256 or EdDSA keys; anything else is refused at start.
#[tokio::test(flavor = "multi_thread")]
async fn the_signing_algorithm_is_configurable() {
    for (alg, kty, crv) in [("ES256", "EC", "P-256"), ("EdDSA", "OKP", "Ed25519")] {
        let mut opts = ServerOptions::new(Backend::Sqlite);
        opts.env.push(("GATEHOUSE_SIGNING_ALG".into(), alg.into()));
        let s = Server::start_with(opts).await;
        let jwks = s.get("/.well-known/jwks.json").await.ok();
        let k = &jwks["keys"][0];
        assert_eq!(
            (k["alg"].as_str(), k["kty"].as_str(), k["crv"].as_str()),
            (Some(alg), Some(kty), Some(crv)),
            "{jwks}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_signing_algorithm_or_master_key_stops_the_server_at_start() {
    let bin = tokio::task::spawn_blocking(crate::harness::binary)
        .await
        .unwrap();
    let dir = crate::harness::TempDir::new("bad-oidc-config");
    for (name, value, says) in [
        ("GATEHOUSE_SIGNING_ALG", "HS256", "HS256"),
        ("GATEHOUSE_MASTER_KEY", "c2hvcnQ=", "32 bytes"),
    ] {
        let out = tokio::process::Command::new(&bin)
            .arg("serve")
            .env_clear()
            .env("GATEHOUSE_ADDR", "127.0.0.1:0")
            .env("GATEHOUSE_DATA_DIR", dir.path())
            .env("GATEHOUSE_API_KEYS", "k")
            .env(name, value)
            .output()
            .await
            .unwrap();
        assert!(!out.status.success(), "{name}={value} started");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{name}={value}: {err}");
        assert!(
            !err.contains(value) || name != "GATEHOUSE_MASTER_KEY",
            "the key was printed: {err}"
        );
    }
}

/// Runs an admin command of the binary against `s`'s database; its JSON output, or the error
/// it printed.
async fn admin(s: &Server, args: &[&str]) -> Result<serde_json::Value, String> {
    let bin = tokio::task::spawn_blocking(crate::harness::binary)
        .await
        .unwrap();
    let mut cmd = tokio::process::Command::new(bin);
    cmd.args(args)
        .env_clear()
        .env("GATEHOUSE_DATA_DIR", s.data_dir())
        .env("GATEHOUSE_LOG", "warn");
    if let Some(db) = &s.database {
        cmd.env("DATABASE_URL", &db.url);
    }
    let out = cmd.output().await.unwrap();
    if out.status.success() {
        Ok(serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{args:?} printed no JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        }))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// A form POST to the token endpoint, optionally with HTTP Basic client authentication.
async fn token_req(
    s: &Server,
    form: &[(&str, &str)],
    basic: Option<(&str, &str)>,
) -> (u16, serde_json::Value, reqwest::header::HeaderMap) {
    post_form(s, "/oauth2/token", form, basic).await
}

/// A form POST to an OAuth endpoint, optionally with HTTP Basic client authentication.
async fn post_form(
    s: &Server,
    path: &str,
    form: &[(&str, &str)],
    basic: Option<(&str, &str)>,
) -> (u16, serde_json::Value, reqwest::header::HeaderMap) {
    let mut req = s
        .client
        .post(format!("{}{path}", s.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(
            form.iter()
                .map(|(k, v)| format!("{k}={}", urlencode(v)))
                .collect::<Vec<_>>()
                .join("&"),
        );
    if let Some((id, secret)) = basic {
        req = req.basic_auth(id, Some(secret));
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, r.json().await.unwrap_or_default(), headers)
}

fn urlencode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Verifies an access token against the server's JWKS as a resource server would, expecting
/// `audience` (a service's token is for that service: its client_id).
async fn verify(s: &Server, token: &str, audience: &str) -> serde_json::Value {
    let header = jsonwebtoken::decode_header(token).unwrap();
    assert_eq!(header.typ.as_deref(), Some("at+jwt"));
    let jwks: jsonwebtoken::jwk::JwkSet = s
        .client
        .get(format!("{}/.well-known/jwks.json", s.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kid = header.kid.unwrap();
    let jwk = jwks
        .find(&kid)
        .unwrap_or_else(|| panic!("kid {kid} is not published"));
    let mut v = jsonwebtoken::Validation::new(header.alg);
    v.set_issuer(&[s.base.as_str()]);
    v.set_audience(&[audience]);
    jsonwebtoken::decode::<serde_json::Value>(
        token,
        &jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap(),
        &v,
    )
    .unwrap()
    .claims
}

for_each_backend!(client_credentials_after_a_policy_decision);

async fn client_credentials_after_a_policy_decision(backend: Backend) {
    // The issuer defaults to the server's own address, which is the harness's base URL.
    let s = Server::start(backend).await;
    let base = s.base.clone();

    // Discovery says where the token endpoint and the keys are.
    let d = s.get("/.well-known/openid-configuration").await.ok();
    assert_eq!(d["issuer"], base.as_str(), "{d}");
    assert_eq!(d["token_endpoint"], format!("{base}/oauth2/token"));
    assert_eq!(d["jwks_uri"], format!("{base}/.well-known/jwks.json"));
    assert_eq!(
        d["grant_types_supported"],
        serde_json::json!([
            "authorization_code",
            "refresh_token",
            "client_credentials",
            "urn:ietf:params:oauth:grant-type:device_code"
        ])
    );
    assert_eq!(
        d["code_challenge_methods_supported"],
        serde_json::json!(["S256"])
    );
    assert_eq!(
        d["authorization_endpoint"],
        format!("{base}/oauth2/authorize")
    );

    // An organization is pending until approved; services come after.
    let org = admin(&s, &["org", "create", "--slug", "acme", "--name", "Acme"])
        .await
        .unwrap();
    assert_eq!(org["status"], "pending", "{org}");
    let err = admin(
        &s,
        &[
            "service",
            "create",
            "--first-party",
            "--org",
            "acme",
            "--name",
            "api",
            "--grant",
            "client_credentials",
        ],
    )
    .await
    .unwrap_err();
    assert!(err.contains("pending"), "{err}");
    let err = admin(&s, &["org", "create", "--slug", "acme", "--name", "Again"])
        .await
        .unwrap_err();
    assert!(err.contains("exists already"), "{err}");
    for bad in [
        &["org", "create", "--slug", "Not A Slug", "--name", "x"][..],
        &["org", "approve", "nope"],
    ] {
        assert!(admin(&s, bad).await.is_err(), "{bad:?}");
    }
    let org = admin(&s, &["org", "approve", "acme"]).await.unwrap();
    assert_eq!(org["status"], "active", "{org}");
    let svc = admin(
        &s,
        &[
            "service",
            "create",
            "--first-party",
            "--org",
            "acme",
            "--name",
            "api",
            "--grant",
            "client_credentials",
        ],
    )
    .await
    .unwrap();
    let client_id = svc["client_id"].as_str().unwrap().to_string();
    let secret = svc["client_secret"].as_str().unwrap().to_string();
    assert!(
        client_id.starts_with("svc_") && secret.starts_with("cs_"),
        "{svc}"
    );
    assert!(svc.get("secret_sha256").is_none(), "{svc}");

    // client_secret_basic and client_secret_post both work; the token verifies against the
    // JWKS and names the client.
    let grant = [("grant_type", "client_credentials")];
    let (status, body, headers) = token_req(&s, &grant, Some((&client_id, &secret))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    assert_eq!(headers["cache-control"], "no-store");
    let claims = verify(&s, body["access_token"].as_str().unwrap(), &client_id).await;
    assert_eq!(claims["sub"], client_id.as_str(), "{claims}");
    assert_eq!(claims["aud"], client_id.as_str(), "{claims}");
    assert_eq!(claims["client_id"], client_id.as_str());
    assert!(claims["jti"].is_string());
    let post = [
        ("grant_type", "client_credentials"),
        ("client_id", client_id.as_str()),
        ("client_secret", secret.as_str()),
    ];
    let (status, body, _) = token_req(&s, &post, None).await;
    assert_eq!(status, 200, "{body}");

    // Bad credentials and bad requests: RFC 6749 errors, nothing issued.
    let (status, body, headers) = token_req(&s, &grant, Some((&client_id, "cs_wrong"))).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client")),
        "{body}"
    );
    assert!(
        headers["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Basic")
    );
    assert!(body.get("access_token").is_none());
    let (status, body, _) = token_req(&s, &grant, Some(("svc_nobody", &secret))).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client")),
        "{body}"
    );
    let (status, body, _) = token_req(&s, &grant, None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client")),
        "{body}"
    );
    let (status, body, _) = token_req(&s, &post, Some((&client_id, &secret))).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_request")),
        "two methods: {body}"
    );
    for (form, code) in [
        (
            vec![
                ("client_id", client_id.as_str()),
                ("client_secret", secret.as_str()),
            ],
            "invalid_request",
        ),
        (vec![("grant_type", "password")], "unsupported_grant_type"),
        (
            vec![
                ("grant_type", "client_credentials"),
                ("grant_type", "client_credentials"),
            ],
            "invalid_request",
        ),
        (
            vec![("grant_type", "client_credentials"), ("scope", "admin")],
            "invalid_scope",
        ),
    ] {
        let (status, body, _) = token_req(&s, &form, Some((&client_id, &secret))).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some(code)),
            "{form:?}: {body}"
        );
    }
    let r = s
        .client
        .post(format!("{base}/oauth2/token"))
        .basic_auth(&client_id, Some(&secret))
        .json(&serde_json::json!({ "grant_type": "client_credentials" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["error"],
        "invalid_request"
    );

    // A client without the grant may not use it.
    let web = admin(
        &s,
        &[
            "service",
            "create",
            "--first-party",
            "--org",
            "acme",
            "--name",
            "web",
            "--grant",
            "authorization_code",
            "--redirect-uri",
            "https://app.example/cb",
        ],
    )
    .await
    .unwrap();
    let (status, body, _) = token_req(
        &s,
        &grant,
        Some((
            web["client_id"].as_str().unwrap(),
            web["client_secret"].as_str().unwrap(),
        )),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("unauthorized_client")),
        "{body}"
    );

    // The platform's policies decide before anything is issued: suspending the organization
    // refuses its services' tokens, with the reason; lifting it lets them through again.
    // The platform's store itself is not reachable through the store API.
    let stores = s.get("/stores").await.ok();
    assert!(
        stores["stores"]
            .as_array()
            .unwrap()
            .iter()
            .all(|st| st["name"] != "gatehouse-platform"),
        "{stores}"
    );
    if let Some(db) = &s.database {
        let platform = db.query("SELECT store_id FROM platform");
        let platform = platform.trim();
        assert!(!platform.is_empty());
        for path in [
            format!("/stores/{platform}"),
            format!("/stores/{platform}/read"),
        ] {
            let r = if path.ends_with("read") {
                s.post(&path, &serde_json::json!({})).await
            } else {
                s.get(&path).await
            };
            r.assert_error(404, Some("store_id_not_found"));
        }
    }
    let suspended = admin(&s, &["org", "suspend", "acme"]).await.unwrap();
    assert_eq!(suspended["suspended"], true, "{suspended}");
    // The token endpoint decides at this node's cached revision, which trails a change made
    // by another process (the admin command) by at most the staleness bound (0.5 s).
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let (status, body, _) = token_req(&s, &grant, Some((&client_id, &secret))).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("access_denied")),
        "{body}"
    );
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("suspended"),
        "{body}"
    );
    assert!(body.get("access_token").is_none());
    admin(&s, &["org", "unsuspend", "acme"]).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let (status, body, _) = token_req(&s, &grant, Some((&client_id, &secret))).await;
    assert_eq!(status, 200, "{body}");
}

/// Services are refused with a clear error for bad input and beyond the tier's limit; nothing
/// is created then.
#[tokio::test(flavor = "multi_thread")]
async fn service_creation_refuses_bad_input_and_enforces_the_tier_limit() {
    let s = Server::start(Backend::Sqlite).await;
    admin(&s, &["org", "create", "--slug", "lim", "--name", "Limits"])
        .await
        .unwrap();
    for (args, says) in [
        (
            &["org", "create", "--slug", "x", "--name", "short slug"][..],
            "slug",
        ),
        (
            &[
                "org", "create", "--slug", "ok-slug", "--name", "x", "--tier", "gold",
            ],
            "tier `gold`",
        ),
        (&["org", "approve", "missing"], "`missing` does not exist"),
    ] {
        let err = admin(&s, args).await.unwrap_err();
        assert!(err.contains(says), "{args:?}: {err}");
    }
    admin(&s, &["org", "approve", "lim"]).await.unwrap();
    let err = admin(&s, &["org", "approve", "lim"]).await.unwrap_err();
    assert!(err.contains("not pending"), "{err}");
    let create = |extra: &'static [&'static str]| {
        let mut args = vec![
            "service",
            "create",
            "--first-party",
            "--org",
            "lim",
            "--name",
            "svc",
        ];
        args.extend_from_slice(extra);
        args
    };
    for (extra, says) in [
        (&["--grant", "password"][..], "not supported"),
        (
            &["--grant", "client_credentials", "--public"],
            "public client",
        ),
        (&["--grant", "authorization_code"], "redirect URI"),
        (
            &[
                "--grant",
                "authorization_code",
                "--redirect-uri",
                "http://app.example/cb",
            ],
            "https",
        ),
        (
            &[
                "--grant",
                "authorization_code",
                "--redirect-uri",
                "https://app.example/cb#x",
            ],
            "fragment",
        ),
    ] {
        let err = admin(&s, &create(extra)).await.unwrap_err();
        assert!(err.contains(says), "{extra:?}: {err}");
    }
    // A public client gets no secret.
    let public = admin(
        &s,
        &create(&[
            "--grant",
            "authorization_code",
            "--redirect-uri",
            "http://127.0.0.1:9/cb",
            "--public",
        ]),
    )
    .await
    .unwrap();
    assert!(public.get("client_secret").is_none(), "{public}");
    // The free tier allows five services: four more, then a clear refusal.
    for _ in 0..4 {
        admin(&s, &create(&["--grant", "client_credentials"]))
            .await
            .unwrap();
    }
    let err = admin(&s, &create(&["--grant", "client_credentials"]))
        .await
        .unwrap_err();
    assert!(err.contains("limit of 5 services"), "{err}");
}

/// An active organization with services, each `(client_id, secret)`.
async fn org_with_services(s: &Server, slug: &str, n: usize) -> Vec<(String, String)> {
    admin(s, &["org", "create", "--slug", slug, "--name", slug])
        .await
        .unwrap();
    admin(s, &["org", "approve", slug]).await.unwrap();
    let mut out = Vec::new();
    for _ in 0..n {
        let svc = admin(
            s,
            &[
                "service",
                "create",
                "--first-party",
                "--org",
                slug,
                "--name",
                "svc",
                "--grant",
                "client_credentials",
            ],
        )
        .await
        .unwrap();
        out.push((
            svc["client_id"].as_str().unwrap().to_string(),
            svc["client_secret"].as_str().unwrap().to_string(),
        ));
    }
    out
}

for_each_backend!(introspection_and_revocation);

async fn introspection_and_revocation(backend: Backend) {
    let s = Server::start(backend).await;
    let acme = org_with_services(&s, "acme", 2).await;
    let other = org_with_services(&s, "other", 1).await;
    let (a, b, c) = (&acme[0], &acme[1], &other[0]);
    let grant = [("grant_type", "client_credentials")];
    let (_, body, _) = token_req(&s, &grant, Some((&a.0, &a.1))).await;
    let token = body["access_token"].as_str().unwrap().to_string();
    let introspect = |who: &(String, String), token: String| {
        let s = &s;
        let who = who.clone();
        async move {
            post_form(
                s,
                "/oauth2/introspect",
                &[("token", &token)],
                Some((&who.0, &who.1)),
            )
            .await
        }
    };

    // Another client of the same organization sees it active, with its claims.
    let (status, r, headers) = introspect(b, token.clone()).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(r["active"], true, "{r}");
    assert_eq!(r["client_id"], a.0.as_str());
    assert_eq!(r["iss"], s.base.as_str());
    assert!(r["exp"].as_i64().unwrap() > chrono::Utc::now().timestamp());
    // A client of another organization learns nothing.
    let (_, r, _) = introspect(c, token.clone()).await;
    assert_eq!(r, serde_json::json!({ "active": false }));

    // Tampered, unsigned and foreign tokens are inactive.
    let mut tampered = token.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    let parts: Vec<&str> = token.split('.').collect();
    let header: serde_json::Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, parts[0])
            .unwrap(),
    )
    .unwrap();
    let none_header = serde_json::json!({ "alg": "none", "typ": "at+jwt", "kid": header["kid"] });
    let b64 = |v: &serde_json::Value| {
        base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            serde_json::to_vec(v).unwrap(),
        )
    };
    let unsigned = format!("{}.{}.", b64(&none_header), parts[1]);
    let mut other_kid = header.clone();
    other_kid["kid"] = "no-such-key".into();
    let unknown_kid = format!("{}.{}.{}", b64(&other_kid), parts[1], parts[2]);
    for bad in [tampered, unsigned, unknown_kid, "not-a-jwt".to_string()] {
        let (status, r, _) = introspect(b, bad.clone()).await;
        assert_eq!(
            (status, r["active"].as_bool()),
            (200, Some(false)),
            "{bad}: {r}"
        );
    }

    // Bad requests.
    let (status, r, _) = post_form(&s, "/oauth2/introspect", &[("token", &token)], None).await;
    assert_eq!(
        (status, r["error"].as_str()),
        (401, Some("invalid_client")),
        "{r}"
    );
    let (status, r, _) = post_form(&s, "/oauth2/introspect", &[], Some((&b.0, &b.1))).await;
    assert_eq!(
        (status, r["error"].as_str()),
        (400, Some("invalid_request")),
        "{r}"
    );
    let (status, r, _) = post_form(
        &s,
        "/oauth2/introspect",
        &[("token", &token)],
        Some((&b.0, "cs_wrong")),
    )
    .await;
    assert_eq!(
        (status, r["error"].as_str()),
        (401, Some("invalid_client")),
        "{r}"
    );

    // Revocation: only by the client it was issued to; then it is inactive everywhere.
    let revoke = |who: &(String, String), form: Vec<(&'static str, String)>| {
        let s = &s;
        let who = who.clone();
        async move {
            let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
            post_form(s, "/oauth2/revoke", &form, Some((&who.0, &who.1))).await
        }
    };
    // Another client's attempt is answered as an unknown token's (200, nothing said), and
    // revokes nothing.
    let (status, r, _) = revoke(c, vec![("token", token.clone())]).await;
    assert_eq!((status, &r), (200, &serde_json::json!({})), "{r}");
    let (status, r, _) = revoke(
        a,
        vec![
            ("token", token.clone()),
            ("token_type_hint", "id_token".into()),
        ],
    )
    .await;
    assert_eq!(
        (status, r["error"].as_str()),
        (400, Some("unsupported_token_type")),
        "{r}"
    );
    let (_, r, _) = introspect(b, token.clone()).await;
    assert_eq!(
        r["active"], true,
        "not revoked by the refused requests: {r}"
    );
    let (status, _, _) = revoke(a, vec![("token", "garbage".into())]).await;
    assert_eq!(status, 200, "an invalid token is not an error");
    let (status, _, _) = revoke(
        a,
        vec![
            ("token", token.clone()),
            ("token_type_hint", "access_token".into()),
        ],
    )
    .await;
    assert_eq!(status, 200);
    let (_, r, _) = introspect(b, token.clone()).await;
    assert_eq!(r, serde_json::json!({ "active": false }));
    // A new token of the same client is unaffected.
    let (_, body, _) = token_req(&s, &grant, Some((&a.0, &a.1))).await;
    let fresh = body["access_token"].as_str().unwrap().to_string();
    let (_, r, _) = introspect(b, fresh).await;
    assert_eq!(r["active"], true, "{r}");
}
