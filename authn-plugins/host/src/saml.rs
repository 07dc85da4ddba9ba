//! The `saml` capability: SAML 2.0 Web Browser SSO as a service provider, with samael (and
//! through it xmlsec and libxml2) doing the XML signature work.
//!
//! The host keeps nothing between calls: `authn_request` makes an AuthnRequest with the
//! plugin's id and `verify_response` checks the IdP's answer to that id. samael leaves a few
//! checks to its caller, which this module makes:
//! - an IdP without a signing certificate is refused (samael would verify nothing);
//! - the assertion must name this service provider in an `AudienceRestriction` (samael checks
//!   the audience only when one is present) and must not be issued in the future;
//! - only RSA and ECDSA signatures with SHA-256 or stronger are accepted (samael allows SHA-1);
//! - before xmlsec reads a response, it is scanned and refused if it holds a DOCTYPE, a
//!   `Reference` to anything but a fragment of the document, an `Object`, `Manifest` or
//!   `RetrievalMethod`, or a transform other than the enveloped signature and canonicalization:
//!   xmlsec dereferences and transforms every reference before it checks the signature value,
//!   so a forged response could otherwise make the host fetch URLs or run XSLT;
//! - encrypted assertions are refused with a clear error (the host holds no decryption key).

use std::sync::LazyLock;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{Duration, Utc};
use openssl::pkey::PKey;
use openssl::x509::X509;
use quick_xml::events::Event;
use samael::crypto::{AllowedSignatureAlgorithm, CertificateDer, Crypto, CryptoProvider};
use samael::key_info::{KeyInfo, X509Data};
use samael::metadata::{
    Endpoint, EntityDescriptor, EntityDescriptorType, HTTP_POST_BINDING, HTTP_REDIRECT_BINDING,
    IdpSsoDescriptor, KeyDescriptor,
};
use samael::service_provider::ServiceProvider;

/// The largest response accepted, base64 as posted.
pub const MAX_RESPONSE: usize = 256 << 10;
/// The largest metadata document accepted.
pub const MAX_METADATA: usize = 256 << 10;
/// Certificates an IdP may name (key rollover needs two).
const MAX_CERTIFICATES: usize = 8;
/// How far the IdP's clock may be from ours.
const CLOCK_SKEW_SECS: i64 = 120;
/// How old a response may be when it arrives.
const MAX_ISSUE_DELAY_SECS: i64 = 300;
/// SAML bindings, 3.4.3: RelayState is at most 80 bytes.
const MAX_RELAY_STATE: usize = 80;

/// Transforms a signed SAML message may use.
const ALLOWED_TRANSFORMS: [&str; 5] = [
    "http://www.w3.org/2000/09/xmldsig#enveloped-signature",
    "http://www.w3.org/2001/10/xml-exc-c14n#",
    "http://www.w3.org/2001/10/xml-exc-c14n#WithComments",
    "http://www.w3.org/TR/2001/REC-xml-c14n-20010315",
    "http://www.w3.org/2006/12/xml-c14n11",
];

/// An identity provider, as the plugin names it or as its metadata does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityProvider {
    /// The IdP's entity id: the `Issuer` of its responses.
    pub entity_id: String,
    /// Its single sign-on service for the HTTP-Redirect binding.
    pub sso_url: String,
    /// Its signing certificates, base64 DER.
    pub certificates: Vec<String>,
}

/// This side of the exchange.
#[derive(Debug, Clone)]
pub struct ServiceProviderConfig {
    /// The audience the IdP must name.
    pub entity_id: String,
    /// Where the IdP posts its response (the step's callback URL).
    pub acs_url: String,
    /// A private key (PEM) to sign AuthnRequests with, for IdPs that want them signed.
    pub signing_key: Option<String>,
}

/// A verified assertion, reduced to what a login needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub issuer: String,
    pub name_id: String,
    pub name_id_format: Option<String>,
    pub assertion_id: String,
    pub session_index: Option<String>,
    /// The authentication context class the IdP used (`…:PasswordProtectedTransport`).
    pub authn_context: Option<String>,
    pub attributes: Vec<Attribute>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    pub name: String,
    pub friendly_name: Option<String>,
    pub values: Vec<String>,
}

/// libxml2 must be initialised once before threads use it, and samael initialises xmlsec
/// lazily from the first call that loads a key, after it has parsed: one verification made
/// once, before any other, does both on one thread.
static XMLSEC_READY: LazyLock<()> = LazyLock::new(|| {
    // A real certificate, so that xmlsec has nothing to complain about on stderr: the
    // verification then fails only for want of a signature.
    let cert = warm_up_certificate().unwrap_or_default();
    let _ = Crypto::verify_signed_xml("<a/>", &CertificateDer::from(cert), None);
});

/// A throwaway self-signed P-256 certificate (DER).
fn warm_up_certificate() -> Result<Vec<u8>, openssl::error::ErrorStack> {
    use openssl::ec::{EcGroup, EcKey};
    use openssl::nid::Nid;
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
    let key = PKey::from_ec_key(EcKey::generate(&group)?)?;
    let mut name = openssl::x509::X509NameBuilder::new()?;
    name.append_entry_by_nid(Nid::COMMONNAME, "gatehouse")?;
    let name = name.build();
    let mut b = X509::builder()?;
    b.set_version(2)?;
    b.set_subject_name(&name)?;
    b.set_issuer_name(&name)?;
    b.set_pubkey(&key)?;
    b.set_not_before(openssl::asn1::Asn1Time::days_from_now(0)?.as_ref())?;
    b.set_not_after(openssl::asn1::Asn1Time::days_from_now(1)?.as_ref())?;
    b.sign(&key, openssl::hash::MessageDigest::sha256())?;
    b.build().to_der()
}

/// Makes sure the XML libraries are initialised; cheap after the first call.
pub fn warm_up() {
    LazyLock::force(&XMLSEC_READY);
}

/// A certificate given as PEM or as base64 DER, as base64 DER, checked to be X.509.
pub fn normalize_certificate(text: &str) -> Result<String, String> {
    let body: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("-----"))
        .flat_map(|l| l.chars())
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    let der = STANDARD
        .decode(body.as_bytes())
        .map_err(|_| "a certificate is neither PEM nor base64 DER".to_string())?;
    X509::from_der(&der)
        .map_err(|_| "a certificate is not a valid X.509 certificate".to_string())?;
    Ok(STANDARD.encode(der))
}

fn check_identity_provider(idp: &IdentityProvider) -> Result<Vec<String>, String> {
    if idp.entity_id.trim().is_empty() || idp.entity_id.len() > 1024 {
        return Err("the identity provider needs an entity id".into());
    }
    let url = url::Url::parse(&idp.sso_url)
        .map_err(|_| "the identity provider's sign-on URL is not a URL".to_string())?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err("the identity provider's sign-on URL must be HTTP(S)".into());
    }
    if idp.certificates.is_empty() {
        // samael verifies no signature at all for an IdP without one.
        return Err("the identity provider has no signing certificate".into());
    }
    if idp.certificates.len() > MAX_CERTIFICATES {
        return Err(format!(
            "an identity provider has at most {MAX_CERTIFICATES} certificates"
        ));
    }
    idp.certificates
        .iter()
        .map(|c| normalize_certificate(c))
        .collect()
}

/// The IdP in the form samael reads: one SSO descriptor, its signing keys.
fn idp_metadata(idp: &IdentityProvider, certificates: Vec<String>) -> EntityDescriptor {
    EntityDescriptor {
        entity_id: Some(idp.entity_id.clone()),
        idp_sso_descriptors: Some(vec![IdpSsoDescriptor {
            id: None,
            valid_until: None,
            cache_duration: None,
            protocol_support_enumeration: Some("urn:oasis:names:tc:SAML:2.0:protocol".into()),
            error_url: None,
            signature: None,
            key_descriptors: certificates
                .into_iter()
                .map(|c| KeyDescriptor {
                    key_use: Some("signing".into()),
                    key_info: KeyInfo {
                        id: None,
                        x509_data: Some(X509Data {
                            certificates: vec![c],
                        }),
                    },
                    encryption_methods: None,
                })
                .collect(),
            organization: None,
            contact_people: vec![],
            artifact_resolution_service: vec![],
            single_logout_services: vec![],
            manage_name_id_services: vec![],
            name_id_formats: vec![],
            want_authn_requests_signed: None,
            single_sign_on_services: vec![Endpoint {
                binding: HTTP_REDIRECT_BINDING.into(),
                location: idp.sso_url.clone(),
                response_location: None,
            }],
            name_id_mapping_services: vec![],
            assertion_id_request_services: vec![],
            attribute_profiles: vec![],
            attributes: vec![],
        }]),
        ..EntityDescriptor::default()
    }
}

fn service_provider(
    sp: &ServiceProviderConfig,
    idp: &IdentityProvider,
) -> Result<ServiceProvider, String> {
    if sp.entity_id.trim().is_empty() || sp.entity_id.len() > 1024 {
        return Err("the service provider needs an entity id".into());
    }
    if url::Url::parse(&sp.acs_url).is_err() {
        return Err("the assertion consumer service URL is not a URL".into());
    }
    let certificates = check_identity_provider(idp)?;
    Ok(ServiceProvider {
        entity_id: Some(sp.entity_id.clone()),
        acs_url: Some(sp.acs_url.clone()),
        metadata_url: None,
        slo_url: None,
        idp_metadata: idp_metadata(idp, certificates),
        allow_idp_initiated: false,
        max_issue_delay: Duration::seconds(MAX_ISSUE_DELAY_SECS),
        max_clock_skew: Duration::seconds(CLOCK_SKEW_SECS),
        allowed_signature_algorithms: Some(vec![
            AllowedSignatureAlgorithm::RsaSha256,
            AllowedSignatureAlgorithm::RsaSha384,
            AllowedSignatureAlgorithm::RsaSha512,
            AllowedSignatureAlgorithm::EcdsaSha256,
            AllowedSignatureAlgorithm::EcdsaSha384,
            AllowedSignatureAlgorithm::EcdsaSha512,
        ]),
        ..ServiceProvider::default()
    })
}

/// The identity provider an IdP metadata document describes (an `EntityDescriptor`, or the
/// first IdP of an `EntitiesDescriptor`). The document's own signature is not checked: it
/// comes from the organization's administrator, not from the network.
pub fn parse_metadata(xml: &str) -> Result<IdentityProvider, String> {
    if xml.len() > MAX_METADATA {
        return Err(format!("metadata must be at most {MAX_METADATA} bytes"));
    }
    refuse_doctype(xml)?;
    let root: EntityDescriptorType = xml
        .parse()
        .map_err(|e| format!("the metadata is not SAML metadata: {e}"))?;
    let entity = root
        .iter()
        .find(|e| {
            e.idp_sso_descriptors
                .as_ref()
                .is_some_and(|d| !d.is_empty())
        })
        .ok_or("the metadata describes no identity provider")?;
    let entity_id = entity
        .entity_id
        .clone()
        .ok_or("the identity provider in the metadata has no entityID")?;
    let descriptors = entity.idp_sso_descriptors.iter().flatten();
    let sso_url = descriptors
        .clone()
        .flat_map(|d| &d.single_sign_on_services)
        .find(|s| s.binding == HTTP_REDIRECT_BINDING)
        .map(|s| s.location.clone())
        .ok_or_else(|| {
            let post = descriptors
                .clone()
                .flat_map(|d| &d.single_sign_on_services)
                .any(|s| s.binding == HTTP_POST_BINDING);
            if post {
                "the identity provider offers sign-on by HTTP-POST only; Gatehouse sends requests by HTTP-Redirect".to_string()
            } else {
                "the identity provider has no single sign-on service".to_string()
            }
        })?;
    // Keys for signing, or of no stated use (SAML metadata, 2.4.1.1).
    let keys: Vec<&KeyDescriptor> = descriptors.flat_map(|d| &d.key_descriptors).collect();
    let certificates = keys
        .iter()
        .filter(|k| k.key_use.as_deref().is_none_or(|u| u == "signing"))
        .filter_map(|k| k.key_info.x509_data.as_ref())
        .flat_map(|x| &x.certificates)
        .map(|c| normalize_certificate(c))
        .collect::<Result<Vec<_>, _>>()?;
    let idp = IdentityProvider {
        entity_id,
        sso_url,
        certificates,
    };
    check_identity_provider(&idp)?;
    Ok(idp)
}

/// The URL that sends the browser to the IdP with an AuthnRequest of id `request_id`
/// (HTTP-Redirect binding), signed when the service provider has a key.
pub fn authn_request(
    sp: &ServiceProviderConfig,
    idp: &IdentityProvider,
    request_id: &str,
    relay_state: &str,
) -> Result<String, String> {
    warm_up();
    if !is_ncname(request_id) || request_id.len() < 17 || request_id.len() > 128 {
        return Err("a request id must be an XML name of 17 to 128 characters".into());
    }
    if relay_state.len() > MAX_RELAY_STATE {
        return Err(format!(
            "a relay state must be at most {MAX_RELAY_STATE} bytes"
        ));
    }
    let provider = service_provider(sp, idp)?;
    let mut request = provider
        .make_authentication_request(&idp.sso_url)
        .map_err(|e| format!("cannot make an AuthnRequest: {e}"))?;
    request.id = request_id.to_string();
    let url = match &sp.signing_key {
        Some(pem) => {
            // The whole query is signed, so an SSO URL with one of its own would be signed
            // wrongly (SAML bindings, 3.4.4.1).
            if idp.sso_url.contains('?') {
                return Err(
                    "a signed request needs a sign-on URL without a query string".to_string(),
                );
            }
            let key = PKey::private_key_from_pem(pem.as_bytes())
                .map_err(|_| "the signing key is not a PEM private key".to_string())?;
            request
                .signed_redirect(relay_state, &key)
                .map_err(|e| format!("cannot sign the AuthnRequest: {e}"))?
        }
        None => request
            .redirect(relay_state)
            .map_err(|e| format!("cannot encode the AuthnRequest: {e}"))?,
    };
    url.map(|u| u.to_string())
        .ok_or_else(|| "the identity provider has no sign-on URL".to_string())
}

/// Verifies `saml_response` (base64, as the HTTP-POST binding carries it) as the IdP's
/// answer to the request `request_id`.
pub fn verify_response(
    sp: &ServiceProviderConfig,
    idp: &IdentityProvider,
    saml_response: &str,
    request_id: &str,
) -> Result<Identity, String> {
    warm_up();
    if saml_response.len() > MAX_RESPONSE {
        return Err(format!(
            "a SAML response must be at most {MAX_RESPONSE} bytes"
        ));
    }
    let provider = service_provider(sp, idp)?;
    // Line breaks are allowed in the posted base64 (some IdPs wrap it).
    let compact: String = saml_response
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    let bytes = STANDARD
        .decode(compact.as_bytes())
        .map_err(|_| "the SAML response is not base64".to_string())?;
    let xml =
        String::from_utf8(bytes).map_err(|_| "the SAML response is not UTF-8 XML".to_string())?;
    scan(&xml)?;
    let assertion = provider
        .parse_xml_response(&xml, Some(&[request_id]))
        .map_err(|e| format!("the SAML response is not valid: {e}"))?;
    let now = Utc::now();
    if assertion.issue_instant > now + Duration::seconds(CLOCK_SKEW_SECS) {
        return Err("the SAML assertion is issued in the future".into());
    }
    // samael checks an AudienceRestriction only when there is one: require it.
    let audiences = assertion
        .conditions
        .as_ref()
        .and_then(|c| c.audience_restrictions.as_ref());
    let ours = audiences.is_some_and(|restrictions| {
        !restrictions.is_empty()
            && restrictions
                .iter()
                .all(|r| r.audience.iter().any(|a| a == &sp.entity_id))
    });
    if !ours {
        return Err("the SAML assertion is not restricted to this service provider".into());
    }
    let subject = assertion
        .subject
        .as_ref()
        .and_then(|s| s.name_id.as_ref())
        .filter(|n| !n.value.trim().is_empty())
        .ok_or("the SAML assertion names no subject")?;
    let statements = assertion.authn_statements.iter().flatten();
    let session_index = statements.clone().find_map(|s| s.session_index.clone());
    let authn_context = statements
        .filter_map(|s| s.authn_context.as_ref())
        .find_map(|c| c.value.as_ref().and_then(|v| v.value.clone()));
    let attributes = assertion
        .attribute_statements
        .iter()
        .flatten()
        .flat_map(|s| &s.attributes)
        .filter_map(|a| {
            Some(Attribute {
                name: a.name.clone()?,
                friendly_name: a.friendly_name.clone(),
                values: a.values.iter().filter_map(|v| v.value.clone()).collect(),
            })
        })
        .collect();
    Ok(Identity {
        issuer: assertion.issuer.value.clone().unwrap_or_default(),
        name_id: subject.value.trim().to_string(),
        name_id_format: subject.format.clone(),
        assertion_id: assertion.id.clone(),
        session_index,
        authn_context,
        attributes,
    })
}

/// The SAML metadata of a service provider, for an identity provider to import: its entity
/// id, its assertion consumer service (HTTP-POST), whether it signs its requests, that it wants
/// assertions signed, and the NameID formats it takes (persistent, email). Valid for 2 days.
pub fn sp_metadata(entity_id: &str, acs_url: &str, signs_requests: bool) -> Result<String, String> {
    use samael::metadata::{IndexedEndpoint, SpSsoDescriptor};
    use samael::traits::ToXml as _;
    let md = EntityDescriptor {
        entity_id: Some(entity_id.to_string()),
        valid_until: Some(Utc::now() + Duration::days(2)),
        sp_sso_descriptors: Some(vec![SpSsoDescriptor {
            protocol_support_enumeration: Some("urn:oasis:names:tc:SAML:2.0:protocol".into()),
            authn_requests_signed: Some(signs_requests),
            want_assertions_signed: Some(true),
            name_id_formats: Some(vec![
                "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent".into(),
                "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress".into(),
            ]),
            assertion_consumer_services: vec![IndexedEndpoint {
                binding: HTTP_POST_BINDING.into(),
                location: acs_url.to_string(),
                response_location: None,
                index: 0,
                is_default: Some(true),
            }],
            ..SpSsoDescriptor::default()
        }]),
        ..EntityDescriptor::default()
    };
    md.to_string()
        .map_err(|e| format!("cannot write the metadata: {e}"))
}

/// Whether `s` is an XML NCName as SAML ids must be (a letter or `_` first), in ASCII.
fn is_ncname(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

fn refuse_doctype(xml: &str) -> Result<(), String> {
    let mut reader = quick_xml::Reader::from_str(xml);
    loop {
        match reader.read_event() {
            Ok(Event::DocType(_)) => return Err("XML with a DOCTYPE is refused".into()),
            Ok(Event::Eof) => return Ok(()),
            Ok(_) => {}
            Err(e) => return Err(format!("the XML is malformed: {e}")),
        }
    }
}

/// Refuses what xmlsec would act on before it checks a signature (see the module's notes),
/// and what Gatehouse does not support.
fn scan(xml: &str) -> Result<(), String> {
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut depth = 0usize;
    loop {
        let event = reader
            .read_event()
            .map_err(|e| format!("the SAML response is malformed XML: {e}"))?;
        let element = match &event {
            Event::DocType(_) => return Err("a SAML response with a DOCTYPE is refused".into()),
            Event::Eof if depth == 0 => return Ok(()),
            Event::Eof => return Err("the SAML response is malformed XML: it ends early".into()),
            Event::End(_) => {
                depth = depth.saturating_sub(1);
                continue;
            }
            Event::Start(e) => {
                depth += 1;
                e
            }
            Event::Empty(e) => e,
            _ => continue,
        };
        let local = element.local_name();
        match local.as_ref() {
            b"Object" | b"Manifest" | b"RetrievalMethod" => {
                return Err(format!(
                    "a SAML response with a signature `{}` element is refused",
                    String::from_utf8_lossy(local.as_ref())
                ));
            }
            b"EncryptedAssertion" | b"EncryptedID" | b"EncryptedAttribute" => {
                return Err(
                    "encrypted assertions are not supported: configure the identity provider to sign, not encrypt".into(),
                );
            }
            b"Reference" => {
                let uri = attribute(element, b"URI")?;
                if uri
                    .as_deref()
                    .is_some_and(|u| !u.is_empty() && !u.starts_with('#'))
                {
                    return Err(
                        "a SAML response whose signature references outside the document is refused".into(),
                    );
                }
            }
            b"Transform" => {
                let algorithm = attribute(element, b"Algorithm")?.unwrap_or_default();
                if !ALLOWED_TRANSFORMS.contains(&algorithm.as_str()) {
                    return Err(format!(
                        "a SAML response with the signature transform `{algorithm}` is refused"
                    ));
                }
            }
            b"XPath" | b"XSLT" | b"stylesheet" | b"include" => {
                return Err("a SAML response with XPath, XSLT or XInclude is refused".into());
            }
            _ => {}
        }
    }
}

fn attribute(
    element: &quick_xml::events::BytesStart<'_>,
    name: &[u8],
) -> Result<Option<String>, String> {
    for a in element.attributes() {
        let a = a.map_err(|e| format!("the SAML response is malformed XML: {e}"))?;
        if a.key.local_name().as_ref() == name {
            let v = a
                .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                .map_err(|e| format!("the SAML response is malformed XML: {e}"))?;
            return Ok(Some(v.into_owned()));
        }
    }
    Ok(None)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    const DSIG_NS: &str = "http://www.w3.org/2000/09/xmldsig#";

    #[test]
    fn the_scan_refuses_what_xmlsec_would_dereference_or_transform() {
        let ok = format!(
            r##"<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol"><ds:Signature xmlns:ds="{DSIG_NS}"><ds:SignedInfo><ds:Reference URI="#id1"><ds:Transforms><ds:Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/><ds:Transform Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/></ds:Transforms></ds:Reference></ds:SignedInfo></ds:Signature></samlp:Response>"##
        );
        assert_eq!(scan(&ok), Ok(()));
        for (bad, why) in [
            (
                ok.replace("#id1", "http://169.254.169.254/latest"),
                "outside",
            ),
            (ok.replace("#id1", "file:///etc/passwd"), "outside"),
            (
                ok.replace(
                    "http://www.w3.org/2001/10/xml-exc-c14n#\"",
                    "http://www.w3.org/TR/1999/REC-xslt-19991116\"",
                ),
                "transform",
            ),
            (
                ok.replace("</ds:SignedInfo>", "</ds:SignedInfo><ds:Object/>"),
                "Object",
            ),
            (
                ok.replace("</ds:SignedInfo>", "</ds:SignedInfo><ds:Manifest></ds:Manifest>"),
                "Manifest",
            ),
            (
                format!("<!DOCTYPE r [<!ENTITY x SYSTEM \"file:///etc/passwd\">]>{ok}"),
                "DOCTYPE",
            ),
            (
                ok.replace(
                    "</samlp:Response>",
                    "<saml:EncryptedAssertion xmlns:saml=\"urn:oasis:names:tc:SAML:2.0:assertion\"/></samlp:Response>",
                ),
                "encrypted",
            ),
            (ok.replace("</samlp:Response>", ""), "malformed"),
        ] {
            let err = scan(&bad).expect_err(why);
            assert!(err.contains(why), "{why}: {err}");
        }
        // An absent or empty URI (the whole document) is what xmlsec does without fetching.
        assert_eq!(scan(&ok.replace(" URI=\"#id1\"", "")), Ok(()));
        assert_eq!(scan(&ok.replace("#id1", "")), Ok(()));
    }

    #[test]
    fn ids_are_ncnames() {
        assert!(is_ncname("_0123456789abcdef0123"));
        assert!(is_ncname("id-1.x"));
        assert!(!is_ncname("1abc"));
        assert!(!is_ncname(""));
        assert!(!is_ncname("a b"));
        assert!(!is_ncname("a\"b"));
    }
}
