//! Tell every connected browser what changed, microseconds after the write.
//!
//! A [`Notifier`] is cloned into handlers and repositories. After a write
//! they call [`notify`](Notify::notify) (or queue the notification in a
//! [`Batch`] that goes out after the transaction commits or after the
//! response), and every connected client receives
//! `{"collection":"forums","op":"insert","cursor":"…"}` over a WebSocket and
//! reloads what it shows.
//!
//! ```no_run
//! use axum::{Router, extract::State, routing::post};
//! use tidings::{Notifier, Notify, Op};
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
//!     // Header-read timeout, bounded graceful drain, 1001 to every session:
//!     tidings::axum::serve(listener, app, &notifier).await;
//! }
//! ```
//!
//! # Layout
//!
//! Data walks one way: caller → notifier → backplane → hub → session
//! writer → socket. Each module holds one part of that walk:
//!
//! | module | holds | uses (its imports) |
//! | --- | --- | --- |
//! | `notification`, `cursor`, `token` | the data: [`Notification`], [`Op`], [`Cursor`], [`SessionId`], [`SessionToken`] | each other only (a notification names a session) |
//! | `notify`, `notifier`, `batch` | the handles: the [`Notify`] trait, [`Notifier`], [`Batch`] | the data; the notifier: hub, backplane, config; a batch: the notifier it publishes through, backplane |
//! | `config`, `identity` | [`Config`], [`Identity`] and [`Rejection`] | config: backplane (its default engine), identity (the authorize hook's result); identity: hub (its filters, [`Where`]) |
//! | [`backplane`] | the engine trait ([`Backplane`](backplane::Backplane)), the hub's face to it ([`Receiver`](backplane::Receiver)), the engines: [`Memory`](backplane::Memory), `Outbox` (in the application's database), `Redis`, `Postgres`, and their [`envelope`](backplane::envelope) | the data, metrics |
//! | `hub` | the history (the frames every session reads), the session registry, the fan-out (an index of sessions by subscription, the task that hands each entry to the mailboxes of those that may receive it), a session and its subscriptions with their filters ([`Where`]), the frames and control messages of the protocol | the data, backplane (as a [`Receiver`](backplane::Receiver)), config, identity, metrics |
//! | [`axum`] | the transports: routes, admission and origin checks, WebSocket, SSE, the browser client, the request layer, snapshot cursors, `serve` | hub, the handles, config, identity, metrics |
//! | [`sea_orm`] | transaction-scoped notifications | the handles (a batch), backplane (the outbox's table) |
//! | [`metrics`] | every metric's name and description, and the handles the hot paths record through | identity (a rejection's code) |
//!
//! The wire protocol is in `docs/protocol.md`, the browser client in
//! `docs/client.md`, the backplanes' guarantees in `docs/scaling.md`.

#![warn(missing_docs)]

pub mod axum;
pub mod backplane;
mod batch;
mod config;
mod cursor;
mod hub;
mod identity;
pub mod metrics;
mod notification;
mod notifier;
mod notify;
#[cfg(feature = "sea-orm")]
pub mod sea_orm;
mod token;

pub use backplane::PublishError;
pub use batch::Batch;
pub use config::{Config, Origins};
pub use cursor::{Cursor, InvalidCursor};
pub use hub::Where;
pub use identity::{Identity, Rejection};
pub use notification::{Notification, Op};
pub use notifier::{Health, HealthStatus, Notifier};
pub use notify::Notify;
pub use token::{InvalidSessionToken, SessionId, SessionToken};
