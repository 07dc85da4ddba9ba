//! The one storage conformance suite: every [`Datastore`] implementation must pass it.
//!
//! [`run_all`] creates its own stores (ULID ids, unique names), so several runs can share one
//! datastore. It panics with a message naming the failed check on the first failure.
//! Nothing here assumes the shape of continuation tokens, only that they are opaque strings.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;

use super::{
    ChangeFilter, Datastore, DecisionFilter, EntityAttributes, LoggedDecision, Operation, Page,
    Paged, PolicyVersion, Revision, StoreInfo, TemplateLink, TupleChange, TupleFilter,
    WriteOptions,
};
use crate::error::Error;
use crate::model::AuthorizationModel;
use crate::tuple::{ContextMap, RelationshipCondition, Tuple, TupleKey};

/// A token no backend can have issued.
const BAD_TOKEN: &str = "not a token!";

/// Runs every check of the suite against `ds`.
pub async fn run_all(ds: &dyn Datastore) {
    stores(ds).await;
    store_pagination(ds).await;
    models(ds).await;
    write_semantics(ds).await;
    all_or_nothing(ds).await;
    conditions(ds).await;
    snapshots(ds).await;
    filters(ds).await;
    tuple_pagination(ds).await;
    invalid_tokens(ds).await;
    changes(ds).await;
    changes_since(ds).await;
    assertions(ds).await;
    policy_versions(ds).await;
    settings_and_risk(ds).await;
    decision_log(ds).await;
    entity_attributes(ds).await;
    isolation(ds).await;
    expiry(ds).await;
    let agreed = super::differential::differential(ds, 120).await;
    assert!(agreed > 1000, "differential: only {agreed} checks compared");
}

/// The engine's answers over `ds` agree with each other (batch check, check, Cedar's
/// `context.relations`), on random models: run by each backend's conformance test.
pub async fn run_engine_differential(ds: std::sync::Arc<dyn Datastore>) {
    let agreed = super::differential::engine_differential(ds, 40).await;
    assert!(
        agreed > 500,
        "engine differential: only {agreed} answers compared"
    );
}

fn now() -> chrono::DateTime<chrono::Utc> {
    // Whole microseconds: the finest precision every SQL backend keeps.
    let t = chrono::Utc::now();
    chrono::DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

fn store_info(name: &str) -> StoreInfo {
    let t = now();
    StoreInfo {
        id: ulid::Ulid::new().to_string(),
        name: name.into(),
        created_at: t,
        updated_at: t,
    }
}

fn unique_name(what: &str) -> String {
    format!(
        "conformance-{what}-{}",
        ulid::Ulid::new().to_string().to_lowercase()
    )
}

pub(crate) async fn new_store_for(ds: &dyn Datastore, what: &str) -> String {
    new_store(ds, what).await
}

async fn new_store(ds: &dyn Datastore, what: &str) -> String {
    let info = store_info(&unique_name(what));
    ds.create_store(&info)
        .await
        .unwrap_or_else(|e| panic!("{what}: create_store failed: {e}"));
    info.id
}

fn tk(user: &str, relation: &str, object: &str) -> TupleKey {
    TupleKey::new(user, relation, object)
}

fn with_condition(mut key: TupleKey, name: &str, context: Option<serde_json::Value>) -> TupleKey {
    let context = context.map(|v| match v {
        serde_json::Value::Object(m) => ContextMap(m),
        other => panic!("test bug: condition context must be an object, got {other}"),
    });
    key.condition = Some(RelationshipCondition {
        name: name.into(),
        context,
    });
    key
}

fn filter(
    object_type: Option<&str>,
    object_id: Option<&str>,
    relation: Option<&str>,
    users: &[&str],
) -> TupleFilter {
    TupleFilter {
        object_type: object_type.map(Into::into),
        object_id: object_id.map(Into::into),
        relation: relation.map(Into::into),
        users: users.iter().map(|u| (*u).to_string()).collect(),
    }
}

fn all() -> Page {
    Page {
        size: 0,
        token: None,
    }
}

async fn write(
    ds: &dyn Datastore,
    store: &str,
    deletes: &[TupleKey],
    writes: &[TupleKey],
    what: &str,
) -> Revision {
    ds.write_tuples(store, deletes, writes, WriteOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{what}: write_tuples failed: {e}"))
}

async fn read_keys(
    ds: &dyn Datastore,
    store: &str,
    f: &TupleFilter,
    rev: Revision,
    what: &str,
) -> Vec<TupleKey> {
    let page = ds
        .read_tuples(store, f, rev, &all())
        .await
        .unwrap_or_else(|e| panic!("{what}: read_tuples failed: {e}"));
    assert!(
        page.next.is_none(),
        "{what}: a read with page size 0 must return everything and no token"
    );
    page.items.into_iter().map(|t| t.key).collect()
}

/// The identities of `keys`, sorted, to compare sets of tuples.
fn ids(keys: &[TupleKey]) -> Vec<(String, String, String)> {
    let mut v: Vec<_> = keys
        .iter()
        .map(|k| (k.object.clone(), k.relation.clone(), k.user.clone()))
        .collect();
    v.sort();
    v
}

fn assert_same_tuples(got: &[TupleKey], want: &[TupleKey], what: &str) {
    assert_eq!(ids(got), ids(want), "{what}: wrong tuples");
}

fn model(id: &str, marker: &str) -> AuthorizationModel {
    let json = serde_json::json!({
        "id": id,
        "schema_version": "1.1",
        "type_definitions": [
            {"type": "user"},
            {
                "type": marker,
                "relations": {
                    "viewer": {"this": {}},
                    "editor": {"this": {}},
                    "can_view": {"union": {"child": [
                        {"computedUserset": {"object": "", "relation": "viewer"}},
                        {"computedUserset": {"object": "", "relation": "editor"}}
                    ]}}
                },
                "metadata": {"relations": {
                    "viewer": {"directly_related_user_types": [
                        {"type": "user"}, {"type": "user", "wildcard": {}},
                        {"type": "user", "condition": "in_range"}
                    ]},
                    "editor": {"directly_related_user_types": [{"type": "user"}]}
                }}
            }
        ],
        "conditions": {
            "in_range": {
                "name": "in_range",
                "expression": "x < limit",
                "parameters": {
                    "x": {"type_name": "TYPE_NAME_INT"},
                    "limit": {"type_name": "TYPE_NAME_INT"}
                }
            }
        }
    });
    serde_json::from_value(json)
        .unwrap_or_else(|e| panic!("test bug: model does not deserialize: {e}"))
}

async fn stores(ds: &dyn Datastore) {
    let name = unique_name("stores");
    let a = store_info(&name);
    ds.create_store(&a).await.expect("stores: create_store");
    let got = ds.get_store(&a.id).await.expect("stores: get_store");
    assert_eq!(
        got.as_ref(),
        Some(&a),
        "stores: get_store must return the store as created"
    );
    assert!(
        ds.create_store(&a).await.is_err(),
        "stores: creating a store with an existing id must fail"
    );
    assert!(
        ds.get_store(&ulid::Ulid::new().to_string())
            .await
            .expect("stores: get_store unknown")
            .is_none(),
        "stores: an unknown store must not be found"
    );
    assert_eq!(
        ds.head_revision(&a.id)
            .await
            .expect("stores: head_revision"),
        0,
        "stores: a new store is at revision 0"
    );
    assert!(
        matches!(
            ds.head_revision(&ulid::Ulid::new().to_string()).await,
            Err(Error::StoreNotFound(_))
        ),
        "stores: head_revision of an unknown store must be StoreNotFound"
    );

    assert!(
        ds.delete_store(&a.id).await.expect("stores: delete_store"),
        "stores: deleting a live store returns true"
    );
    assert!(
        ds.get_store(&a.id)
            .await
            .expect("stores: get_store deleted")
            .is_none(),
        "stores: a deleted store is invisible"
    );
    let listed = ds
        .list_stores(Some(&name), &all())
        .await
        .expect("stores: list_stores after delete");
    assert!(
        listed.items.is_empty(),
        "stores: a deleted store must not be listed"
    );
    assert!(
        !ds.delete_store(&a.id)
            .await
            .expect("stores: delete_store twice"),
        "stores: deleting twice returns false"
    );
    assert!(
        !ds.delete_store(&ulid::Ulid::new().to_string())
            .await
            .expect("stores: delete unknown"),
        "stores: deleting an unknown store returns false"
    );
    assert!(
        matches!(
            ds.write_tuples(
                &a.id,
                &[],
                &[tk("user:anne", "viewer", "doc:1")],
                WriteOptions::default()
            )
            .await,
            Err(Error::StoreNotFound(_))
        ),
        "stores: writing tuples to a deleted store must be StoreNotFound"
    );
    assert!(
        matches!(
            ds.write_model(&a.id, &model(&ulid::Ulid::new().to_string(), "doc"))
                .await,
            Err(Error::StoreNotFound(_))
        ),
        "stores: writing a model to a deleted store must be StoreNotFound"
    );
    assert!(
        matches!(
            ds.write_tuples(
                &ulid::Ulid::new().to_string(),
                &[],
                &[tk("user:anne", "viewer", "doc:1")],
                WriteOptions::default()
            )
            .await,
            Err(Error::StoreNotFound(_))
        ),
        "stores: writing tuples to an unknown store must be StoreNotFound"
    );
}

async fn collect_stores(
    ds: &dyn Datastore,
    name: Option<&str>,
    size: usize,
    what: &str,
) -> Vec<StoreInfo> {
    let mut out = Vec::new();
    let mut token = None;
    for _ in 0..10_000 {
        let page = ds
            .list_stores(
                name,
                &Page {
                    size,
                    token: token.clone(),
                },
            )
            .await
            .unwrap_or_else(|e| panic!("{what}: list_stores failed: {e}"));
        assert!(
            page.items.len() <= size,
            "{what}: list_stores returned more than the page size"
        );
        out.extend(page.items);
        match page.next {
            Some(t) => token = Some(t),
            None => return out,
        }
    }
    panic!("{what}: list_stores never stopped returning tokens");
}

async fn store_pagination(ds: &dyn Datastore) {
    let name = unique_name("store-pages");
    let mut mine = Vec::new();
    for _ in 0..5 {
        let s = store_info(&name);
        ds.create_store(&s)
            .await
            .expect("store pagination: create_store");
        mine.push(s);
    }
    let other = store_info(&unique_name("store-pages-other"));
    ds.create_store(&other)
        .await
        .expect("store pagination: create_store other");
    mine.sort_by(|a, b| a.id.cmp(&b.id));

    let first = ds
        .list_stores(
            Some(&name),
            &Page {
                size: 2,
                token: None,
            },
        )
        .await
        .expect("store pagination: first page");
    assert_eq!(
        first.items.len(),
        2,
        "store pagination: the first page holds the page size"
    );
    assert!(
        first.next.is_some(),
        "store pagination: a full page with more behind it returns a token"
    );

    let paged = collect_stores(ds, Some(&name), 2, "store pagination (name filter)").await;
    assert_eq!(
        paged, mine,
        "store pagination: pages by name must hold exactly the named stores, ordered by id"
    );

    let whole = ds
        .list_stores(Some(&name), &all())
        .await
        .expect("store pagination: page size 0");
    assert_eq!(
        whole.items, mine,
        "store pagination: page size 0 returns every named store"
    );
    assert!(
        whole.next.is_none(),
        "store pagination: page size 0 returns no token"
    );

    let everything = collect_stores(ds, None, 3, "store pagination (no filter)").await;
    assert!(
        everything.windows(2).all(|w| w[0].id < w[1].id),
        "store pagination: stores are listed by id, each once"
    );
    for s in mine.iter().chain([&other]) {
        assert!(
            everything.iter().any(|e| e.id == s.id),
            "store pagination: store `{}` missing from the full listing",
            s.id
        );
    }

    ds.delete_store(&mine[2].id)
        .await
        .expect("store pagination: delete");
    let after = collect_stores(ds, Some(&name), 2, "store pagination (after delete)").await;
    let want: Vec<_> = mine
        .iter()
        .filter(|s| s.id != mine[2].id)
        .cloned()
        .collect();
    assert_eq!(
        after, want,
        "store pagination: a deleted store leaves the listing"
    );
}

async fn models(ds: &dyn Datastore) {
    let store = new_store(ds, "models").await;
    assert!(
        ds.latest_model(&store)
            .await
            .expect("models: latest_model empty")
            .is_none(),
        "models: no latest model before any write"
    );
    let listed = ds
        .list_models(&store, &all())
        .await
        .expect("models: list_models empty");
    assert!(
        listed.items.is_empty() && listed.next.is_none(),
        "models: an empty store lists no models"
    );

    let mut generator = ulid::Generator::new();
    let mut written = Vec::new();
    for i in 0..5 {
        let id = generator.generate().expect("models: ulid").to_string();
        let m = model(&id, &format!("doc{i}"));
        ds.write_model(&store, &m)
            .await
            .expect("models: write_model");
        written.push(m);
    }
    for m in &written {
        let got = ds
            .read_model(&store, &m.id)
            .await
            .expect("models: read_model");
        assert_eq!(
            got.as_ref(),
            Some(m),
            "models: read_model must return the model as written"
        );
    }
    assert!(
        ds.read_model(&store, &ulid::Ulid::new().to_string())
            .await
            .expect("models: read_model unknown")
            .is_none(),
        "models: an unknown model is not found"
    );
    let latest = ds.latest_model(&store).await.expect("models: latest_model");
    assert_eq!(
        latest.as_ref(),
        written.last(),
        "models: latest_model is the newest"
    );

    let newest_first: Vec<_> = written.iter().rev().cloned().collect();
    let mut got = Vec::new();
    let mut token = None;
    let mut pages = 0;
    loop {
        let page = ds
            .list_models(
                &store,
                &Page {
                    size: 2,
                    token: token.clone(),
                },
            )
            .await
            .expect("models: list_models page");
        assert!(
            page.items.len() <= 2,
            "models: list_models returned more than the page size"
        );
        pages += 1;
        got.extend(page.items);
        match page.next {
            Some(t) => token = Some(t),
            None => break,
        }
        assert!(
            pages < 10,
            "models: list_models never stopped returning tokens"
        );
    }
    assert_eq!(
        pages, 3,
        "models: five models in pages of two take three pages"
    );
    assert_eq!(
        got, newest_first,
        "models: list_models pages are newest first, each model once"
    );
    let whole = ds
        .list_models(&store, &all())
        .await
        .expect("models: list_models all");
    assert_eq!(
        whole.items, newest_first,
        "models: page size 0 lists every model newest first"
    );

    let other = new_store(ds, "models-other").await;
    assert!(
        ds.latest_model(&other)
            .await
            .expect("models: other latest")
            .is_none(),
        "models: models belong to one store"
    );
    assert!(
        ds.read_model(&other, &written[0].id)
            .await
            .expect("models: other read")
            .is_none(),
        "models: a model is not readable through another store"
    );
    assert!(
        matches!(
            ds.write_model(&ulid::Ulid::new().to_string(), &written[0])
                .await,
            Err(Error::StoreNotFound(_))
        ),
        "models: writing to an unknown store must be StoreNotFound"
    );
}

async fn write_semantics(ds: &dyn Datastore) {
    let store = new_store(ds, "writes").await;
    assert_eq!(
        ds.head_revision(&store).await.expect("writes: head"),
        0,
        "writes: an empty store is at revision 0"
    );
    let t1 = tk("user:anne", "viewer", "doc:1");
    let t2 = tk("user:bob", "viewer", "doc:1");
    let t3 = tk("user:carl", "viewer", "doc:1");

    let r1 = write(ds, &store, &[], std::slice::from_ref(&t1), "writes: first").await;
    assert!(r1 > 0, "writes: the first write gets a revision above 0");
    assert_eq!(
        ds.head_revision(&store).await.expect("writes: head"),
        r1,
        "writes: the head is the last write's revision"
    );
    let r2 = write(ds, &store, &[], std::slice::from_ref(&t2), "writes: second").await;
    assert!(
        r2 > r1,
        "writes: revisions strictly increase ({r2} after {r1})"
    );

    let dup = ds
        .write_tuples(
            &store,
            &[],
            std::slice::from_ref(&t1),
            WriteOptions::default(),
        )
        .await;
    assert!(
        matches!(dup, Err(Error::DuplicateWrite(_))),
        "writes: writing an existing tuple must be DuplicateWrite, got {dup:?}"
    );
    let dup_cond = ds
        .write_tuples(
            &store,
            &[],
            &[with_condition(t1.clone(), "in_range", None)],
            WriteOptions::default(),
        )
        .await;
    assert!(
        matches!(dup_cond, Err(Error::DuplicateWrite(_))),
        "writes: a tuple's identity ignores its condition, got {dup_cond:?}"
    );
    let missing = ds
        .write_tuples(
            &store,
            std::slice::from_ref(&t3),
            &[],
            WriteOptions::default(),
        )
        .await;
    assert!(
        matches!(missing, Err(Error::MissingDelete(_))),
        "writes: deleting a missing tuple must be MissingDelete, got {missing:?}"
    );
    assert_eq!(
        ds.head_revision(&store).await.expect("writes: head"),
        r2,
        "writes: failed writes do not move the head"
    );

    let twice = ds
        .write_tuples(
            &store,
            &[],
            &[t3.clone(), t3.clone()],
            WriteOptions::default(),
        )
        .await;
    assert!(
        twice.is_err(),
        "writes: the same tuple twice in one write list must fail"
    );
    let twice = ds
        .write_tuples(
            &store,
            &[t1.clone(), t1.clone()],
            &[],
            WriteOptions::default(),
        )
        .await;
    assert!(
        twice.is_err(),
        "writes: the same tuple twice in one delete list must fail"
    );

    let ignore_dup = WriteOptions {
        ignore_duplicates: true,
        ignore_missing: false,
    };
    let r3 = ds
        .write_tuples(&store, &[], &[t1.clone(), t3.clone()], ignore_dup)
        .await
        .expect("writes: ignore duplicates");
    assert!(
        r3 > r2,
        "writes: a write that adds a tuple gets a new revision"
    );
    let keys = read_keys(
        ds,
        &store,
        &TupleFilter::default(),
        r3,
        "writes: after ignore duplicates",
    )
    .await;
    assert_same_tuples(
        &keys,
        &[t1.clone(), t2.clone(), t3.clone()],
        "writes: an ignored duplicate is kept once",
    );

    let ignore_missing = WriteOptions {
        ignore_duplicates: false,
        ignore_missing: true,
    };
    let gone = tk("user:nobody", "viewer", "doc:1");
    let r4 = ds
        .write_tuples(&store, &[gone, t3.clone()], &[], ignore_missing)
        .await
        .expect("writes: ignore missing");
    assert!(
        r4 > r3,
        "writes: a write that deletes a tuple gets a new revision"
    );
    let keys = read_keys(
        ds,
        &store,
        &TupleFilter::default(),
        r4,
        "writes: after ignore missing",
    )
    .await;
    assert_same_tuples(
        &keys,
        &[t1.clone(), t2.clone()],
        "writes: ignore missing still deletes what exists",
    );

    // Delete and rewrite one tuple in a single write: allowed, and the new version wins.
    let t1c = with_condition(
        t1.clone(),
        "in_range",
        Some(serde_json::json!({"limit": 10})),
    );
    let r5 = write(
        ds,
        &store,
        std::slice::from_ref(&t1),
        std::slice::from_ref(&t1c),
        "writes: delete and rewrite",
    )
    .await;
    assert!(r5 > r4, "writes: delete and rewrite gets a new revision");
    let keys = read_keys(
        ds,
        &store,
        &filter(None, None, None, &["user:anne"]),
        r5,
        "writes: after rewrite",
    )
    .await;
    assert_eq!(
        keys,
        vec![t1c.clone()],
        "writes: the rewritten tuple carries its new condition, once"
    );
    let before = read_keys(
        ds,
        &store,
        &filter(None, None, None, &["user:anne"]),
        r5 - 1,
        "writes: before rewrite",
    )
    .await;
    assert_eq!(
        before,
        vec![t1.clone()],
        "writes: the old version is visible before the rewrite"
    );
}

async fn all_or_nothing(ds: &dyn Datastore) {
    let store = new_store(ds, "atomic").await;
    let t1 = tk("user:anne", "viewer", "doc:1");
    let t2 = tk("user:bob", "viewer", "doc:1");
    let r = write(ds, &store, &[], &[t1.clone(), t2.clone()], "atomic: seed").await;

    let fresh: Vec<TupleKey> = (0..20)
        .map(|i| tk(&format!("user:u{i}"), "viewer", "doc:2"))
        .collect();
    let mut batch = fresh.clone();
    batch.push(t1.clone());
    let res = ds
        .write_tuples(&store, &[], &batch, WriteOptions::default())
        .await;
    assert!(
        matches!(res, Err(Error::DuplicateWrite(_))),
        "atomic: a batch with one duplicate must fail, got {res:?}"
    );

    let res = ds
        .write_tuples(
            &store,
            &[t2.clone(), tk("user:zed", "viewer", "doc:1")],
            &fresh,
            WriteOptions::default(),
        )
        .await;
    assert!(
        matches!(res, Err(Error::MissingDelete(_))),
        "atomic: a batch with one missing delete must fail, got {res:?}"
    );

    assert_eq!(
        ds.head_revision(&store).await.expect("atomic: head"),
        r,
        "atomic: failed batches do not move the head"
    );
    let keys = read_keys(
        ds,
        &store,
        &TupleFilter::default(),
        r,
        "atomic: after failures",
    )
    .await;
    assert_same_tuples(
        &keys,
        &[t1.clone(), t2.clone()],
        "atomic: failed batches write and delete nothing",
    );
    let changes = ds
        .read_changes(&store, &ChangeFilter::default(), &all())
        .await
        .expect("atomic: read_changes");
    assert_eq!(
        changes.items.len(),
        2,
        "atomic: failed batches leave no changelog entries"
    );
}

async fn conditions(ds: &dyn Datastore) {
    let store = new_store(ds, "conditions").await;
    let rich = with_condition(
        tk("user:anne", "viewer", "doc:1"),
        "in_range",
        Some(serde_json::json!({
            "limit": 10, "ratio": 0.25, "name": "ünïcødé 'quoted' \"text\"", "ok": true,
            "nested": {"list": [1, "two", null, {"three": 3}]}
        })),
    );
    let bare = with_condition(tk("user:bob", "viewer", "doc:1"), "in_range", None);
    let empty = with_condition(
        tk("user:carl", "viewer", "doc:1"),
        "in_range",
        Some(serde_json::json!({})),
    );
    let plain = tk("user:dana", "viewer", "doc:1");
    let want = [rich.clone(), bare.clone(), empty.clone(), plain.clone()];
    let r = write(ds, &store, &[], &want, "conditions: write").await;
    let page = ds
        .read_tuples(&store, &TupleFilter::default(), r, &all())
        .await
        .expect("conditions: read");
    for w in &want {
        let got: Vec<&Tuple> = page.items.iter().filter(|t| t.key.user == w.user).collect();
        assert_eq!(got.len(), 1, "conditions: `{}` must be read once", w.user);
        assert_eq!(
            &got[0].key, w,
            "conditions: tuple with its condition and context must round-trip"
        );
    }
    let changes = ds
        .read_changes(&store, &ChangeFilter::default(), &all())
        .await
        .expect("conditions: changes");
    let got: Vec<TupleKey> = changes.items.into_iter().map(|c| c.tuple_key).collect();
    assert_eq!(
        got,
        want.to_vec(),
        "conditions: the changelog keeps conditions and contexts"
    );

    // Deleting by identity records the deleted version, condition included.
    let r2 = write(
        ds,
        &store,
        &[tk("user:anne", "viewer", "doc:1")],
        &[],
        "conditions: delete",
    )
    .await;
    let changes = ds
        .read_changes(&store, &ChangeFilter::default(), &all())
        .await
        .expect("conditions: changes after delete");
    let last = changes
        .items
        .last()
        .expect("conditions: a delete is in the changelog");
    assert_eq!(
        last.operation,
        Operation::Delete,
        "conditions: the last change is the delete"
    );
    assert_eq!(
        last.revision, r2,
        "conditions: the delete carries its revision"
    );
    assert_eq!(
        last.tuple_key, rich,
        "conditions: the delete change names the deleted tuple with its condition"
    );
}

async fn snapshots(ds: &dyn Datastore) {
    let store = new_store(ds, "snapshots").await;
    let a = tk("user:anne", "viewer", "doc:1");
    let b = tk("user:bob", "viewer", "doc:1");
    let before = now() - chrono::Duration::seconds(5);
    let n = write(
        ds,
        &store,
        &[],
        std::slice::from_ref(&a),
        "snapshots: write a",
    )
    .await;
    let after = now() + chrono::Duration::seconds(5);
    let m0 = write(
        ds,
        &store,
        &[],
        std::slice::from_ref(&b),
        "snapshots: write b",
    )
    .await;
    let m = write(
        ds,
        &store,
        std::slice::from_ref(&a),
        &[],
        "snapshots: delete a",
    )
    .await;
    let any = TupleFilter::default();

    assert!(
        read_keys(ds, &store, &any, n - 1, "snapshots")
            .await
            .is_empty(),
        "snapshots: nothing is visible before the first write"
    );
    assert_same_tuples(
        &read_keys(ds, &store, &any, n, "snapshots").await,
        std::slice::from_ref(&a),
        "snapshots: a tuple is visible at its revision",
    );
    assert_same_tuples(
        &read_keys(ds, &store, &any, m0, "snapshots").await,
        &[a.clone(), b.clone()],
        "snapshots: both before the delete",
    );
    assert_same_tuples(
        &read_keys(ds, &store, &any, m - 1, "snapshots").await,
        &[a.clone(), b.clone()],
        "snapshots: a deleted tuple is visible just before its delete",
    );
    assert_same_tuples(
        &read_keys(ds, &store, &any, m, "snapshots").await,
        std::slice::from_ref(&b),
        "snapshots: a deleted tuple is invisible at its delete",
    );
    assert_same_tuples(
        &read_keys(ds, &store, &any, m + 100, "snapshots").await,
        std::slice::from_ref(&b),
        "snapshots: reads above the head see the head",
    );

    let page = ds
        .read_tuples(&store, &any, n, &all())
        .await
        .expect("snapshots: read with timestamps");
    let ts = page.items.first().expect("snapshots: tuple at n").timestamp;
    assert!(
        ts >= before && ts <= after,
        "snapshots: a tuple's timestamp is when it was written ({ts})"
    );

    // Re-creating a deleted tuple starts a new version; the old one stays in the past.
    let a2 = with_condition(a.clone(), "in_range", None);
    let k = write(
        ds,
        &store,
        &[],
        std::slice::from_ref(&a2),
        "snapshots: rewrite a",
    )
    .await;
    assert_eq!(
        read_keys(
            ds,
            &store,
            &filter(None, None, None, &["user:anne"]),
            k,
            "snapshots"
        )
        .await,
        vec![a2],
        "snapshots: the new version at its revision"
    );
    assert_eq!(
        read_keys(
            ds,
            &store,
            &filter(None, None, None, &["user:anne"]),
            m - 1,
            "snapshots"
        )
        .await,
        vec![a],
        "snapshots: the old version in the past"
    );
    assert!(
        read_keys(
            ds,
            &store,
            &filter(None, None, None, &["user:anne"]),
            k - 1,
            "snapshots"
        )
        .await
        .is_empty(),
        "snapshots: neither in between"
    );
}

async fn filters(ds: &dyn Datastore) {
    let store = new_store(ds, "filters").await;
    let d1_anne_v = tk("user:anne", "viewer", "doc:1");
    let d1_bob_v = tk("user:bob", "viewer", "doc:1");
    let d1_anne_e = tk("user:anne", "editor", "doc:1");
    let d2_anne_v = tk("user:anne", "viewer", "doc:2");
    let f1_anne_v = tk("user:anne", "viewer", "folder:1");
    let d1_eng_v = tk("group:eng#member", "viewer", "doc:1");
    let d3_all_v = tk("user:*", "viewer", "doc:3");
    let document = tk("user:anne", "viewer", "document:1");
    let d10 = tk("user:anne", "viewer", "doc:10");
    let every = [
        d1_anne_v.clone(),
        d1_bob_v.clone(),
        d1_anne_e.clone(),
        d2_anne_v.clone(),
        f1_anne_v.clone(),
        d1_eng_v.clone(),
        d3_all_v.clone(),
        document.clone(),
        d10.clone(),
    ];
    let r = write(ds, &store, &[], &every, "filters: seed").await;
    let cases: Vec<(&str, TupleFilter, Vec<TupleKey>)> = vec![
        ("no filter", TupleFilter::default(), every.to_vec()),
        (
            "object type",
            filter(Some("doc"), None, None, &[]),
            vec![
                d1_anne_v.clone(),
                d1_bob_v.clone(),
                d1_anne_e.clone(),
                d2_anne_v.clone(),
                d1_eng_v.clone(),
                d3_all_v.clone(),
                d10.clone(),
            ],
        ),
        (
            "object",
            filter(Some("doc"), Some("1"), None, &[]),
            vec![
                d1_anne_v.clone(),
                d1_bob_v.clone(),
                d1_anne_e.clone(),
                d1_eng_v.clone(),
            ],
        ),
        (
            "object and relation",
            filter(Some("doc"), Some("1"), Some("viewer"), &[]),
            vec![d1_anne_v.clone(), d1_bob_v.clone(), d1_eng_v.clone()],
        ),
        (
            "object id only",
            filter(None, Some("1"), None, &[]),
            vec![
                d1_anne_v.clone(),
                d1_bob_v.clone(),
                d1_anne_e.clone(),
                f1_anne_v.clone(),
                d1_eng_v.clone(),
                document.clone(),
            ],
        ),
        (
            "relation only",
            filter(None, None, Some("editor"), &[]),
            vec![d1_anne_e.clone()],
        ),
        (
            "one user",
            filter(None, None, None, &["user:anne"]),
            vec![
                d1_anne_v.clone(),
                d1_anne_e.clone(),
                d2_anne_v.clone(),
                f1_anne_v.clone(),
                document.clone(),
                d10.clone(),
            ],
        ),
        (
            "any of users",
            filter(
                None,
                None,
                None,
                &["user:bob", "group:eng#member", "user:*"],
            ),
            vec![d1_bob_v.clone(), d1_eng_v.clone(), d3_all_v.clone()],
        ),
        (
            "type, relation and user",
            filter(Some("doc"), None, Some("viewer"), &["user:anne"]),
            vec![d1_anne_v.clone(), d2_anne_v.clone(), d10.clone()],
        ),
        (
            "everything",
            filter(
                Some("doc"),
                Some("1"),
                Some("viewer"),
                &["user:bob", "user:carl"],
            ),
            vec![d1_bob_v.clone()],
        ),
        (
            "no match",
            filter(Some("doc"), Some("1"), Some("owner"), &[]),
            vec![],
        ),
        (
            "unknown user",
            filter(None, None, None, &["user:zed"]),
            vec![],
        ),
    ];
    for (what, f, want) in cases {
        let got = read_keys(ds, &store, &f, r, &format!("filters: {what}")).await;
        assert_same_tuples(&got, &want, &format!("filters: {what}"));
    }
    let unknown = ds
        .read_tuples(
            &ulid::Ulid::new().to_string(),
            &TupleFilter::default(),
            r,
            &all(),
        )
        .await
        .expect("filters: unknown store");
    assert!(
        unknown.items.is_empty(),
        "filters: an unknown store has no tuples"
    );
}

async fn read_pages(
    ds: &dyn Datastore,
    store: &str,
    f: &TupleFilter,
    rev: Revision,
    size: usize,
    what: &str,
) -> (Vec<TupleKey>, usize) {
    let mut out = Vec::new();
    let mut token = None;
    let mut pages = 0;
    loop {
        let page: Paged<Tuple> = ds
            .read_tuples(
                store,
                f,
                rev,
                &Page {
                    size,
                    token: token.clone(),
                },
            )
            .await
            .unwrap_or_else(|e| panic!("{what}: read_tuples page failed: {e}"));
        assert!(
            page.items.len() <= size,
            "{what}: a page holds at most the page size"
        );
        pages += 1;
        out.extend(page.items.into_iter().map(|t| t.key));
        match page.next {
            Some(t) => token = Some(t),
            None => return (out, pages),
        }
        assert!(
            pages < 1000,
            "{what}: read_tuples never stopped returning tokens"
        );
    }
}

async fn tuple_pagination(ds: &dyn Datastore) {
    let store = new_store(ds, "tuple-pages").await;
    let keys: Vec<TupleKey> = (0..250)
        .map(|i| {
            tk(
                &format!("user:u{i:03}"),
                "viewer",
                &format!("doc:{}", i % 7),
            )
        })
        .collect();
    write(ds, &store, &[], &keys[..100], "tuple pages: batch 1").await;
    write(ds, &store, &[], &keys[100..200], "tuple pages: batch 2").await;
    let rev = write(ds, &store, &[], &keys[200..], "tuple pages: batch 3").await;
    let any = TupleFilter::default();

    let (paged, pages) = read_pages(ds, &store, &any, rev, 100, "tuple pages").await;
    assert!(
        pages <= 4,
        "tuple pages: 250 tuples in pages of 100 take at most 4 pages, took {pages}"
    );
    assert_eq!(paged.len(), 250, "tuple pages: every tuple is read once");
    let distinct: HashSet<_> = paged.iter().map(|k| k.identity()).collect();
    assert_eq!(distinct.len(), 250, "tuple pages: no tuple is read twice");
    assert_same_tuples(
        &paged,
        &keys,
        "tuple pages: the pages hold exactly the written tuples",
    );

    let whole = read_keys(ds, &store, &any, rev, "tuple pages: whole").await;
    assert_eq!(
        paged, whole,
        "tuple pages: paging keeps the same stable order as a full read"
    );
    let (again, _) = read_pages(ds, &store, &any, rev, 100, "tuple pages: again").await;
    assert_eq!(
        paged, again,
        "tuple pages: the order is stable between reads"
    );
    let (small, _) = read_pages(ds, &store, &any, rev, 7, "tuple pages: size 7").await;
    assert_eq!(
        paged, small,
        "tuple pages: the order does not depend on the page size"
    );

    // Paging at a snapshot is not disturbed by writes between pages.
    let first = ds
        .read_tuples(
            &store,
            &any,
            rev,
            &Page {
                size: 100,
                token: None,
            },
        )
        .await
        .expect("tuple pages: first");
    let extra: Vec<TupleKey> = (0..30)
        .map(|i| tk(&format!("user:x{i:03}"), "viewer", "doc:0"))
        .collect();
    let deleted: Vec<TupleKey> = keys[..10].to_vec();
    write(
        ds,
        &store,
        &deleted,
        &extra,
        "tuple pages: concurrent change",
    )
    .await;
    let mut got: Vec<TupleKey> = first.items.into_iter().map(|t| t.key).collect();
    let mut token = first.next;
    let mut pages = 0;
    while let Some(t) = token {
        let page = ds
            .read_tuples(
                &store,
                &any,
                rev,
                &Page {
                    size: 100,
                    token: Some(t),
                },
            )
            .await
            .expect("tuple pages: next");
        got.extend(page.items.into_iter().map(|t| t.key));
        token = page.next;
        pages += 1;
        assert!(pages < 100, "tuple pages: never stopped");
    }
    assert_same_tuples(
        &got,
        &keys,
        "tuple pages: a snapshot read is unaffected by later writes",
    );

    let f = filter(Some("doc"), Some("3"), Some("viewer"), &[]);
    let want: Vec<TupleKey> = keys
        .iter()
        .filter(|k| k.object == "doc:3")
        .cloned()
        .collect();
    let (filtered, _) = read_pages(ds, &store, &f, rev, 5, "tuple pages: filtered").await;
    assert_same_tuples(&filtered, &want, "tuple pages: filtered pages");
}

async fn invalid_tokens(ds: &dyn Datastore) {
    let store = new_store(ds, "tokens").await;
    let rev = write(
        ds,
        &store,
        &[],
        &[tk("user:anne", "viewer", "doc:1")],
        "tokens: seed",
    )
    .await;
    let bad = Page {
        size: 10,
        token: Some(BAD_TOKEN.into()),
    };
    let r = ds
        .read_tuples(&store, &TupleFilter::default(), rev, &bad)
        .await;
    assert!(
        matches!(r, Err(Error::InvalidContinuationToken)),
        "tokens: read_tuples with a bad token, got {r:?}"
    );
    let r = ds.list_stores(None, &bad).await;
    assert!(
        matches!(r, Err(Error::InvalidContinuationToken)),
        "tokens: list_stores with a bad token, got {r:?}"
    );
    let r = ds.list_models(&store, &bad).await;
    assert!(
        matches!(r, Err(Error::InvalidContinuationToken)),
        "tokens: list_models with a bad token, got {r:?}"
    );
    let r = ds
        .read_changes(&store, &ChangeFilter::default(), &bad)
        .await;
    assert!(
        matches!(r, Err(Error::InvalidContinuationToken)),
        "tokens: read_changes with a bad token, got {r:?}"
    );
}

fn change_summary(c: &[TupleChange]) -> Vec<(Operation, String, Revision)> {
    c.iter()
        .map(|c| {
            (
                c.operation,
                format!(
                    "{}#{}@{}",
                    c.tuple_key.object, c.tuple_key.relation, c.tuple_key.user
                ),
                c.revision,
            )
        })
        .collect()
}

async fn collect_changes(
    ds: &dyn Datastore,
    store: &str,
    filter: &ChangeFilter,
    size: usize,
    token: Option<String>,
    what: &str,
) -> (Vec<TupleChange>, Option<String>) {
    let mut out = Vec::new();
    let mut token = token;
    for _ in 0..1000 {
        let page = ds
            .read_changes(
                store,
                filter,
                &Page {
                    size,
                    token: token.clone(),
                },
            )
            .await
            .unwrap_or_else(|e| panic!("{what}: read_changes failed: {e}"));
        assert!(
            page.items.len() <= size,
            "{what}: a changes page holds at most the page size"
        );
        let done = page.items.is_empty();
        out.extend(page.items);
        if page.next.is_some() {
            token = page.next;
        }
        if done {
            return (out, token);
        }
    }
    panic!("{what}: read_changes never ran dry");
}

/// `start_time` picks the first change at or after it; a continuation token overrides it; a
/// start after every change returns nothing and a token that resumes at the next write.
async fn changes_since(ds: &dyn Datastore) {
    let store = new_store(ds, "changes-since").await;
    let pause = || tokio::time::sleep(std::time::Duration::from_millis(30));
    let before = now() - chrono::Duration::seconds(1);
    let d1 = tk("user:anne", "viewer", "doc:1");
    let f1 = tk("user:anne", "viewer", "folder:1");
    let d2 = tk("user:bob", "viewer", "doc:2");
    let d3 = tk("user:carl", "viewer", "doc:3");
    let r1 = write(ds, &store, &[], &[d1.clone(), f1.clone()], "since: r1").await;
    pause().await;
    let middle = now();
    pause().await;
    let r2 = write(ds, &store, &[], &[d2.clone(), d3.clone()], "since: r2").await;
    let since = |t| ChangeFilter {
        object_type: None,
        start_time: Some(t),
    };

    let (everything, _) =
        collect_changes(ds, &store, &since(before), 10, None, "since: early").await;
    assert_eq!(
        everything.len(),
        4,
        "since: a start before every change reads them all"
    );
    let (later, _) = collect_changes(ds, &store, &since(middle), 10, None, "since: middle").await;
    assert_eq!(
        change_summary(&later),
        vec![
            (Operation::Write, "doc:2#viewer@user:bob".to_string(), r2),
            (Operation::Write, "doc:3#viewer@user:carl".to_string(), r2),
        ],
        "since: only the changes at or after the start time"
    );
    // Pages of one: the second page comes from the token, not from the start time again.
    let (paged, _) = collect_changes(ds, &store, &since(middle), 1, None, "since: pages").await;
    assert_eq!(
        change_summary(&paged),
        change_summary(&later),
        "since: paging from a start time yields each later change once"
    );
    let typed = ChangeFilter {
        object_type: Some("folder".into()),
        start_time: Some(middle),
    };
    let (none, _) = collect_changes(ds, &store, &typed, 10, None, "since: typed").await;
    assert!(none.is_empty(), "since: type and start time both apply");

    // A token overrides the start time.
    let first = ds
        .read_changes(
            &store,
            &ChangeFilter::default(),
            &Page {
                size: 1,
                token: None,
            },
        )
        .await
        .expect("since: first page");
    let (rest, _) = collect_changes(
        ds,
        &store,
        &since(now() + chrono::Duration::hours(1)),
        10,
        first.next,
        "since: token wins",
    )
    .await;
    assert_eq!(
        rest.len(),
        3,
        "since: with a token the start time is ignored"
    );

    // A start after everything: nothing yet, and the token resumes at the next write.
    let future = ds
        .read_changes(&store, &since(now() + chrono::Duration::seconds(1)), &all())
        .await
        .expect("since: future");
    assert!(
        future.items.is_empty(),
        "since: nothing after a future start"
    );
    assert!(future.next.is_some(), "since: a token to poll with");
    let r3 = write(ds, &store, std::slice::from_ref(&d1), &[], "since: r3").await;
    let (polled, _) = collect_changes(
        ds,
        &store,
        &ChangeFilter::default(),
        10,
        future.next,
        "since: poll",
    )
    .await;
    assert_eq!(
        change_summary(&polled),
        vec![(Operation::Delete, "doc:1#viewer@user:anne".to_string(), r3)],
        "since: polling from the empty page's token yields only newer changes"
    );
    assert!(r1 < r2 && r2 < r3, "since: revisions increase");
}

async fn changes(ds: &dyn Datastore) {
    let store = new_store(ds, "changes").await;
    let empty = ds
        .read_changes(&store, &ChangeFilter::default(), &all())
        .await
        .expect("changes: empty");
    assert!(
        empty.items.is_empty(),
        "changes: a new store has no changes"
    );

    let d1 = tk("user:anne", "viewer", "doc:1");
    let f1 = tk("user:anne", "viewer", "folder:1");
    let d2 = tk("user:bob", "viewer", "doc:2");
    let r1 = write(ds, &store, &[], &[d1.clone(), f1.clone()], "changes: r1").await;
    let r2 = write(
        ds,
        &store,
        std::slice::from_ref(&d1),
        std::slice::from_ref(&d2),
        "changes: r2",
    )
    .await;
    let r3 = write(ds, &store, std::slice::from_ref(&f1), &[], "changes: r3").await;
    let want = vec![
        (Operation::Write, "doc:1#viewer@user:anne".to_string(), r1),
        (
            Operation::Write,
            "folder:1#viewer@user:anne".to_string(),
            r1,
        ),
        (Operation::Delete, "doc:1#viewer@user:anne".to_string(), r2),
        (Operation::Write, "doc:2#viewer@user:bob".to_string(), r2),
        (
            Operation::Delete,
            "folder:1#viewer@user:anne".to_string(),
            r3,
        ),
    ];

    let whole = ds
        .read_changes(&store, &ChangeFilter::default(), &all())
        .await
        .expect("changes: all");
    assert_eq!(
        change_summary(&whole.items),
        want,
        "changes: all changes in revision order, deletes before writes"
    );
    assert!(
        whole.next.is_some(),
        "changes: read_changes always returns a token to resume from"
    );

    let (paged, token) = collect_changes(
        ds,
        &store,
        &ChangeFilter::default(),
        2,
        None,
        "changes: pages of 2",
    )
    .await;
    assert_eq!(
        change_summary(&paged),
        want,
        "changes: paging yields every change once, in order"
    );
    let (single, _) = collect_changes(
        ds,
        &store,
        &ChangeFilter::default(),
        1,
        None,
        "changes: pages of 1",
    )
    .await;
    assert_eq!(change_summary(&single), want, "changes: pages of one");

    let docs: Vec<_> = want
        .iter()
        .filter(|c| c.1.starts_with("doc:"))
        .cloned()
        .collect();
    let typed = ds
        .read_changes(&store, &ChangeFilter::of_type("doc"), &all())
        .await
        .expect("changes: typed");
    assert_eq!(
        change_summary(&typed.items),
        docs,
        "changes: the type filter keeps only that type"
    );
    let (typed_paged, typed_token) = collect_changes(
        ds,
        &store,
        &ChangeFilter::of_type("doc"),
        1,
        None,
        "changes: typed pages",
    )
    .await;
    assert_eq!(change_summary(&typed_paged), docs, "changes: typed paging");
    let none = ds
        .read_changes(&store, &ChangeFilter::of_type("doc3"), &all())
        .await
        .expect("changes: unknown type");
    assert!(
        none.items.is_empty(),
        "changes: an unknown type has no changes"
    );

    // The last token resumes exactly after what was read.
    let d3 = tk("user:carl", "viewer", "doc:3");
    let g1 = tk("user:carl", "member", "group:1");
    let r4 = write(ds, &store, &[], &[g1.clone(), d3.clone()], "changes: r4").await;
    let (resumed, _) = collect_changes(
        ds,
        &store,
        &ChangeFilter::default(),
        10,
        token,
        "changes: resume",
    )
    .await;
    assert_eq!(
        change_summary(&resumed),
        vec![
            (Operation::Write, "group:1#member@user:carl".to_string(), r4),
            (Operation::Write, "doc:3#viewer@user:carl".to_string(), r4),
        ],
        "changes: resuming from the last token yields only newer changes"
    );
    let (typed_resumed, _) = collect_changes(
        ds,
        &store,
        &ChangeFilter::of_type("doc"),
        10,
        typed_token,
        "changes: typed resume",
    )
    .await;
    assert_eq!(
        change_summary(&typed_resumed),
        vec![(Operation::Write, "doc:3#viewer@user:carl".to_string(), r4)],
        "changes: resuming a typed read yields only newer changes of that type"
    );
    for c in &resumed {
        assert!(
            c.timestamp <= now() + chrono::Duration::seconds(5),
            "changes: timestamps are not in the future"
        );
    }

    let unknown = ds
        .read_changes(
            &ulid::Ulid::new().to_string(),
            &ChangeFilter::default(),
            &all(),
        )
        .await
        .expect("changes: unknown store");
    assert!(
        unknown.items.is_empty(),
        "changes: an unknown store has no changes"
    );
}

async fn assertions(ds: &dyn Datastore) {
    let store = new_store(ds, "assertions").await;
    let m1 = ulid::Ulid::new().to_string();
    let m2 = ulid::Ulid::new().to_string();
    let none = ds
        .read_assertions(&store, &m1)
        .await
        .expect("assertions: read empty");
    assert_eq!(
        none,
        serde_json::json!([]),
        "assertions: a model without assertions has an empty list"
    );

    let a1 = serde_json::json!([
        {"tuple_key": {"user": "user:anne", "relation": "viewer", "object": "doc:1"}, "expectation": true},
        {"tuple_key": {"user": "user:bob", "relation": "viewer", "object": "doc:1"}, "expectation": false,
         "contextual_tuples": [{"user": "user:bob", "relation": "editor", "object": "doc:1"}], "context": {"x": 1.5}}
    ]);
    let a2 = serde_json::json!([{"tuple_key": {"user": "user:carl", "relation": "viewer", "object": "doc:2"}, "expectation": true}]);
    ds.write_assertions(&store, &m1, &a1)
        .await
        .expect("assertions: write m1");
    ds.write_assertions(&store, &m2, &a2)
        .await
        .expect("assertions: write m2");
    assert_eq!(
        ds.read_assertions(&store, &m1)
            .await
            .expect("assertions: read m1"),
        a1,
        "assertions: round-trip per model (m1)"
    );
    assert_eq!(
        ds.read_assertions(&store, &m2)
            .await
            .expect("assertions: read m2"),
        a2,
        "assertions: round-trip per model (m2)"
    );

    let replaced = serde_json::json!([]);
    ds.write_assertions(&store, &m1, &replaced)
        .await
        .expect("assertions: overwrite m1");
    assert_eq!(
        ds.read_assertions(&store, &m1)
            .await
            .expect("assertions: read m1 again"),
        replaced,
        "assertions: writing replaces"
    );
    assert_eq!(
        ds.read_assertions(&store, &m2)
            .await
            .expect("assertions: read m2 again"),
        a2,
        "assertions: other models are untouched"
    );

    let other = new_store(ds, "assertions-other").await;
    assert_eq!(
        ds.read_assertions(&other, &m2)
            .await
            .expect("assertions: other store"),
        serde_json::json!([]),
        "assertions: assertions belong to one store"
    );
    assert!(
        matches!(
            ds.write_assertions(&ulid::Ulid::new().to_string(), &m1, &a1)
                .await,
            Err(Error::StoreNotFound(_))
        ),
        "assertions: writing to an unknown store must be StoreNotFound"
    );
}

async fn isolation(ds: &dyn Datastore) {
    let a = new_store(ds, "isolation-a").await;
    let b = new_store(ds, "isolation-b").await;
    let shared = tk("user:anne", "viewer", "doc:1");
    let only_a = tk("user:bob", "viewer", "doc:1");
    let ra = write(
        ds,
        &a,
        &[],
        &[shared.clone(), only_a.clone()],
        "isolation: a",
    )
    .await;
    assert_eq!(
        ds.head_revision(&b).await.expect("isolation: head b"),
        0,
        "isolation: writes to one store leave another at 0"
    );
    let rb = write(ds, &b, &[], std::slice::from_ref(&shared), "isolation: b").await;
    assert!(rb > 0, "isolation: the other store gets its own revision");

    let any = TupleFilter::default();
    assert_same_tuples(
        &read_keys(ds, &a, &any, ra, "isolation").await,
        &[shared.clone(), only_a.clone()],
        "isolation: store a",
    );
    assert_same_tuples(
        &read_keys(ds, &b, &any, rb, "isolation").await,
        std::slice::from_ref(&shared),
        "isolation: store b",
    );

    let rd = write(
        ds,
        &a,
        std::slice::from_ref(&shared),
        &[],
        "isolation: delete in a",
    )
    .await;
    let hb = ds.head_revision(&b).await.expect("isolation: head b");
    assert_same_tuples(
        &read_keys(ds, &b, &any, hb, "isolation").await,
        std::slice::from_ref(&shared),
        "isolation: deleting in a leaves b",
    );
    assert_same_tuples(
        &read_keys(ds, &a, &any, rd, "isolation").await,
        &[only_a],
        "isolation: the delete applies to a",
    );

    let ca = ds
        .read_changes(&a, &ChangeFilter::default(), &all())
        .await
        .expect("isolation: changes a");
    let cb = ds
        .read_changes(&b, &ChangeFilter::default(), &all())
        .await
        .expect("isolation: changes b");
    assert_eq!(
        ca.items.len(),
        3,
        "isolation: store a has its own changelog"
    );
    assert_eq!(
        change_summary(&cb.items),
        vec![(Operation::Write, "doc:1#viewer@user:anne".to_string(), rb)],
        "isolation: store b has its own changelog"
    );

    let dup = ds
        .write_tuples(
            &b,
            &[],
            std::slice::from_ref(&shared),
            WriteOptions::default(),
        )
        .await;
    assert!(
        matches!(dup, Err(Error::DuplicateWrite(_))),
        "isolation: duplicates are per store"
    );
    let ok = ds
        .write_tuples(&a, &[], &[shared], WriteOptions::default())
        .await;
    assert!(
        ok.is_ok(),
        "isolation: a tuple deleted in a can be written again in a, got {ok:?}"
    );
}

fn policy_version(text: &str, schema: Option<serde_json::Value>) -> PolicyVersion {
    PolicyVersion {
        id: ulid::Ulid::new().to_string(),
        policies: text.to_string(),
        schema,
        links: vec![],
        created_at: now(),
    }
}

/// Policy versions are immutable, listed newest first, and exactly one (or none) is active.
async fn policy_versions(ds: &dyn Datastore) {
    let store = new_store(ds, "policies").await;
    let other = new_store(ds, "policies-other").await;
    assert_eq!(
        ds.active_policy_version(&store)
            .await
            .expect("policies: active"),
        None,
        "policies: a new store has no active version"
    );
    let v1 = policy_version("permit (principal, action, resource);", None);
    ds.write_policy_version(&store, &v1, true)
        .await
        .expect("policies: write v1");
    std::thread::sleep(std::time::Duration::from_millis(2));
    let schema = serde_json::json!({ "": { "entityTypes": { "user": {} }, "actions": {} } });
    let mut v2 = policy_version(
        "forbid (principal, action, resource);",
        Some(schema.clone()),
    );
    v2.links = vec![TemplateLink {
        id: "anne-doc".into(),
        template: "t".into(),
        principal: Some("user:anne".into()),
        resource: Some("doc:1".into()),
    }];
    ds.write_policy_version(&store, &v2, false)
        .await
        .expect("policies: write v2");
    assert_eq!(
        ds.active_policy_version(&store)
            .await
            .expect("policies: active"),
        Some(v1.clone()),
        "policies: writing without activating keeps the active version"
    );
    assert_eq!(
        ds.read_policy_version(&store, &v2.id)
            .await
            .expect("policies: read"),
        Some(v2.clone()),
        "policies: a version reads back as written, schema and links included"
    );
    let all = ds
        .list_policy_versions(&store, &all())
        .await
        .expect("policies: list");
    assert_eq!(
        all.items.iter().map(|v| v.id.clone()).collect::<Vec<_>>(),
        vec![v2.id.clone(), v1.id.clone()],
        "policies: newest first"
    );
    let first = ds
        .list_policy_versions(
            &store,
            &Page {
                size: 1,
                token: None,
            },
        )
        .await
        .expect("policies: page 1");
    assert_eq!(first.items, vec![v2.clone()]);
    let second = ds
        .list_policy_versions(
            &store,
            &Page {
                size: 1,
                token: first.next.clone(),
            },
        )
        .await
        .expect("policies: page 2");
    assert_eq!(second.items, vec![v1.clone()], "policies: second page");
    assert!(
        ds.activate_policy_version(&store, &v2.id)
            .await
            .expect("policies: activate v2"),
        "policies: activating an existing version"
    );
    assert_eq!(
        ds.active_policy_version(&store)
            .await
            .expect("policies: active"),
        Some(v2.clone())
    );
    assert!(
        ds.activate_policy_version(&store, &v1.id)
            .await
            .expect("policies: roll back"),
        "policies: rolling back"
    );
    assert_eq!(
        ds.active_policy_version(&store)
            .await
            .expect("policies: active"),
        Some(v1.clone()),
        "policies: rolled back to v1"
    );
    let unknown = ulid::Ulid::new().to_string();
    assert!(
        !ds.activate_policy_version(&store, &unknown)
            .await
            .expect("policies: activate unknown"),
        "policies: an unknown version cannot be activated"
    );
    assert!(
        !ds.activate_policy_version(&other, &v1.id)
            .await
            .expect("policies: activate another store's version"),
        "policies: another store's version cannot be activated"
    );
    assert_eq!(
        ds.read_policy_version(&other, &v1.id)
            .await
            .expect("policies: read other"),
        None,
        "policies: versions are per store"
    );
    assert!(
        ds.write_policy_version(&store, &v1, true).await.is_err(),
        "policies: a version id cannot be written twice"
    );
    assert_eq!(
        ds.active_policy_version(&store)
            .await
            .expect("policies: active"),
        Some(v1.clone()),
        "policies: a refused write changes nothing"
    );
    let r = ds
        .write_policy_version(
            &ulid::Ulid::new().to_string(),
            &policy_version("x", None),
            true,
        )
        .await;
    assert!(
        matches!(r, Err(Error::StoreNotFound(_))),
        "policies: unknown store, got {r:?}"
    );
}

async fn settings_and_risk(ds: &dyn Datastore) {
    let store = new_store(ds, "settings").await;
    let other = new_store(ds, "settings-other").await;
    assert_eq!(ds.read_setting(&store, "risk").await.unwrap(), None);
    let v1 = serde_json::json!({ "high_at": 60 });
    ds.write_setting(&store, "risk", &v1).await.unwrap();
    let v2 = serde_json::json!({ "high_at": 80 });
    ds.write_setting(&store, "risk", &v2).await.unwrap();
    ds.write_setting(&store, "decision_log", &v1).await.unwrap();
    assert_eq!(
        ds.read_setting(&store, "risk").await.unwrap(),
        Some(v2),
        "settings: replaced"
    );
    assert_eq!(
        ds.read_setting(&store, "decision_log").await.unwrap(),
        Some(v1.clone())
    );
    assert_eq!(
        ds.read_setting(&other, "risk").await.unwrap(),
        None,
        "settings: per store"
    );
    assert!(
        matches!(
            ds.write_setting("01J00000000000000000000000", "risk", &v1)
                .await,
            Err(Error::StoreNotFound(_))
        ),
        "settings: unknown store"
    );

    let later = now() + chrono::Duration::days(1);
    assert_eq!(
        ds.read_risk_profile(&store, "user:anne").await.unwrap(),
        None
    );
    let p1 = serde_json::json!({ "devices": { "d1": 1 } });
    assert!(
        ds.write_risk_profile(&store, "user:anne", &p1, later, None)
            .await
            .unwrap(),
        "risk: first save"
    );
    let v1 = ds
        .read_risk_profile(&store, "user:anne")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v1.profile, p1);
    // Compare-and-swap: a second first save, or a save from a stale version, loses.
    let p2 = serde_json::json!({ "devices": { "d1": 2 } });
    assert!(
        !ds.write_risk_profile(&store, "user:anne", &p2, later, None)
            .await
            .unwrap(),
        "risk: a concurrent first save loses"
    );
    assert!(
        !ds.write_risk_profile(&store, "user:anne", &p2, later, Some(v1.version + 1))
            .await
            .unwrap(),
        "risk: a save from a version never read loses"
    );
    assert!(
        ds.write_risk_profile(&store, "user:anne", &p2, later, Some(v1.version))
            .await
            .unwrap(),
        "risk: a save from the version read wins"
    );
    let v2 = ds
        .read_risk_profile(&store, "user:anne")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v2.profile, p2, "risk: replaced");
    assert!(v2.version > v1.version, "risk: the version moves on");
    let p3 = serde_json::json!({ "devices": { "d1": 3 } });
    assert!(
        !ds.write_risk_profile(&store, "user:anne", &p3, later, Some(v1.version))
            .await
            .unwrap(),
        "risk: a save from the old version loses"
    );
    assert_eq!(
        ds.read_risk_profile(&store, "user:anne")
            .await
            .unwrap()
            .map(|s| s.profile),
        Some(p2),
        "risk: a lost save changes nothing"
    );
    assert_eq!(
        ds.read_risk_profile(&other, "user:anne").await.unwrap(),
        None,
        "risk: per store"
    );
    // Retention: an expired history goes, a live one stays.
    let past = now() - chrono::Duration::seconds(5);
    assert!(
        ds.write_risk_profile(&store, "user:old", &p1, past, None)
            .await
            .unwrap()
    );
    ds.prune_expired(now()).await.unwrap();
    assert_eq!(
        ds.read_risk_profile(&store, "user:old").await.unwrap(),
        None,
        "risk: expired"
    );
    assert!(
        ds.read_risk_profile(&store, "user:anne")
            .await
            .unwrap()
            .is_some(),
        "risk: kept"
    );
    assert!(ds.delete_risk_profile(&store, "user:anne").await.unwrap());
    assert!(!ds.delete_risk_profile(&store, "user:anne").await.unwrap());
    assert_eq!(
        ds.read_risk_profile(&store, "user:anne").await.unwrap(),
        None
    );
}

fn logged(store: &str, subject: &str, resource: &str, allowed: bool) -> LoggedDecision {
    let at = now();
    LoggedDecision {
        id: ulid::Ulid::new().to_string(),
        store_id: store.to_string(),
        decided_at: at,
        subject: subject.into(),
        action: "viewer".into(),
        resource: resource.into(),
        context: serde_json::json!({ "ip": "10.0.0.1" }).as_object().cloned(),
        allowed,
        policies: vec!["baseline".into()],
        errors: vec![],
        rebac: allowed,
        risk: crate::risk::Assessment::default(),
        revision: 3,
        policy_version: "baseline".into(),
        lean: true,
        ignore_undeclared: true,
        attributes_sent: true,
        attributes: [(
            subject.to_string(),
            serde_json::json!({ "department": "eng" })
                .as_object()
                .cloned()
                .unwrap_or_default(),
        )]
        .into(),
        redacted: vec!["token".into()],
        latency_us: 42,
        expires_at: at + chrono::Duration::days(1),
    }
}

async fn decision_log(ds: &dyn Datastore) {
    let store = new_store(ds, "decisions").await;
    let other = new_store(ds, "decisions-other").await;
    let mut written = Vec::new();
    for i in 0..5 {
        let d = logged(
            &store,
            &format!("user:u{}", i % 2),
            &format!("doc:{i}"),
            i != 3,
        );
        written.push(d);
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let mut expired = logged(&store, "user:u0", "doc:old", true);
    expired.expires_at = now() - chrono::Duration::seconds(5);
    let elsewhere = logged(&other, "user:u0", "doc:0", true);
    let mut batch = written.clone();
    batch.push(expired.clone());
    batch.push(elsewhere);
    ds.append_decisions(&batch).await.unwrap();
    let all = ds
        .read_decisions(&store, &DecisionFilter::default(), &Page::default())
        .await
        .unwrap();
    assert_eq!(
        all.items.len(),
        5,
        "decisions: this store's only, and not the expired one even before retention runs"
    );
    ds.prune_expired(now()).await.unwrap();
    let all = ds
        .read_decisions(&store, &DecisionFilter::default(), &Page::default())
        .await
        .unwrap();
    let mut newest_first = written.clone();
    newest_first.reverse();
    assert_eq!(
        all.items, newest_first,
        "decisions: round trip, newest first, expired gone"
    );
    let f = DecisionFilter {
        subject: Some("user:u0".into()),
        ..DecisionFilter::default()
    };
    let got = ds
        .read_decisions(&store, &f, &Page::default())
        .await
        .unwrap();
    assert_eq!(got.items.len(), 3, "decisions: by subject");
    let f = DecisionFilter {
        allowed: Some(false),
        ..DecisionFilter::default()
    };
    let got = ds
        .read_decisions(&store, &f, &Page::default())
        .await
        .unwrap();
    assert_eq!(got.items, vec![written[3].clone()], "decisions: denies");
    let f = DecisionFilter {
        resource: Some("doc:1".into()),
        since: Some(written[0].decided_at),
        until: Some(written[4].decided_at),
        policy_version: Some("baseline".into()),
        action: Some("viewer".into()),
        ..DecisionFilter::default()
    };
    let got = ds
        .read_decisions(&store, &f, &Page::default())
        .await
        .unwrap();
    assert_eq!(
        got.items,
        vec![written[1].clone()],
        "decisions: combined filter"
    );
    let f = DecisionFilter {
        until: Some(written[0].decided_at),
        ..DecisionFilter::default()
    };
    assert!(
        ds.read_decisions(&store, &f, &Page::default())
            .await
            .unwrap()
            .items
            .is_empty(),
        "decisions: until is exclusive"
    );
    // Pages of two cover everything once, in order.
    let mut seen = Vec::new();
    let mut token = None;
    loop {
        let page = ds
            .read_decisions(
                &store,
                &DecisionFilter::default(),
                &Page {
                    size: 2,
                    token: token.clone(),
                },
            )
            .await
            .unwrap();
        seen.extend(page.items);
        match page.next {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    assert_eq!(seen, newest_first, "decisions: pages");
    assert!(
        matches!(
            ds.read_decisions(
                &store,
                &DecisionFilter::default(),
                &Page {
                    size: 2,
                    token: Some(BAD_TOKEN.into())
                }
            )
            .await,
            Err(Error::InvalidContinuationToken)
        ),
        "decisions: bad token"
    );
    // Entries of an unknown store are dropped, not an error.
    ds.append_decisions(&[logged(
        "01J00000000000000000000000",
        "user:x",
        "doc:x",
        true,
    )])
    .await
    .unwrap();
    decision_log_across_batches(ds).await;
}

/// Entries appended in several batches whose times overlap (as two nodes flush them), and
/// batches spanning more than a second, read back newest first, page by page, filtered.
async fn decision_log_across_batches(ds: &dyn Datastore) {
    let store = new_store(ds, "decisions-batches").await;
    let base = now() - chrono::Duration::seconds(60);
    let at = |ms: i64, subject: &str, n: u128| {
        let mut d = logged(&store, subject, &format!("doc:{ms}"), true);
        d.decided_at = base + chrono::Duration::milliseconds(ms);
        let t = u64::try_from(d.decided_at.timestamp_millis()).unwrap();
        d.id = ulid::Ulid::from_parts(t, n).to_string();
        d
    };
    let batches = [
        vec![at(0, "user:a", 1), at(10, "user:b", 1), at(20, "user:a", 1)],
        // Overlaps the first batch's time range: another node's flush.
        vec![
            at(5, "user:b", 2),
            at(15, "user:a", 2),
            at(2500, "user:b", 2),
        ],
        // Older than both, and spanning several seconds.
        vec![
            at(-5000, "user:a", 3),
            at(-3000, "user:b", 3),
            at(-1500, "user:a", 3),
            at(30, "user:b", 3),
        ],
    ];
    let mut all: Vec<LoggedDecision> = Vec::new();
    for b in &batches {
        ds.append_decisions(b).await.unwrap();
        all.extend(b.iter().cloned());
    }
    all.sort_by(|a, b| b.id.cmp(&a.id));
    for size in [1, 2, 3, 100] {
        for filter in [
            DecisionFilter::default(),
            DecisionFilter {
                subject: Some("user:a".into()),
                ..DecisionFilter::default()
            },
            DecisionFilter {
                resource: Some("doc:15".into()),
                ..DecisionFilter::default()
            },
            DecisionFilter {
                since: Some(base + chrono::Duration::milliseconds(10)),
                until: Some(base + chrono::Duration::milliseconds(2500)),
                ..DecisionFilter::default()
            },
            DecisionFilter {
                since: Some(base - chrono::Duration::milliseconds(3000)),
                subject: Some("user:b".into()),
                ..DecisionFilter::default()
            },
        ] {
            let want: Vec<&str> = all
                .iter()
                .filter(|d| filter.matches(d))
                .map(|d| d.id.as_str())
                .collect();
            let mut seen = Vec::new();
            let mut token = None;
            loop {
                let page = ds
                    .read_decisions(&store, &filter, &Page { size, token })
                    .await
                    .unwrap();
                assert!(page.items.len() <= size);
                seen.extend(page.items.into_iter().map(|d| d.id));
                match page.next {
                    Some(t) => token = Some(t),
                    None => break,
                }
            }
            assert_eq!(
                seen, want,
                "decisions across batches: page size {size}, {filter:?}"
            );
        }
    }
}

async fn entity_attributes(ds: &dyn Datastore) {
    let store = new_store(ds, "attributes").await;
    let other = new_store(ds, "attributes-other").await;
    let attrs = |entity: &str, v: serde_json::Value| EntityAttributes {
        entity: entity.into(),
        attributes: v.as_object().cloned().unwrap(),
        updated_at: now(),
    };
    let a = attrs("doc:1", serde_json::json!({ "classification": "secret" }));
    assert!(
        !ds.write_entity_attributes(&store, "doc:1", Some(&a))
            .await
            .unwrap(),
        "attributes: new"
    );
    let a2 = attrs(
        "doc:1",
        serde_json::json!({ "classification": "public", "pages": 3 }),
    );
    assert!(
        ds.write_entity_attributes(&store, "doc:1", Some(&a2))
            .await
            .unwrap(),
        "attributes: replaced"
    );
    for e in ["doc:2", "doc:3", "user:anne"] {
        let v = attrs(e, serde_json::json!({ "n": 1 }));
        ds.write_entity_attributes(&store, e, Some(&v))
            .await
            .unwrap();
    }
    let o = attrs("doc:1", serde_json::json!({ "other": true }));
    ds.write_entity_attributes(&other, "doc:1", Some(&o))
        .await
        .unwrap();
    let got = ds
        .read_entity_attributes(
            &store,
            &["doc:1".into(), "doc:9".into(), "user:anne".into()],
        )
        .await
        .unwrap();
    let mut names: Vec<&str> = got.iter().map(|a| a.entity.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["doc:1", "user:anne"], "attributes: read many");
    let doc1 = got.iter().find(|a| a.entity == "doc:1").unwrap();
    assert_eq!(doc1.attributes, a2.attributes, "attributes: round trip");
    assert_eq!(doc1.updated_at, a2.updated_at);
    // Listing by type, in pages of two.
    let mut seen = Vec::new();
    let mut token = None;
    loop {
        let page = ds
            .list_entity_attributes(
                &store,
                Some("doc"),
                &Page {
                    size: 2,
                    token: token.clone(),
                },
            )
            .await
            .unwrap();
        seen.extend(page.items.into_iter().map(|a| a.entity));
        match page.next {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    assert_eq!(
        seen,
        ["doc:1", "doc:2", "doc:3"],
        "attributes: list by type"
    );
    let all = ds
        .list_entity_attributes(&store, None, &Page::default())
        .await
        .unwrap();
    assert_eq!(all.items.len(), 4, "attributes: list all");
    assert!(
        ds.write_entity_attributes(&store, "doc:1", None)
            .await
            .unwrap(),
        "attributes: deleted"
    );
    assert!(
        !ds.write_entity_attributes(&store, "doc:1", None)
            .await
            .unwrap(),
        "attributes: gone"
    );
    assert!(
        ds.read_entity_attributes(&store, &["doc:1".into()])
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        ds.read_entity_attributes(&other, &["doc:1".into()])
            .await
            .unwrap()
            .len(),
        1,
        "attributes: per store"
    );
    assert!(
        matches!(
            ds.write_entity_attributes("01J00000000000000000000000", "doc:1", Some(&a))
                .await,
            Err(Error::StoreNotFound(_))
        ),
        "attributes: unknown store"
    );
}

/// Tuples that expire: they count until their expiry and at no revision after it; reads and
/// the changelog show the expiry; an expired tuple is neither a duplicate of a new write nor
/// there to delete; the sweep removes expired rows (up to its limit) and nothing else.
async fn expiry(ds: &dyn Datastore) {
    let what = "expiry";
    let store = new_store(ds, what).await;
    let soon = now() + chrono::Duration::milliseconds(3000);
    let later = now() + chrono::Duration::days(1);
    let expiring = |mut k: TupleKey, at: chrono::DateTime<chrono::Utc>| {
        k.expires_at = Some(at);
        k
    };
    let a = tk("user:anne", "viewer", "doc:1");
    let b = expiring(tk("user:bob", "viewer", "doc:1"), soon);
    let c = expiring(
        with_condition(
            tk("user:carl", "viewer", "doc:1"),
            "c",
            Some(serde_json::json!({ "x": 1 })),
        ),
        later,
    );
    let d = expiring(tk("group:eng#member", "editor", "doc:2"), soon);
    let r1 = write(
        ds,
        &store,
        &[],
        &[a.clone(), b.clone(), c.clone(), d.clone()],
        what,
    )
    .await;

    // Before the expiry: everything counts, and reads give each tuple back as written.
    let got = read_keys(ds, &store, &TupleFilter::default(), r1, what).await;
    assert_same_tuples(&got, &[a.clone(), b.clone(), c.clone(), d.clone()], what);
    for want in [&a, &b, &c, &d] {
        let found = got.iter().find(|k| k.identity() == want.identity());
        assert_eq!(
            found,
            Some(want),
            "{what}: a read shows the tuple with its expiry"
        );
    }
    let (log, _) = collect_changes(ds, &store, &ChangeFilter::default(), 100, None, what).await;
    let shown: Vec<Option<chrono::DateTime<chrono::Utc>>> =
        log.iter().map(|c| c.tuple_key.expires_at).collect();
    let mut want_shown = vec![None, Some(soon), Some(later), Some(soon)];
    let mut shown_sorted = shown.clone();
    shown_sorted.sort();
    want_shown.sort();
    assert_eq!(
        shown_sorted, want_shown,
        "{what}: the changelog shows each write's expiry"
    );
    // Still live: a duplicate.
    let dup = ds
        .write_tuples(
            &store,
            &[],
            std::slice::from_ref(&b),
            WriteOptions::default(),
        )
        .await;
    assert!(
        matches!(dup, Err(Error::DuplicateWrite(_))),
        "{what}: a tuple before its expiry is a duplicate: {dup:?}"
    );

    let wait = soon - now() + chrono::Duration::milliseconds(200);
    tokio::time::sleep(wait.to_std().unwrap_or_default()).await;
    assert!(now() > soon);
    // At its expiry a tuple stops counting at every revision, the one it was written at too,
    // through every filter.
    for f in [
        TupleFilter::default(),
        filter(Some("doc"), Some("1"), Some("viewer"), &[]),
        filter(None, None, None, &["user:bob"]),
        filter(Some("doc"), None, None, &["group:eng#member"]),
    ] {
        let got = read_keys(ds, &store, &f, r1, what).await;
        assert!(
            got.iter()
                .all(|k| k.user != "user:bob" && k.user != "group:eng#member"),
            "{what}: an expired tuple is read ({f:?}): {got:?}"
        );
    }
    let got = read_keys(ds, &store, &TupleFilter::default(), r1, what).await;
    assert_same_tuples(&got, &[a.clone(), c.clone()], what);

    // An expired tuple is not there to delete; ignoring missing deletes, nothing changes.
    let missing = ds
        .write_tuples(
            &store,
            &[tk("user:bob", "viewer", "doc:1")],
            &[],
            WriteOptions::default(),
        )
        .await;
    assert!(
        matches!(missing, Err(Error::MissingDelete(_))),
        "{what}: deleting an expired tuple is a missing delete: {missing:?}"
    );
    let ignore_missing = WriteOptions {
        ignore_missing: true,
        ..WriteOptions::default()
    };
    let same = ds
        .write_tuples(
            &store,
            &[tk("user:bob", "viewer", "doc:1")],
            &[],
            ignore_missing,
        )
        .await
        .unwrap();
    assert_eq!(
        same, r1,
        "{what}: an ignored delete of an expired tuple writes no revision"
    );

    // Writing it again is no duplicate: the new version counts, without an expiry.
    let b2 = tk("user:bob", "viewer", "doc:1");
    let r2 = write(ds, &store, &[], std::slice::from_ref(&b2), what).await;
    assert!(r2 > r1);
    let got = read_keys(ds, &store, &TupleFilter::default(), r2, what).await;
    assert_same_tuples(&got, &[a.clone(), b2.clone(), c.clone()], what);
    assert!(
        got.iter()
            .all(|k| k.user != "user:bob" || k.expires_at.is_none())
    );
    let (log, _) = collect_changes(ds, &store, &ChangeFilter::default(), 100, None, what).await;
    let last = log.last().unwrap();
    assert_eq!(
        (last.operation, last.revision, &last.tuple_key),
        (Operation::Write, r2, &b2),
        "{what}: the new write, and no delete for the expiry, in the changelog"
    );
    assert_eq!(log.len(), 5, "{what}: {log:?}");

    // The sweep: expired rows go (the limit respected), live ones stay, answers do not move.
    let first = ds.remove_expired_tuples(now(), 1).await.unwrap();
    assert_eq!(first, 1, "{what}: the sweep removes up to its limit");
    ds.remove_expired_tuples(now(), 10_000).await.unwrap();
    assert_eq!(
        ds.remove_expired_tuples(now(), 10_000).await.unwrap(),
        0,
        "{what}: nothing expired is left"
    );
    let got = read_keys(ds, &store, &TupleFilter::default(), r2, what).await;
    assert_same_tuples(&got, &[a.clone(), b2.clone(), c.clone()], what);
    // Swept as if a day had passed, `c` goes too; `a` and `b2`, which never expire, stay.
    assert!(
        ds.remove_expired_tuples(later + chrono::Duration::seconds(1), 10_000)
            .await
            .unwrap()
            >= 1
    );
    let got = read_keys(ds, &store, &TupleFilter::default(), r2, what).await;
    assert_same_tuples(&got, &[a, b2], what);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;

    #[tokio::test]
    async fn memory_store_conforms() {
        run_all(&MemoryStore::new()).await;
    }
}
