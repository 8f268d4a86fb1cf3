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
//! | `notification`, `cursor`, `token`, `filter` | the data: [`Notification`], [`Op`], [`Cursor`], [`SessionId`], [`SessionToken`], and row filters ([`Where`]) | each other only (a notification names a session) |
//! | `notify`, `notifier`, `batch` | the handles: the [`Notify`] trait, [`Notifier`], [`Batch`] | the data; the notifier: hub, backplane, config, batch (it makes them); a batch: hub (which publishes it), backplane |
//! | `config`, `identity` | the hub's settings, [`Config`]; who a session is, [`Identity`] | config: backplane (its default engine); identity: the data (the filters its `permit` hook judges) |
//! | [`backplane`] | the engine trait ([`Backplane`](backplane::Backplane)), the hub's face to it ([`Receiver`](backplane::Receiver)), the engines: [`Memory`](backplane::Memory), `Outbox` (in the application's database), `Redis`, `Postgres`, and their [`envelope`](backplane::envelope) | the data, metrics |
//! | `hub` | the history (the frames every session reads), the session registry, the fan-out (an index of sessions by subscription, the task that hands each entry to the mailboxes of those that may receive it), a session and its subscriptions, the frames and control messages of the protocol | the data, backplane (as a [`Receiver`](backplane::Receiver)), config, identity, metrics |
//! | [`axum`] | the transports: their [`Settings`](axum::Settings) (paths, timeouts, origins, the authorize hook) and routes, admission and origin checks, [`Rejection`](axum::Rejection), WebSocket, SSE, the browser client, the request layer, snapshot cursors, `serve` | hub, the handles, config, identity, metrics |
//! | [`sea_orm`] | transaction-scoped notifications | the handles (a batch), hub (which writes them in the transaction through the backplane) |
//! | [`metrics`] | every metric's name and description, and the handles the hot paths record through | backplane (the engines' names) |
//!
//! Everything above [`axum`] and [`sea_orm`] is the core: it names no HTTP
//! or axum type (a test, `the_core_names_no_http_type`, reads the imports
//! to make sure).
//!
//! The wire protocol is in `docs/protocol.md`, the browser client in
//! `docs/client.md`, the backplanes' guarantees in `docs/scaling.md`.

#![warn(missing_docs)]

pub mod axum;
pub mod backplane;
mod batch;
mod config;
mod cursor;
mod error_code;
mod filter;
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
pub use config::Config;
pub use cursor::{Cursor, InvalidCursor};
pub use error_code::ErrorCode;
pub use filter::Where;
pub use identity::Identity;
pub use notification::{Notification, Op};
pub use notifier::{Health, HealthStatus, Notifier};
pub use notify::Notify;
pub use token::{InvalidSessionToken, SessionId, SessionToken};

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    /// Every `.rs` file under `dir`.
    fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                sources(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    /// The layers show in the imports: the core (the data, the handles, the
    /// hub, the backplanes, config, identity, metrics) names no HTTP or
    /// axum type. Only `axum/` (the transports) and the integrations do.
    #[test]
    fn the_core_names_no_http_type() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        sources(&src, &mut files);
        let transport = src.join("axum");
        let core: Vec<&PathBuf> = files
            .iter()
            .filter(|f| {
                !f.starts_with(&transport) && **f != src.join("lib.rs") && **f != src.join("sea_orm.rs")
            })
            .collect();
        assert!(core.len() >= 20, "the core's files are found: {core:?}");
        let forbidden =
            ["axum::", "http::", "hyper", "tower", "crate::axum", "super::axum", "HeaderMap", "StatusCode"];
        let mut found = Vec::new();
        for file in core {
            let text = std::fs::read_to_string(file).unwrap();
            for (n, line) in text.lines().enumerate() {
                let code = line.trim_start();
                if code.starts_with("//") {
                    continue; // docs may link to the transports
                }
                if let Some(word) = forbidden.iter().find(|w| code.contains(*w)) {
                    found.push(format!(
                        "{}:{}: {word}: {code}",
                        file.strip_prefix(&src).unwrap().display(),
                        n + 1
                    ));
                }
            }
        }
        assert!(found.is_empty(), "the core names HTTP or axum types:\n{}", found.join("\n"));
    }
}
