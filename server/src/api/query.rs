//! `ApiQuery<T>`: axum's query-string extractor with our error shape.
//!
//! axum answers a query string it cannot parse (`limit=abc`, a missing
//! required field) with a plain-text 400; users and scripts get
//! `{"error": ...}` instead, as for bodies (`json.rs`). Handlers import it
//! as `Query`, so their signatures read as axum's.

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::error::ApiError;

pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(v)) => Ok(ApiQuery(v)),
            Err(rejection) => Err(ApiError::BadRequest(format!(
                "bad query string: {}",
                rejection.body_text()
            ))),
        }
    }
}
