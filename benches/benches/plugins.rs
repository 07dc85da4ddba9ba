//! The plugin host: what a step costs, and a password login through the `password` plugin
//! against the native Argon2id verification it wraps, measured in the same run.
//!
//!     cargo bench -p gatehouse-benches --bench plugins
//!
//! `instantiate + describe` is a whole step: a store, an instance from the pre-instantiated
//! component in the pooling allocator, the call and its answer. `password login` is
//! `complete` of the password plugin for a known account with the right password: the plugin
//! looks the account up, reads its hash and asks the host to verify it (Argon2id at the
//! platform's parameters, the server's own verifier); `native verify` is that verification
//! alone.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark setup")]

use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use gatehouse_plugin_host::{
    Account, Assertion, Capability, Host, Limits, Services, StepRequest, embedded,
};
use gatehouse_server::identity::users::{hash_password, verify_password};

const PASSWORD: &str = "correct horse battery";

/// One account and its hash, in memory: the lookups cost next to nothing, so the comparison
/// is of the plugin's overhead alone.
struct OneAccount {
    hash: String,
}

#[async_trait::async_trait]
impl Services for OneAccount {
    async fn kv_get(&self, _: &str) -> Result<Option<Vec<u8>>, String> {
        Ok(None)
    }
    async fn kv_set(&self, _: &str, _: &[u8], _: Duration) -> Result<(), String> {
        Ok(())
    }
    async fn kv_take(&self, _: &str) -> Result<Option<Vec<u8>>, String> {
        Ok(None)
    }
    async fn kv_delete(&self, _: &str) -> Result<(), String> {
        Ok(())
    }
    async fn find_account(&self, email: &str) -> Result<Option<Account>, String> {
        Ok((email == "bench@example.com").then(|| Account {
            id: "u1".into(),
            email: email.into(),
            email_verified: true,
        }))
    }
    async fn credential(&self, _: &str, user: &str, _: &str) -> Result<Option<String>, String> {
        Ok((user == "u1").then(|| self.hash.clone()))
    }
    async fn set_credential(
        &self,
        _: &str,
        _: &str,
        _: &str,
        _: Option<&str>,
    ) -> Result<(), String> {
        Err("read-only".into())
    }
    async fn argon2_hash(&self, p: &str) -> Result<String, String> {
        hash_password(p).await.map_err(|e| e.to_string())
    }
    async fn argon2_verify(&self, hash: &str, p: &str) -> Result<bool, String> {
        Ok(verify_password(p, hash).await)
    }
}

fn login() -> StepRequest {
    StepRequest {
        config: "{}".into(),
        params: vec![
            ("email".into(), "bench@example.com".into()),
            ("password".into(), PASSWORD.into()),
        ],
        flow_id: "flow".into(),
        callback_url: String::new(),
        user_id: None,
    }
}

fn plugins(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let hash = rt.block_on(hash_password(PASSWORD)).unwrap();
    let host = rt.block_on(async {
        let host = Host::new(
            Limits::default(),
            &Capability::ALL,
            Arc::new(OneAccount { hash: hash.clone() }),
        )
        .unwrap();
        host.install(embedded::PASSWORD.manifest, embedded::PASSWORD.wasm)
            .await
            .unwrap();
        host
    });
    let ok: Result<Assertion, _> = rt
        .block_on(host.complete("password", "org", login()))
        .unwrap();
    assert!(ok.is_ok(), "the bench login must succeed: {ok:?}");

    c.bench_function("instantiate + describe", |b| {
        b.to_async(&rt)
            .iter(|| async { host.describe("password").await.unwrap() })
    });

    let mut g = c.benchmark_group("password login");
    g.sample_size(30).measurement_time(Duration::from_secs(15));
    g.bench_function("native verify", |b| {
        b.to_async(&rt)
            .iter(|| async { assert!(verify_password(PASSWORD, &hash).await) })
    });
    g.bench_function("through the plugin", |b| {
        b.to_async(&rt).iter(|| async {
            let r = host.complete("password", "org", login()).await.unwrap();
            assert!(r.is_ok());
        })
    });
    g.finish();
}

criterion_group!(benches, plugins);
criterion_main!(benches);
