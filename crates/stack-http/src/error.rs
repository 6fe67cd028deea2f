//! Application errors → HTTP responses, in exactly one place.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use stack_core::{Error, ErrorCode};

/// An error on its way to becoming a response.
#[derive(Debug)]
pub struct ApiError(pub Error);

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        Self(e)
    }
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self(Error::new(code, message))
    }
}

/// The envelope body for `e`. Internal errors get a generic message: their
/// detail is for the server log only.
pub fn envelope(e: &Error) -> Value {
    let (message, details) = match e.code {
        ErrorCode::Internal => (
            "internal error; the server log has the details".to_owned(),
            json!({}),
        ),
        _ => (
            e.message.clone(),
            e.details.clone().unwrap_or_else(|| json!({})),
        ),
    };
    json!({ "error": { "code": e.code.as_str(), "message": message, "details": details } })
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let e = self.0;
        if e.code == ErrorCode::Internal {
            tracing::error!(message = %e.message, "internal error");
        }
        let status =
            StatusCode::from_u16(e.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut res = (status, Json(envelope(&e))).into_response();
        if status == StatusCode::UNAUTHORIZED {
            res.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        res
    }
}

/// The response for a handler that panicked (used with tower-http's
/// `CatchPanicLayer`): a 500 envelope, with the panic logged, not shown.
pub fn panic_response(_payload: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked");
    ApiError(Error::internal("handler panicked")).into_response()
}
