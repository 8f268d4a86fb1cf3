//! The transports, for axum: the WebSocket and Server-Sent Events routes
//! (with their admission and origin checks), the browser client, the request
//! layer whose notifications go out after the response only when the handler
//! succeeded, and [`serve`], which runs the application with the timeouts and
//! the bounded shutdown a public server needs.
//!
//! ```no_run
//! use axum::{Router, routing::post, http::StatusCode};
//! use tidings::{Batch, Notifier, Notify, Op};
//!
//! async fn create_forum(batch: Batch) -> StatusCode {
//!     // ... insert the row ...
//!     batch.notify("forums", Op::Insert); // sent after a 2xx response only
//!     StatusCode::CREATED
//! }
//!
//! # #[tokio::main] async fn main() {
//! let notifier = Notifier::new();
//! let app = Router::new()
//!     .route("/api/forums", post(create_forum))
//!     .layer(tidings::axum::layer(&notifier))
//!     .merge(tidings::axum::routes(&notifier)); // GET /ws
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await.unwrap();
//! tidings::axum::serve(listener, app, &notifier).await;
//! # }
//! ```

use axum::Router;
use axum::routing::get;
use http::{HeaderName, StatusCode};

use crate::{ErrorCode, Notifier};

mod admission;
mod batched;
mod client;
mod layer;
mod origin;
mod rejection;
mod serve;
mod settings;
mod snapshot;
mod sse;
mod ws;

pub use layer::{NotifyLayer, NotifyService, OriginToken, layer};
pub use rejection::Rejection;
pub use serve::{Serve, serve};
pub use settings::{Origins, Settings};
pub use snapshot::{CURSOR_HEADER, Snapshot};

/// The close code of a session that must re-authenticate (reason
/// `reauthenticate`): the application revoked it
/// ([`Notifier::reauthenticate_user`](crate::Notifier::reauthenticate_user),
/// [`Notifier::reauthenticate_audience`](crate::Notifier::reauthenticate_audience))
/// or its identity [expired](crate::Identity::expires_at). The client
/// authorizes again (its authorize hook runs at the next connect) and
/// resumes from its cursor. Over SSE, which has no close codes, the last
/// frame is `{"type":"reauthenticate"}`.
pub const REAUTHENTICATE: u16 = 4401;

/// How many frames a session's list of frames to send may keep room for
/// while it is idle: a burst's longer list is given back once written.
const IDLE_FRAMES: usize = 8;

/// The header in which a client sends its session token (the `token` of its
/// `hello` frame, a secret) with its own writes.
pub const SESSION_HEADER: HeaderName = HeaderName::from_static("tidings-session");

/// The routes to merge into the application, with the default
/// [`Settings`]: the WebSocket endpoint at `/ws`, the Server-Sent Events
/// fallback at `/events`, and the browser client at `/tidings.js` (see
/// `docs/client.md`). [`Settings::routes`] serves them with other settings.
pub fn routes<S>(notifier: &Notifier) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    Settings::default().routes(notifier)
}

/// What the session routes' handlers are given: the notifier, and the
/// settings they were made with.
#[derive(Clone)]
pub(crate) struct Endpoint {
    notifier: Notifier,
    settings: std::sync::Arc<Settings>,
}

/// The routes of [`Settings::routes`].
fn endpoint_routes<S>(notifier: &Notifier, settings: Settings) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let (path, sse_path) = (settings.path.clone(), settings.sse_path.clone());
    let endpoint = Endpoint { notifier: notifier.clone(), settings: std::sync::Arc::new(settings) };
    // Each route answers other methods itself, so that its 405 keeps the
    // JSON error format wherever the routes are merged.
    Router::new()
        .route(&path, get(ws::upgrade).fallback(method_not_allowed).with_state(endpoint.clone()))
        .route(&sse_path, get(sse::events).fallback(method_not_allowed).with_state(endpoint))
        .merge(client::routes())
}

/// Counts and logs a refused connection attempt, and hands the rejection
/// back for the response.
pub(crate) fn refused(transport: crate::metrics::Transport, rejection: Rejection) -> Rejection {
    crate::metrics::refused(transport, rejection.code().as_str(), rejection.status().as_u16());
    rejection
}

/// The answer of the library's routes to a method other than GET (axum adds
/// the `Allow` header).
pub(crate) async fn method_not_allowed() -> Rejection {
    Rejection::new(
        StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::MethodNotAllowed,
        "only GET is allowed on this route",
    )
}
