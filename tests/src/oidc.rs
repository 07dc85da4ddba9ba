//! The OpenID provider's keys through the real server: the JWKS, and the master key of the
//! embedded default.

use std::os::unix::fs::PermissionsExt;

use crate::harness::{Backend, Server, ServerOptions, for_each_backend};

/// A master key for servers that share a database (32 zero-free bytes, base64).
pub const TEST_MASTER_KEY: &str = "Z2F0ZWhvdXNlLXRlc3QtbWFzdGVyLWtleS0zMi1ieXQ=";

for_each_backend!(jwks_is_public_and_lists_the_signing_key);

async fn jwks_is_public_and_lists_the_signing_key(backend: Backend) {
    let s = Server::start(backend).await;
    // No API key needed: relying parties fetch it.
    let r = s
        .client
        .get(format!("{}/.well-known/jwks.json", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"].to_str().unwrap(),
        "application/jwk-set+json"
    );
    assert_eq!(
        r.headers()["cache-control"].to_str().unwrap(),
        "public, max-age=3600"
    );
    let jwks: serde_json::Value = r.json().await.unwrap();
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1, "{jwks}");
    let k = &keys[0];
    assert_eq!(k["kty"], "RSA", "{k}");
    assert_eq!(k["alg"], "RS256", "{k}");
    assert_eq!(k["use"], "sig", "{k}");
    assert!(k["kid"].as_str().is_some_and(|s| !s.is_empty()), "{k}");
    // A 2048-bit modulus (256 bytes, base64url without padding), and no private parts.
    assert_eq!(k["n"].as_str().unwrap().len(), 342, "{k}");
    for private in ["d", "p", "q", "dp", "dq", "qi"] {
        assert!(k.get(private).is_none(), "{private} published: {k}");
    }
    let r = s
        .client
        .post(format!("{}/.well-known/jwks.json", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);

    // The embedded default generated its master key, readable by its owner only.
    if backend == Backend::Sqlite {
        let path = s.data_dir().join("master.key");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}: {mode:o}", path.display());
    }
}

/// `GATEHOUSE_SIGNING_ALG` selects ES256 or EdDSA keys; anything else is refused at start.
#[tokio::test(flavor = "multi_thread")]
async fn the_signing_algorithm_is_configurable() {
    for (alg, kty, crv) in [("ES256", "EC", "P-256"), ("EdDSA", "OKP", "Ed25519")] {
        let mut opts = ServerOptions::new(Backend::Sqlite);
        opts.env.push(("GATEHOUSE_SIGNING_ALG".into(), alg.into()));
        let s = Server::start_with(opts).await;
        let jwks = s.get("/.well-known/jwks.json").await.ok();
        let k = &jwks["keys"][0];
        assert_eq!(
            (k["alg"].as_str(), k["kty"].as_str(), k["crv"].as_str()),
            (Some(alg), Some(kty), Some(crv)),
            "{jwks}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_signing_algorithm_or_master_key_stops_the_server_at_start() {
    let bin = tokio::task::spawn_blocking(crate::harness::binary)
        .await
        .unwrap();
    let dir = crate::harness::TempDir::new("bad-oidc-config");
    for (name, value, says) in [
        ("GATEHOUSE_SIGNING_ALG", "HS256", "HS256"),
        ("GATEHOUSE_MASTER_KEY", "c2hvcnQ=", "32 bytes"),
    ] {
        let out = tokio::process::Command::new(&bin)
            .arg("serve")
            .env_clear()
            .env("GATEHOUSE_ADDR", "127.0.0.1:0")
            .env("GATEHOUSE_DATA_DIR", dir.path())
            .env("GATEHOUSE_API_KEYS", "k")
            .env(name, value)
            .output()
            .await
            .unwrap();
        assert!(!out.status.success(), "{name}={value} started");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{name}={value}: {err}");
        assert!(
            !err.contains(value) || name != "GATEHOUSE_MASTER_KEY",
            "the key was printed: {err}"
        );
    }
}
