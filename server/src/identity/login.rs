//! The seam where a login method is called. A login is a flow of steps run by a strategy
//! (DESIGN.md, "Authentication and tokens"): the hosted login page hands the submitted form
//! to the strategy's `complete`, which returns an identity assertion or a failure. Password
//! login is built in; the plugin host will carry every method through this same seam.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::Identity;
use super::users::PasswordCheck;
use crate::db::users::User;

/// What a login method proves about who is there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assertion {
    /// The strategy or identity provider (`password`, …).
    pub provider: String,
    /// The subject at that provider (for `password`, the user's id).
    pub subject: String,
    pub email: Option<String>,
    pub email_verified: bool,
    /// The authentication methods used (RFC 8176: `pwd`, `otp`, …).
    pub methods: Vec<String>,
}

/// Why a login step failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Unknown account or wrong credentials, told apart to nobody.
    InvalidCredentials { user: Option<String> },
    /// Too many failures: locked until then.
    Locked { user: String, until: DateTime<Utc> },
    /// The form lacks what the method needs.
    BadRequest(String),
    /// The method cannot run now.
    Unavailable(String),
}

/// A login method.
#[async_trait::async_trait]
pub trait Strategy: Send + Sync {
    /// Its id, as named in the login form (`method=password`).
    fn id(&self) -> &'static str;
    /// Completes a login from the submitted form.
    async fn complete(
        &self,
        identity: &Identity,
        form: &HashMap<String, String>,
    ) -> Result<Assertion, Failure>;
}

/// Email and password, verified against the Argon2id hash.
#[derive(Debug, Default)]
pub struct Password;

#[async_trait::async_trait]
impl Strategy for Password {
    fn id(&self) -> &'static str {
        "password"
    }

    async fn complete(
        &self,
        identity: &Identity,
        form: &HashMap<String, String>,
    ) -> Result<Assertion, Failure> {
        let email = form.get("email").map(|e| e.trim()).unwrap_or_default();
        let password = form.get("password").map(String::as_str).unwrap_or_default();
        if email.is_empty() || password.is_empty() {
            return Err(Failure::BadRequest(
                "enter your email address and your password".into(),
            ));
        }
        match identity.check_password(email, password).await {
            Ok(PasswordCheck::Valid(u)) => Ok(Assertion {
                provider: self.id().into(),
                subject: u.id,
                email: Some(u.email),
                email_verified: u.email_verified,
                methods: vec!["pwd".into()],
            }),
            Ok(PasswordCheck::Invalid { user }) => Err(Failure::InvalidCredentials {
                user: user.map(|u| u.id),
            }),
            Ok(PasswordCheck::Locked { user, until }) => Err(Failure::Locked {
                user: user.id,
                until,
            }),
            Err(e) => Err(Failure::Unavailable(e.to_string())),
        }
    }
}

impl Identity {
    /// The user an assertion is about. For `password` the subject is the user's id; linking
    /// accounts of external providers comes with the plugin host.
    pub async fn user_for(&self, a: &Assertion) -> gatehouse_engine::Result<Option<User>> {
        match a.provider.as_str() {
            "password" => self.store.user(&a.subject).await,
            _ => Ok(None),
        }
    }
}
