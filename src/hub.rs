//! Fan-out: the registry of live sessions and the task that wakes them.
//!
//! The caller of `notify` only appends to the history and pokes one
//! dispatcher task; waking N sessions happens on that task, off the caller's
//! path, so the caller's cost does not grow with the number of clients.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::{Arc, Weak};
use std::time::Instant;

use dashmap::DashMap;
use tokio::sync::{Notify, watch};

use crate::backplane::{self, Link, Outgoing, PublishError};
use crate::history::History;
use crate::{Config, Cursor, Notification, SessionId, SessionToken};

pub(crate) struct Hub {
    pub(crate) config: Config,
    pub(crate) history: History,
    /// Each live session's wake-up signal.
    sessions: DashMap<SessionId, Arc<Notify>>,
    dispatch: Arc<Notify>,
    count: watch::Sender<usize>,
    closing: watch::Sender<bool>,
    started: Instant,
    link: Link,
    /// False until the backplane has loaded its history (Redis), so that
    /// sessions resuming at start-up find their cursor.
    ready: watch::Sender<bool>,
    /// Why the backplane is degraded, if it is: [listener, publisher].
    degraded: std::sync::Mutex<[Option<String>; 2]>,
}

impl Hub {
    /// Creates the hub and spawns its dispatcher on the current tokio runtime.
    pub(crate) fn start(config: Config) -> Arc<Hub> {
        let epoch = RandomState::new().hash_one(std::time::SystemTime::now()) as u32;
        let (link, outgoing) = backplane::link(&config.backplane);
        let ready = watch::Sender::new(!backplane::loads_history(&config.backplane));
        // A backplane is degraded until its listener is connected.
        let connecting = matches!(link, Link::Remote(_)).then(|| "connecting to the backplane".to_owned());
        let hub = Arc::new(Hub {
            history: if backplane::loads_history(&config.backplane) {
                History::for_stream(epoch, config.replay_capacity)
            } else {
                History::new(epoch, config.replay_capacity)
            },
            config,
            sessions: DashMap::new(),
            dispatch: Arc::new(Notify::new()),
            count: watch::Sender::new(0),
            closing: watch::Sender::new(false),
            started: Instant::now(),
            link,
            ready,
            degraded: std::sync::Mutex::new([connecting, None]),
        });
        tokio::spawn(dispatch(Arc::downgrade(&hub), hub.dispatch.clone()));
        if let Some(outgoing) = outgoing {
            backplane::start(&hub.config.backplane, outgoing, Arc::downgrade(&hub));
        }
        hub
    }

    /// Sends `n` on its way: into the history, or to the backplane, which
    /// brings it back to every instance. Backplane errors are logged.
    pub(crate) fn emit(&self, n: Notification) {
        match &self.link {
            Link::Local => self.deliver(n, None),
            Link::Remote(publisher) => {
                hand_off(publisher, Outgoing { payloads: vec![backplane::encode(&n)], done: None })
            }
        }
    }

    /// Emits a committed batch, all of it together: locally under one lock
    /// and one wake-up; through a backplane as one atomic publication.
    pub(crate) fn emit_all(&self, notifications: Vec<Notification>) {
        match &self.link {
            Link::Local => self.deliver_all(notifications.into_iter().map(|n| (n, None)).collect()),
            Link::Remote(publisher) => {
                let payloads = notifications.iter().map(backplane::encode).collect();
                hand_off(publisher, Outgoing { payloads, done: None });
            }
        }
    }

    /// Like [`emit`](Self::emit), and says whether the backplane took it.
    pub(crate) async fn publish(&self, n: Notification) -> Result<(), PublishError> {
        match &self.link {
            Link::Local => {
                self.deliver(n, None);
                Ok(())
            }
            Link::Remote(publisher) => {
                let (done, result) = tokio::sync::oneshot::channel();
                hand_off(publisher, Outgoing { payloads: vec![backplane::encode(&n)], done: Some(done) });
                result.await.unwrap_or(Err(PublishError::Closed))
            }
        }
    }

    /// Stores `n` in the history (under the backplane's cursor, if it gave
    /// one) and schedules the wake-up of every session.
    pub(crate) fn deliver(&self, n: Notification, cursor: Option<Cursor>) {
        match cursor {
            Some(cursor) => self.history.append_at(n, cursor),
            None => self.history.append(n),
        };
        self.dispatch.notify_one();
    }

    /// Stores several notifications under one lock, then wakes once.
    pub(crate) fn deliver_all(&self, items: Vec<(Notification, Option<Cursor>)>) {
        self.history.append_all(items);
        self.dispatch.notify_one();
    }

    /// Notifications may have been lost upstream: every session resyncs.
    #[cfg_attr(not(any(feature = "redis", feature = "postgres")), allow(dead_code))]
    pub(crate) fn interrupt(&self) {
        tracing::warn!("tidings: backplane interrupted; every session is told to resync");
        self.history.interrupt();
        self.dispatch.notify_one();
    }

    /// Notifications before the stream id `at` may have been lost: every
    /// session resyncs, and cursors before `at` no longer resume.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn interrupt_at(&self, at: Cursor) {
        tracing::warn!(%at, "tidings: notifications may have been lost; every session is told to resync");
        self.history.interrupt_at(at);
        self.dispatch.notify_one();
    }

    /// The backplane has loaded its history.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn set_ready(&self) {
        self.history.mark_loaded();
        self.ready.send_replace(true);
    }

    /// Waits (a little) until the backplane has loaded its history, so a
    /// session that resumes right after start-up finds its cursor. After the
    /// wait it opens anyway: an unplaceable cursor then gets `resync`.
    pub(crate) async fn ready(&self) {
        if *self.ready.borrow() {
            return;
        }
        let mut ready = self.ready.subscribe();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), ready.wait_for(|r| *r)).await;
    }

    /// Records the state of one part of the backplane connection.
    #[cfg_attr(not(any(feature = "redis", feature = "postgres")), allow(dead_code))]
    pub(crate) fn set_degraded(&self, part: Part, reason: Option<String>) {
        let mut degraded = self.degraded.lock().unwrap_or_else(|e| e.into_inner());
        let slot = &mut degraded[part as usize];
        if *slot != reason {
            match &reason {
                Some(r) => tracing::warn!(reason = %r, "tidings: backplane degraded"),
                None => tracing::info!("tidings: backplane connected"),
            }
            *slot = reason;
        }
    }

    #[cfg(feature = "postgres")]
    pub(crate) fn postgres_options(&self) -> Option<&backplane::postgres::Options> {
        match &self.config.backplane.kind {
            backplane::Kind::Postgres(options) => Some(options),
            #[allow(unreachable_patterns)]
            _ => None,
        }
    }

    pub(crate) fn degraded(&self) -> Option<String> {
        let degraded = self.degraded.lock().unwrap_or_else(|e| e.into_inner());
        degraded.iter().flatten().next().cloned()
    }

    /// Adds a session; it is woken for every notification emitted from now on.
    /// Returns the session's new secret token; it is registered under the
    /// token's public id.
    pub(crate) fn register(&self) -> (SessionToken, Arc<Notify>) {
        let wake = Arc::new(Notify::new());
        loop {
            // Two tokens whose ids collide (2^-64 per pair) only cost a retry.
            let token = SessionToken::generate();
            if let dashmap::Entry::Vacant(slot) = self.sessions.entry(token.id()) {
                slot.insert(wake.clone());
                self.count.send_modify(|n| *n += 1);
                return (token, wake);
            }
        }
    }

    pub(crate) fn unregister(&self, id: SessionId) {
        if self.sessions.remove(&id).is_some() {
            self.count.send_modify(|n| *n -= 1);
        }
    }

    pub(crate) fn session_count(&self) -> usize {
        *self.count.borrow()
    }

    pub(crate) fn watch_sessions(&self) -> watch::Receiver<usize> {
        self.count.subscribe()
    }

    pub(crate) fn closing(&self) -> watch::Receiver<bool> {
        self.closing.subscribe()
    }

    pub(crate) fn is_closing(&self) -> bool {
        *self.closing.borrow()
    }

    /// Milliseconds since the hub started: a cheap clock for liveness stamps.
    pub(crate) fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Tells every session to close with 1001 and waits until all are gone or
    /// the shutdown timeout passes.
    pub(crate) async fn shutdown(&self) {
        self.closing.send_replace(true);
        let mut count = self.count.subscribe();
        let all_closed = count.wait_for(|n| *n == 0);
        if tokio::time::timeout(self.config.shutdown_timeout, all_closed).await.is_err() {
            tracing::warn!(
                sessions = self.session_count(),
                "tidings: sessions still open after the shutdown timeout"
            );
        }
    }

    fn wake_sessions(&self) {
        for session in self.sessions.iter() {
            session.value().notify_one();
        }
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        // Lets the dispatcher notice the hub is gone and end.
        self.dispatch.notify_one();
    }
}

/// Queues notifications for the backplane's publisher task; if it is gone,
/// the notifications fail as `Closed` (logged, and told to a waiting caller).
fn hand_off(publisher: &tokio::sync::mpsc::UnboundedSender<Outgoing>, out: Outgoing) {
    if let Err(e) = publisher.send(out) {
        e.0.finish(Err(PublishError::Closed));
    }
}

/// The two connections a backplane keeps.
#[cfg_attr(not(any(feature = "redis", feature = "postgres")), allow(dead_code))]
#[derive(Clone, Copy)]
pub(crate) enum Part {
    /// Reads notifications (Redis XREAD, PostgreSQL LISTEN).
    Listener = 0,
    /// Sends them (XADD, pg_notify).
    Publisher = 1,
}

/// Resolves once the hub starts shutting down (or is gone).
pub(crate) async fn shutting_down(closing: &mut watch::Receiver<bool>) {
    // An error means the hub is gone, which is a shutdown too.
    let _ = closing.wait_for(|c| *c).await;
}

/// Wakes the sessions after each burst of emitted notifications. A burst of
/// any length costs one pass over the sessions, since `notify_one` keeps at
/// most one pending wake-up.
async fn dispatch(hub: Weak<Hub>, signal: Arc<Notify>) {
    loop {
        signal.notified().await;
        match hub.upgrade() {
            Some(hub) => hub.wake_sessions(),
            None => return,
        }
    }
}
