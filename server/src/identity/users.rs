//! Users, passwords (Argon2id), memberships and the platform owner.

use std::sync::{Mutex, OnceLock};

use argon2::{Argon2, PasswordHasher};
use chrono::{DateTime, Utc};
use gatehouse_engine::tuple::TupleKey;
use gatehouse_engine::{Error, Result};

use super::{Identity, PLATFORM};
use crate::cache::limits;
use crate::db::tenancy::Service;
use crate::db::users::{ApiKey, Limited, Membership, User};

/// Roles in an organization, lowest first.
pub const ROLES: [&str; 4] = ["viewer", "member", "admin", "owner"];

/// The rank of a role (higher grants more); `None` for an unknown role.
pub fn role_rank(role: &str) -> Option<usize> {
    ROLES.iter().position(|r| *r == role)
}

/// Failures of one address at one account, within the window of [`limits`], before the
/// address is locked out of the account (30 s, doubling with each further failure).
pub const LOCK_AFTER: u64 = 5;

/// Shortest and longest password accepted (NIST SP 800-63B: at least 8, allow long ones).
const MIN_PASSWORD_CHARS: usize = 8;
const MAX_PASSWORD_BYTES: usize = 1024;

/// Emails: one `@`, a non-empty local part and a dotted domain, no spaces, at most 254 bytes.
/// Stored lowercased.
pub fn normalize_email(email: &str) -> Option<String> {
    let e = email.trim();
    let (local, domain) = e.split_once('@')?;
    let ok = e.len() <= 254
        && !local.is_empty()
        && local.len() <= 64
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains('@')
        && !e.chars().any(|c| c.is_whitespace() || c.is_control());
    ok.then(|| e.to_lowercase())
}

pub fn check_password_rules(password: &str) -> Result<()> {
    if password.chars().count() < MIN_PASSWORD_CHARS || password.len() > MAX_PASSWORD_BYTES {
        return Err(Error::Validation(format!(
            "a password must be {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_BYTES} bytes long"
        )));
    }
    Ok(())
}

/// Hashes a password with Argon2id at OWASP's parameters (19 MiB, 2 passes, 1 lane), on the
/// calling thread.
pub fn hash_password_blocking(password: &[u8]) -> Result<String> {
    Argon2::default()
        .hash_password(password)
        .map(|h| h.to_string())
        .map_err(|e| Error::Storage(format!("cannot hash a password: {e}")))
}

/// Argon2 working memory (19 MiB at OWASP's parameters), kept between verifications: at
/// most one buffer per verification running at once (one per core behind the slots). Taking
/// a fresh zeroed 19 MiB from the allocator for each verification costs page faults and
/// zeroing, a tenth of the verification; Argon2 overwrites every block before reading it, so
/// a reused buffer needs neither.
static ARGON2_MEMORY: Mutex<Vec<Vec<argon2::Block>>> = Mutex::new(Vec::new());

/// The most memory a stored hash may ask for (KiB): more is refused rather than allocated.
const MAX_ARGON2_KIB: u32 = 256 * 1024;

/// Whether `password` matches the PHC string `hash` (any Argon2 variant, version and
/// parameters up to 256 MiB), on the calling thread.
pub fn verify_password_blocking(password: &[u8], hash: &str) -> bool {
    let Ok(parsed) = argon2::PasswordHash::new(hash) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (&parsed.salt, &parsed.hash) else {
        return false;
    };
    let Ok(algorithm) = argon2::Algorithm::try_from(parsed.algorithm.as_str()) else {
        return false;
    };
    let version = match parsed.version.map(argon2::Version::try_from) {
        None => argon2::Version::default(),
        Some(Ok(v)) => v,
        Some(Err(_)) => return false,
    };
    let Ok(params) = argon2::Params::try_from(&parsed) else {
        return false;
    };
    if params.m_cost() > MAX_ARGON2_KIB {
        return false;
    }
    let blocks = params.block_count();
    let argon = Argon2::new(algorithm, version, params);
    let mut out = [0u8; 64];
    let Some(out) = out.get_mut(..expected.len()) else {
        return false;
    };
    let mut memory = ARGON2_MEMORY
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .pop()
        .unwrap_or_default();
    if memory.len() < blocks {
        memory.resize(blocks, argon2::Block::new());
    }
    let computed = memory.get_mut(..blocks).is_some_and(|m| {
        argon
            .hash_password_into_with_memory(password, salt.as_ref(), out, m)
            .is_ok()
    });
    ARGON2_MEMORY
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(memory);
    // Constant time: every byte is compared whatever the first difference.
    computed
        && out
            .iter()
            .zip(expected.as_bytes())
            .fold(0u8, |d, (a, b)| d | (a ^ b))
            == 0
}

/// Argon2id computations at once when configured (`GATEHOUSE_PASSWORD_HASH_SLOTS`).
static HASH_SLOTS: OnceLock<usize> = OnceLock::new();

/// Sets how many Argon2id computations may run at once; call before the first one. Later
/// calls change nothing.
pub fn set_hash_slots(n: usize) {
    let _ = HASH_SLOTS.set(n);
}

/// A computation waiting for an Argon2 thread.
type HashJob = Box<dyn FnOnce() + Send>;

/// The queue of the Argon2 threads: one per core unless configured, started on first use.
///
/// Each holds 19 MiB while it computes; more computations at once than cores would only share
/// the cores and thrash their caches (and a flood of logins could take memory). The threads
/// take the next computation from the queue as soon as they finish one: with a semaphore in
/// front of the blocking pool instead, handing a freed slot to the next login took two wakeups
/// of async tasks on cores that Argon2 keeps busy, and the cores idled in between.
fn hashers() -> &'static std::sync::mpsc::Sender<HashJob> {
    static QUEUE: OnceLock<std::sync::mpsc::Sender<HashJob>> = OnceLock::new();
    QUEUE.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<HashJob>();
        let rx = std::sync::Arc::new(Mutex::new(rx));
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        for n in 0..HASH_SLOTS.get().copied().unwrap_or(cores) {
            let rx = rx.clone();
            let started = std::thread::Builder::new()
                .name(format!("argon2-{n}"))
                .spawn(move || {
                    loop {
                        let job = rx
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .recv();
                        let Ok(job) = job else { return };
                        // A panic drops the job's answer channel (its caller sees an error);
                        // the thread carries on with the next one.
                        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                    }
                });
            if let Err(e) = started {
                tracing::error!(error = %e, "cannot start an Argon2 thread");
            }
        }
        tx
    })
}

/// Runs `work` on an Argon2 thread and waits for its answer; `None` if it could not run. A
/// caller that stops waiting (a browser that went away) takes its computation out of the
/// queue: it is skipped, not computed.
async fn on_hasher<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job: HashJob = Box::new(move || {
        if !tx.is_closed() {
            let _ = tx.send(work());
        }
    });
    hashers().send(job).ok()?;
    rx.await.ok()
}

/// [`hash_password_blocking`] on the Argon2 threads.
pub async fn hash_password(password: &str) -> Result<String> {
    let pw = zeroize::Zeroizing::new(password.as_bytes().to_vec());
    on_hasher(move || hash_password_blocking(&pw))
        .await
        .unwrap_or_else(|| Err(Error::Storage("password hashing stopped".into())))
}

/// [`verify_password_blocking`] on the Argon2 threads.
pub async fn verify_password(password: &str, hash: &str) -> bool {
    let pw = zeroize::Zeroizing::new(password.as_bytes().to_vec());
    let hash = hash.to_string();
    on_hasher(move || verify_password_blocking(&pw, &hash))
        .await
        .unwrap_or(false)
}

/// What a password login came to.
#[derive(Debug)]
pub enum PasswordCheck {
    Valid(User),
    /// Unknown account or wrong password (the caller cannot tell which).
    Invalid {
        /// The account, when the email is known (for the audit log).
        user: Option<User>,
    },
    /// Too many failures: refused without looking at the password.
    Locked {
        user: User,
        until: DateTime<Utc>,
    },
}

impl Identity {
    /// Creates a user. The email is stored lowercased and must be new.
    pub async fn create_user(
        &self,
        actor: &str,
        email: &str,
        name: &str,
        password: Option<&str>,
        verified: bool,
    ) -> Result<User> {
        let Some(email) = normalize_email(email) else {
            return Err(Error::Validation(format!(
                "`{}` is not an email address",
                email.chars().take(100).collect::<String>()
            )));
        };
        if !name.is_empty() && !super::valid_name(name) {
            return Err(Error::Validation(
                "`name` must be at most 200 characters without control characters".into(),
            ));
        }
        let password_hash = match password {
            Some(p) => {
                check_password_rules(p)?;
                Some(hash_password(p).await?)
            }
            None => None,
        };
        let now = Utc::now();
        let user = User {
            id: ulid::Ulid::new().to_string().to_lowercase(),
            email: email.clone(),
            email_verified: verified,
            name: name.trim().to_string(),
            password_hash,
            failed_logins: 0,
            locked_until: None,
            created_at: now,
            updated_at: now,
        };
        if !self.store.insert_user(&user).await? {
            return Err(Error::Validation(format!(
                "a user with email `{email}` exists already"
            )));
        }
        self.audit(
            None,
            actor,
            None,
            "user.created",
            serde_json::json!({ "user": user.id, "email": user.email }),
        )
        .await;
        Ok(user)
    }

    /// The user with this email, if any.
    pub async fn user_by_email(&self, email: &str) -> Result<Option<User>> {
        match normalize_email(email) {
            Some(e) => self.store.user_by_email(&e).await,
            None => Ok(None),
        }
    }

    /// Makes a user a member of an organization with `role`, within its tier's user limit,
    /// and writes the tuple that gives the role its permissions.
    pub async fn add_member(
        &self,
        actor: &str,
        org_slug: &str,
        user_id: &str,
        role: &str,
    ) -> Result<Membership> {
        if role_rank(role).is_none() {
            return Err(Error::Validation(format!(
                "role `{role}` is not one of {}",
                ROLES.join(", ")
            )));
        }
        let org = self.organization_by_slug(org_slug).await?;
        if self.store.user(user_id).await?.is_none() {
            return Err(Error::Validation(format!(
                "user `{user_id}` does not exist"
            )));
        }
        if self.store.membership(&org.id, user_id).await?.is_some() {
            return Err(Error::Validation(format!(
                "user `{user_id}` is a member of `{org_slug}` already"
            )));
        }
        let limits = self
            .store
            .tier(&org.tier)
            .await?
            .ok_or_else(|| Error::Storage(format!("tier `{}` is missing", org.tier)))?;
        if self.store.count_members(&org.id).await? >= limits.max_users {
            return Err(Error::Validation(format!(
                "organization `{org_slug}` has reached its tier's limit of {} users",
                limits.max_users
            )));
        }
        let m = Membership {
            organization_id: org.id.clone(),
            user_id: user_id.to_string(),
            role: role.to_string(),
            created_at: Utc::now().naive_utc(),
        };
        let tuple = TupleKey::new(
            format!("user:{user_id}"),
            role,
            format!("organization:{}", org.id),
        );
        self.write_tuples(std::slice::from_ref(&tuple), &[]).await?;
        let added = self
            .store
            .insert_membership_within(&m, limits.max_users)
            .await;
        if !matches!(added, Ok(Limited::Inserted)) {
            // Take back the tuple of the membership that was not created (unless a membership
            // made meanwhile with the same role stands on it).
            let same_role_exists = matches!(added, Ok(Limited::Exists))
                && self
                    .store
                    .membership(&org.id, user_id)
                    .await?
                    .is_some_and(|existing| existing.role == role);
            if !same_role_exists {
                self.write_tuples(&[], &[tuple]).await?;
            }
            return Err(match added? {
                Limited::Full => Error::Validation(format!(
                    "organization `{org_slug}` has reached its tier's limit of {} users",
                    limits.max_users
                )),
                _ => Error::Validation(format!(
                    "user `{user_id}` is a member of `{org_slug}` already"
                )),
            });
        }
        self.audit(
            Some(&org.id),
            actor,
            None,
            "membership.created",
            serde_json::json!({ "user": user_id, "role": role }),
        )
        .await;
        Ok(m)
    }

    /// Removes a user from an organization, and the role's tuple with it.
    pub async fn remove_member(
        &self,
        actor: &str,
        org_slug: &str,
        user_id: &str,
    ) -> Result<Membership> {
        let org = self.organization_by_slug(org_slug).await?;
        let Some(m) = self.store.membership(&org.id, user_id).await? else {
            return Err(Error::Validation(format!(
                "user `{user_id}` is not a member of `{org_slug}`"
            )));
        };
        let tuple = TupleKey::new(
            format!("user:{user_id}"),
            m.role.as_str(),
            format!("organization:{}", org.id),
        );
        // The tuple first: a membership row never grants more than the graph.
        self.write_tuples(&[], std::slice::from_ref(&tuple)).await?;
        self.store.delete_membership(&org.id, user_id).await?;
        self.audit(
            Some(&org.id),
            actor,
            None,
            "membership.removed",
            serde_json::json!({ "user": user_id, "role": m.role }),
        )
        .await;
        Ok(m)
    }

    /// Creates an API key for a service; returns it with the key itself, shown this once.
    pub async fn create_api_key(
        &self,
        actor: &str,
        client_id: &str,
        name: &str,
    ) -> Result<(ApiKey, String)> {
        if !super::valid_name(name) {
            return Err(Error::Validation(
                "`name` must be 1 to 200 characters without control characters".into(),
            ));
        }
        let service = self
            .service(client_id)
            .await?
            .ok_or_else(|| Error::Validation(format!("service `{client_id}` does not exist")))?;
        let key = super::random_token("ak_live_")?;
        let k = ApiKey {
            id: format!("key_{}", ulid::Ulid::new().to_string().to_lowercase()),
            service_id: service.client_id.clone(),
            name: name.trim().to_string(),
            prefix: key.chars().take(16).collect(),
            key_sha256: super::sha256_hex(&key),
            created_at: Utc::now().naive_utc(),
            revoked_at: None,
        };
        self.store.insert_api_key(&k).await?;
        self.audit(
            Some(&service.organization_id),
            actor,
            None,
            "api_key.created",
            serde_json::json!({ "client_id": service.client_id, "key": k.id, "name": k.name }),
        )
        .await;
        Ok((k, key))
    }

    /// Revokes an API key of a service.
    pub async fn revoke_api_key(&self, actor: &str, service: &Service, id: &str) -> Result<bool> {
        let done = self.store.revoke_api_key(&service.client_id, id).await?;
        if done {
            self.audit(
                Some(&service.organization_id),
                actor,
                None,
                "api_key.revoked",
                serde_json::json!({ "client_id": service.client_id, "key": id }),
            )
            .await;
        }
        Ok(done)
    }

    /// The live API key `key` and its service.
    pub async fn authenticate_api_key(&self, key: &str) -> Result<Option<(ApiKey, Service)>> {
        if !key.starts_with("ak_live_") || key.len() > 100 {
            return Ok(None);
        }
        let Some(k) = self.store.api_key_by_hash(&super::sha256_hex(key)).await? else {
            return Ok(None);
        };
        Ok(self.service(&k.service_id).await?.map(|s| (k, s)))
    }

    /// The platform owner from `PLATFORM_OWNER_EMAIL` / `PLATFORM_OWNER_PASSWORD`: created
    /// (email verified) on first start, and made owner of the platform. Idempotent: an
    /// existing account keeps its password.
    pub async fn bootstrap_owner(&self, email: &str, password: &str) -> Result<User> {
        let user = match self.user_by_email(email).await? {
            Some(u) => u,
            None => match self
                .create_user(super::OPERATOR, email, "", Some(password), true)
                .await
            {
                Ok(u) => u,
                // Another node created it in between.
                Err(Error::Validation(_)) => self.user_by_email(email).await?.ok_or_else(|| {
                    Error::Storage("the platform owner could not be created".into())
                })?,
                Err(e) => return Err(e),
            },
        };
        self.write_tuples(
            &[TupleKey::new(
                format!("user:{}", user.id),
                "owner",
                PLATFORM,
            )],
            &[],
        )
        .await?;
        Ok(user)
    }

    /// Settles a login attempt on `user_id` that a login method has checked (`succeeded`).
    /// With `throttle` (a guessable secret: a password, a one-time code), the attempt counts
    /// for the account *and the address* it came from: an address that failed too often is
    /// refused either way until its lockout ends, a failure counts towards it, a success
    /// clears it; failures decay after their window. Nobody can lock the owner out from an
    /// address of their own, and a method that cannot be guessed (a passkey, an identity
    /// provider) is never refused for another address's failures. An unknown id is an invalid
    /// attempt that names nobody.
    pub async fn settle_login(
        &self,
        user_id: &str,
        succeeded: bool,
        throttle: Option<&Throttle<'_>>,
    ) -> Result<PasswordCheck> {
        let Some(user) = self.store.user(user_id).await? else {
            return Ok(PasswordCheck::Invalid { user: None });
        };
        let Some(t) = throttle else {
            return Ok(if succeeded {
                PasswordCheck::Valid(user)
            } else {
                PasswordCheck::Invalid { user: Some(user) }
            });
        };
        if let Some(until) = t.locked().await? {
            return Ok(PasswordCheck::Locked { user, until });
        }
        if succeeded {
            t.succeeded().await?;
            return Ok(PasswordCheck::Valid(user));
        }
        if let Some(until) = t.failed().await? {
            return Ok(PasswordCheck::Locked { user, until });
        }
        Ok(PasswordCheck::Invalid { user: Some(user) })
    }
}

/// Where a guessable secret is tried: attempts are throttled per (credential, address) in
/// the ephemeral store (shared by every node when it is Redis). The credential is named as the
/// person typed it (`email:<address>`) for a password, so that an address without an account
/// locks exactly as one with an account does (no account oracle), or by its user
/// (`user:<id>`) for a second factor.
pub struct Throttle<'a> {
    pub kv: &'a dyn crate::cache::ephemeral::Ephemeral,
    /// The client's address (empty when unknown: such attempts share one key).
    pub ip: &'a str,
    /// The credential tried.
    pub credential: String,
}

impl Throttle<'_> {
    fn key(&self) -> String {
        format!("signin:{}:{}", self.credential, self.ip)
    }

    /// Until when this credential is locked for this address, if it is.
    pub async fn locked(&self) -> Result<Option<DateTime<Utc>>> {
        Ok(limits::locked_any(self.kv, &[self.key().as_str()])
            .await?
            .map(|secs| Utc::now() + chrono::Duration::seconds(secs as i64)))
    }

    /// Counts a failure; until when it locks the credential for this address, if it does.
    pub async fn failed(&self) -> Result<Option<DateTime<Utc>>> {
        limits::failed_after(self.kv, &self.key(), LOCK_AFTER).await?;
        self.locked().await
    }

    /// Forgets this address's failures at this credential.
    pub async fn succeeded(&self) -> Result<()> {
        limits::succeeded(self.kv, &self.key()).await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        assert_eq!(
            normalize_email(" Ada@Example.COM ").as_deref(),
            Some("ada@example.com")
        );
        for bad in [
            "",
            "ada",
            "@example.com",
            "ada@",
            "ada@example",
            "a da@x.io",
            "a@b@c.io",
        ] {
            assert_eq!(normalize_email(bad), None, "{bad}");
        }
    }

    #[tokio::test]
    async fn argon2id_at_owasp_parameters() {
        let h = hash_password("correct horse").await.unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(verify_password("correct horse", &h).await);
        assert!(!verify_password("correct horsf", &h).await);
    }

    /// More verifications at once than Argon2 threads queue up and each gets its own answer;
    /// a verification whose caller stopped waiting is skipped and the queue carries on.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn verifications_queue_for_the_argon2_threads() {
        let h = hash_password("correct horse").await.unwrap();
        let abandoned = tokio::time::timeout(
            std::time::Duration::from_micros(1),
            verify_password("correct horse", &h),
        )
        .await;
        assert!(abandoned.is_err(), "a verification cannot finish in 1 µs");
        let tries: Vec<_> = (0..12)
            .map(|i| {
                let h = h.clone();
                tokio::spawn(async move {
                    let pw = if i % 3 == 0 {
                        "correct horsf"
                    } else {
                        "correct horse"
                    };
                    (i, verify_password(pw, &h).await)
                })
            })
            .collect();
        for t in tries {
            let (i, ok) = t.await.unwrap();
            assert_eq!(ok, i % 3 != 0, "verification {i}");
        }
    }

    /// The verifier with reused memory agrees with the argon2 crate's own on every variant,
    /// version and size, one after another (so that a buffer is reused across sizes), and
    /// refuses what does not parse or asks for too much memory.
    #[test]
    fn pooled_verification_agrees_with_the_reference() {
        use argon2::{Algorithm, Params, PasswordVerifier, Version};
        let salt = b"saltsaltsaltsalt";
        let mut cases = Vec::new();
        for (alg, ver, m, t, p, len) in [
            (Algorithm::Argon2id, Version::V0x13, 19_456, 2, 1, 32),
            (Algorithm::Argon2id, Version::V0x13, 64, 1, 1, 32),
            (Algorithm::Argon2i, Version::V0x13, 256, 3, 2, 16),
            (Algorithm::Argon2d, Version::V0x10, 128, 1, 4, 64),
            (Algorithm::Argon2id, Version::V0x13, 8_192, 1, 1, 32),
        ] {
            let params = Params::new(m, t, p, Some(len)).unwrap();
            let a = Argon2::new(alg, ver, params);
            let h = a
                .hash_password_with_salt(b"correct horse", salt)
                .unwrap()
                .to_string();
            cases.push((a, h));
        }
        for _ in 0..2 {
            for (a, h) in &cases {
                assert!(verify_password_blocking(b"correct horse", h), "{h}");
                assert!(a.verify_password(b"correct horse", h.as_str()).is_ok());
                assert!(!verify_password_blocking(b"correct horsf", h), "{h}");
                assert!(!verify_password_blocking(b"", h), "{h}");
            }
        }
        let good = &cases[1].1;
        for bad in [
            String::new(),
            "not a hash".into(),
            good.replace("argon2id", "argon2x"),
            good.replace("v=19", "v=20"),
            good.rsplit_once('$').unwrap().0.to_string(),
            good.replace("m=64", "m=999999999"),
            format!("{good}AAAA"),
        ] {
            assert!(!verify_password_blocking(b"correct horse", &bad), "{bad}");
        }
    }
}
