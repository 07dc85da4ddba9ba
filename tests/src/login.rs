//! The OpenID provider's browser flows through the real binary, driven by a real relying
//! party (the `openidconnect` crate): discovery, authorization code with PKCE through the
//! hosted login page, ID token validation, userinfo, refresh rotation and reuse detection,
//! logout; and every way these can be misused.

use std::collections::HashMap;

use openidconnect::core::{CoreClient, CoreProviderMetadata, CoreUserInfoClaims};
use openidconnect::{
    AccessTokenHash, AuthenticationFlow, AuthorizationCode, ClientId, ClientSecret, CsrfToken,
    IssuerUrl, Nonce, OAuth2TokenResponse, PkceCodeChallenge, RedirectUrl, Scope, TokenResponse,
};
use serde_json::Value;

use crate::harness::{Backend, Server, ServerOptions, for_each_backend};

pub const REDIRECT: &str = "http://127.0.0.1:9/callback";
pub const PASSWORD: &str = "correct horse battery";

/// Runs an admin command against `s`'s database, with `stdin` as its input.
pub async fn admin(s: &Server, args: &[&str], stdin: &str) -> Result<Value, String> {
    use tokio::io::AsyncWriteExt;
    let bin = tokio::task::spawn_blocking(crate::harness::binary)
        .await
        .unwrap();
    let mut cmd = tokio::process::Command::new(bin);
    cmd.args(args)
        .env_clear()
        .env("GATEHOUSE_DATA_DIR", s.data_dir())
        .env("GATEHOUSE_LOG", "warn")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    if let Some(db) = &s.database {
        cmd.env("DATABASE_URL", &db.url);
    }
    let mut child = cmd.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).await.unwrap();
    drop(input);
    let out = child.wait_with_output().await.unwrap();
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

/// An active organization with a confidential code + refresh client, and a member with a
/// password. Returns (client_id, client_secret, email).
pub async fn tenant(s: &Server, slug: &str) -> (String, String, String) {
    admin(s, &["org", "create", "--slug", slug, "--name", "Acme"], "")
        .await
        .unwrap();
    admin(s, &["org", "approve", slug], "").await.unwrap();
    let svc = admin(
        s,
        &[
            "service",
            "create",
            "--first-party",
            "--org",
            slug,
            "--name",
            "Web app",
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
    let email = format!("ada@{slug}.example.com");
    admin(
        s,
        &[
            "user",
            "create",
            "--email",
            &email,
            "--name",
            "Ada Lovelace",
            "--verified",
            "--password-stdin",
            "--org",
            slug,
            "--role",
            "member",
        ],
        &format!("{PASSWORD}\n"),
    )
    .await
    .unwrap();
    (
        svc["client_id"].as_str().unwrap().to_string(),
        svc["client_secret"].as_str().unwrap().to_string(),
        email,
    )
}

/// A browser: no redirects followed, cookies kept.
pub struct Browser {
    http: reqwest::Client,
    base: String,
    pub cookies: HashMap<String, String>,
    /// Headers sent with every request (e.g. the `X-Forwarded-For` a proxy adds).
    pub headers: Vec<(String, String)>,
}

pub struct Page {
    pub status: u16,
    pub location: Option<String>,
    pub body: String,
    pub headers: reqwest::header::HeaderMap,
}

impl Browser {
    pub fn new(s: &Server) -> Self {
        Self {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            base: s.base.clone(),
            cookies: HashMap::new(),
            headers: Vec::new(),
        }
    }

    /// A browser connecting from `ip` (a loopback address other than 127.0.0.1 is another
    /// network address to the server), with these cookies.
    pub fn from_address(
        s: &Server,
        ip: std::net::IpAddr,
        cookies: HashMap<String, String>,
    ) -> Self {
        Self {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .local_address(ip)
                .build()
                .unwrap(),
            base: s.base.clone(),
            cookies,
            headers: Vec::new(),
        }
    }

    async fn send(&mut self, req: reqwest::RequestBuilder) -> Page {
        let cookie = self
            .cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        let mut req = if cookie.is_empty() {
            req
        } else {
            req.header("cookie", cookie)
        };
        for (k, v) in &self.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let r = req.send().await.unwrap();
        for c in r.headers().get_all("set-cookie") {
            let text = c.to_str().unwrap();
            let (pair, attrs) = text.split_once(';').unwrap_or((text, ""));
            let (k, v) = pair.split_once('=').unwrap();
            if v.is_empty() || attrs.contains("Max-Age=0") {
                self.cookies.remove(k);
            } else {
                self.cookies.insert(k.to_string(), v.to_string());
            }
        }
        Page {
            status: r.status().as_u16(),
            location: r
                .headers()
                .get("location")
                .map(|l| l.to_str().unwrap().to_string()),
            headers: r.headers().clone(),
            body: r.text().await.unwrap(),
        }
    }

    pub async fn get(&mut self, url: &str) -> Page {
        let url = if url.starts_with('/') {
            format!("{}{url}", self.base)
        } else {
            url.to_string()
        };
        let req = self.http.get(url);
        self.send(req).await
    }

    /// Posts a form from one of the server's pages (so with its `Origin`, as browsers do).
    pub async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let req = self
            .http
            .post(format!("{}{path}", self.base))
            .header("origin", self.base.clone())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(serde_urlencoded::to_string(form).unwrap());
        self.send(req).await
    }

    /// Follows an authorization URL to the login form, submits it, and returns the answer.
    pub async fn sign_in(&mut self, authorize_url: &str, email: &str, password: &str) -> Page {
        let start = self.get(authorize_url).await;
        assert_eq!(start.status, 303, "{}", start.body);
        let login = start.location.unwrap();
        assert!(login.starts_with("/login?request="), "{login}");
        let form = self.get(&login).await;
        assert_eq!(form.status, 200, "{}", form.body);
        assert!(
            form.body.contains(r#"<label for="password">"#),
            "{}",
            form.body
        );
        let request = login.trim_start_matches("/login?request=").to_string();
        self.post(
            "/login",
            &[
                ("request", request.as_str()),
                ("email", email),
                ("password", password),
            ],
        )
        .await
    }
}

/// Confirms a device connection from the page the device form answered with (which names
/// the application): posts its confirmation, and returns the answer.
pub async fn confirm_device(b: &mut Browser, page: Page) -> Page {
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body.contains("Connect this device?") && page.body.contains(r#"name="confirm""#),
        "no confirmation asked: {}",
        page.body
    );
    let field = |name: &str| {
        let re = regex::Regex::new(&format!(r#"name="{name}" value="([^"]*)""#)).unwrap();
        re.captures(&page.body).unwrap()[1].to_string()
    };
    let (csrf, code) = (field("csrf"), field("user_code"));
    b.post(
        "/device",
        &[
            ("csrf", csrf.as_str()),
            ("user_code", code.as_str()),
            ("confirm", "yes"),
            ("action", "allow"),
        ],
    )
    .await
}

/// Confirms linking an identity provider's account to the signed-in person, from the page
/// that asks it; the answer (the sign-in going on).
pub async fn confirm_link(b: &mut Browser, page: Page) -> Page {
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body.contains("Link this account?"),
        "no confirmation asked: {}",
        page.body
    );
    let field = |name: &str| {
        let re = regex::Regex::new(&format!(r#"name="{name}" value="([^"]*)""#)).unwrap();
        re.captures(&page.body).unwrap()[1].to_string()
    };
    let (link, csrf) = (field("link"), field("csrf"));
    b.post(
        "/login/link",
        &[
            ("link", link.as_str()),
            ("csrf", csrf.as_str()),
            ("action", "link"),
        ],
    )
    .await
}

/// The code in the `n`th sign-in code mailed to `email`, once it is there.
pub async fn code_in_mail(s: &Server, email: &str, n: usize) -> String {
    let re = regex::Regex::new(r"Subject: (\d{8}) is your code to sign in").unwrap();
    for _ in 0..100 {
        let mails: Vec<String> = crate::account::outbox_to(&s.data_dir().join("outbox"), email)
            .into_iter()
            .filter(|m| m.contains("is your code to sign in"))
            .collect();
        if let Some(m) = mails.get(n - 1) {
            return re.captures(m).unwrap_or_else(|| panic!("no code in {m}"))[1].to_string();
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("no sign-in code #{n} mailed to {email}");
}

/// Proves the address an identity provider vouched for with the `n`th code mailed to `email`,
/// from the page that asks for it; the answer (the sign-in going on).
pub async fn prove_address(s: &Server, b: &mut Browser, page: Page, email: &str, n: usize) -> Page {
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body.contains("Check your email"),
        "no code asked: {}",
        page.body
    );
    let code = code_in_mail(s, email, n).await;
    let re = regex::Regex::new(r#"name="csrf" value="([^"]*)""#).unwrap();
    let csrf = re.captures(&page.body).unwrap()[1].to_string();
    b.post(
        "/login/prove",
        &[("csrf", csrf.as_str()), ("code", code.as_str())],
    )
    .await
}

/// Creates `email` (password [`PASSWORD`]) as a `role` of the organization `org`, through the
/// admin command.
pub async fn add_user(s: &Server, org: &str, email: &str, role: &str) {
    admin(
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
}

/// Whether `b` is still signed in: an authorization for `client_id` goes straight back to the
/// application, with no form.
pub async fn still_signed_in(b: &mut Browser, client_id: &str) -> bool {
    let (_, challenge) = pkce();
    let sso = b
        .get(&authorize_path(client_id, REDIRECT, &challenge, &[]))
        .await;
    sso.location
        .as_deref()
        .is_some_and(|l| l.starts_with(REDIRECT))
}

/// The query parameters of a redirect.
pub fn query_of(location: &str) -> HashMap<String, String> {
    let q = location.split_once('?').map(|(_, q)| q).unwrap_or("");
    serde_urlencoded::from_str(q).unwrap()
}

fn http_client() -> openidconnect::reqwest::Client {
    openidconnect::reqwest::Client::builder()
        .redirect(openidconnect::reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

for_each_backend!(a_relying_party_signs_in_with_code_and_pkce);

async fn a_relying_party_signs_in_with_code_and_pkce(backend: Backend) {
    let mut opts = ServerOptions::new(backend);
    if backend == Backend::Postgres {
        // Sessions, pending requests and codes in Redis.
        opts.redis = Some((
            "redis://127.0.0.1:6379".into(),
            format!("test-login-{}", ulid::Ulid::new()),
        ));
    }
    let s = Server::start_with(opts).await;
    let (client_id, secret, email) = tenant(&s, "acme").await;
    let http = http_client();
    let meta = CoreProviderMetadata::discover_async(IssuerUrl::new(s.base.clone()).unwrap(), &http)
        .await
        .unwrap();
    let client = CoreClient::from_provider_metadata(
        meta,
        ClientId::new(client_id.clone()),
        Some(ClientSecret::new(secret.clone())),
    )
    .set_redirect_uri(RedirectUrl::new(REDIRECT.into()).unwrap());
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (url, state, nonce) = client
        .authorize_url(
            AuthenticationFlow::<openidconnect::core::CoreResponseType>::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .add_scope(Scope::new("email".into()))
        .add_scope(Scope::new("profile".into()))
        .set_pkce_challenge(challenge)
        .url();

    let mut browser = Browser::new(&s);
    // A wrong password shows the form again with an error, and no code.
    let wrong = browser
        .sign_in(url.as_str(), &email, "not the password")
        .await;
    assert_eq!(wrong.status, 401, "{}", wrong.body);
    assert!(
        wrong.body.contains("Incorrect email address or password"),
        "{}",
        wrong.body
    );
    assert!(wrong.location.is_none());
    assert!(!browser.cookies.contains_key("gh_session"));
    // An address nobody has gets the same answer (the password plugin verifies its decoy
    // hash through the host, so a malformed decoy would show as an unavailable page here).
    let nobody = browser
        .sign_in(url.as_str(), "nobody-at-all@example.com", PASSWORD)
        .await;
    assert_eq!(nobody.status, 401, "{}", nobody.body);
    assert!(
        nobody.body.contains("Incorrect email address or password"),
        "{}",
        nobody.body
    );

    let done = browser.sign_in(url.as_str(), &email, PASSWORD).await;
    assert_eq!(done.status, 303, "{}", done.body);
    let back = done.location.unwrap();
    assert!(back.starts_with(REDIRECT), "{back}");
    let q = query_of(&back);
    assert_eq!(q.get("state"), Some(state.secret()), "{back}");
    assert_eq!(q.get("iss"), Some(&s.base), "{back}");
    assert!(browser.cookies.contains_key("gh_session"));

    let tokens = client
        .exchange_code(AuthorizationCode::new(q["code"].clone()))
        .unwrap()
        .set_pkce_verifier(verifier)
        .request_async(&http)
        .await
        .unwrap();
    // The relying party's own validation: signature against the JWKS, issuer, audience,
    // expiry, nonce; then at_hash.
    let id_token = tokens.id_token().expect("an ID token");
    let id_verifier = client.id_token_verifier();
    let claims = id_token.claims(&id_verifier, &nonce).unwrap();
    assert_eq!(claims.email().map(|e| e.as_str()), Some(email.as_str()));
    assert_eq!(claims.email_verified(), Some(true));
    assert!(claims.auth_time().is_some());
    assert_eq!(
        claims
            .auth_method_refs()
            .unwrap()
            .iter()
            .map(|a| a.as_str())
            .collect::<Vec<_>>(),
        vec!["pwd"]
    );
    assert_eq!(claims.auth_context_ref().map(|a| a.as_str()), Some("1"));
    let expected = AccessTokenHash::from_token(
        tokens.access_token(),
        id_token.signing_alg().unwrap(),
        id_token.signing_key(&id_verifier).unwrap(),
    )
    .unwrap();
    assert_eq!(claims.access_token_hash(), Some(&expected));
    // A wrong nonce fails the relying party's check.
    assert!(
        id_token
            .claims(&id_verifier, &Nonce::new("other".into()))
            .is_err()
    );

    // userinfo releases the claims of the granted scopes.
    let info: CoreUserInfoClaims = client
        .user_info(tokens.access_token().clone(), None)
        .unwrap()
        .request_async(&http)
        .await
        .unwrap();
    assert_eq!(info.subject(), claims.subject());
    assert_eq!(info.email().map(|e| e.as_str()), Some(email.as_str()));
    assert_eq!(
        info.name().and_then(|n| n.get(None)).map(|n| n.as_str()),
        Some("Ada Lovelace")
    );

    // Refresh rotates: the new token works, the old one is spent.
    let first = tokens.refresh_token().expect("a refresh token").clone();
    let refreshed = client
        .exchange_refresh_token(&first)
        .unwrap()
        .request_async(&http)
        .await
        .unwrap();
    let second = refreshed.refresh_token().unwrap().clone();
    assert_ne!(first.secret(), second.secret());
    let refreshed_id = refreshed
        .id_token()
        .unwrap()
        .claims(&id_verifier, |_: Option<&Nonce>| Ok(()))
        .unwrap();
    assert_eq!(refreshed_id.subject(), claims.subject());

    // Single sign-on: the session signs the next authorization in without the form.
    let (challenge2, _) = PkceCodeChallenge::new_random_sha256();
    let (url2, _, _) = client
        .authorize_url(
            AuthenticationFlow::<openidconnect::core::CoreResponseType>::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .set_pkce_challenge(challenge2)
        .url();
    let sso = browser.get(url2.as_str()).await;
    assert_eq!(sso.status, 303);
    assert!(
        sso.location.as_deref().unwrap().starts_with(REDIRECT),
        "{:?}",
        sso.location
    );
    assert!(query_of(sso.location.as_deref().unwrap()).contains_key("code"));

    // Reusing the spent refresh token revokes the whole family: the current one too, and
    // the access tokens it issued.
    let reuse = client
        .exchange_refresh_token(&first)
        .unwrap()
        .request_async(&http)
        .await;
    assert!(reuse.is_err(), "a spent refresh token was accepted");
    let after = client
        .exchange_refresh_token(&second)
        .unwrap()
        .request_async(&http)
        .await;
    assert!(after.is_err(), "the family survived a reuse");
    let r = s
        .client
        .get(format!("{}/oauth2/userinfo", s.base))
        .bearer_auth(refreshed.access_token().secret())
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        401,
        "an access token of a revoked family still works"
    );

    // RP-initiated logout ends the session and returns to the registered URI with state.
    let logout = browser
        .get(&format!(
            "/oauth2/logout?{}",
            serde_urlencoded::to_string([
                ("id_token_hint", id_token.to_string().as_str()),
                ("post_logout_redirect_uri", REDIRECT),
                ("state", "bye"),
            ])
            .unwrap()
        ))
        .await;
    assert_eq!(logout.status, 303, "{}", logout.body);
    assert_eq!(
        logout.location.as_deref(),
        Some(format!("{REDIRECT}?state=bye").as_str())
    );
    assert!(!browser.cookies.contains_key("gh_session"));
    // The first access token belonged to the ended session.
    let r = s
        .client
        .get(format!("{}/oauth2/userinfo", s.base))
        .bearer_auth(tokens.access_token().secret())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "an access token outlived its session");
    // With no session, prompt=none cannot sign in.
    let (challenge3, _) = PkceCodeChallenge::new_random_sha256();
    let (url3, _, _) = client
        .authorize_url(
            AuthenticationFlow::<openidconnect::core::CoreResponseType>::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .add_prompt(openidconnect::core::CoreAuthPrompt::None)
        .set_pkce_challenge(challenge3)
        .url();
    let none = browser.get(url3.as_str()).await;
    assert_eq!(none.status, 303);
    assert_eq!(
        query_of(none.location.as_deref().unwrap())
            .get("error")
            .map(String::as_str),
        Some("login_required")
    );
}

/// A PKCE pair: (verifier, S256 challenge).
pub fn pkce() -> (String, String) {
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    (verifier.secret().clone(), challenge.as_str().to_string())
}

pub fn authorize_path(
    client_id: &str,
    redirect: &str,
    challenge: &str,
    extra: &[(&str, &str)],
) -> String {
    let mut q: Vec<(&str, &str)> = vec![
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", redirect),
        ("scope", "openid"),
        ("state", "st"),
        ("code_challenge", challenge),
        ("code_challenge_method", "S256"),
    ];
    for (k, v) in extra {
        q.retain(|(x, _)| x != k);
        if !v.is_empty() {
            q.push((k, v));
        }
    }
    format!(
        "/oauth2/authorize?{}",
        serde_urlencoded::to_string(&q).unwrap()
    )
}

/// Signs in through the form (or the browser's session) and returns the code.
pub async fn code_for(b: &mut Browser, client_id: &str, challenge: &str, email: &str) -> String {
    let path = authorize_path(client_id, REDIRECT, challenge, &[]);
    let page = if b.cookies.contains_key("gh_session") {
        b.get(&path).await
    } else {
        b.sign_in(&path, email, PASSWORD).await
    };
    assert_eq!(page.status, 303, "{}", page.body);
    query_of(&page.location.unwrap())["code"].clone()
}

pub async fn token(s: &Server, form: &[(&str, &str)], basic: Option<(&str, &str)>) -> (u16, Value) {
    let mut req = s
        .client
        .post(format!("{}/oauth2/token", s.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(serde_urlencoded::to_string(form).unwrap());
    if let Some((id, secret)) = basic {
        req = req.basic_auth(id, Some(secret));
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_authorization_requests_are_refused_and_never_redirected_blindly() {
    let s = Server::start(Backend::Sqlite).await;
    let (client_id, _, _) = tenant(&s, "acme").await;
    let (_, challenge) = pkce();
    let mut b = Browser::new(&s);
    // Unknown client, wrong or partial redirect URIs: an error page, no redirect.
    for (cid, redirect) in [
        ("svc_unknown", REDIRECT),
        (client_id.as_str(), "http://127.0.0.1:9/callback/extra"),
        (client_id.as_str(), "http://127.0.0.1:9/"),
        (client_id.as_str(), "https://evil.example.com/callback"),
    ] {
        let p = b.get(&authorize_path(cid, redirect, &challenge, &[])).await;
        assert_eq!(p.status, 400, "{cid} {redirect}: {}", p.body);
        assert!(p.location.is_none());
        assert!(
            p.headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        assert!(p.body.contains(r#"role="alert""#), "{}", p.body);
    }
    // Errors after the redirect URI is verified go back to it, with state and iss.
    for (extra, error) in [
        (vec![("code_challenge", "")], "invalid_request"),
        (vec![("code_challenge_method", "plain")], "invalid_request"),
        (vec![("code_challenge", "short")], "invalid_request"),
        (
            vec![("response_type", "token")],
            "unsupported_response_type",
        ),
        (vec![("scope", "openid admin")], "invalid_scope"),
        (vec![("prompt", "none")], "login_required"),
        (vec![("prompt", "none login")], "invalid_request"),
        (vec![("max_age", "-1")], "invalid_request"),
        (vec![("request", "eyJ")], "request_not_supported"),
    ] {
        let p = b
            .get(&authorize_path(&client_id, REDIRECT, &challenge, &extra))
            .await;
        assert_eq!(p.status, 303, "{extra:?}: {}", p.body);
        let loc = p.location.unwrap();
        assert!(loc.starts_with(REDIRECT), "{loc}");
        let q = query_of(&loc);
        assert_eq!(
            q.get("error").map(String::as_str),
            Some(error),
            "{extra:?}: {loc}"
        );
        assert_eq!(q.get("state").map(String::as_str), Some("st"));
        assert!(!q.contains_key("code"));
    }
    // A repeated parameter is refused outright.
    let p = b
        .get(&format!(
            "{}&client_id={client_id}",
            authorize_path(&client_id, REDIRECT, &challenge, &[])
        ))
        .await;
    assert_eq!(p.status, 400);
    // A login form from another browser (no binding cookie) is refused.
    let start = b
        .get(&authorize_path(&client_id, REDIRECT, &challenge, &[]))
        .await;
    let request = start
        .location
        .unwrap()
        .trim_start_matches("/login?request=")
        .to_string();
    let mut other = Browser::new(&s);
    let p = other
        .post(
            "/login",
            &[
                ("request", &request),
                ("email", "a@b.io"),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(p.status, 400, "{}", p.body);
    assert!(p.location.is_none());
    // An unknown login request.
    let p = b.get("/login?request=nope").await;
    assert_eq!(p.status, 400);
}

#[tokio::test(flavor = "multi_thread")]
async fn codes_are_bound_to_pkce_client_and_redirect_and_work_once() {
    let s = Server::start(Backend::Sqlite).await;
    let (client_id, secret, email) = tenant(&s, "acme").await;
    let basic = Some((client_id.as_str(), secret.as_str()));
    let mut b = Browser::new(&s);

    // PKCE mismatch.
    let (_, challenge) = pkce();
    let code = code_for(&mut b, &client_id, &challenge, &email).await;
    let (other_verifier, _) = pkce();
    let (st, body) = token(
        &s,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &other_verifier),
        ],
        basic,
    )
    .await;
    assert_eq!(
        (st, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "{body}"
    );
    // The code is spent by the failed attempt.
    let (verifier, challenge) = pkce();
    let code = code_for(&mut b, &client_id, &challenge, &email).await;
    // Wrong redirect URI, missing verifier, wrong secret: refused, nothing issued.
    let (st, body) = token(
        &s,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", "http://127.0.0.1:9/other"),
            ("code_verifier", &verifier),
        ],
        basic,
    )
    .await;
    assert_eq!(
        (st, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "{body}"
    );
    let (verifier, challenge) = pkce();
    let code = code_for(&mut b, &client_id, &challenge, &email).await;
    let (st, body) = token(
        &s,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &verifier),
        ],
        Some((&client_id, "cs_wrong")),
    )
    .await;
    assert_eq!(
        (st, body["error"].as_str()),
        (401, Some("invalid_client")),
        "{body}"
    );
    let (st, body) = token(
        &s,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &verifier),
            ("client_id", &client_id),
        ],
        None,
    )
    .await;
    assert_eq!(
        (st, body["error"].as_str()),
        (401, Some("invalid_client")),
        "a confidential client without its secret: {body}"
    );
    // The right request works once; a replay is refused and revokes what the code issued.
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
        ("code_verifier", verifier.as_str()),
    ];
    let (st, first) = token(&s, &form, basic).await;
    assert_eq!(st, 200, "{first}");
    let (st, body) = token(&s, &form, basic).await;
    assert_eq!(
        (st, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "{body}"
    );
    let rt = first["refresh_token"].as_str().unwrap();
    let (st, body) = token(
        &s,
        &[("grant_type", "refresh_token"), ("refresh_token", rt)],
        basic,
    )
    .await;
    assert_eq!(
        (st, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "replay did not revoke: {body}"
    );
    let r = s
        .client
        .get(format!("{}/oauth2/userinfo", s.base))
        .bearer_auth(first["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_tokens_are_refused_at_userinfo() {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    let s = Server::start(Backend::Sqlite).await;
    let (client_id, secret, email) = tenant(&s, "acme").await;
    let mut b = Browser::new(&s);
    let (verifier, challenge) = pkce();
    let code = code_for(&mut b, &client_id, &challenge, &email).await;
    let (_, t) = token(
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
    let at = t["access_token"].as_str().unwrap();
    let userinfo = |tok: String| {
        let s = &s;
        async move {
            s.client
                .get(format!("{}/oauth2/userinfo", s.base))
                .bearer_auth(tok)
                .send()
                .await
                .unwrap()
        }
    };
    let ok = userinfo(at.to_string()).await;
    assert_eq!(ok.status(), 200);
    let parts: Vec<&str> = at.split('.').collect();
    let mut payload: Value = serde_json::from_slice(&B64.decode(parts[1]).unwrap()).unwrap();
    payload["sub"] = "someone-else".into();
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        B64.encode(payload.to_string()),
        parts[2]
    );
    let none_header = B64.encode(r#"{"alg":"none","typ":"at+jwt"}"#);
    let alg_none = format!("{none_header}.{}.", parts[1]);
    let mut header: Value = serde_json::from_slice(&B64.decode(parts[0]).unwrap()).unwrap();
    header["kid"] = "unknown-kid".into();
    let unknown_kid = format!(
        "{}.{}.{}",
        B64.encode(header.to_string()),
        parts[1],
        parts[2]
    );
    for (what, tok) in [
        ("tampered", tampered),
        ("alg none", alg_none),
        ("unknown kid", unknown_kid),
    ] {
        let r = userinfo(tok).await;
        assert_eq!(r.status(), 401, "{what}");
        assert!(
            r.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .contains("invalid_token"),
            "{what}"
        );
    }
    let r = s
        .client
        .get(format!("{}/oauth2/userinfo", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
}

#[tokio::test(flavor = "multi_thread")]
async fn repeated_failures_lock_the_account() {
    let s = Server::start(Backend::Sqlite).await;
    let (client_id, _, email) = tenant(&s, "acme").await;
    let (_, challenge) = pkce();
    let mut b = Browser::new(&s);
    let path = authorize_path(&client_id, REDIRECT, &challenge, &[]);
    for i in 0..4 {
        let p = b.sign_in(&path, &email, "wrong password").await;
        assert_eq!(p.status, 401, "attempt {i}: {}", p.body);
    }
    let p = b.sign_in(&path, &email, "wrong password").await;
    assert_eq!(p.status, 429, "{}", p.body);
    assert!(p.body.contains("locked"), "{}", p.body);
    // Locked: even the right password is refused, and no code is issued.
    let p = b.sign_in(&path, &email, PASSWORD).await;
    assert_eq!(p.status, 429, "{}", p.body);
    assert!(p.location.is_none());
    // An unknown account looks like a wrong password.
    let p = b.sign_in(&path, "nobody@acme.example.com", PASSWORD).await;
    assert_eq!(p.status, 401, "{}", p.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn only_members_sign_in_and_suspension_stops_refresh() {
    let s = Server::start(Backend::Sqlite).await;
    let (client_id, secret, email) = tenant(&s, "acme").await;
    // A member of another organization cannot sign in to acme's service.
    let (_, _, other_email) = tenant(&s, "globex").await;
    let (_, challenge) = pkce();
    let mut b = Browser::new(&s);
    let path = authorize_path(&client_id, REDIRECT, &challenge, &[]);
    let p = b.sign_in(&path, &other_email, PASSWORD).await;
    assert_eq!(p.status, 403, "{}", p.body);
    assert!(p.body.contains("cannot sign in"), "{}", p.body);
    assert!(p.location.is_none());

    // A member signs in; once the organization is suspended, refresh stops.
    let mut b = Browser::new(&s);
    let (verifier, challenge) = pkce();
    let code = code_for(&mut b, &client_id, &challenge, &email).await;
    let basic = Some((client_id.as_str(), secret.as_str()));
    let (st, t) = token(
        &s,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &verifier),
        ],
        basic,
    )
    .await;
    assert_eq!(st, 200, "{t}");
    admin(&s, &["org", "suspend", "acme"], "").await.unwrap();
    // The token endpoint decides at this node's cached revision, which trails a change made
    // by another process (the admin command) by at most the staleness bound (0.5 s).
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let (st, body) = token(
        &s,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", t["refresh_token"].as_str().unwrap()),
        ],
        basic,
    )
    .await;
    assert_eq!(
        (st, body["error"].as_str()),
        (400, Some("access_denied")),
        "{body}"
    );
}

/// The README's first command: `gatehouse serve` with no settings keeps its data under
/// `./data` of its working directory. It starts, a password login through the built-in
/// plugin works, and the compiled plugin is kept under `./data/plugin-cache`.
#[tokio::test(flavor = "multi_thread")]
async fn the_embedded_default_serves_from_a_relative_data_dir() {
    let s = Server::start_with(ServerOptions {
        default_data_dir: true,
        ..ServerOptions::new(Backend::Sqlite)
    })
    .await;
    let (client_id, secret, email) = tenant(&s, "acme").await;
    let t = tokens_for(&s, &client_id, &secret, &email).await;
    assert!(t["id_token"].is_string(), "{t}");
    let data = s.data_dir();
    assert!(
        data.join("gatehouse.db").is_file(),
        "no ./data/gatehouse.db"
    );
    fn files(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir).map_or(0, |d| {
            d.flatten()
                .map(|e| {
                    let p = e.path();
                    if p.is_dir() { files(&p) } else { 1 }
                })
                .sum()
        })
    }
    let cache = data.join("plugin-cache");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while files(&cache) == 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        files(&cache) > 0,
        "nothing compiled was kept in {}:\n{}",
        cache.display(),
        s.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn public_clients_use_pkce_without_a_secret() {
    let s = Server::start(Backend::Sqlite).await;
    let (_, _, email) = tenant(&s, "acme").await;
    let svc = admin(
        &s,
        &[
            "service",
            "create",
            "--first-party",
            "--org",
            "acme",
            "--name",
            "SPA",
            "--grant",
            "authorization_code",
            "--redirect-uri",
            REDIRECT,
            "--public",
        ],
        "",
    )
    .await
    .unwrap();
    let client_id = svc["client_id"].as_str().unwrap();
    assert!(svc.get("client_secret").is_none());
    let mut b = Browser::new(&s);
    let (verifier, challenge) = pkce();
    let code = code_for(&mut b, client_id, &challenge, &email).await;
    let (st, t) = token(
        &s,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &verifier),
            ("client_id", client_id),
        ],
        None,
    )
    .await;
    assert_eq!(st, 200, "{t}");
    assert!(t["id_token"].is_string());
    assert!(
        t.get("refresh_token").is_none(),
        "no refresh grant, no refresh token: {t}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn users_list_their_sessions_and_sign_out_everywhere() {
    let s = Server::start(Backend::Sqlite).await;
    let (client_id, secret, email) = tenant(&s, "acme").await;
    let basic = Some((client_id.as_str(), secret.as_str()));
    let mut grants = Vec::new();
    let mut browsers = Vec::new();
    for _ in 0..2 {
        let mut b = Browser::new(&s);
        let (verifier, challenge) = pkce();
        let code = code_for(&mut b, &client_id, &challenge, &email).await;
        let (st, t) = token(
            &s,
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", REDIRECT),
                ("code_verifier", &verifier),
            ],
            basic,
        )
        .await;
        assert_eq!(st, 200, "{t}");
        grants.push(t);
        browsers.push(b);
    }
    // The service's token is for the service: the sessions are listed with the console's
    // token of the first browser's session.
    let r = s
        .client
        .get(format!("{}/api/me/sessions", s.base))
        .bearer_auth(grants[0]["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let at = console_token_in(&mut browsers[0], &s).await;
    let at = at.as_str();
    let r = s
        .client
        .get(format!("{}/api/me/sessions", s.base))
        .bearer_auth(at)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let list: Value = r.json().await.unwrap();
    let sessions = list["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2, "{list}");
    assert_eq!(
        sessions.iter().filter(|s| s["current"] == true).count(),
        1,
        "{list}"
    );
    // Ending the other session revokes its refresh tokens.
    let other = sessions.iter().find(|s| s["current"] == false).unwrap()["id"]
        .as_str()
        .unwrap();
    let r = s
        .client
        .delete(format!("{}/api/me/sessions/{other}", s.base))
        .bearer_auth(at)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = s
        .client
        .delete(format!("{}/api/me/sessions/{other}", s.base))
        .bearer_auth(at)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let (st, _) = token(
        &s,
        &[
            ("grant_type", "refresh_token"),
            (
                "refresh_token",
                grants[1]["refresh_token"].as_str().unwrap(),
            ),
        ],
        basic,
    )
    .await;
    assert_eq!(st, 400);
    // Sign out everywhere: the caller's own session and tokens end too.
    let r = s
        .client
        .delete(format!("{}/api/me/sessions", s.base))
        .bearer_auth(at)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (st, _) = token(
        &s,
        &[
            ("grant_type", "refresh_token"),
            (
                "refresh_token",
                grants[0]["refresh_token"].as_str().unwrap(),
            ),
        ],
        basic,
    )
    .await;
    assert_eq!(st, 400);
    let r = s
        .client
        .get(format!("{}/api/me/sessions", s.base))
        .bearer_auth(at)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn user_commands_refuse_bad_input_and_create_nothing() {
    let s = Server::start(Backend::Sqlite).await;
    tenant(&s, "acme").await;
    for (args, stdin, says) in [
        (
            vec![
                "user",
                "create",
                "--email",
                "not-an-email",
                "--password-stdin",
            ],
            "long enough pw\n",
            "not an email",
        ),
        (
            vec![
                "user",
                "create",
                "--email",
                "bo@acme.io",
                "--password-stdin",
            ],
            "short\n",
            "password",
        ),
        (
            vec![
                "user",
                "create",
                "--email",
                "bo@acme.io",
                "--password-stdin",
                "--org",
                "nope",
            ],
            "long enough pw\n",
            "does not exist",
        ),
        (
            vec![
                "user",
                "create",
                "--email",
                "bo@acme.io",
                "--org",
                "acme",
                "--role",
                "emperor",
            ],
            "",
            "role",
        ),
        (
            vec!["user", "create", "--email", "ADA@acme.example.com"],
            "",
            "exists already",
        ),
    ] {
        let err = admin(&s, &args, stdin).await.unwrap_err();
        assert!(err.contains(says), "{args:?}: {err}");
    }
    // None of them left a user behind: the address is still free.
    let ok = admin(&s, &["user", "create", "--email", "bo@acme.io"], "")
        .await
        .unwrap();
    assert_eq!(ok["user"]["email"], "bo@acme.io");
    assert!(ok["user"].get("password_hash").is_none(), "{ok}");
}

/// Signs `email` in to the client and returns its token response.
pub async fn tokens_for(s: &Server, client_id: &str, secret: &str, email: &str) -> Value {
    let mut b = Browser::new(s);
    let (verifier, challenge) = pkce();
    let code = code_for(&mut b, client_id, &challenge, email).await;
    let (st, t) = token(
        s,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &verifier),
        ],
        Some((client_id, secret)),
    )
    .await;
    assert_eq!(st, 200, "{t}");
    t
}

/// The console client: public, in the platform's own organization, open to everyone with an
/// account. Only its access tokens (audience `<issuer>/api`) are accepted by Gatehouse's own
/// APIs (`/api/…`).
pub const CONSOLE: &str = "gatehouse-console";

/// Exchanges a code of the console client for its tokens, as a public client: PKCE and its
/// `client_id`, no secret.
pub async fn console_exchange(s: &Server, code: &str, verifier: &str) -> Value {
    let (st, t) = token(
        s,
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", verifier),
            ("client_id", CONSOLE),
        ],
        None,
    )
    .await;
    assert_eq!(st, 200, "{t}");
    t
}

/// Signs `email` (password [`PASSWORD`]) in to the console client in a fresh browser, by the
/// code grant with PKCE, and returns its token response: tokens for Gatehouse's own APIs.
pub async fn console_tokens(s: &Server, email: &str) -> Value {
    let mut b = Browser::new(s);
    let (verifier, challenge) = pkce();
    let code = code_for(&mut b, CONSOLE, &challenge, email).await;
    console_exchange(s, &code, &verifier).await
}

/// The access token of [`console_tokens`]: `email`'s token for Gatehouse's own APIs.
pub async fn console_token(s: &Server, email: &str) -> String {
    console_tokens(s, email).await["access_token"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The console's token response for the session `b` is signed in with (no login form), so
/// that the tokens carry that session and its methods (`amr`, such as a second factor).
pub async fn console_tokens_in(b: &mut Browser, s: &Server) -> Value {
    assert!(
        b.cookies.contains_key("gh_session"),
        "the browser is not signed in"
    );
    let (verifier, challenge) = pkce();
    let page = b
        .get(&authorize_path(CONSOLE, REDIRECT, &challenge, &[]))
        .await;
    assert_eq!(page.status, 303, "{}", page.body);
    let back = page.location.unwrap();
    assert!(back.starts_with(REDIRECT), "{back}");
    let code = query_of(&back)["code"].clone();
    console_exchange(s, &code, &verifier).await
}

/// The access token of [`console_tokens_in`].
pub async fn console_token_in(b: &mut Browser, s: &Server) -> String {
    console_tokens_in(b, s).await["access_token"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn organization_admins_read_the_audit_log() {
    let s = Server::start(Backend::Sqlite).await;
    let (client_id, secret, member) = tenant(&s, "acme").await;
    tenant(&s, "globex").await;
    admin(
        &s,
        &[
            "user",
            "create",
            "--email",
            "root@acme.example.com",
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
    // A failed login, then the admin's successful one.
    let (_, challenge) = pkce();
    let mut b = Browser::new(&s);
    let p = b
        .sign_in(
            &authorize_path(&client_id, REDIRECT, &challenge, &[]),
            &member,
            "wrong password",
        )
        .await;
    assert_eq!(p.status, 401);
    // The admin signs in to acme's service (which acme's log records), and reads the log
    // with a token for Gatehouse's own APIs, from the console.
    let t = tokens_for(&s, &client_id, &secret, "root@acme.example.com").await;
    let at = console_token(&s, "root@acme.example.com").await;
    let at = at.as_str();
    let get = |path: String, tok: Option<String>| {
        let s = &s;
        async move {
            let mut r = s.client.get(format!("{}{path}", s.base));
            if let Some(t) = tok {
                r = r.bearer_auth(t);
            }
            let r = r.send().await.unwrap();
            let st = r.status().as_u16();
            (st, r.json::<Value>().await.unwrap_or_default())
        }
    };
    let (st, log) = get("/api/organizations/acme/audit".into(), Some(at.into())).await;
    assert_eq!(st, 200, "{log}");
    let kinds: Vec<&str> = log["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    for k in [
        "organization.created",
        "organization.active",
        "service.created",
        "membership.created",
        "login.failed",
        "login.succeeded",
        "token.issued",
    ] {
        assert!(kinds.contains(&k), "{k} missing from {kinds:?}");
    }
    // Newest first; every event names its actor.
    let ids: Vec<i64> = log["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_i64().unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "{ids:?}");
    // Filters and pages.
    let (_, failed) = get(
        "/api/organizations/acme/audit?kind=login.failed".into(),
        Some(at.into()),
    )
    .await;
    let failed = failed["events"].as_array().unwrap().clone();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["details"]["email"], member.as_str());
    let (_, page1) = get(
        "/api/organizations/acme/audit?limit=2".into(),
        Some(at.into()),
    )
    .await;
    let next = page1["next_before"].as_i64().unwrap();
    let (_, page2) = get(
        format!("/api/organizations/acme/audit?limit=2&before={next}"),
        Some(at.into()),
    )
    .await;
    assert_eq!(page2["events"][0]["id"].as_i64().unwrap(), ids[2]);
    // Bad input, and callers who may not read it.
    for q in [
        "limit=0",
        "limit=201",
        "since=yesterday",
        "before=x",
        "color=red",
    ] {
        let (st, body) = get(
            format!("/api/organizations/acme/audit?{q}"),
            Some(at.into()),
        )
        .await;
        assert_eq!(st, 400, "{q}: {body}");
    }
    let (st, _) = get("/api/organizations/acme/audit".into(), None).await;
    assert_eq!(st, 401);
    let (st, _) = get("/api/organizations/globex/audit".into(), Some(at.into())).await;
    assert_eq!(st, 403, "an admin of acme read globex's log");
    let (st, _) = get("/api/organizations/nope/audit".into(), Some(at.into())).await;
    assert_eq!(st, 404);
    let mt = console_token(&s, &member).await;
    let (st, _) = get("/api/organizations/acme/audit".into(), Some(mt)).await;
    assert_eq!(st, 403, "a member read the audit log");
    // The admin's token of acme's own service is for that service, not for this API.
    let (st, _) = get(
        "/api/organizations/acme/audit".into(),
        Some(t["access_token"].as_str().unwrap().into()),
    )
    .await;
    assert_eq!(st, 401, "a service's token read the audit log");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_device_signs_in_with_the_device_grant() {
    use openidconnect::DeviceAuthorizationUrl;
    use openidconnect::core::CoreDeviceAuthorizationResponse;
    let s = Server::start(Backend::Sqlite).await;
    let (web_client, web_secret, email) = tenant(&s, "acme").await;
    let tv = admin(
        &s,
        &[
            "service",
            "create",
            "--first-party",
            "--org",
            "acme",
            "--name",
            "TV app",
            "--public",
            "--grant",
            "urn:ietf:params:oauth:grant-type:device_code",
            "--grant",
            "refresh_token",
        ],
        "",
    )
    .await
    .unwrap();
    let tv_id = tv["client_id"].as_str().unwrap().to_string();
    let http = http_client();
    let meta = CoreProviderMetadata::discover_async(IssuerUrl::new(s.base.clone()).unwrap(), &http)
        .await
        .unwrap();
    let client = CoreClient::from_provider_metadata(meta, ClientId::new(tv_id.clone()), None)
        .set_device_authorization_url(
            DeviceAuthorizationUrl::new(format!("{}/oauth2/device_authorization", s.base)).unwrap(),
        );
    let details: CoreDeviceAuthorizationResponse = client
        .exchange_device_code()
        .add_scope(Scope::new("email".into()))
        .request_async(&http)
        .await
        .unwrap();
    let user_code = details.user_code().secret().clone();
    assert_eq!(user_code.len(), 9, "{user_code}");
    assert_eq!(
        details.verification_uri().as_str(),
        format!("{}/device", s.base)
    );
    let device_code = details.device_code().secret().clone();
    // Before the user acts: pending, and polling too fast is told to slow down.
    let poll = [
        ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
        ("device_code", device_code.as_str()),
        ("client_id", tv_id.as_str()),
    ];
    let (st, body) = token(&s, &poll, None).await;
    assert_eq!(
        (st, body["error"].as_str()),
        (400, Some("authorization_pending")),
        "{body}"
    );
    let (_, body) = token(&s, &poll, None).await;
    assert_eq!(body["error"], "slow_down", "{body}");
    // Another client cannot redeem it.
    let (_, body) = token(
        &s,
        &[
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("device_code", device_code.as_str()),
        ],
        Some((&web_client, &web_secret)),
    )
    .await;
    assert_eq!(body["error"], "unauthorized_client", "{body}");

    // The user opens the page on a phone, signs in and allows the device; the code may be
    // typed in any case, without its dash.
    let mut phone = Browser::new(&s);
    let page = phone.get(&format!("/device?user_code={user_code}")).await;
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains(r#"<label for="user_code">"#),
        "{}",
        page.body
    );
    let csrf = phone.cookies["gh_csrf"].clone();
    let wrong = phone
        .post(
            "/device",
            &[
                ("csrf", &csrf),
                ("user_code", "BBBB-BBBB"),
                ("email", &email),
                ("password", PASSWORD),
                ("action", "allow"),
            ],
        )
        .await;
    assert_eq!(wrong.status, 400, "{}", wrong.body);
    let no_csrf = phone
        .post(
            "/device",
            &[
                ("csrf", "forged"),
                ("user_code", &user_code),
                ("email", &email),
                ("password", PASSWORD),
                ("action", "allow"),
            ],
        )
        .await;
    assert_eq!(no_csrf.status, 400, "{}", no_csrf.body);
    let typed = user_code.replace('-', "").to_lowercase();
    let asked = phone
        .post(
            "/device",
            &[
                ("csrf", &csrf),
                ("user_code", &typed),
                ("email", &email),
                ("password", PASSWORD),
                ("action", "allow"),
            ],
        )
        .await;
    // Nothing is connected before the person confirms, on a page naming the application.
    assert!(
        asked.body.contains("TV app") && asked.body.contains("Acme"),
        "{}",
        asked.body
    );
    let (_, body) = token(&s, &poll, None).await;
    assert!(
        body["error"].is_string(),
        "connected before the confirmation: {body}"
    );
    let ok = confirm_device(&mut phone, asked).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert!(ok.body.contains("Device connected"), "{}", ok.body);

    // The relying party's own polling now gets the tokens.
    let tokens = client
        .exchange_device_access_token(&details)
        .unwrap()
        .request_async(&http, tokio::time::sleep, None)
        .await
        .unwrap();
    let id_token = tokens.id_token().expect("an ID token");
    let claims = id_token
        .claims(&client.id_token_verifier(), |_: Option<&Nonce>| Ok(()))
        .unwrap();
    assert_eq!(claims.email().map(|e| e.as_str()), Some(email.as_str()));
    assert!(tokens.refresh_token().is_some());
    // A device code works once.
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    let (_, body) = token(&s, &poll, None).await;
    assert_eq!(body["error"], "expired_token", "{body}");

    // A denial reaches the device as access_denied.
    let details: CoreDeviceAuthorizationResponse = client
        .exchange_device_code()
        .request_async(&http)
        .await
        .unwrap();
    let page = phone.get("/device").await;
    assert!(
        !page.body.contains(r#"name="password""#),
        "signed in already: {}",
        page.body
    );
    let csrf = phone.cookies["gh_csrf"].clone();
    let denied = phone
        .post(
            "/device",
            &[
                ("csrf", &csrf),
                ("user_code", details.user_code().secret()),
                ("action", "deny"),
            ],
        )
        .await;
    assert_eq!(denied.status, 200, "{}", denied.body);
    let (_, body) = token(
        &s,
        &[
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("device_code", details.device_code().secret()),
            ("client_id", tv_id.as_str()),
        ],
        None,
    )
    .await;
    assert_eq!(body["error"], "access_denied", "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_code_is_refused() {
    let mut opts = ServerOptions::new(Backend::Sqlite);
    opts.env
        .push(("GATEHOUSE_CODE_TTL_SECS".into(), "1".into()));
    let s = Server::start_with(opts).await;
    let (client_id, secret, email) = tenant(&s, "acme").await;
    let mut b = Browser::new(&s);
    let (verifier, challenge) = pkce();
    let code = code_for(&mut b, &client_id, &challenge, &email).await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let (st, body) = token(
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
    assert_eq!(
        (st, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn guessing_client_secrets_locks_the_client_out() {
    let s = Server::start(Backend::Sqlite).await;
    tenant(&s, "acme").await;
    let cc = admin(
        &s,
        &[
            "service",
            "create",
            "--first-party",
            "--org",
            "acme",
            "--name",
            "Backend",
            "--grant",
            "client_credentials",
        ],
        "",
    )
    .await
    .unwrap();
    let (cc_id, cc_secret) = (
        cc["client_id"].as_str().unwrap(),
        cc["client_secret"].as_str().unwrap(),
    );
    let form = [("grant_type", "client_credentials")];
    let (st, _) = token(&s, &form, Some((cc_id, cc_secret))).await;
    assert_eq!(st, 200);
    for i in 0..10 {
        let (st, body) = token(&s, &form, Some((cc_id, &format!("cs_guess{i}")))).await;
        assert_eq!(
            (st, body["error"].as_str()),
            (401, Some("invalid_client")),
            "guess {i}"
        );
    }
    // Locked: even the right secret is refused now, with a time to come back.
    let r = s
        .client
        .post(format!("{}/oauth2/token", s.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=client_credentials")
        .basic_auth(cc_id, Some(cc_secret))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=30).contains(&retry), "{retry}");
}

#[tokio::test(flavor = "multi_thread")]
async fn token_endpoints_limit_requests_per_address() {
    let mut opts = ServerOptions::new(Backend::Sqlite);
    opts.env
        .push(("GATEHOUSE_TOKEN_RATE_PER_IP".into(), "5".into()));
    let s = Server::start_with(opts).await;
    let mut statuses = Vec::new();
    for _ in 0..7 {
        let (st, _) = token(
            &s,
            &[("grant_type", "client_credentials")],
            Some(("svc_x", "cs_y")),
        )
        .await;
        statuses.push(st);
    }
    assert_eq!(statuses, vec![401, 401, 401, 401, 401, 429, 429]);
}

/// The options of the nodes of one deployment on PostgreSQL: one master key and one public
/// issuer URL; the second node also needs the first's `database`.
pub fn deployment() -> ServerOptions {
    let mut opts = ServerOptions::new(Backend::Postgres);
    opts.env.push((
        "GATEHOUSE_MASTER_KEY".into(),
        crate::oidc::TEST_MASTER_KEY.into(),
    ));
    opts.env.push((
        "GATEHOUSE_ISSUER".into(),
        "https://login.gatehouse.test".into(),
    ));
    opts
}

/// Revocations are held in memory on each node: one made on a node counts there at once and
/// on the other nodes within a second or two (they reload the set from the database).
#[tokio::test(flavor = "multi_thread")]
async fn a_revocation_reaches_the_other_nodes() {
    // Two nodes of one deployment: one database, one master key, one public issuer URL.
    let mut opts = deployment();
    let a = Server::start_with(opts.clone()).await;
    opts.database = a.database.clone();
    let b = Server::start_with(opts).await;
    tenant(&a, "acme").await;
    let cc = admin(
        &a,
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
        "",
    )
    .await
    .unwrap();
    let auth = (
        cc["client_id"].as_str().unwrap(),
        cc["client_secret"].as_str().unwrap(),
    );
    let (_, t) = token(&a, &[("grant_type", "client_credentials")], Some(auth)).await;
    let at = t["access_token"].as_str().unwrap();
    let introspect = |s: &Server| {
        let req = s
            .client
            .post(format!("{}/oauth2/introspect", s.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("token={at}"))
            .basic_auth(auth.0, Some(auth.1));
        async move { req.send().await.unwrap().json::<Value>().await.unwrap()["active"] == true }
    };
    assert!(introspect(&a).await);
    assert!(introspect(&b).await);
    let r = a
        .client
        .post(format!("{}/oauth2/revoke", a.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={at}"))
        .basic_auth(auth.0, Some(auth.1))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(!introspect(&a).await, "not revoked at once on its own node");
    let started = std::time::Instant::now();
    while introspect(&b).await {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "the other node never learned of it"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// A service's changes made elsewhere (here by the admin commands, another process) reach
/// every node within a second or two, though each has the service cached: a rotated secret
/// stops working, and a deleted service's tokens and API keys stop working.
#[tokio::test(flavor = "multi_thread")]
async fn service_changes_reach_every_node() {
    let mut opts = deployment();
    let a = Server::start_with(opts.clone()).await;
    opts.database = a.database.clone();
    let b = Server::start_with(opts).await;
    let (web, web_secret, _) = tenant(&a, "acme").await;
    let cc = admin(
        &a,
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
        "",
    )
    .await
    .unwrap();
    let id = cc["client_id"].as_str().unwrap().to_string();
    let old = cc["client_secret"].as_str().unwrap().to_string();
    async fn works(s: &Server, id: &str, secret: &str) -> bool {
        token(
            s,
            &[("grant_type", "client_credentials")],
            Some((id, secret)),
        )
        .await
        .0 == 200
    }
    let until = |what: &'static str| {
        let started = std::time::Instant::now();
        move || {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(5),
                "{what} never reached the node"
            );
        }
    };
    // Both nodes cache the service.
    assert!(works(&a, &id, &old).await && works(&b, &id, &old).await);
    let rotated = admin(&a, &["service", "rotate-secret", &id], "")
        .await
        .unwrap();
    let new = rotated["client_secret"].as_str().unwrap().to_string();
    for node in [&a, &b] {
        let check = until("the rotation");
        while works(node, &id, &old).await {
            check();
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert!(works(node, &id, &new).await);
    }
    let (_, t) = token(
        &b,
        &[("grant_type", "client_credentials")],
        Some((&id, &new)),
    )
    .await;
    let at = t["access_token"].as_str().unwrap().to_string();
    let active = |s: &Server| {
        let req = s
            .client
            .post(format!("{}/oauth2/introspect", s.base))
            .form(&[("token", at.as_str())])
            .basic_auth(&web, Some(&web_secret));
        async move { req.send().await.unwrap().json::<Value>().await.unwrap()["active"] == true }
    };
    assert!(active(&a).await && active(&b).await);
    // Its API key, cached by both nodes.
    let key = admin(
        &a,
        &["apikey", "create", "--service", &id, "--name", "ci"],
        "",
    )
    .await
    .unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string();
    let key_works = |s: &Server| {
        let req = s.client.get(format!("{}/stores", s.base)).bearer_auth(&key);
        async move { req.send().await.unwrap().status() == 200 }
    };
    assert!(key_works(&a).await && key_works(&b).await);
    admin(&a, &["service", "delete", &id], "").await.unwrap();
    assert!(
        admin(&a, &["service", "delete", &id], "").await.is_err(),
        "deleted twice"
    );
    for node in [&a, &b] {
        let check = until("the deletion");
        while active(node).await {
            check();
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert!(!works(node, &id, &new).await);
        let check = until("the key's revocation");
        while key_works(node).await {
            check();
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}

/// An organization's branding changed elsewhere (here by the admin commands, another process)
/// reaches every node's login pages within a second or two, though each has the organization
/// cached.
#[tokio::test(flavor = "multi_thread")]
async fn organization_changes_reach_every_node() {
    let mut opts = deployment();
    let a = Server::start_with(opts.clone()).await;
    opts.database = a.database.clone();
    let b = Server::start_with(opts).await;
    let (web, _, _) = tenant(&a, "acme").await;
    let (_, challenge) = pkce();
    let path = authorize_path(&web, REDIRECT, &challenge, &[]);
    let page = |s: &Server| {
        let req = s.client.get(format!("{}{path}", s.base));
        async move { req.send().await.unwrap().text().await.unwrap() }
    };
    for node in [&a, &b] {
        let p = page(node).await;
        assert!(p.contains("Acme") && !p.contains("#123456"), "{p}");
    }
    admin(
        &a,
        &["org", "brand", "acme", "--primary-color", "#123456"],
        "",
    )
    .await
    .unwrap();
    for node in [&a, &b] {
        let started = std::time::Instant::now();
        while !page(node).await.contains("#123456") {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(5),
                "the branding never reached the node"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}

/// Logout without an ID token naming the session asks the user first, and only a confirmation
/// from the same browser ends the session.
#[tokio::test(flavor = "multi_thread")]
async fn logout_without_a_hint_asks_first() {
    let s = Server::start(Backend::Sqlite).await;
    let (client_id, _, email) = tenant(&s, "acme").await;
    let mut b = Browser::new(&s);
    let (_, challenge) = pkce();
    code_for(&mut b, &client_id, &challenge, &email).await;
    let path = format!(
        "/oauth2/logout?{}",
        serde_urlencoded::to_string([
            ("client_id", client_id.as_str()),
            ("post_logout_redirect_uri", REDIRECT),
            ("state", "x")
        ])
        .unwrap()
    );
    let page = b.get(&path).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("Sign out?"), "{}", page.body);
    assert!(
        b.cookies.contains_key("gh_session"),
        "a link signed the user out"
    );
    // Still signed in: the next authorization needs no form.
    assert!(still_signed_in(&mut b, &client_id).await);
    // A forged confirmation does nothing (it asks again); the real one ends the session and
    // goes back.
    let forged = b
        .post(
            "/oauth2/logout",
            &[
                ("confirm", "forged"),
                ("client_id", &client_id),
                ("post_logout_redirect_uri", REDIRECT),
                ("state", "x"),
            ],
        )
        .await;
    assert_eq!(forged.status, 200, "{}", forged.body);
    assert!(b.cookies.contains_key("gh_session"));
    let token = b.cookies["gh_logout"].clone();
    let done = b
        .post(
            "/oauth2/logout",
            &[
                ("confirm", &token),
                ("client_id", &client_id),
                ("post_logout_redirect_uri", REDIRECT),
                ("state", "x"),
            ],
        )
        .await;
    assert_eq!(done.status, 303, "{}", done.body);
    assert_eq!(
        done.location.as_deref(),
        Some(format!("{REDIRECT}?state=x").as_str())
    );
    assert!(!b.cookies.contains_key("gh_session"));
    let (_, challenge) = pkce();
    let again = b
        .get(&authorize_path(
            &client_id,
            REDIRECT,
            &challenge,
            &[("prompt", "none")],
        ))
        .await;
    assert_eq!(
        query_of(again.location.as_deref().unwrap())
            .get("error")
            .map(String::as_str),
        Some("login_required")
    );
}
