//! Signing in with an identity provider through the `oidc` plugin, against a real OpenID
//! provider on loopback: the npm package `oidc-provider` (`tests/sdk/idp.mjs`), not a fake.
//! Organizations configure the plugin per service; its secret is sealed and never shown.

use std::collections::HashMap;
use std::path::PathBuf;

use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;

use crate::harness::{Backend, Server, ServerOptions, for_each_backend};
use crate::login::{
    Browser, PASSWORD, REDIRECT, admin, authorize_path, console_token, pkce, query_of, tenant,
    token,
};

/// The claims of a JWT (not verified: the relying-party tests verify Gatehouse's tokens).
pub fn claims_of(jwt: &str) -> Value {
    use base64::Engine;
    let body = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(body)
            .unwrap(),
    )
    .unwrap()
}

/// `oidc-provider` on a free loopback port, with one confidential client whose redirect URI
/// is Gatehouse's callback of the `oidc` plugin. Killed on drop.
struct Idp {
    _child: tokio::process::Child,
    issuer: String,
}

async fn idp(redirect_uri: &str) -> Idp {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("sdk");
    assert!(
        dir.join("node_modules/oidc-provider/package.json")
            .is_file(),
        "oidc-provider is not installed: run `npm ci --prefix tests/sdk` in the workspace first"
    );
    node_service(
        "idp.mjs",
        &[
            ("IDP_PORT", "0"),
            ("IDP_CLIENT_ID", "gatehouse"),
            ("IDP_CLIENT_SECRET", "idp-secret-3f9a"),
            ("IDP_REDIRECT_URI", redirect_uri),
        ],
    )
    .await
}

/// Runs `tests/sdk/{script}` with Node and this environment, and waits for its one line
/// `READY <base URL>`. Killed on drop.
async fn node_service(script: &str, env: &[(&str, &str)]) -> Idp {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("sdk");
    let mut cmd = tokio::process::Command::new("node");
    cmd.arg(script)
        .current_dir(&dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run node (is Node.js 20+ installed?): {e}"));
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(std::time::Duration::from_secs(30), lines.next_line())
        .await
        .unwrap_or_else(|_| panic!("{script} did not start in 30 s"))
        .unwrap()
        .unwrap_or_else(|| panic!("{script} stopped before it was ready"));
    let issuer = ready
        .strip_prefix("READY ")
        .unwrap_or_else(|| panic!("{script}: unexpected first line: {ready}"))
        .to_string();
    Idp {
        _child: child,
        issuer,
    }
}

/// Signs in at the identity provider as `login` (its development login form, any password)
/// from its authorization URL, with a cookie jar of its own; returns where it sends the
/// browser back to.
async fn at_idp(issuer: &str, auth_url: &str, login: &str) -> String {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut jar: HashMap<String, String> = HashMap::new();
    let absolute = |l: &str| {
        if l.starts_with('/') {
            format!("{issuer}{l}")
        } else {
            l.to_string()
        }
    };
    let keep = |jar: &mut HashMap<String, String>, r: &reqwest::Response| {
        for c in r.headers().get_all("set-cookie") {
            let text = c.to_str().unwrap();
            let pair = text.split(';').next().unwrap();
            let (k, v) = pair.split_once('=').unwrap();
            jar.insert(k.to_string(), v.to_string());
        }
    };
    let cookie = |jar: &HashMap<String, String>| {
        jar.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    };
    let r = http.get(auth_url).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 303, "{}", r.text().await.unwrap());
    keep(&mut jar, &r);
    let interaction = absolute(r.headers()["location"].to_str().unwrap());
    assert!(interaction.contains("/interaction/"), "{interaction}");
    let r = http
        .post(&interaction)
        .header("cookie", cookie(&jar))
        .form(&[("prompt", "login"), ("login", login), ("password", "any")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 303, "{}", r.text().await.unwrap());
    keep(&mut jar, &r);
    let resume = absolute(r.headers()["location"].to_str().unwrap());
    let r = http
        .get(&resume)
        .header("cookie", cookie(&jar))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 303, "{}", r.text().await.unwrap());
    r.headers()["location"].to_str().unwrap().to_string()
}

/// From the login page of a fresh authorization request in `b`, through the `oidc` button and
/// the identity provider as `login`, back to Gatehouse: Gatehouse's answer to the callback.
async fn sign_in_with_idp(
    b: &mut Browser,
    client_id: &str,
    challenge: &str,
    issuer: &str,
    login: &str,
) -> crate::login::Page {
    let start = b
        .get(&authorize_path(
            client_id,
            REDIRECT,
            challenge,
            &[("prompt", "login"), ("nonce", "rp-nonce")],
        ))
        .await;
    assert_eq!(start.status, 303, "{}", start.body);
    let login_page = start.location.unwrap();
    let request = login_page.trim_start_matches("/login?request=").to_string();
    let page = b.get(&login_page).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let button = format!("/login/with/oidc?request={request}");
    assert!(
        page.body.contains(&format!("href=\"{button}\"")),
        "{}",
        page.body
    );
    assert!(
        page.body.contains("Continue with Acme SSO"),
        "{}",
        page.body
    );
    let go = b.get(&button).await;
    assert_eq!(go.status, 303, "{}", go.body);
    let auth_url = go.location.unwrap();
    assert!(
        auth_url.starts_with(&format!("{issuer}/auth?")),
        "{auth_url}"
    );
    let q = query_of(&auth_url);
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["client_id"], "gatehouse");
    assert!(q["redirect_uri"].ends_with("/login/callback/oidc"));
    let back = at_idp(issuer, &auth_url, login).await;
    assert!(back.contains("/login/callback/oidc?"), "{back}");
    b.get(&back).await
}

for_each_backend!(the_oidc_plugin_signs_in_with_a_real_openid_provider);

async fn the_oidc_plugin_signs_in_with_a_real_openid_provider(backend: Backend) {
    let mut opts = ServerOptions::new(backend);
    opts.env
        .push(("GATEHOUSE_PLUGIN_HTTP_LOOPBACK".into(), "1".into()));
    let s = Server::start_with(opts).await;
    let idp = idp(&format!("{}/login/callback/oidc", s.base)).await;
    let (client_id, secret, ada) = tenant(&s, "acme").await;
    admin(
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
    // Gatehouse's own API takes the console's tokens.
    let alice = console_token(&s, "alice@acme.io").await;
    let ada_token = console_token(&s, &ada).await;
    let path = format!("/api/services/{client_id}/plugins/oidc");
    let call = |method: reqwest::Method, path: String, t: Option<String>, body: Option<Value>| {
        let s = &s;
        async move {
            let mut r = s.client.request(method, format!("{}{path}", s.base));
            if let Some(t) = t {
                r = r.bearer_auth(t);
            }
            if let Some(b) = body {
                r = r.json(&b);
            }
            let r = r.send().await.unwrap();
            let st = r.status().as_u16();
            let text = r.text().await.unwrap();
            (
                st,
                serde_json::from_str::<Value>(&text).unwrap_or(Value::Null),
                text,
            )
        }
    };
    let config = json!({
        "issuer": idp.issuer,
        "client_id": "gatehouse",
        "client_secret": "idp-secret-3f9a",
        "display_name": "Acme SSO",
    });

    // Bad configurations are refused, and nothing is enabled.
    for (body, needle) in [
        (
            json!({ "config": { "client_id": "gatehouse", "client_secret": "x" } }),
            "issuer",
        ),
        (
            json!({ "config": { "issuer": "ftp://idp", "client_id": "a", "client_secret": "x" } }),
            "issuer",
        ),
        (
            json!({ "config": { "issuer": idp.issuer, "client_id": "a", "client_secret": "x", "surprise": 1 } }),
            "surprise",
        ),
        (
            json!({ "config": { "issuer": idp.issuer, "client_id": "", "client_secret": "x" } }),
            "client_id",
        ),
        (json!({ "config": [1, 2] }), "object"),
        (json!({ "config": {}, "extra": true }), "extra"),
    ] {
        let (st, e, _) = call(
            reqwest::Method::PUT,
            path.clone(),
            Some(alice.clone()),
            Some(body.clone()),
        )
        .await;
        assert_eq!(st, 400, "{body}: {e}");
        assert!(e.to_string().contains(needle), "{body}: {e}");
    }
    // A secret that fails its schema is refused without being echoed.
    let (st, e, text) = call(
        reqwest::Method::PUT,
        path.clone(),
        Some(alice.clone()),
        Some(json!({ "config": { "issuer": idp.issuer, "client_id": "a", "client_secret": 12345678 } })),
    )
    .await;
    assert_eq!(st, 400, "{e}");
    assert!(!text.contains("12345678"), "{text}");
    let (st, e, _) = call(
        reqwest::Method::PUT,
        format!("/api/services/{client_id}/plugins/nope"),
        Some(alice.clone()),
        Some(json!({ "config": {} })),
    )
    .await;
    assert_eq!((st, e["code"].as_str()), (404, Some("not_found")), "{e}");
    let (st, _, _) = call(
        reqwest::Method::PUT,
        path.clone(),
        Some(ada_token.clone()),
        Some(json!({ "config": config })),
    )
    .await;
    assert_eq!(st, 403, "a member may not configure sign-in");
    let (st, _, _) = call(
        reqwest::Method::PUT,
        path.clone(),
        None,
        Some(json!({ "config": config })),
    )
    .await;
    assert_eq!(st, 401);
    let (st, e, _) = call(
        reqwest::Method::PATCH,
        path.clone(),
        Some(alice.clone()),
        Some(json!({})),
    )
    .await;
    assert_eq!(st, 405, "{e}");
    let (st, list, _) = call(
        reqwest::Method::GET,
        format!("/api/services/{client_id}/plugins"),
        Some(alice.clone()),
        None,
    )
    .await;
    assert_eq!(
        (st, list["plugins"].as_array().map(Vec::len)),
        (200, Some(0)),
        "{list}"
    );

    // An admin configures it: the secret is sealed at rest and never shown.
    let (st, got, text) = call(
        reqwest::Method::PUT,
        path.clone(),
        Some(alice.clone()),
        Some(json!({ "config": config })),
    )
    .await;
    assert_eq!(st, 200, "{got}");
    assert_eq!(got["secrets_set"], json!(["client_secret"]));
    assert_eq!(got["config"]["client_id"], "gatehouse");
    assert!(!text.contains("idp-secret-3f9a"), "{text}");
    let (st, list, text) = call(
        reqwest::Method::GET,
        format!("/api/services/{client_id}/plugins"),
        Some(ada_token.clone()),
        None,
    )
    .await;
    assert_eq!(st, 200, "{list}");
    assert_eq!(list["plugins"][0]["plugin"], "oidc");
    assert!(!text.contains("idp-secret-3f9a"), "{text}");
    if let Some(db) = &s.database {
        let stored = db.query("SELECT config || ' ' || secrets FROM service_plugins");
        assert!(
            stored.contains("gatehouse") && stored.contains(" v1."),
            "{stored}"
        );
        assert!(
            !stored.contains("idp-secret-3f9a"),
            "the secret is stored in the clear"
        );
    }
    // (On SQLite the database is a file to look into.)
    for f in ["gatehouse.db", "gatehouse.db-wal"] {
        let bytes = std::fs::read(s.data_dir().join(f)).unwrap_or_default();
        assert!(
            !bytes.windows(15).any(|w| w == b"idp-secret-3f9a"),
            "the secret is in {f} in the clear"
        );
    }
    // Left out, the secret is kept; the change shows in the audit log.
    let mut edited = config.clone();
    edited.as_object_mut().unwrap().remove("client_secret");
    let (st, got, _) = call(
        reqwest::Method::PUT,
        path.clone(),
        Some(alice.clone()),
        Some(json!({ "config": edited })),
    )
    .await;
    assert_eq!(
        (st, got["secrets_set"].clone()),
        (200, json!(["client_secret"])),
        "{got}"
    );

    // Ada has a password account with the address the provider vouches for: the provider's
    // account is not linked to it on the address alone. The person is asked for a code mailed
    // to the address, and the page is the one an address without an account gets.
    let mut b = Browser::new(&s);
    let (_, challenge) = pkce();
    let page = sign_in_with_idp(&mut b, &client_id, &challenge, &idp.issuer, &ada).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("Check your email"), "{}", page.body);
    assert!(page.location.is_none() && !b.cookies.contains_key("gh_session"));
    let mut nb = Browser::new(&s);
    let (_, challenge) = pkce();
    let newbie_page = sign_in_with_idp(
        &mut nb,
        &client_id,
        &challenge,
        &idp.issuer,
        "newbie@elsewhere.io",
    )
    .await;
    let masked = |body: &str, email: &str| {
        let re = regex::Regex::new(r#"value="[^"]*""#).unwrap();
        re.replace_all(&body.replace(email, "ADDRESS"), "value=\"\"")
            .into_owned()
    };
    assert_eq!(newbie_page.status, page.status);
    assert_eq!(
        masked(&newbie_page.body, "newbie@elsewhere.io"),
        masked(&page.body, &ada),
        "the answer tells whether the address has an account"
    );
    // A wrong code signs nobody in.
    let re = regex::Regex::new(r#"name="csrf" value="([^"]*)""#).unwrap();
    let csrf = re.captures(&page.body).unwrap()[1].to_string();
    let wrong = b
        .post(
            "/login/prove",
            &[("csrf", csrf.as_str()), ("code", "00000000")],
        )
        .await;
    assert_eq!(wrong.status, 400, "{}", wrong.body);
    assert!(wrong.body.contains("not right"), "{}", wrong.body);
    assert!(wrong.location.is_none() && !b.cookies.contains_key("gh_session"));
    // Bad input changes nothing: another browser (without the page's cookie), a missing or
    // oversized code, a body that is no form, another method.
    let stranger = Browser::new(&s)
        .post(
            "/login/prove",
            &[("csrf", csrf.as_str()), ("code", "00000000")],
        )
        .await;
    assert_eq!(stranger.status, 400, "{}", stranger.body);
    assert!(stranger.body.contains("expired"), "{}", stranger.body);
    let big = "9".repeat(10_000);
    for fields in [
        vec![("csrf", csrf.as_str())],
        vec![("csrf", csrf.as_str()), ("code", big.as_str())],
    ] {
        let p = b.post("/login/prove", &fields).await;
        assert_eq!(p.status, 400, "{}", p.body);
        assert!(!b.cookies.contains_key("gh_session"));
    }
    let r = s
        .client
        .post(format!("{}/login/prove", s.base))
        .header("content-type", "application/json")
        .body("{\"code\": 1}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = s
        .client
        .get(format!("{}/login/prove", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(
        r.json::<Value>().await.unwrap()["code"],
        "method_not_allowed"
    );

    // Signed in with her password first, the same browser links the two once she confirms.
    let (_, challenge) = pkce();
    let p = b
        .sign_in(
            &authorize_path(&client_id, REDIRECT, &challenge, &[]),
            &ada,
            PASSWORD,
        )
        .await;
    assert_eq!(p.status, 303, "{}", p.body);
    let (_, challenge) = pkce();
    let asked = sign_in_with_idp(&mut b, &client_id, &challenge, &idp.issuer, &ada).await;
    assert_eq!(asked.status, 200, "linked without asking: {}", asked.body);
    // Nothing is linked before she confirms: another browser still needs the mailed code.
    let mut other = Browser::new(&s);
    let (_, c2) = pkce();
    let page = sign_in_with_idp(&mut other, &client_id, &c2, &idp.issuer, &ada).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("Check your email"), "{}", page.body);
    let page = crate::login::confirm_link(&mut b, asked).await;
    assert_eq!(page.status, 303, "{}", page.body);
    assert!(page.location.as_deref().unwrap().starts_with(REDIRECT));

    // From then on a fresh browser signs in with the provider alone, and the tokens say so.
    let mut fresh = Browser::new(&s);
    let (verifier, challenge) = pkce();
    let page = sign_in_with_idp(&mut fresh, &client_id, &challenge, &idp.issuer, &ada).await;
    assert_eq!(page.status, 303, "{}", page.body);
    let q = query_of(page.location.as_deref().unwrap());
    let (st, t) = token(
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
    assert_eq!(st, 200, "{t}");
    let claims = claims_of(t["id_token"].as_str().unwrap());
    assert_eq!(claims["amr"], json!(["fed"]));
    assert_eq!(claims["nonce"], "rp-nonce");
    // The callback works once: a replay finds no flow.
    let page = fresh
        .get(&format!(
            "{}/login/callback/oidc?code={}&state=x",
            s.base, q["code"]
        ))
        .await;
    assert_eq!(page.status, 400, "{}", page.body);

    // A new address at the provider, once proven with the mailed code, makes a new user,
    // who is not a member: the policy says no.
    let page =
        crate::login::prove_address(&s, &mut nb, newbie_page, "newbie@elsewhere.io", 1).await;
    assert_eq!(page.status, 403, "{}", page.body);
    assert!(page.body.contains("cannot sign in"), "{}", page.body);
    // The account is linked now: a fresh browser is not asked for a code again.
    let mut b = Browser::new(&s);
    let (_, challenge) = pkce();
    let page = sign_in_with_idp(
        &mut b,
        &client_id,
        &challenge,
        &idp.issuer,
        "newbie@elsewhere.io",
    )
    .await;
    assert_eq!(page.status, 403, "{}", page.body);
    assert!(page.body.contains("cannot sign in"), "{}", page.body);
    // Alice proves her own address with the code from her mailbox: the provider's account is
    // linked to her existing account (a member, so she signs in), not to a new one.
    let mut b = Browser::new(&s);
    let (_, challenge) = pkce();
    let page = sign_in_with_idp(&mut b, &client_id, &challenge, &idp.issuer, "alice@acme.io").await;
    let page = crate::login::prove_address(&s, &mut b, page, "alice@acme.io", 1).await;
    assert_eq!(page.status, 303, "{}", page.body);
    assert!(page.location.as_deref().unwrap().starts_with(REDIRECT));
    let mut b = Browser::new(&s);
    let (_, challenge) = pkce();
    let page = sign_in_with_idp(&mut b, &client_id, &challenge, &idp.issuer, "alice@acme.io").await;
    assert_eq!(page.status, 303, "linked: {}", page.body);
    // An address the provider does not vouch for signs nobody in.
    let mut b = Browser::new(&s);
    let (_, challenge) = pkce();
    let page = sign_in_with_idp(
        &mut b,
        &client_id,
        &challenge,
        &idp.issuer,
        "unverified-bob",
    )
    .await;
    assert_eq!(page.status, 403, "{}", page.body);
    assert!(page.body.contains("verified email"), "{}", page.body);

    // A forged answer (wrong state) is refused, and so is a callback with no flow.
    let mut b = Browser::new(&s);
    let (_, challenge) = pkce();
    let start = b
        .get(&authorize_path(&client_id, REDIRECT, &challenge, &[]))
        .await;
    let login_page = start.location.unwrap();
    let request = login_page.trim_start_matches("/login?request=").to_string();
    let go = b.get(&format!("/login/with/oidc?request={request}")).await;
    assert_eq!(go.status, 303, "{}", go.body);
    let page = b.get("/login/callback/oidc?code=forged&state=forged").await;
    assert_eq!(page.status, 400, "{}", page.body);
    assert!(
        page.body.contains("does not belong to this sign-in"),
        "{}",
        page.body
    );
    let page = Browser::new(&s)
        .get("/login/callback/oidc?code=x&state=y")
        .await;
    assert_eq!(page.status, 400, "{}", page.body);
    // A plugin the service does not offer.
    let page = b
        .get(&format!("/login/with/password?request={request}"))
        .await;
    assert_eq!(page.status, 404, "{}", page.body);

    // Removed, the button goes and the route says so.
    let (st, _, _) = call(
        reqwest::Method::DELETE,
        path.clone(),
        Some(alice.clone()),
        None,
    )
    .await;
    assert_eq!(st, 204);
    let (st, _, _) = call(
        reqwest::Method::DELETE,
        path.clone(),
        Some(alice.clone()),
        None,
    )
    .await;
    assert_eq!(st, 404);
    let page = b.get(&login_page).await;
    assert!(!page.body.contains("/login/with/oidc"), "{}", page.body);
    let page = b.get(&format!("/login/with/oidc?request={request}")).await;
    assert_eq!(page.status, 404, "{}", page.body);

    let (st, log, _) = call(
        reqwest::Method::GET,
        "/api/organizations/acme/audit".into(),
        Some(alice.clone()),
        None,
    )
    .await;
    assert_eq!(st, 200, "{log}");
    let kinds: Vec<&str> = log["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    for k in ["service.plugin_configured", "service.plugin_removed"] {
        assert!(kinds.contains(&k), "{k} not in {kinds:?}");
    }
}

/// The local stand-in of GitHub's OAuth web flow and REST API (`tests/sdk/github.mjs`), laid
/// out as GitHub Enterprise Server. Killed on drop.
async fn github_stand_in(redirect_uri: &str) -> Idp {
    node_service(
        "github.mjs",
        &[
            ("GH_PORT", "0"),
            ("GH_CLIENT_ID", "Iv1.gatehouse"),
            ("GH_CLIENT_SECRET", "gh-secret-77aa"),
            ("GH_REDIRECT_URI", redirect_uri),
        ],
    )
    .await
}

/// Through the login page's GitHub button to the stand-in, signed in there as `login`, and
/// back: Gatehouse's answer to the callback.
async fn sign_in_with_github(b: &mut Browser, client_id: &str, login: &str) -> crate::login::Page {
    let (_, challenge) = pkce();
    let start = b
        .get(&authorize_path(
            client_id,
            REDIRECT,
            &challenge,
            &[("prompt", "login")],
        ))
        .await;
    let login_page = start.location.unwrap();
    let request = login_page.trim_start_matches("/login?request=").to_string();
    let page = b.get(&login_page).await;
    assert!(page.body.contains("Continue with GitHub"), "{}", page.body);
    let go = b
        .get(&format!("/login/with/github?request={request}"))
        .await;
    assert_eq!(go.status, 303, "{}", go.body);
    let auth = go.location.unwrap();
    let q = query_of(&auth);
    assert_eq!(q["client_id"], "Iv1.gatehouse");
    assert_eq!(q["scope"], "read:user user:email");
    // The stand-in approves at once, as the user `login` (its test-only parameter).
    let r = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("{auth}&login={login}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 302);
    let back = r.headers()["location"].to_str().unwrap().to_string();
    b.get(&back).await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_github_plugin_signs_in_with_a_verified_address_only() {
    let mut opts = ServerOptions::new(Backend::Sqlite);
    opts.env
        .push(("GATEHOUSE_PLUGIN_HTTP_LOOPBACK".into(), "1".into()));
    let s = Server::start_with(opts).await;
    let gh = github_stand_in(&format!("{}/login/callback/github", s.base)).await;
    let (client_id, _, _) = tenant(&s, "acme").await;
    admin(
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
    let put = |config: Value| {
        let (s, alice, client_id) = (&s, alice.clone(), client_id.clone());
        async move {
            let r = s
                .client
                .put(format!(
                    "{}/api/services/{client_id}/plugins/github",
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
    let (st, e) = put(json!({ "client_id": "Iv1.gatehouse", "client_secret": "x", "enterprise_url": "not a url" })).await;
    assert_eq!(st, 400, "{e}");
    let (st, got) = put(json!({ "client_id": "Iv1.gatehouse", "client_secret": "gh-secret-77aa", "enterprise_url": gh.issuer })).await;
    assert_eq!(st, 200, "{got}");
    assert_eq!(got["secrets_set"], json!(["client_secret"]));

    // A GitHub account whose primary address is verified: once the person proves it with the
    // mailed code, a new user, not yet a member, so the sign-in policy refuses; once they
    // accept an admin's invitation, they sign in.
    let mut b = Browser::new(&s);
    let page = sign_in_with_github(&mut b, &client_id, "octocat").await;
    let page = crate::login::prove_address(&s, &mut b, page, "octocat@github.test", 1).await;
    assert_eq!(page.status, 403, "{}", page.body);
    assert!(page.body.contains("cannot sign in"), "{}", page.body);
    let r = s
        .client
        .post(format!("{}/api/organizations/acme/members", s.base))
        .bearer_auth(&alice)
        .json(&json!({ "email": "octocat@github.test", "role": "member" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202, "{}", r.text().await.unwrap());
    let mut b = Browser::new(&s);
    let page = sign_in_with_github(&mut b, &client_id, "octocat").await;
    assert_eq!(page.status, 403, "a member before accepting: {}", page.body);
    // The account GitHub made has no password: the person sets one with a reset link, then
    // accepts the invitation with it.
    crate::account::reset_password(&s, "octocat@github.test").await;
    assert_eq!(
        crate::account::accept_invitation(&s, "octocat@github.test", 1).await,
        200
    );
    let mut b = Browser::new(&s);
    let page = sign_in_with_github(&mut b, &client_id, "octocat").await;
    assert_eq!(page.status, 303, "{}", page.body);
    assert!(page.location.unwrap().starts_with(REDIRECT));

    // The verified address is taken even when the primary one is not verified.
    let mut b = Browser::new(&s);
    let page = sign_in_with_github(&mut b, &client_id, "secondary").await;
    let page = crate::login::prove_address(&s, &mut b, page, "second@github.test", 1).await;
    assert_eq!(page.status, 403, "{}", page.body);
    assert!(page.body.contains("cannot sign in"), "{}", page.body);
    // No verified address at all: nobody signs in, and no user is made.
    let mut b = Browser::new(&s);
    let page = sign_in_with_github(&mut b, &client_id, "unverified").await;
    assert_eq!(page.status, 403, "{}", page.body);
    assert!(page.body.contains("verified email"), "{}", page.body);
    let r = s
        .client
        .post(format!("{}/api/organizations/acme/members", s.base))
        .bearer_auth(&alice)
        .json(&json!({ "email": "unverified@github.test", "role": "member" }))
        .send()
        .await
        .unwrap();
    let (st, body) = (r.status().as_u16(), r.text().await.unwrap());
    assert_eq!(
        st, 202,
        "an address without an account is answered alike: {body}"
    );
    // The user refuses at GitHub.
    let mut b = Browser::new(&s);
    let page = sign_in_with_github(&mut b, &client_id, "denied").await;
    assert_eq!(page.status, 400, "{}", page.body);
    assert!(page.body.contains("access_denied"), "{}", page.body);

    // A wrong client secret is the organization's misconfiguration: the page says only that
    // signing in is not possible now, and the reason is logged.
    let (st, _) = put(json!({ "client_id": "Iv1.gatehouse", "client_secret": "wrong", "enterprise_url": gh.issuer })).await;
    assert_eq!(st, 200);
    let mut b = Browser::new(&s);
    let page = sign_in_with_github(&mut b, &client_id, "octocat").await;
    assert_eq!(page.status, 503, "{}", page.body);
    assert!(
        !page.body.contains("incorrect_client_credentials"),
        "{}",
        page.body
    );
    assert!(
        s.log().contains("incorrect_client_credentials"),
        "the reason is not logged"
    );
}
