//! What a session receives: the collections it subscribed to, checked
//! against the limits and the session's identity.

use std::collections::{BTreeMap, BTreeSet};

use super::protocol::ErrorCode;
use crate::Identity;

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
}
