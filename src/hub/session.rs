//! One connected client, whatever carries its frames: its identity, its
//! subscriptions and its position in the shared history.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::Hub;
use super::frame::{Frame, Outbox};
use super::history::{Entry, Read, Seen};
use super::protocol::ServerFrame;
use super::subscriptions::{Refusal, Subscriptions};
use crate::{Cursor, Identity, SessionId, SessionToken};

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
    /// The sequence number of the next notification to read.
    next: u64,
    /// A stream id the client already saw that this instance has not read
    /// yet (it resumed here with a cursor from a faster instance): entries up
    /// to it are not sent again.
    seen_through: Option<Cursor>,
    wake: Arc<Notify>,
    /// Cancelled when the application asks this session to re-authenticate.
    reauthenticate: CancellationToken,
}

impl Session {
    /// Registers a session and returns it with its first frames: `hello`,
    /// then `resync` when `resume` was given but cannot be honoured (naming
    /// the collections that changed since it, when the history can tell).
    pub(crate) fn open(
        hub: Arc<Hub>,
        identity: Identity,
        subscriptions: Subscriptions,
        resume: Option<&str>,
    ) -> (Session, Vec<Frame>) {
        // Registered before the position is read: every notification after
        // that position then finds this session in the map and wakes it.
        let identity = Arc::new(identity);
        let (token, wake, reauthenticate) = hub.register(identity.clone());
        let (head, fresh) = hub.history.position();
        // `Some(None)`: a resume was asked for with something not a cursor.
        let resume: Option<Option<Cursor>> = resume.map(|raw| raw.parse().ok());
        let resumed =
            resume.map(|c| c.and_then(|c| hub.history.resume_from(c).map(|(next, seen)| (c, next, seen))));
        let (cursor, next, seen_through, resync) = match resumed {
            None => (head, fresh, None, false),
            Some(Some((cursor, next, seen))) => (cursor, next, seen, false),
            Some(None) => (head, fresh, None, true),
        };
        let mut first = vec![ServerFrame::Hello { session: token.id(), token, cursor }.to_frame()];
        if resync {
            // A cursor the history no longer covers may still be one the
            // index of changes can place: then only what changed is named.
            let changed = resume.flatten().and_then(|c| {
                hub.history.changed_since(Seen::Cursor(c), |c, a| may_see(&identity, &subscriptions, c, a))
            });
            first.push(ServerFrame::Resync { cursor: head, collections: changed.as_deref() }.to_frame());
        }
        let session =
            Session { token, hub, identity, subscriptions, next, seen_through, wake, reauthenticate };
        (session, first)
    }

    pub(crate) fn id(&self) -> SessionId {
        self.token.id()
    }

    pub(crate) fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// The signal the waker uses to wake this session.
    pub(crate) fn wake_signal(&self) -> Arc<Notify> {
        self.wake.clone()
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

    /// Applies a `subscribe` frame and returns the reply: `subscribed`, or
    /// an `error` when nothing changed.
    pub(crate) fn subscribe(&mut self, names: &[String], filter: Option<&serde_json::Value>) -> Frame {
        let result = self.subscriptions.subscribe(names, filter, &self.identity);
        self.reply(names, result, |collections, all, count| ServerFrame::Subscribed {
            collections,
            all,
            count,
        })
    }

    /// Applies an `unsubscribe` frame and returns the reply: `unsubscribed`,
    /// or an `error` when nothing changed.
    pub(crate) fn unsubscribe(&mut self, names: &[String]) -> Frame {
        let result = self.subscriptions.unsubscribe(names);
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
    /// one batch of notifications that it may see, or one `resync` when it
    /// fell so far behind that the history no longer holds what it missed.
    ///
    /// Returns whether the session has caught up with the history. A batch
    /// can yield no frame (all filtered out) without having caught up: the
    /// caller must pull again before it sleeps.
    pub(crate) fn pull(&mut self, out: &mut impl Outbox) -> bool {
        let Session { token, identity, subscriptions, seen_through, .. } = self;
        let id = token.id();
        let wanted = |e: &Entry| {
            e.skip != Some(id)
                && seen_through
                    .is_none_or(|seen| e.cursor().stream_cmp(&seen) == Some(std::cmp::Ordering::Greater))
                // The subscription first: with filters, most entries stop here.
                && subscriptions.wants(&e.collection, || e.data())
                && identity_may_see(identity, &e.collection, e.audience.as_deref())
        };
        match self.hub.history.read(self.next, BATCH, wanted, out) {
            Read::Read { next, caught_up } => {
                self.next = next;
                caught_up
            }
            Read::Lagged { head, next } => {
                // Everything from `self.next` on is skipped, what is still
                // in the ring included: the index names what changed since.
                let Session { identity, subscriptions, .. } = &*self;
                let seen = Seen::Seq(self.next.saturating_sub(1));
                let changed =
                    self.hub.history.changed_since(seen, |c, a| may_see(identity, subscriptions, c, a));
                out.put(&ServerFrame::Resync { cursor: head, collections: changed.as_deref() }.to_frame());
                self.next = next;
                false
            }
        }
    }
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

/// The identity's part of [`may_see`].
fn identity_may_see(identity: &Identity, collection: &str, audience: Option<&str>) -> bool {
    identity.may_read(collection) && audience.is_none_or(|a| identity.belongs_to(a))
}

impl Drop for Session {
    fn drop(&mut self) {
        self.hub.unregister(self.token.id());
    }
}
