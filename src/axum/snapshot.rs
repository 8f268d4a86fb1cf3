//! Snapshot cursors for JSON reads: the cursor a response's data is
//! consistent with, in the `tidings-cursor` header, so a page that loads its
//! data through JSON resumes its subscription from there, as a server-rendered
//! page does with the cursor rendered into it.

use axum::extract::FromRequestParts;
use axum::response::{IntoResponseParts, ResponseParts};
use http::request::Parts;
use http::{HeaderName, HeaderValue, StatusCode};

use super::Rejection;
use crate::ErrorCode;
use crate::{Cursor, Notifier};

/// The response header that carries a [`Snapshot`]'s cursor.
pub const CURSOR_HEADER: HeaderName = HeaderName::from_static("tidings-cursor");

/// The notifier's cursor, taken **before** a handler reads its data.
///
/// Extract it first, read, and return it with the body: the response then
/// carries `tidings-cursor`, and `live.fetch` in `tidings.js` makes the
/// page's connection resume from it. A write that lands between the read and
/// the page's connection is then delivered, not lost. (A write that lands
/// between taking the cursor and the read is in the data *and* delivered: one
/// reload too many, never one missed.)
///
/// ```no_run
/// use axum::{Json, Router, routing::get};
/// use tidings::Notifier;
/// use tidings::axum::Snapshot;
///
/// async fn list_forums(snapshot: Snapshot) -> (Snapshot, Json<Vec<String>>) {
///     let forums = vec!["general".to_owned()]; // ... read the rows ...
///     (snapshot, Json(forums))
/// }
///
/// # #[tokio::main] async fn main() {
/// let notifier = Notifier::new();
/// let app: Router = Router::new()
///     .route("/api/forums", get(list_forums))
///     // The extractor finds the notifier through the request layer.
///     .layer(tidings::axum::layer(&notifier));
/// # }
/// ```
///
/// The extractor needs [`layer`](crate::axum::layer) on the route (without
/// it the request fails with 500 `missing_layer`); elsewhere, take one with
/// [`Snapshot::of`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    cursor: Cursor,
}

impl Snapshot {
    /// The notifier's cursor now: call it before reading.
    pub fn of(notifier: &Notifier) -> Snapshot {
        Snapshot { cursor: notifier.cursor() }
    }

    /// The cursor the data read after it is consistent with.
    pub fn cursor(&self) -> Cursor {
        self.cursor
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Snapshot {
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let notifier = parts.extensions.get::<Notifier>().ok_or_else(|| {
            Rejection::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorCode::MissingLayer,
                "the handler extracts a tidings::axum::Snapshot but tidings::axum::layer is not applied to its route",
            )
        })?;
        Ok(Snapshot::of(notifier))
    }
}

impl IntoResponseParts for Snapshot {
    type Error = std::convert::Infallible;

    fn into_response_parts(self, mut parts: ResponseParts) -> Result<ResponseParts, Self::Error> {
        // A cursor is hex digits and dashes: always a valid header value.
        let value =
            HeaderValue::from_str(&self.cursor.to_string()).expect("a cursor is a valid header value");
        parts.headers_mut().insert(CURSOR_HEADER, value);
        Ok(parts)
    }
}
