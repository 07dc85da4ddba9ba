//! The `webauthn` capability: WebAuthn ceremonies (webauthn-rs) for the platform's relying
//! party. The host keeps nothing between calls: a ceremony's state goes to the plugin (which
//! keeps it in its key-value space, single use), and so do the passkeys (which it keeps in the
//! user's credential records, encrypted by the host).
//!
//! The relying party is the platform's, never the plugin's: its id is the host of the issuer
//! URL, and the only origin accepted is the issuer's. A loopback issuer (`http://127.0.0.1:…`)
//! is served as `localhost` on the same port, since an IP address cannot be a relying party.

use serde::{Deserialize, Serialize};
use webauthn_rs::prelude::{
    CreationChallengeResponse, DiscoverableAuthentication, DiscoverableKey, Passkey,
    PasskeyAuthentication, PasskeyRegistration, PublicKeyCredential, RegisterPublicKeyCredential,
    RequestChallengeResponse, Url, Uuid, Webauthn, WebauthnBuilder,
};

/// The most passkeys a user may have (and a call may carry).
pub(crate) const MAX_PASSKEYS: usize = 16;
/// The largest JSON document a call takes (a response, a state, a passkey).
const MAX_JSON: usize = 64 << 10;

/// The platform's relying party.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelyingParty {
    /// The relying party id: a registrable domain (`login.example.com`, `localhost`).
    pub id: String,
    /// The origin of the login pages (`https://login.example.com`).
    pub origin: String,
    /// The name an authenticator shows.
    pub name: String,
}

impl RelyingParty {
    /// The relying party of the issuer URL `issuer`; `None` when its host is not a domain name
    /// (an IP address other than loopback).
    pub fn for_issuer(issuer: &str, name: &str) -> Option<RelyingParty> {
        let url = Url::parse(issuer).ok()?;
        let host = url.host_str()?;
        let loopback = matches!(host, "127.0.0.1" | "[::1]" | "::1");
        let id = if loopback {
            "localhost".to_string()
        } else {
            url.domain()?.to_string()
        };
        let origin = match url.port() {
            Some(p) => format!("{}://{id}:{p}", url.scheme()),
            None => format!("{}://{id}", url.scheme()),
        };
        Some(RelyingParty {
            id,
            origin,
            name: name.to_string(),
        })
    }

    fn webauthn(&self) -> Result<Webauthn, String> {
        let origin = Url::parse(&self.origin).map_err(|e| format!("bad origin: {e}"))?;
        WebauthnBuilder::new(&self.id, &origin)
            .and_then(|b| b.rp_name(&self.name).build())
            .map_err(|e| format!("the relying party cannot be set up: {e}"))
    }
}

/// A ceremony's state as the plugin holds it: which ceremony, and webauthn-rs's state.
#[derive(Serialize, Deserialize)]
#[serde(tag = "ceremony", content = "state", rename_all = "kebab-case")]
enum State {
    Registration(PasskeyRegistration),
    Authentication(PasskeyAuthentication),
    Discoverable(DiscoverableAuthentication),
}

/// What starting a ceremony gives the plugin.
pub(crate) struct Started {
    pub options: String,
    pub state: String,
}

/// A passed authentication.
pub(crate) struct Authenticated {
    pub user_id: Option<String>,
    pub credential_id: String,
    pub user_verified: bool,
    pub passkeys: Vec<String>,
}

fn json_in<T: for<'de> Deserialize<'de>>(what: &str, s: &str) -> Result<T, String> {
    if s.len() > MAX_JSON {
        return Err(format!("the {what} is too large"));
    }
    serde_json::from_str(s).map_err(|e| format!("the {what} does not parse: {e}"))
}

fn json_out<T: Serialize>(v: &T) -> Result<String, String> {
    serde_json::to_string(v).map_err(|e| format!("cannot encode: {e}"))
}

fn passkeys_in(passkeys: &[String]) -> Result<Vec<Passkey>, String> {
    if passkeys.len() > MAX_PASSKEYS {
        return Err(format!("at most {MAX_PASSKEYS} passkeys"));
    }
    passkeys.iter().map(|p| json_in("passkey", p)).collect()
}

/// The user handle of a Gatehouse user id (a ULID, 128 bits, as is a handle).
fn handle_of(user_id: &str) -> Result<Uuid, String> {
    ulid::Ulid::from_string(user_id)
        .map(|u| Uuid::from_bytes(u.to_bytes()))
        .map_err(|_| "a passkey's user must be a Gatehouse user id".to_string())
}

fn user_of(handle: Uuid) -> String {
    ulid::Ulid::from_bytes(handle.into_bytes())
        .to_string()
        .to_lowercase()
}

fn credential_id(p: &Passkey) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(p.cred_id().as_ref())
}

/// Starts registering a discoverable passkey for `user_id`, which has `passkeys` already.
pub(crate) fn start_registration(
    rp: &RelyingParty,
    user_id: &str,
    user_name: &str,
    display_name: &str,
    passkeys: &[String],
) -> Result<Started, String> {
    let w = rp.webauthn()?;
    let have = passkeys_in(passkeys)?;
    if have.len() >= MAX_PASSKEYS {
        return Err(format!("a user may have at most {MAX_PASSKEYS} passkeys"));
    }
    if user_name.is_empty() || user_name.len() > 256 || display_name.len() > 256 {
        return Err("a user name must be 1 to 256 bytes".into());
    }
    let exclude = have.iter().map(|p| p.cred_id().clone()).collect::<Vec<_>>();
    let display = if display_name.is_empty() {
        user_name
    } else {
        display_name
    };
    let (mut options, state): (CreationChallengeResponse, PasskeyRegistration) = w
        .start_passkey_registration(handle_of(user_id)?, user_name, display, Some(exclude))
        .map_err(|e| format!("cannot start: {e}"))?;
    // A passkey signs in without a name: ask for a discoverable credential.
    if let Some(sel) = options.public_key.authenticator_selection.as_mut() {
        sel.resident_key = Some(webauthn_rs_proto::ResidentKeyRequirement::Required);
        sel.require_resident_key = true;
    }
    Ok(Started {
        options: json_out(&options)?,
        state: json_out(&State::Registration(state))?,
    })
}

/// Finishes a registration: the new passkey (JSON) and its credential id.
pub(crate) fn finish_registration(
    rp: &RelyingParty,
    state: &str,
    response: &str,
) -> Result<(String, String), String> {
    let w = rp.webauthn()?;
    let State::Registration(state) = json_in("state", state)? else {
        return Err("the state is not a registration's".into());
    };
    let response: RegisterPublicKeyCredential = json_in("response", response)?;
    let passkey = w
        .finish_passkey_registration(&response, &state)
        .map_err(|e| format!("the passkey was not registered: {e}"))?;
    Ok((json_out(&passkey)?, credential_id(&passkey)))
}

/// Starts an authentication with one of `passkeys` (a known user's), or with any
/// discoverable passkey of this relying party when there are none.
pub(crate) fn start_authentication(
    rp: &RelyingParty,
    passkeys: &[String],
) -> Result<Started, String> {
    let w = rp.webauthn()?;
    let have = passkeys_in(passkeys)?;
    let (options, state): (RequestChallengeResponse, State) = if have.is_empty() {
        let (mut o, s) = w
            .start_discoverable_authentication()
            .map_err(|e| format!("cannot start: {e}"))?;
        // A button, not the browser's autofill.
        o.mediation = None;
        (o, State::Discoverable(s))
    } else {
        let (o, s) = w
            .start_passkey_authentication(&have)
            .map_err(|e| format!("cannot start: {e}"))?;
        (o, State::Authentication(s))
    };
    Ok(Started {
        options: json_out(&options)?,
        state: json_out(&state)?,
    })
}

/// The user a discoverable credential names, by its user handle.
pub(crate) fn identify(rp: &RelyingParty, response: &str) -> Result<String, String> {
    let w = rp.webauthn()?;
    let response: PublicKeyCredential = json_in("response", response)?;
    let (handle, _) = w
        .identify_discoverable_authentication(&response)
        .map_err(|e| format!("the credential names no user: {e}"))?;
    Ok(user_of(handle))
}

/// Checks an authentication against its state and the user's `passkeys`; the passkeys come
/// back with the one used brought up to date (its signature counter).
pub(crate) fn finish_authentication(
    rp: &RelyingParty,
    state: &str,
    response: &str,
    passkeys: &[String],
) -> Result<Authenticated, String> {
    let w = rp.webauthn()?;
    let mut have = passkeys_in(passkeys)?;
    let response: PublicKeyCredential = json_in("response", response)?;
    let (result, user_id) = match json_in("state", state)? {
        State::Authentication(s) => (w.finish_passkey_authentication(&response, &s), None),
        State::Discoverable(s) => {
            let (handle, _) = w
                .identify_discoverable_authentication(&response)
                .map_err(|e| format!("the credential names no user: {e}"))?;
            let keys: Vec<DiscoverableKey> = have.iter().map(DiscoverableKey::from).collect();
            (
                w.finish_discoverable_authentication(&response, s, &keys),
                Some(user_of(handle)),
            )
        }
        State::Registration(_) => return Err("the state is a registration's".into()),
    };
    let result = result.map_err(|e| format!("the passkey was not accepted: {e}"))?;
    let mut used = None;
    for p in &mut have {
        if p.update_credential(&result).is_some() {
            used = Some(credential_id(p));
        }
    }
    let Some(credential_id) = used else {
        return Err("the passkey used is not one of the user's".into());
    };
    Ok(Authenticated {
        user_id,
        credential_id,
        user_verified: result.user_verified(),
        passkeys: have.iter().map(json_out).collect::<Result<_, _>>()?,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use serde_json::{Value, json};
    use webauthn_authenticator_rs::WebauthnAuthenticator;
    use webauthn_authenticator_rs::softpasskey::SoftPasskey;

    use super::*;

    const USER: &str = "01kbx3m2d4q8r6t9v0w1y2z3a4";

    fn rp() -> RelyingParty {
        RelyingParty::for_issuer("http://127.0.0.1:8080", "Gatehouse").unwrap()
    }

    fn origin() -> Url {
        Url::parse("http://localhost:8080").unwrap()
    }

    /// Registers a passkey of `USER` with a software authenticator; its JSON and the
    /// authenticator.
    fn registered() -> (String, WebauthnAuthenticator<SoftPasskey>, Value) {
        let started = start_registration(&rp(), USER, "ada@example.com", "Ada", &[]).unwrap();
        let mut options: Value = serde_json::from_str(&started.options).unwrap();
        let sel = &options["publicKey"]["authenticatorSelection"];
        assert_eq!(sel["residentKey"], "required", "{options}");
        assert_eq!(sel["requireResidentKey"], true);
        // SoftPasskey keeps no discoverable credentials; it is asked for an ordinary one.
        options["publicKey"]["authenticatorSelection"]["requireResidentKey"] = json!(false);
        let handle = options["publicKey"]["user"]["id"].clone();
        let mut wa = WebauthnAuthenticator::new(SoftPasskey::new(true));
        let reg = wa
            .do_registration(origin(), serde_json::from_value(options).unwrap())
            .unwrap();
        let (passkey, id) =
            finish_registration(&rp(), &started.state, &serde_json::to_string(&reg).unwrap())
                .unwrap();
        assert_eq!(json!(id), serde_json::to_value(&reg).unwrap()["rawId"]);
        (passkey, wa, handle)
    }

    #[test]
    fn the_relying_party_is_the_issuers_host() {
        assert_eq!(
            RelyingParty::for_issuer("https://login.example.com", "G"),
            Some(RelyingParty {
                id: "login.example.com".into(),
                origin: "https://login.example.com".into(),
                name: "G".into(),
            })
        );
        assert_eq!(rp().id, "localhost");
        assert_eq!(rp().origin, "http://localhost:8080");
        assert_eq!(RelyingParty::for_issuer("https://10.1.2.3", "G"), None);
        assert_eq!(RelyingParty::for_issuer("not a url", "G"), None);
    }

    #[test]
    fn a_known_users_passkey_signs_in_and_its_counter_is_kept() {
        let (passkey, mut wa, _) = registered();
        let started = start_authentication(&rp(), std::slice::from_ref(&passkey)).unwrap();
        let options: Value = serde_json::from_str(&started.options).unwrap();
        let answer = wa
            .do_authentication(origin(), serde_json::from_value(options.clone()).unwrap())
            .unwrap();
        let answer = serde_json::to_string(&answer).unwrap();
        let done = finish_authentication(
            &rp(),
            &started.state,
            &answer,
            std::slice::from_ref(&passkey),
        )
        .unwrap();
        assert!(done.user_verified && done.user_id.is_none());
        let kept = done.passkeys[0].clone();
        let counter =
            |p: &str| serde_json::from_str::<Value>(p).unwrap()["cred"]["counter"].clone();
        assert_eq!(counter(&passkey), json!(0));
        assert!(counter(&kept).as_u64().unwrap() > 0, "{kept}");
        // (A replay of the same ceremony is stopped by its state being used once: the plugin
        // takes it from its key-value space.)
        // An answer to another ceremony's challenge.
        let other = start_authentication(&rp(), std::slice::from_ref(&kept)).unwrap();
        let e = finish_authentication(&rp(), &other.state, &answer, std::slice::from_ref(&kept))
            .err()
            .unwrap();
        assert!(e.contains("not accepted"), "{e}");
    }

    #[test]
    fn a_discoverable_passkey_names_its_user() {
        let (passkey, mut wa, handle) = registered();
        let started = start_authentication(&rp(), &[]).unwrap();
        let mut options: Value = serde_json::from_str(&started.options).unwrap();
        assert_eq!(options["publicKey"]["allowCredentials"], json!([]));
        assert!(options.get("mediation").is_none_or(Value::is_null));
        // The part of a passkey SoftPasskey does not play: finding its credential alone, and
        // answering with its user handle.
        let id = serde_json::from_str::<Value>(&passkey).unwrap()["cred"]["cred_id"].clone();
        options["publicKey"]["allowCredentials"] = json!([{ "type": "public-key", "id": id }]);
        let answer = wa
            .do_authentication(origin(), serde_json::from_value(options).unwrap())
            .unwrap();
        let mut answer = serde_json::to_value(&answer).unwrap();
        answer["response"]["userHandle"] = handle;
        let answer = answer.to_string();
        assert_eq!(identify(&rp(), &answer).unwrap(), USER);
        let done = finish_authentication(&rp(), &started.state, &answer, &[passkey]).unwrap();
        assert_eq!(done.user_id.as_deref(), Some(USER));
        // Without the user's passkeys, nothing is accepted.
        let e = finish_authentication(&rp(), &started.state, &answer, &[])
            .err()
            .unwrap();
        assert!(e.contains("not"), "{e}");
    }

    #[test]
    fn bad_input_is_refused() {
        let (passkey, _, _) = registered();
        let reg = start_registration(&rp(), USER, "ada", "", &[]).unwrap();
        let auth = start_authentication(&rp(), std::slice::from_ref(&passkey)).unwrap();
        // A registration's state where an authentication's goes, and the other way round.
        assert!(finish_authentication(&rp(), &reg.state, "{}", &[]).is_err());
        assert!(finish_registration(&rp(), &auth.state, "{}").is_err());
        assert!(finish_registration(&rp(), &reg.state, "not json").is_err());
        assert!(start_registration(&rp(), "not-a-user-id", "ada", "", &[]).is_err());
        assert!(start_registration(&rp(), USER, "", "", &[]).is_err());
        assert!(start_authentication(&rp(), &["{}".to_string()]).is_err());
        let many = vec![passkey; MAX_PASSKEYS + 1];
        assert!(start_authentication(&rp(), &many).is_err());
        assert!(identify(&rp(), &"x".repeat(MAX_JSON + 1)).is_err());
    }
}
