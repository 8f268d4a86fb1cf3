//! One connected client, whatever carries its frames: its identity, its
//! subscriptions and its position in the shared history.

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;
use tracing::field;

use super::Hub;
use super::frame::{Frame, Outbox};
use super::history::{Entry, Read, Seen};
use super::mailbox::{Lag, Mailbox, Taken};
use super::protocol::ServerFrame;
use super::subscriptions::{Refusal, Subscriptions};
use crate::metrics::{ResyncCause, SessionMetrics, Transport};
use crate::{Cursor, ErrorCode, Identity, SessionId, SessionToken};

/// How many log entries a session reads per batch: bounds how long the
/// history's read lock is held and how many frames one write gathers.
const BATCH: usize = 128;

/// A registered session. Dropping it unregisters it, whichever way the
/// connection ends (close, error, timeout, panic).
pub(crate) struct Session {
    /// This session's secret: notifications caused with it are skipped.
    token: SessionToken,
    hub: Arc<Hub>,
    identity: Arc<Identity>,
    subscriptions: Subscriptions,
    /// The sequence number of the next notification to read: everything
    /// before it was read (or skipped by a resync).
    next: u64,
    /// The entries handed to this session and not read yet, as runs of
    /// sequence numbers: taken from the mailbox when this queue is empty
    /// (at first, the replay of a resumed session).
    runs: VecDeque<Range<u64>>,
    /// Where the fan-out task hands this session its entries, and wakes it.
    mailbox: Arc<Mailbox>,
    /// Cancelled when the application asks this session to re-authenticate.
    reauthenticate: CancellationToken,
    metrics: SessionMetrics,
    /// When the oldest notification pulled since the last write entered the
    /// history: the delivery latency is sampled once per written batch.
    oldest_unwritten: Option<Instant>,
    /// Lives as long as the connection: its fields name the session.
    span: tracing::Span,
}

/// What the transport knows about a connection, for metrics and traces.
pub(crate) struct Connection {
    pub(crate) transport: Transport,
    /// The client's address, when the server provides it (`ConnectInfo`).
    pub(crate) peer: Option<SocketAddr>,
}

impl Session {
    /// Registers a session and returns it with its first frames: `hello`,
    /// then `resync` when `resume` was given but cannot be honoured (naming
    /// the collections that changed since it, when the history can tell).
    pub(crate) fn open(
        hub: Arc<Hub>,
        connection: Connection,
        identity: Identity,
        subscriptions: Subscriptions,
        resume: Option<&str>,
    ) -> (Session, Vec<Frame>) {
        // Registered (and filed in the fan-out's index) before the position
        // is read: every notification after that position is then handed
        // to this session's mailbox.
        let identity = Arc::new(identity);
        let (token, mailbox, reauthenticate) = hub.register(identity.clone(), &subscriptions);
        let metrics = hub.metrics.session(connection.transport);
        metrics.opened();
        let span = span(token.id(), &connection, &identity);
        let (head, fresh) = hub.history.position();
        // `Some(None)`: a resume was asked for with something not a cursor.
        let resume: Option<Option<Cursor>> = resume.map(|raw| raw.parse().ok());
        let resumed = resume.map(|c| c.and_then(|c| hub.history.resume_from(c).map(|next| (c, next))));
        let (cursor, next, resync) = match resumed {
            None => (head, fresh, false),
            Some(Some((cursor, next))) => (cursor, next, false),
            Some(None) => (head, fresh, true),
        };
        let mut first = vec![ServerFrame::Hello { session: token.id(), token, cursor }.to_frame()];
        if resync {
            // A cursor the history no longer covers may still be one the
            // index of changes can place: then only what changed is named.
            let changed = resume.flatten().and_then(|c| {
                hub.history.changed_since(Seen::Cursor(c), |c, a| may_see(&identity, &subscriptions, c, a))
            });
            first.push(ServerFrame::Resync { cursor: head, collections: changed.as_deref() }.to_frame());
            resynced(&hub, &span, ResyncCause::Resume);
        }
        // What the history holds after the resume point is replayed first;
        // the mailbox has what came after the position was read.
        let mut runs = VecDeque::new();
        if next < fresh {
            runs.push_back(next..fresh);
            if subscriptions.each().any(|(_, filters)| filters.is_some()) {
                // Its fields may never have been read (nobody filtered when
                // it was appended): read them now, not under the lock.
                hub.history.read_fields(next..fresh);
            }
        }
        tracing::debug!(parent: &span, "tidings: session opened");
        let session = Session {
            token,
            hub,
            identity,
            subscriptions,
            next,
            runs,
            mailbox,
            reauthenticate,
            metrics,
            oldest_unwritten: None,
            span,
        };
        (session, first)
    }

    pub(crate) fn id(&self) -> SessionId {
        self.token.id()
    }

    pub(crate) fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// The connection's span: the parent of every event about the session.
    /// (Events name it as their parent rather than the writer entering it
    /// at every wake-up, which would cost a subscriber's bookkeeping per
    /// session per notification.)
    pub(crate) fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// Counts `frames` written to the socket and samples the delivery
    /// latency of the notifications among them.
    pub(crate) fn written(&mut self, frames: usize) {
        self.metrics.written(frames, self.oldest_unwritten.take());
    }

    /// The session's mailbox: its writer sleeps on
    /// [`notified`](Mailbox::notified) until something is handed to it.
    pub(crate) fn mailbox(&self) -> Arc<Mailbox> {
        self.mailbox.clone()
    }

    /// Resolves when the session must close for re-authentication: the
    /// application asked for it ([`Notifier::reauthenticate_user`](crate::Notifier::reauthenticate_user)
    /// and friends), or the identity expired. Owns what it needs, so the
    /// transport pins it once for the whole session.
    pub(crate) fn must_reauthenticate(&self) -> impl Future<Output = ()> + Send + 'static {
        let told = self.reauthenticate.clone();
        let expiry = self.identity.expiry();
        async move {
            let expired = async {
                match expiry {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = told.cancelled() => {}
                () = expired => {}
            }
        }
    }

    /// Whether the session must close for re-authentication now: the
    /// application asked for it, or the identity expired. The transports
    /// check it before every pull: [`must_reauthenticate`](Self::must_reauthenticate)
    /// is only awaited while the writer is idle, which under steady traffic
    /// it never is.
    pub(crate) fn must_reauthenticate_now(&self) -> bool {
        self.reauthenticate.is_cancelled()
            || self.identity.expiry().is_some_and(|at| at <= std::time::Instant::now())
    }

    /// Applies a `subscribe` frame and puts its reply into `out`:
    /// `subscribed`, or an `error` when nothing changed.
    ///
    /// With `after` (the cursor of the read behind the new subscription),
    /// what the new subscription wants of the history after that cursor is
    /// put first: the notifications this session read past before it
    /// subscribed, then (as it reads on) those handed out under its old
    /// subscription. When the cursor cannot be placed, a `resync` names
    /// what changed among the collections subscribed. A notification may
    /// come twice, never not at all.
    pub(crate) fn subscribe(
        &mut self,
        names: &[String],
        filter: Option<&serde_json::Value>,
        after: Option<&str>,
        out: &mut impl Outbox,
    ) {
        let after = match after.map(str::parse::<Cursor>) {
            None => None,
            Some(Ok(cursor)) => Some(cursor),
            Some(Err(e)) => {
                let message = format!("bad `cursor`: {e}");
                return out
                    .put(&ServerFrame::Error { code: ErrorCode::BadFrame, message: &message }.to_frame());
            }
        };
        let before = self.subscriptions.clone();
        let result = self.subscriptions.subscribe(names, filter, &self.identity);
        let mut position = None;
        if result.is_ok() {
            self.hub.index.replace(self.id(), &self.mailbox, &before, &self.subscriptions);
            if let Some(after) = after {
                self.replay(names, after, out);
                position = Some(self.position(out));
            }
        }
        out.put(&self.reply(names, result, |collections, all, count| ServerFrame::Subscribed {
            collections,
            all,
            count,
            cursor: position,
        }));
    }

    /// Puts into `out` what the history holds after `after` for the
    /// collections `names` just subscribed (with their new filters), and
    /// makes this session read again, with its new subscription, what was
    /// handed to it and not read yet (the fan-out sorted those by the old
    /// one). A `resync` for those collections when `after` cannot be
    /// placed; nothing when it lies beyond the head (everything after the
    /// head reaches the new subscription).
    fn replay(&mut self, names: &[String], after: Cursor, out: &mut impl Outbox) {
        let hub = self.hub.clone();
        let history = &hub.history;
        // Read after the index changed: from `fresh` on, the fan-out hands
        // this session its entries by the new subscription.
        let (_, fresh) = history.position();
        let from = history.resume_from(after);
        if self.subscriptions.each().any(|(_, filters)| filters.is_some()) {
            // Their fields may never have been read: read them now, not
            // under the lock (as a resumed session's replay does).
            history.read_fields(from.unwrap_or(self.next).min(self.next)..fresh);
        }
        if self.next < fresh {
            self.runs.push_front(self.next..fresh);
        }
        let Some(from) = from else {
            if !history.is_behind(after) {
                self.resync_subscribed(names, Some(after), out);
            }
            return;
        };
        let Session { token, identity, subscriptions, .. } = &*self;
        let id = token.id();
        let mut wanted =
            |e: &Entry| names_include(names, &e.collection) && receives(id, identity, subscriptions, e);
        // One run of sequence numbers (not a list of numbers).
        let mut runs: VecDeque<Range<u64>> = std::iter::once(from..self.next).collect();
        let mut at = from;
        // In batches, as a pull reads: the history's lock is never held long.
        while !runs.is_empty() {
            if let Read::Lagged { .. } = history.read(&mut at, &mut runs, BATCH, &mut wanted, out) {
                // Evicted since the cursor was placed.
                return self.resync_subscribed(names, None, out);
            }
        }
    }

    /// The cursor of everything this session has been sent, for a reply
    /// that carries it. A session whose unread entries left the history has
    /// no such cursor: it is sent its `resync` first, and then it is at the
    /// head.
    fn position(&mut self, out: &mut impl Outbox) -> Cursor {
        if let Some(cursor) = self.hub.history.cursor_through(self.next) {
            return cursor;
        }
        let (head, next, interrupted) = self.hub.history.lag_point(self.next);
        self.resync(head, next, interrupted, out);
        head
    }

    /// A `resync` for the collections `names` just subscribed: those of
    /// them with a change after `after`, when the history can tell, else
    /// all of them. Its cursor is the session's position: it moves nothing.
    fn resync_subscribed(&mut self, names: &[String], after: Option<Cursor>, out: &mut impl Outbox) {
        let cursor = self.position(out);
        let Session { identity, subscriptions, hub, .. } = &*self;
        let changed = after.and_then(|after| {
            let may_see =
                |c: &str, a: Option<&str>| names_include(names, c) && may_see(identity, subscriptions, c, a);
            hub.history.changed_since(Seen::Cursor(after), may_see)
        });
        if changed.as_ref().is_some_and(Vec::is_empty) {
            return;
        }
        let all_named: Vec<String>;
        let collections = match &changed {
            Some(changed) => Some(changed.as_slice()),
            None if names.iter().any(|n| n == Subscriptions::ALL) => None,
            None => {
                all_named = names.to_vec();
                Some(all_named.as_slice())
            }
        };
        out.put(&ServerFrame::Resync { cursor, collections }.to_frame());
        resynced(hub, &self.span, ResyncCause::Subscribe);
    }

    /// Applies an `unsubscribe` frame and returns the reply: `unsubscribed`,
    /// or an `error` when nothing changed.
    pub(crate) fn unsubscribe(&mut self, names: &[String]) -> Frame {
        let before = self.subscriptions.clone();
        let result = self.subscriptions.unsubscribe(names);
        if result.is_ok() {
            self.hub.index.replace(self.id(), &self.mailbox, &before, &self.subscriptions);
        }
        self.reply(names, result, |collections, all, count| ServerFrame::Unsubscribed {
            collections,
            all,
            count,
        })
    }

    /// The acknowledgement echoes the frame's own names, which were checked
    /// to need no escaping, and two numbers: never the session's whole list,
    /// so a reply is never much longer than the frame it answers.
    fn reply<'a>(
        &self,
        names: &'a [String],
        result: Result<(), Refusal>,
        done: impl FnOnce(Vec<&'a str>, bool, usize) -> ServerFrame<'a>,
    ) -> Frame {
        match result {
            Ok(()) => {
                let s = &self.subscriptions;
                done(names.iter().map(String::as_str).collect(), s.all(), s.count()).to_frame()
            }
            Err(Refusal { code, message }) => ServerFrame::Error { code, message: &message }.to_frame(),
        }
    }

    /// Appends to `out` the next frames for this session: those of up to
    /// one batch of the entries handed to it that it may see, or one
    /// `resync` when it lost some (they left the history before it read
    /// them, too many waited, or the backplane was interrupted).
    ///
    /// Returns whether the session has caught up: nothing was waiting. A
    /// pull that yields no frame (all filtered out) may not have caught up:
    /// the caller must pull again before it sleeps.
    pub(crate) fn pull(&mut self, out: &mut impl Outbox) -> bool {
        if self.runs.is_empty() {
            match self.mailbox.take(&mut self.runs) {
                Taken::Runs if self.runs.is_empty() => return true,
                Taken::Runs => {}
                Taken::Lagged(lag) => {
                    let (head, next, interrupted) = self.hub.history.lag_point(self.next);
                    // Opened after the interruption: it lost nothing.
                    if lag == Lag::Overflow || interrupted {
                        self.resync(head, next, interrupted, out);
                    }
                    return false;
                }
            }
        }
        let Session { token, identity, subscriptions, oldest_unwritten, hub, next, runs, .. } = self;
        let id = token.id();
        let wanted = |e: &Entry| {
            let wanted = receives(id, identity, subscriptions, e);
            if wanted && oldest_unwritten.is_none() {
                *oldest_unwritten = e.emitted();
            }
            wanted
        };
        match hub.history.read(next, runs, BATCH, wanted, out) {
            Read::Read => {}
            Read::Lagged { head, next, interrupted } => self.resync(head, next, interrupted, out),
        }
        false
    }

    /// Sends a `resync` to `head` naming what changed since what the
    /// session read, and reads on from `next` (the position after `head`).
    /// `interrupted`: the loss is the backplane's, not the session's lag.
    ///
    /// When the history can tell that nothing the session may see changed
    /// since then, it lost nothing: it reads on without a frame. A page on
    /// a quiet room is never told to reload because other rooms were busy.
    fn resync(&mut self, head: Cursor, next: u64, interrupted: bool, out: &mut impl Outbox) {
        let cause = if interrupted { ResyncCause::Interrupted } else { ResyncCause::Lagged };
        let Session { identity, subscriptions, .. } = &*self;
        let seen = Seen::Seq(self.next.saturating_sub(1));
        let changed = self.hub.history.changed_since(seen, |c, a| may_see(identity, subscriptions, c, a));
        if changed.as_ref().is_none_or(|c| !c.is_empty()) {
            out.put(&ServerFrame::Resync { cursor: head, collections: changed.as_deref() }.to_frame());
            resynced(&self.hub, &self.span, cause);
        }
        self.next = next;
        self.runs.clear();
    }
}

/// The span of a connection's lifetime: recorded by subscribers that want
/// it (free otherwise); every event about the session is its child.
fn span(id: SessionId, connection: &Connection, identity: &Identity) -> tracing::Span {
    let span = tracing::info_span!(
        "tidings.session",
        session = %id,
        transport = connection.transport.label(),
        peer = field::Empty,
        subject = field::Empty,
    );
    if let Some(peer) = connection.peer {
        span.record("peer", field::display(peer));
    }
    if let Some(subject) = identity.user_id() {
        span.record("subject", subject);
    }
    span
}

/// Counts and logs a `resync` sent to a session.
fn resynced(hub: &Hub, span: &tracing::Span, cause: ResyncCause) {
    hub.metrics.resync(cause);
    tracing::debug!(parent: span, cause = cause.label(), "tidings: resync");
}

/// Whether a session with this identity and these subscriptions receives
/// notifications about `collection` addressed to `audience` (`None`: to
/// everyone): the same rule for live delivery, replay and a `resync`'s list,
/// so a `resync` never names a collection the session would not be sent.
fn may_see(
    identity: &Identity,
    subscriptions: &Subscriptions,
    collection: &str,
    audience: Option<&str>,
) -> bool {
    subscriptions.contains(collection) && identity_may_see(identity, collection, audience)
}

/// Whether a `subscribe` frame naming `names` subscribed `collection`.
fn names_include(names: &[String], collection: &str) -> bool {
    names.iter().any(|n| n == collection || n == Subscriptions::ALL)
}

/// Whether the session `id`, with this identity and these subscriptions,
/// receives `entry`: the one rule of live delivery and of a replay.
fn receives(id: SessionId, identity: &Identity, subscriptions: &Subscriptions, entry: &Entry) -> bool {
    entry.skip != Some(id)
        // The subscription first: with filters, most entries stop here.
        && subscriptions.wants(&entry.collection, || entry.data())
        && identity_may_see(identity, &entry.collection, entry.audience.as_deref())
}

/// The identity's part of [`may_see`].
fn identity_may_see(identity: &Identity, collection: &str, audience: Option<&str>) -> bool {
    identity.may_read(collection) && audience.is_none_or(|a| identity.belongs_to(a))
}

impl Drop for Session {
    fn drop(&mut self) {
        self.hub.index.remove(self.token.id(), &self.subscriptions);
        self.hub.index.leave(self.token.id(), self.identity.audiences());
        self.hub.unregister(self.token.id());
        self.metrics.closed();
        tracing::debug!(parent: &self.span, "tidings: session closed");
    }
}
