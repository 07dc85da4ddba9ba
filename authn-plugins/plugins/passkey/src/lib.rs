//! Passkeys (WebAuthn, through the host's `webauthn` capability): registered by a signed-in
//! user, then used to sign in without a name (a discoverable credential names its user), or as
//! the second factor of a user who signed in another way.
//!
//! The ceremonies, told by the `purpose` parameter:
//! - `sign-in` (the default, no user yet): `begin` answers a challenge for any passkey of the
//!   relying party; `complete` takes the browser's `response`, finds the user it names, and
//!   checks it against that user's passkeys.
//! - `verify` (a second factor: `user-id` is set): the same, for that user's passkeys only.
//! - `enrol` (`user-id` set; `account` is the name the authenticator shows): `begin` answers
//!   the options of a new passkey; `complete` registers the `response` and keeps it.
//! - `remove` (`user-id` set): `complete` removes the passkey `credential_id`.
//! - `list` (`user-id` set): `complete` answers the credential ids of the user's passkeys
//!   (claims `passkeys`).
//!
//! A ceremony's state waits 5 minutes in this plugin's key-value space, under the flow (or the
//! user, for enrolment), and is taken once. A user's passkeys are one credential record,
//! `passkeys`: a JSON list, kept up to date with each use (the signature counter).
//!
//! Methods: `hwk` for the possession of the key, and `mfa` when the authenticator verified the
//! user too (a PIN or biometrics): a passkey used that way is two factors in one.

use gatehouse_pdk::*;
use serde_json::Value;

/// How long a ceremony may take.
const CEREMONY_SECONDS: u32 = 300;
const RECORD: &str = "passkeys";

fn unavailable(e: String) -> Failure {
    Failure::Unavailable(e)
}

fn passkeys_of(user: &str) -> Result<Vec<String>, Failure> {
    let Some(raw) = credentials::get(user, RECORD).map_err(unavailable)? else {
        return Ok(Vec::new());
    };
    let list: Vec<Value> = serde_json::from_str(&raw).map_err(|e| unavailable(e.to_string()))?;
    Ok(list.iter().map(Value::to_string).collect())
}

fn keep(user: &str, passkeys: &[String]) -> Result<(), Failure> {
    if passkeys.is_empty() {
        return credentials::delete(user, RECORD).map_err(unavailable);
    }
    let list: Vec<Value> = passkeys
        .iter()
        .map(|p| serde_json::from_str(p))
        .collect::<Result<_, _>>()
        .map_err(|e| unavailable(e.to_string()))?;
    credentials::put(user, RECORD, &Value::Array(list).to_string()).map_err(unavailable)
}

fn state_key(request: &Request, purpose: &str) -> String {
    match (purpose, request.user_id()) {
        ("enrol", Some(u)) => format!("enrol:{u}"),
        (_, Some(u)) => format!("auth:{}:{u}", request.flow_id()),
        (_, None) => format!("auth:{}", request.flow_id()),
    }
}

fn user(request: &Request) -> Result<&str, Failure> {
    request
        .user_id()
        .filter(|u| !u.is_empty())
        .ok_or_else(|| Failure::BadRequest("this needs a signed-in user".into()))
}

fn assertion(user: &str, user_verified: bool, claims: Value) -> Assertion {
    let mut methods = vec!["hwk".to_string()];
    if user_verified {
        methods.push("mfa".into());
    }
    Assertion {
        provider: "passkey".into(),
        subject: user.to_string(),
        email: None,
        email_verified: false,
        claims: claims.to_string(),
        methods,
    }
}

fn start(request: &Request, purpose: &str) -> Result<BeginResult, Failure> {
    let started = match purpose {
        "enrol" => {
            let user = user(request)?;
            let account = request.param("account").unwrap_or(user);
            webauthn::start_registration(user, account, account, &passkeys_of(user)?)
        }
        "verify" => {
            let have = passkeys_of(user(request)?)?;
            if have.is_empty() {
                return Err(Failure::BadRequest("No passkey is set up.".into()));
            }
            webauthn::start_authentication(&have)
        }
        "sign-in" => {
            if request.flow_id().is_empty() {
                return Err(Failure::BadRequest(
                    "A passkey signs in from a sign-in page.".into(),
                ));
            }
            webauthn::start_authentication(&[])
        }
        other => return Err(Failure::BadRequest(format!("unknown purpose `{other}`"))),
    }
    .map_err(Failure::BadRequest)?;
    kv::set(
        &state_key(request, purpose),
        started.state.as_bytes(),
        CEREMONY_SECONDS,
    )
    .map_err(unavailable)?;
    Ok(BeginResult::Challenge(started.options))
}

fn response(request: &Request) -> Result<&str, Failure> {
    request
        .param("response")
        .filter(|r| !r.is_empty())
        .ok_or_else(|| Failure::BadRequest("The passkey's answer is missing.".into()))
}

fn taken_state(request: &Request, purpose: &str) -> Result<String, Failure> {
    let raw = kv::take(&state_key(request, purpose))
        .map_err(unavailable)?
        .ok_or_else(|| {
            Failure::BadRequest("This passkey request has expired. Try again.".into())
        })?;
    String::from_utf8(raw).map_err(|e| unavailable(e.to_string()))
}

fn enrol(request: &Request) -> Result<Assertion, Failure> {
    let user = user(request)?;
    let response = response(request)?;
    let state = taken_state(request, "enrol")?;
    let registered = webauthn::finish_registration(&state, response).map_err(|e| {
        log::info(&format!("a passkey was not registered: {e}"));
        Failure::BadRequest("The passkey could not be registered.".into())
    })?;
    let mut have = passkeys_of(user)?;
    let id_of = |p: &str| -> Option<String> {
        let v: Value = serde_json::from_str(p).ok()?;
        v["cred"]["cred_id"].as_str().map(str::to_string)
    };
    if have
        .iter()
        .any(|p| id_of(p).as_deref() == Some(&registered.credential_id))
    {
        return Err(Failure::BadRequest(
            "This passkey is already registered.".into(),
        ));
    }
    have.push(registered.passkey);
    keep(user, &have)?;
    log::info("a passkey was registered");
    Ok(assertion(
        user,
        true,
        serde_json::json!({ "credential_id": registered.credential_id, "passkeys": have.len() }),
    ))
}

fn authenticate(request: &Request, purpose: &str) -> Result<Assertion, Failure> {
    let response = response(request)?;
    let state = taken_state(request, purpose)?;
    let refused = |e: String| {
        log::info(&format!("a passkey was refused: {e}"));
        Failure::InvalidCredentials(None)
    };
    let user = match purpose {
        "verify" => user(request)?.to_string(),
        _ => webauthn::identify(response).map_err(refused)?,
    };
    let have = passkeys_of(&user)?;
    if have.is_empty() {
        return Err(refused("the user has no passkeys".into()));
    }
    let done = webauthn::finish_authentication(&state, response, &have).map_err(refused)?;
    if let Some(named) = &done.user_id
        && *named != user
    {
        return Err(refused("the credential names another user".into()));
    }
    keep(&user, &done.passkeys)?;
    Ok(assertion(
        &user,
        done.user_verified,
        serde_json::json!({ "credential_id": done.credential_id }),
    ))
}

fn remove(request: &Request) -> Result<Assertion, Failure> {
    let user = user(request)?;
    let id = request
        .param("credential_id")
        .ok_or_else(|| Failure::BadRequest("`credential_id` is missing".into()))?;
    let have = passkeys_of(user)?;
    let left: Vec<String> = have
        .iter()
        .filter(|p| {
            serde_json::from_str::<Value>(p)
                .ok()
                .and_then(|v| v["cred"]["cred_id"].as_str().map(|c| c != id))
                .unwrap_or(true)
        })
        .cloned()
        .collect();
    if left.len() == have.len() {
        return Err(Failure::BadRequest("No such passkey.".into()));
    }
    keep(user, &left)?;
    Ok(assertion(
        user,
        false,
        serde_json::json!({ "passkeys": left.len() }),
    ))
}

fn list(request: &Request) -> Result<Assertion, Failure> {
    let user = user(request)?;
    let ids: Vec<Value> = passkeys_of(user)?
        .iter()
        .filter_map(|p| serde_json::from_str::<Value>(p).ok())
        .map(|v| v["cred"]["cred_id"].clone())
        .collect();
    Ok(assertion(
        user,
        false,
        serde_json::json!({ "passkeys": ids }),
    ))
}

struct PasskeyPlugin;

impl Plugin for PasskeyPlugin {
    fn describe() -> Description {
        Description::strategy(
            "passkey",
            env!("CARGO_PKG_VERSION"),
            "Sign in with a passkey",
        )
    }

    fn begin(request: Request) -> Result<BeginResult, Failure> {
        let purpose = request
            .param("purpose")
            .unwrap_or(if request.user_id().is_some() {
                "verify"
            } else {
                "sign-in"
            });
        start(&request, purpose)
    }

    fn complete(request: Request) -> Result<Assertion, Failure> {
        let purpose = request
            .param("purpose")
            .unwrap_or(if request.user_id().is_some() {
                "verify"
            } else {
                "sign-in"
            });
        match purpose {
            "enrol" => enrol(&request),
            "remove" => remove(&request),
            "list" => list(&request),
            "verify" | "sign-in" => authenticate(&request, purpose),
            other => Err(Failure::BadRequest(format!("unknown purpose `{other}`"))),
        }
    }
}

gatehouse_pdk::plugin!(PasskeyPlugin);
