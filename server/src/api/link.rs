//! Linking an identity provider's account to a Gatehouse account.
//!
//! - `/login/link`: an organization's provider that vouches for a signed-in person's address
//!   links nothing until that person confirms, on a page naming the provider and the account;
//!   then the sign-in goes on as them.
//! - `/login/prove`: a provider's account not linked yet, vouching for an address, signs in
//!   only once the person types the code sent to that address. The page and the mail are the
//!   same whether or not an account has the address (so a provider cannot learn who has an
//!   account here); with the code, the account with the address is linked (its owner proved
//!   it), or a new one is created with the address verified.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};

use super::AppState;
use super::login::{
    Provider, bound_request, current_session, form_token, form_token_ok, provider, removal,
    sign_in_as, unavailable_page,
};
use super::oauth::parse_form;
use super::pages::{error_page, escape, page};
use crate::db::tenancy::Organization;
use crate::db::users::User;
use crate::identity::login::ProviderUser;
use crate::oidc::sessions::{PENDING_SECONDS, secret, sha256_hex};

const LINK_COOKIE: &str = "gh_link";
const LINK_PATH: &str = "/login/link";
const PROVE_COOKIE: &str = "gh_prove";
const PROVE_PATH: &str = "/login/prove";
/// Wrong codes a proof takes before it is dropped.
const PROVE_TRIES: u64 = 5;
/// Codes mailed to one address per minute; past it the page is the same, and no mail goes.
const PROVE_MAILS_PER_MINUTE: u64 = 5;

/// A provider's account waiting for its link to be confirmed.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(super) struct PendingLink {
    pub plugin: String,
    /// The organization that configured the provider.
    pub organization: String,
    pub provider: String,
    pub subject: String,
    /// The signed-in user it would link to.
    pub user: String,
    /// The sign-in (authorization request) it came from.
    pub request: String,
    /// The methods the provider's sign-in counts as.
    pub methods: Vec<String>,
}

fn key(token: &str) -> String {
    format!("link:{}", sha256_hex(token))
}

/// Keeps `link` for ten minutes and asks `user` to confirm it.
pub(super) async fn confirm_page(
    p: &Provider<'_>,
    link: &PendingLink,
    display_name: &str,
    user: &User,
    org: Option<&Organization>,
) -> HttpResponse {
    let Ok(token) = secret("") else {
        return unavailable_page();
    };
    let Ok(json) = serde_json::to_string(link) else {
        return unavailable_page();
    };
    if let Err(e) = p
        .sessions
        .kv()
        .put(
            &key(&token),
            &json,
            std::time::Duration::from_secs(PENDING_SECONDS),
        )
        .await
    {
        tracing::error!(error = %e, "cannot keep a link to confirm");
        return unavailable_page();
    }
    let Some((csrf, csrf_cookie)) = form_token(p, LINK_COOKIE, LINK_PATH, PENDING_SECONDS as i64)
    else {
        return unavailable_page();
    };
    let body = format!(
        r#"<p>Sign in to your account <strong>{email}</strong> with <strong>{provider}</strong> from now on?</p>
<p>Only link an account that is yours.</p>
<form method="post" action="{LINK_PATH}">
<input type="hidden" name="link" value="{token}">
<input type="hidden" name="csrf" value="{csrf}">
<button type="submit" name="action" value="link">Link and continue</button>
<button type="submit" name="action" value="cancel">Cancel</button>
</form>"#,
        email = escape(&user.email),
        provider = escape(display_name),
        token = escape(&token),
        csrf = escape(&csrf),
    );
    let mut r = page(StatusCode::OK, "Link this account?", org, &body);
    let _ = r.add_cookie(&csrf_cookie);
    r
}

/// `POST /login/link`: the signed-in person confirms (the accounts are linked and the sign-in
/// goes on as them) or cancels. Only the form, browser and session that were asked count.
pub(super) async fn confirm(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let p = match provider(&state) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let expired = || {
        error_page(
            StatusCode::BAD_REQUEST,
            "This page has expired",
            "Go back to the application and start signing in again.",
            None,
        )
    };
    let Ok(form) = parse_form(&req, &body) else {
        return expired();
    };
    if !form_token_ok(
        &req,
        LINK_COOKIE,
        form.get("csrf").map(String::as_str).unwrap_or_default(),
    ) {
        return expired();
    }
    let token = form.get("link").map(String::as_str).unwrap_or_default();
    let link: PendingLink = match p.sessions.kv().take(&key(token)).await {
        Ok(Some(json)) => match serde_json::from_str(&json) {
            Ok(l) => l,
            Err(_) => return expired(),
        },
        Ok(None) => return expired(),
        Err(e) => {
            tracing::error!(error = %e, "cannot read a link to confirm");
            return unavailable_page();
        }
    };
    let user = match current_session(&p, &req).await {
        Ok(Some(s)) if s.user_id == link.user => s.user_id,
        Ok(_) => return expired(),
        Err(e) => {
            tracing::error!(error = %e, "cannot read a session");
            return unavailable_page();
        }
    };
    let (pending, service, org) = match bound_request(&p, &req, &link.request).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let user = match p.identity.store.user(&user).await {
        Ok(Some(u)) => u,
        Ok(None) => return expired(),
        Err(e) => {
            tracing::error!(error = %e, "cannot read a user");
            return unavailable_page();
        }
    };
    let mut res = if form.get("action").map(String::as_str) == Some("link") {
        if let Err(e) = p
            .identity
            .link_provider_account(
                &link.plugin,
                &link.organization,
                &link.provider,
                &link.subject,
                &user,
            )
            .await
        {
            tracing::error!(error = %e, "cannot link an account");
            return unavailable_page();
        }
        sign_in_as(
            &p,
            &req,
            &link.request,
            &pending,
            &service,
            org.as_ref(),
            &user,
            link.methods,
        )
        .await
    } else {
        page(
            StatusCode::OK,
            "Not linked",
            org.as_ref(),
            "<p>Nothing was linked. Go back to the application to sign in another way.</p>",
        )
    };
    let _ = res.add_cookie(&removal(LINK_COOKIE, LINK_PATH));
    res
}

/// A provider's account waiting for the person to prove the address it vouched for.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(super) struct PendingProof {
    pub plugin: String,
    /// The organization that configured the provider.
    pub organization: String,
    pub provider: String,
    pub subject: String,
    /// The address the provider vouched for, where the code goes.
    pub email: String,
    /// The name of an account created for it.
    pub name: String,
    /// The provider's name, for the pages and the mail.
    pub display_name: String,
    /// The sign-in (authorization request) it came from.
    pub request: String,
    /// The methods the provider's sign-in counts as.
    pub methods: Vec<String>,
    /// SHA-256 of the form token and the code: the code alone is not enough.
    pub code_sha256: String,
}

fn proof_key(token: &str) -> String {
    format!("prove:{}", sha256_hex(token))
}

fn code_hash(token: &str, code: &str) -> String {
    sha256_hex(&format!("{token}:{code}"))
}

/// Eight random digits.
fn new_code() -> Option<String> {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).ok()?;
    Some(format!("{:08}", u64::from_le_bytes(b) % 100_000_000))
}

fn code_form(
    status: StatusCode,
    org: Option<&Organization>,
    email: &str,
    csrf: &str,
    message: Option<&str>,
) -> HttpResponse {
    let message = message
        .map(|m| format!(r#"<p class="error">{}</p>"#, escape(m)))
        .unwrap_or_default();
    let body = format!(
        r#"{message}<p>To finish signing in, enter the code we sent to <strong>{email}</strong>.</p>
<p>It works for ten minutes, in this browser only.</p>
<form method="post" action="{PROVE_PATH}">
<input type="hidden" name="csrf" value="{csrf}">
<label>Code <input name="code" inputmode="numeric" autocomplete="one-time-code" required></label>
<button type="submit">Continue</button>
</form>"#,
        email = escape(email),
        csrf = escape(csrf),
    );
    page(status, "Check your email", org, &body)
}

/// Keeps `proof` for ten minutes, mails its code to the address and asks for it. The answer is
/// the same whatever the address.
pub(super) async fn prove_page(
    p: &Provider<'_>,
    mailer: Option<&std::sync::Arc<crate::mail::Mailer>>,
    mut proof: PendingProof,
    service: &crate::db::tenancy::Service,
    org: Option<&Organization>,
) -> HttpResponse {
    let Some(mailer) = mailer else {
        tracing::error!("no mail: a provider's address cannot be proven");
        return unavailable_page();
    };
    let Some((token, csrf_cookie)) =
        form_token(p, PROVE_COOKIE, PROVE_PATH, PENDING_SECONDS as i64)
    else {
        return unavailable_page();
    };
    let Some(code) = new_code() else {
        return unavailable_page();
    };
    proof.code_sha256 = code_hash(&token, &code);
    let Ok(json) = serde_json::to_string(&proof) else {
        return unavailable_page();
    };
    let kv = p.sessions.kv();
    if let Err(e) = kv
        .put(
            &proof_key(&token),
            &json,
            std::time::Duration::from_secs(PENDING_SECONDS),
        )
        .await
    {
        tracing::error!(error = %e, "cannot keep an address to prove");
        return unavailable_page();
    }
    let flooded = crate::cache::limits::over_rate(
        kv.as_ref(),
        &format!("prove-mail:{}", sha256_hex(&proof.email)),
        PROVE_MAILS_PER_MINUTE,
    )
    .await;
    match flooded {
        Ok(None) => {
            let org_name = org.map(|o| o.name.as_str()).unwrap_or("Gatehouse");
            mailer.send(
                "provider_sign_in_code",
                proof.email.clone(),
                format!("{code} is your code to sign in to {}", service.name),
                format!(
                    "{code} is your code to sign in to {service} ({org_name}) with {provider}.\n\n\
                     It works for ten minutes, in the browser that asked for it. Only type it \
                     into that page, and never give it to anyone: with it, {provider} signs in \
                     to the Gatehouse account of this address, or creates one.\n\n\
                     If you are not signing in right now, ignore this message: nothing happens \
                     without the code.\n",
                    service = service.name,
                    provider = proof.display_name,
                ),
            );
        }
        Ok(Some(_)) => tracing::warn!("too many sign-in codes for one address: not sent"),
        Err(e) => {
            tracing::error!(error = %e, "cannot count sign-in codes");
            return unavailable_page();
        }
    }
    let mut r = code_form(StatusCode::OK, org, &proof.email, &token, None);
    let _ = r.add_cookie(&csrf_cookie);
    r
}

/// `POST /login/prove`: the code sent to the provider's address. Only the browser and sign-in
/// that were asked count; five wrong codes drop the proof.
pub(super) async fn prove(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let p = match provider(&state) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let expired = |org: Option<&Organization>| {
        let mut r = error_page(
            StatusCode::BAD_REQUEST,
            "This page has expired",
            "Go back to the application and start signing in again.",
            org,
        );
        let _ = r.add_cookie(&removal(PROVE_COOKIE, PROVE_PATH));
        r
    };
    let Ok(form) = parse_form(&req, &body) else {
        return expired(None);
    };
    let token = form.get("csrf").map(String::as_str).unwrap_or_default();
    if !form_token_ok(&req, PROVE_COOKIE, token) {
        return expired(None);
    }
    let kv = p.sessions.kv();
    let key = proof_key(token);
    let proof: PendingProof = match kv.get(&key).await {
        Ok(Some(json)) => match serde_json::from_str(&json) {
            Ok(l) => l,
            Err(_) => return expired(None),
        },
        Ok(None) => return expired(None),
        Err(e) => {
            tracing::error!(error = %e, "cannot read an address to prove");
            return unavailable_page();
        }
    };
    let (pending, service, org) = match bound_request(&p, &req, &proof.request).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let tries = match kv
        .incr(
            &format!("prove-tries:{}", sha256_hex(token)),
            std::time::Duration::from_secs(PENDING_SECONDS),
        )
        .await
    {
        Ok(n) => n,
        Err(e) => {
            tracing::error!(error = %e, "cannot count codes");
            return unavailable_page();
        }
    };
    if tries > PROVE_TRIES {
        let _ = kv.delete(&key).await;
        let mut r = error_page(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many wrong codes",
            "Go back to the application and start signing in again.",
            org.as_ref(),
        );
        let _ = r.add_cookie(&removal(PROVE_COOKIE, PROVE_PATH));
        return r;
    }
    let code: String = form
        .get("code")
        .map(String::as_str)
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_whitespace())
        .take(64)
        .collect();
    if code_hash(token, &code) != proof.code_sha256 {
        return code_form(
            StatusCode::BAD_REQUEST,
            org.as_ref(),
            &proof.email,
            token,
            Some("That code is not right. Use the one in the latest message."),
        );
    }
    // Of two posts of the right code, one goes on.
    match kv.take(&key).await {
        Ok(Some(_)) => {}
        Ok(None) => return expired(org.as_ref()),
        Err(e) => {
            tracing::error!(error = %e, "cannot read an address to prove");
            return unavailable_page();
        }
    }
    let found = p
        .identity
        .proven_provider_user(
            &proof.plugin,
            &proof.organization,
            &proof.provider,
            &proof.subject,
            &proof.email,
            &proof.name,
            state.signup,
        )
        .await;
    let mut res = match found {
        Ok(ProviderUser::User(user)) => {
            sign_in_as(
                &p,
                &req,
                &proof.request,
                &pending,
                &service,
                org.as_ref(),
                &user,
                proof.methods,
            )
            .await
        }
        Ok(ProviderUser::Refused(m)) => {
            p.identity
                .audit(
                    Some(&service.organization_id),
                    "anonymous",
                    super::login::client_ip(&req).as_deref(),
                    "login.failed",
                    serde_json::json!({ "client_id": service.client_id, "method": proof.plugin, "provider": proof.provider, "reason": m, "flow": "code" }),
                )
                .await;
            error_page(
                StatusCode::FORBIDDEN,
                "You could not be signed in",
                &m,
                org.as_ref(),
            )
        }
        Ok(_) => unavailable_page(),
        Err(e) => {
            tracing::error!(error = %e, "cannot settle a provider's account");
            unavailable_page()
        }
    };
    let _ = res.add_cookie(&removal(PROVE_COOKIE, PROVE_PATH));
    res
}
