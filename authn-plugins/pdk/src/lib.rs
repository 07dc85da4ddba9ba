//! The Gatehouse plugin development kit: write a login plugin in Rust.
//!
//! A plugin implements [`Plugin`] and names its type with [`plugin!`]:
//!
//! ```ignore
//! use gatehouse_pdk::*;
//!
//! struct Hello;
//!
//! impl Plugin for Hello {
//!     fn describe() -> Description {
//!         Description::strategy("hello", env!("CARGO_PKG_VERSION"), "Hello")
//!     }
//!     fn begin(_: Request) -> Result<BeginResult, Failure> {
//!         Ok(BeginResult::Form(vec![Field::new("name", "Your name", "text")]))
//!     }
//!     fn complete(req: Request) -> Result<Assertion, Failure> {
//!         Err(Failure::BadRequest(format!("hello, {}", req.param("name").unwrap_or("you"))))
//!     }
//! }
//!
//! gatehouse_pdk::plugin!(Hello);
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2`: the result is a component of
//! the world `gatehouse:authn/authn-plugin`. The host functions (`log`, `kv`, `argon2`, …) are
//! the modules below; a plugin may call only those its manifest lists under `capabilities`,
//! and the host refuses a component that imports any other.

#[doc(hidden)]
#[allow(clippy::too_many_arguments)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "authn-plugin",
        pub_export_macro: true,
        export_macro_name: "__export_authn_plugin",
        default_bindings_module: "gatehouse_pdk::bindings",
    });
}

pub use bindings::gatehouse::authn::types::{
    Assertion, BeginResult, Description, Failure, Field, Kind, StepRequest,
};

/// Log lines, tagged by the host with the plugin and the organization (capability `log`).
pub mod log {
    use super::bindings::gatehouse::authn::log::{Level, log};

    pub fn debug(message: &str) {
        log(Level::Debug, message);
    }
    pub fn info(message: &str) {
        log(Level::Info, message);
    }
    pub fn warn(message: &str) {
        log(Level::Warn, message);
    }
    pub fn error(message: &str) {
        log(Level::Error, message);
    }
}

/// The time (capability `clock`).
pub mod clock {
    pub use super::bindings::gatehouse::authn::clock::now_millis;
}

/// Secure random bytes (capability `random`).
pub mod random {
    pub use super::bindings::gatehouse::authn::random::bytes;
}

/// This plugin's key-value space in this organization (capability `kv`).
pub mod kv {
    pub use super::bindings::gatehouse::authn::kv::{delete, get, set, take};
}

/// Gatehouse's users (capability `accounts`).
pub mod accounts {
    pub use super::bindings::gatehouse::authn::accounts::{Account, find_by_email};
}

/// Per-user secrets of this plugin, encrypted by the host (capability `credentials`).
pub mod credentials {
    pub use super::bindings::gatehouse::authn::credentials::{delete, get, put};
}

/// Argon2id at native speed with the platform's parameters (capability `argon2`).
pub mod argon2 {
    pub use super::bindings::gatehouse::authn::argon2::{hash, verify};
}

/// HTTP to the hosts the manifest allows (capability `http`): `allowed-hosts`, and the hosts
/// named by the configuration fields listed under `config-hosts`. HTTPS only; the host
/// refuses other hosts, IP addresses, private addresses, and connection headers.
pub mod http {
    pub use super::bindings::gatehouse::authn::http::{Request, Response, fetch};

    /// `GET url` with these headers.
    pub fn get(url: &str, headers: &[(&str, &str)]) -> Result<Response, String> {
        fetch(&Request {
            method: "GET".into(),
            url: url.into(),
            headers: own(headers),
            body: Vec::new(),
        })
    }

    /// `POST url` with a form body (`application/x-www-form-urlencoded`, already encoded).
    pub fn post_form(url: &str, body: &str, headers: &[(&str, &str)]) -> Result<Response, String> {
        let mut h = own(headers);
        h.push((
            "content-type".into(),
            "application/x-www-form-urlencoded".into(),
        ));
        fetch(&Request {
            method: "POST".into(),
            url: url.into(),
            headers: h,
            body: body.as_bytes().to_vec(),
        })
    }

    fn own(headers: &[(&str, &str)]) -> Vec<(String, String)> {
        headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    impl Response {
        /// A header's value (names compared without case).
        pub fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }

        /// The body as text (lossy).
        pub fn text(&self) -> String {
            String::from_utf8_lossy(&self.body).into_owned()
        }
    }
}

/// Signed tokens verified by the host against a JWKS document (capability `jwt`).
pub mod jwt {
    pub use super::bindings::gatehouse::authn::jwt::verify;
}

/// Email to Gatehouse's users, through the platform's mail transport (capability `email`):
/// one plain-text message per step, to a user named by id, never to an arbitrary address.
pub mod email {
    pub use super::bindings::gatehouse::authn::email::send;
}

/// Passkeys (capability `webauthn`): WebAuthn ceremonies run by the host for the platform's
/// relying party. The plugin keeps each ceremony's state (in [`kv`], taken once) and the
/// user's passkeys (in [`credentials`]).
pub mod webauthn {
    pub use super::bindings::gatehouse::authn::webauthn::{
        Authenticated, Registered, Started, finish_authentication, finish_registration, identify,
        start_authentication, start_registration,
    };
}

/// SAML 2.0 single sign-on as a service provider (capability `saml`): the host builds the
/// AuthnRequest redirect and verifies the IdP's signed response (samael with xmlsec). The
/// plugin keeps each request's id (in [`kv`], taken once) until its response comes.
pub mod saml {
    pub use super::bindings::gatehouse::authn::saml::{
        Attribute, IdentityProvider, SamlIdentity, ServiceProvider, authn_request, parse_metadata,
        verify_response,
    };
}

/// A login plugin.
pub trait Plugin {
    /// What the plugin is; the host may call this once and keep the answer.
    fn describe() -> Description;
    /// Starts a login step: a form to show, a redirect, or a challenge.
    fn begin(request: Request) -> Result<BeginResult, Failure>;
    /// Completes a login step: who is there, or why not.
    fn complete(request: Request) -> Result<Assertion, Failure>;
}

/// One step of a login.
#[derive(Debug, Clone)]
pub struct Request(pub StepRequest);

impl Request {
    /// A submitted form field or callback parameter.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.0
            .params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The organization's configuration of the plugin (a JSON object).
    pub fn config(&self) -> &str {
        &self.0.config
    }

    /// The login flow, stable from `begin` to `complete` and bound to one browser.
    pub fn flow_id(&self) -> &str {
        &self.0.flow_id
    }

    /// Where a provider sends the browser back to.
    pub fn callback_url(&self) -> &str {
        &self.0.callback_url
    }

    /// The user signed in so far, when this step is a second factor.
    pub fn user_id(&self) -> Option<&str> {
        self.0.user_id.as_deref()
    }
}

impl Description {
    /// A strategy (something the user knows or has) with an empty configuration.
    pub fn strategy(id: &str, version: &str, display_name: &str) -> Self {
        Description {
            id: id.into(),
            version: version.into(),
            kind: Kind::Strategy,
            display_name: display_name.into(),
            config_schema: r#"{"type":"object","additionalProperties":false}"#.into(),
        }
    }
}

impl Field {
    pub fn new(name: &str, label: &str, input_type: &str) -> Self {
        Field {
            name: name.into(),
            label: label.into(),
            input_type: input_type.into(),
            autocomplete: None,
        }
    }

    pub fn autocomplete(mut self, hint: &str) -> Self {
        self.autocomplete = Some(hint.into());
        self
    }
}

/// Sends a panic's message to the host's log before the component traps, so that the
/// failure the host reports says why.
#[doc(hidden)]
pub fn __install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            log::error(&format!("plugin panicked: {info}"));
        }));
    });
}

/// Exports a [`Plugin`] as the component's `authn-plugin` world.
#[macro_export]
macro_rules! plugin {
    ($plugin:ty) => {
        #[doc(hidden)]
        pub struct __GatehouseExport;

        impl $crate::bindings::Guest for __GatehouseExport {
            fn describe() -> $crate::Description {
                $crate::__install_panic_hook();
                <$plugin as $crate::Plugin>::describe()
            }
            fn begin(
                request: $crate::StepRequest,
            ) -> ::core::result::Result<$crate::BeginResult, $crate::Failure> {
                $crate::__install_panic_hook();
                <$plugin as $crate::Plugin>::begin($crate::Request(request))
            }
            fn complete(
                request: $crate::StepRequest,
            ) -> ::core::result::Result<$crate::Assertion, $crate::Failure> {
                $crate::__install_panic_hook();
                <$plugin as $crate::Plugin>::complete($crate::Request(request))
            }
        }

        $crate::bindings::__export_authn_plugin!(__GatehouseExport);
    };
}
