//! Every knob of the hub, with defaults that suit a web application. (How
//! the routes meet clients, paths, timeouts, origins, who a client is, is
//! [`tidings::axum::Settings`](crate::axum::Settings).)

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::backplane::{Backplane, Memory};

/// Configuration of a [`Notifier`](crate::Notifier): its history, its
/// batches, its backplane.
///
/// ```
/// use tidings::{Config, Notifier};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let config = Config::default().replay_capacity(10_000).max_batch(500);
/// let notifier = Notifier::with_config(config);
/// # }
/// ```
#[derive(Clone)]
pub struct Config {
    pub(crate) replay_capacity: usize,
    pub(crate) max_batch: usize,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) backplane: Arc<dyn Backplane>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            replay_capacity: 1024,
            max_batch: 256,
            shutdown_timeout: Duration::from_secs(5),
            backplane: Arc::new(Memory),
        }
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("replay_capacity", &self.replay_capacity)
            .field("max_batch", &self.max_batch)
            .field("shutdown_timeout", &self.shutdown_timeout)
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
    /// and origin), without data, which tells each client to reload
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

    /// How long [`Notifier::shutdown`](crate::Notifier::shutdown) waits for
    /// sessions to close (default 5 s).
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// Shares notifications with other instances of the application through
    /// Redis or PostgreSQL (default: [`Memory`], in-process only). See
    /// [`backplane`](crate::backplane).
    pub fn backplane(mut self, backplane: impl Backplane) -> Self {
        self.backplane = Arc::new(backplane);
        self
    }
}
