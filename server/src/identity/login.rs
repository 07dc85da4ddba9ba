//! The seam where a login method is called. A login is a flow of steps run by a strategy
//! (DESIGN.md, "Authentication and tokens"): the hosted login page hands the submitted form
//! to the strategy's `complete`, which returns an identity assertion or a failure. Every
//! method is a plugin run by the plugin host (`gatehouse-plugin-host`); password login is the
//! first-party `password` plugin.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use gatehouse_plugin_host::{Failure as PluginFailure, Host, PluginError, StepRequest};

use super::Identity;
use super::users::{PasswordCheck, Throttle};
use crate::db::users::User;

/// What a login method proves about who is there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assertion {
    /// The Gatehouse user signed in, as the strategy read it when it settled the login
    /// (lockout checked): the sign-in goes on with it rather than reading it again.
    pub user: User,
    /// The authentication methods used (RFC 8176: `pwd`, `otp`, …).
    pub methods: Vec<String>,
}

/// Why a login step failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Unknown account or wrong credentials, told apart to nobody.
    InvalidCredentials { user: Option<String> },
    /// Too many failures from this address: locked until then (the user, when the account
    /// is known).
    Locked {
        user: Option<String>,
        until: DateTime<Utc>,
    },
    /// The form lacks what the method needs.
    BadRequest(String),
    /// The method cannot run now.
    Unavailable(String),
}

/// A login method.
#[async_trait::async_trait]
pub trait Strategy: Send + Sync {
    /// Its id, as named in the login form (`method=password`).
    fn id(&self) -> &str;
    /// Completes a login from the submitted form, for a service of `organization`.
    async fn complete(
        &self,
        identity: &Identity,
        organization: &str,
        form: &HashMap<String, String>,
    ) -> Result<Assertion, Failure>;
}

/// Counts and logs a plugin step that failed in the sandbox.
pub fn plugin_failed(failures: &prometheus::IntCounterVec, plugin: &str, e: &PluginError) {
    failures.with_label_values(&[plugin, e.kind()]).inc();
    tracing::error!(plugin, kind = e.kind(), error = %e, "a login plugin failed");
}

/// A login method run by a plugin in the sandbox of the plugin host.
///
/// The plugin checks the credentials; the host keeps the rules that must hold whatever a
/// plugin does. A strategy's assertion names a Gatehouse user, and lockouts count here: a
/// locked account is refused even when the plugin vouches for it, and a plugin's refusal
/// naming an account counts towards that account's lockout.
pub struct PluginStrategy<'a> {
    pub host: &'a Host,
    pub plugin: &'a str,
    /// The user signed in so far, when this is a second factor.
    pub user: Option<&'a str>,
    /// Failed steps by plugin and kind (`gatehouse_plugin_failures_total`).
    pub failures: &'a prometheus::IntCounterVec,
    /// Where attempts at a guessable secret (a password, a one-time code) are throttled per
    /// (account, address), and the client's address; `None` for a method that cannot be
    /// guessed (a passkey), which no lockout refuses.
    pub throttle: Option<(&'a dyn crate::cache::ephemeral::Ephemeral, String)>,
}

#[async_trait::async_trait]
impl Strategy for PluginStrategy<'_> {
    fn id(&self) -> &str {
        self.plugin
    }

    async fn complete(
        &self,
        identity: &Identity,
        organization: &str,
        form: &HashMap<String, String>,
    ) -> Result<Assertion, Failure> {
        let request = StepRequest {
            config: "{}".into(),
            // `purpose` is the server's to set (enrolment, removal), never a form's.
            params: form
                .iter()
                .filter(|(k, _)| k.as_str() != "purpose")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            flow_id: form.get("request").cloned().unwrap_or_default(),
            callback_url: String::new(),
            user_id: self.user.map(str::to_string),
        };
        let throttle = self.throttle.as_ref().map(|(kv, ip)| Throttle {
            kv: *kv,
            ip: ip.as_str(),
            credential: match self.user {
                Some(u) => format!("user:{u}"),
                None => {
                    let typed = form.get("email").map(String::as_str).unwrap_or_default();
                    let email = super::users::normalize_email(typed)
                        .unwrap_or_else(|| typed.trim().to_lowercase());
                    format!("email:{email}")
                }
            },
        });
        // A locked credential is refused before the plugin (and its hashing) runs.
        if let Some(t) = &throttle {
            match t.locked().await {
                Ok(None) => {}
                Ok(Some(until)) => {
                    return Err(Failure::Locked {
                        user: self.user.map(str::to_string),
                        until,
                    });
                }
                Err(e) => return Err(Failure::Unavailable(e.to_string())),
            }
        }
        let answer = match self.host.complete(self.plugin, organization, request).await {
            Ok(a) => a,
            Err(e) => {
                plugin_failed(self.failures, self.plugin, &e);
                return Err(Failure::Unavailable(e.to_string()));
            }
        };
        let settle = |check: gatehouse_engine::Result<PasswordCheck>| match check {
            Ok(PasswordCheck::Valid(u)) => Ok(u),
            Ok(PasswordCheck::Invalid { user }) => Err(Failure::InvalidCredentials {
                user: user.map(|u| u.id),
            }),
            Ok(PasswordCheck::Locked { user, until }) => Err(Failure::Locked {
                user: Some(user.id),
                until,
            }),
            Err(e) => Err(Failure::Unavailable(e.to_string())),
        };
        match answer {
            Ok(a) => {
                // A second factor vouches for the user of the first, and no other.
                if self.user.is_some_and(|u| u != a.subject) {
                    return Err(Failure::Unavailable(format!(
                        "plugin `{}` vouched for another user than the one signing in",
                        self.plugin
                    )));
                }
                let user = settle(
                    identity
                        .settle_login(&a.subject, true, throttle.as_ref())
                        .await,
                )?;
                Ok(Assertion {
                    user,
                    methods: a.methods,
                })
            }
            Err(PluginFailure::InvalidCredentials(Some(user))) => {
                match settle(identity.settle_login(&user, false, throttle.as_ref()).await) {
                    Ok(u) => Err(Failure::InvalidCredentials { user: Some(u.id) }),
                    Err(f) => Err(f),
                }
            }
            // No such account: counted like a wrong password, so that it locks the same way.
            Err(PluginFailure::InvalidCredentials(None)) => match &throttle {
                Some(t) => match t.failed().await {
                    Ok(None) => Err(Failure::InvalidCredentials { user: None }),
                    Ok(Some(until)) => Err(Failure::Locked { user: None, until }),
                    Err(e) => Err(Failure::Unavailable(e.to_string())),
                },
                None => Err(Failure::InvalidCredentials { user: None }),
            },
            Err(PluginFailure::BadRequest(m)) => Err(Failure::BadRequest(m)),
            Err(PluginFailure::Unavailable(m)) => Err(Failure::Unavailable(m)),
        }
    }
}

/// Who an identity provider's assertion signs in, or why nobody.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderUser {
    /// The linked user (linked now, or created now and linked).
    User(User),
    /// The user signed in in this browser, whose address the provider vouches for: linked once
    /// they confirm ([`Identity::link_provider_account`]).
    Link(User),
    /// An address the provider vouches for that no account of its is linked to yet: whoever
    /// signs in proves it first with a code sent there ([`Identity::proven_provider_user`]).
    /// Asked whether or not a Gatehouse account has the address, so the answer does not tell.
    Prove {
        email: String,
        /// The new account's name, should one be created.
        name: String,
    },
    /// Nobody: the message says why, for the login page.
    Refused(String),
}

/// The key an identity provider's accounts are kept under: the organization that configured
/// the provider, then the provider as it names itself (issuer, entity id). Two organizations
/// that configure "the same" provider hold two separate sets of accounts, so that one cannot
/// sign in as the other's users by configuring their provider's name with its own keys.
pub fn provider_key(organization: &str, provider: &str) -> String {
    format!("{organization}|{provider}")
}

impl Identity {
    /// The user an identity provider's assertion (through `plugin`, configured by
    /// `organization`) signs in:
    /// - the user its account (under [`provider_key`]) is linked to;
    /// - else, when the provider vouches for the email address of the user signed in in this
    ///   browser (`signed_in`), that user, to link once they confirm;
    /// - else, when it vouches for an address, [`ProviderUser::Prove`]: a code goes to the
    ///   address, and [`Identity::proven_provider_user`] settles who signs in once it comes
    ///   back. Whether an account has the address is not looked at here, so an organization's
    ///   provider cannot learn it by asserting addresses; and an account is never linked to an
    ///   existing user, nor created with an address, on a provider's word alone, since any
    ///   organization may configure a provider, and one that vouched falsely for someone's
    ///   address would take over their account or their address.
    pub async fn user_for_provider(
        &self,
        plugin: &str,
        organization: &str,
        display_name: &str,
        a: &gatehouse_plugin_host::Assertion,
        signed_in: Option<&str>,
    ) -> gatehouse_engine::Result<ProviderUser> {
        let provider = provider_key(organization, &a.provider);
        if a.subject.is_empty() || a.subject.len() > 255 || a.provider.len() > 512 {
            return Ok(ProviderUser::Refused(format!(
                "{display_name} answered with an account this server cannot use."
            )));
        }
        if let Some(id) = self
            .store
            .external_identity(plugin, &provider, &a.subject)
            .await?
        {
            return Ok(match self.store.user(&id).await? {
                Some(u) => ProviderUser::User(u),
                None => ProviderUser::Refused("The account linked to it no longer exists.".into()),
            });
        }
        let email = a
            .email
            .as_deref()
            .filter(|_| a.email_verified)
            .and_then(super::users::normalize_email);
        let Some(email) = email else {
            return Ok(ProviderUser::Refused(format!(
                "{display_name} did not vouch for a verified email address, which signing in here needs."
            )));
        };
        if let Some(id) = signed_in
            && let Some(u) = self.store.user(id).await?
            && u.email == email
        {
            return Ok(ProviderUser::Link(u));
        }
        Ok(ProviderUser::Prove {
            email,
            name: display_name_of(&a.claims),
        })
    }

    /// Who signs in with a provider's account (`subject` at `provider` through `plugin`,
    /// configured by `organization`) once the person proved `email`, the address the provider
    /// vouched for, with the code sent there: the account with that address, now linked (its
    /// owner proved the address); else, when `may_create`, a new account with it, verified and
    /// linked; else nobody. The provider's account may have been linked meanwhile (another
    /// sign-in racing this one): then its user.
    #[allow(clippy::too_many_arguments)]
    pub async fn proven_provider_user(
        &self,
        plugin: &str,
        organization: &str,
        provider: &str,
        subject: &str,
        email: &str,
        name: &str,
        may_create: bool,
    ) -> gatehouse_engine::Result<ProviderUser> {
        let key = provider_key(organization, provider);
        let linked_user = |id: Option<String>| async move {
            Ok::<_, gatehouse_engine::Error>(match id {
                Some(id) => match self.store.user(&id).await? {
                    Some(u) => Some(ProviderUser::User(u)),
                    None => Some(ProviderUser::Refused(
                        "The account linked to it no longer exists.".into(),
                    )),
                },
                None => None,
            })
        };
        if let Some(found) =
            linked_user(self.store.external_identity(plugin, &key, subject).await?).await?
        {
            return Ok(found);
        }
        if let Some(u) = self.store.user_by_email(email).await? {
            self.link_provider_account(plugin, organization, provider, subject, &u)
                .await?;
            return Ok(ProviderUser::User(u));
        }
        if !may_create {
            return Ok(ProviderUser::Refused(
                "No account here has this address, and this server does not create accounts on sign-in."
                    .into(),
            ));
        }
        let now = Utc::now();
        let user = User {
            id: ulid::Ulid::new().to_string().to_lowercase(),
            email: email.to_string(),
            // Proven just now, through Gatehouse's own email check.
            email_verified: true,
            name: name.to_string(),
            password_hash: None,
            failed_logins: 0,
            locked_until: None,
            created_at: now,
            updated_at: now,
        };
        use crate::db::users::NewExternalUser;
        match self
            .store
            .create_external_user(&user, plugin, &key, subject)
            .await?
        {
            NewExternalUser::Created(u) => {
                self.audit(
                    Some(organization),
                    &format!("user:{}", u.id),
                    None,
                    "user.created",
                    serde_json::json!({ "email": u.email, "plugin": plugin, "provider": provider }),
                )
                .await;
                Ok(ProviderUser::User(u))
            }
            // Someone took the address meanwhile: they own it as much as this person does
            // (both proved it), so the provider's account is theirs.
            NewExternalUser::EmailTaken => match self.store.user_by_email(email).await? {
                Some(u) => {
                    self.link_provider_account(plugin, organization, provider, subject, &u)
                        .await?;
                    Ok(ProviderUser::User(u))
                }
                None => Err(gatehouse_engine::Error::Unavailable(
                    "an account was created and removed at once".into(),
                )),
            },
            NewExternalUser::Linked(id) => Ok(linked_user(Some(id)).await?.unwrap_or_else(|| {
                ProviderUser::Refused("The account linked to it no longer exists.".into())
            })),
        }
    }

    /// Links the provider's account `subject` (through `plugin`, configured by
    /// `organization`) to `user`, who confirmed it while signed in.
    pub async fn link_provider_account(
        &self,
        plugin: &str,
        organization: &str,
        provider: &str,
        subject: &str,
        user: &User,
    ) -> gatehouse_engine::Result<()> {
        self.store
            .link_external_identity(
                plugin,
                &provider_key(organization, provider),
                subject,
                &user.id,
                Some(&user.email),
            )
            .await?;
        self.audit(
            Some(organization),
            &format!("user:{}", user.id),
            None,
            "user.identity_linked",
            serde_json::json!({ "plugin": plugin, "provider": provider }),
        )
        .await;
        Ok(())
    }
}

/// A new user's name from a provider's claims: `name`, else `given_name` and `family_name`;
/// without control characters, at most 200 characters.
fn display_name_of(claims: &str) -> String {
    let claims = serde_json::from_str::<serde_json::Value>(claims).unwrap_or_default();
    let text = |k: &str| {
        claims
            .get(k)
            .and_then(|v| v.as_str())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let name = match text("name") {
        Some(n) => n.to_string(),
        None => [text("given_name"), text("family_name")]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" "),
    };
    name.chars().filter(|c| !c.is_control()).take(200).collect()
}

/// The first-party plugin that serves second factors.
pub const SECOND_FACTOR: &str = "totp";
/// The plugin of passkeys: a second factor, or a first that needs no other.
pub const PASSKEY: &str = "passkey";

/// The second factors a user has set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SecondFactors {
    /// An authenticator app (`totp`).
    pub totp: bool,
    /// One or more passkeys (`passkey`).
    pub passkey: bool,
}

impl SecondFactors {
    pub fn any(self) -> bool {
        self.totp || self.passkey
    }
}

impl Identity {
    /// Whether `user` has a second factor set up (an authenticator app, a passkey): then
    /// every sign-in asks for it.
    pub async fn has_second_factor(&self, user: &str) -> gatehouse_engine::Result<bool> {
        Ok(self.second_factors(user).await?.any())
    }

    /// The second factors `user` has set up.
    pub async fn second_factors(&self, user: &str) -> gatehouse_engine::Result<SecondFactors> {
        let (totp, passkey) = self
            .store
            .plugin_credentials_held(user, (SECOND_FACTOR, "secret"), (PASSKEY, "passkeys"))
            .await?;
        Ok(SecondFactors { totp, passkey })
    }
}

#[cfg(test)]
mod tests {
    use super::display_name_of;

    #[test]
    fn a_new_users_name_comes_from_the_providers_claims() {
        assert_eq!(
            display_name_of(r#"{"name":"Ada Lovelace","given_name":"A"}"#),
            "Ada Lovelace"
        );
        assert_eq!(
            display_name_of(r#"{"given_name":"Ada","family_name":"Lovelace"}"#),
            "Ada Lovelace"
        );
        assert_eq!(display_name_of(r#"{"family_name":"Lovelace"}"#), "Lovelace");
        assert_eq!(
            display_name_of(r#"{"name":"  ","given_name":"Ada"}"#),
            "Ada"
        );
        assert_eq!(display_name_of(r#"{"name":"Ada\u0007\nL"}"#), "AdaL");
        assert_eq!(
            display_name_of(&format!(r#"{{"name":"{}"}}"#, "x".repeat(300))).len(),
            200
        );
        assert_eq!(display_name_of("not json"), "");
        assert_eq!(display_name_of(r#"{"name":3}"#), "");
    }
}
