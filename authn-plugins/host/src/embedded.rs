//! The first-party plugins, built from `authn-plugins/plugins/*` for wasm32-wasip2 by this
//! crate's build script and embedded in the binary.

/// A first-party plugin: its manifest and its component.
#[derive(Debug, Clone, Copy)]
pub struct Embedded {
    pub manifest: &'static str,
    pub wasm: &'static [u8],
}

pub const PASSWORD: Embedded = Embedded {
    manifest: include_str!("../../plugins/password/plugin.toml"),
    wasm: include_bytes!(concat!(
        env!("GATEHOUSE_PLUGIN_WASM_DIR"),
        "/gatehouse_plugin_password.wasm"
    )),
};

pub const OIDC: Embedded = Embedded {
    manifest: include_str!("../../plugins/oidc/plugin.toml"),
    wasm: include_bytes!(concat!(
        env!("GATEHOUSE_PLUGIN_WASM_DIR"),
        "/gatehouse_plugin_oidc.wasm"
    )),
};

pub const GITHUB: Embedded = Embedded {
    manifest: include_str!("../../plugins/github/plugin.toml"),
    wasm: include_bytes!(concat!(
        env!("GATEHOUSE_PLUGIN_WASM_DIR"),
        "/gatehouse_plugin_github.wasm"
    )),
};

pub const TOTP: Embedded = Embedded {
    manifest: include_str!("../../plugins/totp/plugin.toml"),
    wasm: include_bytes!(concat!(
        env!("GATEHOUSE_PLUGIN_WASM_DIR"),
        "/gatehouse_plugin_totp.wasm"
    )),
};

pub const MAGIC_LINK: Embedded = Embedded {
    manifest: include_str!("../../plugins/magic-link/plugin.toml"),
    wasm: include_bytes!(concat!(
        env!("GATEHOUSE_PLUGIN_WASM_DIR"),
        "/gatehouse_plugin_magic_link.wasm"
    )),
};

pub const PASSKEY: Embedded = Embedded {
    manifest: include_str!("../../plugins/passkey/plugin.toml"),
    wasm: include_bytes!(concat!(
        env!("GATEHOUSE_PLUGIN_WASM_DIR"),
        "/gatehouse_plugin_passkey.wasm"
    )),
};

pub const SAML: Embedded = Embedded {
    manifest: include_str!("../../plugins/saml/plugin.toml"),
    wasm: include_bytes!(concat!(
        env!("GATEHOUSE_PLUGIN_WASM_DIR"),
        "/gatehouse_plugin_saml.wasm"
    )),
};

/// Every first-party plugin.
pub const ALL: [Embedded; 7] = [PASSWORD, OIDC, GITHUB, TOTP, MAGIC_LINK, PASSKEY, SAML];

/// Whether `id` is a first-party plugin's (which no other plugin may take).
pub fn is_first_party(id: &str) -> bool {
    ALL.iter()
        .any(|p| crate::Manifest::parse(p.manifest).is_ok_and(|m| m.id == id))
}

/// The purpose-built misbehaving plugin of the sandbox tests (`authn-plugins/testing/hostile`),
/// for the server's tests; never installed by the server.
#[doc(hidden)]
pub const HOSTILE: Embedded = Embedded {
    manifest: include_str!("../../testing/hostile/plugin.toml"),
    wasm: include_bytes!(concat!(
        env!("GATEHOUSE_PLUGIN_WASM_DIR"),
        "/gatehouse_plugin_hostile.wasm"
    )),
};

/// The template plugin (`authn-plugins/template`), which plugin authors start from; built so
/// that it keeps building, and for the harness's tests. Never installed by the server.
#[doc(hidden)]
pub const TEMPLATE: Embedded = Embedded {
    manifest: include_str!("../../template/plugin.toml"),
    wasm: include_bytes!(concat!(
        env!("GATEHOUSE_PLUGIN_WASM_DIR"),
        "/gatehouse_plugin_template.wasm"
    )),
};
