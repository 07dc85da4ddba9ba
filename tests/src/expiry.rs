//! Relationships that expire, through the real server: a tuple written with `expires_at`
//! counts until then and at no revision after, in checks, list queries, AuthZEN and Cedar
//! decisions, cached or not; reads and the changelog show the expiry; the sweeper removes
//! the rows; bad expiries change nothing.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{Backend, Server, ServerOptions, for_each_backend, keys, tk};

for_each_backend!(
    expired_relationships_stop_counting_everywhere,
    expiry_bad_input
);

const POLICIES: &str = r#"@id("baseline")
permit (principal, action, resource) when { context.rebac };

@id("no-secret")
forbid (principal, action, resource in folder::"secret");
"#;

fn expiring(user: &str, relation: &str, object: &str, at: &str) -> Value {
    let mut k = tk(user, relation, object);
    k["expires_at"] = json!(at);
    k
}

fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

async fn start(backend: Backend) -> Server {
    let mut opts = ServerOptions::new(backend);
    opts.env
        .push(("GATEHOUSE_EXPIRED_TUPLE_SWEEP_SECS".into(), "1".into()));
    Server::start_with(opts).await
}

async fn decide(s: &Server, store: &str, subject: &str, action: &str, resource: &str) -> bool {
    let d = s
        .post(
            &format!("/stores/{store}/decide"),
            &json!({ "subject": subject, "action": action, "resource": resource }),
        )
        .await
        .ok();
    d["allowed"].as_bool().unwrap_or_else(|| panic!("{d}"))
}

async fn authzen(s: &Server, store: &str, user: &str, action: &str, doc: &str) -> bool {
    let d = s
        .post(
            &format!("/stores/{store}/access/v1/evaluation"),
            &json!({
                "subject": { "type": "user", "id": user },
                "action": { "name": action },
                "resource": { "type": "document", "id": doc }
            }),
        )
        .await
        .ok();
    d["decision"].as_bool().unwrap_or_else(|| panic!("{d}"))
}

async fn list_objects(s: &Server, store: &str, relation: &str, user: &str) -> Vec<String> {
    let v = s
        .post(
            &format!("/stores/{store}/list-objects"),
            &json!({ "type": "document", "relation": relation, "user": user }),
        )
        .await
        .ok();
    let mut out: Vec<String> = v["objects"]
        .as_array()
        .unwrap_or_else(|| panic!("{v}"))
        .iter()
        .map(|o| o.as_str().unwrap().to_string())
        .collect();
    out.sort();
    out
}

/// Every answer, asked twice so that the second one may come from a cache.
async fn answers(s: &Server, store: &str) -> Vec<bool> {
    let mut out = Vec::new();
    for _ in 0..2 {
        out = vec![
            s.check(store, "user:bob", "viewer", "document:1").await,
            s.check(store, "user:carl", "can_view", "document:1").await,
            s.check(store, "user:dave", "viewer", "document:2").await,
            decide(s, store, "user:bob", "viewer", "document:1").await,
            decide(s, store, "user:anne", "viewer", "document:3").await,
            authzen(s, store, "bob", "viewer", "1").await,
        ];
    }
    out
}

async fn expired_relationships_stop_counting_everywhere(backend: Backend) {
    let s = start(backend).await;
    let (store, _) = s.sample_store().await;
    s.put(
        &format!("/stores/{store}/policies"),
        &json!({ "policies": POLICIES }),
    )
    .await
    .ok();
    let at = chrono::Utc::now() + chrono::Duration::seconds(4);
    let at_text = rfc3339(at);
    // Written with an offset: the same instant, read back in UTC.
    let offset_text = (at + chrono::Duration::days(1))
        .with_timezone(&chrono::FixedOffset::east_opt(2 * 3600).unwrap())
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, false);
    s.write_ok(
        &store,
        &[
            expiring("user:bob", "viewer", "document:1", &at_text),
            tk("user:carl", "viewer", "document:1"),
            expiring("user:carl", "blocked", "document:1", &at_text),
            expiring("group:eng#member", "viewer", "document:2", &at_text),
            tk("user:dave", "member", "group:eng"),
            tk("user:anne", "owner", "document:3"),
            expiring("folder:secret", "parent", "document:3", &at_text),
            expiring("user:erin", "viewer", "document:4", &offset_text),
        ],
    )
    .await;

    // Before the expiry.
    assert_eq!(
        answers(&s, &store).await,
        [true, false, true, true, false, true]
    );
    assert_eq!(
        list_objects(&s, &store, "viewer", "user:bob").await,
        ["document:1"]
    );
    assert!(
        list_objects(&s, &store, "can_view", "user:carl")
            .await
            .is_empty()
    );
    // Reads and the changelog show each expiry, in UTC.
    let read = s.read_all(&store, Some(tk("", "", "document:4"))).await;
    assert_eq!(read.len(), 1, "{read:?}");
    let erin = chrono::DateTime::parse_from_rfc3339(&offset_text).unwrap();
    let shown = read[0]["key"]["expires_at"].as_str().unwrap();
    assert!(shown.ends_with('Z'), "{shown}");
    assert_eq!(chrono::DateTime::parse_from_rfc3339(shown).unwrap(), erin);
    let read = s
        .read_all(&store, Some(tk("user:bob", "viewer", "document:1")))
        .await;
    assert_eq!(read[0]["key"]["expires_at"], at_text.as_str(), "{read:?}");
    let changes = s
        .get(&format!("/stores/{store}/changes?page_size=100"))
        .await
        .ok();
    let bob = changes["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["tuple_key"]["user"] == "user:bob")
        .unwrap_or_else(|| panic!("{changes}"));
    assert_eq!(bob["tuple_key"]["expires_at"], at_text.as_str(), "{bob}");
    // Still live: writing it again is a duplicate.
    s.write(&store, &[tk("user:bob", "viewer", "document:1")], &[])
        .await
        .assert_error(400, None);

    // After it: the same revision (no write since), the same caches, other answers.
    let wait = at - chrono::Utc::now() + chrono::Duration::milliseconds(300);
    tokio::time::sleep(wait.to_std().unwrap_or_default()).await;
    assert_eq!(
        answers(&s, &store).await,
        [false, true, false, false, true, false],
        "an expired tuple still counted"
    );
    assert!(
        list_objects(&s, &store, "viewer", "user:bob")
            .await
            .is_empty()
    );
    assert_eq!(
        list_objects(&s, &store, "can_view", "user:carl").await,
        ["document:1"]
    );
    let users = s
        .post(
            &format!("/stores/{store}/list-users"),
            &json!({
                "object": { "type": "document", "id": "2" },
                "relation": "viewer",
                "user_filters": [{ "type": "user" }]
            }),
        )
        .await
        .ok();
    assert_eq!(users["users"], json!([]), "{users}");
    let read = keys(&s.read_all(&store, None).await);
    assert!(!read.iter().any(|k| k.contains("user:bob")), "{read:?}");
    assert!(read.iter().any(|k| k.contains("user:erin")), "{read:?}");
    // Not there to delete; no duplicate of a new write, which counts.
    s.write(&store, &[], &[tk("user:bob", "viewer", "document:1")])
        .await
        .assert_error(400, None);
    // A dry run does not blame a candidate for what expiry changed: decisions whose own
    // policies now decide them differently are skipped, with the reason.
    let candidate =
        "@id(\"baseline\")\npermit (principal, action, resource) when { context.rebac };\n";
    let r = s
        .post(
            &format!("/stores/{store}/policies/dry-run"),
            &json!({ "policies": candidate, "limit": 100 }),
        )
        .await
        .ok();
    assert_eq!(r["flipped"], json!([]), "{r}");
    let skipped = r["skipped"].as_array().unwrap();
    assert!(
        skipped
            .iter()
            .any(|k| k["reason"].as_str().is_some_and(|m| m.contains("expired"))),
        "{r}"
    );
    s.write_ok(&store, &[tk("user:bob", "viewer", "document:1")])
        .await;
    assert!(s.check(&store, "user:bob", "viewer", "document:1").await);

    // The sweeper frees the expired rows, and only those.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !s.log().contains("removed tuples past their expiry") {
        assert!(
            Instant::now() < deadline,
            "the sweeper never ran:\n{}",
            s.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if let Some(db) = &s.database {
        let left =
            db.query("SELECT count(*) FROM tuples WHERE expires_at <= (now() AT TIME ZONE 'utc')");
        assert_eq!(left, "0", "expired rows are left");
        let kept = db.query("SELECT count(*) FROM tuples WHERE expires_at IS NOT NULL");
        assert_eq!(kept, "1", "erin's tuple, which has not expired, is kept");
    }
    assert!(s.check(&store, "user:erin", "viewer", "document:4").await);
    assert!(s.check(&store, "user:bob", "viewer", "document:1").await);
}

async fn expiry_bad_input(backend: Backend) {
    let s = start(backend).await;
    let (store, _) = s.sample_store().await;
    let token = s
        .write_ok(&store, &[tk("user:anne", "viewer", "document:1")])
        .await;
    let soon = rfc3339(chrono::Utc::now() + chrono::Duration::hours(1));
    let past = rfc3339(chrono::Utc::now() - chrono::Duration::seconds(1));
    for bad in [
        expiring("user:bob", "viewer", "document:1", &past),
        expiring("user:bob", "viewer", "document:1", "tomorrow"),
        expiring("user:bob", "viewer", "document:1", "2030-01-01"),
        expiring("user:bob", "viewer", "document:1", "10000-01-01T00:00:00Z"),
        json!({ "user": "user:bob", "relation": "viewer", "object": "document:1", "expires_at": 5 }),
    ] {
        // Alone and beside a good tuple: nothing is written either way.
        for writes in [
            vec![bad.clone()],
            vec![tk("user:carl", "viewer", "document:1"), bad.clone()],
        ] {
            let r = s.write(&store, &writes, &[]).await;
            let e = r.assert_error(400, None);
            assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{e}");
        }
    }
    // A delete names a tuple; it takes no expiry.
    s.write(
        &store,
        &[],
        &[expiring("user:anne", "viewer", "document:1", &soon)],
    )
    .await
    .assert_error(400, None);
    // Contextual tuples last for their request.
    s.check_req(
        &store,
        &json!({
            "tuple_key": tk("user:bob", "viewer", "document:1"),
            "contextual_tuples": { "tuple_keys": [expiring("user:bob", "viewer", "document:1", &soon)] }
        }),
    )
    .await
    .assert_error(400, None);
    // A read filter has no expiry to match.
    s.post(
        &format!("/stores/{store}/read"),
        &json!({ "tuple_key": expiring("user:anne", "viewer", "document:1", &soon) }),
    )
    .await
    .assert_error(400, None);
    // Nothing changed.
    assert_eq!(
        keys(&s.read_all(&store, None).await),
        ["document:1#viewer@user:anne"]
    );
    let changes = s
        .get(&format!("/stores/{store}/changes?page_size=100"))
        .await
        .ok();
    assert_eq!(changes["changes"].as_array().unwrap().len(), 1, "{changes}");
    assert!(!token.is_empty());
    // The far future is fine.
    s.write_ok(
        &store,
        &[expiring(
            "user:bob",
            "viewer",
            "document:1",
            "9999-12-31T23:59:59Z",
        )],
    )
    .await;
    assert!(s.check(&store, "user:bob", "viewer", "document:1").await);
}
