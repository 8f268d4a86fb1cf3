//! The hub: the shared history, the registry of live sessions, and the
//! fan-out task that hands each notification to the sessions that may
//! receive it.
//!
//! The caller of `notify` only publishes; with the in-process backplane that
//! is an append to the history and a poke of the fan-out task. The fan-out
//! happens on that task, off the caller's path, so the caller's cost does
//! not grow with the number of clients; and it finds the sessions through
//! an index of their subscriptions, so its own cost grows with the number
//! of receivers, not of sessions. Each woken session then pulls its frames
//! from the history itself.
//!
//! The hub is a [`Receiver`]: whatever the backplane brings back arrives
//! here, and only here.

mod control;
mod fanout;
mod frame;
mod history;
mod mailbox;
mod protocol;
mod session;
mod subscriptions;

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use tokio::sync::{Notify, oneshot, watch};
use tokio_util::sync::CancellationToken;

pub(crate) use control::{Reauthenticate, Who};
pub(crate) use frame::Frame;
pub(crate) use history::History;
pub(crate) use mailbox::Mailbox;
pub(crate) use protocol::{ClientFrame, ServerFrame};
pub(crate) use session::{Connection, Session};
pub(crate) use subscriptions::Subscriptions;

use crate::backplane::{Link, Part, Publication, PublishError, Receiver};
use crate::metrics::Metrics;
use crate::{Config, Cursor, Identity, Notification, SessionId, SessionToken};

/// How long a session opening at start-up waits for the backplane to load
/// its history before it opens anyway (an unplaceable cursor then gets
/// `resync`).
const READY_WAIT: Duration = Duration::from_secs(2);

/// How long a session resuming with a stream id beyond this instance's head
/// waits for this instance to read that far (another instance may have read
/// it first): more than the outbox reader's default poll interval (1 s).
/// After it, a cursor still beyond the head gets `resync`.
const CATCH_UP_WAIT: Duration = Duration::from_millis(1500);

pub(crate) struct Hub {
    /// This hub among the instances sharing a backplane, chosen at random:
    /// the sender of its orders to the others ([`control`]).
    pub(crate) id: u64,
    /// Limits, timeouts and hooks, read by sessions and transports.
    pub(crate) config: Config,
    /// The recent notifications: every session's queue and the replay buffer.
    pub(crate) history: History,
    /// Where notifications are published; set once, right after the hub is
    /// created (the backplane needs a handle on the hub to start).
    link: OnceLock<Box<dyn Link>>,
    /// Each live session's signals and identity, by public id.
    sessions: DashMap<SessionId, Registration>,
    /// The sessions by what they subscribed to: whom the fan-out hands
    /// each notification.
    index: fanout::Index,
    /// Pokes the fan-out task after each delivery.
    fan_out: Arc<Notify>,
    /// Signalled by the fan-out task after each batch: the history moved
    /// on (what a resuming session waits on, see [`Hub::catch_up_to`]).
    advanced: Notify,
    /// The number of sessions: shutdown waits on it, applications watch it.
    count: watch::Sender<usize>,
    /// Cancelled when shutdown starts: sessions close with 1001 and new ones
    /// are refused.
    closing: CancellationToken,
    /// The origin of [`now_ms`](Self::now_ms).
    started: Instant,
    /// False until the backplane has loaded its history (Redis), so that
    /// sessions resuming at start-up find their cursor.
    ready: watch::Sender<bool>,
    /// Why the backplane is degraded, if it is, part by part.
    degraded: Mutex<Degraded>,
    /// The handles this notifier records its metrics through.
    pub(crate) metrics: Metrics,
}

/// What the hub keeps of a live session: its mailbox (to tell it to resync
/// when the backplane is interrupted), how to tell it to close for
/// re-authentication, and who it is (to find it by audience or user).
struct Registration {
    mailbox: Arc<Mailbox>,
    reauthenticate: CancellationToken,
    identity: Arc<Identity>,
}

/// The state of each part of the backplane: `Some(reason)` while broken.
#[derive(Default)]
struct Degraded {
    listener: Option<String>,
    publisher: Option<String>,
}

impl Hub {
    /// Creates the hub, starts its backplane and spawns its fan-out task on
    /// the current tokio runtime.
    pub(crate) fn start(config: Config) -> Arc<Hub> {
        let epoch = RandomState::new().hash_one(std::time::SystemTime::now()) as u32;
        let streamed = config.backplane.assigns_cursors();
        let hub = Arc::new(Hub {
            id: RandomState::new().hash_one(epoch),
            history: if streamed {
                History::for_stream(epoch, config.replay_capacity)
            } else {
                History::new(epoch, config.replay_capacity)
            },
            config,
            link: OnceLock::new(),
            sessions: DashMap::new(),
            index: fanout::Index::default(),
            fan_out: Arc::new(Notify::new()),
            advanced: Notify::new(),
            count: watch::Sender::new(0),
            closing: CancellationToken::new(),
            started: Instant::now(),
            ready: watch::Sender::new(!streamed),
            degraded: Mutex::new(Degraded::default()),
            metrics: Metrics::register(),
        });
        tokio::spawn(fanout::run(Arc::downgrade(&hub), hub.fan_out.clone()));
        let receiver: Weak<dyn Receiver> = Arc::downgrade(&hub) as Weak<Hub>;
        let link = hub.config.backplane.start(receiver);
        if hub.link.set(link).is_err() {
            unreachable!("the link is set once, here");
        }
        hub
    }

    /// Publishes through the backplane, which brings the notifications back
    /// to every instance's hub, this one included.
    pub(crate) fn publish(&self, publication: Publication) {
        let Some(publication) = publication.without_reserved() else { return };
        self.metrics.emitted(publication.notifications().len());
        self.link.get().expect("the link is set at start").publish(self, publication);
    }

    /// Publishes `n` and waits until the backplane took it or failed.
    pub(crate) async fn publish_and_wait(&self, n: Notification) -> Result<(), PublishError> {
        let (done, result) = oneshot::channel();
        self.publish(Publication::one(n).reporting_to(done));
        result.await.unwrap_or(Err(PublishError::Closed))
    }

    /// Writes `notifications` in the application's transaction through the
    /// backplane (the outbox's table, PostgreSQL's `pg_notify`), commits
    /// it, and counts them as emitted. `Ok(Err(txn))`, not committed, when
    /// the backplane cannot: the caller commits and publishes after.
    #[cfg(feature = "sea-orm")]
    pub(crate) async fn publish_in_transaction(
        &self,
        txn: sea_orm::DatabaseTransaction,
        notifications: &[Notification],
    ) -> Result<Result<(), sea_orm::DatabaseTransaction>, sea_orm::DbErr> {
        let link: &dyn Link = self.link.get().expect("the link is set at start").as_ref();
        if !link.publish_in_transaction(&txn, notifications).await? {
            return Ok(Err(txn));
        }
        txn.commit().await?;
        link.committed();
        self.metrics.emitted(notifications.len());
        Ok(Ok(()))
    }

    /// What a session waits for before it opens with `resume` (its cursor,
    /// if any): the history loaded, and this instance caught up with the
    /// cursor. Both waits are bounded; after them an unplaceable cursor gets
    /// `resync`.
    pub(crate) async fn wait_to_open(&self, resume: Option<&str>) {
        self.wait_ready().await;
        self.catch_up_to(resume).await;
    }

    /// Waits (a little) until the backplane has loaded its history, so a
    /// session that resumes right after start-up finds its cursor. After the
    /// wait it opens anyway: an unplaceable cursor then gets `resync`.
    async fn wait_ready(&self) {
        if *self.ready.borrow() {
            return;
        }
        let mut ready = self.ready.subscribe();
        let _ = tokio::time::timeout(READY_WAIT, ready.wait_for(|r| *r)).await;
    }

    /// Waits (a little, [`CATCH_UP_WAIT`]) until this instance has read as
    /// far as `resume`, when it is a stream id beyond the history's head:
    /// another instance may have read it first, and this one is about to.
    /// After the wait a cursor still beyond the head cannot be placed, and
    /// gets `resync`: a crafted cursor, or one from a log that was restored
    /// to an earlier state, never skips what comes.
    async fn catch_up_to(&self, resume: Option<&str>) {
        let Some(cursor) = resume.and_then(|raw| raw.parse::<Cursor>().ok()) else { return };
        let deadline = tokio::time::Instant::now() + CATCH_UP_WAIT;
        loop {
            let advanced = self.advanced.notified();
            tokio::pin!(advanced);
            advanced.as_mut().enable();
            if !self.history.is_behind(cursor) {
                return;
            }
            if tokio::time::timeout_at(deadline, advanced).await.is_err() {
                return;
            }
        }
    }

    /// Waits, without limit, until the backplane has loaded its history.
    pub(crate) async fn wait_loaded(&self) {
        let mut ready = self.ready.subscribe();
        let _ = ready.wait_for(|r| *r).await;
    }

    /// Why the backplane is degraded, if it is.
    pub(crate) fn degraded(&self) -> Option<String> {
        let degraded = self.degraded.lock().unwrap_or_else(|e| e.into_inner());
        degraded.listener.clone().or_else(|| degraded.publisher.clone())
    }

    /// Adds a session and files it under `subscriptions`: every
    /// notification delivered from now on that it may receive is handed to
    /// its mailbox. Returns the session's new secret token (it is
    /// registered under the token's public id), its mailbox, and the token
    /// cancelled when it must re-authenticate.
    pub(crate) fn register(
        &self,
        identity: Arc<Identity>,
        subscriptions: &Subscriptions,
    ) -> (SessionToken, Arc<Mailbox>, CancellationToken) {
        let mailbox = Arc::new(Mailbox::new(self.config.replay_capacity));
        let reauthenticate = CancellationToken::new();
        loop {
            // Two tokens whose ids collide (2^-64 per pair) only cost a retry.
            let token = SessionToken::generate();
            if let dashmap::Entry::Vacant(slot) = self.sessions.entry(token.id()) {
                let registration = Registration {
                    mailbox: mailbox.clone(),
                    reauthenticate: reauthenticate.clone(),
                    identity,
                };
                self.index.join(token.id(), &mailbox, registration.identity.audiences());
                slot.insert(registration);
                self.index.add(token.id(), &mailbox, subscriptions);
                self.count.send_modify(|n| *n += 1);
                return (token, mailbox, reauthenticate);
            }
        }
    }

    /// Tells every session whose identity `matches` to close with 4401
    /// (`reauthenticate`); returns how many were told.
    pub(crate) fn reauthenticate(&self, matches: impl Fn(&Identity) -> bool) -> usize {
        let mut told = 0;
        for session in self.sessions.iter() {
            if matches(&session.identity) {
                session.reauthenticate.cancel();
                told += 1;
            }
        }
        told
    }

    /// Acts on `n` if it is an order between hubs ([`control`]), rather than
    /// a notification for clients; true if it was one (or an application's
    /// notification about a reserved collection, dropped).
    fn obey(&self, n: &Notification) -> bool {
        match Reauthenticate::carried_by(n) {
            // Any other reserved name was written by something else than
            // this crate (a row inserted by hand, another program on the
            // stream): never for clients.
            None if n.is_reserved() => {
                tracing::warn!(collection = %n.collection, "tidings: dropped a notification about a reserved collection");
                true
            }
            None => false,
            // This hub's own order came back: its sessions were told when
            // it was given.
            Some(Some(order)) if order.from == self.id => true,
            Some(Some(order)) => {
                let told = self.reauthenticate(|identity| order.concerns(identity));
                tracing::info!(?order, told, "tidings: sessions told to reauthenticate");
                true
            }
            Some(None) => {
                tracing::warn!("tidings: dropped a malformed reauthenticate order");
                true
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

    /// Cancelled when shutdown starts.
    pub(crate) fn closing(&self) -> CancellationToken {
        self.closing.clone()
    }

    pub(crate) fn is_closing(&self) -> bool {
        self.closing.is_cancelled()
    }

    /// Milliseconds since the hub started: a cheap clock for liveness stamps.
    pub(crate) fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Tells every session to close with 1001 and waits until all are gone or
    /// the shutdown timeout passes.
    ///
    /// (Waiting on the session count rather than on a task tracker: SSE
    /// sessions are response bodies, not tasks, and the count is kept
    /// anyway for [`watch_sessions`](Self::watch_sessions).)
    pub(crate) async fn shutdown(&self) {
        self.closing.cancel();
        let mut count = self.count.subscribe();
        let all_closed = count.wait_for(|n| *n == 0);
        if tokio::time::timeout(self.config.shutdown_timeout, all_closed).await.is_err() {
            tracing::warn!(
                sessions = self.session_count(),
                "tidings: sessions still open after the shutdown timeout"
            );
        }
    }

    /// Tells every session it may have lost notifications: it resyncs
    /// before it reads on.
    fn lag_every_session(&self, why: mailbox::Lag) {
        for session in self.sessions.iter() {
            session.mailbox.lag(why);
        }
    }
}

impl Receiver for Hub {
    fn deliver(&self, notifications: &mut dyn Iterator<Item = (Notification, Option<Cursor>)>) {
        self.history.append(&mut notifications.filter(|(n, _)| !self.obey(n)));
        self.fan_out.notify_one();
    }

    fn deliver_one(&self, notification: Notification, cursor: Option<Cursor>) {
        if self.obey(&notification) {
            return;
        }
        self.history.append_one(notification, cursor);
        self.fan_out.notify_one();
    }

    fn interrupt(&self, at: Option<Cursor>) {
        match at {
            Some(at) => {
                tracing::warn!(%at, "tidings: notifications may have been lost; every session is told to resync");
                self.history.interrupt_at(at);
            }
            None => {
                tracing::warn!("tidings: backplane interrupted; every session is told to resync");
                self.history.interrupt();
            }
        }
        self.lag_every_session(mailbox::Lag::Interrupted);
    }

    fn ready(&self, floor: Option<Cursor>) {
        if let Some(floor) = floor {
            self.history.set_floor(floor);
        }
        self.history.mark_loaded();
        self.ready.send_replace(true);
    }

    fn degraded(&self, part: Part, reason: Option<String>) {
        let mut degraded = self.degraded.lock().unwrap_or_else(|e| e.into_inner());
        let slot = match part {
            Part::Listener => &mut degraded.listener,
            Part::Publisher => &mut degraded.publisher,
        };
        if *slot != reason {
            match &reason {
                Some(r) => tracing::warn!(?part, reason = %r, "tidings: backplane degraded"),
                None => tracing::info!(?part, "tidings: backplane connected"),
            }
            *slot = reason;
        }
    }

    fn capacity(&self) -> usize {
        self.config.replay_capacity
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        // Lets the fan-out task notice the hub is gone and end.
        self.fan_out.notify_one();
    }
}
