//! The management API through the real binary: organizations, members (nobody grants at or
//! above their own role), services and their API keys, every permission decided by the
//! engine on the platform's model.

use serde_json::{Value, json};

use crate::harness::{Backend, Server, ServerOptions, for_each_backend};
use crate::login::{PASSWORD, admin, tenant, tokens_for};

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
    let (web, secret, _) = tenant(&s, "acme").await;
    let (g_web, g_secret, _) = tenant(&s, "globex").await;
    user(&s, "alice@acme.io", "acme", "owner").await;
    let carol = user(&s, "carol@acme.io", "acme", "admin").await;
    user(&s, "bob@globex.io", "globex", "member").await;
    let login = |client: String, secret: String, email: &'static str| {
        let s = &s;
        async move {
            tokens_for(s, &client, &secret, email).await["access_token"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    // The platform owner is owner of every organization, so it may sign in to acme's service.
    let root = login(web.clone(), secret.clone(), "root@gatehouse.test").await;
    let alice = login(web.clone(), secret.clone(), "alice@acme.io").await;
    let carol_t = login(web.clone(), secret.clone(), "carol@acme.io").await;
    let bob = login(g_web.clone(), g_secret.clone(), "bob@globex.io").await;

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
    let (st, out) = api
        .post(
            "/api/organizations/acme/members",
            &carol_t,
            json!({ "email": "dave@acme.io", "role": "member" }),
        )
        .await;
    assert_eq!(st, 201, "{out}");
    let dave = out["user_id"].as_str().unwrap().to_string();
    let (st, _) = api
        .post(
            "/api/organizations/acme/members",
            &alice,
            json!({ "email": "x@acme.io", "role": "member" }),
        )
        .await;
    assert_eq!(st, 400, "an unknown user");
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
    // The platform owner may grant owner.
    let (st, _) = api
        .post(
            "/api/organizations/acme/members",
            &root,
            json!({ "email": "dave@acme.io", "role": "owner" }),
        )
        .await;
    assert_eq!(st, 201);

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
