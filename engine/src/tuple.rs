//! Relationship tuples: `user` has `relation` on `object`, optionally under a condition.

use serde::{Deserialize, Serialize};

/// A tuple as it travels on the wire: `{"user": "user:anne", "relation": "viewer", "object": "doc:1"}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub struct TupleKey {
    #[serde(default)]
    pub user: String,
    #[serde(default)]
    pub relation: String,
    #[serde(default)]
    pub object: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<RelationshipCondition>,
    /// When the relationship stops counting (RFC 3339; a Gatehouse extension of OpenFGA's
    /// write API). From this instant on no query sees it, at any revision; a background job
    /// removes it later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// The condition a tuple is written with, and the context values bound at write time.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub struct RelationshipCondition {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<ContextMap>,
}

/// A JSON object used as condition context; hashed through its canonical text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct ContextMap(pub serde_json::Map<String, serde_json::Value>);

impl std::hash::Hash for ContextMap {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        serde_json::Value::Object(self.0.clone())
            .to_string()
            .hash(state);
    }
}

/// A stored tuple with the time it was written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tuple {
    pub key: TupleKey,
    pub timestamp: chrono::DateTime<chrono::Utc>,
}

/// A parsed object reference `type:id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ObjectRef<'a> {
    pub object_type: &'a str,
    pub object_id: &'a str,
}

/// A parsed user reference: `type:id`, `type:*` or `type:id#relation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UserRef<'a> {
    Object(ObjectRef<'a>),
    Wildcard(&'a str),
    Userset(ObjectRef<'a>, &'a str),
}

impl<'a> ObjectRef<'a> {
    /// Splits `type:id`; both parts must be non-empty and free of `#` and spaces.
    pub fn parse(s: &'a str) -> Option<Self> {
        let (t, id) = s.split_once(':')?;
        if s.len() > MAX_OBJECT_LEN
            || !valid_part(t)
            || id.is_empty()
            || id.contains('#')
            || id.chars().any(invalid_char)
        {
            return None;
        }
        Some(Self {
            object_type: t,
            object_id: id,
        })
    }
}

impl<'a> UserRef<'a> {
    /// Parses `type:id`, `type:*` or `type:id#relation`.
    pub fn parse(s: &'a str) -> Option<Self> {
        if s.len() > MAX_USER_LEN {
            return None;
        }
        if let Some((obj, rel)) = s.split_once('#') {
            if !valid_part(rel) || rel.len() > MAX_RELATION_LEN {
                return None;
            }
            let o = ObjectRef::parse(obj)?;
            return Some(UserRef::Userset(o, rel));
        }
        let (t, id) = s.split_once(':')?;
        if id == "*" {
            return valid_part(t).then_some(UserRef::Wildcard(t));
        }
        ObjectRef::parse(s).map(UserRef::Object)
    }

    /// The type of the user (the object type for usersets and wildcards).
    pub fn user_type(&self) -> &'a str {
        match self {
            UserRef::Object(o) | UserRef::Userset(o, _) => o.object_type,
            UserRef::Wildcard(t) => t,
        }
    }
}

fn valid_part(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_OBJECT_LEN
        && !s.contains([':', '#', '*'])
        && !s.chars().any(invalid_char)
}

/// Whether `s` can be the type part of an object or user.
pub fn valid_type_name(s: &str) -> bool {
    valid_part(s)
}

/// Whitespace and control characters (NUL included) never appear in identifiers.
fn invalid_char(c: char) -> bool {
    c.is_whitespace() || c.is_control()
}

/// Longest object (`type:id`) accepted, as in OpenFGA.
pub const MAX_OBJECT_LEN: usize = 256;
/// Longest user accepted, as in OpenFGA.
pub const MAX_USER_LEN: usize = 512;
/// Longest relation name accepted, as in OpenFGA.
pub const MAX_RELATION_LEN: usize = 50;

/// The latest expiry a tuple may carry: the end of year 9999, which every backend stores.
pub fn max_expiry() -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(253_402_300_799, 0)
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC)
}

/// An expiry as every backend keeps it: whole microseconds.
pub fn stored_expiry(e: chrono::DateTime<chrono::Utc>) -> chrono::DateTime<chrono::Utc> {
    use chrono::SubsecRound as _;
    e.trunc_subsecs(6)
}

impl std::fmt::Display for TupleKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "user: `{}`, relation: `{}`, object: `{}`",
            self.user, self.relation, self.object
        )?;
        if let Some(c) = &self.condition {
            write!(f, ", condition: `{}`", c.name)?;
        }
        if let Some(e) = &self.expires_at {
            write!(
                f,
                ", expires_at: `{}`",
                e.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
            )?;
        }
        Ok(())
    }
}

impl TupleKey {
    /// Builds a tuple without a condition.
    pub fn new(
        user: impl Into<String>,
        relation: impl Into<String>,
        object: impl Into<String>,
    ) -> Self {
        Self {
            user: user.into(),
            relation: relation.into(),
            object: object.into(),
            condition: None,
            expires_at: None,
        }
    }

    /// Whether the tuple counts at `now`: it has no expiry or its expiry is still ahead.
    pub fn live_at(&self, now: chrono::DateTime<chrono::Utc>) -> bool {
        self.expires_at.is_none_or(|e| e > now)
    }

    /// The identity of the tuple, ignoring its condition: two tuples with the same identity
    /// cannot coexist.
    pub fn identity(&self) -> (&str, &str, &str) {
        (&self.object, &self.relation, &self.user)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_users() {
        assert!(matches!(
            UserRef::parse("user:anne"),
            Some(UserRef::Object(_))
        ));
        assert!(matches!(
            UserRef::parse("user:*"),
            Some(UserRef::Wildcard("user"))
        ));
        assert!(matches!(
            UserRef::parse("group:eng#member"),
            Some(UserRef::Userset(_, "member"))
        ));
        assert!(UserRef::parse("anne").is_none());
        assert!(UserRef::parse("user:").is_none());
        assert!(UserRef::parse(":anne").is_none());
        assert!(UserRef::parse("group:eng#").is_none());
        assert!(UserRef::parse("user:an ne").is_none());
        assert!(ObjectRef::parse("doc:*").is_some_and(|o| o.object_id == "*"));
        assert!(ObjectRef::parse("doc:a\0b").is_none());
        assert!(UserRef::parse("user:\u{1}x").is_none());
        assert!(ObjectRef::parse(&format!("doc:{}", "x".repeat(300))).is_none());
        assert!(UserRef::parse(&format!("user:{}", "x".repeat(600))).is_none());
    }
}
