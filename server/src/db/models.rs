//! Rows of the tables in [`super::schema`], as diesel reads and writes them.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::schema::{
    assertions, authorization_models, changelog, decision_block_keys, decision_blocks,
    entity_attributes, organizations, policy_heads, policy_versions, risk_profiles, services,
    signing_keys, store_revisions, store_settings, stores, tuples,
};

/// A row of `stores`.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = stores)]
pub(crate) struct StoreRow {
    pub id: String,
    pub name: String,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    pub deleted_at: Option<NaiveDateTime>,
}

/// A row of `store_revisions`.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = store_revisions)]
pub(crate) struct HeadRow {
    pub store_id: String,
    pub head: i64,
}

/// A row of `authorization_models`.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = authorization_models)]
pub(crate) struct ModelRow {
    pub store_id: String,
    pub id: String,
    pub schema_version: String,
    pub model_json: String,
    pub created_at: NaiveDateTime,
}

/// The columns of `tuples` that make up a stored tuple.
#[derive(Debug, Clone, Queryable, QueryableByName, Selectable)]
#[diesel(table_name = tuples)]
pub(crate) struct TupleRow {
    pub id: i64,
    pub object_type: String,
    pub object_id: String,
    pub relation: String,
    pub user_value: String,
    pub condition_name: Option<String>,
    pub condition_context: Option<String>,
    pub created_at: NaiveDateTime,
    pub expires_at: Option<NaiveDateTime>,
}

/// A new tuple version.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = tuples, treat_none_as_null = true)]
pub(crate) struct NewTuple {
    pub store_id: String,
    pub object_type: String,
    pub object_id: String,
    pub relation: String,
    pub user_value: String,
    pub user_type: String,
    pub condition_name: Option<String>,
    pub condition_context: Option<String>,
    pub created_rev: i64,
    pub deleted_rev: Option<i64>,
    pub created_at: NaiveDateTime,
    pub expires_at: Option<NaiveDateTime>,
}

/// A row of `changelog`.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = changelog, treat_none_as_null = true)]
pub(crate) struct ChangeRow {
    pub store_id: String,
    pub revision: i64,
    pub seq: i32,
    pub operation: String,
    pub object_type: String,
    pub object_id: String,
    pub relation: String,
    pub user_value: String,
    pub condition_name: Option<String>,
    pub condition_context: Option<String>,
    pub created_at: NaiveDateTime,
    pub expires_at: Option<NaiveDateTime>,
}

/// A row of `assertions`.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = assertions)]
pub(crate) struct AssertionRow {
    pub store_id: String,
    pub model_id: String,
    pub assertions_json: String,
}

/// A row of `policy_versions`.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = policy_versions)]
pub(crate) struct PolicyRow {
    pub store_id: String,
    pub id: String,
    pub policies: String,
    pub schema_json: Option<String>,
    pub links_json: String,
    pub created_at: NaiveDateTime,
}

/// A row of `policy_heads`.
#[derive(Debug, Clone, Insertable, AsChangeset)]
#[diesel(table_name = policy_heads)]
pub(crate) struct PolicyHeadRow {
    pub store_id: String,
    pub active_id: String,
}

/// A row of `store_settings`.
#[derive(Debug, Clone, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = store_settings)]
pub(crate) struct SettingRow {
    pub store_id: String,
    pub kind: String,
    pub settings_json: String,
}

/// A row of `risk_profiles`.
#[derive(Debug, Clone, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = risk_profiles)]
pub(crate) struct RiskProfileRow {
    pub store_id: String,
    pub subject: String,
    pub profile_json: String,
    pub expires_at: NaiveDateTime,
    /// Incremented by every save (compare-and-swap between nodes).
    pub version: i64,
}

/// A row of `decision_blocks`: entries of the decision log.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = decision_blocks)]
pub(crate) struct DecisionBlockRow {
    pub store_id: String,
    pub first_id: String,
    pub last_id: String,
    pub entries_json: String,
    pub keys_json: String,
    pub expires_at: NaiveDateTime,
}

/// A row of `decision_block_keys`.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = decision_block_keys)]
pub(crate) struct DecisionKeyRow {
    pub store_id: String,
    pub key: String,
    pub first_id: String,
}

/// A row of `entity_attributes`.
#[derive(Debug, Clone, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = entity_attributes)]
pub(crate) struct AttributesRow {
    pub store_id: String,
    pub entity: String,
    pub entity_type: String,
    pub attributes_json: String,
    pub updated_at: NaiveDateTime,
}

/// A row of `signing_keys`.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = signing_keys)]
pub(crate) struct SigningKeyRow {
    pub kid: String,
    pub alg: String,
    pub generation: i64,
    /// Sealed under the master key (never the key itself).
    pub private_key: String,
    pub public_jwk: String,
    pub created_at: NaiveDateTime,
    pub signs_from: NaiveDateTime,
    pub signs_until: NaiveDateTime,
    pub published_until: NaiveDateTime,
}

/// A row of `organizations`.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = organizations)]
pub(crate) struct OrganizationRow {
    pub id: String,
    pub slug: String,
    pub name: String,
    pub tier: String,
    pub status: String,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    pub logo_url: Option<String>,
    pub primary_color: Option<String>,
}

/// A row of `services`.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = services)]
pub(crate) struct ServiceRow {
    pub id: String,
    pub organization_id: String,
    pub name: String,
    pub secret_sha256: Option<String>,
    pub redirect_uris: String,
    pub grant_types: String,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    pub deleted_at: Option<NaiveDateTime>,
    pub first_party: bool,
}
