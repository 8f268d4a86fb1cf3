//! Fan-out: which sessions may receive an entry, found without looking at
//! the others, and the task that hands each new entry to them.
//!
//! Sessions are indexed by what they subscribed to, in the manner of
//! centrifuge's hub and socket.io's rooms:
//!
//! - `*` subscribers, who are handed every entry (a burst as one run);
//! - the subscribers of a collection without a filter, by its name;
//! - filtered subscribers, by (collection, field, value): each alternative
//!   of a filter is filed under one of its conditions, the one with the
//!   fewest values, and an entry is looked up by each of its top-level
//!   fields, new and old (`data.before`), so a row that moves reaches both
//!   sides. An entry without data concerns every filtered subscriber of
//!   its collection (nothing can be checked, so it passes), and data that
//!   is not an object concerns none (see [`Where`](super::Where)).
//!
//! Every filter is an AND of `field = value` / `field in values`
//! conditions, so every filter can be indexed: no subscription is matched
//! by trying it on every notification.
//!
//! An entry addressed to an audience (`user:42`) is handed to the members
//! of that audience instead, when they are fewer than the collection's
//! subscribers: a user's own notifications wake only that user's pages.
//!
//! The index finds who *may* receive an entry. The session still decides
//! with its whole rule (filters, audience, readable collections, the
//! origin skip) when it reads the entry: the index only spares the
//! others the work.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Weak};
use std::time::Instant;

use dashmap::DashMap;
use tokio::sync::Notify;

use super::Hub;
use super::history::Entry;
use super::mailbox::{Lag, Mailbox};
use super::subscriptions::Subscriptions;
use crate::SessionId;
use crate::filter::{Data, Scalar};

/// Hashes names and values on every entry: foldhash, seeded per index.
type Hasher = foldhash::fast::RandomState;

/// A set of sessions: their mailboxes, by id.
type Sessions = HashMap<SessionId, Arc<Mailbox>, Hasher>;

/// The sessions indexed by what they receive.
#[derive(Default)]
pub(crate) struct Index {
    /// Subscribed to `*`.
    everything: DashMap<SessionId, Arc<Mailbox>, Hasher>,
    /// By collection name.
    collections: DashMap<Box<str>, Subscribers, Hasher>,
    /// By audience: the sessions whose identity belongs to it.
    members: DashMap<Arc<str>, Sessions, Hasher>,
}

/// The subscribers of one collection.
#[derive(Default)]
struct Subscribers {
    /// Without a filter: every entry of the collection.
    whole: Sessions,
    /// With a filter: an entry without data.
    filtered: Sessions,
    /// With a filter, by field, then by value: an entry whose field (new
    /// or old) has that value.
    by_value: HashMap<Box<str>, HashMap<Scalar, Sessions, Hasher>, Hasher>,
}

impl Subscribers {
    fn is_empty(&self) -> bool {
        self.whole.is_empty() && self.filtered.is_empty()
    }
}

/// Where a session is filed: one place in the index.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    /// Among the `*` subscribers.
    Everything,
    /// Among the subscribers of a collection, at this place.
    In(Box<str>, Place),
}

/// A place among the subscribers of one collection ([`Subscribers`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Place {
    Whole,
    Filtered,
    Value { field: Box<str>, value: Scalar },
}

/// The places in the index that `subscriptions` file a session under.
fn keys(subscriptions: &Subscriptions) -> HashSet<Key> {
    let mut keys = HashSet::new();
    if subscriptions.all() {
        // `*` receives everything: the named collections add nothing.
        keys.insert(Key::Everything);
        return keys;
    }
    for (collection, filters) in subscriptions.each() {
        let at = |place| Key::In(collection.into(), place);
        let Some(filters) = filters else {
            keys.insert(at(Place::Whole));
            continue;
        };
        keys.insert(at(Place::Filtered));
        for filter in filters {
            let (field, values) = filter.indexed();
            keys.extend(
                values.iter().map(|value| at(Place::Value { field: field.into(), value: value.clone() })),
            );
        }
    }
    keys
}

impl Index {
    /// Files a session under the audiences its identity belongs to.
    pub(crate) fn join(&self, id: SessionId, mailbox: &Arc<Mailbox>, audiences: &[Arc<str>]) {
        for audience in audiences {
            self.members.entry(audience.clone()).or_default().insert(id, mailbox.clone());
        }
    }

    /// Takes a session out of its audiences (it closed).
    pub(crate) fn leave(&self, id: SessionId, audiences: &[Arc<str>]) {
        for audience in audiences {
            if let Some(mut members) = self.members.get_mut(audience) {
                members.remove(&id);
                if members.is_empty() {
                    drop(members);
                    self.members.remove_if(audience, |_, m| m.is_empty());
                }
            }
        }
    }

    /// Files a new session under its subscriptions.
    pub(crate) fn add(&self, id: SessionId, mailbox: &Arc<Mailbox>, subscriptions: &Subscriptions) {
        for key in keys(subscriptions) {
            self.file(key, id, mailbox);
        }
    }

    /// Takes a session out of the index (it closed).
    pub(crate) fn remove(&self, id: SessionId, subscriptions: &Subscriptions) {
        for key in keys(subscriptions) {
            self.unfile(key, id);
        }
    }

    /// Moves a session from its old subscriptions' places to its new ones.
    /// The new places are filed first, so that an entry fanned out
    /// meanwhile reaches the session if either rule may want it.
    pub(crate) fn replace(
        &self,
        id: SessionId,
        mailbox: &Arc<Mailbox>,
        before: &Subscriptions,
        after: &Subscriptions,
    ) {
        let (old, new) = (keys(before), keys(after));
        for key in new.difference(&old) {
            self.file(key.clone(), id, mailbox);
        }
        for key in old.difference(&new) {
            self.unfile(key.clone(), id);
        }
    }

    fn file(&self, key: Key, id: SessionId, mailbox: &Arc<Mailbox>) {
        let mailbox = mailbox.clone();
        let (collection, place) = match key {
            Key::Everything => {
                self.everything.insert(id, mailbox);
                return;
            }
            Key::In(collection, place) => (collection, place),
        };
        let mut subscribers = self.collections.entry(collection).or_default();
        match place {
            Place::Whole => subscribers.whole.insert(id, mailbox),
            Place::Filtered => subscribers.filtered.insert(id, mailbox),
            Place::Value { field, value } => {
                subscribers.by_value.entry(field).or_default().entry(value).or_default().insert(id, mailbox)
            }
        };
    }

    fn unfile(&self, key: Key, id: SessionId) {
        let (collection, place) = match &key {
            Key::Everything => {
                self.everything.remove(&id);
                return;
            }
            Key::In(collection, place) => (&**collection, place),
        };
        let Some(mut subscribers) = self.collections.get_mut(collection) else { return };
        match place {
            Place::Whole => {
                subscribers.whole.remove(&id);
            }
            Place::Filtered => {
                subscribers.filtered.remove(&id);
            }
            Place::Value { field, value } => {
                if let Some(values) = subscribers.by_value.get_mut(&**field) {
                    if let Some(sessions) = values.get_mut(value) {
                        sessions.remove(&id);
                        if sessions.is_empty() {
                            values.remove(value);
                        }
                    }
                    if values.is_empty() {
                        subscribers.by_value.remove(&**field);
                    }
                }
            }
        }
        // A collection nobody subscribes to any more leaves the index (the
        // names are the clients' to choose: the index must not keep them).
        if subscribers.is_empty() {
            drop(subscribers);
            self.collections.remove_if(collection, |_, s| s.is_empty());
        }
    }

    /// Hands `entry` to the sessions subscribed to its collection that may
    /// want it. Its fields are read here, once, if a filter needs them:
    /// before any filtered session is woken, and never under the history's
    /// lock.
    fn deliver(&self, entry: &Entry) {
        let Some(subscribers) = self.collections.get(entry.collection.as_ref()) else { return };
        let seq = entry.seq;
        if let Some(audience) = &entry.audience {
            // Only members may receive it: when they are fewer, they are
            // the ones to wake (each still checks its subscription).
            let Some(members) = self.members.get(audience) else { return };
            if members.len() < subscribers.whole.len() + subscribers.filtered.len() {
                if !subscribers.filtered.is_empty() {
                    // A filtered member reads them under the history's
                    // lock otherwise.
                    entry.data();
                }
                members.values().for_each(|m| m.push(seq));
                return;
            }
        }
        subscribers.whole.values().for_each(|m| m.push(seq));
        if subscribers.filtered.is_empty() {
            return;
        }
        match entry.data() {
            Data::Absent => subscribers.filtered.values().for_each(|m| m.push(seq)),
            Data::Unreadable => {}
            Data::Fields(fields) => {
                for (field, value) in fields.pairs() {
                    if let Some(sessions) = subscribers.by_value.get(field).and_then(|v| v.get(value)) {
                        sessions.values().for_each(|m| m.push(seq));
                    }
                }
            }
        }
    }
}

impl Hub {
    /// Hands every entry appended since the last call to the sessions that
    /// may receive it, in order, until none is left.
    fn fan_out(&self, batch: &mut VecDeque<Arc<Entry>>) {
        loop {
            if self.history.take_unfanned(batch) {
                // Entries went by that this task never saw: whoever wanted
                // them must be told (a session to whom nothing it may see
                // changed resyncs silently, see `Session::resync`).
                tracing::warn!("tidings: the fan-out queue overflowed; every session checks what it lost");
                self.lag_every_session(Lag::Overflow);
            }
            let (Some(first), Some(last)) = (batch.front(), batch.back()) else { return };
            // Sequence numbers only grow: `*` subscribers are handed the
            // batch as one run (a number in it that is not in the history,
            // skipped by an interruption, reads as a lag, which it is).
            let run = first.seq..last.seq + 1;
            // One clock read per batch, here rather than on the caller's
            // `notify`: the delivery latency is measured from it.
            let now = Instant::now();
            for entry in batch.iter() {
                entry.stamp(now);
                self.index.deliver(entry);
            }
            self.index.everything.iter().for_each(|m| m.push_run(run.clone()));
            batch.clear();
            self.advanced.notify_waiters();
        }
    }
}

/// The fan-out task: after each delivery to the history, hands the new
/// entries to the sessions that may receive them. It runs off the caller's
/// path, so `notify` costs the same however many sessions there are; and it
/// touches only the sessions the index leads to.
pub(crate) async fn run(hub: Weak<Hub>, signal: Arc<Notify>) {
    let mut batch = VecDeque::new();
    loop {
        signal.notified().await;
        match hub.upgrade() {
            Some(hub) => hub.fan_out(&mut batch),
            None => return,
        }
    }
}

#[cfg(test)]
// Runs of sequence numbers are ranges: a list of one run is not a typo.
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;
    use crate::hub::History;
    use crate::hub::mailbox::Taken;
    use crate::{Notification, Op};
    use std::collections::VecDeque;
    use std::ops::Range;

    fn subscribed(collections: &str, filters: Option<&str>) -> Subscriptions {
        Subscriptions::from_query(Some(collections), filters).unwrap()
    }

    fn taken(m: &Mailbox) -> Vec<Range<u64>> {
        let mut runs = VecDeque::new();
        assert_eq!(m.take(&mut runs), Taken::Runs);
        runs.into()
    }

    #[test]
    fn a_session_is_filed_under_one_condition_per_alternative() {
        let s = subscribed("posts,forums", Some(r#"{"posts":[{"forum_id":[1,2],"kind":"q"},{"id":9}]}"#));
        let keys = keys(&s);
        let value =
            |field: &str, value: Scalar| Key::In("posts".into(), Place::Value { field: field.into(), value });
        let expected: HashSet<Key> = [
            Key::In("forums".into(), Place::Whole),
            Key::In("posts".into(), Place::Filtered),
            value("kind", Scalar::Str("q".into())),
            value("id", Scalar::Int(9)),
        ]
        .into();
        assert_eq!(keys, expected);
        assert_eq!(super::keys(&subscribed("*,posts", None)), [Key::Everything].into());
    }

    fn entries(notifications: Vec<Notification>) -> Vec<Arc<Entry>> {
        let history = History::new(1, 64);
        notifications.into_iter().for_each(|n| history.append_one(n, None));
        let mut queue = VecDeque::new();
        history.take_unfanned(&mut queue);
        queue.into()
    }

    fn post(data: &str) -> Notification {
        let raw = serde_json::value::RawValue::from_string(data.to_owned()).unwrap();
        Notification::new("posts", Op::Update).with_raw_data(raw)
    }

    #[test]
    fn an_entry_reaches_only_the_sessions_that_may_want_it() {
        let index = Index::default();
        let mut ids = 0;
        let mut session = |collections: &str, filters: Option<&str>| {
            ids += 1;
            let mailbox = Arc::new(Mailbox::new(64));
            index.add(SessionId::from_raw(ids), &mailbox, &subscribed(collections, filters));
            mailbox
        };
        let forum_3 = session("posts", Some(r#"{"posts":{"forum_id":3}}"#));
        let forum_5_or_6 = session("posts", Some(r#"{"posts":[{"forum_id":[5,6]},{"id":99,"forum_id":1}]}"#));
        let forum_4 = session("posts", Some(r#"{"posts":{"forum_id":4}}"#));
        let every_post = session("posts", None);
        let forums = session("forums", None);
        let everything = session("*", None);
        let entries = entries(vec![
            post(r#"{"id":1,"forum_id":3}"#),
            post(r#"{"id":1,"forum_id":5,"before":{"forum_id":3}}"#),
            Notification::new("posts", Op::Delete),
            post("[1]"),
            Notification::new("forums", Op::Insert),
            post(r#"{"id":99,"forum_id":1}"#),
        ]);
        entries.iter().for_each(|e| index.deliver(e));
        assert_eq!(taken(&forum_3), [1..4], "its row, the row that moved out, and data-less");
        assert_eq!(taken(&forum_5_or_6), [2..4, 6..7], "moved in, data-less, and the `id` alternative's key");
        assert_eq!(taken(&forum_4), [3..4], "only the data-less one");
        assert_eq!(taken(&every_post), [1..5, 6..7], "every post, unreadable data included");
        assert_eq!(taken(&forums), [5..6]);
        assert_eq!(taken(&everything), [], "`*` is handed whole batches by the task, not per entry");
    }

    #[test]
    fn an_entry_for_an_audience_wakes_only_its_members() {
        let index = Index::default();
        let mut ids = 0;
        let mut session = |audiences: &[&str], collections: &str| {
            ids += 1;
            let mailbox = Arc::new(Mailbox::new(64));
            let audiences: Vec<Arc<str>> = audiences.iter().map(|&a| a.into()).collect();
            index.join(SessionId::from_raw(ids), &mailbox, &audiences);
            index.add(SessionId::from_raw(ids), &mailbox, &subscribed(collections, None));
            mailbox
        };
        let user_1 = session(&["user:1", "staff"], "inbox");
        let user_2 = session(&["user:2", "staff"], "inbox");
        let user_3 = session(&["user:3"], "inbox");
        let entries = entries(vec![
            Notification::new("inbox", Op::Insert).to("user:1"),
            Notification::new("inbox", Op::Insert).to("user:9"),
            Notification::new("inbox", Op::Insert),
            Notification::new("inbox", Op::Insert).to("staff"),
        ]);
        entries.iter().for_each(|e| index.deliver(e));
        assert_eq!(taken(&user_1), [1..2, 3..5], "its own, everyone's, and staff's");
        assert_eq!(taken(&user_2), [3..5], "everyone's and staff's");
        assert_eq!(taken(&user_3), [3..4], "everyone's only: staff's went to its two members");
        index.leave(SessionId::from_raw(1), &["user:1".into(), "staff".into()]);
        assert!(!index.members.contains_key("user:1"), "an empty audience leaves the index");
    }

    #[test]
    fn removing_every_session_empties_the_index() {
        let index = Index::default();
        let a = Arc::new(Mailbox::new(8));
        let s = subscribed("posts,forums", Some(r#"{"posts":{"forum_id":[1,2]}}"#));
        index.add(SessionId::from_raw(1), &a, &s);
        index.add(SessionId::from_raw(2), &a, &subscribed("*", None));
        assert_eq!(index.collections.len(), 2);
        index.remove(SessionId::from_raw(1), &s);
        index.remove(SessionId::from_raw(2), &subscribed("*", None));
        assert!(index.collections.is_empty() && index.everything.is_empty());
    }

    #[test]
    fn replacing_a_filter_moves_the_session() {
        let index = Index::default();
        let m = Arc::new(Mailbox::new(8));
        let id = SessionId::from_raw(1);
        let three = subscribed("posts", Some(r#"{"posts":{"forum_id":3}}"#));
        let five = subscribed("posts", Some(r#"{"posts":{"forum_id":5}}"#));
        index.add(id, &m, &three);
        index.replace(id, &m, &three, &five);
        let posts = index.collections.get("posts").unwrap();
        let forum = &posts.by_value["forum_id"];
        assert!(forum.contains_key(&Scalar::Int(5)) && !forum.contains_key(&Scalar::Int(3)));
        drop(posts);
        assert_eq!(taken(&m), []);
    }
}
