//! Sign-in links sent by email, through the `magic-link` plugin: a service offers it, a link
//! works once, only in the sign-in (and so the browser) that asked for it, for 15 minutes; the
//! page never tells whether an address has an account.

use serde_json::{Value, json};

use crate::account::{link_in_mail, outbox_to, path_of};
use crate::harness::{Backend, REDIS_URL, Server, ServerOptions, for_each_backend};
use crate::login::{
    Browser, PASSWORD, REDIRECT, admin, authorize_path, console_token, pkce, query_of, tenant,
    token,
};
use crate::providers::claims_of;

/// Starts a sign-in in `b` and opens the magic-link form from the login page's button;
/// returns the request id.
async fn ask_for_the_form(b: &mut Browser, client_id: &str, challenge: &str) -> String {
    let start = b
        .get(&authorize_path(
            client_id,
            REDIRECT,
            challenge,
            &[("nonce", "n-link")],
        ))
        .await;
    assert_eq!(start.status, 303, "{}", start.body);
    let login = start.location.unwrap();
    let request = login.trim_start_matches("/login?request=").to_string();
    let page = b.get(&login).await;
    let button =
        format!(r#"href="/login/with/magic-link?request={request}">Email me a sign-in link<"#);
    assert!(page.body.contains(&button), "{}", page.body);
    let form = b
        .get(&format!("/login/with/magic-link?request={request}"))
        .await;
    assert_eq!(form.status, 200, "{}", form.body);
    assert!(
        form.body.contains(r#"action="/login/with/magic-link""#)
            && form.body.contains(r#"name="email" type="email""#),
        "{}",
        form.body
    );
    request
}

async fn ask_for_a_link(b: &mut Browser, request: &str, email: &str) -> crate::login::Page {
    b.post(
        "/login/with/magic-link",
        &[("request", request), ("email", email)],
    )
    .await
}

/// The TTLs (seconds) of the Redis keys matching `pattern`.
async fn ttls(prefix: &str, pattern: &str) -> Vec<i64> {
    let client = redis::Client::open(REDIS_URL).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:kv:{pattern}"))
        .query_async(&mut c)
        .await
        .unwrap();
    let mut out = Vec::new();
    for k in keys {
        let t: i64 = redis::cmd("TTL").arg(&k).query_async(&mut c).await.unwrap();
        out.push(t);
    }
    out
}

for_each_backend!(a_sign_in_link_works_once_in_the_browser_that_asked);

async fn a_sign_in_link_works_once_in_the_browser_that_asked(backend: Backend) {
    let mut opts = ServerOptions::new(backend);
    let prefix = format!("test-links-{}", ulid::Ulid::new());
    if backend == Backend::Postgres {
        opts.redis = Some((REDIS_URL.into(), prefix.clone()));
    }
    let s = Server::start_with(opts).await;
    let (client_id, secret, ada) = tenant(&s, "acme").await;
    let outbox = s.data_dir().join("outbox");
    for (email, role) in [
        ("alice@acme.example.com", "admin"),
        ("bob@acme.example.com", "member"),
    ] {
        admin(
            &s,
            &[
                "user",
                "create",
                "--email",
                email,
                "--password-stdin",
                "--org",
                "acme",
                "--role",
                role,
            ],
            &format!("{PASSWORD}\n"),
        )
        .await
        .unwrap();
    }
    let alice = console_token(&s, "alice@acme.example.com").await;
    let put = |plugin: &str, config: Value| {
        let (s, alice, client_id, plugin) =
            (&s, alice.clone(), client_id.clone(), plugin.to_string());
        async move {
            let r = s
                .client
                .put(format!(
                    "{}/api/services/{client_id}/plugins/{plugin}",
                    s.base
                ))
                .bearer_auth(alice)
                .json(&json!({ "config": config }))
                .send()
                .await
                .unwrap();
            (
                r.status().as_u16(),
                r.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };

    // Not offered yet: no button, and its pages are a 404.
    let mut b = Browser::new(&s);
    let (_, challenge) = pkce();
    let start = b
        .get(&authorize_path(&client_id, REDIRECT, &challenge, &[]))
        .await;
    let login = start.location.unwrap();
    let request = login.trim_start_matches("/login?request=").to_string();
    let page = b.get(&login).await;
    assert!(!page.body.contains("magic-link"), "{}", page.body);
    let p = b
        .get(&format!("/login/with/magic-link?request={request}"))
        .await;
    assert_eq!(p.status, 404, "{}", p.body);

    // The password and the second factor are every service's, not configured per service; the
    // link takes no settings.
    for built_in in ["password", "totp"] {
        let (st, e) = put(built_in, json!({})).await;
        assert_eq!(st, 400, "{e}");
        assert!(
            e["message"].as_str().unwrap().contains("every service"),
            "{e}"
        );
    }
    let (st, e) = put("magic-link", json!({ "subject": "x" })).await;
    assert_eq!(st, 400, "{e}");
    let (st, got) = put("magic-link", json!({})).await;
    assert_eq!(st, 200, "{got}");

    // Browser A asks for a link.
    let mut a = Browser::new(&s);
    let (verifier, challenge) = pkce();
    let request = ask_for_the_form(&mut a, &client_id, &challenge).await;
    // Without the browser's binding to the sign-in, nothing is sent.
    let mut stranger = Browser::new(&s);
    let p = ask_for_a_link(&mut stranger, &request, &ada).await;
    assert_eq!(p.status, 400, "{}", p.body);
    // Not an address: the form again, saying so.
    let p = ask_for_a_link(&mut a, &request, "not-an-address").await;
    assert_eq!(p.status, 400, "{}", p.body);
    assert!(
        p.body.contains("Enter your email address") && p.body.contains(r#"name="email""#),
        "{}",
        p.body
    );
    let p = a
        .post("/login/with/magic-link", &[("email", ada.as_str())])
        .await;
    assert_eq!(p.status, 400, "{}", p.body);
    // An address without an account and one with: the same answer; only the account gets mail.
    let unknown = ask_for_a_link(&mut a, &request, "nobody@acme.example.com").await;
    let known = ask_for_a_link(&mut a, &request, &ada).await;
    assert_eq!((unknown.status, known.status), (200, 200), "{}", known.body);
    assert_eq!(unknown.body, known.body);
    assert!(known.body.contains("within 15 minutes"), "{}", known.body);
    let prefix_url = format!("{}/login/callback/magic-link?token=", s.base);
    let link = link_in_mail(&outbox, &ada, 1, &prefix_url).await;
    assert!(outbox_to(&outbox, "nobody@acme.example.com").is_empty());
    // Asked again within a minute: the same answer, no second message.
    let again = ask_for_a_link(&mut a, &request, &ada).await;
    assert_eq!(again.body, known.body);
    if backend == Backend::Postgres {
        // The link is kept (as a digest) for 15 minutes, and so is the sign-in it belongs to.
        let links = ttls(&prefix, "plugin-kv:magic-link:*:link:*").await;
        assert_eq!(links.len(), 1, "{links:?}");
        assert!((880..=900).contains(&links[0]), "{links:?}");
        let pending = ttls(&prefix, &format!("pending:{request}")).await;
        assert!(
            pending.len() == 1 && (880..=900).contains(&pending[0]),
            "{pending:?}"
        );
        let token = link.split("token=").nth(1).unwrap();
        let client = redis::Client::open(REDIS_URL).unwrap();
        let mut c = client.get_multiplexed_async_connection().await.unwrap();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}:*{token}*"))
            .query_async(&mut c)
            .await
            .unwrap();
        assert!(keys.is_empty(), "the token itself is kept: {keys:?}");
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(outbox_to(&outbox, &ada).len(), 1);

    // Opened in another browser: refused, and the link is not used up.
    let mut other = Browser::new(&s);
    let p = other.get(&path_of(&link, &s.base)).await;
    assert_eq!(p.status, 400, "{}", p.body);
    assert!(!other.cookies.contains_key("gh_session"));
    // Opened in the browser that asked: signed in, and the application gets its code.
    let p = a.get(&path_of(&link, &s.base)).await;
    assert_eq!(p.status, 303, "{}", p.body);
    let back = p.location.unwrap();
    assert!(back.starts_with(REDIRECT), "{back}");
    let code = query_of(&back)["code"].clone();
    let (st, tokens) = token(
        &s,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &verifier),
        ],
        Some((&client_id, &secret)),
    )
    .await;
    assert_eq!(st, 200, "{tokens}");
    let id = claims_of(tokens["id_token"].as_str().unwrap());
    assert_eq!(id["amr"], json!(["email"]), "{id}");
    assert_eq!(id["nonce"], "n-link");
    // A second time: refused.
    let p = a.get(&path_of(&link, &s.base)).await;
    assert_eq!(p.status, 400, "{}", p.body);

    // A link asked for in one sign-in and opened after another sign-in started in the same
    // browser is refused: it belongs to the first.
    let mut c = Browser::new(&s);
    let (_, challenge) = pkce();
    let first = ask_for_the_form(&mut c, &client_id, &challenge).await;
    let p = ask_for_a_link(&mut c, &first, "bob@acme.example.com").await;
    assert_eq!(p.status, 200, "{}", p.body);
    let bob_link = link_in_mail(&outbox, "bob@acme.example.com", 1, &prefix_url).await;
    let (_, challenge) = pkce();
    let _second = ask_for_the_form(&mut c, &client_id, &challenge).await;
    let p = c.get(&path_of(&bob_link, &s.base)).await;
    assert_eq!(p.status, 400, "{}", p.body);
    assert!(!c.cookies.contains_key("gh_session"));
    // A made-up token, in a browser with a sign-in that asked: refused.
    let mut d = Browser::new(&s);
    let (_, challenge) = pkce();
    let r = ask_for_the_form(&mut d, &client_id, &challenge).await;
    let p = ask_for_a_link(&mut d, &r, "nobody@acme.example.com").await;
    assert_eq!(p.status, 200);
    let p = d
        .get(&format!(
            "/login/callback/magic-link?token={}",
            "a".repeat(64)
        ))
        .await;
    assert_eq!(p.status, 400, "{}", p.body);
    assert!(p.body.contains("expired or was already used"), "{}", p.body);

    // The sign-in is audited with its method.
    let r = s
        .client
        .get(format!(
            "{}/api/organizations/acme/audit?kind=login.succeeded",
            s.base
        ))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    let audit: Value = r.json().await.unwrap();
    let amrs: Vec<&Value> = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["details"]["amr"])
        .collect();
    assert!(amrs.contains(&&json!(["email"])), "{audit}");

    // Removed: no button, and the links already sent no longer sign in.
    let r = s
        .client
        .delete(format!(
            "{}/api/services/{client_id}/plugins/magic-link",
            s.base
        ))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    let mut e = Browser::new(&s);
    let (_, challenge) = pkce();
    let start = e
        .get(&authorize_path(&client_id, REDIRECT, &challenge, &[]))
        .await;
    let login = start.location.unwrap();
    let request = login.trim_start_matches("/login?request=").to_string();
    let page = e.get(&login).await;
    assert!(!page.body.contains("magic-link"), "{}", page.body);
    let p = ask_for_a_link(&mut e, &request, &ada).await;
    assert_eq!(p.status, 404, "{}", p.body);
    let p = d.get(&path_of(&link, &s.base)).await;
    assert_eq!(p.status, 404, "{}", p.body);
}
