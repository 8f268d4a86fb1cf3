//! One connected client, whatever carries its frames: its identity, its
//! subscriptions and its position in the shared history.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use serde::Serialize;
use tokio::sync::Notify;

use crate::history::{Entry, Read};
use crate::hub::Hub;
use crate::protocol::ServerFrame;
use crate::{Cursor, Identity};

/// The id of a connected session, sent to the client in its `hello` frame.
///
/// A client puts it in the `tidings-session` header of its own HTTP writes
/// so that the notifications they cause skip it (see
/// [`Originator`](crate::axum::Originator)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(u64);

impl SessionId {
    /// A session id from its numeric value.
    pub const fn from_raw(raw: u64) -> Self {
        SessionId(raw)
    }

    /// Appends the 16 hex digits of the id.
    pub(crate) fn push_to(self, out: &mut String) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        for shift in (0..16).rev() {
            out.push(HEX[((self.0 >> (shift * 4)) & 0xf) as usize] as char);
        }
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl FromStr for SessionId {
    type Err = std::num::ParseIntError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        u64::from_str_radix(s, 16).map(SessionId)
    }
}

impl Serialize for SessionId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for SessionId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The collections a session receives: `*` means all of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Subscriptions {
    all: bool,
    names: BTreeSet<Box<str>>,
}

impl Subscriptions {
    pub(crate) const ALL: &'static str = "*";

    /// From the `collections` query parameter: comma-separated names, or
    /// everything when absent or empty.
    pub(crate) fn from_query(list: Option<&str>) -> Self {
        let names: BTreeSet<Box<str>> = list
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(Into::into)
            .collect();
        Subscriptions {
            all: names.is_empty() || names.contains(Self::ALL),
            names: names.into_iter().filter(|n| &**n != Self::ALL).collect(),
        }
    }

    /// The first named collection `identity` may not read, if any.
    pub(crate) fn first_forbidden<'a>(&'a self, identity: &Identity) -> Option<&'a str> {
        self.names.iter().map(|n| &**n).find(|n| !identity.may_read(n))
    }

    /// At most this many named collections per session: a client must not
    /// grow the server's memory without bound.
    pub(crate) const MAX_NAMES: usize = 256;

    /// Adds collections; all or nothing, refused if one is not allowed or
    /// the session would hold more than [`MAX_NAMES`](Self::MAX_NAMES).
    pub(crate) fn subscribe(&mut self, names: &[String], identity: &Identity) -> Result<(), String> {
        if let Some(bad) = names.iter().find(|n| *n != Self::ALL && !identity.may_read(n)) {
            return Err(format!("not allowed to subscribe to `{bad}`"));
        }
        let new = names.iter().filter(|n| *n != Self::ALL && !self.names.contains(n.as_str())).count();
        if self.names.len() + new > Self::MAX_NAMES {
            return Err(format!("at most {} collections per session", Self::MAX_NAMES));
        }
        for name in names {
            match name.as_str() {
                Self::ALL => self.all = true,
                name => {
                    self.names.insert(name.into());
                }
            }
        }
        Ok(())
    }

    pub(crate) fn unsubscribe(&mut self, names: &[String]) {
        for name in names {
            match name.as_str() {
                Self::ALL => self.all = false,
                name => {
                    self.names.remove(name);
                }
            }
        }
    }

    pub(crate) fn contains(&self, collection: &str) -> bool {
        self.all || self.names.contains(collection)
    }

    /// For the `subscribed` acknowledgement.
    pub(crate) fn list(&self) -> Vec<&str> {
        let all = self.all.then_some(Self::ALL);
        all.into_iter().chain(self.names.iter().map(|n| &**n)).collect()
    }
}

/// How many log entries a session reads per batch: bounds how long the
/// history's read lock is held and how many frames one write gathers.
const BATCH: usize = 128;

/// A registered session. Dropping it unregisters it, whichever way the
/// connection ends (close, error, timeout, panic).
pub(crate) struct Session {
    id: SessionId,
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
    ) -> (Session, Vec<Utf8Bytes>) {
        // Registered before the position is read: every notification after
        // that position then finds this session in the map and wakes it.
        let (id, wake) = hub.register();
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
        let mut first = vec![ServerFrame::Hello { session: id, cursor }.to_text()];
        if resync {
            first.push(ServerFrame::Resync { cursor: head }.to_text());
        }
        let session = Session { id, hub, identity, subscriptions, next, seen_through, wake };
        (session, first)
    }

    pub(crate) fn id(&self) -> SessionId {
        self.id
    }

    pub(crate) fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// The signal the dispatcher uses to wake this session.
    pub(crate) fn wake_signal(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    pub(crate) fn subscriptions(&self) -> &Subscriptions {
        &self.subscriptions
    }

    pub(crate) fn subscribe(&mut self, names: &[String]) -> Result<(), String> {
        self.subscriptions.subscribe(names, &self.identity)
    }

    pub(crate) fn unsubscribe(&mut self, names: &[String]) {
        self.subscriptions.unsubscribe(names)
    }

    /// Appends to `out` the next frames for this session: those of up to
    /// one batch of notifications that it may see, or one `resync` when it
    /// fell so far behind that the history no longer holds what it missed.
    ///
    /// Returns whether the session has caught up with the history. A batch
    /// can yield no frame (all filtered out) without having caught up: the
    /// caller must pull again before it sleeps.
    pub(crate) fn pull(&mut self, out: &mut Vec<Utf8Bytes>) -> bool {
        let Session { id, identity, subscriptions, seen_through, .. } = self;
        let wanted = |e: &Entry| {
            e.skip != Some(*id)
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
                out.push(ServerFrame::Resync { cursor: head }.to_text());
                self.next = next;
                false
            }
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.hub.unregister(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parses_to_subscriptions() {
        assert!(Subscriptions::from_query(None).contains("x"));
        assert!(Subscriptions::from_query(Some("")).contains("x"));
        let s = Subscriptions::from_query(Some("forums, posts"));
        assert!(s.contains("posts") && !s.contains("x"));
        assert_eq!(s.list(), ["forums", "posts"]);
        assert!(Subscriptions::from_query(Some("*,a")).contains("x"));
    }

    #[test]
    fn star_can_be_dropped_and_restored() {
        let id = Identity::anonymous();
        let mut s = Subscriptions::from_query(None);
        s.unsubscribe(&["*".into()]);
        assert!(!s.contains("forums"));
        s.subscribe(&["forums".into()], &id).unwrap();
        assert!(s.contains("forums") && !s.contains("posts"));
        s.subscribe(&["*".into()], &id).unwrap();
        assert!(s.contains("posts"));
    }

    #[test]
    fn subscriptions_are_capped() {
        let id = Identity::anonymous();
        let mut s = Subscriptions::from_query(None);
        let many: Vec<String> = (0..Subscriptions::MAX_NAMES).map(|i| format!("c{i}")).collect();
        s.subscribe(&many, &id).unwrap();
        s.subscribe(&["c0".into()], &id).unwrap();
        assert!(s.subscribe(&["one-more".into()], &id).unwrap_err().contains("at most"));
    }

    #[test]
    fn forbidden_subscriptions_change_nothing() {
        let id = Identity::anonymous().collections(["forums"]);
        let mut s = Subscriptions::from_query(Some("forums"));
        assert!(s.subscribe(&["posts".into(), "audit".into()], &id).is_err());
        assert_eq!(s.list(), ["forums"]);
    }

    #[test]
    fn session_ids_round_trip() {
        let id = SessionId::from_raw(0x1234);
        assert_eq!(id.to_string().parse::<SessionId>().unwrap(), id);
        let mut s = String::new();
        id.push_to(&mut s);
        assert_eq!(s, id.to_string());
    }
}
