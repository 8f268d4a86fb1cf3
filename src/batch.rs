//! Notifications that go out together, or not at all.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::value::RawValue;

use crate::backplane::Publication;
use crate::hub::Hub;
use crate::{Notification, Notify, Op, SessionId, SessionToken};

/// A pending list of notifications tied to a unit of work.
///
/// Nothing is sent until [`commit`](Batch::commit); a batch that is dropped
/// or [`discard`](Batch::discard)ed sends nothing. Committing a root batch
/// (from [`Notifier::batch`](crate::Notifier::batch)) sends its notifications in order; committing a
/// [`child`](Batch::child) hands them to its parent, so nested units of work
/// (savepoints) go out when the outermost one commits.
///
/// The same batch type serves the database transaction
/// ([`sea_orm::Transaction`](crate::sea_orm::Transaction)) and the request
/// ([`axum::layer`](crate::axum::layer)). It is a cheap handle: clones share
/// the same pending list.
///
/// # Coalescing
///
/// Within one batch, a notification is dropped when the latest earlier one
/// about the same row has the same op. "The same row": same collection,
/// audience and origin, and the same `id` field when the data is a JSON
/// object with one, otherwise the same data (or both without data). The
/// earlier notification keeps its place and takes the later one's data. So a
/// transaction that updates row 7 five times sends one `update` for row 7;
/// one that updates rows 7 and 8 sends two; `insert 7, delete 7, insert 7`
/// stays as it is (a different op in between is never merged across, so a
/// row's operations keep their order).
///
/// # Large batches
///
/// A root batch of more than [`Config::max_batch`](crate::Config::max_batch)
/// notifications (256 by default, and never more than half the
/// `replay_capacity`) is condensed when it is committed: one
/// notification per collection and op (and per audience and origin),
/// without data, in the order each first appeared. Clients reload those
/// collections; nobody falls behind the history and gets a `resync`.
///
/// ```
/// use tidings::{Notifier, Notify, Op};
/// use serde_json::json;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let notifier = Notifier::new();
/// let batch = notifier.batch();
/// batch.notify_with("posts", Op::Update, &json!({ "id": 7 })).unwrap();
/// batch.notify_with("posts", Op::Update, &json!({ "id": 7, "title": "new" })).unwrap();
/// batch.notify_with("posts", Op::Update, &json!({ "id": 8 })).unwrap();
/// assert_eq!(batch.len(), 2);
///
/// let dropped = notifier.batch();
/// dropped.notify("forums", Op::Delete);
/// drop(dropped); // rolled back: nothing is sent
///
/// batch.commit();
/// assert_eq!(notifier.cursor().seq(), 2);
/// # }
/// ```
#[derive(Clone)]
pub struct Batch {
    shared: Arc<Shared>,
}

struct Shared {
    pending: Mutex<Pending>,
    parent: Parent,
    origin: Option<SessionId>,
}

/// Where a batch's notifications go when it commits.
enum Parent {
    /// Published by the hub (a root batch).
    Hub(Arc<Hub>),
    /// Moved into the enclosing batch.
    Batch(Batch),
}

#[derive(Default)]
struct Pending {
    items: Vec<Notification>,
    index: HashMap<Key, usize>,
}

/// The row a notification is about, for coalescing: the same row when
/// collection, audience, origin and id (or data) are equal.
#[derive(PartialEq, Eq, Hash)]
struct Key {
    collection: Box<str>,
    audience: Option<Arc<str>>,
    origin: Option<SessionId>,
    skip_origin: bool,
    row: Option<Box<str>>,
}

impl Key {
    fn of(n: &Notification) -> Key {
        #[derive(serde::Deserialize)]
        struct Probe<'a> {
            #[serde(borrow)]
            id: Option<&'a RawValue>,
        }
        let row = n.data.as_deref().map(|data| {
            let raw = data.get();
            match serde_json::from_str::<Probe>(raw) {
                Ok(Probe { id: Some(id) }) => format!("id:{}", id.get()).into(),
                _ => format!("data:{raw}").into(),
            }
        });
        Key {
            collection: n.collection.as_ref().into(),
            audience: n.audience.clone(),
            origin: n.origin,
            skip_origin: n.skip_origin,
            row,
        }
    }
}

impl Batch {
    pub(crate) fn new(hub: Arc<Hub>, origin: Option<SessionToken>) -> Batch {
        Batch::with_parent(Parent::Hub(hub), origin.map(|token| token.id()))
    }

    fn with_parent(parent: Parent, origin: Option<SessionId>) -> Batch {
        Batch { shared: Arc::new(Shared { pending: Mutex::new(Pending::default()), parent, origin }) }
    }

    /// A nested batch: committing it moves its notifications into this one.
    pub fn child(&self) -> Batch {
        Batch::with_parent(Parent::Batch(self.clone()), self.shared.origin)
    }

    /// How many notifications are pending.
    pub fn len(&self) -> usize {
        self.lock().items.len()
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sends the pending notifications in order (or hands them to the parent
    /// batch) and empties this batch.
    pub fn commit(&self) {
        let items = self.take();
        self.commit_items(items);
    }

    /// What [`commit`](Self::commit) does, for notifications already taken
    /// out of this batch.
    pub(crate) fn commit_items(&self, items: Vec<Notification>) {
        if items.is_empty() {
            // Most requests write nothing: wake nobody for them.
            return;
        }
        match &self.shared.parent {
            Parent::Hub(hub) => {
                let items = condense(items, hub.config.condense_above());
                hub.publish(Publication::many(items));
            }
            Parent::Batch(parent) => items.into_iter().for_each(|n| parent.push(n)),
        }
    }

    /// The hub this batch (or the batch it nests in) sends to.
    #[cfg(feature = "sea-orm")]
    pub(crate) fn hub(&self) -> &Arc<Hub> {
        match &self.shared.parent {
            Parent::Hub(hub) => hub,
            Parent::Batch(parent) => parent.hub(),
        }
    }

    /// Empties the batch and returns what it held, in order.
    pub(crate) fn take(&self) -> Vec<Notification> {
        std::mem::take(&mut *self.lock()).items
    }

    /// Drops the pending notifications.
    pub fn discard(&self) {
        *self.lock() = Pending::default();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        // The lock is never held across user code, so poisoning cannot leave
        // the list half-updated.
        self.shared.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Above `limit` notifications, one per collection, op, audience and
/// origin, without data, in the order of their first appearance (see
/// "Large batches" on [`Batch`]). If even that is more than `limit` (a
/// batch that touches hundreds of collections), it is sent as it is: the
/// readers that fall behind then get an honest `resync`.
pub(crate) fn condense(items: Vec<Notification>, limit: usize) -> Vec<Notification> {
    if items.len() <= limit {
        return items;
    }
    /// Collection, op and audience: what a condensed notification stands for.
    type Group = (Cow<'static, str>, Op, Option<Arc<str>>);
    let mut kept: Vec<Notification> = Vec::new();
    // Each group's kept notifications, told apart by origin (rarely
    // more than one).
    let mut groups: HashMap<Group, Vec<usize>> = HashMap::new();
    for n in items {
        let key = (n.collection.clone(), n.op, n.audience.clone());
        let group = groups.entry(key).or_default();
        let same_origin = |k: &Notification| k.origin == n.origin && k.skip_origin == n.skip_origin;
        if !group.iter().any(|&at| same_origin(&kept[at])) {
            group.push(kept.len());
            kept.push(Notification { data: None, ..n });
        }
    }
    tracing::debug!(kept = kept.len(), limit, "tidings: condensed a large batch");
    kept
}

impl Notify for Batch {
    /// Adds a notification, coalescing it with an earlier equal one. One
    /// about a reserved collection (`$…`) is dropped with a warning: it
    /// would be refused at publication, and with the outbox it would
    /// otherwise be written to the table.
    fn push(&self, mut notification: Notification) {
        if notification.is_reserved() {
            tracing::warn!(collection = %notification.collection, "tidings: refused a notification about a reserved collection");
            return;
        }
        if notification.origin.is_none() {
            notification.origin = self.shared.origin;
        }
        let key = Key::of(&notification);
        let mut pending = self.lock();
        // Only the row's latest notification may absorb this one: with
        // another op in between, both stay, so a row's ops keep their order.
        match pending.index.get(&key) {
            Some(&at) if pending.items[at].op == notification.op => {
                pending.items[at].data = notification.data
            }
            _ => {
                let at = pending.items.len();
                pending.items.push(notification);
                pending.index.insert(key, at);
            }
        }
    }
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch").field("pending", &self.len()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Notifier;
    use serde_json::json;

    #[tokio::test]
    async fn coalescing_never_reorders_a_rows_operations() {
        let batch = Notifier::new().batch();
        let ops = [Op::Insert, Op::Delete, Op::Insert, Op::Insert, Op::Update, Op::Update];
        for op in ops {
            batch.notify_with("rows", op, &json!({"id": 7})).unwrap();
        }
        let kept: Vec<Op> = batch.take().iter().map(|n| n.op).collect();
        assert_eq!(kept, [Op::Insert, Op::Delete, Op::Insert, Op::Update]);
    }

    #[tokio::test]
    async fn a_batch_above_the_limit_is_condensed_per_collection_and_op() {
        let notifier = Notifier::with_config(crate::Config::default().max_batch(4));
        let small = notifier.batch();
        for id in 0..4 {
            small.notify_with("posts", Op::Delete, &json!({"id": id})).unwrap();
        }
        assert_eq!(condense(small.take(), 4).len(), 4, "at the limit nothing is condensed");

        let large = notifier.batch();
        for id in 0..10 {
            large.notify_with("posts", Op::Delete, &json!({"id": id})).unwrap();
        }
        large.notify_with("forums", Op::Delete, &json!({"id": 1})).unwrap();
        large.push(Notification::new("posts", Op::Delete).to("admin"));
        large.notify_with("posts", Op::Insert, &json!({"id": 99})).unwrap();
        let kept: Vec<(String, Op, Option<String>, bool)> = condense(large.take(), 4)
            .iter()
            .map(|n| (n.collection().to_owned(), n.op, n.audience().map(str::to_owned), n.data().is_some()))
            .collect();
        assert_eq!(
            kept,
            [
                ("posts".to_owned(), Op::Delete, None, false),
                ("forums".to_owned(), Op::Delete, None, false),
                ("posts".to_owned(), Op::Delete, Some("admin".to_owned()), false),
                ("posts".to_owned(), Op::Insert, None, false),
            ]
        );
    }

    #[test]
    fn the_condense_limit_is_at_most_half_the_history() {
        let config = crate::Config::default().replay_capacity(100).max_batch(1000);
        assert_eq!(config.condense_above(), 50);
        assert_eq!(crate::Config::default().condense_above(), 256);
    }

    #[tokio::test]
    async fn distinct_rows_audiences_and_originators_are_kept_apart() {
        let batch = Notifier::new().batch();
        batch.notify_with("rows", Op::Update, &json!({"id": 1})).unwrap();
        batch.notify_with("rows", Op::Update, &json!({"id": 2})).unwrap();
        batch.push(Notification::new("rows", Op::Update).with_data(&json!({"id": 1})).unwrap().to("admin"));
        batch.push(
            Notification::new("rows", Op::Update)
                .with_data(&json!({"id": 1}))
                .unwrap()
                .with_origin(SessionToken::generate()),
        );
        batch.notify_with("rows", Op::Update, &json!({"id": 1, "v": 2})).unwrap();
        let kept = batch.take();
        assert_eq!(kept.len(), 4);
        assert_eq!(kept[0].data().unwrap().get(), r#"{"id":1,"v":2}"#, "took the later data");
    }
}
