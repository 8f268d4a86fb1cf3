//! Every knob of the hub, with defaults that suit a web application.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http::request::Parts;

use crate::backplane::{Backplane, Memory};
use crate::{Identity, Rejection};

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

/// Configuration of a [`Notifier`](crate::Notifier) and its sessions.
///
/// ```
/// use std::time::Duration;
/// use tidings::{Config, Identity, Notifier, Rejection};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let config = Config::default()
///     .replay_capacity(10_000)
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
///     });
/// let notifier = Notifier::with_config(config);
/// # }
/// ```
#[derive(Clone)]
pub struct Config {
    pub(crate) replay_capacity: usize,
    pub(crate) max_batch: usize,
    pub(crate) ping_interval: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) write_timeout: Duration,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) max_message_size: usize,
    pub(crate) read_buffer_size: usize,
    pub(crate) write_buffer_size: usize,
    pub(crate) path: String,
    pub(crate) sse_path: String,
    pub(crate) origins: Origins,
    pub(crate) authorize: Option<Authorizer>,
    pub(crate) backplane: Arc<dyn Backplane>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            replay_capacity: 1024,
            max_batch: 256,
            ping_interval: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(10),
            shutdown_timeout: Duration::from_secs(5),
            max_message_size: 4096,
            read_buffer_size: 256,
            write_buffer_size: 8192,
            path: "/ws".to_owned(),
            sse_path: "/events".to_owned(),
            origins: Origins::SameHost,
            authorize: None,
            backplane: Arc::new(Memory),
        }
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("replay_capacity", &self.replay_capacity)
            .field("max_batch", &self.max_batch)
            .field("ping_interval", &self.ping_interval)
            .field("idle_timeout", &self.idle_timeout)
            .field("write_timeout", &self.write_timeout)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("max_message_size", &self.max_message_size)
            .field("read_buffer_size", &self.read_buffer_size)
            .field("write_buffer_size", &self.write_buffer_size)
            .field("path", &self.path)
            .field("sse_path", &self.sse_path)
            .field("origins", &self.origins)
            .field("authorize", &self.authorize.is_some())
            .field("backplane", &self.backplane.name())
            .finish()
    }
}

impl Config {
    /// How many notifications the hub keeps (default 1024).
    ///
    /// This is both the replay buffer (a client reconnecting with a cursor at
    /// most this many notifications old resumes without loss) and the bound
    /// on each session's outbound queue: a session with more than this many
    /// of its own notifications waiting, or whose waiting ones left the
    /// history, has them replaced by one `resync` frame. Notifications a
    /// session does not receive never count against it.
    pub fn replay_capacity(mut self, notifications: usize) -> Self {
        self.replay_capacity = notifications.max(1);
        self
    }

    /// The most notifications a committed [`Batch`](crate::Batch) sends one
    /// by one (default 256; never more than half the
    /// [`replay_capacity`](Self::replay_capacity)).
    ///
    /// A larger batch (deleting a forum with 1,100 posts, say) would push
    /// out of the history what readers have not read yet and send every
    /// one of them a `resync`: a full reload for everybody. Instead it is
    /// condensed into one notification per collection and op (per audience
    /// and originator), without data, which tells each client to reload
    /// that collection, and nothing else.
    pub fn max_batch(mut self, notifications: usize) -> Self {
        self.max_batch = notifications.max(1);
        self
    }

    /// The batch size above which a batch is condensed: `max_batch`, and at
    /// most half the history, so a batch never evicts what a reader that was
    /// keeping up has yet to read.
    pub(crate) fn condense_above(&self) -> usize {
        self.max_batch.min(self.replay_capacity / 2).max(1)
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

    /// How long [`Notifier::shutdown`](crate::Notifier::shutdown) waits for
    /// sessions to close (default 5 s).
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
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

    /// Shares notifications with other instances of the application through
    /// Redis or PostgreSQL (default: [`Memory`], in-process only). See
    /// [`backplane`](crate::backplane).
    pub fn backplane(mut self, backplane: impl Backplane) -> Self {
        self.backplane = Arc::new(backplane);
        self
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
