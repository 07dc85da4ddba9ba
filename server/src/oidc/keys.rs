//! Token signing keys: generated per algorithm (RS256 by default, ES256 or EdDSA selectable),
//! sealed at rest under the master key, rotated on a schedule and published as a JWKS.
//!
//! Rotation: a key signs for `lifetime`. Its successor is created `publish_ahead` before that
//! ends and is in the JWKS from then on, so relying parties that cache the JWKS know it before
//! it signs anything. A key stays published for `retain_after` once it stops signing, so that
//! tokens it signed still verify until they expire; then it is removed. Successive keys of an
//! algorithm have consecutive generations, unique in the database, so that nodes rotating at
//! the same moment agree on one key.

use std::sync::{Arc, RwLock};

use anyhow::{Context, Result, anyhow, bail};
use chrono::{DateTime, Duration, Utc};
use jsonwebtoken::jwk::{Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use zeroize::Zeroizing;

use crate::db::SqlStore;
use crate::db::keys::StoredKey;
use crate::secrets::MasterKey;

/// When keys rotate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RotationPolicy {
    /// How long one key signs.
    pub lifetime: Duration,
    /// How long before it signs a key is published.
    pub publish_ahead: Duration,
    /// How long after it stops signing a key stays published (the longest lifetime of what it
    /// signs).
    pub retain_after: Duration,
}

impl Default for RotationPolicy {
    fn default() -> Self {
        Self {
            lifetime: Duration::days(30),
            publish_ahead: Duration::days(1),
            retain_after: Duration::days(1),
        }
    }
}

/// The algorithms Gatehouse signs with.
pub fn parse_alg(name: &str) -> Result<Algorithm> {
    match name {
        "RS256" => Ok(Algorithm::RS256),
        "ES256" => Ok(Algorithm::ES256),
        "EdDSA" => Ok(Algorithm::EdDSA),
        other => bail!("signing algorithm `{other}` is not supported (RS256, ES256 or EdDSA)"),
    }
}

fn alg_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::ES256 => "ES256",
        Algorithm::EdDSA => "EdDSA",
        _ => "RS256",
    }
}

/// A fresh private key for `alg`, in the DER form jsonwebtoken reads (PKCS#1 for RSA, PKCS#8
/// otherwise).
fn generate_der(alg: Algorithm) -> Result<Zeroizing<Vec<u8>>> {
    match alg {
        Algorithm::RS256 => {
            use rsa::pkcs1::EncodeRsaPrivateKey;
            let key = rsa::PrivateKey::new(&mut getrandom::SysRng, 2048)
                .map_err(|e| anyhow!("cannot generate an RSA key: {e}"))?;
            let der = key
                .to_pkcs1_der()
                .map_err(|e| anyhow!("cannot encode an RSA key: {e}"))?;
            Ok(Zeroizing::new(der.as_bytes().to_vec()))
        }
        Algorithm::ES256 => {
            use p256::pkcs8::EncodePrivateKey;
            // A random scalar; the rare value outside the curve's order is drawn again.
            loop {
                let mut bytes = Zeroizing::new([0u8; 32]);
                getrandom::fill(&mut bytes[..]).map_err(|e| anyhow!("no randomness: {e}"))?;
                if let Ok(key) = p256::ecdsa::SigningKey::from_slice(&bytes[..]) {
                    let der = key
                        .to_pkcs8_der()
                        .map_err(|e| anyhow!("cannot encode an EC key: {e}"))?;
                    return Ok(Zeroizing::new(der.as_bytes().to_vec()));
                }
            }
        }
        Algorithm::EdDSA => {
            use ed25519_dalek::pkcs8::{EncodePrivateKey, KeypairBytes};
            let mut seed = [0u8; 32];
            getrandom::fill(&mut seed).map_err(|e| anyhow!("no randomness: {e}"))?;
            // PKCS#8 v1 (no public key): the form jsonwebtoken derives the JWK from.
            let pair = KeypairBytes {
                secret_key: seed,
                public_key: None,
            };
            let der = pair
                .to_pkcs8_der()
                .map_err(|e| anyhow!("cannot encode an Ed25519 key: {e}"))?;
            seed.fill(0);
            Ok(Zeroizing::new(der.as_bytes().to_vec()))
        }
        other => bail!("cannot generate keys for {other:?}"),
    }
}

/// A fresh signing key for `alg`, unsealed and unpublished: what benchmarks of the raw
/// signing rate use.
pub fn throwaway_signing_key(alg: Algorithm) -> Result<SigningKey> {
    SigningKey::from_der(alg, &generate_der(alg)?)
}

/// A private key, parsed once, that signs JWTs.
///
/// RS256 and ES256 sign through OpenSSL, which the binary links already (for TLS to mail
/// servers): its RSA signs about five times as fast as the pure-Rust `rsa` crate on the same
/// core, and its P-256 several times as fast as `p256`. EdDSA signs through jsonwebtoken's
/// backend (ed25519-dalek), which is as fast. Verification stays with jsonwebtoken: a verified
/// token is remembered, so it is not on any hot path.
pub struct SigningKey {
    alg: Algorithm,
    inner: SigningInner,
}

enum SigningInner {
    OpenSsl(openssl::pkey::PKey<openssl::pkey::Private>),
    Jwt(EncodingKey),
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// The key of `alg` from its DER form ([`generate_der`]'s: PKCS#1 for RSA, PKCS#8
    /// otherwise).
    fn from_der(alg: Algorithm, der: &[u8]) -> Result<Self> {
        use openssl::pkey::PKey;
        let inner = match alg {
            Algorithm::RS256 => {
                let rsa = openssl::rsa::Rsa::private_key_from_der(der)
                    .map_err(|e| anyhow!("cannot read an RSA key: {e}"))?;
                SigningInner::OpenSsl(
                    PKey::from_rsa(rsa).map_err(|e| anyhow!("cannot read an RSA key: {e}"))?,
                )
            }
            Algorithm::ES256 => SigningInner::OpenSsl(
                PKey::private_key_from_pkcs8(der)
                    .map_err(|e| anyhow!("cannot read an EC key: {e}"))?,
            ),
            Algorithm::EdDSA => SigningInner::Jwt(EncodingKey::from_ed_der(der)),
            other => bail!("cannot sign with {other:?}"),
        };
        Ok(Self { alg, inner })
    }

    /// `claims` as a compact JWS under `header` (whose `alg` must be this key's).
    pub fn sign<T: serde::Serialize>(&self, header: &Header, claims: &T) -> Result<String> {
        use base64::Engine as _;
        use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
        if header.alg != self.alg {
            bail!("a {:?} key cannot sign a {:?} header", self.alg, header.alg);
        }
        let pkey = match &self.inner {
            SigningInner::Jwt(key) => {
                return jsonwebtoken::encode(header, claims, key).context("cannot sign a token");
            }
            SigningInner::OpenSsl(pkey) => pkey,
        };
        let mut jws = B64.encode(serde_json::to_vec(header)?);
        jws.push('.');
        B64.encode_string(serde_json::to_vec(claims)?, &mut jws);
        let signature = openssl_sign(self.alg, pkey, jws.as_bytes())
            .map_err(|e| anyhow!("cannot sign a token: {e}"))?;
        jws.push('.');
        B64.encode_string(signature, &mut jws);
        Ok(jws)
    }
}

/// RSASSA-PKCS1-v1_5 with SHA-256 (RS256), or ECDSA P-256 with SHA-256 as the 64 bytes `r ‖ s`
/// that JWS uses instead of DER (ES256, RFC 7518 §3.4).
fn openssl_sign(
    alg: Algorithm,
    pkey: &openssl::pkey::PKey<openssl::pkey::Private>,
    message: &[u8],
) -> std::result::Result<Vec<u8>, openssl::error::ErrorStack> {
    let mut signer = openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), pkey)?;
    signer.update(message)?;
    let signature = signer.sign_to_vec()?;
    if alg != Algorithm::ES256 {
        return Ok(signature);
    }
    let sig = openssl::ecdsa::EcdsaSig::from_der(&signature)?;
    let mut raw = sig.r().to_vec_padded(32)?;
    raw.extend(sig.s().to_vec_padded(32)?);
    Ok(raw)
}

fn encoding_key(alg: Algorithm, der: &[u8]) -> EncodingKey {
    match alg {
        Algorithm::ES256 => EncodingKey::from_ec_der(der),
        Algorithm::EdDSA => EncodingKey::from_ed_der(der),
        _ => EncodingKey::from_rsa_der(der),
    }
}

/// What a sealed private key is bound to.
fn purpose(kid: &str) -> String {
    format!("signing-key:{kid}")
}

/// A published key, and for keys that sign now or later, its private half.
struct LoadedKey {
    kid: String,
    alg: Algorithm,
    signs_from: DateTime<Utc>,
    signs_until: DateTime<Utc>,
    jwk: serde_json::Value,
    signing: Option<SigningKey>,
    decoding: jsonwebtoken::DecodingKey,
}

#[derive(Default)]
struct Loaded {
    keys: Vec<LoadedKey>,
    jwks: Arc<serde_json::Value>,
}

/// The signing keys of this server, as stored in the database.
pub struct KeyRing {
    store: Arc<SqlStore>,
    master: Arc<MasterKey>,
    alg: Algorithm,
    policy: RotationPolicy,
    loaded: RwLock<Arc<Loaded>>,
    /// Tokens whose signature and issuer were verified, by the SHA-256 of the whole token:
    /// a resource server introspects the same token on every request it serves, and an RSA
    /// verification costs tens of microseconds. A hit still needs its key published and its
    /// expiry checked.
    verified: moka::sync::Cache<[u8; 32], Arc<Verified>>,
}

/// A token whose signature and issuer were verified.
#[derive(Debug)]
struct Verified {
    claims: serde_json::Value,
    kid: String,
    issuer: String,
}

/// Tokens a node remembers as verified, and for how long at most.
const VERIFIED_CAPACITY: u64 = 20_000;
const VERIFIED_FOR: std::time::Duration = std::time::Duration::from_secs(300);
/// Clock skew allowed on `exp`, as jsonwebtoken's default validation allows.
const EXP_LEEWAY_SECS: i64 = 60;

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("alg", &self.alg)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl KeyRing {
    /// A key ring that signs with `alg`; call [`KeyRing::rotate`] before use.
    pub fn new(
        store: Arc<SqlStore>,
        master: Arc<MasterKey>,
        alg: Algorithm,
        policy: RotationPolicy,
    ) -> Self {
        Self {
            store,
            master,
            alg,
            policy,
            loaded: RwLock::new(Arc::new(Loaded::default())),
            verified: moka::sync::Cache::builder()
                .max_capacity(VERIFIED_CAPACITY)
                .time_to_live(VERIFIED_FOR)
                .build(),
        }
    }

    /// Creates the keys the schedule calls for at `now` (a first key, or the successor due to
    /// be published), removes those past publication, and reloads.
    pub async fn rotate(&self, now: DateTime<Utc>) -> Result<()> {
        let name = alg_name(self.alg);
        let keys = self.store.published_keys(now).await?;
        let mine: Vec<&StoredKey> = keys.iter().filter(|k| k.alg == name).collect();
        let current = mine
            .iter()
            .filter(|k| k.signs_from <= now && now < k.signs_until)
            .max_by_key(|k| k.generation);
        let latest = mine.iter().max_by_key(|k| k.generation);
        let next = match (current, latest) {
            // Nothing signs now (first start, or every key lapsed): a key that signs at once.
            (None, _) => {
                let last = self.store.last_key_generation(name).await?;
                Some((last.map_or(0, |g| g + 1), now))
            }
            // The successor is due to be published and is not there yet. Its generation
            // follows the current key's, so nodes rotating at once collide on it.
            (Some(c), Some(l))
                if l.generation == c.generation
                    && c.signs_until - self.policy.publish_ahead <= now =>
            {
                Some((c.generation + 1, c.signs_until))
            }
            _ => None,
        };
        if let Some((generation, from)) = next {
            let key = self.create(generation, now, from)?;
            if self.store.insert_key(&key).await? {
                tracing::info!(kid = %key.kid, alg = name, signs_from = %key.signs_from, "created a signing key");
            }
        }
        self.store.remove_expired_keys(now).await?;
        self.reload(now).await
    }

    fn create(
        &self,
        generation: i64,
        now: DateTime<Utc>,
        from: DateTime<Utc>,
    ) -> Result<StoredKey> {
        let der = generate_der(self.alg)?;
        let kid = ulid::Ulid::new().to_string().to_lowercase();
        let mut jwk = Jwk::from_encoding_key(&encoding_key(self.alg, &der), self.alg)
            .context("cannot derive the public key")?;
        jwk.common.key_id = Some(kid.clone());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        let until = from + self.policy.lifetime;
        Ok(StoredKey {
            sealed_private_key: self.master.seal(&purpose(&kid), &der)?,
            public_jwk: serde_json::to_string(&jwk)?,
            kid,
            alg: alg_name(self.alg).into(),
            generation,
            created_at: now,
            signs_from: from,
            signs_until: until,
            published_until: until + self.policy.retain_after,
        })
    }

    /// Reads the published keys and opens the private halves of those that sign at `now` or
    /// later.
    pub async fn reload(&self, now: DateTime<Utc>) -> Result<()> {
        let mut keys = Vec::new();
        let mut published = Vec::new();
        for k in self.store.published_keys(now).await? {
            let alg = parse_alg(&k.alg)?;
            let jwk: serde_json::Value = serde_json::from_str(&k.public_jwk)
                .with_context(|| format!("stored public key `{}` does not parse", k.kid))?;
            let signing = if k.signs_until > now {
                let der = self
                    .master
                    .open(&purpose(&k.kid), &k.sealed_private_key)
                    .map_err(|e| anyhow!("signing key `{}`: {e}", k.kid))?;
                Some(
                    SigningKey::from_der(alg, &der)
                        .with_context(|| format!("signing key `{}`", k.kid))?,
                )
            } else {
                None
            };
            let parsed: Jwk = serde_json::from_value(jwk.clone())
                .with_context(|| format!("stored public key `{}` is not a JWK", k.kid))?;
            let decoding = jsonwebtoken::DecodingKey::from_jwk(&parsed)
                .with_context(|| format!("stored public key `{}` is not usable", k.kid))?;
            published.push(jwk.clone());
            keys.push(LoadedKey {
                decoding,
                kid: k.kid,
                alg,
                signs_from: k.signs_from,
                signs_until: k.signs_until,
                jwk,
                signing,
            });
        }
        let jwks = Arc::new(serde_json::json!({ "keys": published }));
        let mut guard = self
            .loaded
            .write()
            .map_err(|_| anyhow!("key ring lock poisoned"))?;
        *guard = Arc::new(Loaded { keys, jwks });
        Ok(())
    }

    fn snapshot(&self) -> Result<Arc<Loaded>> {
        self.loaded
            .read()
            .map(|g| g.clone())
            .map_err(|_| anyhow!("key ring lock poisoned"))
    }

    /// The database the keys live in.
    pub fn store(&self) -> &SqlStore {
        &self.store
    }

    /// The name of the algorithm new tokens are signed with.
    pub fn algorithm_name(&self) -> &'static str {
        alg_name(self.alg)
    }

    /// The published public keys, as a JWKS document.
    pub fn jwks(&self) -> Result<Arc<serde_json::Value>> {
        Ok(self.snapshot()?.jwks.clone())
    }

    /// The key that signs at `now`: the newest of the configured algorithm in its period.
    fn signer<'a>(
        &self,
        loaded: &'a Loaded,
        now: DateTime<Utc>,
    ) -> Option<(&'a LoadedKey, &'a SigningKey)> {
        loaded
            .keys
            .iter()
            .filter(|k| k.alg == self.alg && k.signs_from <= now && now < k.signs_until)
            .filter_map(|k| k.signing.as_ref().map(|e| (k, e)))
            .max_by_key(|(k, _)| k.signs_from)
    }

    /// The kid of the key that signs at `now`.
    pub fn signing_kid(&self, now: DateTime<Utc>) -> Result<Option<String>> {
        let loaded = self.snapshot()?;
        Ok(self.signer(&loaded, now).map(|(k, _)| k.kid.clone()))
    }

    /// Signs `claims` as a JWT with the key that signs at `now`; `typ` is the header's type
    /// (`JWT`, or `at+jwt` for access tokens).
    pub fn sign<T: serde::Serialize>(
        &self,
        claims: &T,
        typ: &str,
        now: DateTime<Utc>,
    ) -> Result<String> {
        let loaded = self.snapshot()?;
        let key = self
            .signer(&loaded, now)
            .ok_or_else(|| anyhow!("no signing key is active; the key ring was not rotated"))?;
        let mut header = Header::new(self.alg);
        header.kid = Some(key.0.kid.clone());
        header.typ = Some(typ.into());
        key.1.sign(&header, claims)
    }

    /// The claims of a token this server signed with a published key, if its signature,
    /// issuer and expiry check out (with a minute of leeway); `None` for any other token.
    pub fn verify(&self, token: &str, issuer: &str) -> Option<serde_json::Value> {
        self.verify_with(token, issuer, true)
    }

    /// Like [`Self::verify`], but an expired token passes (an `id_token_hint` at logout).
    pub fn verify_ignoring_expiry(&self, token: &str, issuer: &str) -> Option<serde_json::Value> {
        self.verify_with(token, issuer, false)
    }

    fn verify_with(&self, token: &str, issuer: &str, check_exp: bool) -> Option<serde_json::Value> {
        use sha2::Digest as _;
        let digest: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        let loaded = self.snapshot().ok()?;
        let live = |v: &Verified| {
            v.issuer == issuer
                && loaded.keys.iter().any(|k| k.kid == v.kid)
                && (!check_exp
                    || v.claims["exp"]
                        .as_i64()
                        .is_some_and(|exp| exp >= Utc::now().timestamp() - EXP_LEEWAY_SECS))
        };
        if let Some(v) = self.verified.get(&digest) {
            return live(&v).then(|| v.claims.clone());
        }
        let header = jsonwebtoken::decode_header(token).ok()?;
        let kid = header.kid?;
        let key = loaded.keys.iter().find(|k| k.kid == kid)?;
        if header.alg != key.alg {
            return None;
        }
        // The signature and the issuer; the expiry is checked on every use, below.
        let mut v = jsonwebtoken::Validation::new(key.alg);
        v.set_issuer(&[issuer]);
        v.validate_aud = false;
        v.validate_exp = false;
        v.required_spec_claims.remove("exp");
        let claims = jsonwebtoken::decode::<serde_json::Value>(token, &key.decoding, &v)
            .ok()?
            .claims;
        let verified = Arc::new(Verified {
            claims,
            kid,
            issuer: issuer.to_string(),
        });
        self.verified.insert(digest, verified.clone());
        live(&verified).then(|| verified.claims.clone())
    }

    /// The published JWK of `kid`, if it is published.
    pub fn public_jwk(&self, kid: &str) -> Result<Option<serde_json::Value>> {
        Ok(self
            .snapshot()?
            .keys
            .iter()
            .find(|k| k.kid == kid)
            .map(|k| k.jwk.clone()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use jsonwebtoken::{DecodingKey, Validation};

    use super::*;
    use crate::db::tests::{with_pg, with_sqlite};

    #[derive(Debug, serde::Serialize, serde::Deserialize, PartialEq)]
    struct Claims {
        sub: String,
        exp: i64,
    }

    /// Verifies `token` against the ring's JWKS as a relying party would; returns the kid.
    fn verify(ring: &KeyRing, token: &str, alg: Algorithm) -> String {
        let header = jsonwebtoken::decode_header(token).unwrap();
        assert_eq!(header.alg, alg);
        let kid = header.kid.unwrap();
        let jwks: jsonwebtoken::jwk::JwkSet =
            serde_json::from_value((*ring.jwks().unwrap()).clone()).unwrap();
        let jwk = jwks
            .find(&kid)
            .unwrap_or_else(|| panic!("{kid} is not published"));
        let mut v = Validation::new(alg);
        v.validate_aud = false;
        let data = jsonwebtoken::decode::<Claims>(token, &DecodingKey::from_jwk(jwk).unwrap(), &v)
            .unwrap();
        assert_eq!(data.claims.sub, "anne");
        kid
    }

    fn kids(ring: &KeyRing) -> Vec<String> {
        ring.jwks().unwrap()["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_string())
            .collect()
    }

    async fn rotates_and_publishes(url: String, alg: Algorithm) {
        let store = Arc::new(SqlStore::connect(&url).await.unwrap());
        let master = Arc::new(MasterKey::generate().unwrap().0);
        let policy = RotationPolicy::default();
        let ring = KeyRing::new(store.clone(), master.clone(), alg, policy);
        let t0 = Utc::now();
        let claims = Claims {
            sub: "anne".into(),
            exp: (t0 + Duration::days(365)).timestamp(),
        };
        ring.rotate(t0).await.unwrap();
        let k1 = ring.signing_kid(t0).unwrap().unwrap();
        assert_eq!(kids(&ring), vec![k1.clone()]);
        let jwk = ring.public_jwk(&k1).unwrap().unwrap();
        assert_eq!(jwk["use"], "sig");
        assert_eq!(jwk["alg"], alg_name(alg));
        let early = ring.sign(&claims, "JWT", t0).unwrap();
        assert_eq!(verify(&ring, &early, alg), k1);

        // At rest the private key is sealed: it opens only under this master key, for this
        // key's purpose, and it is the key of the published JWK.
        let stored = store.published_keys(t0).await.unwrap();
        assert_eq!(stored.len(), 1);
        let sealed = &stored[0].sealed_private_key;
        assert!(sealed.starts_with("v1."), "{sealed}");
        let other = MasterKey::generate().unwrap().0;
        assert!(other.open(&purpose(&k1), sealed).is_err());
        assert!(master.open("signing-key:other", sealed).is_err());
        let der = master.open(&purpose(&k1), sealed).unwrap();
        let mut again = Jwk::from_encoding_key(&encoding_key(alg, &der), alg).unwrap();
        again.common.key_id = Some(k1.clone());
        again.common.public_key_use = Some(PublicKeyUse::Signature);
        assert_eq!(serde_json::to_value(&again).unwrap(), jwk);

        // Another node on the same database, started at the same time, uses the same key;
        // rotating again changes nothing.
        let ring2 = KeyRing::new(store.clone(), master.clone(), alg, policy);
        ring2.rotate(t0).await.unwrap();
        ring.rotate(t0).await.unwrap();
        assert_eq!(ring2.signing_kid(t0).unwrap(), Some(k1.clone()));
        assert_eq!(kids(&ring), vec![k1.clone()]);
        assert_eq!(verify(&ring2, &early, alg), k1);

        // A minute before the successor is due: still one key.
        let t = t0 + policy.lifetime - policy.publish_ahead - Duration::minutes(1);
        ring.rotate(t).await.unwrap();
        assert_eq!(kids(&ring).len(), 1);

        // When it is due, both nodes rotating at once publish one successor, which does not
        // sign yet.
        let t = t0 + policy.lifetime - policy.publish_ahead + Duration::minutes(1);
        let (a, b) = tokio::join!(ring.rotate(t), ring2.rotate(t));
        a.unwrap();
        b.unwrap();
        ring.reload(t).await.unwrap();
        let published = kids(&ring);
        assert_eq!(published.len(), 2, "{published:?}");
        let k2 = published.iter().find(|k| **k != k1).unwrap().clone();
        assert_eq!(ring.signing_kid(t).unwrap(), Some(k1.clone()));
        let before = ring.sign(&claims, "JWT", t).unwrap();
        assert_eq!(verify(&ring, &before, alg), k1);

        // Once the first key's time is over, the successor signs; what the first signed still
        // verifies while it stays published.
        let t = t0 + policy.lifetime + Duration::minutes(1);
        ring.rotate(t).await.unwrap();
        assert_eq!(ring.signing_kid(t).unwrap(), Some(k2.clone()));
        let after = ring.sign(&claims, "at+jwt", t).unwrap();
        assert_eq!(verify(&ring, &after, alg), k2);
        assert_eq!(
            jsonwebtoken::decode_header(&after).unwrap().typ.as_deref(),
            Some("at+jwt")
        );
        assert_eq!(verify(&ring, &before, alg), k1);

        // After `retain_after`, the first key is gone (from the JWKS and the database).
        let t = t0 + policy.lifetime + policy.retain_after + Duration::minutes(1);
        ring.rotate(t).await.unwrap();
        assert_eq!(kids(&ring), vec![k2.clone()]);
        assert_eq!(store.published_keys(t0).await.unwrap().len(), 1);
        assert!(ring.public_jwk(&k1).unwrap().is_none());
    }

    /// What the signer writes verifies with jsonwebtoken's own verifier against the JWK of the
    /// same key, has the signature length JWS requires (256 bytes for RS256, `r ‖ s` in 64 for
    /// ES256, 64 for EdDSA), and a tampered payload does not verify. A header naming another
    /// algorithm is refused rather than signed.
    #[test]
    fn signer_writes_standard_signatures() {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        for (alg, len) in [
            (Algorithm::RS256, 256),
            (Algorithm::ES256, 64),
            (Algorithm::EdDSA, 64),
        ] {
            let der = generate_der(alg).unwrap();
            let key = SigningKey::from_der(alg, &der).unwrap();
            let jwk = Jwk::from_encoding_key(&encoding_key(alg, &der), alg).unwrap();
            let mut header = Header::new(alg);
            header.kid = Some("k".into());
            let claims = Claims {
                sub: "anne".into(),
                exp: 4_000_000_000,
            };
            for _ in 0..3 {
                let token = key.sign(&header, &claims).unwrap();
                let parts: Vec<&str> = token.split('.').collect();
                assert_eq!(parts.len(), 3, "{token}");
                assert_eq!(b64.decode(parts[2]).unwrap().len(), len, "{alg:?}");
                let v = Validation::new(alg);
                let decoded = jsonwebtoken::decode::<Claims>(
                    &token,
                    &DecodingKey::from_jwk(&jwk).unwrap(),
                    &v,
                )
                .unwrap();
                assert_eq!(decoded.claims, claims);
                assert_eq!(decoded.header.kid.as_deref(), Some("k"));
                let forged = format!(
                    "{}.{}.{}",
                    parts[0],
                    b64.encode(br#"{"sub":"root","exp":4000000000}"#),
                    parts[2]
                );
                assert!(
                    jsonwebtoken::decode::<Claims>(
                        &forged,
                        &DecodingKey::from_jwk(&jwk).unwrap(),
                        &v
                    )
                    .is_err(),
                    "{alg:?}"
                );
            }
            let other = if alg == Algorithm::RS256 {
                Algorithm::ES256
            } else {
                Algorithm::RS256
            };
            assert!(key.sign(&Header::new(other), &claims).is_err());
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite_keys_rotate_for_every_algorithm() {
        for alg in [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA] {
            with_sqlite(|url| rotates_and_publishes(url, alg)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_keys_rotate() {
        with_pg(|url| rotates_and_publishes(url, Algorithm::RS256)).await;
        with_pg(|url| rotates_and_publishes(url, Algorithm::EdDSA)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_ring_that_was_never_rotated_does_not_sign() {
        with_sqlite(|url| async move {
            let store = Arc::new(SqlStore::connect(&url).await.unwrap());
            let master = Arc::new(MasterKey::generate().unwrap().0);
            let ring = KeyRing::new(store, master, Algorithm::ES256, RotationPolicy::default());
            let claims = Claims {
                sub: "anne".into(),
                exp: 0,
            };
            assert!(ring.sign(&claims, "JWT", Utc::now()).is_err());
            assert_eq!(ring.jwks().unwrap()["keys"], serde_json::json!(null));
        })
        .await;
    }

    /// A verified token is remembered, but a hit still needs the same bytes, the same
    /// issuer, a published key and an unexpired `exp`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn remembered_verifications_keep_every_check() {
        with_sqlite(|url| async move {
            let store = Arc::new(SqlStore::connect(&url).await.unwrap());
            let master = Arc::new(MasterKey::generate().unwrap().0);
            let policy = RotationPolicy::default();
            let ring = KeyRing::new(store, master, Algorithm::EdDSA, policy);
            let t0 = Utc::now();
            ring.rotate(t0).await.unwrap();
            let iss = "https://login.example";
            let sign = |exp: i64| {
                ring.sign(
                    &serde_json::json!({ "iss": iss, "sub": "anne", "exp": exp }),
                    "at+jwt",
                    t0,
                )
                .unwrap()
            };
            let live = sign((t0 + Duration::minutes(5)).timestamp());
            for _ in 0..2 {
                assert_eq!(ring.verify(&live, iss).unwrap()["sub"], "anne");
                assert!(ring.verify(&live, "https://other.example").is_none());
            }
            // One byte of the signature changed: not the remembered token.
            let mut tampered = live.clone().into_bytes();
            let last = tampered.len() - 2;
            tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
            let tampered = String::from_utf8(tampered).unwrap();
            assert!(ring.verify(&tampered, iss).is_none());
            // Expired beyond the leeway: refused, remembered or not; logout hints may be.
            let old = sign((t0 - Duration::minutes(5)).timestamp());
            for _ in 0..2 {
                assert!(ring.verify(&old, iss).is_none());
                assert!(ring.verify_ignoring_expiry(&old, iss).is_some());
            }
            // Its key retired: a remembered token no longer verifies.
            let t = t0 + policy.lifetime + policy.retain_after + Duration::minutes(1);
            ring.rotate(t).await.unwrap();
            ring.rotate(t + Duration::minutes(1)).await.unwrap();
            assert!(ring.verify_ignoring_expiry(&live, iss).is_none());
        })
        .await;
    }

    #[test]
    fn only_supported_algorithms_are_accepted() {
        for ok in ["RS256", "ES256", "EdDSA"] {
            assert!(parse_alg(ok).is_ok());
        }
        for bad in ["HS256", "none", "rs256", ""] {
            assert!(parse_alg(bad).is_err(), "{bad}");
        }
    }
}
