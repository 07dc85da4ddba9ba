//! Tenancy: the platform's own authorization store, organizations and their services (OIDC
//! clients), and the decision that precedes every token.
//!
//! Management and sign-in permissions live in the platform store (`policies/platform/`): an
//! ordinary Gatehouse store with the platform's model and Cedar policies, created on first
//! start. Creating an organization or a service writes the tuples that place it in that graph.

use std::sync::Arc;

use chrono::Utc;
use gatehouse_engine::service::{Consistency, Decision, DecisionRequest, Engine};
use gatehouse_engine::tuple::TupleKey;
use gatehouse_engine::{Error, Result};

use crate::db::SqlStore;
use crate::db::tenancy::{Organization, Service, TierLimits};

pub mod consent;
pub mod email;
pub mod harness;
pub mod login;
pub mod plugins;
pub mod providers;
pub mod users;

const PLATFORM_MODEL: &str = include_str!("../../policies/platform/model.fga");
const PLATFORM_POLICIES: &str = include_str!("../../policies/platform/platform.cedar");
const PLATFORM_SCHEMA: &str = include_str!("../../policies/platform/schema.json");
/// The platform object of the platform store.
pub const PLATFORM: &str = "platform:gatehouse";
/// The actor of management changes made by the platform's operator (the admin commands).
pub const OPERATOR: &str = "operator";
/// The client_id of the console: a public client of the platform itself that anyone with an
/// account signs in to, to register organizations and manage what they belong to.
pub const CONSOLE_CLIENT: &str = "gatehouse-console";
/// The slug of the platform's own organization, which holds the console (not a valid tenant
/// slug, so no tenant can take it).
pub const PLATFORM_ORG_SLUG: &str = "_platform";
/// The tier every organization starts on unless told otherwise.
pub const FREE_TIER: &str = "free";
const FREE_LIMITS: TierLimits = TierLimits {
    max_users: 50,
    max_services: 5,
};
/// The grant types a service may be given.
pub const GRANT_TYPES: [&str; 4] = [
    "authorization_code",
    "client_credentials",
    "refresh_token",
    "urn:ietf:params:oauth:grant-type:device_code",
];

/// Organizations, services and the platform store.
pub struct Identity {
    pub store: Arc<SqlStore>,
    pub engine: Arc<Engine>,
    /// The platform's authorization store.
    pub platform_store: String,
    /// Revoked tokens and refresh families, in memory.
    pub revocations: Arc<crate::oidc::revocations::Revocations>,
    /// Services by client_id, read on every token request. A change made on this node drops
    /// its entry at once; one made on another node, within [`Identity::spawn_refresh`]'s
    /// period (1 s), when this node reads which services changed.
    services: moka::sync::Cache<String, Service>,
    /// Service API keys looked up lately, by the SHA-256 of the key: the organization of a
    /// live key, `None` for one that is not. A revocation made on this node drops its entry at
    /// once; one made elsewhere, within [`Identity::spawn_refresh`]'s period (1 s).
    pub api_keys: moka::sync::Cache<[u8; 32], Option<(String, String)>>,
    /// Organizations known to be active (an organization leaves `active` only by suspension,
    /// which the graph carries).
    active_orgs: moka::sync::Cache<String, ()>,
    /// Organizations by id, read for the branding of every login page. Kept current like
    /// `services`: a change made on this node drops its entry at once; one made elsewhere,
    /// within [`Identity::spawn_refresh`]'s period (1 s).
    organizations: moka::sync::Cache<String, Organization>,
}

/// How far back each read of changed services or new revocations reaches before the previous
/// one: longer than a write takes to commit after taking its timestamp, and than the nodes'
/// clocks may differ.
const CHANGE_OVERLAP: chrono::Duration = chrono::Duration::seconds(5);
/// How often a node reads every live revocation rather than the newer ones.
const FULL_REVOCATION_READ: std::time::Duration = std::time::Duration::from_secs(60);

/// Largest limit a tier may set.
const MAX_TIER_LIMIT: i64 = 10_000_000;

/// What a service update changes.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceChange {
    pub name: Option<String>,
    pub redirect_uris: Option<Vec<String>>,
    pub grant_types: Option<Vec<String>>,
    /// Whether the organization's members sign in without a consent page.
    pub first_party: Option<bool>,
}

tokio::task_local! {
    /// The address of the client a request is served for: audit events written while it is
    /// served carry it when their caller gives none (the management API sets it).
    pub static REQUEST_IP: Option<String>;
}

/// How long a node keeps a service or an organization's status it has read.
const TENANCY_CACHE: std::time::Duration = std::time::Duration::from_secs(60);

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("platform_store", &self.platform_store)
            .finish_non_exhaustive()
    }
}

/// A new service and its secret, which is shown this once and stored only as a hash.
#[derive(Debug, serde::Serialize)]
pub struct CreatedService {
    #[serde(flatten)]
    pub service: Service,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
}

use crate::secrets::{random_token, sha256_hex};

/// Slugs: 2 to 63 of `a-z`, `0-9` and `-`, not starting or ending with `-`.
fn valid_slug(s: &str) -> bool {
    (2..=63).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn valid_name(s: &str) -> bool {
    let n = s.trim().chars().count();
    (1..=200).contains(&n) && !s.chars().any(char::is_control)
}

/// `#rgb` or `#rrggbb`.
pub fn valid_color(c: &str) -> bool {
    c.strip_prefix('#')
        .is_some_and(|h| (h.len() == 3 || h.len() == 6) && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// An absolute https URL, or http to a loopback host (`127.0.0.1`, `[::1]`, `localhost`), of
/// at most 2000 bytes, without a fragment, credentials, quotes or spaces.
pub fn https_or_loopback(u: &str) -> bool {
    if u.len() > 2000
        || u.chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '"' | '\'' | '<' | '>'))
    {
        return false;
    }
    let Ok(parsed) = url::Url::parse(u) else {
        return false;
    };
    let loopback = match parsed.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    let scheme_ok = match parsed.scheme() {
        "https" => parsed.host().is_some(),
        "http" => loopback,
        _ => false,
    };
    scheme_ok
        && parsed.fragment().is_none()
        && !u.contains('#')
        && parsed.username().is_empty()
        && parsed.password().is_none()
}

/// A logo URL: [`https_or_loopback`].
pub fn valid_logo_url(u: &str) -> bool {
    https_or_loopback(u)
}

/// Checks branding values: a logo URL by [`valid_logo_url`], a color by [`valid_color`].
pub fn check_branding(logo_url: Option<&str>, primary_color: Option<&str>) -> Result<()> {
    if let Some(u) = logo_url
        && !valid_logo_url(u)
    {
        return Err(Error::Validation(format!(
            "`logo_url` must be an https URL (http only on loopback), got `{u}`"
        )));
    }
    if let Some(c) = primary_color
        && !valid_color(c)
    {
        return Err(Error::Validation(format!(
            "`primary_color` must be `#rgb` or `#rrggbb`, got `{c}`"
        )));
    }
    Ok(())
}

/// The error for a service that does not exist (or no longer does).
fn gone(client_id: &str) -> Error {
    Error::Validation(format!("service `{client_id}` does not exist"))
}

/// Checks a service's fields: a name, known grant types (no client credentials for a public
/// client), and absolute https redirect URIs (http only on loopback) without fragments, at
/// least one for the authorization code grant.
fn validate_service(
    name: &str,
    grant_types: &[String],
    redirect_uris: &[String],
    public: bool,
) -> Result<()> {
    if !valid_name(name) {
        return Err(Error::Validation(
            "`name` must be 1 to 200 characters without control characters".into(),
        ));
    }
    if grant_types.is_empty() {
        return Err(Error::Validation(
            "at least one grant type is required".into(),
        ));
    }
    if let Some(g) = grant_types
        .iter()
        .find(|g| !GRANT_TYPES.contains(&g.as_str()))
    {
        return Err(Error::Validation(format!(
            "grant type `{g}` is not supported ({})",
            GRANT_TYPES.join(", ")
        )));
    }
    if public && grant_types.iter().any(|g| g == "client_credentials") {
        return Err(Error::Validation(
            "a public client cannot use client_credentials (it holds no secret)".into(),
        ));
    }
    if redirect_uris.len() > 20 {
        return Err(Error::Validation(
            "at most 20 redirect URIs per service".into(),
        ));
    }
    if let Some(uri) = redirect_uris.iter().find(|u| !https_or_loopback(u)) {
        return Err(Error::Validation(format!(
            "redirect URI `{uri}` must be an absolute https URL (http only on loopback) without a fragment or credentials"
        )));
    }
    if grant_types.iter().any(|g| g == "authorization_code") && redirect_uris.is_empty() {
        return Err(Error::Validation(
            "authorization_code needs at least one redirect URI".into(),
        ));
    }
    Ok(())
}

impl Identity {
    /// Opens the platform: creates the free tier and the platform store (model and policies)
    /// on first start; nodes starting together agree on one store.
    pub async fn bootstrap(store: Arc<SqlStore>, engine: Arc<Engine>) -> anyhow::Result<Self> {
        store.ensure_tier(FREE_TIER, FREE_LIMITS).await?;
        let platform_store = match store.platform_store().await? {
            Some(s) => {
                upgrade_platform(&engine, &s).await?;
                s
            }
            None => {
                let created = engine.create_store("gatehouse-platform").await?;
                let model = gatehouse_engine::model::parse_dsl(PLATFORM_MODEL)?;
                engine.write_model(&created.id, model).await?;
                let schema: serde_json::Value = serde_json::from_str(PLATFORM_SCHEMA)?;
                engine
                    .write_policies(&created.id, PLATFORM_POLICIES, Some(schema), vec![], true)
                    .await?;
                // A new account's first login is the baseline of its history, not a risk.
                let mut rules = gatehouse_engine::risk::RiskRules::default();
                rules.score_first_sighting = false;
                engine.set_risk_rules(&created.id, rules).await?;
                let claimed = store.claim_platform_store(&created.id).await?;
                if claimed != created.id {
                    // Another node created it first.
                    engine.delete_store(&created.id).await?;
                }
                claimed
            }
        };
        let revocations = crate::oidc::revocations::Revocations::load(store.clone()).await?;
        Ok(Self {
            store,
            engine,
            platform_store,
            revocations,
            services: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(TENANCY_CACHE)
                .build(),
            api_keys: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(TENANCY_CACHE)
                .build(),
            active_orgs: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(TENANCY_CACHE)
                .build(),
            organizations: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(TENANCY_CACHE)
                .build(),
        })
    }

    /// Writes and deletes platform tuples; writing one that exists or deleting one that does
    /// not is not an error.
    async fn write_tuples(&self, writes: &[TupleKey], deletes: &[TupleKey]) -> Result<()> {
        self.engine
            .write(
                &self.platform_store,
                None,
                writes,
                deletes,
                gatehouse_engine::store::WriteOptions {
                    ignore_duplicates: true,
                    ignore_missing: true,
                },
            )
            .await
            .map(|_| ())
    }

    /// Registers an organization, `pending` until the platform owner approves it.
    pub async fn create_organization(
        &self,
        actor: &str,
        slug: &str,
        name: &str,
        tier: Option<&str>,
    ) -> Result<Organization> {
        if !valid_slug(slug) {
            return Err(Error::Validation(format!(
                "`slug` must be 2 to 63 of a-z, 0-9 and `-` (not at either end), got `{slug}`"
            )));
        }
        if !valid_name(name) {
            return Err(Error::Validation(
                "`name` must be 1 to 200 characters without control characters".into(),
            ));
        }
        let tier = tier.unwrap_or(FREE_TIER);
        if self.store.tier(tier).await?.is_none() {
            return Err(Error::Validation(format!("tier `{tier}` does not exist")));
        }
        let now = Utc::now();
        let org = Organization {
            id: ulid::Ulid::new().to_string().to_lowercase(),
            slug: slug.into(),
            name: name.trim().into(),
            tier: tier.into(),
            status: "pending".into(),
            created_at: now,
            updated_at: now,
            logo_url: None,
            primary_color: None,
        };
        // The tuple first: an organization row never exists outside the graph.
        let org_tuple = TupleKey::new(PLATFORM, "platform", format!("organization:{}", org.id));
        self.write_tuples(std::slice::from_ref(&org_tuple), &[])
            .await?;
        if !self.store.insert_organization(&org).await? {
            // Take back the tuple of the organization that was not created.
            self.write_tuples(&[], &[org_tuple]).await?;
            return Err(Error::Validation(format!(
                "an organization with slug `{slug}` exists already"
            )));
        }
        self.audit(
            Some(&org.id),
            actor,
            None,
            "organization.created",
            serde_json::json!({ "slug": org.slug, "tier": org.tier }),
        )
        .await;
        Ok(org)
    }

    /// A service by client_id (cached).
    pub async fn service(&self, client_id: &str) -> Result<Option<Service>> {
        if let Some(s) = self.services.get(client_id) {
            return Ok(Some(s));
        }
        let s = self.store.service(client_id).await?;
        if let Some(s) = &s {
            self.services.insert(client_id.to_string(), s.clone());
        }
        Ok(s)
    }

    /// Whether the organization `org_id` is suspended for its services and their API keys
    /// (`organization:<id>#suspended@service:*`), asked of the platform store at this node's
    /// revision: a suspension made through this node counts at once, one made elsewhere
    /// within the engine's staleness bound.
    pub async fn organization_suspended(&self, org_id: &str, client_id: &str) -> Result<bool> {
        let opts = gatehouse_engine::service::QueryOptions {
            model_id: None,
            consistency: Consistency::MinimizeLatency,
            contextual_tuples: Vec::new(),
            context: None,
        };
        let tuple = TupleKey::new(
            format!("service:{client_id}"),
            "suspended",
            format!("organization:{org_id}"),
        );
        Ok(self
            .engine
            .check(&self.platform_store, &tuple, &opts)
            .await?
            .0)
    }

    /// An organization by id (cached).
    pub async fn organization(&self, id: &str) -> Result<Option<Organization>> {
        if let Some(o) = self.organizations.get(id) {
            return Ok(Some(o));
        }
        let o = self.store.organization(id).await?;
        if let Some(o) = &o {
            self.organizations.insert(id.to_string(), o.clone());
        }
        Ok(o)
    }

    pub async fn organization_by_slug(&self, slug: &str) -> Result<Organization> {
        self.store
            .organization_by_slug(slug)
            .await?
            .ok_or_else(|| Error::Validation(format!("organization `{slug}` does not exist")))
    }

    /// Approves (`active`) or rejects a pending organization.
    pub async fn decide_organization(
        &self,
        actor: &str,
        slug: &str,
        approve: bool,
    ) -> Result<Organization> {
        let org = self.organization_by_slug(slug).await?;
        if org.status != "pending" {
            return Err(Error::Validation(format!(
                "organization `{slug}` is {}, not pending",
                org.status
            )));
        }
        let status = if approve { "active" } else { "rejected" };
        self.store.set_organization_status(&org.id, status).await?;
        self.organizations.invalidate(&org.id);
        self.audit(
            Some(&org.id),
            actor,
            None,
            &format!("organization.{status}"),
            serde_json::json!({ "slug": slug }),
        )
        .await;
        self.organization_by_slug(slug).await
    }

    /// Sets the branding of an organization's login pages (logo URL, primary color).
    pub async fn brand_organization(
        &self,
        actor: &str,
        slug: &str,
        logo_url: Option<&str>,
        primary_color: Option<&str>,
    ) -> Result<Organization> {
        check_branding(logo_url, primary_color)?;
        let org = self.organization_by_slug(slug).await?;
        self.store
            .set_organization_branding(&org.id, logo_url, primary_color)
            .await?;
        self.organizations.invalidate(&org.id);
        self.audit(
            Some(&org.id),
            actor,
            None,
            "organization.branded",
            serde_json::json!({ "logo_url": logo_url, "primary_color": primary_color }),
        )
        .await;
        self.organization_by_slug(slug).await
    }

    /// Suspends an organization and its services (for people and for services signing in
    /// as themselves), or lifts the suspension.
    pub async fn suspend_organization(
        &self,
        actor: &str,
        slug: &str,
        suspend: bool,
    ) -> Result<Organization> {
        let org = self.organization_by_slug(slug).await?;
        let object = format!("organization:{}", org.id);
        let tuples = [
            TupleKey::new("user:*", "suspended", &object),
            TupleKey::new("service:*", "suspended", &object),
        ];
        if suspend {
            self.write_tuples(&tuples, &[]).await?;
        } else {
            self.write_tuples(&[], &tuples).await?;
        }
        let kind = if suspend {
            "organization.suspended"
        } else {
            "organization.unsuspended"
        };
        self.audit(
            Some(&org.id),
            actor,
            None,
            kind,
            serde_json::json!({ "slug": slug }),
        )
        .await;
        Ok(org)
    }

    /// Adds a service to an active organization within its tier's limit. A confidential
    /// client gets a secret (returned once, stored as its SHA-256); a public one (PKCE) none.
    #[expect(
        clippy::too_many_arguments,
        reason = "one flag each, named at every call"
    )]
    pub async fn create_service(
        &self,
        actor: &str,
        org_slug: &str,
        name: &str,
        grant_types: Vec<String>,
        redirect_uris: Vec<String>,
        public: bool,
        first_party: bool,
    ) -> Result<CreatedService> {
        let org = self.organization_by_slug(org_slug).await?;
        if org.status != "active" {
            return Err(Error::Validation(format!(
                "organization `{org_slug}` is {}: services can be added once it is active",
                org.status
            )));
        }
        validate_service(name, &grant_types, &redirect_uris, public)?;
        let limits = self
            .store
            .tier(&org.tier)
            .await?
            .ok_or_else(|| Error::Storage(format!("tier `{}` is missing", org.tier)))?;
        if self.store.count_services(&org.id).await? >= limits.max_services {
            return Err(Error::Validation(format!(
                "organization `{org_slug}` has reached its tier's limit of {} services",
                limits.max_services
            )));
        }
        let client_id = format!("svc_{}", ulid::Ulid::new().to_string().to_lowercase());
        let secret = if public {
            None
        } else {
            Some(random_token("cs_")?)
        };
        let service = Service {
            client_id: client_id.clone(),
            organization_id: org.id.clone(),
            name: name.trim().into(),
            secret_sha256: secret.as_deref().map(sha256_hex),
            redirect_uris,
            grant_types,
            first_party,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        };
        let object = format!("service:{client_id}");
        let tuples = [
            TupleKey::new(format!("organization:{}", org.id), "organization", &object),
            TupleKey::new(&object, "authenticate", &object),
        ];
        self.write_tuples(&tuples, &[]).await?;
        let added = self
            .store
            .insert_service_within(&service, limits.max_services)
            .await;
        if !matches!(added, Ok(true)) {
            // Take back the tuples of the service that was not created.
            if let Err(undo) = self.write_tuples(&[], &tuples).await {
                tracing::error!(error = %undo, client_id, "cannot remove the tuples of a service that was not created");
            }
            added?;
            return Err(Error::Validation(format!(
                "organization `{org_slug}` has reached its tier's limit of {} services",
                limits.max_services
            )));
        }
        self.audit(
            Some(&org.id),
            actor,
            None,
            "service.created",
            serde_json::json!({ "client_id": service.client_id, "name": service.name, "grant_types": service.grant_types, "redirect_uris": service.redirect_uris }),
        )
        .await;
        Ok(CreatedService {
            service,
            client_secret: secret,
        })
    }

    /// Drops the key with this SHA-256 (hex) from the API-key cache.
    pub fn forget_api_key(&self, key_sha256: &str) {
        if let Ok(digest) = hex::decode(key_sha256)
            && let Ok(digest) = <[u8; 32]>::try_from(digest)
        {
            self.api_keys.invalidate(&digest);
        }
    }

    /// The live service `client_id`, read from the database (not the cache).
    async fn live_service(&self, client_id: &str) -> Result<Service> {
        self.store
            .service(client_id)
            .await?
            .ok_or_else(|| gone(client_id))
    }

    /// Changes a service's name, redirect URIs or grant types (what is `None` stays). Sessions
    /// and tokens issued before stay valid; a redirect URI that is removed is refused from now
    /// on.
    pub async fn update_service(
        &self,
        actor: &str,
        client_id: &str,
        change: ServiceChange,
    ) -> Result<Service> {
        let mut s = self.live_service(client_id).await?;
        if let Some(name) = change.name {
            s.name = name.trim().into();
        }
        if let Some(uris) = change.redirect_uris {
            s.redirect_uris = uris;
        }
        if let Some(grants) = change.grant_types {
            s.grant_types = grants;
        }
        if let Some(first_party) = change.first_party {
            s.first_party = first_party;
        }
        validate_service(&s.name, &s.grant_types, &s.redirect_uris, s.is_public())?;
        if !self.store.update_service(&s).await? {
            return Err(gone(client_id));
        }
        self.services.invalidate(client_id);
        self.audit(
            Some(&s.organization_id),
            actor,
            None,
            "service.updated",
            serde_json::json!({ "client_id": client_id, "name": s.name, "grant_types": s.grant_types, "redirect_uris": s.redirect_uris, "first_party": s.first_party }),
        )
        .await;
        self.live_service(client_id).await
    }

    /// Gives a confidential service a new secret (returned once, stored as its SHA-256); the
    /// old one stops working at once on this node and within 1 s on the others.
    pub async fn rotate_service_secret(
        &self,
        actor: &str,
        client_id: &str,
    ) -> Result<CreatedService> {
        let s = self.live_service(client_id).await?;
        if s.is_public() {
            return Err(Error::Validation(format!(
                "service `{client_id}` is a public client: it has no secret"
            )));
        }
        let secret = random_token("cs_")?;
        if !self
            .store
            .set_service_secret(client_id, &sha256_hex(&secret))
            .await?
        {
            return Err(gone(client_id));
        }
        self.services.invalidate(client_id);
        self.audit(
            Some(&s.organization_id),
            actor,
            None,
            "service.secret_rotated",
            serde_json::json!({ "client_id": client_id }),
        )
        .await;
        let service = self.live_service(client_id).await?;
        Ok(CreatedService {
            service,
            client_secret: Some(secret),
        })
    }

    /// Deletes a service: it stops authenticating and signing anyone in, its API keys are
    /// revoked, and the tokens it was issued stop being active (at once on this node, within
    /// 1 s on the others). Its row stays, marked deleted, for the audit log.
    pub async fn delete_service(&self, actor: &str, client_id: &str) -> Result<Service> {
        let s = self.live_service(client_id).await?;
        if !self.store.delete_service(client_id).await? {
            return Err(gone(client_id));
        }
        self.services.invalidate(client_id);
        let object = format!("service:{client_id}");
        let tuples = [
            TupleKey::new(
                format!("organization:{}", s.organization_id),
                "organization",
                &object,
            ),
            TupleKey::new(&object, "authenticate", &object),
        ];
        if let Err(e) = self.write_tuples(&[], &tuples).await {
            // The row is what counts: a deleted service is never found, whatever the graph says.
            tracing::warn!(error = %e, client_id, "cannot remove the tuples of a deleted service");
        }
        self.audit(
            Some(&s.organization_id),
            actor,
            None,
            "service.deleted",
            serde_json::json!({ "client_id": client_id, "name": s.name }),
        )
        .await;
        Ok(s)
    }

    /// Adds a tier or changes its limits. Organizations already over a lowered limit keep
    /// what they have and cannot add more.
    pub async fn set_tier(&self, actor: &str, name: &str, limits: TierLimits) -> Result<()> {
        if !valid_slug(name) {
            return Err(Error::Validation(format!(
                "a tier's name must be 2 to 63 of a-z, 0-9 and `-` (not at either end), got `{name}`"
            )));
        }
        for (what, n) in [
            ("max_users", limits.max_users),
            ("max_services", limits.max_services),
        ] {
            if !(1..=MAX_TIER_LIMIT).contains(&n) {
                return Err(Error::Validation(format!(
                    "`{what}` must be 1 to {MAX_TIER_LIMIT}, got {n}"
                )));
            }
        }
        self.store.set_tier(name, limits).await?;
        self.audit(
            None,
            actor,
            None,
            "tier.set",
            serde_json::json!({ "name": name, "max_users": limits.max_users, "max_services": limits.max_services }),
        )
        .await;
        Ok(())
    }

    /// Moves an organization to another tier, if what it has fits the tier's limits.
    pub async fn change_tier(&self, actor: &str, slug: &str, tier: &str) -> Result<Organization> {
        let org = self.organization_by_slug(slug).await?;
        let limits = self
            .store
            .tier(tier)
            .await?
            .ok_or_else(|| Error::Validation(format!("tier `{tier}` does not exist")))?;
        let users = self.store.count_members(&org.id).await?;
        let services = self.store.count_services(&org.id).await?;
        if users > limits.max_users || services > limits.max_services {
            return Err(Error::Validation(format!(
                "organization `{slug}` has {users} members and {services} services; tier `{tier}` allows {} and {}",
                limits.max_users, limits.max_services
            )));
        }
        self.store.set_organization_tier(&org.id, tier).await?;
        self.organizations.invalidate(&org.id);
        self.audit(
            Some(&org.id),
            actor,
            None,
            "organization.tier_changed",
            serde_json::json!({ "slug": slug, "from": org.tier, "to": tier }),
        )
        .await;
        self.organization_by_slug(slug).await
    }

    /// Creates the console client (and the platform's own organization holding it) on first
    /// start, and keeps its redirect URIs and grants as configured: the device grant always,
    /// the authorization code grant when it has redirect URIs. Anyone with an account may
    /// sign in to it.
    pub async fn ensure_console(&self, redirect_uris: &[String]) -> anyhow::Result<Service> {
        let mut grants = vec![
            "urn:ietf:params:oauth:grant-type:device_code".to_string(),
            "refresh_token".to_string(),
        ];
        if !redirect_uris.is_empty() {
            grants.insert(0, "authorization_code".into());
        }
        validate_service("Gatehouse console", &grants, redirect_uris, true)
            .map_err(|e| anyhow::anyhow!("GATEHOUSE_CONSOLE_REDIRECT_URIS: {e}"))?;
        let org = match self.store.organization_by_slug(PLATFORM_ORG_SLUG).await? {
            Some(o) => o,
            None => {
                let now = Utc::now();
                let org = Organization {
                    id: ulid::Ulid::new().to_string().to_lowercase(),
                    slug: PLATFORM_ORG_SLUG.into(),
                    name: "Gatehouse".into(),
                    tier: FREE_TIER.into(),
                    status: "active".into(),
                    created_at: now,
                    updated_at: now,
                    logo_url: None,
                    primary_color: None,
                };
                self.store.insert_organization(&org).await?;
                // Another node may have created it first.
                self.store
                    .organization_by_slug(PLATFORM_ORG_SLUG)
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("the platform organization vanished"))?
            }
        };
        let object = format!("service:{CONSOLE_CLIENT}");
        let wanted = |s: &Service| s.redirect_uris == redirect_uris && s.grant_types == grants;
        match self.store.service(CONSOLE_CLIENT).await? {
            Some(s) if wanted(&s) => return Ok(s),
            Some(mut s) => {
                s.redirect_uris = redirect_uris.to_vec();
                s.grant_types = grants;
                self.store.update_service(&s).await?;
                self.services.invalidate(CONSOLE_CLIENT);
            }
            None => {
                // The tuples first, as for every service: a console row never exists outside
                // the graph, and later starts, finding the row, write nothing.
                self.write_tuples(
                    &[
                        TupleKey::new(PLATFORM, "platform", format!("organization:{}", org.id)),
                        TupleKey::new(format!("organization:{}", org.id), "organization", &object),
                        TupleKey::new("user:*", "authenticate", &object),
                    ],
                    &[],
                )
                .await?;
                let now = Utc::now();
                let s = Service {
                    client_id: CONSOLE_CLIENT.into(),
                    organization_id: org.id.clone(),
                    name: "Gatehouse console".into(),
                    secret_sha256: None,
                    redirect_uris: redirect_uris.to_vec(),
                    grant_types: grants,
                    // The platform's own application, for everyone with an account.
                    first_party: true,
                    created_at: now,
                    updated_at: now,
                };
                // One console, whatever the tier says.
                if let Err(e) = self.store.insert_service_within(&s, i64::MAX).await
                    && self.store.service(CONSOLE_CLIENT).await?.is_none()
                {
                    return Err(e.into());
                }
            }
        }
        self.store
            .service(CONSOLE_CLIENT)
            .await?
            .ok_or_else(|| anyhow::anyhow!("the console client vanished"))
    }

    /// Keeps this node's views of other nodes' changes current until the process ends: the
    /// revocations made since the last read, which services changed and which API keys were
    /// revoked (their cache entries are dropped), every second; every live revocation once a
    /// minute.
    pub fn spawn_refresh(self: &Arc<Self>) {
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(crate::oidc::revocations::REFRESH_EVERY);
            // Each read reaches from a little before the previous one: a change committed
            // while it ran, with an earlier timestamp, is read again rather than missed.
            let mut services_since = Utc::now() - CHANGE_OVERLAP;
            let mut revocations_since = Utc::now() - CHANGE_OVERLAP;
            let mut full_read = std::time::Instant::now();
            loop {
                tick.tick().await;
                let started = Utc::now();
                // Newer revocations every second; everything now and then, as a safety net
                // (and for rows written before revocations carried their time).
                let read = if full_read.elapsed() >= FULL_REVOCATION_READ {
                    me.revocations.reload().await.map(|()| {
                        full_read = std::time::Instant::now();
                    })
                } else {
                    me.revocations.catch_up(revocations_since).await
                };
                match read {
                    Ok(()) => revocations_since = started - CHANGE_OVERLAP,
                    Err(e) => tracing::warn!(error = %e, "cannot read revocations; will retry"),
                }
                let changed = me.store.services_changed_since(services_since).await;
                let keys = me.store.api_keys_revoked_since(services_since).await;
                let orgs = me.store.organizations_changed_since(services_since).await;
                match (changed, keys, orgs) {
                    (Ok(ids), Ok(keys), Ok(orgs)) => {
                        for id in ids {
                            me.services.invalidate(&id);
                        }
                        for id in orgs {
                            me.organizations.invalidate(&id);
                        }
                        for k in keys {
                            me.forget_api_key(&k);
                        }
                        services_since = started - CHANGE_OVERLAP;
                    }
                    (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                        tracing::warn!(error = %e, "cannot read changed services, organizations or keys; will retry");
                    }
                }
            }
        });
    }

    /// The service `client_id` if `secret` is its secret (compared as SHA-256 digests, in
    /// constant time); `None` otherwise, whatever the reason.
    pub async fn authenticate_client(
        &self,
        client_id: &str,
        secret: &str,
    ) -> Result<Option<Service>> {
        // Hashed first, so that an unknown client costs as much as a known one.
        let given = sha256_hex(secret);
        let Some(service) = self.service(client_id).await? else {
            return Ok(None);
        };
        let Some(stored) = service.secret_sha256.as_deref() else {
            return Ok(None);
        };
        let same = stored.len() == given.len()
            && stored
                .bytes()
                .zip(given.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        Ok(same.then_some(service))
    }

    /// Asks the platform store whether `principal` may sign in to `service` now, with
    /// `context` (`amr`, `ip`, …). `fresh` reads the newest state (interactive sign-ins: a
    /// suspension or a revoked grant, written by any node or by the admin commands, counts at
    /// once); otherwise an allowed decision may come from this node's cache at a revision at
    /// most the engine's staleness bound (0.5 s) old, where changes made through this node,
    /// or announced over Redis, count at once (the token endpoint's hot path), and a denial
    /// is confirmed at the newest revision.
    pub async fn authorize_sign_in(
        &self,
        principal: &str,
        service: &Service,
        context: serde_json::Map<String, serde_json::Value>,
        fresh: bool,
    ) -> Result<Decision> {
        if self.active_orgs.get(&service.organization_id).is_none() {
            // The store itself, not the cache: a just-approved organization signs in at once.
            let org = self.store.organization(&service.organization_id).await?;
            if org.as_ref().is_none_or(|o| o.status != "active") {
                return Err(Error::Validation(
                    "the service's organization is not active".into(),
                ));
            }
            self.active_orgs.insert(service.organization_id.clone(), ());
        }
        let request = |consistency| DecisionRequest {
            subject: principal.into(),
            action: "authenticate".into(),
            resource: format!("service:{}", service.client_id),
            context: Some(context.clone()),
            consistency,
            explain: false,
            lean: true,
            attributes: Default::default(),
            ignore_undeclared: false,
            quiet: false,
        };
        if fresh {
            return self
                .engine
                .decide(
                    &self.platform_store,
                    &request(Consistency::HigherConsistency),
                )
                .await;
        }
        let d = self
            .engine
            .decide(&self.platform_store, &request(Consistency::MinimizeLatency))
            .await?;
        if d.allowed {
            return Ok(d);
        }
        // A denial is confirmed at the newest revision before it counts: a grant made a
        // moment ago elsewhere (another node, the admin commands) is never refused for the
        // staleness bound. Sightings are recorded only for allowed decisions, so asking twice
        // records nothing twice.
        self.engine
            .decide(
                &self.platform_store,
                &request(Consistency::HigherConsistency),
            )
            .await
    }
}

/// Brings an existing platform store up to this build's model and policies: a new release
/// may add relations (and the actions of its schema) or change rules. Unchanged ones are left
/// alone, so that restarts write nothing.
async fn upgrade_platform(engine: &Engine, store: &str) -> anyhow::Result<()> {
    let bundled = gatehouse_engine::model::parse_dsl(PLATFORM_MODEL)?;
    let current = engine.model(store, None).await?;
    let same_model = serde_json::to_value(&current.model.type_definitions)?
        == serde_json::to_value(&bundled.type_definitions)?
        && current.model.conditions.len() == bundled.conditions.len();
    if !same_model {
        engine.write_model(store, bundled).await?;
        tracing::info!("platform model upgraded");
    }
    let schema: serde_json::Value = serde_json::from_str(PLATFORM_SCHEMA)?;
    let active = engine.active_policies(store).await?;
    let same_policies = match engine.policy_version(store, &active.version).await {
        Ok(v) => v.policies == PLATFORM_POLICIES && v.schema.as_ref() == Some(&schema),
        Err(_) => false,
    };
    if !same_policies {
        engine
            .write_policies(store, PLATFORM_POLICIES, Some(schema), vec![], true)
            .await?;
        tracing::info!("platform policies upgraded");
    }
    Ok(())
}

/// What a sign-in decision comes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignIn {
    Allowed,
    /// Refused now, allowed with one of these extra factors: every rule that refused it
    /// names a `@challenge`, and the graph grants it.
    StepUp {
        methods: Vec<String>,
        reasons: Vec<String>,
    },
    Denied {
        reasons: Vec<String>,
    },
}

/// Whether the authentication methods (`amr`) include a second factor.
pub fn is_multi_factor(amr: &[String]) -> bool {
    amr.iter().any(|m| is_second_factor(m))
}

fn is_second_factor(method: &str) -> bool {
    matches!(method, "otp" | "hwk" | "webauthn" | "mfa")
}

/// The methods (`amr`) a sign-in records from a plugin's assertion. Only a first-party
/// strategy's claims are taken as they are. An identity provider's sign-in is `fed`: what the
/// provider did upstream is its own affair, and a user's second factor here is still asked
/// for. A third-party strategy may not claim a second factor (`otp`, `hwk`, `webauthn`,
/// `mfa`): its word would let it skip the user's own, and reach policies that trust `mfa`.
pub fn trusted_methods(first_party: bool, provider: bool, claimed: &[String]) -> Vec<String> {
    let mut methods: Vec<String> = if provider {
        Vec::new()
    } else if first_party {
        claimed.to_vec()
    } else {
        claimed
            .iter()
            .filter(|m| !is_second_factor(m))
            .cloned()
            .collect()
    };
    if methods.is_empty() {
        methods.push("fed".into());
    }
    methods
}

/// The reasons of the policies that determined a decision (their `@reason`, else their id).
pub fn reasons(d: &Decision) -> Vec<String> {
    d.policies
        .iter()
        .map(|p| {
            p.annotations
                .get("reason")
                .cloned()
                .unwrap_or_else(|| p.id.clone())
        })
        .collect()
}

/// Reads a sign-in decision: allowed, a step-up challenge, or a denial.
pub fn sign_in_outcome(d: &Decision) -> SignIn {
    if d.allowed {
        return SignIn::Allowed;
    }
    let challenges: Vec<&String> = d
        .policies
        .iter()
        .filter_map(|p| p.annotations.get("challenge"))
        .collect();
    if d.rebac && !d.policies.is_empty() && challenges.len() == d.policies.len() {
        let mut methods: Vec<String> = Vec::new();
        for m in challenges.iter().flat_map(|c| c.split_whitespace()) {
            if !methods.iter().any(|x| x == m) {
                methods.push(m.to_string());
            }
        }
        return SignIn::StepUp {
            methods,
            reasons: reasons(d),
        };
    }
    SignIn::Denied {
        reasons: reasons(d),
    }
}

impl Identity {
    /// Appends to the audit log. A failure to write is logged, not returned: the event it
    /// records has happened.
    pub async fn audit(
        &self,
        organization: Option<&str>,
        actor: &str,
        ip: Option<&str>,
        kind: &str,
        details: serde_json::Value,
    ) {
        let scoped = REQUEST_IP.try_with(Clone::clone).ok().flatten();
        let ip = ip.or(scoped.as_deref());
        if let Err(e) = self
            .store
            .append_audit(organization, actor, ip, kind, &details)
            .await
        {
            tracing::error!(error = %e, kind, "cannot write an audit event");
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use gatehouse_engine::service::EngineConfig;
    use gatehouse_engine::store::Page;

    #[test]
    fn only_first_party_strategies_vouch_for_a_second_factor() {
        let v = |ms: &[&str]| ms.iter().map(|m| m.to_string()).collect::<Vec<_>>();
        let claimed = v(&["pwd", "hwk", "otp", "mfa", "webauthn"]);
        assert_eq!(trusted_methods(true, false, &claimed), claimed);
        assert_eq!(trusted_methods(false, false, &claimed), v(&["pwd"]));
        assert!(!is_multi_factor(&trusted_methods(false, false, &claimed)));
        // A provider's sign-in is federated, first-party or not.
        assert_eq!(trusted_methods(true, true, &claimed), v(&["fed"]));
        assert_eq!(trusted_methods(false, true, &v(&["mfa"])), v(&["fed"]));
        assert_eq!(trusted_methods(false, false, &v(&["hwk"])), v(&["fed"]));
        assert_eq!(trusted_methods(true, false, &[]), v(&["fed"]));
    }

    async fn versions(engine: &Engine, store: &str) -> usize {
        let page = Page {
            size: 100,
            token: None,
        };
        engine
            .list_policy_versions(store, &page)
            .await
            .unwrap()
            .items
            .len()
    }

    /// A platform store written by an older release gets this build's model and policies at
    /// the next start; a start with nothing new writes nothing.
    #[tokio::test]
    async fn an_old_platform_store_is_upgraded_at_start() {
        let dir = std::env::temp_dir().join(format!("gh-upgrade-{}", ulid::Ulid::new()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}", dir.join("db.sqlite").display());
        let store = Arc::new(SqlStore::connect(&url).await.unwrap());
        let engine = Arc::new(Engine::new(store.clone(), EngineConfig::default()));
        let id = Identity::bootstrap(store.clone(), engine.clone())
            .await
            .unwrap();
        let platform = id.platform_store.clone();
        // What an older release had: no audit relation, and older rules.
        let old = PLATFORM_MODEL.replace("    define can_read_audit: admin\n", "");
        assert_ne!(old, PLATFORM_MODEL);
        engine
            .write_model(&platform, gatehouse_engine::model::parse_dsl(&old).unwrap())
            .await
            .unwrap();
        engine
            .write_policies(
                &platform,
                "permit (principal, action, resource) when { context.rebac };",
                None,
                vec![],
                true,
            )
            .await
            .unwrap();
        let before = versions(&engine, &platform).await;
        let again = Identity::bootstrap(store.clone(), engine.clone())
            .await
            .unwrap();
        assert_eq!(again.platform_store, platform);
        let model = engine.model(&platform, None).await.unwrap();
        let org = model
            .model
            .type_definitions
            .iter()
            .find(|t| t.type_name == "organization")
            .unwrap();
        assert!(
            serde_json::to_string(org)
                .unwrap()
                .contains("can_read_audit"),
            "the model was not upgraded"
        );
        assert_eq!(versions(&engine, &platform).await, before + 1);
        Identity::bootstrap(store.clone(), engine.clone())
            .await
            .unwrap();
        assert_eq!(
            versions(&engine, &platform).await,
            before + 1,
            "a restart wrote again"
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn slugs() {
        for ok in ["acme", "a1", "acme-corp", "x2-y3"] {
            assert!(valid_slug(ok), "{ok}");
        }
        for bad in [
            "",
            "a",
            "-acme",
            "acme-",
            "Acme",
            "ac me",
            "acme_corp",
            &"a".repeat(64),
        ] {
            assert!(!valid_slug(bad), "{bad}");
        }
    }
}
