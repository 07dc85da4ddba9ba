//! Linking an identity provider's account to the signed-in person (`/login/link`): an
//! organization's provider that vouches for a signed-in person's address links nothing until
//! that person confirms, on a page naming the provider and the account; then the sign-in goes
//! on as them.

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
use crate::oidc::sessions::{PENDING_SECONDS, secret, sha256_hex};

const LINK_COOKIE: &str = "gh_link";
const LINK_PATH: &str = "/login/link";

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
