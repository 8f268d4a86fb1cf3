//! One connected client, whatever carries its frames: its identity, its
//! subscriptions and its position in the shared history.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use serde::Serialize;
use tokio::sync::Notify;

use crate::history::{Entry, Read};
use crate::hub::Hub;
use crate::protocol::{ErrorCode, ServerFrame};
use crate::{Cursor, Identity};

/// The public id of a connected session, sent in its `hello` frame and as
/// the `origin` of the notifications its requests cause.
///
/// It is derived from the session's [`SessionToken`] (the first 8 bytes of
/// its SHA-256), so every instance computes the same id, nobody can choose
/// which id their writes show, and the id does not reveal the token. It
/// cannot make a session skip anything: only the token can.
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

/// The secret of a connected session: 16 random bytes, sent only to that
/// session, in its `hello` frame (as 32 lowercase hex digits).
///
/// The client puts it in the `tidings-session` header of its own HTTP
/// writes so that the notifications they cause skip it (see
/// [`Originator`](crate::axum::Originator)). It is never broadcast: other
/// sessions see only its [`SessionId`]. Comparing two tokens takes the same
/// time whatever they hold, so timing does not reveal how much of a guess was
/// right. `Debug` shows the public id, never the secret; `Display` writes the
/// secret (its wire form).
#[derive(Clone, Copy)]
pub struct SessionToken {
    secret: [u8; 16],
    /// Derived once, here: frames carry it, sessions are keyed by it.
    id: SessionId,
}

impl SessionToken {
    /// A fresh token from the operating system's random number generator.
    pub(crate) fn generate() -> Self {
        let mut secret = [0; 16];
        // Without the OS generator no session can be secured: nothing
        // sensible to fall back to.
        getrandom::fill(&mut secret).expect("the operating system's random number generator failed");
        SessionToken::from_secret(secret)
    }

    fn from_secret(secret: [u8; 16]) -> Self {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(secret);
        let mut first = [0; 8];
        first.copy_from_slice(&digest[..8]);
        SessionToken { secret, id: SessionId(u64::from_be_bytes(first)) }
    }

    /// The public id derived from this token.
    pub fn id(&self) -> SessionId {
        self.id
    }
}

impl PartialEq for SessionToken {
    /// Constant time: every byte is compared, whatever differs first.
    fn eq(&self, other: &Self) -> bool {
        let diff = self.secret.iter().zip(&other.secret).fold(0u8, |acc, (a, b)| acc | (a ^ b));
        // Keeps the optimizer from turning the fold into an early exit.
        std::hint::black_box(diff) == 0
    }
}

impl Eq for SessionToken {}

impl std::hash::Hash for SessionToken {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.secret.hash(state);
    }
}

impl fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionToken {{ id: {}, .. }}", self.id)
    }
}

impl fmt::Display for SessionToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.secret.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// A string that is not a [`SessionToken`]: a token is exactly 32 lowercase
/// hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidSessionToken;

impl fmt::Display for InvalidSessionToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a session token is 32 lowercase hex digits")
    }
}

impl std::error::Error for InvalidSessionToken {}

impl FromStr for SessionToken {
    type Err = InvalidSessionToken;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        fn digit(c: u8) -> Result<u8, InvalidSessionToken> {
            match c {
                b'0'..=b'9' => Ok(c - b'0'),
                b'a'..=b'f' => Ok(c - b'a' + 10),
                _ => Err(InvalidSessionToken),
            }
        }
        let s = s.as_bytes();
        if s.len() != 32 {
            return Err(InvalidSessionToken);
        }
        let mut secret = [0; 16];
        for (byte, pair) in secret.iter_mut().zip(s.chunks_exact(2)) {
            *byte = digit(pair[0])? << 4 | digit(pair[1])?;
        }
        Ok(SessionToken::from_secret(secret))
    }
}

impl Serialize for SessionToken {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for SessionToken {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Why a `subscribe` or `unsubscribe` frame was refused, with the code of
/// the `error` frame that says so.
pub(crate) struct Refusal {
    pub(crate) code: ErrorCode,
    pub(crate) message: String,
}

impl Refusal {
    fn new(code: ErrorCode, message: String) -> Self {
        Refusal { code, message }
    }
}

/// The longest collection name a client may name, in bytes.
pub(crate) const MAX_NAME_LEN: usize = 128;

/// Whether `name` is one a client may subscribe to: `*`, or 1 to
/// [`MAX_NAME_LEN`] ASCII letters, digits and `_ - . : /`. Such names need no
/// escaping in JSON, so echoing one costs no more than receiving it.
pub(crate) fn check_name(name: &str) -> Result<(), String> {
    let valid_byte = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':' | b'/');
    if name == Subscriptions::ALL
        || (!name.is_empty() && name.len() <= MAX_NAME_LEN && name.bytes().all(valid_byte))
    {
        return Ok(());
    }
    // Quote at most the start of a refused name: the error stays short
    // whatever the client sent.
    const QUOTED: usize = 32;
    let (quoted, ellipsis) = match name.char_indices().nth(QUOTED) {
        Some((end, _)) => (&name[..end], "…"),
        None => (name, ""),
    };
    // Short on purpose: the reply to the smallest refused frame stays under
    // three times its size (see docs/protocol.md).
    Err(format!(
        "bad collection name `{quoted}{ellipsis}`: 1 to {MAX_NAME_LEN} bytes of A-Za-z0-9_-.:/ or * alone"
    ))
}

/// What a session wants from one collection. Today: every notification;
/// per-collection filters will live here.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Subscription {}

/// The collections a session receives: `*` means all of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Subscriptions {
    all: bool,
    names: BTreeMap<Box<str>, Subscription>,
}

impl Subscriptions {
    pub(crate) const ALL: &'static str = "*";

    /// At most this many named collections per session: with names of at
    /// most [`MAX_NAME_LEN`] bytes, a client cannot grow the server's
    /// memory by more than about 32 KiB of names.
    pub(crate) const MAX_NAMES: usize = 256;

    /// From the `collections` query parameter: comma-separated names, or
    /// everything when absent or empty. Refused when a name is malformed or
    /// there are more than [`MAX_NAMES`](Self::MAX_NAMES).
    pub(crate) fn from_query(list: Option<&str>) -> Result<Self, String> {
        let mut subscriptions = Subscriptions { all: false, names: BTreeMap::new() };
        for name in list.unwrap_or_default().split(',').map(str::trim).filter(|s| !s.is_empty()) {
            check_name(name)?;
            subscriptions.add(name);
            if subscriptions.names.len() > Self::MAX_NAMES {
                return Err(format!("at most {} collections per session", Self::MAX_NAMES));
            }
        }
        subscriptions.all |= subscriptions.names.is_empty();
        Ok(subscriptions)
    }

    /// The first named collection `identity` may not read, if any.
    pub(crate) fn first_forbidden<'a>(&'a self, identity: &Identity) -> Option<&'a str> {
        self.names.keys().map(|n| &**n).find(|n| !identity.may_read(n))
    }

    /// Adds collections; all or nothing, refused if a name is malformed
    /// (`bad_frame`), not allowed, or if the session would hold more than
    /// [`MAX_NAMES`](Self::MAX_NAMES) (`forbidden`).
    pub(crate) fn subscribe(&mut self, names: &[String], identity: &Identity) -> Result<(), Refusal> {
        names.iter().try_for_each(|n| check_name(n)).map_err(|m| Refusal::new(ErrorCode::BadFrame, m))?;
        if let Some(bad) = names.iter().find(|n| *n != Self::ALL && !identity.may_read(n)) {
            return Err(Refusal::new(ErrorCode::Forbidden, format!("not allowed to subscribe to `{bad}`")));
        }
        let new: BTreeSet<&str> = names
            .iter()
            .map(|n| n.as_str())
            .filter(|n| *n != Self::ALL && !self.names.contains_key(*n))
            .collect();
        if self.names.len() + new.len() > Self::MAX_NAMES {
            let message = format!("at most {} collections per session", Self::MAX_NAMES);
            return Err(Refusal::new(ErrorCode::Forbidden, message));
        }
        names.iter().for_each(|name| self.add(name));
        Ok(())
    }

    /// Removes collections; all or nothing, refused if a name is malformed.
    pub(crate) fn unsubscribe(&mut self, names: &[String]) -> Result<(), Refusal> {
        names.iter().try_for_each(|n| check_name(n)).map_err(|m| Refusal::new(ErrorCode::BadFrame, m))?;
        for name in names {
            match name.as_str() {
                Self::ALL => self.all = false,
                name => {
                    self.names.remove(name);
                }
            }
        }
        Ok(())
    }

    fn add(&mut self, name: &str) {
        match name {
            Self::ALL => self.all = true,
            name => {
                self.names.entry(name.into()).or_default();
            }
        }
    }

    pub(crate) fn contains(&self, collection: &str) -> bool {
        self.all || self.names.contains_key(collection)
    }

    /// Whether `*` is subscribed.
    pub(crate) fn all(&self) -> bool {
        self.all
    }

    /// How many collections are subscribed by name.
    pub(crate) fn count(&self) -> usize {
        self.names.len()
    }
}

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
    ) -> (Session, Vec<Utf8Bytes>) {
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
        let mut first = vec![ServerFrame::Hello { session: token.id(), token, cursor }.to_text()];
        if resync {
            first.push(ServerFrame::Resync { cursor: head }.to_text());
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

    /// The signal the dispatcher uses to wake this session.
    pub(crate) fn wake_signal(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Applies a `subscribe` frame and returns the reply: `subscribed`, or
    /// an `error` when nothing changed.
    pub(crate) fn subscribe(&mut self, names: &[String]) -> Utf8Bytes {
        let result = self.subscriptions.subscribe(names, &self.identity);
        self.reply(names, result, |collections, all, count| ServerFrame::Subscribed {
            collections,
            all,
            count,
        })
    }

    /// Applies an `unsubscribe` frame and returns the reply: `unsubscribed`,
    /// or an `error` when nothing changed.
    pub(crate) fn unsubscribe(&mut self, names: &[String]) -> Utf8Bytes {
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
    ) -> Utf8Bytes {
        match result {
            Ok(()) => {
                let s = &self.subscriptions;
                done(names.iter().map(String::as_str).collect(), s.all(), s.count()).to_text()
            }
            Err(Refusal { code, message }) => ServerFrame::Error { code, message: &message }.to_text(),
        }
    }

    /// Appends to `out` the next frames for this session: those of up to
    /// one batch of notifications that it may see, or one `resync` when it
    /// fell so far behind that the history no longer holds what it missed.
    ///
    /// Returns whether the session has caught up with the history. A batch
    /// can yield no frame (all filtered out) without having caught up: the
    /// caller must pull again before it sleeps.
    pub(crate) fn pull(&mut self, out: &mut Vec<Utf8Bytes>) -> bool {
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
                out.push(ServerFrame::Resync { cursor: head }.to_text());
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

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn query_parses_to_subscriptions() {
        assert!(Subscriptions::from_query(None).unwrap().contains("x"));
        assert!(Subscriptions::from_query(Some("")).unwrap().contains("x"));
        let s = Subscriptions::from_query(Some("forums, posts")).unwrap();
        assert!(s.contains("posts") && !s.contains("x"));
        assert_eq!((s.all(), s.count()), (false, 2));
        assert!(Subscriptions::from_query(Some("*,a")).unwrap().contains("x"));
        assert!(Subscriptions::from_query(Some("a,b c")).unwrap_err().contains("`b c`"));
    }

    #[test]
    fn collection_names_are_short_plain_ascii() {
        for good in ["*", "a", "forums", "user:42/posts", "a-b_c.d", &"n".repeat(MAX_NAME_LEN)] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "**", "a*", "a b", "a,b", "café", "a\"b", "a\\b", &"n".repeat(MAX_NAME_LEN + 1)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        // A refused name is quoted only in part.
        let message = check_name(&"é".repeat(4000)).unwrap_err();
        assert!(message.contains(&format!("`{}…`", "é".repeat(32))), "{message}");
        assert!(message.len() < 200, "{message}");
    }

    #[test]
    fn star_can_be_dropped_and_restored() {
        let id = Identity::anonymous();
        let mut s = Subscriptions::from_query(None).unwrap();
        assert!(s.unsubscribe(&names(&["*"])).is_ok());
        assert!(!s.contains("forums"));
        assert!(s.subscribe(&names(&["forums"]), &id).is_ok());
        assert!(s.contains("forums") && !s.contains("posts"));
        assert!(s.subscribe(&names(&["*"]), &id).is_ok());
        assert!(s.contains("posts"));
    }

    #[test]
    fn subscriptions_are_capped() {
        let id = Identity::anonymous();
        let mut s = Subscriptions::from_query(None).unwrap();
        let many: Vec<String> = (0..Subscriptions::MAX_NAMES).map(|i| format!("c{i}")).collect();
        assert!(s.subscribe(&many, &id).is_ok());
        assert!(s.subscribe(&names(&["c0", "c0"]), &id).is_ok(), "names already held are not new");
        let refusal = s.subscribe(&names(&["one-more"]), &id).err().unwrap();
        assert_eq!(refusal.code, ErrorCode::Forbidden);
        assert!(refusal.message.contains("at most"));
        let query: Vec<String> = (0..=Subscriptions::MAX_NAMES).map(|i| format!("c{i}")).collect();
        assert!(Subscriptions::from_query(Some(&query.join(","))).unwrap_err().contains("at most"));
    }

    #[test]
    fn refused_frames_change_nothing() {
        let id = Identity::anonymous().collections(["forums", "posts"]);
        let mut s = Subscriptions::from_query(Some("forums")).unwrap();
        let before = s.clone();
        let refusal = s.subscribe(&names(&["posts", "audit"]), &id).err().unwrap();
        assert_eq!(refusal.code, ErrorCode::Forbidden);
        let refusal = s.subscribe(&names(&["posts", "bad name"]), &id).err().unwrap();
        assert_eq!(refusal.code, ErrorCode::BadFrame);
        let refusal = s.unsubscribe(&names(&["forums", ""])).err().unwrap();
        assert_eq!(refusal.code, ErrorCode::BadFrame);
        assert_eq!(s, before);
    }

    #[test]
    fn session_ids_round_trip() {
        let id = SessionId::from_raw(0x1234);
        assert_eq!(id.to_string().parse::<SessionId>().unwrap(), id);
        let mut s = String::new();
        id.push_to(&mut s);
        assert_eq!(s, id.to_string());
    }

    #[test]
    fn tokens_round_trip_and_derive_their_id() {
        let zero: SessionToken = "00000000000000000000000000000000".parse().unwrap();
        // The first 8 bytes of SHA-256 of 16 zero bytes.
        assert_eq!(zero.id().to_string(), "374708fff7719dd5");
        let counting: SessionToken = "000102030405060708090a0b0c0d0e0f".parse().unwrap();
        assert_eq!(counting.to_string(), "000102030405060708090a0b0c0d0e0f");
        assert_eq!(counting.id().to_string(), "be45cb2605bf36be");
        let fresh = SessionToken::generate();
        assert_eq!(fresh.to_string().parse::<SessionToken>().unwrap(), fresh);
        assert_ne!(SessionToken::generate(), fresh);
    }

    #[test]
    fn tokens_parse_strictly_and_compare_whole() {
        for bad in [
            "",
            "00",
            "374708fff7719dd5",
            "000102030405060708090A0B0C0D0E0F",
            "000102030405060708090a0b0c0d0e0g",
        ] {
            assert_eq!(bad.parse::<SessionToken>(), Err(InvalidSessionToken), "{bad}");
        }
        assert!("000102030405060708090a0b0c0d0e0f0".parse::<SessionToken>().is_err());
        let a: SessionToken = "000102030405060708090a0b0c0d0e0f".parse().unwrap();
        let last: SessionToken = "000102030405060708090a0b0c0d0e00".parse().unwrap();
        let first: SessionToken = "ff0102030405060708090a0b0c0d0e0f".parse().unwrap();
        assert!(a != last && a != first && a == a.to_string().parse().unwrap());
    }

    #[test]
    fn debug_shows_the_id_not_the_secret() {
        let token: SessionToken = "000102030405060708090a0b0c0d0e0f".parse().unwrap();
        let debug = format!("{token:?}");
        assert_eq!(debug, "SessionToken { id: be45cb2605bf36be, .. }");
        assert!(!debug.contains("0102030405"));
    }
}
