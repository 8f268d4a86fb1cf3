//! One connected client, whatever carries its frames: its identity, its
//! subscriptions and its position in the shared history.

use std::sync::Arc;

use tokio::sync::Notify;

use super::Hub;
use super::frame::{Frame, Outbox};
use super::history::{Entry, Read};
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
    identity: Identity,
    subscriptions: Subscriptions,
    /// The sequence number of the next notification to read.
    next: u64,
    /// A stream id the client already saw that this instance has not read
    /// yet (it resumed here with a cursor from a faster instance): entries up
    /// to it are not sent again.
    seen_through: Option<Cursor>,
    wake: Arc<Notify>,
}

impl Session {
    /// Registers a session and returns it with its first frames: `hello`,
    /// then `resync` when `resume` was given but cannot be honoured.
    pub(crate) fn open(
        hub: Arc<Hub>,
        identity: Identity,
        subscriptions: Subscriptions,
        resume: Option<&str>,
    ) -> (Session, Vec<Frame>) {
        // Registered before the position is read: every notification after
        // that position then finds this session in the map and wakes it.
        let (token, wake) = hub.register();
        let (head, fresh) = hub.history.position();
        let resumed = resume.map(|raw| {
            raw.parse::<Cursor>()
                .ok()
                .and_then(|c| hub.history.resume_from(c).map(|(next, seen)| (c, next, seen)))
        });
        let (cursor, next, seen_through, resync) = match resumed {
            None => (head, fresh, None, false),
            Some(Some((cursor, next, seen))) => (cursor, next, seen, false),
            Some(None) => (head, fresh, None, true),
        };
        let mut first = vec![ServerFrame::Hello { session: token.id(), token, cursor }.to_frame()];
        if resync {
            first.push(ServerFrame::Resync { cursor: head }.to_frame());
        }
        let session = Session { token, hub, identity, subscriptions, next, seen_through, wake };
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

    /// Applies a `subscribe` frame and returns the reply: `subscribed`, or
    /// an `error` when nothing changed.
    pub(crate) fn subscribe(&mut self, names: &[String]) -> Frame {
        let result = self.subscriptions.subscribe(names, &self.identity);
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
        let wanted = |e: &Entry| {
            // Tokens compare in constant time.
            e.skip.is_none_or(|skip| skip != *token)
                && seen_through
                    .is_none_or(|seen| e.cursor.stream_cmp(&seen) == Some(std::cmp::Ordering::Greater))
                && subscriptions.contains(&e.collection)
                && identity.may_read(&e.collection)
                && e.audience.as_deref().is_none_or(|a| identity.belongs_to(a))
        };
        match self.hub.history.read(self.next, BATCH, wanted, out) {
            Read::Read { next, caught_up } => {
                self.next = next;
                caught_up
            }
            Read::Lagged { head, next } => {
                out.put(&ServerFrame::Resync { cursor: head }.to_frame());
                self.next = next;
                false
            }
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.hub.unregister(self.token.id());
    }
}
