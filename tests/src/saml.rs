//! Signing in with an organization's SAML identity provider through the `saml` plugin. The
//! test plays the browser and the IdP: the IdP's responses are built and signed by samael's
//! IdP side (xmlsec), and posted the way a browser posts them from the IdP's site — without
//! Gatehouse's SameSite=Lax cookies, which the callback's re-post page then brings.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{Duration, Utc};
use samael::crypto::{CertificateDer, Crypto, CryptoProvider};
use samael::idp::response_builder::{ResponseAttribute, build_response_template};
use samael::idp::sp_extractor::RequiredAttribute;
use samael::idp::{CertificateParams, IdentityProvider, KeyType, Rsa};
use samael::signature::{DigestAlgorithm, Signature};
use samael::traits::ToXml;
use serde_json::{Value, json};

use crate::harness::{Backend, Server, for_each_backend};
use crate::login::{
    Browser, PASSWORD, Page, REDIRECT, admin, authorize_path, console_token, pkce, query_of,
    tenant, token,
};
use crate::providers::claims_of;

const PERSISTENT: &str = "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent";
const TRANSIENT: &str = "urn:oasis:names:tc:SAML:2.0:nameid-format:transient";

/// Makes a (bad) answer to a request id, for an ACS URL.
type MakeAnswer<'a> = dyn Fn(&str, &str) -> String + 'a;

#[derive(Clone, Copy, PartialEq)]
enum Signed {
    Response,
    Assertion,
    Nothing,
}

/// What a response says, and how it goes wrong.
struct Answer<'a> {
    request_id: &'a str,
    audience: &'a str,
    acs_url: &'a str,
    name_id: &'a str,
    name_id_format: &'a str,
    attributes: &'a [(&'a str, &'a str)],
    signed: Signed,
    /// Minutes from now at which the assertion stops being valid.
    valid_minutes: i64,
}

/// A good answer to `request_id`, for Ada, signed on the Response.
fn answer<'a>(
    request_id: &'a str,
    acs_url: &'a str,
    audience: &'a str,
    attributes: &'a [(&'a str, &'a str)],
) -> Answer<'a> {
    Answer {
        request_id,
        audience,
        acs_url,
        name_id: "ada-7f3e",
        name_id_format: PERSISTENT,
        attributes,
        signed: Signed::Response,
        valid_minutes: 5,
    }
}

/// A SAML identity provider: an RSA key and its self-signed certificate.
struct TestIdp {
    entity_id: String,
    sso_url: String,
    cert: CertificateDer,
    key_der: Vec<u8>,
}

impl TestIdp {
    fn new(entity_id: &str) -> Self {
        let idp = IdentityProvider::generate_new(KeyType::Rsa(Rsa::Rsa2048)).unwrap();
        let cert = idp
            .create_certificate(&CertificateParams {
                common_name: "idp.acme.test",
                issuer_name: "idp.acme.test",
                days_until_expiration: 30,
            })
            .unwrap();
        Self {
            entity_id: entity_id.into(),
            sso_url: "https://idp.acme.test/sso/saml".into(),
            cert,
            key_der: idp.export_private_key_der().unwrap(),
        }
    }

    fn cert_b64(&self) -> String {
        STANDARD.encode(self.cert.der_data())
    }

    fn cert_pem(&self) -> String {
        let b64 = self.cert_b64();
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            lines.join("\n")
        )
    }

    fn metadata(&self) -> String {
        format!(
            r#"<?xml version="1.0"?>
<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" xmlns:ds="http://www.w3.org/2000/09/xmldsig#" entityID="{entity}">
  <md:IDPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol" WantAuthnRequestsSigned="false">
    <md:KeyDescriptor use="signing"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{cert}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>
    <md:NameIDFormat>{PERSISTENT}</md:NameIDFormat>
    <md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST" Location="{sso}"/>
    <md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location="{sso}"/>
  </md:IDPSSODescriptor>
</md:EntityDescriptor>"#,
            entity = self.entity_id,
            cert = self.cert_b64(),
            sso = self.sso_url,
        )
    }

    /// The XML of a response, signed as `a.signed` says.
    fn response_xml(&self, a: &Answer<'_>) -> String {
        let attrs: Vec<ResponseAttribute> = a
            .attributes
            .iter()
            .map(|(n, v)| ResponseAttribute {
                required_attribute: RequiredAttribute {
                    name: (*n).into(),
                    format: Some("urn:oasis:names:tc:SAML:2.0:attrname-format:basic".into()),
                },
                value: v,
            })
            .collect();
        let mut r = build_response_template(
            &self.cert,
            a.name_id,
            a.audience,
            &self.entity_id,
            a.acs_url,
            a.request_id,
            &attrs,
        );
        let now = Utc::now();
        let assertion = r.assertion.as_mut().unwrap();
        if let Some(c) = assertion.conditions.as_mut() {
            c.not_before = Some(now - Duration::seconds(30));
            c.not_on_or_after = Some(now + Duration::minutes(a.valid_minutes));
        }
        let subject = assertion.subject.as_mut().unwrap();
        subject.name_id.as_mut().unwrap().format = Some(a.name_id_format.into());
        for sc in subject.subject_confirmations.iter_mut().flatten() {
            if let Some(d) = sc.subject_confirmation_data.as_mut() {
                d.not_on_or_after = Some(now + Duration::minutes(a.valid_minutes));
            }
        }
        match a.signed {
            Signed::Response => {}
            Signed::Assertion => {
                r.signature = None;
                assertion.signature = Some(Signature::template(&assertion.id, &self.cert));
            }
            Signed::Nothing => r.signature = None,
        }
        // SHA-256 digests: Gatehouse refuses SHA-1.
        for s in r
            .signature
            .iter_mut()
            .chain(r.assertion.as_mut().unwrap().signature.iter_mut())
        {
            for reference in &mut s.signed_info.reference {
                reference.digest_method.algorithm = DigestAlgorithm::Sha256;
            }
        }
        let xml = r.to_string().unwrap();
        match a.signed {
            Signed::Nothing => xml,
            _ => Crypto::sign_xml(xml, &self.key_der).unwrap(),
        }
    }

    fn response(&self, a: &Answer<'_>) -> String {
        STANDARD.encode(self.response_xml(a))
    }
}

/// The AuthnRequest a redirect to the IdP carries (HTTP-Redirect binding: raw DEFLATE, base64).
fn authn_request(url: &str) -> samael::schema::AuthnRequest {
    use std::io::Read as _;
    let q = query_of(url);
    let mut xml = String::new();
    flate2::read::DeflateDecoder::new(&STANDARD.decode(&q["SAMLRequest"]).unwrap()[..])
        .read_to_string(&mut xml)
        .unwrap();
    xml.parse().unwrap()
}

/// The hidden fields of a page's form, unescaped.
fn hidden_fields(html: &str) -> Vec<(String, String)> {
    let re = regex::Regex::new(r#"<input type="hidden" name="([^"]*)" value="([^"]*)">"#).unwrap();
    let unescape = |s: &str| {
        s.replace("&quot;", "\"")
            .replace("&#39;", "'")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&")
    };
    re.captures_iter(html)
        .map(|c| (unescape(&c[1]), unescape(&c[2])))
        .collect()
}

/// A sign-in started in `b` and sent to the IdP: the request's id and where it wants the
/// answer.
async fn start(
    b: &mut Browser,
    client_id: &str,
    challenge: &str,
    idp: &TestIdp,
) -> (String, String) {
    let go = b
        .get(&authorize_path(
            client_id,
            REDIRECT,
            challenge,
            &[("prompt", "login")],
        ))
        .await;
    assert_eq!(go.status, 303, "{}", go.body);
    let login = go.location.unwrap();
    let request = login.trim_start_matches("/login?request=").to_string();
    let page = b.get(&login).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let button = format!("/login/with/saml?request={request}");
    assert!(
        page.body.contains(&format!("href=\"{button}\"")),
        "{}",
        page.body
    );
    assert!(
        page.body.contains("Continue with Acme Okta"),
        "{}",
        page.body
    );
    let go = b.get(&button).await;
    assert_eq!(go.status, 303, "{}", go.body);
    let url = go.location.unwrap();
    assert!(
        url.starts_with(&format!("{}?SAMLRequest=", idp.sso_url)),
        "{url}"
    );
    let req = authn_request(&url);
    assert!(req.id.starts_with('_') && req.id.len() == 41, "{}", req.id);
    assert_eq!(req.destination.as_deref(), Some(idp.sso_url.as_str()));
    let acs = req.assertion_consumer_service_url.clone().unwrap();
    (req.id, acs)
}

/// Posts `saml_response` as the IdP's page does: from its own site, so without Gatehouse's
/// cookies; the re-post page then posts it again from Gatehouse's site, with them.
async fn post_from_idp(s: &Server, b: &mut Browser, saml_response: &str) -> Page {
    let cross_site = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = cross_site
        .post(format!("{}/login/callback/saml", s.base))
        .header("origin", "https://idp.acme.test")
        .form(&[("SAMLResponse", saml_response), ("RelayState", "")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.headers().get("set-cookie").is_none());
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    let page = r.text().await.unwrap();
    assert!(page.contains(r#"action="/login/callback/saml""#), "{page}");
    assert!(csp.contains("script-src 'nonce-"), "{csp}");
    let fields = hidden_fields(&page);
    assert_eq!(
        fields[0],
        ("SAMLResponse".to_string(), saml_response.to_string())
    );
    assert!(
        fields.iter().any(|(k, v)| k == "gh_reposted" && v == "1"),
        "{page}"
    );
    let fields: Vec<(&str, &str)> = fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    b.post("/login/callback/saml", &fields).await
}

for_each_backend!(the_saml_plugin_signs_in_with_signed_responses_only);

async fn the_saml_plugin_signs_in_with_signed_responses_only(backend: Backend) {
    let s = Server::start(backend).await;
    let (client_id, secret, ada) = tenant(&s, "acme").await;
    admin(
        &s,
        &[
            "user",
            "create",
            "--email",
            "alice@acme.io",
            "--password-stdin",
            "--org",
            "acme",
            "--role",
            "admin",
        ],
        &format!("{PASSWORD}\n"),
    )
    .await
    .unwrap();
    // Gatehouse's own API takes the console's tokens.
    let alice = console_token(&s, "alice@acme.io").await;
    let path = format!("{}/api/services/{client_id}/plugins/saml", s.base);
    let put = |config: Value| {
        let (s, path, alice) = (&s, path.clone(), alice.clone());
        async move {
            let r = s
                .client
                .put(path)
                .bearer_auth(alice)
                .json(&json!({ "config": config }))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let idp = TestIdp::new("https://idp.acme.test/metadata");
    let callback = format!("{}/login/callback/saml", s.base);

    // Configurations that cannot work are refused, and nothing is enabled.
    for (config, needle) in [
        (json!({}), "oneOf"),
        (
            json!({ "idp_metadata": idp.metadata(), "idp_entity_id": "x" }),
            "oneOf",
        ),
        (
            json!({ "idp_entity_id": "x", "idp_sso_url": idp.sso_url }),
            "oneOf",
        ),
        (
            json!({ "idp_entity_id": "x", "idp_sso_url": "ftp://idp", "idp_certificates": [idp.cert_pem()] }),
            "idp_sso_url",
        ),
        (
            json!({ "idp_entity_id": "x", "idp_sso_url": idp.sso_url, "idp_certificates": [] }),
            "idp_certificates",
        ),
        (
            json!({ "idp_metadata": idp.metadata(), "trust_email": "yes" }),
            "trust_email",
        ),
        (
            json!({ "idp_metadata": idp.metadata(), "attributes": { "phone": "tel" } }),
            "phone",
        ),
    ] {
        let (st, e) = put(config.clone()).await;
        assert_eq!(st, 400, "{config}: {e}");
        assert!(e.to_string().contains(needle), "{needle}: {e}");
    }
    let metadata_url = format!("{}/login/metadata/saml/{client_id}", s.base);
    let r = s.client.get(&metadata_url).send().await.unwrap();
    assert_eq!(r.status(), 404, "no SAML on the service yet");
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "not_found");
    let (st, got) = put(json!({
        "idp_metadata": idp.metadata(),
        "trust_email": true,
        "display_name": "Acme Okta",
    }))
    .await;
    assert_eq!(st, 200, "{got}");
    // The service provider's metadata, for the IdP: the callback is its entity id and its
    // assertion consumer service.
    let r = s.client.get(&metadata_url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/samlmetadata+xml");
    let md: samael::metadata::EntityDescriptor = r.text().await.unwrap().parse().unwrap();
    assert_eq!(md.entity_id.as_deref(), Some(callback.as_str()));
    let sp = &md.sp_sso_descriptors.as_ref().unwrap()[0];
    assert_eq!(sp.assertion_consumer_services[0].location, callback);
    assert_eq!(
        sp.assertion_consumer_services[0].binding,
        "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"
    );
    assert_eq!(sp.want_assertions_signed, Some(true));
    let r = s
        .client
        .get(format!("{}/login/metadata/saml/no-such-client", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // Ada's address is a password account's: the IdP's word alone does not link them.
    let attributes = [
        ("mail", ada.as_str()),
        ("givenName", "Ada"),
        ("sn", "Lovelace"),
        ("memberOf", "engineering"),
    ];
    let mut b = Browser::new(&s);
    let (_, challenge) = pkce();
    let (id, acs) = start(&mut b, &client_id, &challenge, &idp).await;
    // The service provider is the callback, which also receives the answer.
    assert_eq!(acs, callback);
    let page = post_from_idp(
        &s,
        &mut b,
        &idp.response(&answer(&id, &acs, &callback, &attributes)),
    )
    .await;
    // It asks for the code mailed to the address, as for any address; nobody is signed in.
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("Check your email"), "{}", page.body);
    assert!(!b.cookies.contains_key("gh_session"));

    // Signed in with her password, the same browser links the two.
    let (_, challenge) = pkce();
    let p = b
        .sign_in(
            &authorize_path(&client_id, REDIRECT, &challenge, &[]),
            &ada,
            PASSWORD,
        )
        .await;
    assert_eq!(p.status, 303, "{}", p.body);
    let (_, challenge) = pkce();
    let (id, acs) = start(&mut b, &client_id, &challenge, &idp).await;
    let linked = idp.response(&answer(&id, &acs, &callback, &attributes));
    let asked = post_from_idp(&s, &mut b, &linked).await;
    let page = crate::login::confirm_link(&mut b, asked).await;
    assert_eq!(page.status, 303, "{}", page.body);
    assert!(page.location.as_deref().unwrap().starts_with(REDIRECT));
    // The same answer again finds its request used.
    let page = post_from_idp(&s, &mut b, &linked).await;
    assert_eq!(page.status, 400, "{}", page.body);
    assert!(page.location.is_none());

    // From then on a fresh browser signs in with the IdP alone (here with only the assertion
    // signed), and the tokens say how.
    let mut fresh = Browser::new(&s);
    let (verifier, challenge) = pkce();
    let (id, acs) = start(&mut fresh, &client_id, &challenge, &idp).await;
    let mut a = answer(&id, &acs, &callback, &attributes);
    a.signed = Signed::Assertion;
    let page = post_from_idp(&s, &mut fresh, &idp.response(&a)).await;
    assert_eq!(page.status, 303, "{}", page.body);
    let q = query_of(page.location.as_deref().unwrap());
    let (st, t) = token(
        &s,
        &[
            ("grant_type", "authorization_code"),
            ("code", &q["code"]),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &verifier),
        ],
        Some((&client_id, &secret)),
    )
    .await;
    assert_eq!(st, 200, "{t}");
    let claims = claims_of(t["id_token"].as_str().unwrap());
    assert_eq!(claims["amr"], json!(["fed"]));

    // Each of these answers is refused, and signs nobody in: the browser has a fresh flow
    // each time, and the request it answers is used up.
    let other_idp = TestIdp::new("https://idp.acme.test/metadata");
    let cases: Vec<(&str, Box<MakeAnswer>)> = vec![
        (
            "not valid",
            Box::new(|id, acs| {
                let mut a = answer(id, acs, &callback, &attributes);
                a.signed = Signed::Nothing;
                idp.response(&a)
            }),
        ),
        (
            "not valid",
            Box::new(|id, acs| other_idp.response(&answer(id, acs, &callback, &attributes))),
        ),
        (
            "not valid",
            Box::new(|id, acs| {
                // Another subject after signing.
                let xml = idp.response_xml(&answer(id, acs, &callback, &attributes));
                STANDARD.encode(xml.replace("ada-7f3e", "root-0001"))
            }),
        ),
        (
            "InResponseTo",
            Box::new(|_, acs| {
                idp.response(&answer(
                    "_00000000000000000000000000000000000000ff",
                    acs,
                    &callback,
                    &attributes,
                ))
            }),
        ),
        (
            "Audience",
            Box::new(|id, acs| {
                let mut a = answer(id, acs, &callback, &attributes);
                a.audience = "https://other-sp.example";
                idp.response(&a)
            }),
        ),
        (
            "destination",
            Box::new(|id, _| {
                idp.response(&answer(
                    id,
                    "https://evil.example/acs",
                    &callback,
                    &attributes,
                ))
            }),
        ),
        (
            "expired",
            Box::new(|id, acs| {
                let mut a = answer(id, acs, &callback, &attributes);
                a.valid_minutes = -10;
                idp.response(&a)
            }),
        ),
        (
            "transient",
            Box::new(|id, acs| {
                let mut a = answer(id, acs, &callback, &attributes);
                a.name_id_format = TRANSIENT;
                idp.response(&a)
            }),
        ),
        (
            "DOCTYPE",
            Box::new(|id, acs| {
                let xml = idp.response_xml(&answer(id, acs, &callback, &attributes));
                let body = match xml.split_once("?>") {
                    Some((decl, rest)) if decl.starts_with("<?xml") => rest.to_string(),
                    _ => xml.clone(),
                };
                STANDARD.encode(format!(
                "<?xml version=\"1.0\"?><!DOCTYPE r [<!ENTITY x SYSTEM \"file:///etc/passwd\">]>{body}"
            ))
            }),
        ),
        (
            "outside the document",
            Box::new(|id, acs| {
                let xml = idp.response_xml(&answer(id, acs, &callback, &attributes));
                let re = regex::Regex::new(r##"URI="#[^"]*""##).unwrap();
                STANDARD.encode(
                    re.replace(&xml, r#"URI="http://127.0.0.1:9/steal""#)
                        .into_owned(),
                )
            }),
        ),
        ("not base64", Box::new(|_, _| "%%%".to_string())),
    ];
    for (needle, make) in &cases {
        let mut b = Browser::new(&s);
        let (_, challenge) = pkce();
        let (id, acs) = start(&mut b, &client_id, &challenge, &idp).await;
        let page = post_from_idp(&s, &mut b, &make(&id, &acs)).await;
        assert_eq!(page.status, 400, "{needle}: {}", page.body);
        assert!(page.location.is_none(), "{needle}");
        assert!(page.body.contains(needle), "{needle}: {}", page.body);
        assert!(
            !b.cookies.contains_key("gh_session"),
            "{needle}: a session opened"
        );
    }
    // No answer at all, and an answer with no sign-in in this browser.
    let mut b = Browser::new(&s);
    let (_, challenge) = pkce();
    start(&mut b, &client_id, &challenge, &idp).await;
    let page = b.post("/login/callback/saml", &[("RelayState", "")]).await;
    assert_eq!(page.status, 400, "{}", page.body);
    assert!(page.body.contains("no SAML response"), "{}", page.body);
    let mut stranger = Browser::new(&s);
    let page = stranger
        .post(
            "/login/callback/saml",
            &[("SAMLResponse", &linked), ("gh_reposted", "1")],
        )
        .await;
    assert_eq!(page.status, 400, "{}", page.body);
    assert!(page.body.contains("expired"), "{}", page.body);
    // Only an identity provider's answer is posted again: a strategy's (here the passkey's)
    // comes from this site's own pages, and one posted from elsewhere without cookies has
    // expired.
    let r = reqwest::Client::new()
        .post(format!("{}/login/callback/passkey", s.base))
        .header("origin", "https://evil.example")
        .form(&[("response", "{}")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert!(r.text().await.unwrap().contains("expired"));
    // An answer over the size cap is refused before it is read.
    let huge = "A".repeat(600 << 10);
    let page = b
        .post("/login/callback/saml", &[("SAMLResponse", &huge)])
        .await;
    assert!(matches!(page.status, 400 | 413), "{}", page.status);

    // The same IdP given by its three fields, with a service provider entity id of the
    // organization's choosing, and addresses not trusted: the IdP names a new address, which
    // is not verified, so nobody signs in.
    let (st, got) = put(json!({
        "idp_entity_id": idp.entity_id,
        "idp_sso_url": idp.sso_url,
        "idp_certificates": [idp.cert_pem()],
        "sp_entity_id": "https://gatehouse.test/sp/acme",
        "display_name": "Acme Okta",
    }))
    .await;
    assert_eq!(st, 200, "{got}");
    let md: samael::metadata::EntityDescriptor = s
        .client
        .get(&metadata_url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        md.entity_id.as_deref(),
        Some("https://gatehouse.test/sp/acme")
    );
    let mut b = Browser::new(&s);
    let (_, challenge) = pkce();
    let (id, acs) = start(&mut b, &client_id, &challenge, &idp).await;
    let newcomer = [("mail", "newcomer@acme.io")];
    let a = Answer {
        request_id: &id,
        audience: "https://gatehouse.test/sp/acme",
        acs_url: &acs,
        name_id: "newcomer-1",
        name_id_format: PERSISTENT,
        attributes: &newcomer,
        signed: Signed::Response,
        valid_minutes: 5,
    };
    let page = post_from_idp(&s, &mut b, &idp.response(&a)).await;
    assert_eq!(page.status, 403, "{}", page.body);
    assert!(page.body.contains("verified"), "{}", page.body);
    // The linked account still signs in under the new configuration (same IdP, same subject).
    let mut b = Browser::new(&s);
    let (_, challenge) = pkce();
    let (id, acs) = start(&mut b, &client_id, &challenge, &idp).await;
    let mut a = answer(&id, &acs, &callback, &attributes);
    a.audience = "https://gatehouse.test/sp/acme";
    let page = post_from_idp(&s, &mut b, &idp.response(&a)).await;
    assert_eq!(page.status, 303, "{}", page.body);

    // The attempts are in the audit log, with their reasons.
    let r = s
        .client
        .get(format!(
            "{}/api/organizations/acme/audit?kind=login.failed&limit=100",
            s.base
        ))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    let audit: Value = r.json().await.unwrap();
    let text = audit.to_string();
    assert!(
        text.contains("saml") && text.contains("transient"),
        "{text}"
    );
}

/// The plugin's attribute mapping, run on the plugin harness (the real host and its saml
/// capability, no server): attributes named by the configuration carry the address, the
/// name parts and the groups, and `subject_attribute` names the user instead of the NameID;
/// the usual names are then not looked at.
#[tokio::test]
async fn the_saml_plugin_maps_attributes_as_configured() {
    use gatehouse_plugin_host::embedded::SAML;

    use crate::plugins::{harness_step, plugin_dir};

    let root = crate::harness::TempDir::new("saml-harness");
    let dir = plugin_dir(root.path(), "saml", SAML.manifest, Some(SAML.wasm));
    let state = root.path().join("state.json").display().to_string();
    let callback = "https://gatehouse.test/login/callback/saml";
    let idp = TestIdp::new("https://idp.navy.test/saml");
    let config = json!({
        "idp_metadata": idp.metadata(),
        "trust_email": true,
        "subject_attribute": "employeeNumber",
        "attributes": {
            "email": "corpMail",
            "given_name": "first",
            "family_name": "last",
            "groups": "teams",
        },
    })
    .to_string();
    let common = [
        "--plugin-config",
        config.as_str(),
        "--callback",
        callback,
        "--flow",
        "flow-1",
        "--state",
        state.as_str(),
    ];
    let begun = harness_step(&dir, &[&["begin"][..], &common].concat())
        .await
        .unwrap();
    let url = begun["result"]["redirect"].as_str().unwrap();
    let request = authn_request(url);
    let attributes = [
        ("corpMail", "Grace@Navy.test"),
        ("mail", "someone.else@navy.test"),
        ("first", "Grace"),
        ("last", "Hopper"),
        ("teams", "compilers"),
        ("memberOf", "not-these"),
        ("employeeNumber", "E-1906"),
    ];
    let response = idp.response(&answer(&request.id, callback, callback, &attributes));
    let param = format!("SAMLResponse={response}");
    let done = harness_step(
        &dir,
        &[&["complete", "--param", param.as_str()][..], &common].concat(),
    )
    .await
    .unwrap();
    let a = &done["result"]["assertion"];
    assert_eq!(a["subject"], "E-1906", "{done}");
    assert_eq!(a["provider"], "https://idp.navy.test/saml", "{done}");
    assert_eq!(a["email"], "Grace@Navy.test", "{done}");
    assert_eq!(a["email_verified"], true, "{done}");
    assert_eq!(a["methods"], json!(["fed"]), "{done}");
    let claims: Value = match &a["claims"] {
        Value::String(s) => serde_json::from_str(s).unwrap(),
        other => other.clone(),
    };
    assert_eq!(claims["given_name"], "Grace", "{done}");
    assert_eq!(claims["family_name"], "Hopper", "{done}");
    assert_eq!(claims["groups"], json!(["compilers"]), "{done}");

    // Without the attribute that names the user, there is nobody to sign in.
    let begun = harness_step(&dir, &[&["begin"][..], &common].concat())
        .await
        .unwrap();
    let request = authn_request(begun["result"]["redirect"].as_str().unwrap());
    let anonymous = [("corpMail", "grace@navy.test")];
    let param = format!(
        "SAMLResponse={}",
        idp.response(&answer(&request.id, callback, callback, &anonymous))
    );
    let refused = harness_step(
        &dir,
        &[&["complete", "--param", param.as_str()][..], &common].concat(),
    )
    .await
    .unwrap();
    assert!(
        refused["failure"].to_string().contains("employeeNumber"),
        "{refused}"
    );
}

/// Trust boundaries, item 4 (docs/security.md): a second organization configures SAML with
/// the entity id of another organization's IdP and a key of its own, and signs an answer for
/// a person that IdP vouches for. It signs nobody in to that person's account and leaves no
/// session in the browser: an organization's IdP vouches inside that organization only.
#[tokio::test(flavor = "multi_thread")]
async fn an_organizations_idp_vouches_only_inside_it() {
    let s = Server::start(Backend::Sqlite).await;
    let (acme_app, _, ada) = tenant(&s, "acme").await;
    let (evil_app, _, _) = tenant(&s, "evil").await;
    let entity = "https://idp.acme.test/metadata";
    let real = TestIdp::new(entity);
    let forged = TestIdp::new(entity);
    for (org, admin_email, client_id, idp) in [
        ("acme", "alice@acme.io", &acme_app, &real),
        ("evil", "eve@evil.io", &evil_app, &forged),
    ] {
        crate::login::add_user(&s, org, admin_email, "admin").await;
        let t = console_token(&s, admin_email).await;
        let r = s
            .client
            .put(format!("{}/api/services/{client_id}/plugins/saml", s.base))
            .bearer_auth(t)
            .json(&json!({ "config": {
                "idp_metadata": idp.metadata(),
                "trust_email": true,
                "display_name": "Acme Okta",
            } }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }
    let callback = format!("{}/login/callback/saml", s.base);
    let attributes = [("mail", ada.as_str()), ("givenName", "Ada")];

    // Ada links acme's IdP account to hers, signed in with her password.
    let mut b = Browser::new(&s);
    let (_, challenge) = pkce();
    let p = b
        .sign_in(
            &authorize_path(&acme_app, REDIRECT, &challenge, &[]),
            &ada,
            PASSWORD,
        )
        .await;
    assert_eq!(p.status, 303, "{}", p.body);
    let (_, challenge) = pkce();
    let (id, acs) = start(&mut b, &acme_app, &challenge, &real).await;
    let asked = post_from_idp(
        &s,
        &mut b,
        &real.response(&answer(&id, &acs, &callback, &attributes)),
    )
    .await;
    let page = crate::login::confirm_link(&mut b, asked).await;
    assert_eq!(page.status, 303, "{}", page.body);

    // Evil's forged answer for the same IdP subject, through evil's own service.
    let mut victim = Browser::new(&s);
    let (_, challenge) = pkce();
    let (id, acs) = start(&mut victim, &evil_app, &challenge, &forged).await;
    let page = post_from_idp(
        &s,
        &mut victim,
        &forged.response(&answer(&id, &acs, &callback, &attributes)),
    )
    .await;
    // Evil's IdP account is not linked to anyone: the browser is asked for the code mailed to
    // Ada, which evil does not have. Guessing gets nowhere: after five wrong codes even the
    // right one is refused.
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("Check your email"), "{}", page.body);
    let re = regex::Regex::new(r#"name="csrf" value="([^"]*)""#).unwrap();
    let csrf = re.captures(&page.body).unwrap()[1].to_string();
    for guess in ["00000000", "12345678", "11111111", "99999999", "31415926"] {
        let p = victim
            .post("/login/prove", &[("csrf", csrf.as_str()), ("code", guess)])
            .await;
        assert_eq!(p.status, 400, "{}", p.body);
    }
    let code = crate::login::code_in_mail(&s, &ada, 1).await;
    let p = victim
        .post(
            "/login/prove",
            &[("csrf", csrf.as_str()), ("code", code.as_str())],
        )
        .await;
    assert_eq!(p.status, 429, "{}", p.body);
    assert!(
        !victim.cookies.contains_key("gh_session"),
        "a forged answer left a session"
    );
    // Nobody is signed in to Ada's own application in that browser.
    let (_, challenge) = pkce();
    let sso = victim
        .get(&authorize_path(
            &acme_app,
            REDIRECT,
            &challenge,
            &[("prompt", "none")],
        ))
        .await;
    assert_eq!(
        query_of(sso.location.as_deref().unwrap())
            .get("error")
            .map(String::as_str),
        Some("login_required")
    );
    // Acme's real IdP still signs Ada in.
    let mut fresh = Browser::new(&s);
    let (_, challenge) = pkce();
    let (id, acs) = start(&mut fresh, &acme_app, &challenge, &real).await;
    let page = post_from_idp(
        &s,
        &mut fresh,
        &real.response(&answer(&id, &acs, &callback, &attributes)),
    )
    .await;
    assert_eq!(page.status, 303, "{}", page.body);
}
