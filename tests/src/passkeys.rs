//! Passkeys through the `passkey` plugin and the host's WebAuthn ceremonies (webauthn-rs),
//! driven by a software authenticator (webauthn-authenticator-rs): registered through the API,
//! then asked for as the second factor of a password sign-in, and used alone to sign in
//! without a name where a service offers it.

use serde_json::{Value, json};
use webauthn_authenticator_rs::WebauthnAuthenticator;
use webauthn_authenticator_rs::prelude::{
    CreationChallengeResponse, RequestChallengeResponse, Url,
};
use webauthn_authenticator_rs::softpasskey::SoftPasskey;

use crate::harness::{Backend, Server};
use crate::login::{
    Browser, PASSWORD, REDIRECT, admin, authorize_path, console_token, console_token_in, pkce,
    query_of, tenant, token,
};
use crate::mfa::call;
use crate::providers::claims_of;

/// A software passkey. SoftPasskey keeps no discoverable credentials, so this plays that part
/// of an authenticator: it remembers each credential and the user handle it was made for,
/// and answers a request that names no credential with the last one, user handle included,
/// as a passkey does. (None of what it adds is signed: the server's checks are the same.)
struct TestPasskey {
    wa: WebauthnAuthenticator<SoftPasskey>,
    origin: Url,
    creds: Vec<(Value, Value)>,
}

impl TestPasskey {
    /// An authenticator of a browser at `origin` (the page's origin, as the browser reports it).
    fn new(origin: &str) -> Self {
        Self {
            wa: WebauthnAuthenticator::new(SoftPasskey::new(true)),
            origin: Url::parse(origin).unwrap(),
            creds: Vec::new(),
        }
    }

    /// The answer to `navigator.credentials.create` with `options` (JSON).
    fn register(&mut self, options: &Value) -> String {
        let mut v = options.clone();
        if let Some(sel) = v["publicKey"].get_mut("authenticatorSelection") {
            // SoftPasskey refuses to be asked for a discoverable credential; it plays one.
            sel["requireResidentKey"] = json!(false);
            sel["residentKey"] = json!("discouraged");
        }
        let handle = v["publicKey"]["user"]["id"].clone();
        let ccr: CreationChallengeResponse = serde_json::from_value(v).unwrap();
        let reg = self.wa.do_registration(self.origin.clone(), ccr).unwrap();
        let out = serde_json::to_value(&reg).unwrap();
        self.creds.push((out["rawId"].clone(), handle));
        out.to_string()
    }

    /// The answer to `navigator.credentials.get` with `options` (JSON).
    fn authenticate(&mut self, options: &Value) -> Value {
        let mut v = options.clone();
        let discoverable = v["publicKey"]["allowCredentials"]
            .as_array()
            .is_none_or(|a| a.is_empty());
        let mut handle = Value::Null;
        if discoverable {
            let (id, h) = self.creds.last().cloned().expect("a registered credential");
            v["publicKey"]["allowCredentials"] = json!([{ "type": "public-key", "id": id }]);
            handle = h;
        }
        let rcr: RequestChallengeResponse = serde_json::from_value(v).unwrap();
        let cred = self.wa.do_authentication(self.origin.clone(), rcr).unwrap();
        let mut out = serde_json::to_value(&cred).unwrap();
        if discoverable {
            out["response"]["userHandle"] = handle;
        }
        out
    }
}

/// The WebAuthn options a passkey page hands to its script.
fn page_options(body: &str) -> Value {
    let json = body
        .split(r#"<script type="application/json" id="passkey-options">"#)
        .nth(1)
        .and_then(|r| r.split("</script>").next())
        .unwrap_or_else(|| panic!("no passkey options in {body}"));
    serde_json::from_str(
        &json
            .replace("\\u003c", "<")
            .replace("\\u003e", ">")
            .replace("\\u0026", "&"),
    )
    .unwrap()
}

/// The value of the hidden field `name` of a page.
fn hidden(body: &str, name: &str) -> String {
    body.split(&format!(r#"name="{name}" value=""#))
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or_else(|| panic!("no {name} in {body}"))
        .to_string()
}

/// Exchanges the code in a redirect for tokens: the ID token's claims.
async fn id_claims(s: &Server, location: &str, verifier: &str, client: (&str, &str)) -> Value {
    assert!(location.starts_with(REDIRECT), "{location}");
    let code = query_of(location)["code"].clone();
    let (st, tokens) = token(
        s,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", verifier),
        ],
        Some(client),
    )
    .await;
    assert_eq!(st, 200, "{tokens}");
    let mut claims = claims_of(tokens["id_token"].as_str().unwrap());
    claims["access_token"] = tokens["access_token"].clone();
    claims
}

#[tokio::test(flavor = "multi_thread")]
async fn passkeys_are_registered_then_sign_in_as_second_factor_and_alone() {
    let s = Server::start(Backend::Sqlite).await;
    let (client_id, secret, ada) = tenant(&s, "acme").await;
    let port = s.base.rsplit(':').next().unwrap().to_string();
    // The login pages' origin, as a browser at the issuer reports it: a loopback issuer is
    // served as `localhost`, since an IP address cannot be a relying party.
    let origin = format!("http://localhost:{port}");
    // Gatehouse's own API takes the console's tokens.
    let pwd = console_token(&s, &ada).await;
    let t = Some(pwd.as_str());
    use reqwest::Method;

    // Registration: the options name the relying party and ask for a discoverable passkey.
    let (st, none) = call(&s, Method::GET, "/api/me/mfa", t, None).await;
    assert_eq!(st, 200, "{none}");
    assert_eq!(none["passkeys"], json!([]));
    let (st, _) = call(&s, Method::POST, "/api/me/mfa/passkey", None, None).await;
    assert_eq!(st, 401);
    let (st, e) = call(
        &s,
        Method::POST,
        "/api/me/mfa/passkey/confirm",
        t,
        Some(json!({ "response": "{}" })),
    )
    .await;
    assert_eq!(st, 400, "a confirmation without a registration: {e}");
    let (st, started) = call(&s, Method::POST, "/api/me/mfa/passkey", t, None).await;
    assert_eq!(st, 200, "{started}");
    let options = &started["options"];
    assert_eq!(options["publicKey"]["rp"]["id"], "localhost", "{options}");
    assert_eq!(options["publicKey"]["user"]["name"], ada.as_str());
    assert_eq!(
        options["publicKey"]["authenticatorSelection"]["residentKey"],
        "required"
    );
    let mut key = TestPasskey::new(&origin);
    let response = key.register(options);
    for bad in [
        json!({}),
        json!({ "response": 7 }),
        json!({ "response": "not json" }),
    ] {
        let (st, e) = call(
            &s,
            Method::POST,
            "/api/me/mfa/passkey/confirm",
            t,
            Some(bad.clone()),
        )
        .await;
        assert_eq!(st, 400, "{bad}: {e}");
    }
    // A failed confirmation uses the registration up: start again.
    let (st, started) = call(&s, Method::POST, "/api/me/mfa/passkey", t, None).await;
    assert_eq!(st, 200);
    let mut key = TestPasskey::new(&origin);
    // An authenticator of another origin is refused.
    let mut elsewhere = TestPasskey::new("http://localhost:1");
    let wrong = elsewhere.register(&started["options"]);
    let (st, e) = call(
        &s,
        Method::POST,
        "/api/me/mfa/passkey/confirm",
        t,
        Some(json!({ "response": wrong })),
    )
    .await;
    assert_eq!(st, 400, "{e}");
    let (st, started) = call(&s, Method::POST, "/api/me/mfa/passkey", t, None).await;
    assert_eq!(st, 200);
    let response = {
        let _ = response;
        key.register(&started["options"])
    };
    let (st, done) = call(
        &s,
        Method::POST,
        "/api/me/mfa/passkey/confirm",
        t,
        Some(json!({ "response": response })),
    )
    .await;
    assert_eq!(st, 200, "{done}");
    let credential = done["credential_id"].as_str().unwrap().to_string();
    // From now on the password alone changes no factor.
    let (st, again) = call(
        &s,
        Method::POST,
        "/api/me/mfa/passkey/confirm",
        t,
        Some(json!({ "response": response })),
    )
    .await;
    assert_eq!(st, 403, "a factor changed on the password alone: {again}");
    let (_, status) = call(&s, Method::GET, "/api/me/mfa", t, None).await;
    assert_eq!(status["passkeys"], json!([credential]), "{status}");

    // From now on the password alone opens no session: the passkey is asked for.
    let mut b = Browser::new(&s);
    let (verifier, challenge) = pkce();
    let page = b
        .sign_in(
            &authorize_path(&client_id, REDIRECT, &challenge, &[]),
            &ada,
            PASSWORD,
        )
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(!b.cookies.contains_key("gh_session"));
    let csp = page.headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'nonce-"), "{csp}");
    let options = page_options(&page.body);
    assert_eq!(
        options["publicKey"]["allowCredentials"][0]["id"], credential,
        "{options}"
    );
    let request = hidden(&page.body, "request");
    assert_eq!(hidden(&page.body, "method"), "passkey");
    // A made-up answer is refused, and the page asks again.
    let p = b
        .post(
            "/login",
            &[
                ("request", &request),
                ("method", "passkey"),
                ("response", "{\"id\":\"x\"}"),
            ],
        )
        .await;
    assert!(
        p.status == 400 || p.status == 401,
        "{} {}",
        p.status,
        p.body
    );
    assert!(!b.cookies.contains_key("gh_session"));
    let options = page_options(&p.body);
    let answer = key.authenticate(&options);
    let p = b
        .post(
            "/login",
            &[
                ("request", &request),
                ("method", "passkey"),
                ("response", &answer.to_string()),
            ],
        )
        .await;
    assert_eq!(p.status, 303, "{}", p.body);
    let claims = id_claims(&s, &p.location.unwrap(), &verifier, (&client_id, &secret)).await;
    let amr: Vec<&str> = claims["amr"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    for m in ["pwd", "hwk", "mfa"] {
        assert!(amr.contains(&m), "{m} not in {amr:?}");
    }
    // The console's token of the same session, for the API, carries the same methods.
    let mfa_token = console_token_in(&mut b, &s).await;
    assert_eq!(claims_of(&mfa_token)["amr"], claims["amr"]);
    // A replayed registration is refused, even from a sign-in with the passkey.
    let (st, again) = call(
        &s,
        Method::POST,
        "/api/me/mfa/passkey/confirm",
        Some(&mfa_token),
        Some(json!({ "response": response })),
    )
    .await;
    assert_eq!(st, 400, "a replayed registration: {again}");

    // The service offers passkeys to sign in without a name.
    admin(
        &s,
        &[
            "user",
            "create",
            "--email",
            "alice@acme.example.com",
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
    let alice = console_token(&s, "alice@acme.example.com").await;
    let (st, e) = call(
        &s,
        Method::PUT,
        &format!("/api/services/{client_id}/plugins/passkey"),
        Some(&alice),
        Some(json!({ "config": {} })),
    )
    .await;
    assert_eq!(st, 200, "{e}");
    let mut b = Browser::new(&s);
    let (verifier, challenge) = pkce();
    let start = b
        .get(&authorize_path(&client_id, REDIRECT, &challenge, &[]))
        .await;
    let login = start.location.unwrap();
    let request = login.trim_start_matches("/login?request=").to_string();
    let page = b.get(&login).await;
    assert!(
        page.body.contains("Sign in with a passkey"),
        "{}",
        page.body
    );
    let page = b
        .get(&format!("/login/with/passkey?request={request}"))
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body.contains(r#"action="/login/callback/passkey""#),
        "{}",
        page.body
    );
    let options = page_options(&page.body);
    assert_eq!(
        options["publicKey"]["allowCredentials"],
        json!([]),
        "{options}"
    );
    let answer = key.authenticate(&options);
    // Another user's handle on the credential: refused.
    let mut forged = answer.clone();
    forged["response"]["userHandle"] = json!("AAAAAAAAAAAAAAAAAAAAAA");
    let p = b
        .post(
            "/login/callback/passkey",
            &[("response", &forged.to_string())],
        )
        .await;
    assert_eq!(p.status, 401, "{}", p.body);
    // The refusal used the ceremony up: a new one.
    let page = b
        .get(&format!("/login/with/passkey?request={request}"))
        .await;
    let answer = key.authenticate(&page_options(&page.body));
    let p = b
        .post(
            "/login/callback/passkey",
            &[("response", &answer.to_string())],
        )
        .await;
    assert_eq!(p.status, 303, "{}", p.body);
    let claims = id_claims(&s, &p.location.unwrap(), &verifier, (&client_id, &secret)).await;
    assert_eq!(claims["amr"], json!(["hwk", "mfa"]), "{claims}");
    assert_eq!(claims["sub"], status_sub(&s, &pwd).await);
    // The same answer again: refused (its ceremony is gone).
    let p = b
        .post(
            "/login/callback/passkey",
            &[("response", &answer.to_string())],
        )
        .await;
    assert!(p.status >= 400, "{} {}", p.status, p.body);

    // Removing a passkey takes a sign-in with a second factor.
    let path = format!("/api/me/mfa/passkey/{credential}");
    let (st, _) = call(&s, Method::DELETE, &path, t, None).await;
    assert_eq!(st, 403);
    let (st, e) = call(
        &s,
        Method::DELETE,
        "/api/me/mfa/passkey/nope",
        Some(&mfa_token),
        None,
    )
    .await;
    assert_eq!(st, 404, "{e}");
    let (st, e) = call(&s, Method::DELETE, &path, Some(&mfa_token), None).await;
    assert_eq!(st, 204, "{e}");
    let (_, status) = call(&s, Method::GET, "/api/me/mfa", t, None).await;
    assert_eq!(status["passkeys"], json!([]));
    // And the password alone signs in again.
    signed_in_with_password(&s, &client_id, &ada).await;
}

/// A new browser in which `email` has signed in with the password alone.
async fn signed_in_with_password(s: &Server, client_id: &str, email: &str) -> Browser {
    let mut b = Browser::new(s);
    let (_, challenge) = pkce();
    let page = b
        .sign_in(
            &authorize_path(client_id, REDIRECT, &challenge, &[]),
            email,
            PASSWORD,
        )
        .await;
    assert_eq!(page.status, 303, "{}", page.body);
    b
}

/// The subject of an access token, from userinfo.
async fn status_sub(s: &Server, token: &str) -> Value {
    let r = s
        .client
        .get(format!("{}/oauth2/userinfo", s.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    r.json::<Value>().await.unwrap()["sub"].clone()
}

/// The login policy's step-up served by a passkey: a password-only session reused from another
/// address and device is a medium risk, which the policy answers with a challenge; the page
/// asks for the passkey, and its answer completes the sign-in with the second factor.
#[tokio::test(flavor = "multi_thread")]
async fn a_risky_sign_in_is_stepped_up_with_a_passkey() {
    use reqwest::Method;
    let s = Server::start(Backend::Sqlite).await;
    let (client_id, secret, ada) = tenant(&s, "acme").await;
    let port = s.base.rsplit(':').next().unwrap().to_string();
    let origin = format!("http://localhost:{port}");

    // Ada signs in with her password (the baseline of her history), then registers a passkey.
    let home = signed_in_with_password(&s, &client_id, &ada).await;
    let t = console_token(&s, &ada).await;
    let (st, started) = call(&s, Method::POST, "/api/me/mfa/passkey", Some(&t), None).await;
    assert_eq!(st, 200, "{started}");
    let mut key = TestPasskey::new(&origin);
    let response = key.register(&started["options"]);
    let (st, done) = call(
        &s,
        Method::POST,
        "/api/me/mfa/passkey/confirm",
        Some(&t),
        Some(json!({ "response": response })),
    )
    .await;
    assert_eq!(st, 200, "{done}");
    let credential = done["credential_id"].as_str().unwrap().to_string();

    // Her password-only session from another address, without the device cookie.
    let mut cookies = home.cookies.clone();
    cookies.remove("gh_device");
    let mut away = Browser::from_address(&s, "127.0.0.2".parse().unwrap(), cookies);
    let (verifier, challenge) = pkce();
    let page = away
        .get(&authorize_path(&client_id, REDIRECT, &challenge, &[]))
        .await;
    assert_eq!(page.status, 200, "a step-up, not a redirect: {}", page.body);
    assert_eq!(hidden(&page.body, "method"), "passkey");
    let options = page_options(&page.body);
    assert_eq!(
        options["publicKey"]["allowCredentials"][0]["id"], credential,
        "{options}"
    );
    let request = hidden(&page.body, "request");
    // A made-up answer issues nothing.
    let p = away
        .post(
            "/login",
            &[
                ("request", request.as_str()),
                ("method", "passkey"),
                ("response", "{\"id\":\"x\"}"),
            ],
        )
        .await;
    assert!(
        p.status == 400 || p.status == 401,
        "{} {}",
        p.status,
        p.body
    );
    assert!(p.location.is_none());
    // The passkey's answer to the page's options completes it.
    let page = if p.body.contains("passkey-options") {
        p
    } else {
        away.get(&authorize_path(&client_id, REDIRECT, &challenge, &[]))
            .await
    };
    let request = hidden(&page.body, "request");
    let answer = key.authenticate(&page_options(&page.body));
    let done = away
        .post(
            "/login",
            &[
                ("request", request.as_str()),
                ("method", "passkey"),
                ("response", answer.to_string().as_str()),
            ],
        )
        .await;
    assert_eq!(done.status, 303, "{}", done.body);
    let claims = id_claims(
        &s,
        done.location.as_deref().unwrap(),
        &verifier,
        (&client_id, &secret),
    )
    .await;
    let amr = claims["amr"].as_array().unwrap();
    assert!(
        amr.contains(&json!("hwk")) && amr.contains(&json!("mfa")),
        "{amr:?}"
    );
}
