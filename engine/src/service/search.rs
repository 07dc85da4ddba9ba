//! What AuthZEN's search endpoints search among: every entity of a type that a store knows
//! at a revision, from its tuples (as users or objects) and its stored attributes.

use std::collections::BTreeSet;

use super::Engine;
use crate::error::{Error, Result};
use crate::store::{Page, Revision, TupleFilter};
use crate::tuple::{ObjectRef, UserRef};

/// Most tuples one search reads to find its candidates; a larger store is refused (400), as
/// a search could not be complete within a request's cost.
pub const MAX_SEARCH_TUPLES: usize = 100_000;
/// Most candidates one search decides.
pub const MAX_SEARCH_CANDIDATES: usize = 10_000;

impl Engine {
    /// Every entity (`type:id`) of `entity_type` in the store's tuples at `rev` — as a user,
    /// as a userset's object, or as an object — or with stored attributes. Wildcards are not
    /// entities.
    pub async fn known_entities(
        &self,
        store: &str,
        entity_type: &str,
        rev: Revision,
    ) -> Result<BTreeSet<String>> {
        self.get_store_fresh(store, false).await?;
        let too_many = || {
            Error::Validation(format!(
                "the store holds more than {MAX_SEARCH_TUPLES} relationships or \
                 {MAX_SEARCH_CANDIDATES} `{entity_type}` entities: too many to search completely"
            ))
        };
        let mut out = BTreeSet::new();
        let keep = |e: &ObjectRef<'_>, out: &mut BTreeSet<String>| {
            if e.object_type == entity_type && e.object_id != "*" {
                out.insert(format!("{}:{}", e.object_type, e.object_id));
            }
        };
        let mut page = Page {
            size: 1000,
            token: None,
        };
        let mut read = 0usize;
        loop {
            let p = self
                .ds
                .read_tuples(store, &TupleFilter::default(), rev, &page)
                .await?;
            read += p.items.len();
            if read > MAX_SEARCH_TUPLES {
                return Err(too_many());
            }
            for t in &p.items {
                if let Some(o) = ObjectRef::parse(&t.key.object) {
                    keep(&o, &mut out);
                }
                match UserRef::parse(&t.key.user) {
                    Some(UserRef::Object(u)) | Some(UserRef::Userset(u, _)) => keep(&u, &mut out),
                    _ => {}
                }
            }
            match p.next {
                Some(next) if !p.items.is_empty() => page.token = Some(next),
                _ => break,
            }
        }
        let mut page = Page {
            size: 1000,
            token: None,
        };
        loop {
            let p = self
                .ds
                .list_entity_attributes(store, Some(entity_type), &page)
                .await?;
            out.extend(p.items.iter().map(|a| a.entity.clone()));
            if out.len() > MAX_SEARCH_CANDIDATES {
                return Err(too_many());
            }
            match p.next {
                Some(next) if !p.items.is_empty() => page.token = Some(next),
                _ => break,
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use std::sync::Arc;

    use super::*;
    use crate::service::EngineConfig;
    use crate::store::WriteOptions;
    use crate::store::memory::MemoryStore;
    use crate::tuple::TupleKey;

    /// Candidates come from tuples (users, usersets' objects, objects) and attributes, never a
    /// wildcard; a store past the bound is refused, not searched in part.
    #[tokio::test]
    async fn candidates_are_complete_and_bounded() {
        let engine = Engine::new(Arc::new(MemoryStore::new()), EngineConfig::default());
        let store = engine.create_store("s").await.unwrap().id;
        let keys = [
            TupleKey::new("user:a", "viewer", "doc:1"),
            TupleKey::new("user:*", "viewer", "doc:2"),
            TupleKey::new("group:g#member", "viewer", "doc:1"),
            TupleKey::new("user:b", "member", "group:g"),
        ];
        let rev = engine
            .ds
            .write_tuples(&store, &[], &keys, WriteOptions::default())
            .await
            .unwrap();
        let attrs = crate::store::EntityAttributes {
            entity: "user:c".into(),
            attributes: serde_json::Map::new(),
            updated_at: chrono::Utc::now(),
        };
        engine
            .ds
            .write_entity_attributes(&store, "user:c", Some(&attrs))
            .await
            .unwrap();
        let users: Vec<String> = engine
            .known_entities(&store, "user", rev)
            .await
            .unwrap()
            .into_iter()
            .collect();
        assert_eq!(users, ["user:a", "user:b", "user:c"]);
        let groups = engine.known_entities(&store, "group", rev).await.unwrap();
        assert_eq!(groups.into_iter().collect::<Vec<_>>(), ["group:g"]);

        let big = engine.create_store("big").await.unwrap().id;
        let many: Vec<TupleKey> = (0..=MAX_SEARCH_TUPLES)
            .map(|i| TupleKey::new(format!("user:u{i}"), "viewer", "doc:1"))
            .collect();
        let rev = engine
            .ds
            .write_tuples(&big, &[], &many, WriteOptions::default())
            .await
            .unwrap();
        let err = engine.known_entities(&big, "doc", rev).await.unwrap_err();
        assert!(
            matches!(&err, Error::Validation(m) if m.contains("too many to search")),
            "{err}"
        );
    }
}
