//! How the routes meet clients: the paths, the limits and timeouts of a
//! session's connection, which origins may connect, and who a client is.
//! The hub's own settings (history, batches, backplane) are
//! [`Config`](crate::Config)'s.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use http::request::Parts;

use super::Rejection;
use crate::{Identity, Notifier};

type AuthorizeFuture = Pin<Box<dyn Future<Output = Result<Identity, Rejection>> + Send>>;
pub(crate) type Authorizer = Arc<dyn Fn(&Parts) -> AuthorizeFuture + Send + Sync>;

/// Which `Origin` headers may open a WebSocket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origins {
    /// The origin's host (and port) must equal the request's `Host` header:
    /// pages served by this application may connect, other sites may not.
    /// Requests without an `Origin` header (non-browser clients) are allowed.
    SameHost,
    /// Only these exact origins (`scheme://host[:port]`), plus requests
    /// without an `Origin` header.
    List(Vec<String>),
    /// Any origin. Only for development: it re-opens cross-site WebSocket
    /// hijacking.
    Any,
}

/// The settings of the WebSocket and Server-Sent Events routes:
/// [`routes`](Self::routes) serves them. ([`super::routes`] is
/// `Settings::default().routes(notifier)`.)
///
/// ```
/// use std::time::Duration;
/// use tidings::axum::{Rejection, Settings};
/// use tidings::{Identity, Notifier};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let notifier = Notifier::new();
/// let routes: axum::Router = Settings::default()
///     .ping_interval(Duration::from_secs(15))
///     .allowed_origins(["https://app.example.com"])
///     .authorize(|parts| {
///         let token = parts.headers.get("authorization").cloned();
///         async move {
///             match token {
///                 Some(_) => Ok(Identity::user("42").audience("user:42")),
///                 None => Err(Rejection::unauthorized("log in first")),
///             }
///         }
///     })
///     .routes(&notifier);
/// # }
/// ```
#[derive(Clone)]
pub struct Settings {
    pub(crate) ping_interval: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) write_timeout: Duration,
    pub(crate) max_message_size: usize,
    pub(crate) read_buffer_size: usize,
    pub(crate) write_buffer_size: usize,
    pub(crate) path: String,
    pub(crate) sse_path: String,
    pub(crate) origins: Origins,
    pub(crate) authorize: Option<Authorizer>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            ping_interval: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(10),
            max_message_size: 4096,
            read_buffer_size: 256,
            write_buffer_size: 8192,
            path: "/ws".to_owned(),
            sse_path: "/events".to_owned(),
            origins: Origins::SameHost,
            authorize: None,
        }
    }
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("ping_interval", &self.ping_interval)
            .field("idle_timeout", &self.idle_timeout)
            .field("write_timeout", &self.write_timeout)
            .field("max_message_size", &self.max_message_size)
            .field("read_buffer_size", &self.read_buffer_size)
            .field("write_buffer_size", &self.write_buffer_size)
            .field("path", &self.path)
            .field("sse_path", &self.sse_path)
            .field("origins", &self.origins)
            .field("authorize", &self.authorize.is_some())
            .finish()
    }
}

impl Settings {
    /// The routes to merge into the application: the WebSocket endpoint at
    /// [`path`](Self::path) (`/ws` by default), the Server-Sent Events
    /// fallback at [`sse_path`](Self::sse_path) (`/events`), and the browser
    /// client at `/tidings.js` (see `docs/client.md`).
    pub fn routes<S>(self, notifier: &Notifier) -> Router<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        super::endpoint_routes(notifier, self)
    }

    /// How often the server pings each client (default 20 s).
    pub fn ping_interval(mut self, interval: Duration) -> Self {
        self.ping_interval = interval;
        self
    }

    /// A session from which nothing (not even a pong) arrived for this long
    /// is a dead peer and is closed (default 60 s). Checked at each ping.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// A session whose socket accepts no data for this long is stuck and is
    /// closed (default 10 s).
    pub fn write_timeout(mut self, timeout: Duration) -> Self {
        self.write_timeout = timeout;
        self
    }

    /// The largest message a client may send, in bytes (default 4096).
    /// Clients only send small control frames; a larger one closes the
    /// session with code 1009.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// The per-connection read buffer (default 256 bytes: clients only send
    /// small control frames, and a larger frame still fits, the buffer grows
    /// up to `max_message_size` for it). Every idle WebSocket session keeps
    /// it: tungstenite's own default of 128 KiB would cost over a gigabyte at
    /// 10k connections, and 1 KiB was a quarter of an idle session.
    pub fn read_buffer_size(mut self, bytes: usize) -> Self {
        self.read_buffer_size = bytes;
        self
    }

    /// How many bytes of queued frames a session's writer gathers before it
    /// writes to the socket (default 8 KiB). A flush writes the rest.
    pub fn write_buffer_size(mut self, bytes: usize) -> Self {
        self.write_buffer_size = bytes;
        self
    }

    /// The path of the WebSocket route (default `/ws`).
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.path = path.into();
        self
    }

    /// The path of the Server-Sent Events route (default `/events`), the
    /// fallback for networks that block WebSockets.
    pub fn sse_path(mut self, path: impl Into<String>) -> Self {
        self.sse_path = path.into();
        self
    }

    /// Which origins may connect (default [`Origins::SameHost`]).
    pub fn origins(mut self, origins: Origins) -> Self {
        self.origins = origins;
        self
    }

    /// Shorthand for [`Origins::List`].
    pub fn allowed_origins<I, S>(self, origins: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.origins(Origins::List(origins.into_iter().map(Into::into).collect()))
    }

    /// Decides who a connecting client is, before the upgrade.
    ///
    /// The hook sees the upgrade request (cookies, headers, query) and either
    /// returns the session's [`Identity`] (its audiences and the collections it
    /// may subscribe to) or a [`Rejection`], answered with 401 or 403 before
    /// upgrading. Without a hook every client is [`Identity::anonymous`].
    pub fn authorize<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(&Parts) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Identity, Rejection>> + Send + 'static,
    {
        self.authorize = Some(Arc::new(move |parts| Box::pin(hook(parts))));
        self
    }
}
