//! Entity attributes: JSON stored per entity, validated against the store's Cedar schema and
//! hydrated with the entity for Cedar (`principal.department`, `resource.classification`).

use super::{Engine, StoreEvent};
use crate::error::{Error, Result};
use crate::policy;
use crate::store::{EntityAttributes, Page, Paged};
use crate::tuple::ObjectRef;

/// Most bytes of one entity's attributes (as JSON).
pub const MAX_ATTRIBUTE_BYTES: usize = 64 * 1024;

impl Engine {
    /// Sets the attributes of `entity` (`type:id`) after validating them against the schema of
    /// the store's active policies; nothing is saved when they do not validate.
    pub async fn set_entity_attributes(
        &self,
        store: &str,
        entity: &str,
        attributes: serde_json::Map<String, serde_json::Value>,
    ) -> Result<EntityAttributes> {
        let uid = policy::entity_uid(entity).map_err(Error::Validation)?;
        ObjectRef::parse(entity).ok_or_else(|| {
            Error::Validation(format!("invalid entity `{entity}`: expected `type:id`"))
        })?;
        let size = serde_json::to_vec(&attributes).map_or(usize::MAX, |v| v.len());
        if size > MAX_ATTRIBUTE_BYTES {
            return Err(Error::Validation(format!(
                "the attributes are {size} bytes; at most {MAX_ATTRIBUTE_BYTES} are accepted"
            )));
        }
        let active = self.active_policies(store).await?;
        policy::parse_attributes(&uid, &attributes, &active.compiled.schema).map_err(|e| {
            Error::Validation(format!(
                "attributes of `{entity}` do not match the schema: {e}"
            ))
        })?;
        let a = EntityAttributes {
            entity: entity.to_string(),
            attributes,
            updated_at: chrono::Utc::now(),
        };
        self.ds
            .write_entity_attributes(store, entity, Some(&a))
            .await?;
        self.attributes_changed(store);
        Ok(a)
    }

    pub async fn entity_attributes(&self, store: &str, entity: &str) -> Result<EntityAttributes> {
        self.get_store_fresh(store, false).await?;
        self.ds
            .read_entity_attributes(store, &[entity.to_string()])
            .await?
            .pop()
            .ok_or_else(|| Error::EntityNotFound(entity.to_string()))
    }

    pub async fn delete_entity_attributes(&self, store: &str, entity: &str) -> Result<()> {
        self.get_store_fresh(store, false).await?;
        if !self.ds.write_entity_attributes(store, entity, None).await? {
            return Err(Error::EntityNotFound(entity.to_string()));
        }
        self.attributes_changed(store);
        Ok(())
    }

    pub async fn list_entity_attributes(
        &self,
        store: &str,
        entity_type: Option<&str>,
        page: &Page,
    ) -> Result<Paged<EntityAttributes>> {
        self.get_store_fresh(store, false).await?;
        self.ds
            .list_entity_attributes(store, entity_type, page)
            .await
    }

    /// Hydrated entity sets hold attributes: a change makes every node build them again.
    fn attributes_changed(&self, store: &str) {
        self.attributes_epochs.bump(store);
        self.notify(store, StoreEvent::AttributesChanged);
    }
}
