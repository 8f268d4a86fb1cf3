//! Who a session is: decided by the application's authorize hook.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::StatusCode;

/// Who is behind a session, as far as delivery is concerned.
///
/// Returned by the hook given to [`Config::authorize`](crate::Config::authorize).
///
/// ```
/// use tidings::Identity;
///
/// let admin = Identity::user("7").audience("admin").audience("user:7");
/// assert!(admin.belongs_to("admin"));
/// assert!(admin.may_read("anything"));
///
/// let guest = Identity::anonymous().collections(["forums"]);
/// assert!(guest.may_read("forums"));
/// assert!(!guest.may_read("audit"));
/// ```
#[derive(Debug, Clone, Default)]
pub struct Identity {
    user: Option<Arc<str>>,
    audiences: Vec<Arc<str>>,
    collections: Option<HashSet<Box<str>>>,
}

impl Identity {
    /// Nobody in particular: no audience, every collection.
    pub fn anonymous() -> Self {
        Identity::default()
    }

    /// A known user (the id is for the application's logs and for
    /// [`Identity::user_id`]; it does not imply an audience).
    pub fn user(id: impl Into<Arc<str>>) -> Self {
        Identity { user: Some(id.into()), ..Identity::default() }
    }

    /// Adds an audience the session belongs to (e.g. `user:42`, `admin`):
    /// notifications addressed with [`Notification::to`](crate::Notification::to)
    /// reach only sessions that belong to their audience.
    pub fn audience(mut self, audience: impl Into<Arc<str>>) -> Self {
        self.audiences.push(audience.into());
        self
    }

    /// Restricts the collections the session may subscribe to (default: all).
    pub fn collections<I, S>(mut self, collections: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<Box<str>>,
    {
        self.collections = Some(collections.into_iter().map(Into::into).collect());
        self
    }

    /// The user id, if the hook set one.
    pub fn user_id(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// Whether the session belongs to `audience`.
    pub fn belongs_to(&self, audience: &str) -> bool {
        self.audiences.iter().any(|a| &**a == audience)
    }

    /// Whether the session may receive notifications about `collection`.
    pub fn may_read(&self, collection: &str) -> bool {
        self.collections.as_ref().is_none_or(|c| c.contains(collection))
    }
}

/// Why a connection was refused, answered before the WebSocket upgrade as an
/// HTTP status with a JSON body `{"error": "...", "code": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl Rejection {
    /// 401: the client did not say who it is.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Rejection::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 403: the client is known but may not connect.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Rejection::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Rejection { status, code, message: message.into() }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The machine-readable code in the body.
    pub fn code(&self) -> &'static str {
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
