//! A generated differential check, part of the conformance suite: random models (unions,
//! intersections, exclusions, tuple-to-userset, wildcards, conditions, cycles) and random
//! tuples, asserting at one revision that check(o, r, u) ⇔ o ∈ list-objects(u, r) ⇔
//! u ∈ list-users(o, r) (or the wildcard is listed) ⇔ u in expand(o, r) (its usersets resolved
//! by check), on whatever datastore runs the suite; and, through the engine, that batch check
//! and Cedar's `context.relations` give check's answers.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::{Datastore, WriteOptions};
use crate::graph::{self, CompiledModel, ListUsersFilter, Query};
use crate::model::parse_dsl;
use crate::tuple::{ContextMap, RelationshipCondition, TupleKey};

/// splitmix64: deterministic, so a failure names the seed that reproduces it.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

const RELATIONS: usize = 4;
const USERS: [&str; 3] = ["user:u0", "user:u1", "user:u2"];
const DOCS: [&str; 3] = ["doc:d0", "doc:d1", "doc:d2"];

/// A random model: `group#member` and four relations on `doc`, each a direct part combined
/// with another relation, a relation through `parent`, or nothing.
fn model_dsl(rng: &mut Rng) -> String {
    let mut out = String::from(
        "model\n  schema 1.1\ntype user\ntype group\n  relations\n    define member: [user, user:*, group#member]\ntype doc\n  relations\n    define parent: [doc]\n",
    );
    for i in 0..RELATIONS {
        let mut direct = vec![];
        for t in ["user", "user:*", "group#member", "user with positive"] {
            if rng.chance(50) {
                direct.push(t);
            }
        }
        if direct.is_empty() {
            direct.push("user");
        }
        let other = format!("r{}", rng.below(RELATIONS));
        let rewrite = match rng.below(6) {
            0 => String::new(),
            1 => format!(" or {other}"),
            2 => format!(" and {other}"),
            3 => format!(" but not {other}"),
            4 => format!(" or {other} from parent"),
            _ => format!(" but not {other} from parent"),
        };
        out.push_str(&format!(
            "    define r{i}: [{}]{rewrite}\n",
            direct.join(", ")
        ));
    }
    out.push_str("condition positive(x: int) {\n  x > 0\n}\n");
    out
}

fn random_tuple(rng: &mut Rng) -> TupleKey {
    let object = DOCS[rng.below(DOCS.len())];
    match rng.below(10) {
        0 => TupleKey::new(DOCS[rng.below(DOCS.len())], "parent", object),
        1 => TupleKey::new(
            USERS[rng.below(USERS.len())],
            "member",
            ["group:g0", "group:g1"][rng.below(2)],
        ),
        2 => TupleKey::new("group:g1#member", "member", "group:g0"),
        _ => {
            let relation = format!("r{}", rng.below(RELATIONS));
            let user = match rng.below(8) {
                0 => "user:*",
                1 => ["group:g0#member", "group:g1#member"][rng.below(2)],
                _ => USERS[rng.below(USERS.len())],
            };
            let mut t = TupleKey::new(user, &relation, object);
            if rng.chance(30) {
                let mut ctx = serde_json::Map::new();
                ctx.insert("x".into(), serde_json::json!(rng.below(3) as i64 - 1));
                t.condition = Some(RelationshipCondition {
                    name: "positive".into(),
                    context: Some(ContextMap(ctx)),
                });
            }
            t
        }
    }
}

/// One random case from a seed: the model's DSL, the model compiled (with a fresh id), and up
/// to 40 distinct tuples it accepts; `None` when the random model does not compile.
fn random_case(seed: u64) -> Option<(String, CompiledModel, Vec<TupleKey>)> {
    let mut rng = Rng(seed);
    let dsl = model_dsl(&mut rng);
    let mut m = parse_dsl(&dsl).ok()?;
    m.id = ulid::Ulid::new().to_string();
    let model = CompiledModel::new(m).ok()?;
    let mut tuples: Vec<TupleKey> = Vec::new();
    for _ in 0..40 {
        let t = random_tuple(&mut rng);
        if model.validate_tuple(&t).is_ok() && !tuples.iter().any(|x| x.identity() == t.identity())
        {
            tuples.push(t);
        }
    }
    Some((dsl, model, tuples))
}

/// Runs `rounds` random models against `ds`; returns how many checks agreed.
pub async fn differential(ds: &dyn Datastore, rounds: u64) -> usize {
    let mut agreed = 0;
    let mut expanded = 0;
    for seed in 0..rounds {
        let Some((dsl, model, tuples)) = random_case(seed.wrapping_mul(7919) + 1) else {
            continue;
        };
        let store = super::conformance::new_store_for(ds, "differential").await;
        let rev = ds
            .write_tuples(&store, &[], &tuples, WriteOptions::default())
            .await
            .unwrap_or_else(|e| panic!("differential seed {seed}: write failed: {e}"));
        let users = [ListUsersFilter {
            type_name: "user".into(),
            relation: None,
        }];
        for r in 0..RELATIONS {
            let relation = format!("r{r}");
            for user in USERS {
                let q = Query::new(&store, &model, ds, rev, &[], None);
                let objects = graph::list_objects(&q, "doc", &relation, user).await;
                for doc in DOCS {
                    let q = Query::new(&store, &model, ds, rev, &[], None);
                    let checked = graph::check(&q, doc, &relation, user).await;
                    let q = Query::new(&store, &model, ds, rev, &[], None);
                    let listed = graph::list_users(&q, doc, &relation, &users).await;
                    let (Ok(checked), Ok(objects), Ok(listed)) = (&checked, &objects, &listed)
                    else {
                        // Depth exceeded somewhere: each query may meet it differently.
                        continue;
                    };
                    let context = || {
                        format!(
                            "seed {seed}: {doc}#{relation}@{user}\nmodel:\n{dsl}\ntuples: {tuples:?}\ncheck {checked}, list-objects {objects:?}, list-users {listed:?}"
                        )
                    };
                    assert_eq!(
                        *checked,
                        objects.iter().any(|o| o == doc),
                        "check and list-objects disagree, {}",
                        context()
                    );
                    let named = listed.iter().any(|u| u.0 == user);
                    let wildcard = listed.iter().any(|u| u.0 == "user:*");
                    if *checked {
                        assert!(
                            named || wildcard,
                            "check allows, list-users lacks the user, {}",
                            context()
                        );
                    } else {
                        assert!(
                            !named,
                            "check denies, list-users names the user, {}",
                            context()
                        );
                    }
                    agreed += 1;
                }
            }
        }
        let e = expand_agrees(ds, &model, &dsl, seed, &tuples).await;
        expanded += e;
        agreed += e;
    }
    assert!(
        expanded as u64 > rounds * 4,
        "differential: only {expanded} expand answers compared"
    );
    agreed
}

/// Expand shows one level of the userset tree and, as OpenFGA's does, does not evaluate
/// conditions: on the same tuples without the conditional ones, a user is in the tree
/// (a listed user or its type's wildcard, or in a listed or computed userset, which check
/// resolves) exactly when check allows.
async fn expand_agrees(
    ds: &dyn Datastore,
    model: &CompiledModel,
    dsl: &str,
    seed: u64,
    tuples: &[TupleKey],
) -> usize {
    let plain: Vec<TupleKey> = tuples
        .iter()
        .filter(|t| t.condition.is_none())
        .cloned()
        .collect();
    let store = super::conformance::new_store_for(ds, "differential-expand").await;
    let rev = if plain.is_empty() {
        0
    } else {
        ds.write_tuples(&store, &[], &plain, WriteOptions::default())
            .await
            .unwrap_or_else(|e| panic!("differential seed {seed}: write failed: {e}"))
    };
    let mut agreed = 0;
    for r in 0..RELATIONS {
        let relation = format!("r{r}");
        for doc in DOCS {
            let q = Query::new(&store, model, ds, rev, &[], None);
            let tree = graph::expand(&q, doc, &relation)
                .await
                .unwrap_or_else(|e| panic!("seed {seed}: expand {doc}#{relation}: {e}"));
            for user in USERS {
                let q = Query::new(&store, model, ds, rev, &[], None);
                // An answer that met a cut cycle depends on where the walk entered it: not
                // comparable with a walk entered elsewhere.
                let Ok(Some(checked)) = exact_check(&q, doc, &relation, user).await else {
                    continue;
                };
                let q = Query::new(&store, model, ds, rev, &[], None);
                let Ok(Some(in_tree)) = in_tree(&q, &tree["root"], user).await else {
                    continue;
                };
                assert_eq!(
                    checked, in_tree,
                    "seed {seed}: check and expand disagree on {doc}#{relation}@{user}\nmodel:\n{dsl}\ntuples: {plain:?}\ntree: {tree}"
                );
                agreed += 1;
            }
        }
    }
    agreed
}

/// Check's answer, or `None` when it met a cut cycle (or lacked a condition parameter).
async fn exact_check(
    q: &Query<'_>,
    object: &str,
    relation: &str,
    user: &str,
) -> crate::error::Result<Option<bool>> {
    q.model.validate_check(object, relation, user)?;
    let out = q.check(object, relation, user, 0, &mut Vec::new()).await?;
    Ok((!out.cycle && !out.missing).then_some(out.allowed))
}

/// Whether `user` is in an expand node, resolving the usersets it names with check; `None`
/// when a check it needed met a cut cycle.
fn in_tree<'a>(
    q: &'a Query<'_>,
    node: &'a serde_json::Value,
    user: &'a str,
) -> futures::future::BoxFuture<'a, crate::error::Result<Option<bool>>> {
    Box::pin(async move {
        let in_userset = async |userset: &str| -> crate::error::Result<Option<bool>> {
            let Some((object, relation)) = userset.split_once('#') else {
                return Ok(Some(false));
            };
            exact_check(q, object, relation, user).await
        };
        // Any of `answers` true; unknown if one is unknown and none is true.
        let mut unknown = false;
        if let Some(leaf) = node.get("leaf") {
            let mut sets: Vec<&str> = Vec::new();
            if let Some(users) = leaf["users"]["users"].as_array() {
                let wildcard = format!("{}:*", user.split(':').next().unwrap_or(""));
                for u in users.iter().filter_map(|u| u.as_str()) {
                    if u == user || u == wildcard {
                        return Ok(Some(true));
                    }
                    if u.contains('#') {
                        sets.push(u);
                    }
                }
            } else if let Some(c) = leaf["computed"]["userset"].as_str() {
                sets.push(c);
            } else if let Some(list) = leaf["tupleToUserset"]["computed"].as_array() {
                sets.extend(list.iter().filter_map(|c| c["userset"].as_str()));
            } else {
                panic!("unknown expand leaf {leaf}");
            }
            for set in sets {
                match in_userset(set).await? {
                    Some(true) => return Ok(Some(true)),
                    Some(false) => {}
                    None => unknown = true,
                }
            }
            return Ok((!unknown).then_some(false));
        }
        if let Some(nodes) = node["union"]["nodes"].as_array() {
            for n in nodes {
                match in_tree(q, n, user).await? {
                    Some(true) => return Ok(Some(true)),
                    Some(false) => {}
                    None => unknown = true,
                }
            }
            return Ok((!unknown).then_some(false));
        }
        if let Some(nodes) = node["intersection"]["nodes"].as_array() {
            for n in nodes {
                match in_tree(q, n, user).await? {
                    Some(false) => return Ok(Some(false)),
                    Some(true) => {}
                    None => unknown = true,
                }
            }
            return Ok((!unknown).then_some(true));
        }
        if let Some(d) = node.get("difference") {
            let base = in_tree(q, &d["base"], user).await?;
            if base == Some(false) {
                return Ok(Some(false));
            }
            let subtract = in_tree(q, &d["subtract"], user).await?;
            return Ok(match (base, subtract) {
                (_, Some(true)) => Some(false),
                (Some(true), Some(false)) => Some(true),
                _ => None,
            });
        }
        panic!("unknown expand node {node}");
    })
}

/// Through the engine over `ds`, on the same kind of random models and tuples: a batch check
/// answers each item as check does, and a decision's `context.relations` (what Cedar policies
/// read) and `rebac` hold exactly what check allows, with the cache on and off. Returns how
/// many answers agreed.
pub async fn engine_differential(ds: std::sync::Arc<dyn Datastore>, rounds: u64) -> usize {
    use crate::service::{
        BatchItem, Consistency, DecisionRequest, Engine, EngineConfig, QueryOptions,
    };
    let mut agreed = 0;
    for cache_enabled in [true, false] {
        let engine = Engine::new(
            ds.clone(),
            EngineConfig {
                cache_enabled,
                ..EngineConfig::default()
            },
        );
        for seed in 0..rounds {
            let Some((dsl, model, tuples)) = random_case(seed.wrapping_mul(104_729) + 3) else {
                continue;
            };
            let store = engine.create_store("differential").await.unwrap().id;
            engine
                .write_model(&store, model.model.clone())
                .await
                .unwrap();
            engine
                .write(&store, None, &tuples, &[], WriteOptions::default())
                .await
                .unwrap();
            let opts = QueryOptions {
                consistency: Consistency::HigherConsistency,
                ..QueryOptions::default()
            };
            let mut items = Vec::new();
            for r in 0..RELATIONS {
                for user in USERS {
                    for doc in DOCS {
                        items.push(BatchItem {
                            correlation_id: format!("{}", items.len()),
                            tuple: TupleKey::new(user, format!("r{r}"), doc),
                            contextual_tuples: vec![],
                            context: None,
                        });
                    }
                }
            }
            let (batch, _) = engine.batch_check(&store, &items, &opts).await.unwrap();
            for (item, (id, answer)) in items.iter().zip(&batch) {
                assert_eq!(*id, item.correlation_id);
                let t = &item.tuple;
                let checked = engine.check(&store, t, &opts).await.map(|c| c.0);
                let (Ok(checked), Ok(batched)) = (&checked, answer) else {
                    assert_eq!(checked.is_ok(), answer.is_ok(), "seed {seed}: {t}");
                    continue;
                };
                let context = || format!("seed {seed}: {t}\nmodel:\n{dsl}\ntuples: {tuples:?}");
                assert_eq!(checked, batched, "batch check disagrees, {}", context());
                let d = engine
                    .decide(
                        &store,
                        &DecisionRequest {
                            subject: t.user.clone(),
                            action: t.relation.clone(),
                            resource: t.object.clone(),
                            consistency: Consistency::MinimizeLatency,
                            ..DecisionRequest::default()
                        },
                    )
                    .await
                    .unwrap_or_else(|e| panic!("decide failed: {e}, {}", context()));
                assert_eq!(
                    d.relations.contains(&t.relation),
                    *checked,
                    "context.relations disagrees with check, {}",
                    context()
                );
                assert_eq!(d.rebac, *checked, "rebac disagrees, {}", context());
                agreed += 1;
            }
        }
    }
    agreed
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::store::memory::MemoryStore;

    #[tokio::test]
    async fn batch_check_and_cedar_relations_agree_with_check() {
        let agreed = super::engine_differential(Arc::new(MemoryStore::new()), 80).await;
        assert!(agreed > 1000, "only {agreed} compared");
    }
}
