//! SAML 2.0 single sign-on with an organization's identity provider (Okta, Microsoft Entra ID,
//! Google Workspace, ADFS, Keycloak, Shibboleth…), Gatehouse being the service provider.
//!
//! `begin` draws a request id, keeps it in this plugin's key-value space under the flow's id
//! for 10 minutes, and sends the browser to the IdP with an AuthnRequest (HTTP-Redirect
//! binding; signed when the organization gives a key). `complete` takes the id back (once) and
//! has the host verify the posted `SAMLResponse` as the answer to it: signature by the IdP's
//! certificate, issuer, destination and recipient, audience, validity window. The subject is
//! the NameID (or a configured attribute); the address, the name and the groups come from
//! attributes, by the configured names or the usual ones.

use gatehouse_pdk::*;
use serde::{Deserialize, Serialize};

const SCHEMA: &str = r#"{
  "type": "object",
  "additionalProperties": false,
  "properties": {
    "idp_metadata": { "type": "string", "minLength": 1, "maxLength": 262144,
                      "description": "The identity provider's SAML metadata (XML); or the three idp_ fields below" },
    "idp_entity_id": { "type": "string", "minLength": 1, "maxLength": 1024,
                       "description": "The identity provider's entity id (the issuer of its responses)" },
    "idp_sso_url": { "type": "string", "pattern": "^https?://", "maxLength": 2048,
                     "description": "Its single sign-on URL (HTTP-Redirect binding)" },
    "idp_certificates": { "type": "array", "minItems": 1, "maxItems": 8,
                          "items": { "type": "string", "minLength": 1, "maxLength": 16384 },
                          "description": "Its signing certificates (PEM)" },
    "sp_entity_id": { "type": "string", "minLength": 1, "maxLength": 1024,
                      "description": "This service provider's entity id, as registered at the identity provider (default: the callback URL)" },
    "sp_signing_key": { "type": "string", "minLength": 1, "maxLength": 16384, "writeOnly": true,
                        "description": "A private key (PEM) to sign requests with, if the identity provider wants them signed" },
    "trust_email": { "type": "boolean",
                     "description": "Whether the identity provider's addresses count as verified (default false)" },
    "subject_attribute": { "type": "string", "minLength": 1, "maxLength": 256,
                           "description": "An attribute naming the user, instead of the NameID" },
    "attributes": {
      "type": "object",
      "additionalProperties": false,
      "description": "The attribute that carries each claim, when not one of the usual names",
      "properties": {
        "email": { "type": "string", "minLength": 1, "maxLength": 256 },
        "name": { "type": "string", "minLength": 1, "maxLength": 256 },
        "given_name": { "type": "string", "minLength": 1, "maxLength": 256 },
        "family_name": { "type": "string", "minLength": 1, "maxLength": 256 },
        "groups": { "type": "string", "minLength": 1, "maxLength": 256 }
      }
    },
    "display_name": { "type": "string", "minLength": 1, "maxLength": 80, "description": "The login button's label" }
  },
  "oneOf": [
    { "required": ["idp_metadata"], "not": { "anyOf": [ { "required": ["idp_entity_id"] }, { "required": ["idp_sso_url"] }, { "required": ["idp_certificates"] } ] } },
    { "required": ["idp_entity_id", "idp_sso_url", "idp_certificates"], "not": { "required": ["idp_metadata"] } }
  ]
}"#;

/// How long a sign-in may take at the identity provider.
const FLOW_SECONDS: u32 = 600;

const TRANSIENT: &str = "urn:oasis:names:tc:SAML:2.0:nameid-format:transient";
const EMAIL_FORMAT: &str = "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress";

/// The usual names of each claim's attribute: LDAP/eduPerson names and OIDs, and the claim
/// URIs of ADFS and Microsoft Entra ID.
const EMAIL: &[&str] = &[
    "email",
    "mail",
    "emailAddress",
    "urn:oid:0.9.2342.19200300.100.1.3",
    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress",
];
const NAME: &[&str] = &[
    "name",
    "displayName",
    "urn:oid:2.16.840.1.113730.3.1.241",
    "http://schemas.microsoft.com/identity/claims/displayname",
];
const GIVEN_NAME: &[&str] = &[
    "givenName",
    "given_name",
    "firstName",
    "urn:oid:2.5.4.42",
    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/givenname",
];
const FAMILY_NAME: &[&str] = &[
    "sn",
    "surname",
    "family_name",
    "lastName",
    "urn:oid:2.5.4.4",
    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/surname",
];
const GROUPS: &[&str] = &[
    "groups",
    "memberOf",
    "http://schemas.microsoft.com/ws/2008/06/identity/claims/groups",
];

#[derive(Deserialize)]
struct Config {
    idp_metadata: Option<String>,
    idp_entity_id: Option<String>,
    idp_sso_url: Option<String>,
    #[serde(default)]
    idp_certificates: Vec<String>,
    sp_entity_id: Option<String>,
    sp_signing_key: Option<String>,
    #[serde(default)]
    trust_email: bool,
    subject_attribute: Option<String>,
    #[serde(default)]
    attributes: Mapping,
}

#[derive(Deserialize, Default)]
struct Mapping {
    email: Option<String>,
    name: Option<String>,
    given_name: Option<String>,
    family_name: Option<String>,
    groups: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct Flow {
    request_id: String,
}

fn config(request: &Request) -> Result<Config, Failure> {
    serde_json::from_str(request.config())
        .map_err(|e| Failure::Unavailable(format!("the SAML configuration is not usable: {e}")))
}

/// The identity provider, from its metadata or from the three fields.
fn identity_provider(cfg: &Config) -> Result<saml::IdentityProvider, Failure> {
    let unusable =
        |e: String| Failure::Unavailable(format!("the identity provider is not usable: {e}"));
    match (&cfg.idp_metadata, &cfg.idp_entity_id, &cfg.idp_sso_url) {
        (Some(xml), _, _) => saml::parse_metadata(xml).map_err(unusable),
        (None, Some(entity_id), Some(sso_url)) => Ok(saml::IdentityProvider {
            entity_id: entity_id.clone(),
            sso_url: sso_url.clone(),
            certificates: cfg.idp_certificates.clone(),
        }),
        _ => Err(unusable(
            "neither metadata nor entity id and sign-on URL".into(),
        )),
    }
}

fn service_provider(cfg: &Config, request: &Request) -> saml::ServiceProvider {
    saml::ServiceProvider {
        entity_id: cfg
            .sp_entity_id
            .clone()
            .unwrap_or_else(|| request.callback_url().to_string()),
        acs_url: request.callback_url().to_string(),
        signing_key: cfg.sp_signing_key.clone(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The values of the attribute `configured`, or else of the first usual name present.
fn values<'a>(
    attributes: &'a [saml::Attribute],
    configured: Option<&str>,
    usual: &[&str],
) -> Vec<&'a str> {
    let named = |name: &str| {
        attributes
            .iter()
            .find(|a| a.name == name || a.friendly_name.as_deref() == Some(name))
            .map(|a| {
                a.values
                    .iter()
                    .map(|v| v.trim())
                    .filter(|v| !v.is_empty())
                    .collect::<Vec<_>>()
            })
            .filter(|vs| !vs.is_empty())
    };
    match configured {
        Some(name) => named(name).unwrap_or_default(),
        None => usual.iter().find_map(|n| named(n)).unwrap_or_default(),
    }
}

struct Saml;

impl Plugin for Saml {
    fn describe() -> Description {
        Description {
            id: "saml".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            kind: Kind::Provider,
            display_name: "SAML single sign-on".into(),
            config_schema: SCHEMA.into(),
        }
    }

    fn begin(request: Request) -> Result<BeginResult, Failure> {
        let cfg = config(&request)?;
        if request.flow_id().is_empty() || request.callback_url().is_empty() {
            return Err(Failure::BadRequest("no login flow to begin".into()));
        }
        let idp = identity_provider(&cfg)?;
        let sp = service_provider(&cfg, &request);
        // An NCName with 160 random bits (SAML core, 1.3.4).
        let request_id = format!("_{}", hex(&random::bytes(20)));
        let url = saml::authn_request(&sp, &idp, &request_id, "")
            .map_err(|e| Failure::Unavailable(format!("cannot make the SAML request: {e}")))?;
        let flow = serde_json::to_vec(&Flow { request_id })
            .map_err(|e| Failure::Unavailable(e.to_string()))?;
        kv::set(&format!("flow:{}", request.flow_id()), &flow, FLOW_SECONDS)
            .map_err(Failure::Unavailable)?;
        Ok(BeginResult::Redirect(url))
    }

    fn complete(request: Request) -> Result<Assertion, Failure> {
        let cfg = config(&request)?;
        let Some(response) = request.param("SAMLResponse").filter(|r| !r.is_empty()) else {
            return Err(Failure::BadRequest(
                "the identity provider sent no SAML response".into(),
            ));
        };
        let taken =
            kv::take(&format!("flow:{}", request.flow_id())).map_err(Failure::Unavailable)?;
        let Some(flow) = taken.and_then(|b| serde_json::from_slice::<Flow>(&b).ok()) else {
            return Err(Failure::BadRequest(
                "this sign-in has expired or was used already; start again".into(),
            ));
        };
        let idp = identity_provider(&cfg)?;
        let sp = service_provider(&cfg, &request);
        let identity =
            saml::verify_response(&sp, &idp, response, &flow.request_id).map_err(|e| {
                log::warn(&format!("a SAML response was refused: {e}"));
                Failure::BadRequest(format!("the identity provider's answer was refused: {e}"))
            })?;
        let attributes = &identity.attributes;
        let subject = match &cfg.subject_attribute {
            Some(name) => values(attributes, Some(name), &[])
                .first()
                .map(|s| s.to_string())
                .ok_or_else(|| {
                    Failure::BadRequest(format!(
                        "the identity provider sent no `{name}` attribute to name you by"
                    ))
                })?,
            None if identity.name_id_format.as_deref() == Some(TRANSIENT) => {
                return Err(Failure::BadRequest(
                    "the identity provider names you by a transient NameID, which changes at every sign-in: configure a persistent NameID or a subject attribute".into(),
                ));
            }
            None => identity.name_id.clone(),
        };
        let email = values(attributes, cfg.attributes.email.as_deref(), EMAIL)
            .first()
            .map(|s| s.to_string())
            .or_else(|| {
                (identity.name_id_format.as_deref() == Some(EMAIL_FORMAT))
                    .then(|| identity.name_id.clone())
            });
        let mut claims = serde_json::Map::new();
        for (claim, configured, usual) in [
            ("name", cfg.attributes.name.as_deref(), NAME),
            (
                "given_name",
                cfg.attributes.given_name.as_deref(),
                GIVEN_NAME,
            ),
            (
                "family_name",
                cfg.attributes.family_name.as_deref(),
                FAMILY_NAME,
            ),
        ] {
            if let Some(v) = values(attributes, configured, usual).first() {
                claims.insert(claim.into(), (*v).into());
            }
        }
        let groups = values(attributes, cfg.attributes.groups.as_deref(), GROUPS);
        if !groups.is_empty() {
            claims.insert("groups".into(), groups.into());
        }
        if let Some(index) = &identity.session_index {
            claims.insert("saml_session_index".into(), index.as_str().into());
        }
        if let Some(context) = &identity.authn_context {
            claims.insert("saml_authn_context".into(), context.as_str().into());
        }
        Ok(Assertion {
            provider: identity.issuer.clone(),
            subject,
            email,
            email_verified: cfg.trust_email,
            claims: serde_json::Value::Object(claims).to_string(),
            methods: vec!["fed".into()],
        })
    }
}

gatehouse_pdk::plugin!(Saml);
