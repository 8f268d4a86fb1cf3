//! Tell every connected browser what changed, microseconds after the write.
//!
//! A [`Notifier`] is cloned into handlers and repositories. After a write
//! they call [`Notifier::notify`] (or queue the notification in a [`Batch`]
//! that goes out after the transaction commits or after the response), and
//! every connected client receives
//! `{"collection":"forums","op":"insert","cursor":"…"}` over a WebSocket and
//! reloads what it shows.
//!
//! ```no_run
//! use axum::{Router, extract::State, routing::post};
//! use tidings::{Notifier, Op};
//!
//! async fn create_forum(State(notifier): State<Notifier>) -> &'static str {
//!     // ... insert the row ...
//!     notifier.notify("forums", Op::Insert);
//!     "created"
//! }
//!
//! #[tokio::main]
//! async fn main() {
//!     let notifier = Notifier::new();
//!     let app = Router::new()
//!         .route("/api/forums", post(create_forum))
//!         .with_state(notifier.clone())
//!         .merge(tidings::axum::routes(&notifier)); // the WebSocket at /ws
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await.unwrap();
//!     axum::serve(listener, app).await.unwrap();
//! }
//! ```
//!
//! The pieces, each in its own module:
//! - [`Notification`] and [`Op`]: the data;
//! - [`Notifier`]: the handle; [`Batch`]: notifications that go out together;
//! - the hub (fan-out) and the session (one connection) are internal: the
//!   history of notifications is shared by all sessions, each of which is
//!   only a position in it (see `docs/protocol.md` for what clients see);
//! - [`axum`]: the WebSocket route and the request layer;
//! - [`sea_orm`]: transaction-scoped notifications;
//! - [`Config`], [`Identity`]: limits, keepalive, origins, authorization.

#![warn(missing_docs)]

mod admission;
pub mod backplane;
mod batch;
mod client;
mod config;
mod cursor;
mod history;
mod hub;
mod identity;
mod notification;
mod notifier;
mod origin;
mod protocol;
mod session;
mod sse;
mod ws;

pub mod axum;
#[cfg(feature = "sea-orm")]
pub mod sea_orm;

pub use backplane::{Backplane, PublishError};
pub use batch::Batch;
pub use config::{Config, Origins};
pub use cursor::{Cursor, InvalidCursor};
pub use identity::{Identity, Rejection};
pub use notification::{Notification, Op};
pub use notifier::{Health, Notifier};
pub use session::{InvalidSessionToken, SessionId, SessionToken};
