//! The engine's one error type.

/// A problem found in a model, with its position in the DSL source when known.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ModelIssue {
    pub message: String,
    /// 1-based line, 0 when the model did not come from DSL text.
    pub line: usize,
    /// 1-based column, 0 when unknown.
    pub column: usize,
}

impl std::fmt::Display for ModelIssue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.line > 0 {
            write!(f, "{}:{}: {}", self.line, self.column, self.message)
        } else {
            f.write_str(&self.message)
        }
    }
}

/// Everything that can go wrong in the engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid authorization model: {}", join_issues(.0))]
    InvalidModel(Vec<ModelIssue>),
    #[error("store `{0}` not found")]
    StoreNotFound(String),
    #[error("authorization model `{0}` not found")]
    ModelNotFound(String),
    #[error("no authorization model has been written to the store")]
    LatestModelNotFound,
    #[error("type `{0}` not found in the authorization model")]
    TypeNotFound(String),
    #[error("relation `{relation}` not found on type `{type_name}`")]
    RelationNotFound { type_name: String, relation: String },
    #[error("invalid tuple ({tuple}): {reason}")]
    InvalidTuple { tuple: String, reason: String },
    #[error("cannot write a tuple which already exists ({0})")]
    DuplicateWrite(String),
    #[error("cannot delete a tuple which does not exist ({0})")]
    MissingDelete(String),
    #[error("condition `{name}`: {reason}")]
    Condition { name: String, reason: String },
    #[error("resolution depth exceeded {0}: the query is too complex for the model")]
    DepthExceeded(u32),
    #[error("invalid continuation token")]
    InvalidContinuationToken,
    #[error("invalid consistency token")]
    InvalidConsistencyToken,
    #[error("{0}")]
    Validation(String),
    #[error("invalid policies: {}", join_policy_issues(.0))]
    InvalidPolicies(Vec<crate::policy::PolicyIssue>),
    #[error("invalid Cedar schema: {0}")]
    InvalidPolicySchema(String),
    #[error("policy version `{0}` not found")]
    PolicyVersionNotFound(String),
    #[error("entity `{0}` has no stored attributes")]
    EntityNotFound(String),
    #[error("storage failure: {0}")]
    Storage(String),
    #[error("storage unavailable: {0}")]
    Unavailable(String),
}

fn join_policy_issues(issues: &[crate::policy::PolicyIssue]) -> String {
    issues
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

fn join_issues(issues: &[ModelIssue]) -> String {
    issues
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Result with the engine's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
