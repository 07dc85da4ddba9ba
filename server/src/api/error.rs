//! The one HTTP error type: every failure becomes a JSON body that OpenFGA's SDKs understand
//! (`code`, `message` at the top) and that carries Gatehouse's `error` object and, added by the
//! request middleware, the `request_id` (also in the `X-Request-Id` header).

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use gatehouse_engine::Error;
use serde_json::json;

/// The JSON body of an error response, kept on the response so that the request middleware,
/// which knows the request id, can add it to the body.
#[derive(Debug, Clone)]
pub struct ErrorBody(pub serde_json::Value);

/// An error answered to a client.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Structured detail, e.g. every problem of a refused policy set with its position.
    pub details: Option<serde_json::Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: None,
        }
    }

    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "validation_error", message)
    }

    pub fn unauthenticated() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "a valid API key is required as `Authorization: Bearer <key>`",
        )
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut error = json!({ "code": self.code, "message": self.message });
        if let Some(d) = &self.details {
            error["details"] = d.clone();
        }
        let body = json!({
            "code": self.code,
            "message": self.message,
            "error": error,
        });
        let mut res = HttpResponse::build(self.status).json(&body);
        res.extensions_mut().insert(ErrorBody(body));
        res
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        use StatusCode as S;
        let (status, code) = match &e {
            Error::InvalidModel(_) => (S::BAD_REQUEST, "invalid_authorization_model"),
            Error::StoreNotFound(_) => (S::NOT_FOUND, "store_id_not_found"),
            Error::ModelNotFound(_) => (S::BAD_REQUEST, "authorization_model_not_found"),
            Error::LatestModelNotFound => (S::BAD_REQUEST, "latest_authorization_model_not_found"),
            Error::TypeNotFound(_) => (S::BAD_REQUEST, "type_not_found"),
            Error::RelationNotFound { .. } => (S::BAD_REQUEST, "relation_not_found"),
            Error::InvalidTuple { .. } => (S::BAD_REQUEST, "invalid_tuple"),
            Error::DuplicateWrite(_) | Error::MissingDelete(_) => {
                (S::BAD_REQUEST, "write_failed_due_to_invalid_input")
            }
            Error::Condition { .. } => (S::BAD_REQUEST, "validation_error"),
            Error::DepthExceeded(_) => {
                (S::BAD_REQUEST, "authorization_model_resolution_too_complex")
            }
            Error::InvalidContinuationToken => (S::BAD_REQUEST, "invalid_continuation_token"),
            Error::InvalidConsistencyToken => (S::BAD_REQUEST, "invalid_consistency_token"),
            Error::Validation(_) => (S::BAD_REQUEST, "validation_error"),
            Error::InvalidPolicies(_) => (S::BAD_REQUEST, "invalid_policies"),
            Error::InvalidPolicySchema(_) => (S::BAD_REQUEST, "invalid_policy_schema"),
            Error::PolicyVersionNotFound(_) => (S::NOT_FOUND, "policy_version_not_found"),
            Error::EntityNotFound(_) => (S::NOT_FOUND, "entity_not_found"),
            Error::Unavailable(_) => (S::SERVICE_UNAVAILABLE, "unavailable"),
            Error::Storage(_) => (S::INTERNAL_SERVER_ERROR, "internal_error"),
        };
        if status.is_server_error() {
            tracing::error!(error = %e, "request failed");
            return Self::new(status, code, "the server could not complete the request");
        }
        let mut err = Self::new(status, code, e.to_string());
        if let Error::InvalidPolicies(issues) = &e {
            err.details = serde_json::to_value(issues).ok();
        }
        err
    }
}

/// Result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;
