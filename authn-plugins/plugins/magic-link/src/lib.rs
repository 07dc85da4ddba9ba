//! Sign-in links sent by email ("magic links"): single-use, valid for 15 minutes, and bound to
//! the sign-in (and so to the browser) that asked for one.
//!
//! - `begin` without an `email` parameter asks for the address.
//! - `begin` with `email` sends a link to the account with that address, if there is one, and
//!   answers the same message either way, so that the page does not tell who has an account.
//!   The link is `{callback-url}?token=…`; only the token's SHA-256 is kept, with the flow and
//!   the user, in this plugin's key-value space for 15 minutes. One link a minute per account.
//! - `complete` (the callback, with `token`) takes the link (so it works once) and signs its
//!   user in if the flow is the one that asked: a link opened in another sign-in is refused.
//!
//! The assertion's method is `email` (the user proved they read the address's mail).

use gatehouse_pdk::*;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// How long a link is good for.
const LINK_SECONDS: u32 = 900;
/// How often one account may be sent a link.
const RESEND_SECONDS: u32 = 60;
const MAX_TOKEN: usize = 128;

const SENT: &str = "If an account uses this address, a sign-in link is on its way to it. \
Open it in this browser within 15 minutes.";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn link_key(token: &str) -> String {
    format!("link:{}", hex(&Sha256::digest(token.as_bytes())))
}

fn unavailable(e: String) -> Failure {
    Failure::Unavailable(e)
}

/// A plausible address: what the form checks before anything is looked up.
fn address(given: &str) -> Option<&str> {
    let a = given.trim();
    let (local, domain) = a.split_once('@')?;
    let ok = !local.is_empty()
        && domain.contains('.')
        && a.len() <= 254
        && !a.chars().any(|c| c.is_whitespace() || c.is_control());
    ok.then_some(a)
}

fn send_link(request: &Request, given: &str) -> Result<BeginResult, Failure> {
    let sent = Ok(BeginResult::Message(SENT.into()));
    let Some(email) = address(given) else {
        return Err(Failure::BadRequest("Enter your email address.".into()));
    };
    if request.flow_id().is_empty() || request.callback_url().is_empty() {
        return Err(Failure::BadRequest(
            "A sign-in link can only be sent from a sign-in page.".into(),
        ));
    }
    let Some(account) = accounts::find_by_email(email).map_err(unavailable)? else {
        log::info("a sign-in link was asked for an address without an account");
        return sent;
    };
    let throttle = format!("sent:{}", account.id);
    if kv::get(&throttle).map_err(unavailable)?.is_some() {
        log::info("a sign-in link was asked again within a minute; none sent");
        return sent;
    }
    let token = hex(&random::bytes(32));
    let link = json!({ "flow": request.flow_id(), "user": account.id, "email": account.email });
    kv::set(&link_key(&token), link.to_string().as_bytes(), LINK_SECONDS).map_err(unavailable)?;
    kv::set(&throttle, b"1", RESEND_SECONDS).map_err(unavailable)?;
    let url = format!("{}?token={token}", request.callback_url());
    let body = format!(
        "Someone, hopefully you, asked to sign in with this address.\n\n\
         Open this link in the same browser within 15 minutes to sign in:\n\n{url}\n\n\
         The link works once, and only in the browser that asked for it. If you did not ask \
         for it, ignore this message.\n"
    );
    email::send(&account.id, "Your sign-in link", &body).map_err(unavailable)?;
    sent
}

fn sign_in(request: &Request) -> Result<Assertion, Failure> {
    let expired = || {
        Failure::BadRequest(
            "This sign-in link has expired or was already used. Ask for a new one.".into(),
        )
    };
    let token = request
        .param("token")
        .filter(|t| !t.is_empty() && t.len() <= MAX_TOKEN)
        .ok_or_else(expired)?;
    let raw = kv::take(&link_key(token))
        .map_err(unavailable)?
        .ok_or_else(expired)?;
    let link: Value = serde_json::from_slice(&raw).map_err(|e| unavailable(e.to_string()))?;
    if link["flow"].as_str() != Some(request.flow_id()) || request.flow_id().is_empty() {
        return Err(Failure::BadRequest(
            "This link belongs to another sign-in. Open it in the browser where you asked for \
             it, or ask for a new one."
                .into(),
        ));
    }
    Ok(Assertion {
        provider: "magic-link".into(),
        subject: link["user"].as_str().unwrap_or_default().to_string(),
        email: link["email"].as_str().map(str::to_string),
        email_verified: true,
        claims: "{}".into(),
        methods: vec!["email".into()],
    })
}

struct MagicLink;

impl Plugin for MagicLink {
    fn describe() -> Description {
        Description::strategy(
            "magic-link",
            env!("CARGO_PKG_VERSION"),
            "Email me a sign-in link",
        )
    }

    fn begin(request: Request) -> Result<BeginResult, Failure> {
        match request.param("email") {
            None => Ok(BeginResult::Form(vec![
                Field::new("email", "Email address", "email").autocomplete("username"),
            ])),
            Some(given) => send_link(&request, given),
        }
    }

    fn complete(request: Request) -> Result<Assertion, Failure> {
        sign_in(&request)
    }
}

gatehouse_pdk::plugin!(MagicLink);
