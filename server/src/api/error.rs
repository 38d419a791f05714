//! The one error type every handler returns, and its mapping to HTTP.
//!
//! Every error answers `{"error": "..."}`. Client mistakes get a 4xx with a
//! message that says what to fix; storage and I/O faults get a 5xx whose
//! message names the fault without leaking paths, while the full error
//! (with its source chain) goes to the log. Unknown means 500, never 400.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::broker::BrokerError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    Unavailable(String),
    /// A fault of this node's own (a stored file that does not parse).
    #[error("{0}")]
    Internal(String),
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

impl ApiError {
    fn status_and_message(&self) -> (StatusCode, String) {
        match self {
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, m.clone()),
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, m.clone()),
            ApiError::PayloadTooLarge(m) => (StatusCode::PAYLOAD_TOO_LARGE, m.clone()),
            ApiError::UnsupportedMediaType(m) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, m.clone()),
            ApiError::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, m.clone()),
            ApiError::Internal(m) => (StatusCode::INTERNAL_SERVER_ERROR, m.clone()),
            ApiError::Broker(e) => {
                let a = e.answer();
                let status = StatusCode::from_u16(a.http).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                (status, a.public.unwrap_or_else(|| e.to_string()))
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, message) = self.status_and_message();
        if status.is_server_error() {
            tracing::error!(error = %self, source = ?std::error::Error::source(&self), "request failed");
        }
        (status, Json(json!({ "error": message }))).into_response()
    }
}
