//! In-process check, list-objects and Cedar decisions on the github sample model with 100k
//! tuples.
//!
//! `cargo bench -p gatehouse-benches --bench check`

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark setup")]

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use gatehouse_engine::model::parse_dsl;
use gatehouse_engine::service::{DecisionRequest, Engine, EngineConfig, QueryOptions};
use gatehouse_engine::store::WriteOptions;
use gatehouse_engine::store::memory::MemoryStore;
use gatehouse_engine::tuple::TupleKey;

const USERS: usize = 10_000;
const TEAMS: usize = 1_000;
const ORGS: usize = 100;
const REPOS: usize = 10_000;

/// Builds the github sample store with 100k tuples; returns the engine and store id.
pub async fn github_store(cfg: EngineConfig) -> (Arc<Engine>, String) {
    github_store_with(cfg, false).await
}

/// The github sample store in an engine of its own; see [`github_fill`].
pub async fn github_store_with(cfg: EngineConfig, half_expiring: bool) -> (Arc<Engine>, String) {
    let engine = Arc::new(Engine::new(Arc::new(MemoryStore::new()), cfg));
    let store = github_fill(&engine, half_expiring).await;
    (engine, store)
}

/// Adds a github sample store to `engine`; with `half_expiring`, every second tuple carries
/// an expiry (a day ahead, so that every answer is the same as without). Returns its id.
pub async fn github_fill(engine: &Arc<Engine>, half_expiring: bool) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/conformance/openfga-sample-stores/stores/github/model.fga");
    let model = parse_dsl(&std::fs::read_to_string(path).unwrap()).unwrap();
    let store = engine.create_store("github").await.unwrap().id;
    engine.write_model(&store, model).await.unwrap();
    let mut tuples = Vec::new();
    for r in 0..REPOS {
        let repo = format!("repo:r{r}");
        tuples.push(TupleKey::new(
            format!("organization:o{}", r % ORGS),
            "owner",
            &repo,
        ));
        tuples.push(TupleKey::new(
            format!("team:t{}#member", r % TEAMS),
            "reader",
            &repo,
        ));
        tuples.push(TupleKey::new(
            format!("team:t{}#member", (r * 7) % TEAMS),
            "writer",
            &repo,
        ));
        tuples.push(TupleKey::new(
            format!("user:u{}", (r * 13) % USERS),
            "admin",
            &repo,
        ));
        tuples.push(TupleKey::new(
            format!("user:u{}", (r * 17) % USERS),
            "triager",
            &repo,
        ));
    }
    for t in 0..TEAMS {
        for k in 0..46 {
            tuples.push(TupleKey::new(
                format!("user:u{}", (t * 46 + k) % USERS),
                "member",
                format!("team:t{t}"),
            ));
        }
        if t % 10 == 0 {
            tuples.push(TupleKey::new(
                format!("team:t{}#member", t + 1),
                "member",
                format!("team:t{t}"),
            ));
        }
    }
    for o in 0..ORGS {
        for k in 0..50 {
            tuples.push(TupleKey::new(
                format!("user:u{}", (o * 50 + k) % USERS),
                "member",
                format!("organization:o{o}"),
            ));
        }
        tuples.push(TupleKey::new(
            format!("user:u{o}"),
            "owner",
            format!("organization:o{o}"),
        ));
        if o % 2 == 0 {
            tuples.push(TupleKey::new(
                format!("organization:o{o}#member"),
                "repo_reader",
                format!("organization:o{o}"),
            ));
        }
    }
    assert!(tuples.len() >= 100_000, "{} tuples", tuples.len());
    if half_expiring {
        let at = chrono::Utc::now() + chrono::Duration::days(1);
        for t in tuples.iter_mut().step_by(2) {
            t.expires_at = Some(at);
        }
    }
    let ds = engine.datastore().clone();
    for chunk in tuples.chunks(5_000) {
        ds.write_tuples(
            &store,
            &[],
            chunk,
            WriteOptions {
                ignore_duplicates: true,
                ignore_missing: false,
            },
        )
        .await
        .unwrap();
    }
    let rev = ds.head_revision(&store).await.unwrap();
    engine.observe_revision(&store, rev);
    store
}

/// 1,000 distinct `reader` checks spread over users and repos, rotated through by the
/// benchmarks that name `1000_keys`.
fn rotating_keys() -> Vec<TupleKey> {
    (0..1000)
        .map(|i| {
            TupleKey::new(
                format!("user:u{}", i * 7 % USERS),
                "reader",
                format!("repo:r{}", i * 11 % REPOS),
            )
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (engine, store) = rt.block_on(github_store(EngineConfig::default()));
    let opts = QueryOptions::default();
    // A user reading a repo through a team nested in the repo's reader team.
    let key = TupleKey::new("user:u50", "reader", "repo:r0");
    assert!(rt.block_on(engine.check(&store, &key, &opts)).unwrap().0);

    c.bench_function("check_warm_cache", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(engine.check(&store, &key, &opts).await.unwrap()) })
    });

    // A rotating set of 1,000 distinct checks, all answered from the warm cache.
    let keys = rotating_keys();
    for k in &keys {
        rt.block_on(engine.check(&store, k, &opts)).unwrap();
    }
    let mut i = 0;
    c.bench_function("check_warm_cache_1000_keys", |b| {
        b.to_async(&rt).iter(|| {
            i = (i + 1) % keys.len();
            let k = &keys[i];
            let (engine, store, opts) = (&engine, &store, &opts);
            async move { black_box(engine.check(store, k, opts).await.unwrap()) }
        })
    });

    // A decision: graph (every relation of repo), hierarchy, and a 100-policy Cedar set.
    let mut policies = String::from(
        "@id(\"baseline\")\npermit (principal, action, resource) when { context.rebac };\n",
    );
    for i in 0..66 {
        policies.push_str(&format!(
            "@id(\"deny-{i}\")\nforbid (principal == user::\"blocked{i}\", action, resource);\n"
        ));
    }
    for i in 0..33 {
        policies.push_str(&format!(
            "@id(\"team-{i}\")\npermit (principal in team::\"t{i}\", action == Action::\"reader\", resource in organization::\"o{i}\") when {{ context.risk.score < 50 }};\n"
        ));
    }
    let version = rt
        .block_on(engine.write_policies(&store, &policies, None, vec![], true))
        .unwrap();
    let req = DecisionRequest {
        subject: "user:u50".into(),
        action: "reader".into(),
        resource: "repo:r0".into(),
        ..DecisionRequest::default()
    };
    let d = rt.block_on(engine.decide(&store, &req)).unwrap();
    assert!(d.allowed, "{d:?}");
    assert_eq!(d.policy_version, version.id);
    c.bench_function("decide_warm_100_policies", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(engine.decide(&store, &req).await.unwrap()) })
    });
    // As AuthZEN asks: only the action's relation is checked unless a policy reads the others.
    let lean = DecisionRequest {
        lean: true,
        ..req.clone()
    };
    c.bench_function("decide_warm_100_policies_lean", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(engine.decide(&store, &lean).await.unwrap()) })
    });

    // The same two without the decision memo: every decision runs the graph (cached
    // sub-results), the hydrated entity set (cached) and Cedar.
    let (unmemo, unmemo_store) = rt.block_on(github_store(EngineConfig {
        decision_cache: false,
        ..EngineConfig::default()
    }));
    rt.block_on(unmemo.write_policies(&unmemo_store, &policies, None, vec![], true))
        .unwrap();
    assert!(
        rt.block_on(unmemo.decide(&unmemo_store, &req))
            .unwrap()
            .allowed
    );
    c.bench_function("decide_warm_100_policies_no_memo", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(unmemo.decide(&unmemo_store, &req).await.unwrap()) })
    });
    c.bench_function("decide_warm_100_policies_lean_no_memo", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(unmemo.decide(&unmemo_store, &lean).await.unwrap()) })
    });

    let (cold, cold_store) = rt.block_on(github_store(EngineConfig {
        cache_enabled: false,
        ..EngineConfig::default()
    }));
    c.bench_function("check_no_cache", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(cold.check(&cold_store, &key, &opts).await.unwrap()) })
    });

    c.bench_function("list_objects_reader_no_cache", |b| {
        b.to_async(&rt).iter(|| async {
            black_box(
                cold.list_objects(&cold_store, "repo", "reader", "user:u5", &opts)
                    .await
                    .unwrap(),
            )
        })
    });
}

/// Expiring relationships: the same store with none and with half of its tuples expiring
/// (a day ahead), side by side in one engine (so in one allocator state), measured in the
/// order none, half, half, none so that drift over the run cancels in the ratio of the sums.
/// `cargo bench -p gatehouse-benches --bench check -- expiry/`
fn expiry(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let opts = QueryOptions::default();
    let keys = rotating_keys();
    let cold = Arc::new(Engine::new(
        Arc::new(MemoryStore::new()),
        EngineConfig {
            cache_enabled: false,
            ..EngineConfig::default()
        },
    ));
    let warm = Arc::new(Engine::new(
        Arc::new(MemoryStore::new()),
        EngineConfig::default(),
    ));
    let (cold_none, cold_half, warm_none, warm_half) = rt.block_on(async {
        (
            github_fill(&cold, false).await,
            github_fill(&cold, true).await,
            github_fill(&warm, false).await,
            github_fill(&warm, true).await,
        )
    });
    for store in [&warm_none, &warm_half] {
        for k in &keys {
            rt.block_on(warm.check(store, k, &opts)).unwrap();
        }
    }
    let mut g = c.benchmark_group("expiry");
    for (name, cold_store, warm_store) in [
        ("none", &cold_none, &warm_none),
        ("half", &cold_half, &warm_half),
        ("half_again", &cold_half, &warm_half),
        ("none_again", &cold_none, &warm_none),
    ] {
        let mut i = 0;
        g.bench_function(format!("check_no_cache_1000_keys/{name}"), |b| {
            b.to_async(&rt).iter(|| {
                i = (i + 1) % keys.len();
                let k = &keys[i];
                let (cold, opts) = (&cold, &opts);
                async move { black_box(cold.check(cold_store, k, opts).await.unwrap()) }
            })
        });
        let mut i = 0;
        g.bench_function(format!("check_warm_cache_1000_keys/{name}"), |b| {
            b.to_async(&rt).iter(|| {
                i = (i + 1) % keys.len();
                let k = &keys[i];
                let (warm, opts) = (&warm, &opts);
                async move { black_box(warm.check(warm_store, k, opts).await.unwrap()) }
            })
        });
        g.bench_function(format!("list_objects_reader_no_cache/{name}"), |b| {
            b.to_async(&rt).iter(|| async {
                black_box(
                    cold.list_objects(cold_store, "repo", "reader", "user:u5", &opts)
                        .await
                        .unwrap(),
                )
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench, expiry);
criterion_main!(benches);
