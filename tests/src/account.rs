//! What users do by email: password reset, address verification, invitations; through the
//! outbox of the embedded default, and once through a real SMTP server.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Backend, Server, ServerOptions};
use crate::login::{
    Browser, PASSWORD, REDIRECT, admin, console_token, pkce, tenant, token, tokens_for,
};

/// A quoted-printable body decoded (soft line breaks joined, `=XX` escapes undone).
fn unquote(text: &str) -> String {
    let joined = text.replace("=\r\n", "").replace("=\n", "");
    let mut out = Vec::new();
    let b = joined.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'='
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&joined[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The messages in the outbox to `to`, oldest first, as text.
pub(crate) fn outbox_to(dir: &Path, to: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<(std::time::SystemTime, String)> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
        .filter_map(|e| {
            let text = std::fs::read_to_string(e.path()).ok()?;
            let at = e.metadata().ok()?.modified().ok()?;
            text.lines()
                .any(|l| l.starts_with("To:") && l.contains(to))
                .then(|| (at, unquote(&text)))
        })
        .collect();
    found.sort_by_key(|(at, _)| *at);
    found.into_iter().map(|(_, t)| t).collect()
}

/// Waits for the `n`th message to `to` with a link that starts with `prefix` and returns the
/// link.
pub(crate) async fn link_in_mail(dir: &Path, to: &str, n: usize, prefix: &str) -> String {
    for _ in 0..100 {
        let mails: Vec<String> = outbox_to(dir, to)
            .into_iter()
            .filter(|m| m.contains(prefix))
            .collect();
        if let Some(m) = mails.get(n - 1) {
            let re = regex::Regex::new(&format!(r"{}[^\s]+", regex::escape(prefix))).unwrap();
            return re
                .find(m)
                .unwrap_or_else(|| panic!("no {prefix} link in {m}"))
                .as_str()
                .to_string();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no mail #{n} to {to} in {}", dir.display());
}

/// Accepts the `n`th invitation mailed to `email` with the existing account's password, in a
/// fresh browser; the page's status.
pub(crate) async fn accept_invitation(s: &Server, email: &str, n: usize) -> u16 {
    let link = link_in_mail(
        &s.data_dir().join("outbox"),
        email,
        n,
        &format!("{}/invitations/accept?token=", s.base),
    )
    .await;
    let token = link.split("token=").nth(1).unwrap().to_string();
    let mut b = Browser::new(s);
    let page = b.get(&path_of(&link, &s.base)).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let csrf = b.cookies["gh_form"].clone();
    b.post(
        "/invitations/accept",
        &[("csrf", &csrf), ("token", &token), ("password", PASSWORD)],
    )
    .await
    .status
}

/// Sets `email`'s password to [`PASSWORD`] through the reset link mailed to it (the person
/// proves the address: an account made by an identity provider gets a password this way).
pub(crate) async fn reset_password(s: &Server, email: &str) {
    let outbox = s.data_dir().join("outbox");
    let prefix = format!("{}/password/reset?token=", s.base);
    let before = outbox_to(&outbox, email)
        .iter()
        .filter(|m| m.contains(&prefix))
        .count();
    let mut b = Browser::new(s);
    b.get("/password/forgot").await;
    let csrf = b.cookies["gh_form"].clone();
    let p = b
        .post("/password/forgot", &[("csrf", &csrf), ("email", email)])
        .await;
    assert_eq!(p.status, 200, "{}", p.body);
    let link = link_in_mail(&outbox, email, before + 1, &prefix).await;
    let form = b.get(&path_of(&link, &s.base)).await;
    assert_eq!(form.status, 200, "{}", form.body);
    let csrf = b.cookies["gh_form"].clone();
    let token = link.split("token=").nth(1).unwrap().to_string();
    let p = b
        .post(
            "/password/reset",
            &[
                ("csrf", &csrf),
                ("token", &token),
                ("password", PASSWORD),
                ("confirm", PASSWORD),
            ],
        )
        .await;
    assert_eq!(p.status, 200, "{}", p.body);
}

pub(crate) fn path_of(url: &str, base: &str) -> String {
    url.strip_prefix(base).unwrap_or(url).to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_forgotten_password_is_reset_by_email() {
    let s = Server::start(Backend::Sqlite).await;
    let (client_id, secret, email) = tenant(&s, "acme").await;
    let outbox = s.data_dir().join("outbox");
    let before = tokens_for(&s, &client_id, &secret, &email).await;

    let mut b = Browser::new(&s);
    let page = b.get("/password/forgot").await;
    assert_eq!(page.status, 200);
    let csrf = b.cookies["gh_form"].clone();
    // Without the form's token, nothing happens.
    let p = b
        .post("/password/forgot", &[("csrf", "forged"), ("email", &email)])
        .await;
    assert_eq!(p.status, 400);
    // Known and unknown addresses get the same answer; only the known one gets mail.
    let known = b
        .post("/password/forgot", &[("csrf", &csrf), ("email", &email)])
        .await;
    let unknown = b
        .post(
            "/password/forgot",
            &[("csrf", &csrf), ("email", "nobody@acme.example.com")],
        )
        .await;
    assert_eq!((known.status, unknown.status), (200, 200));
    assert_eq!(known.body, unknown.body);
    let link = link_in_mail(
        &outbox,
        &email,
        1,
        &format!("{}/password/reset?token=", s.base),
    )
    .await;
    assert!(outbox_to(&outbox, "nobody@acme.example.com").is_empty());

    let form = b.get(&path_of(&link, &s.base)).await;
    assert_eq!(form.status, 200, "{}", form.body);
    let csrf = b.cookies["gh_form"].clone();
    let reset = link.split("token=").nth(1).unwrap().to_string();
    for (pw, confirm, why) in [
        ("new password 1", "new password 2", "differ"),
        ("short", "short", "too short"),
    ] {
        let p = b
            .post(
                "/password/reset",
                &[
                    ("csrf", &csrf),
                    ("token", &reset),
                    ("password", pw),
                    ("confirm", confirm),
                ],
            )
            .await;
        assert_eq!(p.status, 400, "{why}: {}", p.body);
    }
    let new = "a brand new password";
    let p = b
        .post(
            "/password/reset",
            &[
                ("csrf", &csrf),
                ("token", &reset),
                ("password", new),
                ("confirm", new),
            ],
        )
        .await;
    assert_eq!(p.status, 200, "{}", p.body);
    // The link works once.
    let p = b
        .post(
            "/password/reset",
            &[
                ("csrf", &csrf),
                ("token", &reset),
                ("password", new),
                ("confirm", new),
            ],
        )
        .await;
    assert_eq!(p.status, 400);
    assert_eq!(b.get(&path_of(&link, &s.base)).await.status, 400);
    // The old password is gone, the new one works, and earlier sessions are over.
    let (_, challenge) = pkce();
    let mut fresh = Browser::new(&s);
    let path = crate::login::authorize_path(&client_id, REDIRECT, &challenge, &[]);
    assert_eq!(fresh.sign_in(&path, &email, PASSWORD).await.status, 401);
    assert_eq!(fresh.sign_in(&path, &email, new).await.status, 303);
    let (st, _) = token(
        &s,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", before["refresh_token"].as_str().unwrap()),
        ],
        Some((&client_id, &secret)),
    )
    .await;
    assert_eq!(st, 400, "a refresh token outlived a password reset");
}

#[tokio::test(flavor = "multi_thread")]
async fn users_verify_their_address() {
    let s = Server::start(Backend::Sqlite).await;
    let (client_id, secret, _) = tenant(&s, "acme").await;
    admin(
        &s,
        &[
            "user",
            "create",
            "--email",
            "new@acme.io",
            "--password-stdin",
            "--org",
            "acme",
        ],
        &format!("{PASSWORD}\n"),
    )
    .await
    .unwrap();
    let t = tokens_for(&s, &client_id, &secret, "new@acme.io").await;
    let at = t["access_token"].as_str().unwrap();
    let info = |at: String| {
        let s = &s;
        async move {
            s.client
                .get(format!("{}/oauth2/userinfo", s.base))
                .bearer_auth(at)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    // tenant()'s client has no email scope: ask userinfo for the flag through a new login.
    let _ = info(at.to_string()).await;
    // The service's token is for the service; Gatehouse's own API takes the console's.
    let r = s
        .client
        .post(format!("{}/api/me/verify-email", s.base))
        .bearer_auth(at)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let at = console_token(&s, "new@acme.io").await;
    let at = at.as_str();
    let r = s
        .client
        .post(format!("{}/api/me/verify-email", s.base))
        .bearer_auth(at)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let outbox = s.data_dir().join("outbox");
    let link = link_in_mail(
        &outbox,
        "new@acme.io",
        1,
        &format!("{}/verify-email?token=", s.base),
    )
    .await;
    let mut b = Browser::new(&s);
    assert_eq!(b.get("/verify-email?token=et_forged").await.status, 400);
    let p = b.get(&path_of(&link, &s.base)).await;
    assert_eq!(p.status, 200, "{}", p.body);
    assert_eq!(
        b.get(&path_of(&link, &s.base)).await.status,
        400,
        "a link works once"
    );
    let r = s
        .client
        .post(format!("{}/api/me/verify-email", s.base))
        .bearer_auth(at)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["email_verified"], true);
}

#[tokio::test(flavor = "multi_thread")]
async fn invitations_are_accepted_by_signing_in() {
    let s = Server::start(Backend::Sqlite).await;
    let (client_id, secret, _) = tenant(&s, "acme").await;
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
    admin(
        &s,
        &[
            "user",
            "create",
            "--email",
            "known@globex.io",
            "--password-stdin",
        ],
        &format!("{PASSWORD}\n"),
    )
    .await
    .unwrap();
    let alice = console_token(&s, "alice@acme.io").await;
    let post = |body: Value| {
        let s = &s;
        let alice = alice.clone();
        async move {
            let r = s
                .client
                .post(format!("{}/api/organizations/acme/invitations", s.base))
                .bearer_auth(alice)
                .json(&body)
                .send()
                .await
                .unwrap();
            (
                r.status().as_u16(),
                r.json::<Value>().await.unwrap_or_default(),
            )
        }
    };
    let (st, _) = post(json!({ "email": "new@acme.io", "role": "admin" })).await;
    assert_eq!(st, 403, "an admin invited an admin");
    for body in [
        json!({ "email": "nope", "role": "member" }),
        json!({ "email": "a@b.io", "role": "king" }),
        json!({ "email": "a@b.io" }),
    ] {
        let (st, out) = post(body.clone()).await;
        assert_eq!(st, 400, "{body}: {out}");
    }
    let (st, inv) = post(json!({ "email": "New@Acme.io", "role": "member" })).await;
    assert_eq!(st, 201, "{inv}");
    assert_eq!(inv["email"], "new@acme.io");
    let (st, _) = post(json!({ "email": "known@globex.io", "role": "viewer" })).await;
    assert_eq!(st, 201);
    let r = s
        .client
        .get(format!("{}/api/organizations/acme/invitations", s.base))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    let open: Value = r.json().await.unwrap();
    assert_eq!(open["invitations"].as_array().unwrap().len(), 2, "{open}");

    // A new address creates its account on the invitation page and is signed in.
    let outbox = s.data_dir().join("outbox");
    let link = link_in_mail(
        &outbox,
        "new@acme.io",
        1,
        &format!("{}/invitations/accept?token=", s.base),
    )
    .await;
    let token = link.split("token=").nth(1).unwrap().to_string();
    let mut b = Browser::new(&s);
    let page = b.get(&path_of(&link, &s.base)).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains(r#"name="name""#), "{}", page.body);
    let csrf = b.cookies["gh_form"].clone();
    let p = b
        .post(
            "/invitations/accept",
            &[
                ("csrf", &csrf),
                ("token", &token),
                ("name", "New"),
                ("password", "short"),
            ],
        )
        .await;
    assert_eq!(p.status, 400, "{}", p.body);
    let p = b
        .post(
            "/invitations/accept",
            &[
                ("csrf", &csrf),
                ("token", &token),
                ("name", "New"),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(p.status, 200, "{}", p.body);
    assert!(b.cookies.contains_key("gh_session"));
    let p = b
        .post(
            "/invitations/accept",
            &[
                ("csrf", &csrf),
                ("token", &token),
                ("name", "New"),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(p.status, 400, "an invitation works once");
    // An existing account accepts with its password; a wrong one is refused.
    let link = link_in_mail(
        &outbox,
        "known@globex.io",
        1,
        &format!("{}/invitations/accept?token=", s.base),
    )
    .await;
    let token = link.split("token=").nth(1).unwrap().to_string();
    let mut k = Browser::new(&s);
    let page = k.get(&path_of(&link, &s.base)).await;
    assert!(!page.body.contains(r#"name="name""#), "{}", page.body);
    let csrf = k.cookies["gh_form"].clone();
    let p = k
        .post(
            "/invitations/accept",
            &[
                ("csrf", &csrf),
                ("token", &token),
                ("password", "wrong password"),
            ],
        )
        .await;
    assert_eq!(p.status, 401);
    let p = k
        .post(
            "/invitations/accept",
            &[("csrf", &csrf), ("token", &token), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(p.status, 200, "{}", p.body);
    let r = s
        .client
        .get(format!("{}/api/organizations/acme/members", s.base))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    let members: Value = r.json().await.unwrap();
    let roles: Vec<(String, String)> = members["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["email"].as_str().unwrap().to_string(),
                m["role"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        roles.contains(&("new@acme.io".into(), "member".into())),
        "{roles:?}"
    );
    assert!(
        roles.contains(&("known@globex.io".into(), "viewer".into())),
        "{roles:?}"
    );
    // The new member signs in to the organization's service.
    let t = tokens_for(&s, &client_id, &secret, "new@acme.io").await;
    assert!(t["access_token"].is_string());
    // A withdrawn invitation's link stops working.
    let (_, inv) = post(json!({ "email": "late@acme.io", "role": "member" })).await;
    let id = inv["id"].as_str().unwrap();
    let r = s
        .client
        .delete(format!(
            "{}/api/organizations/acme/invitations/{id}",
            s.base
        ))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let link = link_in_mail(
        &outbox,
        "late@acme.io",
        1,
        &format!("{}/invitations/accept?token=", s.base),
    )
    .await;
    assert_eq!(
        Browser::new(&s).get(&path_of(&link, &s.base)).await.status,
        400
    );
}

/// Mail goes out over SMTP when `GATEHOUSE_SMTP_URL` is set: here to a real SMTP server
/// (Python's aiosmtpd, installed by .ci/run) that stores what it receives in a maildir.
#[tokio::test(flavor = "multi_thread")]
async fn mail_is_delivered_over_smtp() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let maildir = crate::harness::TempDir::new("maildir");
    let mut smtp = tokio::process::Command::new("python3")
        .args([
            "-m",
            "aiosmtpd",
            "-n",
            "-l",
            &format!("127.0.0.1:{port}"),
            "-c",
            "aiosmtpd.handlers.Mailbox",
        ])
        .arg(maildir.path().join("box"))
        .kill_on_drop(true)
        .spawn()
        .expect("python3 -m aiosmtpd (pip install aiosmtpd)");
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut opts = ServerOptions::new(Backend::Sqlite);
    opts.env.push((
        "GATEHOUSE_SMTP_URL".into(),
        format!("smtp://127.0.0.1:{port}"),
    ));
    opts.env.push((
        "GATEHOUSE_MAIL_FROM".into(),
        "Acme Login <login@acme.example.com>".into(),
    ));
    let s = Server::start_with(opts).await;
    let (_, _, email) = tenant(&s, "acme").await;
    let mut b = Browser::new(&s);
    b.get("/password/forgot").await;
    let csrf = b.cookies["gh_form"].clone();
    assert_eq!(
        b.post("/password/forgot", &[("csrf", &csrf), ("email", &email)])
            .await
            .status,
        200
    );
    let new = maildir.path().join("box").join("new");
    let mut got = None;
    for _ in 0..200 {
        if let Some(e) = std::fs::read_dir(&new).ok().and_then(|mut d| d.next()) {
            got = Some(unquote(
                &std::fs::read_to_string(e.unwrap().path()).unwrap(),
            ));
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mail = got.expect("no mail reached the SMTP server");
    assert!(mail.contains(&format!("To: {email}")), "{mail}");
    assert!(
        mail.contains("From: \"Acme Login\" <login@acme.example.com>")
            || mail.contains("From: Acme Login <login@acme.example.com>"),
        "{mail}"
    );
    assert!(
        mail.contains(&format!("{}/password/reset?token=et_", s.base)),
        "{mail}"
    );
    assert!(
        !s.data_dir().join("outbox").exists()
            || outbox_to(&s.data_dir().join("outbox"), &email).is_empty()
    );
    smtp.kill().await.unwrap();
}

/// Self-service sign-up: a new person creates an account, confirms the address by mail, signs
/// in to the console client by the device grant and registers an organization. Bad input and
/// an address that has an account already change nothing, and the answer does not tell them
/// apart.
#[tokio::test(flavor = "multi_thread")]
async fn people_sign_up_and_register_an_organization() {
    let s = Server::start(Backend::Sqlite).await;
    let outbox = s.data_dir().join("outbox");
    let (acme_web, _, taken) = tenant(&s, "acme").await;
    let mut b = Browser::new(&s);
    let form = b.get("/signup").await;
    assert_eq!(form.status, 200);
    assert!(
        form.body.contains(r#"<label for="password">"#),
        "{}",
        form.body
    );
    let csrf = b.cookies["gh_form"].clone();
    let new = "newcomer@example.org";

    // Bad input: a clear page, no account.
    for (fields, status, why) in [
        (
            vec![
                ("csrf", "forged"),
                ("email", new),
                ("name", "N"),
                ("password", PASSWORD),
            ],
            400,
            "forged token",
        ),
        (
            vec![
                ("csrf", &csrf),
                ("email", "not-an-address"),
                ("name", "N"),
                ("password", PASSWORD),
            ],
            400,
            "bad email",
        ),
        (
            vec![
                ("csrf", &csrf),
                ("email", new),
                ("name", ""),
                ("password", PASSWORD),
            ],
            400,
            "no name",
        ),
        (
            vec![
                ("csrf", &csrf),
                ("email", new),
                ("name", "N"),
                ("password", "short"),
            ],
            400,
            "short password",
        ),
        (
            vec![("csrf", &csrf), ("email", new), ("name", "N")],
            400,
            "no password",
        ),
    ] {
        let p = b.post("/signup", &fields).await;
        assert_eq!(p.status, status, "{why}: {}", p.body);
        assert!(outbox_to(&outbox, new).is_empty(), "{why}: mail sent");
    }

    // A new address gets an account and a verification link; a taken one the same page and a
    // message to its owner, its password unchanged.
    let made = b
        .post(
            "/signup",
            &[
                ("csrf", &csrf),
                ("email", new),
                ("name", "Nia New"),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(made.status, 200, "{}", made.body);
    assert!(made.body.contains("Check your email"), "{}", made.body);
    let again = b
        .post(
            "/signup",
            &[
                ("csrf", &csrf),
                ("email", &taken),
                ("name", "Mallory"),
                ("password", "mallory-password"),
            ],
        )
        .await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(
        again.body.replace(&taken, "X"),
        made.body.replace(new, "X"),
        "the answer tells a taken address apart"
    );
    let link = link_in_mail(&outbox, &taken, 1, &format!("{}/password/for", s.base)).await;
    assert!(link.ends_with("/password/forgot"), "{link}");
    let verify = link_in_mail(&outbox, new, 1, &format!("{}/verify-email?token=", s.base)).await;
    assert_eq!(b.get(&path_of(&verify, &s.base)).await.status, 200);

    // Login pages link to it.
    let (_, challenge) = pkce();
    let to_login = b
        .get(&crate::login::authorize_path(
            &acme_web,
            REDIRECT,
            &challenge,
            &[],
        ))
        .await;
    let login = b.get(to_login.location.as_deref().unwrap()).await;
    assert!(
        login.body.contains(r#"<a href="/signup">"#),
        "{}",
        login.body
    );
    // Sign-up is limited per address.
    let mut limited = false;
    for i in 0..6 {
        let email = format!("flood{i}@example.org");
        let p = b
            .post(
                "/signup",
                &[
                    ("csrf", &csrf),
                    ("email", &email),
                    ("name", "F"),
                    ("password", PASSWORD),
                ],
            )
            .await;
        limited |= p.status == 429;
    }
    assert!(limited, "no limit on sign-ups from one address");

    // The console client: a device grant, signed in on another browser.
    let r = s
        .client
        .post(format!("{}/oauth2/device_authorization", s.base))
        .form(&[
            ("client_id", "gatehouse-console"),
            ("scope", "openid email"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let grant: Value = r.json().await.unwrap();
    let user_code = grant["user_code"].as_str().unwrap();
    let device_code = grant["device_code"].as_str().unwrap();
    let mut phone = Browser::new(&s);
    phone.get(&format!("/device?user_code={user_code}")).await;
    let csrf = phone.cookies["gh_csrf"].clone();
    let ok = phone
        .post(
            "/device",
            &[
                ("csrf", &csrf),
                ("user_code", user_code),
                ("email", new),
                ("password", PASSWORD),
                ("action", "allow"),
            ],
        )
        .await;
    let ok = crate::login::confirm_device(&mut phone, ok).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let (st, t) = token(
        &s,
        &[
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("device_code", device_code),
            ("client_id", "gatehouse-console"),
        ],
        None,
    )
    .await;
    assert_eq!(st, 200, "{t}");
    let at = t["access_token"].as_str().unwrap();
    let r = s
        .client
        .post(format!("{}/api/organizations", s.base))
        .bearer_auth(at)
        .json(&json!({ "slug": "newco", "name": "NewCo" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let out: Value = r.json().await.unwrap();
    assert_eq!(out["organization"]["status"], "pending");
    assert_eq!(out["membership"]["role"], "owner");
    // The platform's own organization is no tenant's to take.
    let r = s
        .client
        .post(format!("{}/api/organizations", s.base))
        .bearer_auth(at)
        .json(&json!({ "slug": "_platform", "name": "Mine" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

/// With `GATEHOUSE_SIGNUP=false` accounts come by invitation only.
#[tokio::test(flavor = "multi_thread")]
async fn sign_up_can_be_closed() {
    let mut opts = ServerOptions::new(Backend::Sqlite);
    opts.env.push(("GATEHOUSE_SIGNUP".into(), "false".into()));
    let s = Server::start_with(opts).await;
    let (client_id, _, _) = tenant(&s, "acme").await;
    let mut b = Browser::new(&s);
    assert_eq!(b.get("/signup").await.status, 404);
    let p = b
        .post(
            "/signup",
            &[
                ("csrf", "x"),
                ("email", "a@b.org"),
                ("name", "A"),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(p.status, 404);
    let (_, challenge) = pkce();
    let to_login = b
        .get(&crate::login::authorize_path(
            &client_id,
            REDIRECT,
            &challenge,
            &[],
        ))
        .await;
    let login = b.get(to_login.location.as_deref().unwrap()).await;
    assert_eq!(login.status, 200, "{}", login.body);
    assert!(
        login.body.contains("Sign in") && !login.body.contains("/signup"),
        "{}",
        login.body
    );
}

/// The console's redirect URIs follow the configuration of the node that starts: a node
/// started with `GATEHOUSE_CONSOLE_REDIRECT_URIS` opens the code grant to them, and the other
/// nodes of the deployment follow within a second or two.
#[tokio::test(flavor = "multi_thread")]
async fn the_console_follows_its_configured_redirect_uris() {
    // Two nodes of one deployment.
    let mut opts = crate::login::deployment();
    let a = Server::start_with(opts.clone()).await;
    let console = "http://127.0.0.1:9/console";
    let (_, challenge) = pkce();
    let path = crate::login::authorize_path("gatehouse-console", console, &challenge, &[]);
    assert_eq!(Browser::new(&a).get(&path).await.status, 400);
    opts.database = a.database.clone();
    opts.env.push((
        "GATEHOUSE_CONSOLE_REDIRECT_URIS".into(),
        format!("{console}, https://console.example.com/cb"),
    ));
    let b = Server::start_with(opts).await;
    let to_login = Browser::new(&b).get(&path).await;
    assert_eq!(to_login.status, 303, "{}", to_login.body);
    assert!(to_login.location.unwrap().contains("/login"));
    let started = std::time::Instant::now();
    while Browser::new(&a).get(&path).await.status != 303 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the other node kept the old redirect URIs"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
