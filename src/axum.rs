//! The HTTP integration: the WebSocket route, and notifications that go out
//! after the response, only when the handler succeeded. [`serve`] runs the
//! application with the timeouts and the bounded shutdown a public server needs.
//!
//! ```no_run
//! use axum::{Router, routing::post, http::StatusCode};
//! use tidings::{Batch, Notifier, Op};
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
//! axum::serve(listener, app).await.unwrap();
//! # }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::Router;
use axum::extract::FromRequestParts;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::request::Parts;
use http::{HeaderName, Request, StatusCode};
use tower_layer::Layer;
use tower_service::Service;

use crate::{Batch, Notifier, Rejection, SessionToken};

mod serve;
pub use serve::{Serve, serve};

/// The header in which a client sends its session token (the `token` of its
/// `hello` frame, a secret) with its own writes.
pub const SESSION_HEADER: HeaderName = HeaderName::from_static("tidings-session");

/// The routes to merge into the application: the WebSocket endpoint at
/// [`Config::path`](crate::Config::path) (`/ws` by default) and the
/// Server-Sent Events fallback at [`Config::sse_path`](crate::Config::sse_path)
/// (`/events`), and the browser client at `/tidings.js` (see
/// `docs/client.md`).
pub fn routes<S>(notifier: &Notifier) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let config = notifier.config();
    // Each route answers other methods itself, so that its 405 keeps the
    // JSON error format wherever the routes are merged.
    Router::new()
        .route(
            &config.path,
            get(crate::ws::upgrade).fallback(method_not_allowed).with_state(notifier.clone()),
        )
        .route(
            &config.sse_path,
            get(crate::sse::events).fallback(method_not_allowed).with_state(notifier.clone()),
        )
        .merge(crate::client::routes())
}

/// The answer of the library's routes to a method other than GET (axum adds
/// the `Allow` header).
pub(crate) async fn method_not_allowed() -> Rejection {
    Rejection::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "only GET is allowed on this route")
}

/// A layer that gives each request a [`Batch`] (extract it in the handler)
/// and commits it once the response is produced, if its status is 2xx. On
/// any other status, or if the handler fails or panics, the batch is dropped
/// and nothing is sent.
///
/// The batch is marked with the token in the `tidings-session` header, so
/// the session that made the request does not receive the notifications it
/// caused. A header that is not a token is answered with 400 before the
/// handler runs.
pub fn layer(notifier: &Notifier) -> NotifyLayer {
    NotifyLayer { notifier: notifier.clone() }
}

/// See [`layer`].
#[derive(Clone, Debug)]
pub struct NotifyLayer {
    notifier: Notifier,
}

impl<S> Layer<S> for NotifyLayer {
    type Service = NotifyService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        NotifyService { inner, notifier: self.notifier.clone() }
    }
}

/// The service [`NotifyLayer`] wraps around the application's routes.
#[derive(Clone, Debug)]
pub struct NotifyService<S> {
    inner: S,
    notifier: Notifier,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, ReqBody> Service<Request<ReqBody>> for NotifyService<S>
where
    S: Service<Request<ReqBody>, Response = Response> + Clone + Send + 'static,
    S::Future: Send,
    ReqBody: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let origin = match originator(request.headers()) {
            Ok(origin) => origin,
            Err(rejection) => return Box::pin(async move { Ok(rejection.into_response()) }),
        };
        let batch = self.notifier.batch_from(origin);
        request.extensions_mut().insert(batch.clone());
        // The clone that was made ready is the one that must be called.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let response = inner.call(request).await?;
            if response.status().is_success() {
                batch.commit();
            } else {
                batch.discard();
            }
            Ok(response)
        })
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Batch {
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Batch>().cloned().ok_or_else(|| {
            Rejection::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "missing_layer",
                "the handler extracts a tidings::Batch but tidings::axum::layer is not applied to its route",
            )
        })
    }
}

/// The token of the session that made this request, from the
/// `tidings-session` header: for handlers that call the [`Notifier`] directly
/// and want [`Notification::from_session`](crate::Notification::from_session).
///
/// Only that session knows its token, so no one else can make a session
/// miss notifications.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Originator(pub Option<SessionToken>);

impl<S: Send + Sync> FromRequestParts<S> for Originator {
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        originator(&parts.headers).map(Originator)
    }
}

fn originator(headers: &http::HeaderMap) -> Result<Option<SessionToken>, Rejection> {
    let Some(value) = headers.get(&SESSION_HEADER) else {
        return Ok(None);
    };
    value.to_str().ok().and_then(|v| v.parse().ok()).map(Some).ok_or_else(|| {
        Rejection::new(
            StatusCode::BAD_REQUEST,
            "bad_session_header",
            "the tidings-session header must be the `token` from a hello frame",
        )
    })
}
