//! Time-based one-time passwords (RFC 6238: HMAC-SHA1, 6 digits, 30 s steps) as a second
//! factor, with one step of drift either way, each step accepted once; and ten single-use
//! recovery codes.
//!
//! Every step is about a user the host names (`user-id`). Two purposes, told by the `purpose`
//! parameter:
//! - `verify` (the default): `begin` asks for a code; `complete` checks `code` against the
//!   user's secret, or against their recovery codes;
//! - `enrol`: `begin` makes a new secret (kept 10 minutes in this plugin's key-value space)
//!   and answers a challenge: `{"secret", "otpauth_uri", "qr_svg"}`, the URI labelled with the
//!   parameters `issuer` and `account`; `complete` checks a first `code` against it, then
//!   keeps the secret as the user's credential `secret` and answers ten recovery codes in the
//!   assertion's claims (`recovery_codes`), shown once: only their SHA-256 digests are kept.

use gatehouse_pdk::*;
use sha2::{Digest, Sha256};
use totp_rs::{Algorithm, Builder, Secret, Totp};

/// How long an enrolment may wait for its first code.
const ENROL_SECONDS: u32 = 600;
const RECOVERY_CODES: usize = 10;
const BASE32: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

fn totp(secret: Secret, issuer: &str, account: &str) -> Result<Totp, Failure> {
    Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(6)
        .with_skew(1)
        .with_step_duration(30)
        .with_secret(secret)
        .with_issuer(Some(issuer.replace(':', " ")))
        .with_account_name(account.replace(':', " "))
        .build()
        .map_err(|e| Failure::Unavailable(format!("cannot set up TOTP: {e:?}")))
}

fn user(request: &Request) -> Result<String, Failure> {
    request
        .user_id()
        .filter(|u| !u.is_empty())
        .map(str::to_string)
        .ok_or_else(|| Failure::BadRequest("a second factor needs a signed-in user".into()))
}

fn now_secs() -> u64 {
    clock::now_millis() / 1000
}

fn digest(code: &str) -> String {
    let d = Sha256::digest(normalize(code).as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// Recovery codes are compared without case, spaces or dashes.
fn normalize(code: &str) -> String {
    code.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// Ten random codes of ten base32 characters (50 bits each), as `xxxxx-xxxxx`.
fn recovery_codes() -> Vec<String> {
    let bytes = random::bytes((RECOVERY_CODES * 10) as u32);
    bytes
        .chunks(10)
        .map(|c| {
            let s: String = c
                .iter()
                .map(|b| BASE32[(*b & 31) as usize] as char)
                .collect();
            format!("{}-{}", &s[..5], &s[5..])
        })
        .collect()
}

fn enrol_begin(request: &Request, user: &str) -> Result<BeginResult, Failure> {
    let issuer = request.param("issuer").unwrap_or("Gatehouse");
    let account = request.param("account").unwrap_or(user);
    let secret = Secret::from(random::bytes(20).as_slice());
    let t = totp(secret.clone(), issuer, account)?;
    let uri = t
        .to_url()
        .map_err(|e| Failure::BadRequest(format!("cannot label the code: {e:?}")))?;
    let svg = qrcode::QrCode::new(uri.as_bytes())
        .map_err(|e| Failure::Unavailable(format!("cannot draw the QR code: {e}")))?
        .render::<qrcode::render::svg::Color>()
        .min_dimensions(200, 200)
        .build();
    kv::set(
        &format!("enrol:{user}"),
        secret.to_base32().as_bytes(),
        ENROL_SECONDS,
    )
    .map_err(Failure::Unavailable)?;
    let challenge = serde_json::json!({
        "secret": secret.to_base32(),
        "otpauth_uri": uri,
        "qr_svg": svg,
    });
    Ok(BeginResult::Challenge(challenge.to_string()))
}

fn enrol_complete(request: &Request, user: &str) -> Result<Assertion, Failure> {
    let code = request.param("code").unwrap_or_default().trim();
    let key = format!("enrol:{user}");
    let Some(pending) = kv::get(&key).map_err(Failure::Unavailable)? else {
        return Err(Failure::BadRequest(
            "no enrolment is waiting; start again".into(),
        ));
    };
    let secret = Secret::try_from_base32(String::from_utf8_lossy(&pending))
        .map_err(|_| Failure::Unavailable("a pending secret does not parse".into()))?;
    let t = totp(secret.clone(), "Gatehouse", user)?;
    let Some(step) = t.check(code, now_secs()) else {
        return Err(Failure::InvalidCredentials(Some(user.into())));
    };
    kv::delete(&key).map_err(Failure::Unavailable)?;
    let codes = recovery_codes();
    let digests: Vec<String> = codes.iter().map(|c| digest(c)).collect();
    credentials::put(user, "secret", &secret.to_base32()).map_err(Failure::Unavailable)?;
    credentials::put(user, "last-step", &step.to_string()).map_err(Failure::Unavailable)?;
    credentials::put(
        user,
        "recovery",
        &serde_json::Value::from(digests).to_string(),
    )
    .map_err(Failure::Unavailable)?;
    Ok(Assertion {
        provider: "totp".into(),
        subject: user.into(),
        email: None,
        email_verified: false,
        claims: serde_json::json!({ "recovery_codes": codes }).to_string(),
        methods: vec!["otp".into()],
    })
}

fn verify(request: &Request, user: &str) -> Result<Assertion, Failure> {
    let code = request.param("code").unwrap_or_default().trim();
    if code.is_empty() || code.len() > 32 {
        return Err(Failure::BadRequest(
            "enter the code of your authenticator app".into(),
        ));
    }
    let Some(secret) = credentials::get(user, "secret").map_err(Failure::Unavailable)? else {
        return Err(Failure::BadRequest(
            "no authenticator app is set up for this account".into(),
        ));
    };
    let secret = Secret::try_from_base32(&secret)
        .map_err(|_| Failure::Unavailable("a stored secret does not parse".into()))?;
    let assertion = |method: &str| Assertion {
        provider: "totp".into(),
        subject: user.into(),
        email: None,
        email_verified: false,
        claims: "{}".into(),
        methods: vec![method.into()],
    };
    if code.chars().all(|c| c.is_ascii_digit()) {
        let t = totp(secret, "Gatehouse", user)?;
        let Some(step) = t.check(code, now_secs()) else {
            return Err(Failure::InvalidCredentials(Some(user.into())));
        };
        // RFC 6238, 5.2: a code is accepted once; so is every earlier step.
        let last = credentials::get(user, "last-step")
            .map_err(Failure::Unavailable)?
            .and_then(|s| s.parse::<u64>().ok());
        if last.is_some_and(|l| step <= l) {
            return Err(Failure::InvalidCredentials(Some(user.into())));
        }
        credentials::put(user, "last-step", &step.to_string()).map_err(Failure::Unavailable)?;
        return Ok(assertion("otp"));
    }
    // A recovery code: used once.
    let stored = credentials::get(user, "recovery").map_err(Failure::Unavailable)?;
    let mut digests: Vec<String> = stored
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_default();
    let d = digest(code);
    let Some(i) = digests.iter().position(|x| *x == d) else {
        return Err(Failure::InvalidCredentials(Some(user.into())));
    };
    digests.remove(i);
    credentials::put(
        user,
        "recovery",
        &serde_json::Value::from(digests).to_string(),
    )
    .map_err(Failure::Unavailable)?;
    log::info("a recovery code was used");
    Ok(assertion("otp"))
}

struct TotpPlugin;

impl Plugin for TotpPlugin {
    fn describe() -> Description {
        Description::strategy("totp", env!("CARGO_PKG_VERSION"), "Authenticator app")
    }

    fn begin(request: Request) -> Result<BeginResult, Failure> {
        let user = user(&request)?;
        match request.param("purpose").unwrap_or("verify") {
            "enrol" => enrol_begin(&request, &user),
            "verify" => Ok(BeginResult::Form(vec![
                Field::new(
                    "code",
                    "Code from your authenticator app, or a recovery code",
                    "text",
                )
                .autocomplete("one-time-code"),
            ])),
            other => Err(Failure::BadRequest(format!("unknown purpose `{other}`"))),
        }
    }

    fn complete(request: Request) -> Result<Assertion, Failure> {
        let user = user(&request)?;
        match request.param("purpose").unwrap_or("verify") {
            "enrol" => enrol_complete(&request, &user),
            "verify" => verify(&request, &user),
            other => Err(Failure::BadRequest(format!("unknown purpose `{other}`"))),
        }
    }
}

gatehouse_pdk::plugin!(TotpPlugin);
