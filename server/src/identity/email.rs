//! What is proven by email: address verification, password reset and invitations. Each is a
//! single-use token sent in a link, stored as its SHA-256, with an expiry.

use chrono::{Duration, Utc};
use gatehouse_engine::{Error, Result};

use super::Identity;
use super::users::{hash_password, role_rank};
use crate::db::tenancy::Organization;
use crate::db::users::{EmailToken, Membership, User};

/// How long a verification link works.
pub const VERIFY_HOURS: i64 = 48;
/// How long a password reset link works.
pub const RESET_MINUTES: i64 = 30;
/// How long an invitation stands.
pub const INVITE_DAYS: i64 = 7;

impl Identity {
    async fn email_token(
        &self,
        purpose: &str,
        email: &str,
        user_id: Option<&str>,
        invitation: Option<(&str, &str, &str)>,
        ttl: Duration,
    ) -> Result<(EmailToken, String)> {
        let token = super::random_token("et_")?;
        let now = Utc::now();
        let t = EmailToken {
            token_sha256: super::sha256_hex(&token),
            purpose: purpose.to_string(),
            email: email.to_string(),
            user_id: user_id.map(str::to_string),
            organization_id: invitation.map(|i| i.0.to_string()),
            role: invitation.map(|i| i.1.to_string()),
            invited_by: invitation.map(|i| i.2.to_string()),
            created_at: now.naive_utc(),
            expires_at: (now + ttl).naive_utc(),
            used_at: None,
        };
        self.store.insert_email_token(&t).await?;
        Ok((t, token))
    }

    /// A token for the link that verifies a user's address.
    pub async fn start_verification(&self, user: &User) -> Result<String> {
        self.email_token(
            "verify",
            &user.email,
            Some(&user.id),
            None,
            Duration::hours(VERIFY_HOURS),
        )
        .await
        .map(|(_, t)| t)
    }

    /// Uses a verification token; the verified user, or `None` for a bad or used link.
    pub async fn verify_email(&self, token: &str) -> Result<Option<User>> {
        let sha = super::sha256_hex(token);
        let Some(t) = self.store.email_token(&sha, "verify").await? else {
            return Ok(None);
        };
        let Some(user) = self
            .store
            .user(t.user_id.as_deref().unwrap_or_default())
            .await?
        else {
            return Ok(None);
        };
        // A link for an address the account no longer has proves nothing.
        if user.email != t.email || !self.store.use_email_token(&sha).await? {
            return Ok(None);
        }
        self.store.set_email_verified(&user.id).await?;
        self.audit(
            None,
            &format!("user:{}", user.id),
            None,
            "user.email_verified",
            serde_json::json!({ "email": user.email }),
        )
        .await;
        self.store.user(&user.id).await
    }

    /// A password reset token for the account with this email, if there is one.
    pub async fn start_password_reset(&self, email: &str) -> Result<Option<(User, String)>> {
        let Some(user) = self.user_by_email(email).await? else {
            return Ok(None);
        };
        let (_, token) = self
            .email_token(
                "reset",
                &user.email,
                Some(&user.id),
                None,
                Duration::minutes(RESET_MINUTES),
            )
            .await?;
        Ok(Some((user, token)))
    }

    /// Whether a reset token is live (to show its form).
    pub async fn reset_token_live(&self, token: &str) -> Result<bool> {
        Ok(self
            .store
            .email_token(&super::sha256_hex(token), "reset")
            .await?
            .is_some())
    }

    /// Sets a new password with a reset token. The password is checked before the token is
    /// used; the address is verified by the same proof. `None` for a bad or used link.
    pub async fn reset_password(&self, token: &str, password: &str) -> Result<Option<User>> {
        super::users::check_password_rules(password)?;
        let sha = super::sha256_hex(token);
        let Some(t) = self.store.email_token(&sha, "reset").await? else {
            return Ok(None);
        };
        let Some(user) = self
            .store
            .user(t.user_id.as_deref().unwrap_or_default())
            .await?
        else {
            return Ok(None);
        };
        if user.email != t.email {
            return Ok(None);
        }
        let hash = hash_password(password).await?;
        if !self.store.use_email_token(&sha).await? {
            return Ok(None);
        }
        self.store.set_password_hash(&user.id, &hash).await?;
        self.store.set_email_verified(&user.id).await?;
        self.audit(
            None,
            &format!("user:{}", user.id),
            None,
            "user.password_reset",
            serde_json::json!({}),
        )
        .await;
        self.store.user(&user.id).await
    }

    /// Invites an address to an organization with a role.
    pub async fn invite(
        &self,
        actor: &str,
        org: &Organization,
        email: &str,
        role: &str,
    ) -> Result<(EmailToken, String)> {
        let Some(email) = super::users::normalize_email(email) else {
            return Err(Error::Validation(format!(
                "`{}` is not an email address",
                email.chars().take(100).collect::<String>()
            )));
        };
        if role_rank(role).is_none() {
            return Err(Error::Validation(format!(
                "role `{role}` is not one of {}",
                super::users::ROLES.join(", ")
            )));
        }
        if let Some(u) = self.store.user_by_email(&email).await?
            && self.store.membership(&org.id, &u.id).await?.is_some()
        {
            return Err(Error::Validation(format!(
                "`{email}` is a member of `{}` already",
                org.slug
            )));
        }
        let out = self
            .email_token(
                "invite",
                &email,
                None,
                Some((&org.id, role, actor)),
                Duration::days(INVITE_DAYS),
            )
            .await?;
        self.audit(
            Some(&org.id),
            actor,
            None,
            "invitation.created",
            serde_json::json!({ "email": email, "role": role }),
        )
        .await;
        Ok(out)
    }

    /// The open invitation a token stands for, with its organization.
    pub async fn invitation(&self, token: &str) -> Result<Option<(EmailToken, Organization)>> {
        let Some(t) = self
            .store
            .email_token(&super::sha256_hex(token), "invite")
            .await?
        else {
            return Ok(None);
        };
        let org = self
            .store
            .organization(t.organization_id.as_deref().unwrap_or_default())
            .await?;
        Ok(org.map(|o| (t, o)))
    }

    /// Accepts an invitation as `user`, who must hold the invited address.
    pub async fn accept_invitation(&self, token: &str, user: &User) -> Result<Option<Membership>> {
        let sha = super::sha256_hex(token);
        let Some((t, org)) = self.invitation(token).await? else {
            return Ok(None);
        };
        if t.email != user.email {
            return Err(Error::Validation(format!(
                "this invitation is for {}, not for the account you signed in with",
                t.email
            )));
        }
        if !self.store.use_email_token(&sha).await? {
            return Ok(None);
        }
        // The link reached the address: it is verified.
        self.store.set_email_verified(&user.id).await?;
        let role = t.role.as_deref().unwrap_or("member");
        let actor = format!("user:{}", user.id);
        let m = self.add_member(&actor, &org.slug, &user.id, role).await?;
        self.audit(
            Some(&org.id),
            &actor,
            None,
            "invitation.accepted",
            serde_json::json!({ "email": t.email, "role": role, "invited_by": t.invited_by }),
        )
        .await;
        Ok(Some(m))
    }
}
