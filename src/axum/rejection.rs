//! Why a request was refused: an HTTP status and a JSON body, the answer of
//! every check the routes run (origin, query, the authorize hook, headers).

use std::fmt;

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::StatusCode;

use crate::ErrorCode;

/// Why a request was refused (a connection before the WebSocket upgrade,
/// a write's header, an unknown method), answered as an HTTP status with a
/// JSON body `{"error": "...", "code": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    status: StatusCode,
    code: ErrorCode,
    message: String,
}

impl Rejection {
    /// 401: the client did not say who it is.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Rejection::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, message)
    }

    /// 403: the client is known but may not connect.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Rejection::new(StatusCode::FORBIDDEN, ErrorCode::Forbidden, message)
    }

    pub(crate) fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Rejection { status, code, message: message.into() }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The machine-readable code in the body.
    pub fn code(&self) -> ErrorCode {
        self.code
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.status, self.code, self.message)
    }
}

impl std::error::Error for Rejection {}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.message, "code": self.code });
        (self.status, Json(body)).into_response()
    }
}
