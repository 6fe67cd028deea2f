//! Lenient, envelope-speaking extractors.
//!
//! axum's own `Json`, `Query` and `Path` reject with plain-text bodies; these
//! wrappers reject with the error envelope instead, and `JsonBody` treats an
//! empty body as `{}` because the SDK sends bodiless POSTs with
//! `Content-Type: application/json`.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde_json::Value;
use stack_core::{Error, ErrorCode};

use crate::{ApiError, HttpState};

/// A JSON request body: `Value::Null` when empty.
pub struct JsonBody(pub Value);

impl FromRequest<HttpState> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &HttpState) -> Result<Self, Self::Rejection> {
        read_json(req, state.config.max_body_bytes).await.map(Self)
    }
}

/// The body of `POST /v1/proxy`, which carries an upstream body and so has
/// its own, larger limit.
pub struct ProxyJsonBody(pub Value);

impl FromRequest<HttpState> for ProxyJsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &HttpState) -> Result<Self, Self::Rejection> {
        read_json(req, state.config.proxy_max_body_bytes)
            .await
            .map(Self)
    }
}

async fn read_json(req: Request, limit: usize) -> Result<Value, ApiError> {
    let bytes = axum::body::to_bytes(req.into_body(), limit)
        .await
        .map_err(|_| {
            ApiError(
                Error::new(
                    ErrorCode::PayloadTooLarge,
                    format!("request body is larger than {limit} bytes"),
                )
                .with_details(serde_json::json!({ "limit_bytes": limit })),
            )
        })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&bytes).map_err(|e| {
        ApiError(Error::new(
            ErrorCode::InvalidRequest,
            format!(
                "request body is not valid JSON (line {}, column {})",
                e.line(),
                e.column()
            ),
        ))
    })
}

/// Query parameters, with envelope errors.
pub struct Q<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Q<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Self(q.0))
            .map_err(|e| {
                ApiError(Error::new(
                    ErrorCode::InvalidRequest,
                    format!("invalid query string: {}", e.body_text()),
                ))
            })
    }
}

/// Path parameters, with envelope errors.
pub struct P<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for P<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Self(p.0))
            .map_err(|e| {
                ApiError(Error::new(
                    ErrorCode::InvalidRequest,
                    format!("invalid path: {}", e.body_text()),
                ))
            })
    }
}
