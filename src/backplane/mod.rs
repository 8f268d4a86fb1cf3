//! Where notifications travel between instances: one trait, several engines.
//!
//! A notification is published once to the backplane, and every instance
//! (the publishing one included) receives it back and appends it to its own
//! history: one path, no double delivery, the same order everywhere. The
//! in-process engine, [`Memory`] (the default), is an ordinary
//! implementation like the others; [`Redis`] (feature `redis`) and
//! [`Postgres`] (feature `postgres`) share notifications between instances.
//!
//! ```no_run
//! use tidings::{Config, Notifier, backplane};
//!
//! # #[tokio::main] async fn main() {
//! // One line of configuration; handlers do not change.
//! let backplane = backplane::from_url("redis://127.0.0.1:6379").unwrap();
//! let notifier = Notifier::with_config(Config::default().backplane(backplane));
//! # }
//! ```
//!
//! Two traits meet here, in the manner of centrifuge's `Broker` and
//! `BrokerEventHandler`: an engine implements [`Backplane`] (and the [`Link`]
//! it starts), and the hub implements [`Receiver`], the small surface an
//! engine uses to hand back what arrived. Neither side names the other's
//! types: the hub names no engine, and an engine sees the hub only as a
//! [`Receiver`]. See `docs/scaling.md` for what each engine guarantees.

use std::fmt;
use std::sync::Weak;

use tokio::sync::oneshot;

use crate::{Cursor, Notification};

pub mod envelope;
mod memory;
#[cfg(feature = "outbox")]
mod outbox;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "redis")]
mod redis;
#[cfg(any(feature = "redis", feature = "postgres", feature = "outbox"))]
mod remote;

pub use memory::Memory;
#[cfg(feature = "outbox")]
pub use outbox::Outbox;
#[cfg(feature = "postgres")]
pub use postgres::Postgres;
#[cfg(feature = "redis")]
pub use redis::Redis;

/// The engines this crate has: the names they go by in health reports,
/// metrics labels and traces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Engine {
    Memory,
    #[cfg(feature = "outbox")]
    Outbox,
    #[cfg(feature = "redis")]
    Redis,
    #[cfg(feature = "postgres")]
    Postgres,
}

impl Engine {
    /// `in-process`, `outbox`, `redis` or `postgres`.
    pub(crate) const fn name(self) -> &'static str {
        match self {
            Engine::Memory => "in-process",
            #[cfg(feature = "outbox")]
            Engine::Outbox => "outbox",
            #[cfg(feature = "redis")]
            Engine::Redis => "redis",
            #[cfg(feature = "postgres")]
            Engine::Postgres => "postgres",
        }
    }
}

/// An engine that carries notifications between the instances of an
/// application: the configuration, from which each
/// [`Notifier`](crate::Notifier) starts its own [`Link`].
///
/// An engine carries each notification as its [`envelope`]
/// ([`encode`](envelope::encode) on one side, [`decode`](envelope::decode)
/// on the other): it must not rebuild notifications from their fields, or
/// the hub's orders between instances would arrive as reserved names and be
/// dropped.
pub trait Backplane: Send + Sync + 'static {
    /// A short name for health reports and logs (`in-process`, `redis`,
    /// `postgres`).
    fn name(&self) -> &'static str;

    /// Whether the engine gives each notification its cursor (a stream id,
    /// valid on every instance) and loads recent history at start-up, in
    /// which case the hub waits for [`Receiver::ready`] before sessions
    /// resume. By default the hub numbers notifications itself.
    fn assigns_cursors(&self) -> bool {
        false
    }

    /// Starts the engine's work (connections, tasks) for one hub and
    /// returns what the hub publishes through. `hub` receives what arrives;
    /// it is weak, so the engine's tasks end when the notifier is dropped.
    fn start(&self, hub: Weak<dyn Receiver>) -> Box<dyn Link>;
}

impl Backplane for Box<dyn Backplane> {
    fn name(&self) -> &'static str {
        (**self).name()
    }

    fn assigns_cursors(&self) -> bool {
        (**self).assigns_cursors()
    }

    fn start(&self, hub: Weak<dyn Receiver>) -> Box<dyn Link> {
        (**self).start(hub)
    }
}

/// A started backplane, as the hub sees it: where it publishes.
pub trait Link: Send + Sync {
    /// Publishes the notifications, together and in order, to every
    /// instance. Must not block: an engine that talks to a server queues
    /// the publication for its own task. `hub` is the publishing hub, for an
    /// engine that delivers in place ([`Memory`]).
    fn publish(&self, hub: &dyn Receiver, publication: Publication);

    /// Publishes inside the application's database transaction, if this
    /// engine can (PostgreSQL NOTIFY on the transaction's own connection),
    /// so that the notifications go out if and only if it commits. Returns
    /// `Ok(false)` when it cannot (the default): the notifications are then
    /// published after the commit.
    #[cfg(feature = "sea-orm")]
    fn publish_in_transaction<'a>(
        &'a self,
        _txn: &'a sea_orm::DatabaseTransaction,
        _notifications: &'a [Notification],
    ) -> futures_util::future::BoxFuture<'a, Result<bool, sea_orm::DbErr>> {
        Box::pin(std::future::ready(Ok(false)))
    }

    /// The transaction whose notifications
    /// [`publish_in_transaction`](Self::publish_in_transaction) took has
    /// committed: an engine that relays them from the database (the
    /// [`Outbox`]) starts now rather than at its next poll.
    #[cfg(feature = "sea-orm")]
    fn committed(&self) {}
}

/// The hub, as an engine sees it: what an engine hands back.
pub trait Receiver: Send + Sync {
    /// Notifications that arrived, in order, each with the cursor the
    /// engine gave it (`None`: the hub numbers it). They are appended to the
    /// history, and each is handed to the sessions that may receive it.
    fn deliver(&self, notifications: &mut dyn Iterator<Item = (Notification, Option<Cursor>)>);

    /// One notification that arrived, with its cursor if the engine gave it
    /// one: the same as [`deliver`](Self::deliver), on the path every single
    /// `notify` takes, without an iterator.
    fn deliver_one(&self, notification: Notification, cursor: Option<Cursor>) {
        self.deliver(&mut std::iter::once((notification, cursor)));
    }

    /// Notifications may have been lost (a connection broke, a publication
    /// failed): every session is told to `resync`, and no cursor from before
    /// this point resumes. With `at` (a stream id), cursors before `at` no
    /// longer resume, and `at` itself does.
    fn interrupt(&self, at: Option<Cursor>);

    /// The engine has loaded the stream's recent history (see
    /// [`Backplane::assigns_cursors`]); `floor` is the newest id the stream
    /// no longer holds, if any: resuming from before it would skip what was
    /// trimmed.
    fn ready(&self, floor: Option<Cursor>);

    /// The state of one part of the engine's connection, for health:
    /// `Some(reason)` while it is broken, `None` once it works.
    fn degraded(&self, part: Part, reason: Option<String>);

    /// How many notifications the history holds: as many as an engine
    /// should load at start-up.
    fn capacity(&self) -> usize;
}

/// The two connections an engine keeps, each reported on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// Reads notifications (Redis XREAD, PostgreSQL LISTEN).
    Listener,
    /// Sends them (XADD, pg_notify).
    Publisher,
}

/// Notifications to publish together, in order, and the caller of
/// [`Notifier::publish`](crate::Notifier::publish) waiting for the outcome,
/// if there is one.
pub struct Publication {
    notifications: Notifications,
    done: Done,
}

/// One notification (the common case, kept off the heap) or a batch.
enum Notifications {
    One(Notification),
    Many(Vec<Notification>),
}

impl Publication {
    pub(crate) fn one(notification: Notification) -> Self {
        Publication { notifications: Notifications::One(notification), done: Done(None) }
    }

    pub(crate) fn many(notifications: Vec<Notification>) -> Self {
        Publication { notifications: Notifications::Many(notifications), done: Done(None) }
    }

    /// The same publication, with `done` told the outcome.
    pub(crate) fn reporting_to(mut self, done: oneshot::Sender<Result<(), PublishError>>) -> Self {
        self.done = Done(Some(done));
        self
    }

    /// The publication without the application's notifications about
    /// reserved collections (`$…`), each refused with a warning; `None` when
    /// nothing is left (the outcome, [`PublishError::Reserved`], is
    /// reported). One byte compared per notification when there are none.
    pub(crate) fn without_reserved(self) -> Option<Self> {
        if !self.notifications().iter().any(Notification::is_reserved) {
            return Some(self);
        }
        let (notifications, done) = self.into_parts();
        let (kept, refused): (Vec<Notification>, Vec<Notification>) =
            notifications.partition(|n| !n.is_reserved());
        for n in &refused {
            tracing::warn!(collection = %n.collection, "tidings: refused a notification about a reserved collection");
        }
        if kept.is_empty() {
            done.finish(Err(PublishError::Reserved(refused[0].collection.to_string())));
            return None;
        }
        Some(Publication { notifications: Notifications::Many(kept), done })
    }

    /// The notifications, in order.
    pub fn notifications(&self) -> &[Notification] {
        match &self.notifications {
            Notifications::One(n) => std::slice::from_ref(n),
            Notifications::Many(v) => v,
        }
    }

    /// The single notification, if the publication holds exactly one (the
    /// common case: one `notify`), else the publication itself.
    pub fn into_single(self) -> Result<(Notification, Done), Publication> {
        match self.notifications {
            Notifications::One(n) => Ok((n, self.done)),
            Notifications::Many(_) => Err(self),
        }
    }

    /// The notifications, in order, and the handle that reports the outcome.
    pub fn into_parts(self) -> (impl Iterator<Item = Notification>, Done) {
        let (one, many) = match self.notifications {
            Notifications::One(n) => (Some(n), Vec::new()),
            Notifications::Many(v) => (None, v),
        };
        (one.into_iter().chain(many), self.done)
    }
}

impl fmt::Debug for Publication {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Publication").field("notifications", &self.notifications().len()).finish()
    }
}

/// Reports the outcome of a [`Publication`] to its caller, if one waits.
#[derive(Debug)]
pub struct Done(Option<oneshot::Sender<Result<(), PublishError>>>);

impl Done {
    /// Tells the waiting caller (if any) how it went; a failure is logged
    /// either way.
    pub fn finish(self, result: Result<(), PublishError>) {
        if let Err(e) = &result {
            tracing::warn!(error = %e, "tidings: a notification was not published");
        }
        if let Some(done) = self.0 {
            let _ = done.send(result);
        }
    }
}

/// The backplane for a `redis://`, `rediss://`, `postgres://` or
/// `postgresql://` URL, if its feature is enabled.
pub fn from_url(url: &str) -> Result<Box<dyn Backplane>, PublishError> {
    #[cfg(feature = "redis")]
    if url.starts_with("redis://") || url.starts_with("rediss://") {
        return Ok(Box::new(Redis::new(url)));
    }
    #[cfg(feature = "postgres")]
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Box::new(Postgres::new(url)));
    }
    Err(PublishError::Backplane(format!(
        "no backplane for `{url}` (redis:// needs feature `redis`, postgres:// needs feature `postgres`)"
    )))
}

/// Why a notification could not be published.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PublishError {
    /// The backplane is unreachable or refused the notification. The
    /// application's write has already happened: the notification is lost
    /// for other clients unless the caller retries. Clients are not left
    /// with a silent gap: with Redis, every instance tells its clients to
    /// `resync` once Redis takes writes again; instances that lose their
    /// backplane connection send `resync` to their clients when it returns
    /// (Redis: unless the stream still holds everything they missed).
    Backplane(String),
    /// The notification is larger than the backplane accepts (PostgreSQL
    /// NOTIFY payloads are limited to 8000 bytes): send ids, not rows.
    TooLarge {
        /// The encoded size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The notifier is gone.
    Closed,
    /// The collection is reserved (it starts with `$`): see
    /// [`Notification::new`].
    Reserved(String),
}

impl fmt::Display for PublishError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PublishError::Backplane(e) => write!(f, "backplane unavailable: {e}"),
            PublishError::TooLarge { size, limit } => {
                write!(f, "notification of {size} bytes exceeds the backplane's limit of {limit}")
            }
            PublishError::Closed => f.write_str("the notifier is shut down"),
            PublishError::Reserved(collection) => {
                write!(f, "`{collection}` is reserved: collections starting with `$` are the hub's own")
            }
        }
    }
}

impl std::error::Error for PublishError {}
