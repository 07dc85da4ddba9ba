//! The management API through the real binary: organizations, members (nobody grants at or
//! above their own role), services and their API keys, every permission decided by the
//! engine on the platform's model.

use serde_json::{Value, json};

use crate::harness::{Backend, Server, ServerOptions, for_each_backend};
use crate::login::{PASSWORD, REDIRECT, admin, console_token, tenant, token, tokens_for};

struct Api<'a> {
    s: &'a Server,
}

impl Api<'_> {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut r = self
            .s
            .client
            .request(method, format!("{}{path}", self.s.base));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        let r = r.send().await.unwrap();
        let st = r.status().as_u16();
        let text = r.text().await.unwrap();
        (st, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str, t: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, Some(t), None).await
    }

    async fn post(&self, path: &str, t: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, Some(t), Some(body))
            .await
    }

    async fn patch(&self, path: &str, t: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::PATCH, path, Some(t), Some(body))
            .await
    }

    async fn put(&self, path: &str, t: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::PUT, path, Some(t), Some(body))
            .await
    }

    async fn delete(&self, path: &str, t: &str) -> (u16, Value) {
        self.call(reqwest::Method::DELETE, path, Some(t), None)
            .await
    }
}

/// Creates a user with the password, a member of `org` with `role`.
async fn user(s: &Server, email: &str, org: &str, role: &str) -> String {
    let out = admin(
        s,
        &[
            "user",
            "create",
            "--email",
            email,
            "--password-stdin",
            "--org",
            org,
            "--role",
            role,
        ],
        &format!("{PASSWORD}\n"),
    )
    .await
    .unwrap();
    out["user"]["id"].as_str().unwrap().to_string()
}

for_each_backend!(organizations_members_services_and_api_keys);

async fn organizations_members_services_and_api_keys(backend: Backend) {
    let mut opts = ServerOptions::new(backend);
    opts.env
        .push(("PLATFORM_OWNER_EMAIL".into(), "root@gatehouse.test".into()));
    opts.env
        .push(("PLATFORM_OWNER_PASSWORD".into(), PASSWORD.into()));
    let s = Server::start_with(opts).await;
    let api = Api { s: &s };
    tenant(&s, "acme").await;
    tenant(&s, "globex").await;
    user(&s, "alice@acme.io", "acme", "owner").await;
    let carol = user(&s, "carol@acme.io", "acme", "admin").await;
    user(&s, "bob@globex.io", "globex", "member").await;
    // Everybody calls the API with the console's tokens (the only ones it takes).
    let root = console_token(&s, "root@gatehouse.test").await;
    let alice = console_token(&s, "alice@acme.io").await;
    let carol_t = console_token(&s, "carol@acme.io").await;
    let bob = console_token(&s, "bob@globex.io").await;

    // Registration: pending, with the registrant as owner; bad input changes nothing.
    let (st, out) = api
        .post(
            "/api/organizations",
            &bob,
            json!({ "slug": "initech", "name": "Initech" }),
        )
        .await;
    assert_eq!(st, 201, "{out}");
    assert_eq!(out["organization"]["status"], "pending");
    assert_eq!(out["membership"]["role"], "owner");
    for (body, why) in [
        (json!({ "slug": "initech", "name": "Again" }), "taken slug"),
        (json!({ "slug": "No Caps", "name": "X" }), "bad slug"),
        (json!({ "slug": "ok-slug" }), "missing name"),
        (
            json!({ "slug": "ok-slug", "name": "X", "tier": "gold" }),
            "unknown field",
        ),
    ] {
        let (st, out) = api.post("/api/organizations", &bob, body).await;
        assert_eq!(st, 400, "{why}: {out}");
        assert!(out["error"]["code"].is_string(), "{out}");
    }
    let (st, _) = api.get("/api/organizations/ok-slug", &root).await;
    assert_eq!(
        st, 404,
        "a refused registration left an organization behind"
    );
    let (st, list) = api.get("/api/organizations", &bob).await;
    assert_eq!(st, 200);
    let slugs: Vec<&str> = list["organizations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["slug"].as_str().unwrap())
        .collect();
    assert_eq!(slugs, vec!["globex", "initech"], "{list}");

    // Only the platform owner approves.
    let (st, _) = api
        .post("/api/organizations/initech/approve", &bob, json!({}))
        .await;
    assert_eq!(st, 403);
    let (st, out) = api
        .post("/api/organizations/initech/approve", &root, json!({}))
        .await;
    assert_eq!((st, out["status"].as_str()), (200, Some("active")), "{out}");
    let (st, _) = api
        .post("/api/organizations/initech/approve", &root, json!({}))
        .await;
    assert_eq!(st, 400, "approving twice");

    // Organizations are isolated: a member of globex sees nothing of acme.
    for path in [
        "/api/organizations/acme",
        "/api/organizations/acme/members",
        "/api/organizations/acme/services",
    ] {
        let (st, _) = api.get(path, &bob).await;
        assert_eq!(st, 403, "{path}");
    }

    // Members: nobody grants or removes a role at or above their own.
    admin(
        &s,
        &[
            "user",
            "create",
            "--email",
            "dave@acme.io",
            "--password-stdin",
        ],
        &format!("{PASSWORD}\n"),
    )
    .await
    .unwrap();
    let (st, _) = api
        .post(
            "/api/organizations/acme/members",
            &carol_t,
            json!({ "email": "dave@acme.io", "role": "admin" }),
        )
        .await;
    assert_eq!(st, 403, "an admin granted admin");
    // Adding a member invites them: nobody joins without accepting, and the answer is the
    // same whether or not the address has an account.
    let (st, out) = api
        .post(
            "/api/organizations/acme/members",
            &carol_t,
            json!({ "email": "dave@acme.io", "role": "member" }),
        )
        .await;
    assert_eq!(st, 202, "{out}");
    assert_eq!(out["invitation"]["email"], "dave@acme.io", "{out}");
    let (_, members) = api.get("/api/organizations/acme/members", &alice).await;
    assert!(
        !members.to_string().contains("dave@acme.io"),
        "a member before accepting: {members}"
    );
    let (st, unknown) = api
        .post(
            "/api/organizations/acme/members",
            &alice,
            json!({ "email": "x@acme.io", "role": "member" }),
        )
        .await;
    assert_eq!(st, 202, "an unknown address is answered alike: {unknown}");
    let shape = |v: &Value| {
        let mut keys: Vec<String> = v["invitation"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        keys.sort();
        keys
    };
    assert_eq!(shape(&out), shape(&unknown));
    assert_eq!(
        crate::account::accept_invitation(&s, "dave@acme.io", 1).await,
        200
    );
    let (_, members) = api.get("/api/organizations/acme/members", &alice).await;
    let dave = members["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["email"] == "dave@acme.io")
        .unwrap_or_else(|| panic!("dave did not join: {members}"))["user_id"]
        .as_str()
        .unwrap()
        .to_string();
    let (st, _) = api
        .post(
            "/api/organizations/acme/members",
            &alice,
            json!({ "email": "dave@acme.io", "role": "emperor" }),
        )
        .await;
    assert_eq!(st, 400, "an unknown role");
    let (st, _) = api
        .post(
            "/api/organizations/acme/members",
            &alice,
            json!({ "email": "bob@globex.io", "role": "owner" }),
        )
        .await;
    assert_eq!(st, 403, "an owner granted owner");
    let (st, _) = api
        .delete(
            &format!("/api/organizations/acme/members/{carol}"),
            &carol_t,
        )
        .await;
    assert_eq!(st, 403, "an admin removed an admin");
    let (st, _) = api
        .delete(&format!("/api/organizations/acme/members/{dave}"), &carol_t)
        .await;
    assert_eq!(st, 204);
    let (st, members) = api.get("/api/organizations/acme/members", &alice).await;
    assert_eq!(st, 200);
    let emails: Vec<&str> = members["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["email"].as_str().unwrap())
        .collect();
    assert!(
        !emails.contains(&"dave@acme.io") && emails.contains(&"carol@acme.io"),
        "{members}"
    );
    // The platform owner may grant owner (by invitation, as everyone).
    let (st, _) = api
        .post(
            "/api/organizations/acme/members",
            &root,
            json!({ "email": "dave@acme.io", "role": "owner" }),
        )
        .await;
    assert_eq!(st, 202);
    assert_eq!(
        crate::account::accept_invitation(&s, "dave@acme.io", 2).await,
        200
    );

    // Services: admins create them; the secret is in the answer only.
    let (st, svc) = api
        .post(
            "/api/organizations/acme/services",
            &carol_t,
            json!({ "name": "Backend", "grant_types": ["client_credentials"] }),
        )
        .await;
    assert_eq!(st, 201, "{svc}");
    assert!(svc["client_secret"].as_str().unwrap().starts_with("cs_"));
    let client_id = svc["client_id"].as_str().unwrap().to_string();
    let (st, _) = api
        .post(
            "/api/organizations/acme/services",
            &carol_t,
            json!({ "name": "Bad", "grant_types": ["implicit"] }),
        )
        .await;
    assert_eq!(st, 400);
    let (_, list) = api.get("/api/organizations/acme/services", &alice).await;
    assert!(
        list["services"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s.get("client_secret").is_none() && s.get("secret_sha256").is_none()),
        "{list}"
    );

    // API keys: shown once, authenticate the check API, revocable.
    let (st, key) = api
        .post(
            &format!("/api/services/{client_id}/api-keys"),
            &alice,
            json!({ "name": "ci" }),
        )
        .await;
    assert_eq!(st, 201, "{key}");
    let ak = key["key"].as_str().unwrap().to_string();
    assert!(ak.starts_with("ak_live_"), "{key}");
    let (st, _) = api
        .post(
            &format!("/api/services/{client_id}/api-keys"),
            &alice,
            json!({ "name": "" }),
        )
        .await;
    assert_eq!(st, 400);
    let (st, _) = api
        .post(
            &format!("/api/services/{client_id}/api-keys"),
            &bob,
            json!({ "name": "x" }),
        )
        .await;
    assert_eq!(st, 403);
    let (_, keys) = api
        .get(&format!("/api/services/{client_id}/api-keys"), &alice)
        .await;
    let listed = keys["api_keys"].as_array().unwrap();
    assert_eq!(listed.len(), 1);
    assert!(
        listed[0].get("key").is_none() && listed[0].get("key_sha256").is_none(),
        "{keys}"
    );
    assert!(ak.starts_with(listed[0]["prefix"].as_str().unwrap()));
    let (st, _) = api
        .call(reqwest::Method::GET, "/stores", Some(&ak), None)
        .await;
    assert_eq!(st, 200, "an API key on the check API");
    // An API key is a machine caller: it cannot act as a user.
    let (st, _) = api
        .post(
            "/api/organizations",
            &ak,
            json!({ "slug": "evil", "name": "Evil" }),
        )
        .await;
    assert_eq!(st, 403);
    let id = listed[0]["id"].as_str().unwrap();
    let (st, _) = api
        .delete(&format!("/api/services/{client_id}/api-keys/{id}"), &alice)
        .await;
    assert_eq!(st, 204);
    let (st, _) = api
        .call(reqwest::Method::GET, "/stores", Some(&ak), None)
        .await;
    assert_eq!(st, 401, "a revoked key still works");
    let (st, _) = api
        .delete(&format!("/api/services/{client_id}/api-keys/{id}"), &alice)
        .await;
    assert_eq!(st, 404);

    // No credentials, forged ones.
    let (st, _) = api
        .call(reqwest::Method::GET, "/api/organizations", None, None)
        .await;
    assert_eq!(st, 401);
    let (st, _) = api.get("/api/organizations", "ak_live_00").await;
    assert_eq!(st, 401);

    // Management changes are audited with their actor.
    let (_, log) = api
        .get(
            "/api/organizations/acme/audit?kind=membership.removed",
            &alice,
        )
        .await;
    let e = &log["events"][0];
    assert_eq!(e["actor"], format!("user:{carol}").as_str(), "{log}");
    assert_eq!(e["details"]["user"], dave.as_str(), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_creates_api_keys() {
    let s = Server::start(Backend::Sqlite).await;
    let api = Api { s: &s };
    let (client_id, _, _) = tenant(&s, "acme").await;
    let out = admin(
        &s,
        &[
            "apikey",
            "create",
            "--service",
            &client_id,
            "--name",
            "deploy",
        ],
        "",
    )
    .await
    .unwrap();
    let key = out["key"].as_str().unwrap();
    assert!(key.starts_with("ak_live_"));
    let (st, _) = api
        .call(reqwest::Method::GET, "/stores", Some(key), None)
        .await;
    assert_eq!(st, 200);
    let err = admin(
        &s,
        &["apikey", "create", "--service", "svc_nope", "--name", "x"],
        "",
    )
    .await
    .unwrap_err();
    assert!(err.contains("does not exist"), "{err}");
}

/// A server with a platform owner (`root@gatehouse.test`).
async fn with_owner(backend: Backend) -> Server {
    let mut opts = ServerOptions::new(backend);
    opts.env
        .push(("PLATFORM_OWNER_EMAIL".into(), "root@gatehouse.test".into()));
    opts.env
        .push(("PLATFORM_OWNER_PASSWORD".into(), PASSWORD.into()));
    Server::start_with(opts).await
}

async fn access_token(s: &Server, client: &str, secret: &str, email: &str) -> String {
    tokens_for(s, client, secret, email).await["access_token"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Whether `token` is active, asked by the confidential client `(client, secret)`.
async fn active(s: &Server, client: &str, secret: &str, token: &str) -> bool {
    let r = s
        .client
        .post(format!("{}/oauth2/introspect", s.base))
        .basic_auth(client, Some(secret))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    r.json::<Value>().await.unwrap()["active"] == true
}

for_each_backend!(services_are_changed_rotated_and_deleted);

async fn services_are_changed_rotated_and_deleted(backend: Backend) {
    let s = with_owner(backend).await;
    let api = Api { s: &s };
    let (web, secret, _) = tenant(&s, "acme").await;
    tenant(&s, "globex").await;
    user(&s, "alice@acme.io", "acme", "admin").await;
    user(&s, "mel@acme.io", "acme", "member").await;
    user(&s, "bob@globex.io", "globex", "admin").await;
    let alice = console_token(&s, "alice@acme.io").await;
    let mel = console_token(&s, "mel@acme.io").await;
    let bob = console_token(&s, "bob@globex.io").await;

    // A machine client, made through the API, gets tokens.
    let (st, m) = api
        .post(
            "/api/organizations/acme/services",
            &alice,
            json!({ "name": "worker", "grant_types": ["client_credentials"] }),
        )
        .await;
    assert_eq!(st, 201, "{m}");
    let id = m["client_id"].as_str().unwrap().to_string();
    let first_secret = m["client_secret"].as_str().unwrap().to_string();
    let cc = |secret: String| {
        let (s, id) = (&s, id.clone());
        async move {
            token(
                s,
                &[("grant_type", "client_credentials")],
                Some((&id, &secret)),
            )
            .await
        }
    };
    let (st, t) = cc(first_secret.clone()).await;
    assert_eq!(st, 200, "{t}");
    let machine_token = t["access_token"].as_str().unwrap().to_string();
    assert!(active(&s, &web, &secret, &machine_token).await);
    let path = format!("/api/services/{id}");

    // Reading: the organization's members; not another organization's admin.
    let (st, got) = api.get(&path, &mel).await;
    assert_eq!(st, 200, "{got}");
    assert_eq!(got["name"], "worker");
    assert!(got.get("secret_sha256").is_none() && got.get("client_secret").is_none());
    assert_eq!(api.get(&path, &bob).await.0, 403);
    let (st, e) = api.get("/api/services/svc_nope", &alice).await;
    assert_eq!((st, e["code"].as_str()), (404, Some("not_found")));

    // Bad changes are refused and change nothing.
    for (body, why) in [
        (json!({ "name": "" }), "empty name"),
        (json!({ "name": "a\u{7}b" }), "control character"),
        (json!({ "grant_types": [] }), "no grant type"),
        (json!({ "grant_types": ["password"] }), "unknown grant"),
        (
            json!({ "grant_types": ["authorization_code"] }),
            "code grant without redirect URI",
        ),
        (
            json!({ "redirect_uris": ["http://worker.example.com/cb"] }),
            "plain http",
        ),
        (
            json!({ "redirect_uris": ["http://127.0.0.1.evil.example/cb"] }),
            "loopback look-alike",
        ),
        (
            json!({ "redirect_uris": ["https://user:pw@worker.example.com/cb"] }),
            "credentials",
        ),
        (
            json!({ "redirect_uris": ["https://worker.example.com/cb#x"] }),
            "fragment",
        ),
        (
            json!({ "redirect_uris": "https://x.example" }),
            "not a list",
        ),
        (json!({ "colour": "blue" }), "unknown field"),
    ] {
        let (st, e) = api.patch(&path, &alice, body).await;
        assert_eq!(st, 400, "{why}: {e}");
        assert!(e["message"].is_string(), "{why}: {e}");
    }
    assert_eq!(
        api.get(&path, &alice).await.1,
        got,
        "a refused change changed the service"
    );
    let change = json!({ "name": "Worker 2" });
    assert_eq!(api.patch(&path, &mel, change.clone()).await.0, 403);
    assert_eq!(api.patch(&path, &bob, change.clone()).await.0, 403);
    let (st, changed) = api
        .patch(
            &path,
            &alice,
            json!({
                "name": "Worker 2",
                "grant_types": ["client_credentials", "authorization_code"],
                "redirect_uris": ["https://worker.example.com/cb"],
            }),
        )
        .await;
    assert_eq!(st, 200, "{changed}");
    assert_eq!(changed["name"], "Worker 2");
    assert_eq!(
        changed["redirect_uris"],
        json!(["https://worker.example.com/cb"])
    );
    assert_eq!(api.get(&path, &mel).await.1["name"], "Worker 2");

    // A redirect URI taken off a service is refused from then on.
    let authorize = |client: &str| {
        format!(
            "{}/oauth2/authorize?response_type=code&client_id={client}&redirect_uri={}&scope=openid&code_challenge=E9Melhoa2OwvFrEMTJguCQVkjoLl8lKAuELuhC4PZnU&code_challenge_method=S256&state=s",
            s.base,
            urlencode(REDIRECT)
        )
    };
    let r = s.client.get(authorize(&web)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let (st, _) = api
        .patch(
            &format!("/api/services/{web}"),
            &alice,
            json!({ "redirect_uris": ["https://app.acme.example/cb"] }),
        )
        .await;
    assert_eq!(st, 200);
    let r = s.client.get(authorize(&web)).send().await.unwrap();
    assert_eq!(
        r.status().as_u16(),
        400,
        "a removed redirect URI still works"
    );

    // Secret rotation: the old secret stops working, the new one works.
    assert_eq!(
        api.post(&format!("{path}/secret"), &mel, json!({})).await.0,
        403
    );
    let (st, rotated) = api.post(&format!("{path}/secret"), &alice, json!({})).await;
    assert_eq!(st, 200, "{rotated}");
    let new_secret = rotated["client_secret"].as_str().unwrap().to_string();
    assert_ne!(new_secret, first_secret);
    assert_eq!(
        cc(first_secret.clone()).await.0,
        401,
        "the old secret still works"
    );
    assert_eq!(cc(new_secret.clone()).await.0, 200);
    let (st, public) = api
        .post(
            "/api/organizations/acme/services",
            &alice,
            json!({ "name": "spa", "grant_types": ["authorization_code"], "redirect_uris": ["https://spa.example/cb"], "public": true }),
        )
        .await;
    assert_eq!(st, 201, "{public}");
    let public_id = public["client_id"].as_str().unwrap();
    let (st, e) = api
        .post(
            &format!("/api/services/{public_id}/secret"),
            &alice,
            json!({}),
        )
        .await;
    assert_eq!(st, 400, "{e}");

    // Deletion: its API keys, tokens and secret all stop working.
    let (st, k) = api
        .post(&format!("{path}/api-keys"), &alice, json!({ "name": "ci" }))
        .await;
    assert_eq!(st, 201, "{k}");
    let key = k["key"].as_str().unwrap().to_string();
    assert_eq!(api.get("/api/tiers", &key).await.0, 200);
    assert_eq!(api.delete(&path, &mel).await.0, 403);
    assert_eq!(api.delete(&path, &bob).await.0, 403);
    let (st, _) = api.delete(&path, &alice).await;
    assert_eq!(st, 204);
    assert_eq!(api.get(&path, &alice).await.0, 404);
    assert_eq!(api.delete(&path, &alice).await.0, 404);
    assert_eq!(
        cc(new_secret).await.0,
        401,
        "a deleted service still gets tokens"
    );
    assert!(
        !active(&s, &web, &secret, &machine_token).await,
        "a deleted service's token is still active"
    );
    assert_eq!(
        api.get("/api/tiers", &key).await.0,
        401,
        "a deleted service's key still works"
    );
    let (_, list) = api.get("/api/organizations/acme/services", &alice).await;
    assert!(
        list["services"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["client_id"] != id.as_str()),
        "{list}"
    );

    // Each change is audited with its actor and address.
    for kind in [
        "service.updated",
        "service.secret_rotated",
        "service.deleted",
    ] {
        let (_, log) = api
            .get(
                &format!("/api/organizations/acme/audit?kind={kind}"),
                &alice,
            )
            .await;
        let e = &log["events"][0];
        assert!(e["details"]["client_id"].is_string(), "{kind}: {log}");
        assert_eq!(e["ip"], "127.0.0.1", "{kind}: {log}");
        assert!(
            e["actor"].as_str().unwrap().starts_with("user:"),
            "{kind}: {log}"
        );
    }
}

fn urlencode(s: &str) -> String {
    serde_urlencoded::to_string([("", s)]).unwrap()[1..].to_string()
}

for_each_backend!(tiers_and_suspension);

async fn tiers_and_suspension(backend: Backend) {
    let s = with_owner(backend).await;
    let api = Api { s: &s };
    let (web, secret, _) = tenant(&s, "acme").await;
    user(&s, "alice@acme.io", "acme", "owner").await;
    // Alice signs in to acme's service (so the node caches the organization), and the API is
    // called with the console's tokens: a token of acme's service is not for it.
    let service_token = access_token(&s, &web, &secret, "alice@acme.io").await;
    assert_eq!(api.get("/api/tiers", &service_token).await.0, 401);
    let root = console_token(&s, "root@gatehouse.test").await;
    let alice = console_token(&s, "alice@acme.io").await;

    // Tiers: anyone signed in reads them; changing them is platform administration, which
    // needs the platform's owner with a second factor, so over HTTP it is refused to both.
    let (st, tiers) = api.get("/api/tiers", &alice).await;
    assert_eq!(st, 200, "{tiers}");
    assert_eq!(
        tiers["tiers"],
        json!([{ "name": "free", "max_users": 50, "max_services": 5 }])
    );
    let limits = json!({ "max_users": 2, "max_services": 1 });
    assert_eq!(
        api.put("/api/tiers/pro", &alice, limits.clone()).await.0,
        403
    );
    let (st, e) = api.put("/api/tiers/pro", &root, limits.clone()).await;
    assert_eq!(
        st, 403,
        "platform administration without a second factor: {e}"
    );
    assert_eq!(
        api.get("/api/tiers", &alice).await.1,
        tiers,
        "a refused PUT wrote a tier"
    );
    // The operator sets tiers with the admin command; bad limits are refused.
    for bad in [
        &[
            "tier",
            "set",
            "pro",
            "--max-users",
            "0",
            "--max-services",
            "1",
        ][..],
        &[
            "tier",
            "set",
            "Pro Tier",
            "--max-users",
            "2",
            "--max-services",
            "1",
        ][..],
        &[
            "tier",
            "set",
            "pro",
            "--max-users",
            "2",
            "--max-services",
            "-1",
        ][..],
    ] {
        assert!(admin(&s, bad, "").await.is_err(), "{bad:?}");
    }
    let out = admin(
        &s,
        &[
            "tier",
            "set",
            "pro",
            "--max-users",
            "2",
            "--max-services",
            "1",
        ],
        "",
    )
    .await
    .unwrap();
    assert_eq!(
        out["tiers"][1],
        json!({ "name": "pro", "max_users": 2, "max_services": 1 })
    );

    // Moving an organization between tiers: the platform owner's, and only to a tier that
    // fits what it has (acme has ada and alice, and one service).
    let (st, _) = api
        .patch("/api/organizations/acme", &alice, json!({ "tier": "pro" }))
        .await;
    assert_eq!(st, 403, "an organization's owner chose its own tier");
    let (st, e) = api
        .patch("/api/organizations/acme", &root, json!({ "tier": "nope" }))
        .await;
    assert_eq!(st, 400, "{e}");
    user(&s, "mel@acme.io", "acme", "member").await;
    let (st, e) = api
        .patch(
            "/api/organizations/acme",
            &root,
            json!({ "tier": "pro", "primary_color": "#abcdef" }),
        )
        .await;
    assert_eq!(st, 400, "three members on a two-member tier: {e}");
    let (_, org) = api.get("/api/organizations/acme", &alice).await;
    assert_eq!(org["tier"], "free");
    assert!(
        org["primary_color"].is_null(),
        "a refused change was half made: {org}"
    );
    let (st, _) = api
        .patch(
            "/api/organizations/acme",
            &alice,
            json!({ "logo_url": "javascript:alert(1)" }),
        )
        .await;
    assert_eq!(st, 400);
    admin(
        &s,
        &[
            "tier",
            "set",
            "pro",
            "--max-users",
            "10",
            "--max-services",
            "1",
        ],
        "",
    )
    .await
    .unwrap();
    // Branding set, then a tier change keeps it; a branding change keeps the other field.
    let (st, _) = api
        .patch(
            "/api/organizations/acme",
            &alice,
            json!({ "logo_url": "https://cdn.acme.example/logo.png" }),
        )
        .await;
    assert_eq!(st, 200);
    let (st, org) = api
        .patch("/api/organizations/acme", &root, json!({ "tier": "pro" }))
        .await;
    assert_eq!(st, 200, "{org}");
    assert_eq!(org["tier"], "pro");
    assert_eq!(org["logo_url"], "https://cdn.acme.example/logo.png");
    let (_, org) = api
        .patch(
            "/api/organizations/acme",
            &alice,
            json!({ "primary_color": "#123456" }),
        )
        .await;
    assert_eq!(
        org["logo_url"], "https://cdn.acme.example/logo.png",
        "{org}"
    );
    assert_eq!(org["primary_color"], "#123456");
    // The login pages show it at once, though the node had the organization cached from the
    // sign-ins above.
    let (_, challenge) = crate::login::pkce();
    let page = s
        .get(&crate::login::authorize_path(
            &web,
            REDIRECT,
            &challenge,
            &[],
        ))
        .await
        .text;
    assert!(page.contains("#123456"), "{page}");
    let (_, org) = api
        .patch(
            "/api/organizations/acme",
            &alice,
            json!({ "logo_url": null }),
        )
        .await;
    assert!(
        org["logo_url"].is_null() && org["primary_color"] == "#123456",
        "{org}"
    );
    assert_eq!(
        api.patch("/api/organizations/acme", &alice, json!({}))
            .await
            .0,
        400
    );
    // A refused part refuses the whole change.
    let (st, _) = api
        .patch(
            "/api/organizations/acme",
            &alice,
            json!({ "primary_color": "#000000", "tier": "free" }),
        )
        .await;
    assert_eq!(st, 403);
    assert_eq!(
        api.get("/api/organizations/acme", &alice).await.1["primary_color"],
        "#123456"
    );
    // The new tier's service limit holds.
    let (st, e) = api
        .post(
            "/api/organizations/acme/services",
            &alice,
            json!({ "name": "second", "grant_types": ["client_credentials"] }),
        )
        .await;
    assert_eq!(st, 400, "{e}");
    let out = admin(&s, &["org", "tier", "acme", "--tier", "free"], "")
        .await
        .unwrap();
    assert_eq!(out["tier"], "free");
    let (st, m) = api
        .post(
            "/api/organizations/acme/services",
            &alice,
            json!({ "name": "second", "grant_types": ["client_credentials"] }),
        )
        .await;
    assert_eq!(st, 201, "{m}");
    let (id, sec) = (
        m["client_id"].as_str().unwrap().to_string(),
        m["client_secret"].as_str().unwrap().to_string(),
    );
    let cc = || {
        token(
            &s,
            &[("grant_type", "client_credentials")],
            Some((&id, &sec)),
        )
    };
    assert_eq!(cc().await.0, 200);

    // Suspension: the platform owner's; a suspended organization's services issue nothing.
    assert_eq!(
        api.post("/api/organizations/acme/suspend", &alice, json!({}))
            .await
            .0,
        403
    );
    assert_eq!(
        api.post("/api/organizations/acme/hibernate", &root, json!({}))
            .await
            .0,
        404
    );
    let (st, out) = api
        .post("/api/organizations/acme/suspend", &root, json!({}))
        .await;
    assert_eq!(st, 200, "{out}");
    assert_eq!(out["suspended"], true);
    let (st, t) = cc().await;
    assert_ne!(
        st, 200,
        "a suspended organization's service got a token: {t}"
    );
    assert!(t.get("access_token").is_none());
    let (st, out) = api
        .post("/api/organizations/acme/unsuspend", &root, json!({}))
        .await;
    assert_eq!(st, 200, "{out}");
    assert_eq!(cc().await.0, 200, "the suspension was not lifted");

    let (_, log) = api
        .get(
            "/api/organizations/acme/audit?kind=organization.tier_changed",
            &root,
        )
        .await;
    assert_eq!(log["events"].as_array().unwrap().len(), 2, "{log}");
    let (_, log) = api
        .get(
            "/api/organizations/acme/audit?kind=organization.suspended",
            &root,
        )
        .await;
    assert_eq!(log["events"][0]["ip"], "127.0.0.1", "{log}");
}

for_each_backend!(service_keys_reach_only_their_organizations_stores);

/// Stores created with a service API key belong to its organization: another organization's
/// key finds nothing there, as if the store did not exist, and changes nothing; the operator's
/// key reaches every store.
async fn service_keys_reach_only_their_organizations_stores(backend: Backend) {
    let s = Server::start(backend).await;
    let api = Api { s: &s };
    let key_of = |org: &'static str| {
        let s = &s;
        async move {
            let (client_id, _, _) = tenant(s, org).await;
            admin(
                s,
                &["apikey", "create", "--service", &client_id, "--name", "k"],
                "",
            )
            .await
            .unwrap()["key"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    let acme = key_of("acme").await;
    let globex = key_of("globex").await;
    let operator = s.key.clone();
    let post = |path: String, key: String, body: Value| {
        let api = &api;
        async move {
            api.call(reqwest::Method::POST, &path, Some(&key), Some(body))
                .await
        }
    };
    let create = |key: String, name: &'static str| async move {
        let (st, out) = post("/stores".into(), key, json!({ "name": name })).await;
        assert_eq!(st, 201, "{out}");
        out["id"].as_str().unwrap().to_string()
    };
    let theirs = create(operator.clone(), "operator's").await;
    let a1 = create(acme.clone(), "acme one").await;
    let a2 = create(acme.clone(), "acme two").await;
    let g1 = create(globex.clone(), "globex one").await;

    // Acme's key works on its stores.
    let model = json!({
        "schema_version": "1.1",
        "type_definitions": [
            { "type": "user" },
            { "type": "doc", "relations": { "viewer": { "this": {} } },
              "metadata": { "relations": { "viewer": { "directly_related_user_types": [{ "type": "user" }] } } } }
        ]
    });
    let (st, out) = post(
        format!("/stores/{a1}/authorization-models"),
        acme.clone(),
        model.clone(),
    )
    .await;
    assert_eq!(st, 201, "{out}");
    let tuple = json!({ "writes": { "tuple_keys": [{ "user": "user:anne", "relation": "viewer", "object": "doc:1" }] } });
    assert_eq!(
        post(format!("/stores/{a1}/write"), acme.clone(), tuple.clone())
            .await
            .0,
        200
    );
    let check =
        json!({ "tuple_key": { "user": "user:anne", "relation": "viewer", "object": "doc:1" } });
    let (st, out) = post(format!("/stores/{a1}/check"), acme.clone(), check.clone()).await;
    assert_eq!((st, out["allowed"].as_bool()), (200, Some(true)), "{out}");

    // Globex's key and acme's key cross nowhere: every kind of request is a 404.
    for (store, key) in [
        (&a1, &globex),
        (&g1, &acme),
        (&theirs, &acme),
        (&theirs, &globex),
    ] {
        let (st, out) = api
            .call(
                reqwest::Method::GET,
                &format!("/stores/{store}"),
                Some(key),
                None,
            )
            .await;
        assert_eq!(
            (st, out["code"].as_str()),
            (404, Some("store_id_not_found")),
            "{out}"
        );
        assert_eq!(
            post(format!("/stores/{store}/check"), key.clone(), check.clone())
                .await
                .0,
            404
        );
        assert_eq!(
            post(format!("/stores/{store}/write"), key.clone(), tuple.clone())
                .await
                .0,
            404
        );
        assert_eq!(
            post(
                format!("/stores/{store}/authorization-models"),
                key.clone(),
                model.clone()
            )
            .await
            .0,
            404
        );
        // AuthZEN too: no search reveals who holds what in another organization's store.
        for (kind, body) in [
            (
                "evaluation",
                json!({ "subject": { "type": "user", "id": "anne" }, "action": { "name": "viewer" }, "resource": { "type": "doc", "id": "1" } }),
            ),
            (
                "search/subject",
                json!({ "subject": { "type": "user" }, "action": { "name": "viewer" }, "resource": { "type": "doc", "id": "1" } }),
            ),
            (
                "search/resource",
                json!({ "subject": { "type": "user", "id": "anne" }, "action": { "name": "viewer" }, "resource": { "type": "doc" } }),
            ),
            (
                "search/action",
                json!({ "subject": { "type": "user", "id": "anne" }, "resource": { "type": "doc", "id": "1" } }),
            ),
        ] {
            let (st, out) = post(
                format!("/stores/{store}/access/v1/{kind}"),
                key.clone(),
                body,
            )
            .await;
            assert_eq!(
                (st, out["code"].as_str()),
                (404, Some("store_id_not_found")),
                "{kind}: {out}"
            );
        }
        let (st, _) = api
            .call(
                reqwest::Method::DELETE,
                &format!("/stores/{store}"),
                Some(key),
                None,
            )
            .await;
        assert_eq!(st, 404);
    }
    // The owner's own search finds anne.
    let (st, out) = post(
        format!("/stores/{a1}/access/v1/search/subject"),
        acme.clone(),
        json!({ "subject": { "type": "user" }, "action": { "name": "viewer" }, "resource": { "type": "doc", "id": "1" } }),
    )
    .await;
    assert_eq!(st, 200, "{out}");
    assert_eq!(
        out["results"],
        json!([{ "type": "user", "id": "anne" }]),
        "{out}"
    );
    // Nothing was written or deleted by those.
    let (st, out) = post(format!("/stores/{a1}/check"), acme.clone(), check.clone()).await;
    assert_eq!((st, out["allowed"].as_bool()), (200, Some(true)), "{out}");
    assert_eq!(
        api.call(
            reqwest::Method::GET,
            &format!("/stores/{g1}"),
            Some(&globex),
            None
        )
        .await
        .0,
        200
    );

    // Listing: each organization its own, paged; the operator everything.
    let ids = |out: &Value| -> Vec<String> {
        out["stores"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect()
    };
    let (_, first) = api
        .call(
            reqwest::Method::GET,
            "/stores?page_size=1",
            Some(&acme),
            None,
        )
        .await;
    let token = first["continuation_token"].as_str().unwrap().to_string();
    assert!(!token.is_empty(), "{first}");
    let (_, second) = api
        .call(
            reqwest::Method::GET,
            &format!("/stores?page_size=1&continuation_token={token}"),
            Some(&acme),
            None,
        )
        .await;
    let mut mine = [ids(&first), ids(&second)].concat();
    mine.sort();
    let mut want = vec![a1.clone(), a2.clone()];
    want.sort();
    assert_eq!(mine, want);
    let (_, g) = api
        .call(reqwest::Method::GET, "/stores", Some(&globex), None)
        .await;
    assert_eq!(ids(&g), vec![g1.clone()]);
    let (_, named) = api
        .call(
            reqwest::Method::GET,
            "/stores?name=acme%20two",
            Some(&acme),
            None,
        )
        .await;
    assert_eq!(ids(&named), vec![a2.clone()]);
    let (_, all) = api
        .call(
            reqwest::Method::GET,
            "/stores?page_size=100",
            Some(&operator),
            None,
        )
        .await;
    for id in [&theirs, &a1, &a2, &g1] {
        assert!(ids(&all).contains(id), "{all}");
    }
    assert_eq!(
        api.call(
            reqwest::Method::GET,
            &format!("/stores/{a1}"),
            Some(&operator),
            None
        )
        .await
        .0,
        200
    );
}

for_each_backend!(tier_limits_hold_under_concurrent_additions);

/// Tier limits hold when additions race: eight admin commands (eight processes) add members,
/// then services, at once to an organization whose tier allows four of each.
async fn tier_limits_hold_under_concurrent_additions(backend: Backend) {
    let s = Server::start(backend).await;
    admin(
        &s,
        &[
            "tier",
            "set",
            "small",
            "--max-users",
            "4",
            "--max-services",
            "4",
        ],
        "",
    )
    .await
    .unwrap();
    admin(
        &s,
        &[
            "org", "create", "--slug", "acme", "--name", "Acme", "--tier", "small",
        ],
        "",
    )
    .await
    .unwrap();
    admin(&s, &["org", "approve", "acme"], "").await.unwrap();
    let emails: Vec<String> = (0..8).map(|i| format!("u{i}@acme.io")).collect();
    let s = &s;
    let members = futures::future::join_all(emails.iter().map(|e| async move {
        admin(
            s,
            &[
                "user", "create", "--email", e, "--org", "acme", "--role", "member",
            ],
            "",
        )
        .await
    }))
    .await;
    let added = members.iter().filter(|r| r.is_ok()).count();
    assert_eq!(added, 4, "{members:?}");
    for refused in members.iter().filter_map(|r| r.as_ref().err()) {
        assert!(refused.contains("limit of 4 users"), "{refused}");
    }
    let names: Vec<String> = (0..8).map(|i| format!("svc{i}")).collect();
    let services = futures::future::join_all(names.iter().map(|n| async move {
        admin(
            s,
            &[
                "service",
                "create",
                "--first-party",
                "--org",
                "acme",
                "--name",
                n,
                "--grant",
                "client_credentials",
            ],
            "",
        )
        .await
    }))
    .await;
    let made: Vec<_> = services.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(made.len(), 4, "{services:?}");
    for refused in services.iter().filter_map(|r| r.as_ref().err()) {
        assert!(refused.contains("limit of 4 services"), "{refused}");
    }
    // The refused ones left no grant behind: only the four made can get tokens.
    for svc in made {
        let id = svc["client_id"].as_str().unwrap();
        let secret = svc["client_secret"].as_str().unwrap();
        let (st, t) = token(
            s,
            &[("grant_type", "client_credentials")],
            Some((id, secret)),
        )
        .await;
        assert_eq!(st, 200, "{t}");
    }
}
