//! Storage traits owned by the engine, with an in-memory implementation and one conformance suite.
//!
//! Every tuple records the revision that created it and the one that deleted it, so readers
//! evaluate exactly at one snapshot (`rev`): a tuple is visible when
//! `created_rev <= rev && (deleted_rev is none || deleted_rev > rev)`, and, when it carries an
//! expiry, only while that is ahead of the wall clock: from its expiry on it counts at no
//! revision, and [`Datastore::remove_expired_tuples`] may drop it for good.

#[cfg(any(test, feature = "test-util"))]
pub mod conformance;
#[cfg(any(test, feature = "test-util"))]
mod differential;
pub mod memory;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::model::AuthorizationModel;
use crate::tuple::{Tuple, TupleKey};

/// A store's write revision. Revision 0 is the empty store before any write.
pub type Revision = u64;

/// A tenant's authorization store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoreInfo {
    pub id: String,
    pub name: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

/// A page request: at most `size` items after the opaque `token` a previous page returned.
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub size: usize,
    pub token: Option<String>,
}

/// One page of results and the token for the next page, if any remain.
#[derive(Debug, Clone)]
pub struct Paged<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

/// Which tuples to read. Empty fields match anything; `users` matches any of its entries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct TupleFilter {
    pub object_type: Option<String>,
    pub object_id: Option<String>,
    pub relation: Option<String>,
    pub users: Vec<String>,
}

impl TupleFilter {
    /// Whether a tuple passes the filter.
    pub fn matches(&self, t: &TupleKey) -> bool {
        let (otype, oid) = t.object.split_once(':').unwrap_or((&t.object, ""));
        self.object_type.as_deref().is_none_or(|x| x == otype)
            && self.object_id.as_deref().is_none_or(|x| x == oid)
            && self.relation.as_deref().is_none_or(|x| x == t.relation)
            && (self.users.is_empty() || self.users.contains(&t.user))
    }
}

/// How a write treats duplicates and missing deletes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteOptions {
    /// Writing a tuple that already exists (same user, relation, object) is a no-op instead of an error.
    pub ignore_duplicates: bool,
    /// Deleting a tuple that does not exist is a no-op instead of an error.
    pub ignore_missing: bool,
}

/// What happened to a tuple at a revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Operation {
    #[serde(rename = "TUPLE_OPERATION_WRITE")]
    Write,
    #[serde(rename = "TUPLE_OPERATION_DELETE")]
    Delete,
}

/// One entry of the changelog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TupleChange {
    pub tuple_key: TupleKey,
    pub operation: Operation,
    pub timestamp: chrono::DateTime<chrono::Utc>,
    pub revision: Revision,
}

/// Which changes [`Datastore::read_changes`] returns.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChangeFilter {
    /// Only changes to objects of this type.
    pub object_type: Option<String>,
    /// Only changes made at or after this time. A continuation token already names a position
    /// in the changelog, so with one this is ignored.
    pub start_time: Option<chrono::DateTime<chrono::Utc>>,
}

impl ChangeFilter {
    /// Changes to objects of one type.
    pub fn of_type(object_type: &str) -> Self {
        Self {
            object_type: Some(object_type.to_string()),
            start_time: None,
        }
    }
}

/// An immutable version of a store's Cedar policies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyVersion {
    /// ULID: versions sort by creation.
    pub id: String,
    /// The Cedar policy text.
    pub policies: String,
    /// The Cedar schema (JSON) the tenant supplied; `None` = generated from the latest model.
    pub schema: Option<serde_json::Value>,
    /// Policies linked from templates of `policies`.
    #[serde(default)]
    pub links: Vec<TemplateLink>,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// A subject's stored risk history and its version, which every save increments.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRisk {
    pub profile: serde_json::Value,
    pub version: i64,
}

/// One recorded decision (the decision log): what was asked, what was decided and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoggedDecision {
    /// ULID: entries sort by time.
    pub id: String,
    pub store_id: String,
    pub decided_at: chrono::DateTime<chrono::Utc>,
    pub subject: String,
    pub action: String,
    pub resource: String,
    /// The caller's context, as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<serde_json::Map<String, serde_json::Value>>,
    pub allowed: bool,
    /// Ids of the policies that determined the decision.
    pub policies: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    pub rebac: bool,
    /// The risk the decision was made with.
    pub risk: crate::risk::Assessment,
    pub revision: Revision,
    pub policy_version: String,
    /// Whether only the action's relation was checked (AuthZEN), for replays.
    #[serde(default)]
    pub lean: bool,
    /// Whether keys the schema does not declare were left out rather than refused (AuthZEN),
    /// for replays.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ignore_undeclared: bool,
    /// Whether the request sent entity attributes (AuthZEN `properties`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub attributes_sent: bool,
    /// The attributes it sent, by entity, as a replay needs them (empty in entries logged
    /// before they were kept).
    #[serde(default, skip_serializing_if = "std::collections::HashMap::is_empty")]
    pub attributes: std::collections::HashMap<String, serde_json::Map<String, serde_json::Value>>,
    /// Context attributes whose values the store's log settings redact (not replayable).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub redacted: Vec<String>,
    pub latency_us: u64,
    /// When retention removes the entry.
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

/// Which logged decisions to read; empty fields match anything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DecisionFilter {
    pub subject: Option<String>,
    pub action: Option<String>,
    pub resource: Option<String>,
    pub allowed: Option<bool>,
    pub policy_version: Option<String>,
    /// Decided at or after.
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// Decided before.
    pub until: Option<chrono::DateTime<chrono::Utc>>,
}

impl DecisionFilter {
    pub fn matches(&self, d: &LoggedDecision) -> bool {
        self.subject.as_ref().is_none_or(|x| *x == d.subject)
            && self.action.as_ref().is_none_or(|x| *x == d.action)
            && self.resource.as_ref().is_none_or(|x| *x == d.resource)
            && self.allowed.is_none_or(|x| x == d.allowed)
            && self
                .policy_version
                .as_ref()
                .is_none_or(|x| *x == d.policy_version)
            && self.since.is_none_or(|x| d.decided_at >= x)
            && self.until.is_none_or(|x| d.decided_at < x)
    }
}

/// Attributes stored for one entity (`type:id`), as JSON validated against the store's schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntityAttributes {
    pub entity: String,
    pub attributes: serde_json::Map<String, serde_json::Value>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

/// A policy made from a template by filling its slots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateLink {
    /// The id of the linked policy.
    pub id: String,
    /// The template's id (its `@id`, or `policyN` by position).
    pub template: String,
    /// `type:id` for `?principal`, if the template has that slot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    /// `type:id` for `?resource`, if the template has that slot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
}

/// Assertions attached to a model (stored as the JSON the API received).
pub type Assertions = serde_json::Value;

/// Everything the engine needs from a storage backend.
#[async_trait]
pub trait Datastore: Send + Sync + 'static {
    /// Creates a store; ids are unique.
    async fn create_store(&self, store: &StoreInfo) -> Result<()>;
    /// A store that exists and is not deleted.
    async fn get_store(&self, id: &str) -> Result<Option<StoreInfo>>;
    /// Stores ordered by id, optionally only those with exactly this name.
    async fn list_stores(&self, name: Option<&str>, page: &Page) -> Result<Paged<StoreInfo>>;
    /// Marks a store deleted; returns false if it did not exist.
    async fn delete_store(&self, id: &str) -> Result<bool>;

    /// Saves an immutable model version; `model.id` is a ULID, so ids sort by creation.
    async fn write_model(&self, store: &str, model: &AuthorizationModel) -> Result<()>;
    async fn read_model(&self, store: &str, id: &str) -> Result<Option<AuthorizationModel>>;
    /// The most recently written model.
    async fn latest_model(&self, store: &str) -> Result<Option<AuthorizationModel>>;
    /// Models newest first.
    async fn list_models(&self, store: &str, page: &Page) -> Result<Paged<AuthorizationModel>>;

    /// Applies deletes then writes in one transaction at a new revision, all or nothing. A
    /// tuple whose expiry has passed does not exist here either: writing it again is no
    /// duplicate, and deleting it is a missing delete.
    async fn write_tuples(
        &self,
        store: &str,
        deletes: &[TupleKey],
        writes: &[TupleKey],
        opts: WriteOptions,
    ) -> Result<Revision>;
    /// The newest revision of a store (0 before any write).
    async fn head_revision(&self, store: &str) -> Result<Revision>;
    /// Tuples visible at `rev` matching `filter`, in a stable order, one page at a time,
    /// leaving out those whose expiry has passed. A page size of 0 reads everything.
    async fn read_tuples(
        &self,
        store: &str,
        filter: &TupleFilter,
        rev: Revision,
        page: &Page,
    ) -> Result<Paged<Tuple>>;
    /// Changes in revision order after the opaque token (or, without one, from the filter's
    /// start time), optionally for one object type. The returned token always names where
    /// reading stopped, so that polling with it resumes there.
    async fn read_changes(
        &self,
        store: &str,
        filter: &ChangeFilter,
        page: &Page,
    ) -> Result<Paged<TupleChange>>;

    async fn write_assertions(
        &self,
        store: &str,
        model_id: &str,
        assertions: &Assertions,
    ) -> Result<()>;
    async fn read_assertions(&self, store: &str, model_id: &str) -> Result<Assertions>;

    /// Saves an immutable policy version; with `activate`, it becomes the store's active one
    /// in the same transaction.
    async fn write_policy_version(
        &self,
        store: &str,
        version: &PolicyVersion,
        activate: bool,
    ) -> Result<()>;
    async fn read_policy_version(&self, store: &str, id: &str) -> Result<Option<PolicyVersion>>;
    /// Policy versions newest first.
    async fn list_policy_versions(&self, store: &str, page: &Page) -> Result<Paged<PolicyVersion>>;
    /// Makes an existing version the active one (a rollback or a pin); false if there is no
    /// such version.
    async fn activate_policy_version(&self, store: &str, id: &str) -> Result<bool>;
    /// The active version, if the store has one.
    async fn active_policy_version(&self, store: &str) -> Result<Option<PolicyVersion>>;

    /// A store's settings of one kind (`risk`, `decision_log`), as JSON.
    async fn read_setting(&self, store: &str, kind: &str) -> Result<Option<serde_json::Value>>;
    async fn write_setting(&self, store: &str, kind: &str, value: &serde_json::Value)
    -> Result<()>;

    /// A subject's risk history (JSON) and its version, if any.
    async fn read_risk_profile(&self, store: &str, subject: &str) -> Result<Option<StoredRisk>>;
    /// Saves a subject's risk history if the stored one is still at version `expected` (`None`:
    /// none is stored), as a compare-and-swap between nodes; false, and nothing written, when
    /// another writer got there first. Retention removes it after `expires_at`.
    async fn write_risk_profile(
        &self,
        store: &str,
        subject: &str,
        profile: &serde_json::Value,
        expires_at: chrono::DateTime<chrono::Utc>,
        expected: Option<i64>,
    ) -> Result<bool>;
    /// Forgets a subject's risk history; false if there was none.
    async fn delete_risk_profile(&self, store: &str, subject: &str) -> Result<bool>;

    /// Appends entries to the decision log (of any stores; entries of deleted stores are
    /// dropped).
    async fn append_decisions(&self, entries: &[LoggedDecision]) -> Result<()>;
    /// Logged decisions newest first.
    async fn read_decisions(
        &self,
        store: &str,
        filter: &DecisionFilter,
        page: &Page,
    ) -> Result<Paged<LoggedDecision>>;
    /// Removes decisions and risk histories whose retention ended before `now`; returns how
    /// many rows went.
    async fn prune_expired(&self, now: chrono::DateTime<chrono::Utc>) -> Result<u64>;
    /// Removes up to `limit` tuples (of any store) whose expiry is at or before `now`; returns
    /// how many went. No query sees them any more, so this changes no answer and writes no
    /// revision.
    async fn remove_expired_tuples(
        &self,
        now: chrono::DateTime<chrono::Utc>,
        limit: usize,
    ) -> Result<u64>;

    /// Sets (or with `None` removes) the attributes of an entity; returns whether it had any.
    async fn write_entity_attributes(
        &self,
        store: &str,
        entity: &str,
        attributes: Option<&EntityAttributes>,
    ) -> Result<bool>;
    /// The stored attributes of those of `entities` (`type:id`) that have any.
    async fn read_entity_attributes(
        &self,
        store: &str,
        entities: &[String],
    ) -> Result<Vec<EntityAttributes>>;
    /// Stored attributes ordered by entity, optionally of one type.
    async fn list_entity_attributes(
        &self,
        store: &str,
        entity_type: Option<&str>,
        page: &Page,
    ) -> Result<Paged<EntityAttributes>>;
}
