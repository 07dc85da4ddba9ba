//! Consent: a service learns who a person is only once the person has approved it (the
//! scopes it asks for), remembered per person and service, listed and revocable by the person.
//! An organization's own services (marked first-party) need no approval from its members, and
//! neither does Gatehouse's console.

use chrono::Utc;
use gatehouse_engine::Result;

use super::{CONSOLE_CLIENT, Identity};
use crate::db::tenancy::Service;

/// What each scope lets a service learn or do, as the consent page says it.
pub fn scope_description(scope: &str) -> &'static str {
    match scope {
        "openid" => "Know that it is you (your account's identifier)",
        "profile" => "See your name",
        "email" => "See your email address",
        "offline_access" => "Stay connected while you are away",
        _ => "Use an access of its own",
    }
}

impl Identity {
    /// Whether `user` must approve `scope` for `service` before it learns anything: not for
    /// the console, nor for a first-party service of an organization the user is a member of,
    /// nor when an earlier approval covers every scope asked; always when `forced`
    /// (`prompt=consent`).
    pub async fn needs_consent(
        &self,
        service: &Service,
        user: &str,
        scope: &str,
        forced: bool,
    ) -> Result<bool> {
        if forced {
            return Ok(true);
        }
        if service.client_id == CONSOLE_CLIENT {
            return Ok(false);
        }
        if service.first_party
            && self
                .store
                .membership(&service.organization_id, user)
                .await?
                .is_some()
        {
            return Ok(false);
        }
        let Some(given) = self.store.consent(user, &service.client_id).await? else {
            return Ok(true);
        };
        let given: Vec<&str> = given.scope.split(' ').collect();
        Ok(scope
            .split(' ')
            .filter(|s| !s.is_empty())
            .any(|s| !given.contains(&s)))
    }

    /// Records `user`'s approval of `scope` for `service`, added to what they approved before.
    pub async fn grant_consent(&self, user: &str, service: &Service, scope: &str) -> Result<()> {
        let mut scopes: Vec<String> = match self.store.consent(user, &service.client_id).await? {
            Some(c) => c.scope.split(' ').map(str::to_string).collect(),
            None => Vec::new(),
        };
        for s in scope.split(' ').filter(|s| !s.is_empty()) {
            if !scopes.iter().any(|x| x == s) {
                scopes.push(s.to_string());
            }
        }
        scopes.retain(|s| !s.is_empty());
        self.store
            .grant_consent(user, &service.client_id, &scopes.join(" "), Utc::now())
            .await?;
        self.audit(
            Some(&service.organization_id),
            &format!("user:{user}"),
            None,
            "consent.granted",
            serde_json::json!({ "client_id": service.client_id, "scope": scopes.join(" ") }),
        )
        .await;
        Ok(())
    }

    /// Withdraws `user`'s approval of `client_id`: the service's refresh tokens for them are
    /// revoked at once (its access tokens with them), and the next sign-in asks again. False
    /// when there was none.
    pub async fn revoke_consent(&self, user: &str, client_id: &str) -> Result<bool> {
        let Some(families) = self
            .store
            .revoke_consent(user, client_id, Utc::now())
            .await?
        else {
            return Ok(false);
        };
        for f in &families {
            self.revocations.note_family(f);
        }
        let org = self.service(client_id).await?.map(|s| s.organization_id);
        self.audit(
            org.as_deref(),
            &format!("user:{user}"),
            None,
            "consent.revoked",
            serde_json::json!({ "client_id": client_id, "token_families_revoked": families }),
        )
        .await;
        Ok(true)
    }
}
