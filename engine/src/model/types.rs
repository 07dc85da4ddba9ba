//! The authorization model in OpenFGA's JSON form (schema 1.1), which is also Gatehouse's wire form.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A whole authorization model: types, their relations, and named conditions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct AuthorizationModel {
    /// ULID of the model once written to a store; empty for a model that was only parsed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    pub schema_version: String,
    #[serde(default)]
    pub type_definitions: Vec<TypeDefinition>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub conditions: BTreeMap<String, ConditionDef>,
}

/// One object type and its relations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct TypeDefinition {
    #[serde(rename = "type")]
    pub type_name: String,
    #[serde(default)]
    pub relations: BTreeMap<String, Userset>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<TypeMetadata>,
}

/// Per-type metadata: the direct type restrictions of each relation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct TypeMetadata {
    #[serde(default)]
    pub relations: BTreeMap<String, RelationMetadata>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_info: Option<SourceInfo>,
}

/// Where a type or relation was defined (modular models).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct SourceInfo {
    #[serde(default)]
    pub file: String,
}

/// Direct type restrictions of one relation, e.g. `[user, group#member, user:*, user with cond]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct RelationMetadata {
    #[serde(default)]
    pub directly_related_user_types: Vec<RelationReference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_info: Option<SourceInfo>,
}

/// One allowed kind of user in a direct relation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub struct RelationReference {
    #[serde(rename = "type")]
    pub type_name: String,
    /// `group#member`: a userset of this type and relation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relation: Option<String>,
    /// `user:*`: the public wildcard of this type. Serialized as `{}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wildcard: Option<Wildcard>,
    /// `user with cond`: tuples of this kind must carry this condition.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub condition: String,
}

/// Marker for a wildcard restriction, `{}` on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub struct Wildcard {}

/// A relation's rewrite rule, as OpenFGA spells it in JSON (one key set).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Userset {
    /// Direct relationships (`[user, …]`), written as `{"this": {}}`.
    This(Empty),
    /// Another relation of the same object: `define viewer: editor`.
    ComputedUserset(ObjectRelation),
    /// `define viewer: viewer from parent`.
    TupleToUserset(TupleToUserset),
    Union(Usersets),
    Intersection(Usersets),
    /// `base but not subtract`.
    Difference(Difference),
}

/// The empty object `{}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Empty {}

/// `{"object": "", "relation": "editor"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ObjectRelation {
    #[serde(default)]
    pub object: String,
    #[serde(default)]
    pub relation: String,
}

/// `computed_userset from tupleset`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TupleToUserset {
    pub tupleset: ObjectRelation,
    pub computed_userset: ObjectRelation,
}

/// Children of a union or intersection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Usersets {
    #[serde(default)]
    pub child: Vec<Userset>,
}

/// `base but not subtract`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Difference {
    pub base: Box<Userset>,
    pub subtract: Box<Userset>,
}

/// A named condition: typed parameters and a CEL expression.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ConditionDef {
    pub name: String,
    pub expression: String,
    #[serde(default)]
    pub parameters: BTreeMap<String, ConditionParamType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Value>,
}

/// A parameter type, e.g. `{"type_name": "TYPE_NAME_LIST", "generic_types": [{"type_name": "TYPE_NAME_STRING"}]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConditionParamType {
    pub type_name: TypeName,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub generic_types: Vec<ConditionParamType>,
}

/// OpenFGA's condition parameter types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[expect(non_camel_case_types, reason = "wire names of OpenFGA's enum")]
pub enum TypeName {
    TYPE_NAME_UNSPECIFIED,
    TYPE_NAME_ANY,
    TYPE_NAME_BOOL,
    TYPE_NAME_STRING,
    TYPE_NAME_INT,
    TYPE_NAME_UINT,
    TYPE_NAME_DOUBLE,
    TYPE_NAME_DURATION,
    TYPE_NAME_TIMESTAMP,
    TYPE_NAME_MAP,
    TYPE_NAME_LIST,
    TYPE_NAME_IPADDRESS,
}

impl AuthorizationModel {
    /// The definition of `type_name`, if the model has it.
    pub fn type_def(&self, type_name: &str) -> Option<&TypeDefinition> {
        self.type_definitions
            .iter()
            .find(|t| t.type_name == type_name)
    }

    /// The rewrite of `type_name#relation`, if defined.
    pub fn relation(&self, type_name: &str, relation: &str) -> Option<&Userset> {
        self.type_def(type_name)?.relations.get(relation)
    }

    /// The direct type restrictions of `type_name#relation` (empty if it has none).
    pub fn directly_related(&self, type_name: &str, relation: &str) -> &[RelationReference] {
        self.type_def(type_name)
            .and_then(|t| t.metadata.as_ref())
            .and_then(|m| m.relations.get(relation))
            .map(|r| r.directly_related_user_types.as_slice())
            .unwrap_or(&[])
    }
}
