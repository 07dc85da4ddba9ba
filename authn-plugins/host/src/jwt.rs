//! The `jwt` capability: a signed token verified against a JWKS document, at native speed and
//! with a reviewed implementation, so that no plugin carries its own signature code.

use jsonwebtoken::jwk::{Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

const MAX_TOKEN: usize = 16 << 10;
const MAX_JWKS: usize = 256 << 10;

/// Verifies `token` against `jwks` and its issuer, audience and times; the claims as JSON.
pub(crate) fn verify(
    token: &str,
    jwks: &str,
    issuer: &str,
    audience: &str,
) -> Result<String, String> {
    if token.len() > MAX_TOKEN || jwks.len() > MAX_JWKS {
        return Err("the token or the key set is too large".into());
    }
    if issuer.is_empty() || audience.is_empty() {
        return Err("an issuer and an audience are required".into());
    }
    let header = jsonwebtoken::decode_header(token).map_err(|e| format!("not a JWT: {e}"))?;
    let alg = header.alg;
    if matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) {
        return Err(format!(
            "{alg:?} tokens are signed with a shared secret; only public-key signatures are accepted"
        ));
    }
    let set: serde_json::Value =
        serde_json::from_str(jwks).map_err(|e| format!("the key set is not JSON: {e}"))?;
    // Keys of kinds this host does not know are skipped, not fatal: a provider may publish
    // encryption keys or new algorithms beside the one that signed.
    let keys: Vec<Jwk> = set
        .get("keys")
        .and_then(serde_json::Value::as_array)
        .ok_or("the key set has no `keys`")?
        .iter()
        .filter_map(|k| serde_json::from_value::<Jwk>(k.clone()).ok())
        .filter(|k| !matches!(k.common.public_key_use, Some(PublicKeyUse::Encryption)))
        .filter(|k| {
            k.common
                .key_algorithm
                .is_none_or(|a| a == KeyAlgorithm::from(alg))
        })
        .collect();
    let candidates: Vec<&Jwk> = match &header.kid {
        Some(kid) => keys
            .iter()
            .filter(|k| k.common.key_id.as_deref() == Some(kid))
            .collect(),
        None => keys.iter().collect(),
    };
    if candidates.is_empty() {
        return Err(match header.kid {
            Some(kid) => format!("no key `{kid}` for {alg:?} in the key set"),
            None => format!("no key for {alg:?} in the key set"),
        });
    }
    let mut validation = Validation::new(alg);
    validation.leeway = 60;
    validation.set_issuer(&[issuer]);
    validation.set_audience(&[audience]);
    validation.set_required_spec_claims(&["exp", "iss", "aud"]);
    let mut last = String::from("no key verified the signature");
    for jwk in candidates {
        let key = match DecodingKey::from_jwk(jwk) {
            Ok(k) => k,
            Err(e) => {
                last = format!("a key of the set cannot be used: {e}");
                continue;
            }
        };
        match jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation) {
            Ok(data) => return Ok(data.claims.to_string()),
            Err(e) => last = format!("the token is not valid: {e}"),
        }
    }
    Err(last)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use ed25519_dalek::SigningKey;
    use ed25519_dalek::pkcs8::EncodePrivateKey;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    use super::*;

    fn key(seed: u8) -> (EncodingKey, serde_json::Value) {
        let sk = SigningKey::from_bytes(&[seed; 32]);
        let der = sk.to_pkcs8_der().unwrap();
        let jwk = json!({
            "kty": "OKP", "crv": "Ed25519", "kid": format!("k{seed}"), "use": "sig",
            "x": URL_SAFE_NO_PAD.encode(sk.verifying_key().as_bytes()),
        });
        (EncodingKey::from_ed_der(der.as_bytes()), jwk)
    }

    fn token(seed: u8, kid: Option<&str>, claims: serde_json::Value) -> String {
        let mut h = Header::new(Algorithm::EdDSA);
        h.kid = kid.map(String::from);
        jsonwebtoken::encode(&h, &claims, &key(seed).0).unwrap()
    }

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    #[test]
    fn a_token_is_verified_against_the_key_set() {
        let jwks = json!({ "keys": [
            { "kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB" },
            { "kty": "oct", "k": "c2VjcmV0" },
            key(2).1,
            key(1).1,
        ]})
        .to_string();
        let claims = json!({ "iss": "https://idp", "aud": "app", "sub": "u1", "exp": now() + 60, "nonce": "n" });
        let out = verify(
            &token(1, Some("k1"), claims.clone()),
            &jwks,
            "https://idp",
            "app",
        )
        .unwrap();
        let out: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(out["sub"], "u1");
        assert_eq!(out["nonce"], "n");
        // Without a kid, any key of the set that verifies will do.
        assert!(verify(&token(1, None, claims.clone()), &jwks, "https://idp", "app").is_ok());

        for (tok, iss, aud, needle) in [
            (
                token(1, Some("k1"), claims.clone()),
                "https://other",
                "app",
                "InvalidIssuer",
            ),
            (
                token(1, Some("k1"), claims.clone()),
                "https://idp",
                "other",
                "InvalidAudience",
            ),
            (
                token(3, Some("k1"), claims.clone()),
                "https://idp",
                "app",
                "InvalidSignature",
            ),
            (
                token(1, Some("k9"), claims.clone()),
                "https://idp",
                "app",
                "no key `k9`",
            ),
            (
                token(
                    1,
                    Some("k1"),
                    json!({ "iss": "https://idp", "aud": "app", "exp": now() - 3600 }),
                ),
                "https://idp",
                "app",
                "ExpiredSignature",
            ),
            (
                token(1, Some("k1"), json!({ "iss": "https://idp", "aud": "app" })),
                "https://idp",
                "app",
                "exp",
            ),
            ("not.a.jwt".into(), "https://idp", "app", "not a JWT"),
        ] {
            let e = verify(&tok, &jwks, iss, aud).unwrap_err();
            assert!(e.contains(needle), "{needle}: {e}");
        }
    }

    #[test]
    fn unsigned_and_shared_secret_tokens_are_refused() {
        let jwks = json!({ "keys": [key(1).1, { "kty": "oct", "kid": "s", "k": "c2VjcmV0" }] })
            .to_string();
        let claims = json!({ "iss": "i", "aud": "a", "exp": now() + 60 });
        let hs = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(b"secret").unwrap(),
        )
        .unwrap();
        assert!(
            verify(&hs, &jwks, "i", "a")
                .unwrap_err()
                .contains("shared secret")
        );
        // `alg: none`, with the signature of a real token or none.
        let real = token(1, Some("k1"), claims.clone());
        let parts: Vec<&str> = real.split('.').collect();
        let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","kid":"k1"}"#);
        for forged in [
            format!("{none_header}.{}.", parts[1]),
            format!("{none_header}.{}.{}", parts[1], parts[2]),
        ] {
            assert!(verify(&forged, &jwks, "i", "a").is_err(), "{forged}");
        }
        assert!(
            verify(&real, "{}", "i", "a")
                .unwrap_err()
                .contains("no `keys`")
        );
        assert!(
            verify(&real, "nope", "i", "a")
                .unwrap_err()
                .contains("not JSON")
        );
        assert!(verify(&real, &jwks, "", "a").is_err());
    }
}
