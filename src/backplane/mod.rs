//! Several instances of an application, one stream of notifications.
//!
//! By default notifications stay in the process. With a backplane, each
//! notification is published once to Redis or PostgreSQL, and every instance
//! (the publishing one included) reads it back and delivers it to its own
//! sessions: one path, no double delivery, the same order everywhere.
//!
//! ```no_run
//! use tidings::{Backplane, Config, Notifier};
//!
//! # #[tokio::main] async fn main() {
//! // One line of configuration; handlers do not change.
//! let notifier = Notifier::with_config(Config::default().backplane(Backplane::from_url("redis://127.0.0.1:6379").unwrap()));
//! # }
//! ```
//!
//! See `docs/scaling.md` for what each backplane guarantees.

use std::borrow::Cow;
use std::fmt;
use std::sync::Weak;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};

use crate::hub::Hub;
use crate::{Notification, Op, SessionToken};

#[cfg(feature = "postgres")]
pub(crate) mod postgres;
#[cfg(feature = "redis")]
pub(crate) mod redis;

/// Where notifications travel between instances. See the [module docs](self).
#[derive(Debug, Clone, Default)]
pub struct Backplane {
    pub(crate) kind: Kind,
}

#[derive(Debug, Clone, Default)]
pub(crate) enum Kind {
    #[default]
    InProcess,
    #[cfg(feature = "redis")]
    Redis(redis::Options),
    #[cfg(feature = "postgres")]
    Postgres(postgres::Options),
}

impl Backplane {
    /// No backplane: notifications reach the sessions of this process only.
    pub fn in_process() -> Self {
        Backplane::default()
    }

    /// Redis Streams (Redis 5 or later; feature `redis`): `XADD` to one
    /// stream (default key `tidings`, trimmed to about 10 000 entries), read
    /// by every instance. Cursors are stream ids, valid on every instance.
    #[cfg(feature = "redis")]
    pub fn redis(url: impl Into<String>) -> Self {
        Backplane { kind: Kind::Redis(redis::Options::new(url.into())) }
    }

    /// PostgreSQL `LISTEN/NOTIFY` (feature `postgres`) on one channel
    /// (default `tidings`). NOTIFY keeps no history: cursors are local to
    /// each instance.
    #[cfg(feature = "postgres")]
    pub fn postgres(url: impl Into<String>) -> Self {
        Backplane { kind: Kind::Postgres(postgres::Options::new(url.into())) }
    }

    /// The backplane for a `redis://`, `rediss://`, `postgres://` or
    /// `postgresql://` URL, if its feature is enabled.
    pub fn from_url(url: &str) -> Result<Self, PublishError> {
        #[cfg(feature = "redis")]
        if url.starts_with("redis://") || url.starts_with("rediss://") {
            return Ok(Backplane::redis(url));
        }
        #[cfg(feature = "postgres")]
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Backplane::postgres(url));
        }
        Err(PublishError::Backplane(format!(
            "no backplane for `{url}` (redis:// needs feature `redis`, postgres:// needs feature `postgres`)"
        )))
    }

    /// The Redis stream key or PostgreSQL channel name to use (default
    /// `tidings`). Instances that share it share their notifications.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        match &mut self.kind {
            Kind::InProcess => drop(name),
            #[cfg(feature = "redis")]
            Kind::Redis(o) => o.key = name.into(),
            #[cfg(feature = "postgres")]
            Kind::Postgres(o) => o.channel = name.into(),
        }
        self
    }

    pub(crate) fn label(&self) -> &'static str {
        match self.kind {
            Kind::InProcess => "in-process",
            #[cfg(feature = "redis")]
            Kind::Redis(_) => "redis",
            #[cfg(feature = "postgres")]
            Kind::Postgres(_) => "postgres",
        }
    }
}

/// Why a notification could not be published.
#[derive(Debug, Clone, PartialEq, Eq)]
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
}

impl fmt::Display for PublishError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PublishError::Backplane(e) => write!(f, "backplane unavailable: {e}"),
            PublishError::TooLarge { size, limit } => {
                write!(f, "notification of {size} bytes exceeds the backplane's limit of {limit}")
            }
            PublishError::Closed => f.write_str("the notifier is shut down"),
        }
    }
}

impl std::error::Error for PublishError {}

/// A notification on its way to the backplane, with a way to tell the
/// caller of [`Notifier::publish`](crate::Notifier::publish) how it went.
#[cfg_attr(not(any(feature = "redis", feature = "postgres")), allow(dead_code))]
pub(crate) struct Outgoing {
    /// Encoded notifications, published together and in order (a batch).
    pub(crate) payloads: Vec<String>,
    pub(crate) done: Option<oneshot::Sender<Result<(), PublishError>>>,
}

impl Outgoing {
    pub(crate) fn finish(self, result: Result<(), PublishError>) {
        if let Err(e) = &result {
            tracing::warn!(error = %e, "tidings: a notification was not published");
        }
        if let Some(done) = self.done {
            let _ = done.send(result);
        }
    }
}

/// How the hub hands notifications to other instances.
pub(crate) enum Link {
    /// Straight into this process's history.
    Local,
    /// To the backplane's publisher task.
    Remote(mpsc::UnboundedSender<Outgoing>),
}

/// Creates the link and, for a remote backplane, the receiving end that
/// [`start`] drives.
pub(crate) fn link(backplane: &Backplane) -> (Link, Option<mpsc::UnboundedReceiver<Outgoing>>) {
    match backplane.kind {
        Kind::InProcess => (Link::Local, None),
        #[allow(unreachable_patterns)]
        _ => {
            let (tx, rx) = mpsc::unbounded_channel();
            (Link::Remote(tx), Some(rx))
        }
    }
}

/// Whether the backplane loads history at start-up (sessions wait for it).
pub(crate) fn loads_history(backplane: &Backplane) -> bool {
    match backplane.kind {
        #[cfg(feature = "redis")]
        Kind::Redis(_) => true,
        #[allow(unreachable_patterns)]
        _ => false,
    }
}

/// Spawns the backplane's publisher and subscriber tasks.
#[allow(unused_variables)]
pub(crate) fn start(backplane: &Backplane, outgoing: mpsc::UnboundedReceiver<Outgoing>, hub: Weak<Hub>) {
    match &backplane.kind {
        Kind::InProcess => {}
        #[cfg(feature = "redis")]
        Kind::Redis(options) => redis::start(options.clone(), outgoing, hub),
        #[cfg(feature = "postgres")]
        Kind::Postgres(options) => postgres::start(options.clone(), outgoing, hub),
    }
}

/// For a backplane that cannot even start (a malformed URL): health says
/// why, and every publish fails with that reason.
#[cfg_attr(not(any(feature = "redis", feature = "postgres")), allow(dead_code))]
pub(crate) fn unusable(reason: String, mut outgoing: mpsc::UnboundedReceiver<Outgoing>, hub: Weak<Hub>) {
    if let Some(hub) = hub.upgrade() {
        hub.set_degraded(crate::hub::Part::Listener, Some(reason.clone()));
    }
    tokio::spawn(async move {
        while let Some(out) = outgoing.recv().await {
            out.finish(Err(PublishError::Backplane(reason.clone())));
        }
    });
}

/// A notification as it travels between instances: the fields, not the
/// frame, since each instance assigns the cursor it puts in the frame.
#[derive(Serialize, Deserialize)]
struct Envelope<'a> {
    /// Unique per process: PostgreSQL folds identical payloads sent in one
    /// transaction into one, which would swallow a repeated notification.
    #[serde(default)]
    n: u64,
    #[serde(borrow)]
    collection: Cow<'a, str>,
    op: Op,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    data: Option<&'a RawValue>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    audience: Option<Cow<'a, str>>,
    /// The originating session's token: the skip needs it, and every
    /// instance derives the public id from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    token: Option<SessionToken>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    deliver_to_origin: bool,
}

pub(crate) fn encode(n: &Notification) -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let envelope = Envelope {
        n: NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        collection: Cow::Borrowed(&n.collection),
        op: n.op,
        data: n.data.as_deref(),
        audience: n.audience.as_deref().map(Cow::Borrowed),
        token: n.origin,
        deliver_to_origin: !n.skip_origin,
    };
    serde_json::to_string(&envelope).expect("an envelope always serializes")
}

#[cfg_attr(not(any(feature = "redis", feature = "postgres")), allow(dead_code))]
pub(crate) fn decode(payload: &str) -> Result<Notification, serde_json::Error> {
    let e: Envelope = serde_json::from_str(payload)?;
    let mut n = Notification::new(e.collection.into_owned(), e.op);
    if let Some(data) = e.data {
        n = n.with_raw_data(data.to_owned());
    }
    if let Some(audience) = e.audience {
        n = n.to(audience.as_ref());
    }
    if let Some(token) = e.token {
        n = n.from_session(token);
    }
    if e.deliver_to_origin {
        n = n.deliver_to_origin();
    }
    Ok(n)
}

/// Exponential backoff with jitter for reconnecting, from 100 ms to 5 s.
#[cfg_attr(not(any(feature = "redis", feature = "postgres")), allow(dead_code))]
pub(crate) struct Backoff(u32);

#[cfg_attr(not(any(feature = "redis", feature = "postgres")), allow(dead_code))]
impl Backoff {
    pub(crate) fn new() -> Self {
        Backoff(0)
    }

    pub(crate) fn reset(&mut self) {
        self.0 = 0;
    }

    pub(crate) async fn wait(&mut self) {
        use std::hash::BuildHasher;
        let base = 100u64 << self.0.min(6);
        let jitter = std::collections::hash_map::RandomState::new().hash_one(self.0) % (base / 2 + 1);
        self.0 += 1;
        tokio::time::sleep(std::time::Duration::from_millis((base + jitter).min(5_000))).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip() {
        let token = crate::session::SessionToken::generate();
        let n = Notification::new("posts", Op::Delete)
            .with_data(&serde_json::json!({"id": 3}))
            .unwrap()
            .to("user:1")
            .from_session(token)
            .deliver_to_origin();
        let back = decode(&encode(&n)).unwrap();
        assert_eq!(back.collection(), "posts");
        assert_eq!(back.op(), Op::Delete);
        assert_eq!(back.data().unwrap().get(), r#"{"id":3}"#);
        assert_eq!(back.audience(), Some("user:1"));
        assert_eq!(back.origin(), Some(token.id()));
        assert!(back.skipped_session().is_none());
        let skipping = decode(&encode(&Notification::new("posts", Op::Insert).from_session(token))).unwrap();
        assert_eq!(skipping.skipped_session(), Some(token), "the receiving instance skips the same session");
        let plain = Notification::new("forums", Op::Insert);
        assert_ne!(encode(&plain), encode(&plain), "each envelope is unique");
        assert!(encode(&plain).ends_with(r#""collection":"forums","op":"insert"}"#));
        assert_eq!(decode(&encode(&plain)).unwrap().skipped_session(), None);
        assert_eq!(decode(r#"{"collection":"a","op":"update"}"#).unwrap().collection(), "a");
    }
}
