#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use std::time::Duration;

use super::*;
use crate::model::parse_dsl;
use crate::store::memory::MemoryStore;
use crate::store::{StoreInfo, WriteOptions};
use crate::tuple::RelationshipCondition;

struct Fixture {
    ds: MemoryStore,
    store: String,
    model: CompiledModel,
}

async fn fixture(dsl: &str, tuples: &[(&str, &str, &str)]) -> (Fixture, Revision) {
    let mut m = parse_dsl(dsl).unwrap();
    m.id = ulid::Ulid::new().to_string();
    let ds = MemoryStore::new();
    let now = chrono::Utc::now();
    let store = ulid::Ulid::new().to_string();
    ds.create_store(&StoreInfo {
        id: store.clone(),
        name: "t".into(),
        created_at: now,
        updated_at: now,
    })
    .await
    .unwrap();
    let model = CompiledModel::new(m).unwrap();
    let keys: Vec<TupleKey> = tuples
        .iter()
        .map(|(u, r, o)| TupleKey::new(*u, *r, *o))
        .collect();
    for k in &keys {
        model.validate_tuple(k).unwrap();
    }
    let rev = if keys.is_empty() {
        0
    } else {
        ds.write_tuples(&store, &[], &keys, WriteOptions::default())
            .await
            .unwrap()
    };
    (Fixture { ds, store, model }, rev)
}

impl Fixture {
    fn q(&self, rev: Revision) -> Query<'_> {
        Query::new(&self.store, &self.model, &self.ds, rev, &[], None)
    }
}

const GROUPS: &str = "model
  schema 1.1
type user
type group
  relations
    define member: [user, group#member]
type doc
  relations
    define owner: [user]
    define editor: [user, group#member] or owner
    define viewer: [user, user:*, group#member] or editor
    define blocked: [user]
    define can_view: viewer but not blocked
    define approved: [user]
    define can_approve: editor and approved
";

#[tokio::test]
async fn userset_cycles_terminate_with_the_right_answer() {
    let (f, rev) = fixture(
        GROUPS,
        &[
            ("group:b#member", "member", "group:a"),
            ("group:a#member", "member", "group:b"),
        ],
    )
    .await;
    assert!(
        !check(&f.q(rev), "group:a", "member", "user:x")
            .await
            .unwrap()
    );
    let rev2 =
        f.ds.write_tuples(
            &f.store,
            &[],
            &[TupleKey::new("user:x", "member", "group:b")],
            WriteOptions::default(),
        )
        .await
        .unwrap();
    assert!(
        check(&f.q(rev2), "group:a", "member", "user:x")
            .await
            .unwrap()
    );
    assert!(
        check(&f.q(rev2), "group:b", "member", "user:x")
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn depth_beyond_the_bound_is_an_error_not_a_no() {
    let mut tuples: Vec<(String, String, String)> = (0..30)
        .map(|i| {
            (
                format!("group:g{}#member", i + 1),
                "member".to_string(),
                format!("group:g{i}"),
            )
        })
        .collect();
    tuples.push(("user:deep".into(), "member".into(), "group:g30".into()));
    let refs: Vec<(&str, &str, &str)> = tuples
        .iter()
        .map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str()))
        .collect();
    let (f, rev) = fixture(GROUPS, &refs).await;
    let err = check(&f.q(rev), "group:g0", "member", "user:deep")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::DepthExceeded(25)), "{err}");
    // Within the bound the same chain resolves.
    assert!(
        check(&f.q(rev), "group:g10", "member", "user:deep")
            .await
            .unwrap()
    );
    // A raised bound resolves the whole chain.
    assert!(
        check(
            &f.q(rev).with_max_depth(40),
            "group:g0",
            "member",
            "user:deep"
        )
        .await
        .unwrap()
    );
}

#[tokio::test]
async fn exclusion_intersection_and_wildcards() {
    let (f, rev) = fixture(
        GROUPS,
        &[
            ("user:*", "viewer", "doc:public"),
            ("user:bob", "blocked", "doc:public"),
            ("user:anne", "owner", "doc:1"),
            ("user:anne", "approved", "doc:1"),
            ("user:carl", "editor", "doc:1"),
        ],
    )
    .await;
    let q = f.q(rev);
    assert!(
        check(&q, "doc:public", "can_view", "user:anyone")
            .await
            .unwrap()
    );
    assert!(
        !check(&q, "doc:public", "can_view", "user:bob")
            .await
            .unwrap()
    );
    assert!(
        check(&q, "doc:1", "can_approve", "user:anne")
            .await
            .unwrap()
    );
    assert!(
        !check(&q, "doc:1", "can_approve", "user:carl")
            .await
            .unwrap()
    );
    let objs = list_objects(&q, "doc", "can_view", "user:bob")
        .await
        .unwrap();
    assert!(objs.is_empty(), "{objs:?}");
    let objs = list_objects(&q, "doc", "can_view", "user:anne")
        .await
        .unwrap();
    assert_eq!(objs, vec!["doc:1", "doc:public"]);
    let objs = list_objects(&q, "doc", "can_approve", "user:carl")
        .await
        .unwrap();
    assert!(objs.is_empty());
    let users = list_users(
        &q,
        "doc:public",
        "can_view",
        &[ListUsersFilter {
            type_name: "user".into(),
            relation: None,
        }],
    )
    .await
    .unwrap();
    assert_eq!(users, vec![UserResult("user:*".into())]);
}

#[tokio::test]
async fn snapshots_and_the_cache_never_mix_revisions() {
    let (f, rev1) = fixture(GROUPS, &[("user:anne", "viewer", "doc:1")]).await;
    let cache = CheckCache::new(1000, Duration::from_secs(60));
    assert!(
        check(
            &f.q(rev1).with_cache(Some(&cache)),
            "doc:1",
            "viewer",
            "user:anne"
        )
        .await
        .unwrap()
    );
    assert!(!cache.is_empty());
    let rev2 =
        f.ds.write_tuples(
            &f.store,
            &[TupleKey::new("user:anne", "viewer", "doc:1")],
            &[],
            WriteOptions::default(),
        )
        .await
        .unwrap();
    assert!(rev2 > rev1);
    assert!(
        !check(
            &f.q(rev2).with_cache(Some(&cache)),
            "doc:1",
            "viewer",
            "user:anne"
        )
        .await
        .unwrap()
    );
    // The old snapshot still answers as it did.
    assert!(
        check(&f.q(rev1), "doc:1", "viewer", "user:anne")
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn contextual_tuples_apply_to_one_query_only() {
    let (f, rev) = fixture(GROUPS, &[]).await;
    let ctx = vec![
        TupleKey::new("user:zoe", "member", "group:eng"),
        TupleKey::new("group:eng#member", "viewer", "doc:9"),
    ];
    let q = Query::new(&f.store, &f.model, &f.ds, rev, &ctx, None);
    assert!(check(&q, "doc:9", "viewer", "user:zoe").await.unwrap());
    assert_eq!(
        list_objects(&q, "doc", "viewer", "user:zoe").await.unwrap(),
        vec!["doc:9"]
    );
    assert!(
        !check(&f.q(rev), "doc:9", "viewer", "user:zoe")
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn conditions_need_their_parameters() {
    let dsl = "model
  schema 1.1
type user
type doc
  relations
    define viewer: [user with before]
condition before(now: timestamp, until: timestamp) {
  now < until
}
";
    let (f, _) = fixture(dsl, &[]).await;
    let mut ctx = serde_json::Map::new();
    ctx.insert("until".into(), serde_json::json!("2030-01-01T00:00:00Z"));
    let mut t = TupleKey::new("user:anne", "viewer", "doc:1");
    t.condition = Some(RelationshipCondition {
        name: "before".into(),
        context: Some(ContextMap(ctx)),
    });
    f.model.validate_tuple(&t).unwrap();
    let rev =
        f.ds.write_tuples(&f.store, &[], &[t], WriteOptions::default())
            .await
            .unwrap();
    let err = check(&f.q(rev), "doc:1", "viewer", "user:anne")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Condition { .. }), "{err}");
    for (now, want) in [
        ("2029-01-01T00:00:00Z", true),
        ("2031-01-01T00:00:00Z", false),
    ] {
        let mut m = serde_json::Map::new();
        m.insert("now".into(), serde_json::json!(now));
        let c = ContextMap(m);
        let q = Query::new(&f.store, &f.model, &f.ds, rev, &[], Some(&c));
        assert_eq!(
            check(&q, "doc:1", "viewer", "user:anne").await.unwrap(),
            want,
            "now = {now}"
        );
        let objs = list_objects(&q, "doc", "viewer", "user:anne")
            .await
            .unwrap();
        assert_eq!(objs.len(), usize::from(want));
    }
    // A tuple without the required condition is rejected at write time.
    assert!(
        f.model
            .validate_tuple(&TupleKey::new("user:bob", "viewer", "doc:1"))
            .is_err()
    );
}

#[tokio::test]
async fn invalid_requests_are_errors() {
    let (f, rev) = fixture(GROUPS, &[]).await;
    let q = f.q(rev);
    assert!(matches!(
        check(&q, "nope:1", "viewer", "user:a").await,
        Err(Error::TypeNotFound(_))
    ));
    assert!(matches!(
        check(&q, "doc:1", "nope", "user:a").await,
        Err(Error::RelationNotFound { .. })
    ));
    assert!(matches!(
        check(&q, "doc:1", "viewer", "anne").await,
        Err(Error::Validation(_))
    ));
    assert!(matches!(
        check(&q, "doc", "viewer", "user:a").await,
        Err(Error::Validation(_))
    ));
    assert!(
        f.model
            .validate_tuple(&TupleKey::new("group:x", "viewer", "doc:1"))
            .is_err()
    );
    assert!(
        f.model
            .validate_tuple(&TupleKey::new("user:*", "owner", "doc:1"))
            .is_err()
    );
    assert!(
        f.model
            .validate_tuple(&TupleKey::new("group:x#member", "viewer", "doc:*"))
            .is_err()
    );
}

#[tokio::test]
async fn list_objects_is_complete_for_ten_thousand_objects() {
    let (f, _) = fixture(GROUPS, &[("user:u", "member", "group:big")]).await;
    let mut rev = 0;
    let all: Vec<TupleKey> = (0..10_000)
        .map(|i| TupleKey::new("group:big#member", "viewer", format!("doc:{i:05}")))
        .collect();
    for chunk in all.chunks(1000) {
        rev =
            f.ds.write_tuples(&f.store, &[], chunk, WriteOptions::default())
                .await
                .unwrap();
    }
    let objs = list_objects(&f.q(rev), "doc", "viewer", "user:u")
        .await
        .unwrap();
    assert_eq!(objs.len(), 10_000);
    let users = list_users(
        &f.q(rev),
        "doc:00042",
        "viewer",
        &[ListUsersFilter {
            type_name: "user".into(),
            relation: None,
        }],
    )
    .await
    .unwrap();
    assert_eq!(users, vec![UserResult("user:u".into())]);
}

#[tokio::test]
async fn expand_shows_one_level() {
    let (f, rev) = fixture(
        GROUPS,
        &[
            ("user:anne", "viewer", "doc:1"),
            ("group:eng#member", "viewer", "doc:1"),
        ],
    )
    .await;
    let tree = expand(&f.q(rev), "doc:1", "viewer").await.unwrap();
    let nodes = &tree["root"]["union"]["nodes"];
    assert_eq!(
        nodes[0]["leaf"]["users"]["users"],
        serde_json::json!(["user:anne", "group:eng#member"])
    );
    assert_eq!(nodes[1]["leaf"]["computed"]["userset"], "doc:1#editor");
}

#[tokio::test]
async fn list_queries_share_the_depth_bound() {
    let mut tuples: Vec<(String, String, String)> = (0..30)
        .map(|i| {
            (
                format!("group:g{}#member", i + 1),
                "member".to_string(),
                format!("group:g{i}"),
            )
        })
        .collect();
    tuples.push(("user:deep".into(), "member".into(), "group:g30".into()));
    let refs: Vec<(&str, &str, &str)> = tuples
        .iter()
        .map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str()))
        .collect();
    let (f, rev) = fixture(GROUPS, &refs).await;
    let users = [ListUsersFilter {
        type_name: "user".into(),
        relation: None,
    }];
    assert!(matches!(
        list_users(&f.q(rev), "group:g0", "member", &users).await,
        Err(Error::DepthExceeded(25))
    ));
    assert!(matches!(
        list_objects(&f.q(rev), "group", "member", "user:deep").await,
        Err(Error::DepthExceeded(25))
    ));
    let deep = f.q(rev).with_max_depth(40);
    assert_eq!(
        list_objects(&deep, "group", "member", "user:deep")
            .await
            .unwrap()
            .len(),
        31
    );
    assert_eq!(
        list_users(&deep, "group:g0", "member", &users)
            .await
            .unwrap(),
        vec![UserResult("user:deep".into())]
    );
}

/// `viewer` excludes `blocked`, which includes `viewer`: the cycle cut inside the subtracted
/// part must not make `viewer` true (OpenFGA answers false), in any query, cached or not.
#[tokio::test]
async fn a_cycle_cut_inside_an_exclusion_never_allows() {
    let dsl = "model
  schema 1.1
type user
type document
  relations
    define blocked: [user] or viewer
    define viewer: [user] but not blocked
";
    let (f, rev) = fixture(dsl, &[("user:jon", "viewer", "document:1")]).await;
    let cache = CheckCache::new(1000, Duration::from_secs(60));
    for round in 0..2 {
        let q = f.q(rev).with_cache(Some(&cache));
        for rel in ["viewer", "blocked"] {
            assert!(
                !check(&q, "document:1", rel, "user:jon").await.unwrap(),
                "{rel}, round {round}"
            );
            assert!(
                list_objects(&q, "document", rel, "user:jon")
                    .await
                    .unwrap()
                    .is_empty(),
                "{rel}"
            );
            let users = list_users(
                &q,
                "document:1",
                rel,
                &[ListUsersFilter {
                    type_name: "user".into(),
                    relation: None,
                }],
            )
            .await
            .unwrap();
            assert!(users.is_empty(), "{rel}: {users:?}");
        }
    }
}

/// A tuple carrying the `before` condition with only `until` in its context.
fn before_tuple(user: &str, relation: &str, object: &str) -> TupleKey {
    let mut ctx = serde_json::Map::new();
    ctx.insert("until".into(), serde_json::json!("2030-01-01T00:00:00Z"));
    let mut t = TupleKey::new(user, relation, object);
    t.condition = Some(RelationshipCondition {
        name: "before".into(),
        context: Some(ContextMap(ctx)),
    });
    t
}

const BEFORE: &str = "model
  schema 1.1
type user
type group
  relations
    define member: [user with before]
type folder
  relations
    define viewer: [user with before]
type doc
  relations
    define parent: [folder]
    define allowed: [user]
    define direct: [user with before]
    define via_group: [group#member]
    define via_parent: viewer from parent
    define computed: direct
    define both: direct and allowed
    define except: allowed but not direct
    define nested: computed or via_parent
condition before(now: timestamp, until: timestamp) {
  now < until
}
";

/// Check, list-objects and list-users fail the same way, naming the condition and the
/// parameter, when a condition they need lacks a parameter: direct, userset,
/// tuple-to-userset, computed, intersection, exclusion and nested.
#[tokio::test]
async fn every_query_fails_alike_on_missing_condition_parameters() {
    let (f, _) = fixture(BEFORE, &[]).await;
    let tuples = vec![
        before_tuple("user:anne", "direct", "doc:1"),
        before_tuple("user:anne", "member", "group:g"),
        TupleKey::new("group:g#member", "via_group", "doc:1"),
        before_tuple("user:anne", "viewer", "folder:f"),
        TupleKey::new("folder:f", "parent", "doc:1"),
        TupleKey::new("user:anne", "allowed", "doc:1"),
    ];
    for t in &tuples {
        f.model.validate_tuple(t).unwrap();
    }
    let rev =
        f.ds.write_tuples(&f.store, &[], &tuples, WriteOptions::default())
            .await
            .unwrap();
    let q = f.q(rev);
    let named = |e: Error| match e {
        Error::Condition { name, reason } => {
            assert_eq!(name, "before");
            assert!(reason.contains("`now`"), "{reason}");
        }
        other => panic!("not a condition error: {other}"),
    };
    let users = [ListUsersFilter {
        type_name: "user".into(),
        relation: None,
    }];
    for rel in [
        "direct",
        "via_group",
        "via_parent",
        "computed",
        "both",
        "except",
        "nested",
    ] {
        named(check(&q, "doc:1", rel, "user:anne").await.unwrap_err());
        named(list_objects(&q, "doc", rel, "user:anne").await.unwrap_err());
        named(list_users(&q, "doc:1", rel, &users).await.unwrap_err());
    }
    // With the parameter, all three agree.
    let mut m = serde_json::Map::new();
    m.insert("now".into(), serde_json::json!("2029-06-01T00:00:00Z"));
    let c = ContextMap(m);
    let q = Query::new(&f.store, &f.model, &f.ds, rev, &[], Some(&c));
    for (rel, want) in [
        ("direct", true),
        ("via_group", true),
        ("via_parent", true),
        ("computed", true),
        ("both", true),
        ("except", false),
        ("nested", true),
    ] {
        assert_eq!(
            check(&q, "doc:1", rel, "user:anne").await.unwrap(),
            want,
            "{rel}"
        );
        let objs = list_objects(&q, "doc", rel, "user:anne").await.unwrap();
        assert_eq!(objs == ["doc:1"], want, "{rel}: {objs:?}");
        let us = list_users(&q, "doc:1", rel, &users).await.unwrap();
        assert_eq!(
            us == [UserResult("user:anne".into())],
            want,
            "{rel}: {us:?}"
        );
    }
}

/// Under a newer model that no longer has a tuple's condition, the tuple is ignored by every
/// query (as OpenFGA does), not an error.
#[tokio::test]
async fn tuples_whose_condition_the_model_dropped_are_ignored() {
    let (f, _) = fixture(BEFORE, &[]).await;
    let tuples = vec![
        before_tuple("user:anne", "direct", "doc:1"),
        TupleKey::new("user:bob", "allowed", "doc:1"),
    ];
    let rev =
        f.ds.write_tuples(&f.store, &[], &tuples, WriteOptions::default())
            .await
            .unwrap();
    let mut m = parse_dsl(
        "model
  schema 1.1
type user
type doc
  relations
    define allowed: [user]
    define direct: [user, user:*]
    define either: direct or allowed
",
    )
    .unwrap();
    m.id = ulid::Ulid::new().to_string();
    let newer = CompiledModel::new(m).unwrap();
    let q = Query::new(&f.store, &newer, &f.ds, rev, &[], None);
    let users = [ListUsersFilter {
        type_name: "user".into(),
        relation: None,
    }];
    assert!(!check(&q, "doc:1", "direct", "user:anne").await.unwrap());
    assert!(!check(&q, "doc:1", "either", "user:anne").await.unwrap());
    assert!(check(&q, "doc:1", "either", "user:bob").await.unwrap());
    assert!(
        list_objects(&q, "doc", "either", "user:anne")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        list_users(&q, "doc:1", "either", &users).await.unwrap(),
        [UserResult("user:bob".into())]
    );
}

/// An expiring tuple counts until its expiry and not after, at the revision it was written at
/// too: a cached "allowed" does not outlive it, and a tuple in a subtracted branch that
/// expires turns a cached "denied" into "allowed". List queries agree.
#[tokio::test]
async fn expired_tuples_stop_counting_and_the_cache_follows() {
    let (f, _) = fixture(GROUPS, &[]).await;
    let at = chrono::Utc::now() + chrono::Duration::milliseconds(1200);
    let expiring = |u: &str, r: &str, o: &str| {
        let mut k = TupleKey::new(u, r, o);
        k.expires_at = Some(at);
        k
    };
    let rev =
        f.ds.write_tuples(
            &f.store,
            &[],
            &[
                expiring("user:anne", "editor", "doc:1"),
                TupleKey::new("user:bob", "viewer", "doc:1"),
                expiring("user:bob", "blocked", "doc:1"),
                expiring("group:eng#member", "viewer", "doc:2"),
                TupleKey::new("user:carl", "member", "group:eng"),
            ],
            WriteOptions::default(),
        )
        .await
        .unwrap();
    let cache = CheckCache::new(1000, Duration::from_secs(600));
    let ask = |object: &'static str, relation: &'static str, user: &'static str| {
        let q = f.q(rev).with_cache(Some(&cache));
        async move { check(&q, object, relation, user).await.unwrap() }
    };
    let q = f.q(rev).with_cache(Some(&cache));
    assert!(check(&q, "doc:1", "can_view", "user:anne").await.unwrap());
    assert!(
        q.valid_until().is_some(),
        "the answer rests on an expiring tuple"
    );
    assert!(!ask("doc:1", "can_view", "user:bob").await);
    assert!(ask("doc:2", "viewer", "user:carl").await);
    assert!(ask("doc:1", "viewer", "user:bob").await);
    // An answer that rests on no expiring tuple holds until the next write.
    let steady = f.q(rev).with_cache(Some(&cache));
    assert!(check(&steady, "doc:1", "viewer", "user:bob").await.unwrap());
    assert_eq!(steady.valid_until(), None);
    let listed = list_objects(&f.q(rev), "doc", "can_view", "user:anne")
        .await
        .unwrap();
    assert_eq!(listed, vec!["doc:1"]);

    tokio::time::sleep(Duration::from_millis(1400)).await;
    // Same revision, same cache: the expired tuples no longer count.
    assert!(
        !ask("doc:1", "can_view", "user:anne").await,
        "a cached allow outlived its tuple"
    );
    assert!(
        ask("doc:1", "can_view", "user:bob").await,
        "an expired block still denies"
    );
    assert!(!ask("doc:2", "viewer", "user:carl").await);
    assert!(ask("doc:1", "viewer", "user:bob").await);
    let q = f.q(rev);
    assert!(
        list_objects(&q, "doc", "can_view", "user:anne")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        list_objects(&q, "doc", "can_view", "user:bob")
            .await
            .unwrap(),
        vec!["doc:1"]
    );
    let users = list_users(
        &q,
        "doc:2",
        "viewer",
        &[ListUsersFilter {
            type_name: "user".into(),
            relation: None,
        }],
    )
    .await
    .unwrap();
    assert!(users.is_empty(), "{users:?}");
    let tree = expand(&q, "doc:2", "viewer").await.unwrap();
    assert!(!format!("{tree:?}").contains("group:eng"), "{tree:?}");
}

/// Wildcards under conditions, in direct, userset, tuple-to-userset and exclusion positions,
/// with OpenFGA's answers (its check matrix: a condition lacking its parameter is an error
/// unless another branch decides; `user:*` itself is checked like any user).
const WILD_COND: &str = "model
  schema 1.1
type user
type employee
type directs-user
  relations
    define direct: [user]
    define direct_wild_cond: [user:* with xcond]
    define direct_and_direct_wild_cond: [user, user:* with xcond]
    define direct_cond_and_direct_wild: [user with xcond, user:*]
    define direct_wildcard_and_direct_wildcard_cond: [user:*, user:* with xcond]
    define computed: direct
    define computed_computed: computed
    define computed_wild_cond: direct_wild_cond
    define butnot_computed: computed_wild_cond but not computed_computed
    define and_wild_cond: direct and direct_wild_cond
type directs-employee
  relations
    define direct_wild_cond: [employee:* with xcond]
type usersets-user
  relations
    define userset_to_computed_wild_cond: [directs-user#direct_wild_cond, directs-employee#direct_wild_cond]
    define userset_cond_to_computed_wild_cond: [directs-user#computed_wild_cond with xcond]
    define userset_to_butnot_computed: [directs-user#butnot_computed]
type ttus
  relations
    define userset_parent: [usersets-user]
    define userset_cond_parent: [usersets-user with xcond]
    define userset_pa_userset_comp_wild_cond_ch: userset_to_computed_wild_cond from userset_parent
    define userset_cond_userset_comp_wild_cond_ch: userset_to_computed_wild_cond from userset_cond_parent
condition xcond(x: string) {
  x == '1'
}
";

#[tokio::test]
async fn wildcards_with_conditions_answer_as_openfga() {
    let (f, _) = fixture(WILD_COND, &[]).await;
    let cond = |u: &str, r: &str, o: &str| {
        let mut k = TupleKey::new(u, r, o);
        k.condition = Some(RelationshipCondition {
            name: "xcond".into(),
            context: None,
        });
        k
    };
    let plain = |u: &str, r: &str, o: &str| TupleKey::new(u, r, o);
    let tuples = vec![
        cond("user:*", "direct_wild_cond", "directs-user:1"),
        plain(
            "user:valid",
            "direct_and_direct_wild_cond",
            "directs-user:1",
        ),
        cond("user:*", "direct_and_direct_wild_cond", "directs-user:2"),
        cond(
            "user:valid",
            "direct_cond_and_direct_wild",
            "directs-user:1",
        ),
        plain("user:*", "direct_cond_and_direct_wild", "directs-user:2"),
        cond(
            "user:*",
            "direct_wildcard_and_direct_wildcard_cond",
            "directs-user:1",
        ),
        plain(
            "user:*",
            "direct_wildcard_and_direct_wildcard_cond",
            "directs-user:2",
        ),
        cond("user:*", "direct_wild_cond", "directs-user:bn"),
        plain("user:diff", "direct", "directs-user:bn"),
        plain("user:both", "direct", "directs-user:1"),
        plain(
            "directs-user:bn#butnot_computed",
            "userset_to_butnot_computed",
            "usersets-user:u",
        ),
        plain("usersets-user:t9", "userset_parent", "ttus:9"),
        plain(
            "directs-user:1#direct_wild_cond",
            "userset_to_computed_wild_cond",
            "usersets-user:t9",
        ),
        plain(
            "directs-employee:e#direct_wild_cond",
            "userset_to_computed_wild_cond",
            "usersets-user:t9",
        ),
        cond("employee:*", "direct_wild_cond", "directs-employee:e"),
        cond("usersets-user:t9", "userset_cond_parent", "ttus:10"),
        cond(
            "directs-user:1#computed_wild_cond",
            "userset_cond_to_computed_wild_cond",
            "usersets-user:c",
        ),
    ];
    for t in &tuples {
        f.model
            .validate_tuple(t)
            .unwrap_or_else(|e| panic!("{t}: {e}"));
    }
    let rev =
        f.ds.write_tuples(&f.store, &[], &tuples, WriteOptions::default())
            .await
            .unwrap();
    let ctx = |x: &str| {
        let mut m = serde_json::Map::new();
        m.insert("x".into(), serde_json::json!(x));
        ContextMap(m)
    };
    let (one, two) = (ctx("1"), ctx("2"));
    // (object, relation, user, with no context, with x = "1", with x = "2"); None = an error.
    type Case<'a> = (
        &'a str,
        &'a str,
        &'a str,
        Option<bool>,
        Option<bool>,
        Option<bool>,
    );
    let cases: &[Case<'_>] = &[
        (
            "directs-user:1",
            "direct_wild_cond",
            "user:valid",
            None,
            Some(true),
            Some(false),
        ),
        (
            "directs-user:1",
            "direct_wild_cond",
            "user:*",
            None,
            Some(true),
            Some(false),
        ),
        (
            "directs-user:not-public",
            "direct_wild_cond",
            "user:valid",
            Some(false),
            Some(false),
            Some(false),
        ),
        (
            "directs-user:1",
            "direct_and_direct_wild_cond",
            "user:valid",
            Some(true),
            Some(true),
            Some(true),
        ),
        (
            "directs-user:2",
            "direct_and_direct_wild_cond",
            "user:valid",
            None,
            Some(true),
            Some(false),
        ),
        (
            "directs-user:1",
            "direct_cond_and_direct_wild",
            "user:valid",
            None,
            Some(true),
            Some(false),
        ),
        (
            "directs-user:2",
            "direct_cond_and_direct_wild",
            "user:valid",
            Some(true),
            Some(true),
            Some(true),
        ),
        (
            "directs-user:1",
            "direct_cond_and_direct_wild",
            "user:invalid",
            Some(false),
            Some(false),
            Some(false),
        ),
        (
            "directs-user:1",
            "direct_wildcard_and_direct_wildcard_cond",
            "user:valid",
            None,
            Some(true),
            Some(false),
        ),
        (
            "directs-user:2",
            "direct_wildcard_and_direct_wildcard_cond",
            "user:valid",
            Some(true),
            Some(true),
            Some(true),
        ),
        (
            "directs-user:1",
            "computed_wild_cond",
            "user:*",
            None,
            Some(true),
            Some(false),
        ),
        (
            "directs-user:bn",
            "butnot_computed",
            "user:diff",
            Some(false),
            Some(false),
            Some(false),
        ),
        (
            "directs-user:bn",
            "butnot_computed",
            "user:another",
            None,
            Some(true),
            Some(false),
        ),
        (
            "directs-user:1",
            "and_wild_cond",
            "user:both",
            None,
            Some(true),
            Some(false),
        ),
        (
            "directs-user:1",
            "and_wild_cond",
            "user:other",
            Some(false),
            Some(false),
            Some(false),
        ),
        (
            "usersets-user:u",
            "userset_to_butnot_computed",
            "user:another",
            None,
            Some(true),
            Some(false),
        ),
        (
            "usersets-user:u",
            "userset_to_butnot_computed",
            "user:diff",
            Some(false),
            Some(false),
            Some(false),
        ),
        (
            "ttus:9",
            "userset_pa_userset_comp_wild_cond_ch",
            "user:u1",
            None,
            Some(true),
            Some(false),
        ),
        (
            "ttus:9",
            "userset_pa_userset_comp_wild_cond_ch",
            "employee:e1",
            None,
            Some(true),
            Some(false),
        ),
        (
            "ttus:10",
            "userset_cond_userset_comp_wild_cond_ch",
            "user:u1",
            None,
            Some(true),
            Some(false),
        ),
        (
            "usersets-user:c",
            "userset_cond_to_computed_wild_cond",
            "user:u1",
            None,
            Some(true),
            Some(false),
        ),
    ];
    let mut wrong = Vec::new();
    for (object, relation, user, none, yes, no) in cases {
        for (context, want) in [(None, none), (Some(&one), yes), (Some(&two), no)] {
            let q = Query::new(&f.store, &f.model, &f.ds, rev, &[], context);
            let got = check(&q, object, relation, user).await.ok();
            if got != *want {
                wrong.push(format!(
                    "{object}#{relation}@{user} x={:?}: {got:?}, OpenFGA {want:?}",
                    context.map(|c| c.0["x"].clone())
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // List queries fail where the answer needs the missing parameter, and list what the
    // condition allows.
    let q = Query::new(&f.store, &f.model, &f.ds, rev, &[], None);
    assert!(
        list_objects(&q, "directs-user", "direct_wild_cond", "user:valid")
            .await
            .is_err()
    );
    let q = Query::new(&f.store, &f.model, &f.ds, rev, &[], Some(&one));
    assert_eq!(
        list_objects(&q, "directs-user", "direct_wild_cond", "user:valid")
            .await
            .unwrap(),
        vec!["directs-user:1", "directs-user:bn"]
    );
    let q = Query::new(&f.store, &f.model, &f.ds, rev, &[], Some(&two));
    assert!(
        list_objects(&q, "directs-user", "direct_wild_cond", "user:valid")
            .await
            .unwrap()
            .is_empty()
    );
    let filter = [ListUsersFilter {
        type_name: "user".into(),
        relation: None,
    }];
    let q = Query::new(&f.store, &f.model, &f.ds, rev, &[], None);
    assert!(
        list_users(&q, "directs-user:1", "direct_cond_and_direct_wild", &filter)
            .await
            .is_err()
    );
    let q = Query::new(&f.store, &f.model, &f.ds, rev, &[], Some(&one));
    assert_eq!(
        list_users(&q, "directs-user:1", "direct_wild_cond", &filter)
            .await
            .unwrap(),
        vec![UserResult("user:*".into())]
    );
    let q = Query::new(&f.store, &f.model, &f.ds, rev, &[], Some(&two));
    assert!(
        list_users(&q, "directs-user:1", "direct_wild_cond", &filter)
            .await
            .unwrap()
            .is_empty()
    );
}
