//! Consistency tokens and cross-node freshness: a token from a write makes later reads see it,
//! and with Redis one node learns of another's writes at once.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::{Backend, REDIS_URL, Server, ServerOptions, for_each_backend, tk};

for_each_backend!(
    token_sees_the_write,
    higher_consistency_sees_the_write,
    token_of_another_store_is_rejected,
    concurrent_writes,
);

async fn token_sees_the_write(backend: Backend) {
    let s = Server::start(backend).await;
    let (store, _) = s.sample_store().await;
    for i in 0..15 {
        let user = format!("user:u{i}");
        // Cache the old answer first.
        assert!(!s.check(&store, &user, "viewer", "document:1").await);
        let token = s
            .write_ok(&store, &[tk(&user, "editor", "document:1")])
            .await;
        let q =
            json!({ "tuple_key": tk(&user, "viewer", "document:1"), "consistency_token": token });
        assert!(
            s.check_with(&store, q).await,
            "round {i}: a check with the write's token missed the write"
        );
        let r = s.post(&format!("/stores/{store}/list-objects"), &json!({ "type": "document", "relation": "viewer", "user": user, "consistency_token": token })).await.ok();
        assert_eq!(r["objects"], json!(["document:1"]), "round {i}");
        let r = s.post(&format!("/stores/{store}/read"), &json!({ "tuple_key": { "object": "document:1", "user": user }, "consistency_token": token })).await.ok();
        assert_eq!(
            r["tuples"].as_array().map(Vec::len),
            Some(1),
            "round {i}: {r}"
        );
        // And a delete, the other way round.
        let del = s
            .write(&store, &[], &[tk(&user, "editor", "document:1")])
            .await;
        del.ok();
        let q = json!({ "tuple_key": tk(&user, "viewer", "document:1"), "consistency_token": del.token() });
        assert!(
            !s.check_with(&store, q).await,
            "round {i}: a check with the delete's token missed the delete"
        );
    }
    // A response's token is accepted back, and is at least as new as the write.
    let token = s
        .write_ok(&store, &[tk("user:z", "owner", "document:2")])
        .await;
    let r = s.check_req(&store, &json!({ "tuple_key": tk("user:z", "viewer", "document:2"), "consistency_token": token })).await;
    let echoed = r.token();
    assert!(s.check_with(&store, json!({ "tuple_key": tk("user:z", "viewer", "document:2"), "consistency_token": echoed })).await);
}

async fn higher_consistency_sees_the_write(backend: Backend) {
    let s = Server::start(backend).await;
    let (store, _) = s.sample_store().await;
    for i in 0..10 {
        let user = format!("user:h{i}");
        assert!(!s.check(&store, &user, "viewer", "document:1").await);
        s.write_ok(&store, &[tk(&user, "owner", "document:1")])
            .await;
        let q = json!({ "tuple_key": tk(&user, "viewer", "document:1"), "consistency": "HIGHER_CONSISTENCY" });
        assert!(s.check_with(&store, q).await, "round {i}");
        // The same node's MINIMIZE_LATENCY read sees its own write too.
        assert!(
            s.check(&store, &user, "viewer", "document:1").await,
            "round {i}"
        );
    }
}

async fn token_of_another_store_is_rejected(backend: Backend) {
    let s = Server::start(backend).await;
    let (a, _) = s.sample_store().await;
    let (b, _) = s.sample_store().await;
    let token_a = s.write_ok(&a, &[tk("user:x", "owner", "document:1")]).await;
    let token_b = s.write_ok(&b, &[tk("user:x", "owner", "document:1")]).await;
    assert_ne!(token_a, token_b);
    let r = s.check_req(&b, &json!({ "tuple_key": tk("user:x", "viewer", "document:1"), "consistency_token": token_a })).await;
    r.assert_error(400, None);
    let r = s
        .post(
            &format!("/stores/{b}/read"),
            &json!({ "consistency_token": token_a }),
        )
        .await;
    r.assert_error(400, None);
    assert!(s.check_with(&b, json!({ "tuple_key": tk("user:x", "viewer", "document:1"), "consistency_token": token_b })).await);
}

/// Two nodes on one PostgreSQL database; with `redis`, sharing a fresh key prefix.
pub(crate) async fn two_nodes(redis: bool) -> (Server, Server) {
    let mut opts = ServerOptions::new(Backend::Postgres);
    if redis {
        opts.redis = Some((
            REDIS_URL.to_string(),
            format!("gh_test_{}", ulid::Ulid::new().to_string().to_lowercase()),
        ));
    }
    // Nodes of one deployment share the master key that seals the signing keys.
    opts.env.push((
        "GATEHOUSE_MASTER_KEY".into(),
        crate::oidc::TEST_MASTER_KEY.into(),
    ));
    let a = Server::start_with(opts.clone()).await;
    opts.database = a.database.clone();
    let b = Server::start_with(opts).await;
    (a, b)
}

/// Polls `node` until `user viewer object` is `want`; returns how long it took.
async fn time_until(
    node: &Server,
    store: &str,
    user: &str,
    object: &str,
    want: bool,
    limit: Duration,
) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if node.check(store, user, "viewer", object).await == want {
            return Some(start.elapsed());
        }
        if start.elapsed() > limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_nodes_with_redis_see_each_others_writes() {
    let (a, b) = two_nodes(true).await;
    let store = a.create_store("two-nodes").await;
    a.write_model(&store, &crate::harness::sample_model()).await;
    // B knows the store and its model.
    assert!(!b.check(&store, "user:nobody", "viewer", "document:0").await);

    let rounds = 10;
    let mut fast = 0;
    let mut times = Vec::new();
    for i in 0..rounds {
        let user = format!("user:r{i}");
        let object = format!("document:{i}");
        // B answers, and caches, the old state right before the write.
        assert!(!b.check(&store, &user, "viewer", &object).await);
        let token = a.write_ok(&store, &[tk(&user, "owner", &object)]).await;
        let took = time_until(&b, &store, &user, &object, true, Duration::from_secs(2)).await;
        let took = took
            .unwrap_or_else(|| panic!("round {i}: node B still denies 2 s after node A's write"));
        times.push(took);
        if took <= Duration::from_millis(200) {
            fast += 1;
        }
        // With A's token, B is right at once.
        let q = json!({ "tuple_key": tk(&user, "viewer", &object), "consistency_token": token });
        assert!(
            b.check_with(&store, q).await,
            "round {i}: node B ignored node A's token"
        );
    }
    println!("node B saw node A's writes after {times:?}");
    assert!(
        fast * 10 >= rounds * 7,
        "node B should learn of node A's writes through Redis within 200 ms most of the time; took {times:?}"
    );

    // Deletes travel the same way, B to A.
    assert!(a.check(&store, "user:r0", "viewer", "document:0").await);
    let r = b
        .write(&store, &[], &[tk("user:r0", "owner", "document:0")])
        .await;
    r.ok();
    let took = time_until(
        &a,
        &store,
        "user:r0",
        "document:0",
        false,
        Duration::from_secs(2),
    )
    .await;
    assert!(
        took.is_some(),
        "node A still allows 2 s after node B's delete"
    );

    // A model written through A is used by B.
    let mut narrower = crate::harness::sample_model();
    narrower["type_definitions"][3]["relations"]["viewer"] = json!({ "this": {} });
    a.write_model(&store, &narrower).await;
    let took = time_until(
        &b,
        &store,
        "user:r1",
        "document:1",
        false,
        Duration::from_secs(3),
    )
    .await;
    assert!(
        took.is_some(),
        "node B still uses the old model 3 s after node A wrote a new one"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_nodes_without_redis_converge_within_the_staleness_bound() {
    let (a, b) = two_nodes(false).await;
    let store = a.create_store("two-nodes").await;
    a.write_model(&store, &crate::harness::sample_model()).await;
    assert!(!b.check(&store, "user:nobody", "viewer", "document:0").await);
    for i in 0..3 {
        let user = format!("user:s{i}");
        let object = format!("document:{i}");
        assert!(!b.check(&store, &user, "viewer", &object).await);
        let token = a.write_ok(&store, &[tk(&user, "owner", &object)]).await;
        // The bound is 500 ms; allow for a slow machine.
        let took = time_until(
            &b,
            &store,
            &user,
            &object,
            true,
            Duration::from_millis(1500),
        )
        .await;
        println!("round {i}: node B saw node A's write after {took:?}");
        assert!(
            took.is_some(),
            "round {i}: node B still denies 1.5 s after node A's write"
        );
        let q = json!({ "tuple_key": tk(&user, "viewer", &object), "consistency_token": token });
        assert!(b.check_with(&store, q).await);
        let q = json!({ "tuple_key": tk(&user, "viewer", &object), "consistency": "HIGHER_CONSISTENCY" });
        assert!(b.check_with(&store, q).await);
    }
}

/// Writes racing on one store each get their own revision, and a tuple raced by many writers
/// is written exactly once; nobody gets a 5xx.
async fn concurrent_writes(backend: Backend) {
    let s = Server::start(backend).await;
    let (store, _) = s.sample_store().await;
    let n = 20;
    let writes = (0..n).map(|i| {
        let s = &s;
        let store = &store;
        async move {
            s.write(
                store,
                &[tk(&format!("user:c{i}"), "viewer", "document:1")],
                &[],
            )
            .await
        }
    });
    let answers = futures::future::join_all(writes).await;
    let mut tokens = std::collections::BTreeSet::new();
    for (i, r) in answers.iter().enumerate() {
        assert_eq!(
            r.status, 200,
            "concurrent write {i}: {} {}",
            r.status, r.text
        );
        tokens.insert(r.token());
    }
    assert_eq!(tokens.len(), n, "concurrent writes shared a revision");
    assert_eq!(s.read_all(&store, None).await.len(), n);
    let v = s
        .get(&format!("/stores/{store}/changes?page_size=100"))
        .await
        .ok();
    assert_eq!(v["changes"].as_array().map(Vec::len), Some(n), "{v}");

    // The same new tuple from ten writers at once: one wins, the others are told it exists.
    let same = (0..10).map(|_| {
        let s = &s;
        let store = &store;
        async move {
            s.write(store, &[tk("user:race", "viewer", "document:1")], &[])
                .await
        }
    });
    let answers = futures::future::join_all(same).await;
    let won = answers.iter().filter(|r| r.status == 200).count();
    let statuses: Vec<u16> = answers.iter().map(|r| r.status).collect();
    assert_eq!(won, 1, "exactly one racing writer should win: {statuses:?}");
    for r in answers.iter().filter(|r| r.status != 200) {
        r.assert_error(400, Some("write_failed_due_to_invalid_input"));
    }
    // Racing deletes of one tuple: one wins.
    let dels = (0..10).map(|_| {
        let s = &s;
        let store = &store;
        async move {
            s.write(store, &[], &[tk("user:race", "viewer", "document:1")])
                .await
        }
    });
    let answers = futures::future::join_all(dels).await;
    let statuses: Vec<u16> = answers.iter().map(|r| r.status).collect();
    assert_eq!(
        answers.iter().filter(|r| r.status == 200).count(),
        1,
        "exactly one racing delete should win: {statuses:?}"
    );
    for r in answers.iter().filter(|r| r.status != 200) {
        r.assert_error(400, Some("write_failed_due_to_invalid_input"));
    }
    assert_eq!(s.read_all(&store, None).await.len(), n);

    // Stores created at once all exist.
    let creates = (0..10).map(|i| {
        let s = &s;
        async move {
            s.post("/stores", &json!({ "name": format!("race-{i}") }))
                .await
        }
    });
    for r in futures::future::join_all(creates).await {
        assert_eq!(r.status, 201, "{}", r.text);
    }
    let v = s.get("/stores?page_size=100").await.ok();
    assert_eq!(v["stores"].as_array().map(Vec::len), Some(11), "{v}");
}

/// `HIGHER_CONSISTENCY` on one node sees a model written, or a store deleted, through another
/// node at once, with or without Redis.
async fn higher_consistency_across_nodes(redis: bool) {
    let (a, b) = two_nodes(redis).await;
    let store = a.create_store("two-nodes").await;
    a.write_model(&store, &crate::harness::sample_model()).await;
    a.write_ok(&store, &[tk("user:anne", "owner", "document:1")])
        .await;
    // Let node B hear of that write (through Redis, when there is Redis) before it reads, so
    // that what B reads next is all it knows.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let strong = |user: &str, relation: &str, object: &str| json!({ "tuple_key": tk(user, relation, object), "consistency": "HIGHER_CONSISTENCY" });
    assert!(
        b.check_with(&store, strong("user:anne", "viewer", "document:1"))
            .await
    );
    let mut narrower = crate::harness::sample_model();
    narrower["type_definitions"][3]["relations"]["viewer"] = json!({ "this": {} });
    a.write_model(&store, &narrower).await;
    assert!(
        !b.check_with(&store, strong("user:anne", "viewer", "document:1"))
            .await,
        "a HIGHER_CONSISTENCY check on node B used the model node A had just replaced"
    );
    assert_eq!(a.delete(&format!("/stores/{store}")).await.status, 204);
    let r = b
        .check_req(&store, &strong("user:anne", "owner", "document:1"))
        .await;
    assert_eq!(
        r.status, 404,
        "a HIGHER_CONSISTENCY check on node B answered for a store node A had just deleted: {}",
        r.text
    );
    let r = b
        .write(&store, &[tk("user:bob", "owner", "document:1")], &[])
        .await;
    assert_eq!(
        r.status, 404,
        "node B wrote to a store node A had just deleted: {}",
        r.text
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn higher_consistency_across_nodes_with_redis() {
    higher_consistency_across_nodes(true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn higher_consistency_across_nodes_without_redis() {
    higher_consistency_across_nodes(false).await;
}
