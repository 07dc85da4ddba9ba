//! Login sessions, pending authorization requests and authorization codes, kept in the
//! ephemeral store (Redis when configured, in process otherwise).
//!
//! A session's cookie holds a random secret; the store knows the session by the SHA-256 of
//! it (its public id, `sid` in ID tokens), so that neither the store nor a token reveals a
//! usable cookie.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use gatehouse_engine::{Error, Result};
use serde::{Deserialize, Serialize};

use crate::cache::ephemeral::Ephemeral;

/// How long a login session lasts (absolute; the hosted login asks again after).
pub const SESSION_SECONDS: i64 = 12 * 3600;
/// How long a login page may sit before it is submitted.
pub const PENDING_SECONDS: u64 = 600;
/// How long an authorization code may wait to be redeemed by default (RFC 6749 §4.1.2:
/// short).
pub const CODE_SECONDS: u64 = 60;

/// A login session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// Public id: SHA-256 (hex) of the cookie's secret.
    pub id: String,
    pub user_id: String,
    pub auth_time: DateTime<Utc>,
    pub amr: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

/// An authorization request waiting for its login.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub client_id: String,
    pub redirect_uri: String,
    pub scope: String,
    pub state: Option<String>,
    pub nonce: Option<String>,
    pub code_challenge: String,
    pub max_age: Option<i64>,
    /// SHA-256 of the browser binding cookie set with the login page: the form only counts
    /// from the browser that started the flow (no login CSRF).
    pub binding: String,
    /// `prompt=consent`: the consent page is shown even when an approval exists.
    #[serde(default)]
    pub prompt_consent: bool,
    /// `prompt=none`: nothing may be shown; a needed approval is `consent_required`.
    #[serde(default)]
    pub prompt_none: bool,
    /// The session whose user is asked for consent (set while the consent page waits).
    #[serde(default)]
    pub consent_session: Option<String>,
}

/// What an authorization code stands for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Code {
    pub client_id: String,
    pub redirect_uri: String,
    pub user_id: String,
    pub session_id: String,
    pub scope: String,
    pub nonce: Option<String>,
    pub code_challenge: String,
    pub auth_time: DateTime<Utc>,
    pub amr: Vec<String>,
}

/// How long a device authorization waits for its user (RFC 8628 `expires_in`).
pub const DEVICE_SECONDS: u64 = 600;
/// The least time between two polls of a device (RFC 8628 `interval`).
pub const DEVICE_INTERVAL: u64 = 5;
/// The alphabet of user codes: consonants only (no vowels, so no words; no look-alikes).
const USER_CODE_ALPHABET: &[u8] = b"BCDFGHJKLMNPQRSTVWXZ";

/// A device authorization (RFC 8628) waiting for, or given, its user's approval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceGrant {
    pub client_id: String,
    pub scope: String,
    pub user_code: String,
    pub expires_at: DateTime<Utc>,
    /// `None` while pending; the approval (what a code would carry) or a denial after.
    pub decision: Option<DeviceDecision>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeviceDecision {
    Approved(Box<Code>),
    Denied,
}

/// A user code as typed: case, spaces and dashes do not matter.
pub fn normalize_user_code(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .flat_map(char::to_uppercase)
        .collect()
}

pub use crate::secrets::{random_token as secret, sha256_hex};

fn encode<T: Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| Error::Storage(format!("cannot serialize: {e}")))
}

fn decode<T: for<'de> Deserialize<'de>>(s: Option<String>) -> Option<T> {
    s.and_then(|s| serde_json::from_str(&s).ok())
}

/// Sessions, pending requests and codes over an ephemeral store.
#[derive(Debug, Clone)]
pub struct Sessions {
    kv: Arc<dyn Ephemeral>,
    code_ttl: Duration,
}

impl Sessions {
    pub fn new(kv: Arc<dyn Ephemeral>) -> Self {
        Self {
            kv,
            code_ttl: Duration::from_secs(CODE_SECONDS),
        }
    }

    /// With codes living `ttl` instead of [`CODE_SECONDS`].
    pub fn with_code_ttl(self, ttl: Duration) -> Self {
        Self {
            code_ttl: ttl,
            ..self
        }
    }

    pub fn kv(&self) -> &Arc<dyn Ephemeral> {
        &self.kv
    }

    /// Opens a session; returns the cookie's secret and the session.
    pub async fn create(
        &self,
        user_id: &str,
        amr: Vec<String>,
        ip: Option<String>,
        user_agent: Option<String>,
    ) -> Result<(String, Session)> {
        let cookie = secret("")?;
        let now = Utc::now();
        let s = Session {
            id: sha256_hex(&cookie),
            user_id: user_id.to_string(),
            auth_time: now,
            amr,
            created_at: now,
            expires_at: now + chrono::Duration::seconds(SESSION_SECONDS),
            ip,
            user_agent: user_agent.map(|u| u.chars().take(300).collect()),
        };
        let ttl = Duration::from_secs(SESSION_SECONDS as u64);
        self.kv
            .put(&format!("session:{}", s.id), &encode(&s)?, ttl)
            .await?;
        self.kv
            .set_add(&format!("user-sessions:{user_id}"), &s.id, ttl)
            .await?;
        Ok((cookie, s))
    }

    /// The live session a cookie holds.
    pub async fn from_cookie(&self, cookie: &str) -> Result<Option<Session>> {
        if cookie.len() != 64 || !cookie.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(None);
        }
        self.by_id(&sha256_hex(cookie)).await
    }

    pub async fn by_id(&self, id: &str) -> Result<Option<Session>> {
        let s: Option<Session> = decode(self.kv.get(&format!("session:{id}")).await?);
        Ok(s.filter(|s| s.expires_at > Utc::now()))
    }

    /// A user's live sessions, oldest first.
    pub async fn list(&self, user_id: &str) -> Result<Vec<Session>> {
        let set = format!("user-sessions:{user_id}");
        let mut out = Vec::new();
        for id in self.kv.set_members(&set).await? {
            match self.by_id(&id).await? {
                Some(s) => out.push(s),
                None => self.kv.set_remove(&set, &id).await?,
            }
        }
        out.sort_by_key(|s| s.created_at);
        Ok(out)
    }

    /// Ends a session; returns whether it was live.
    pub async fn end(&self, session: &Session) -> Result<()> {
        self.kv.delete(&format!("session:{}", session.id)).await?;
        self.kv
            .set_remove(&format!("user-sessions:{}", session.user_id), &session.id)
            .await
    }

    /// Ends every session of a user; returns their ids.
    pub async fn end_all(&self, user_id: &str) -> Result<Vec<String>> {
        let sessions = self.list(user_id).await?;
        for s in &sessions {
            self.end(s).await?;
        }
        Ok(sessions.into_iter().map(|s| s.id).collect())
    }

    /// Keeps an authorization request for its login page; returns the request's id.
    pub async fn put_pending(&self, p: &Pending) -> Result<String> {
        let id = secret("")?;
        self.kv
            .put(
                &format!("pending:{id}"),
                &encode(p)?,
                Duration::from_secs(PENDING_SECONDS),
            )
            .await?;
        Ok(id)
    }

    pub async fn pending(&self, id: &str) -> Result<Option<Pending>> {
        if id.len() > 128 {
            return Ok(None);
        }
        Ok(decode(self.kv.get(&format!("pending:{id}")).await?))
    }

    /// Keeps the pending request `id` for `ttl` from now (a sign-in that waits for a link
    /// sent by email).
    pub async fn keep_pending(&self, id: &str, p: &Pending, ttl: Duration) -> Result<()> {
        self.kv
            .put(&format!("pending:{id}"), &encode(p)?, ttl)
            .await
    }

    pub async fn drop_pending(&self, id: &str) -> Result<()> {
        self.kv.delete(&format!("pending:{id}")).await
    }

    /// Issues an authorization code; only its SHA-256 is kept.
    pub async fn put_code(&self, c: &Code) -> Result<String> {
        let code = secret("ac_")?;
        self.kv
            .put(
                &format!("code:{}", sha256_hex(&code)),
                &encode(c)?,
                self.code_ttl,
            )
            .await?;
        Ok(code)
    }

    /// Redeems a code: of two redemptions, one gets it. A redeemed code leaves a marker
    /// naming the token family it became, so that a replay can revoke it.
    pub async fn take_code(&self, code: &str) -> Result<Option<Code>> {
        if code.len() > 128 {
            return Ok(None);
        }
        Ok(decode(
            self.kv.take(&format!("code:{}", sha256_hex(code))).await?,
        ))
    }

    /// Starts a device authorization; returns the device code and the user code (`XXXX-XXXX`).
    pub async fn put_device(&self, client_id: &str, scope: &str) -> Result<(String, String)> {
        let device_code = secret("dc_")?;
        let mut raw = [0u8; 8];
        getrandom::fill(&mut raw).map_err(|e| Error::Unavailable(format!("no randomness: {e}")))?;
        let letters: String = raw
            .iter()
            .map(|b| USER_CODE_ALPHABET[usize::from(*b) % USER_CODE_ALPHABET.len()] as char)
            .collect();
        let user_code = format!("{}-{}", &letters[..4], &letters[4..]);
        let grant = DeviceGrant {
            client_id: client_id.to_string(),
            scope: scope.to_string(),
            user_code: user_code.clone(),
            expires_at: Utc::now() + chrono::Duration::seconds(DEVICE_SECONDS as i64),
            decision: None,
        };
        let ttl = Duration::from_secs(DEVICE_SECONDS);
        let key = sha256_hex(&device_code);
        self.kv
            .put(&format!("device:{key}"), &encode(&grant)?, ttl)
            .await?;
        self.kv
            .put(
                &format!("user-code:{}", normalize_user_code(&user_code)),
                &key,
                ttl,
            )
            .await?;
        Ok((device_code, user_code))
    }

    /// The device authorization a user code names (its key and the grant), while it waits.
    pub async fn device_by_user_code(
        &self,
        user_code: &str,
    ) -> Result<Option<(String, DeviceGrant)>> {
        let code = normalize_user_code(user_code);
        if code.len() != 8 {
            return Ok(None);
        }
        let Some(key) = self.kv.get(&format!("user-code:{code}")).await? else {
            return Ok(None);
        };
        let grant: Option<DeviceGrant> = decode(self.kv.get(&format!("device:{key}")).await?);
        Ok(grant.filter(|g| g.decision.is_none()).map(|g| (key, g)))
    }

    /// Records the user's decision on a device authorization; the user code stops working.
    pub async fn decide_device(
        &self,
        key: &str,
        mut grant: DeviceGrant,
        decision: DeviceDecision,
    ) -> Result<()> {
        let left = (grant.expires_at - Utc::now()).num_seconds();
        if left <= 0 {
            return Ok(());
        }
        self.kv
            .delete(&format!(
                "user-code:{}",
                normalize_user_code(&grant.user_code)
            ))
            .await?;
        grant.decision = Some(decision);
        self.kv
            .put(
                &format!("device:{key}"),
                &encode(&grant)?,
                Duration::from_secs(left as u64),
            )
            .await
    }

    /// A device's poll: the grant (taken, when decided: a decision is collected once), and
    /// whether the device polled again within the interval.
    pub async fn poll_device(&self, device_code: &str) -> Result<(Option<DeviceGrant>, bool)> {
        if device_code.len() > 128 {
            return Ok((None, false));
        }
        let key = sha256_hex(device_code);
        let polls = self
            .kv
            .incr(
                &format!("device-poll:{key}"),
                Duration::from_secs(DEVICE_INTERVAL),
            )
            .await?;
        let grant: Option<DeviceGrant> = decode(self.kv.get(&format!("device:{key}")).await?);
        match grant {
            Some(g) if g.decision.is_some() => {
                let taken: Option<DeviceGrant> =
                    decode(self.kv.take(&format!("device:{key}")).await?);
                Ok((taken, false))
            }
            other => Ok((other, polls > 1)),
        }
    }

    /// Records what a redeemed code issued: the token family id (or `-` for none) and the
    /// access token's id, separated by a space.
    pub async fn mark_redeemed(&self, code: &str, issued: &str) -> Result<()> {
        self.kv
            .put(
                &format!("redeemed:{}", sha256_hex(code)),
                issued,
                Duration::from_secs(PENDING_SECONDS),
            )
            .await
    }

    /// What a code issued when it was redeemed, if it was (recently).
    pub async fn redeemed(&self, code: &str) -> Result<Option<String>> {
        if code.len() > 128 {
            return Ok(None);
        }
        self.kv.get(&format!("redeemed:{}", sha256_hex(code))).await
    }
}
