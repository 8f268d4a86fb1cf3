//! What a session receives: the collections it subscribed to, each with
//! its filters, checked against the limits and the session's identity.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::ErrorCode;
use crate::Identity;
use crate::filter::{self, Data, Filter, FilterError, Where};

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

/// What a session wants from one collection: every notification
/// (`filters` is `None`), or those that pass any of its filters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Subscription {
    filters: Option<Box<[Filter]>>,
}

impl Subscription {
    /// Whether a notification with this data passes. `data` is called only
    /// when there are filters: reading the fields is left to them.
    ///
    /// Without data nothing can be checked, so it passes: a filtered
    /// subscriber never misses a change it may concern (a condensed batch
    /// carries no data). Data that is present but not an object, or cannot
    /// be read, passes no filter: a filter stands for an authorization
    /// ([`Identity::permit`]), and what it cannot check it must not send.
    fn passes<'a>(&self, data: impl FnOnce() -> Data<'a>) -> bool {
        let Some(filters) = &self.filters else { return true };
        match data() {
            Data::Absent => true,
            Data::Unreadable => false,
            Data::Fields(fields) => filters.iter().any(|f| f.matches(fields)),
        }
    }

    fn size(&self) -> usize {
        self.filters.iter().flatten().map(Filter::size).sum()
    }
}

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
    ///
    /// `filters`, the `where` query parameter, is a JSON object from
    /// collection names to a [`where`](filter::parse_where); each of those
    /// collections is subscribed with it. They count as named collections:
    /// `where` alone subscribes them, not `*`.
    pub(crate) fn from_query(list: Option<&str>, filters: Option<&str>) -> Result<Self, String> {
        let mut subscriptions = Subscriptions { all: false, names: BTreeMap::new() };
        for name in list.unwrap_or_default().split(',').map(str::trim).filter(|s| !s.is_empty()) {
            check_name(name)?;
            subscriptions.add(name, None);
            if subscriptions.names.len() > Self::MAX_NAMES {
                return Err(format!("at most {} collections per session", Self::MAX_NAMES));
            }
        }
        if let Some(filters) = filters.filter(|f| !f.trim().is_empty()) {
            let by_name: serde_json::Map<String, Value> = serde_json::from_str(filters)
                .map_err(|_| "`where` must be a JSON object of collection names to filters".to_owned())?;
            for (name, value) in &by_name {
                check_name(name)?;
                if name == Self::ALL {
                    return Err("a filter needs a named collection, not `*`".into());
                }
                let parsed = filter::parse_where(value).map_err(|e| format!("`{name}`: {}", e.message()))?;
                subscriptions.add(name, parsed);
                if subscriptions.names.len() > Self::MAX_NAMES {
                    return Err(format!("at most {} collections per session", Self::MAX_NAMES));
                }
            }
            subscriptions.check_size().map_err(|r| r.message)?;
        }
        // Decided after both lists: the names `where` filters are named
        // collections too, and `*` would ignore their filters.
        subscriptions.all |= subscriptions.names.is_empty();
        Ok(subscriptions)
    }

    /// Refuses a session whose filters hold more than
    /// [`MAX_SESSION_VALUES`](filter::MAX_SESSION_VALUES) values in all.
    fn check_size(&self) -> Result<(), Refusal> {
        let size: usize = self.names.values().map(Subscription::size).sum();
        if size > filter::MAX_SESSION_VALUES {
            let message = format!("at most {} filter values per session", filter::MAX_SESSION_VALUES);
            return Err(Refusal::new(ErrorCode::Forbidden, message));
        }
        Ok(())
    }

    /// The first subscription `identity` does not allow, if any: a named
    /// collection it may not read, or one (or `*`) its
    /// [`permit`](Identity::permit) hook refuses with its filter.
    pub(crate) fn first_forbidden<'a>(&'a self, identity: &Identity) -> Option<&'a str> {
        if self.all && !identity.may_subscribe(Self::ALL, None) {
            return Some(Self::ALL);
        }
        self.names
            .iter()
            .find(|(name, s)| !identity.may_subscribe(name, s.filters.as_deref().map(Where::new).as_ref()))
            .map(|(name, _)| &**name)
    }

    /// Adds collections, each with the filter `filter` (a `where`; `None`:
    /// everything), which replaces the filter it had. All or nothing,
    /// refused if a name or the filter is malformed (`bad_frame`), not
    /// allowed, or if the session would hold more than
    /// [`MAX_NAMES`](Self::MAX_NAMES) collections or too large filters
    /// (`forbidden`).
    pub(crate) fn subscribe(
        &mut self,
        names: &[String],
        filter: Option<&Value>,
        identity: &Identity,
    ) -> Result<(), Refusal> {
        names.iter().try_for_each(|n| check_name(n)).map_err(|m| Refusal::new(ErrorCode::BadFrame, m))?;
        let filters = match filter {
            Some(value) => filter::parse_where(value).map_err(|e| match e {
                FilterError::Malformed(m) => Refusal::new(ErrorCode::BadFrame, m),
                FilterError::TooLarge(m) => Refusal::new(ErrorCode::Forbidden, m),
            })?,
            None => None,
        };
        if filters.is_some() && names.iter().any(|n| n == Self::ALL) {
            let message = "a filter needs a named collection, not `*`".to_owned();
            return Err(Refusal::new(ErrorCode::BadFrame, message));
        }
        let filter = filters.as_deref().map(Where::new);
        if let Some(bad) = names.iter().find(|n| !identity.may_subscribe(n, filter.as_ref())) {
            let with = if filter.is_some() { " with this filter" } else { "" };
            let message = format!("not allowed to subscribe to `{bad}`{with}");
            return Err(Refusal::new(ErrorCode::Forbidden, message));
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
        let before = self.clone();
        names.iter().for_each(|name| self.add(name, filters.clone()));
        if let Err(refusal) = self.check_size() {
            *self = before;
            return Err(refusal);
        }
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

    fn add(&mut self, name: &str, filters: Option<Box<[Filter]>>) {
        match name {
            Self::ALL => self.all = true,
            name => {
                self.names.insert(name.into(), Subscription { filters });
            }
        }
    }

    /// Whether the session receives anything of `collection`.
    pub(crate) fn contains(&self, collection: &str) -> bool {
        self.all || self.names.contains_key(collection)
    }

    /// Whether the session receives a notification of `collection` with
    /// this data: subscribed to `*`, or to the collection with a filter it
    /// passes. One lookup; `data` is called only to check a filter.
    pub(crate) fn wants<'a>(&self, collection: &str, data: impl FnOnce() -> Data<'a>) -> bool {
        self.all || self.names.get(collection).is_some_and(|s| s.passes(data))
    }

    /// Each collection subscribed by name, with its filters (`None`:
    /// every notification of it).
    pub(crate) fn each(&self) -> impl Iterator<Item = (&str, Option<&[Filter]>)> {
        self.names.iter().map(|(name, s)| (&**name, s.filters.as_deref()))
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
    use crate::filter::Fields;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn query_parses_to_subscriptions() {
        assert!(Subscriptions::from_query(None, None).unwrap().contains("x"));
        assert!(Subscriptions::from_query(Some(""), None).unwrap().contains("x"));
        let s = Subscriptions::from_query(Some("forums, posts"), None).unwrap();
        assert!(s.contains("posts") && !s.contains("x"));
        assert_eq!((s.all(), s.count()), (false, 2));
        assert!(Subscriptions::from_query(Some("*,a"), None).unwrap().contains("x"));
        assert!(Subscriptions::from_query(Some("a,b c"), None).unwrap_err().contains("`b c`"));
        let only_where = Subscriptions::from_query(None, Some(r#"{"posts":{"id":1}}"#)).unwrap();
        assert_eq!((only_where.all(), only_where.count()), (false, 1), "`where` names its collections");
        assert!(Subscriptions::from_query(Some(""), Some("{}")).unwrap().all(), "no names at all: `*`");
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
        let mut s = Subscriptions::from_query(None, None).unwrap();
        assert!(s.unsubscribe(&names(&["*"])).is_ok());
        assert!(!s.contains("forums"));
        assert!(s.subscribe(&names(&["forums"]), None, &id).is_ok());
        assert!(s.contains("forums") && !s.contains("posts"));
        assert!(s.subscribe(&names(&["*"]), None, &id).is_ok());
        assert!(s.contains("posts"));
    }

    #[test]
    fn subscriptions_are_capped() {
        let id = Identity::anonymous();
        let mut s = Subscriptions::from_query(None, None).unwrap();
        let many: Vec<String> = (0..Subscriptions::MAX_NAMES).map(|i| format!("c{i}")).collect();
        assert!(s.subscribe(&many, None, &id).is_ok());
        assert!(s.subscribe(&names(&["c0", "c0"]), None, &id).is_ok(), "names already held are not new");
        let refusal = s.subscribe(&names(&["one-more"]), None, &id).err().unwrap();
        assert_eq!(refusal.code, ErrorCode::Forbidden);
        assert!(refusal.message.contains("at most"));
        let query: Vec<String> = (0..=Subscriptions::MAX_NAMES).map(|i| format!("c{i}")).collect();
        assert!(Subscriptions::from_query(Some(&query.join(",")), None).unwrap_err().contains("at most"));
    }

    #[test]
    fn refused_frames_change_nothing() {
        let id = Identity::anonymous().collections(["forums", "posts"]);
        let mut s = Subscriptions::from_query(Some("forums"), None).unwrap();
        let before = s.clone();
        let refusal = s.subscribe(&names(&["posts", "audit"]), None, &id).err().unwrap();
        assert_eq!(refusal.code, ErrorCode::Forbidden);
        let refusal = s.subscribe(&names(&["posts", "bad name"]), None, &id).err().unwrap();
        assert_eq!(refusal.code, ErrorCode::BadFrame);
        let refusal = s.unsubscribe(&names(&["forums", ""])).err().unwrap();
        assert_eq!(refusal.code, ErrorCode::BadFrame);
        assert_eq!(s, before);
    }

    #[test]
    fn filters_narrow_a_collection_and_a_resubscribe_replaces_them() {
        let id = Identity::anonymous();
        let forums: Vec<Fields> =
            (0..6).map(|n| Fields::parse(&format!(r#"{{"forum_id":{n}}}"#)).unwrap()).collect();
        let forums = &forums;
        let forum = move |n: usize| move || Data::Fields(&forums[n]);
        let mut s = Subscriptions::from_query(Some("posts"), Some(r#"{"posts":{"forum_id":3}}"#)).unwrap();
        assert!(s.wants("posts", forum(3)) && !s.wants("posts", forum(4)));
        assert!(s.wants("posts", || Data::Absent), "no data: cannot tell, so it is sent");
        assert!(!s.wants("posts", || Data::Unreadable), "data no filter can read: held back");
        assert!(!s.wants("forums", || Data::Absent));
        let either = serde_json::json!([{"forum_id": 4}, {"forum_id": 5}]);
        assert!(s.subscribe(&names(&["posts"]), Some(&either), &id).is_ok());
        assert!(!s.wants("posts", forum(3)) && s.wants("posts", forum(5)));
        assert!(s.subscribe(&names(&["posts"]), None, &id).is_ok());
        assert!(s.wants("posts", || -> Data { panic!("no filter: the data is not read") }));
    }

    #[test]
    fn bad_filters_change_nothing() {
        let id = Identity::anonymous();
        let mut s = Subscriptions::from_query(Some("posts"), None).unwrap();
        let before = s.clone();
        let bad = serde_json::json!({"forum_id": {"gt": 3}});
        assert_eq!(s.subscribe(&names(&["posts"]), Some(&bad), &id).err().unwrap().code, ErrorCode::BadFrame);
        let star = serde_json::json!({"id": 1});
        assert_eq!(s.subscribe(&names(&["*"]), Some(&star), &id).err().unwrap().code, ErrorCode::BadFrame);
        // Under the per-filter limits, over the per-session one.
        let values: Vec<u32> = (0..filter::MAX_VALUES as u32).collect();
        let big = serde_json::json!({ "id": values });
        let per_session = filter::MAX_SESSION_VALUES / filter::MAX_VALUES;
        let many: Vec<String> = (0..per_session).map(|i| format!("c{i}")).collect();
        assert!(s.subscribe(&many, Some(&big), &id).is_ok());
        let snapshot = s.clone();
        let refusal = s.subscribe(&names(&["posts"]), Some(&big), &id).err().unwrap();
        assert_eq!(refusal.code, ErrorCode::Forbidden);
        assert!(refusal.message.contains("filter values per session"), "{}", refusal.message);
        assert_eq!(s, snapshot);
        assert_ne!(s, before);
        assert!(Subscriptions::from_query(Some("a"), Some("{")).unwrap_err().contains("JSON object"));
        assert!(Subscriptions::from_query(None, Some(r#"{"*":{"id":1}}"#)).is_err());
    }
}
