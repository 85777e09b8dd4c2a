//! `ApiError`: every failure of a request, turned into `{"message": …}` with its status.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use builtiful_core::Message;

use crate::store::StoreError;

/// An error answered to an API client. Conversions carry the policy: what the client did
/// wrong is said plainly; what went wrong on our side is logged and answered with the seed's
/// sentence, so no internals leak.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is malformed or names something that cannot be used.
    #[error("{0}")]
    BadRequest(String),
    /// 401: no valid credentials.
    #[error("{0}")]
    Unauthorized(String),
    /// 404: not there, or not the caller's to see (the two are indistinguishable on purpose).
    #[error("{0}")]
    NotFound(String),
    /// 409: a unique value is taken.
    #[error("{0}")]
    Conflict(String),
    /// Any status with a message for the client (from extractor rejections: 413, 415, 405…).
    #[error("{1}")]
    Status(StatusCode, String),
    /// 503: a dependency is down; retrying later may work.
    #[error("{0}")]
    Unavailable(String),
    /// 500: a bug or an unexpected failure. The cause is logged, never sent.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    /// A 400 with this message.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::BadRequest(message.into())
    }

    /// A 404 with this message.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::NotFound(message.into())
    }

    /// The status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Status(status, _) => *status,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Conflict(message) => Self::Conflict(message),
            StoreError::UnknownCursor(_) => Self::BadRequest(error.to_string()),
            StoreError::Unavailable(_) => {
                tracing::warn!(error = %error, "database unavailable");
                Self::Unavailable(
                    "The service is temporarily unavailable, try again shortly".into(),
                )
            }
            other => Self::Internal(other.into()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = match self {
            Self::Internal(error) => {
                tracing::error!(error = ?error, "request failed");
                Message::INTERNAL_ERROR.to_owned()
            }
            other => other.to_string(),
        };
        (status, Json(Message { message })).into_response()
    }
}

/// The result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;
