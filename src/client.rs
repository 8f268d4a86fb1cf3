//! The browser client, `tidings.js`, served by [`routes`](crate::axum::routes)
//! at `/tidings.js`: a small, dependency-free ES module that connects to the
//! WebSocket (falling back to Server-Sent Events), resumes with the last
//! cursor, and reloads what changed. See `docs/client.md`.

use axum::response::IntoResponse;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};

/// The client's source, compiled into the crate.
const SOURCE: &str = include_str!("tidings.js");

/// `GET /tidings.js`: the client as a JavaScript module. Browsers may cache
/// it for five minutes, so a new version reaches pages soon after a
/// deployment.
pub(crate) async fn script() -> impl IntoResponse {
    ([(CONTENT_TYPE, "text/javascript; charset=utf-8"), (CACHE_CONTROL, "public, max-age=300")], SOURCE)
}
