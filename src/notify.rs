//! One way to notify, whatever holds the notification until it goes out:
//! the [`Notifier`](crate::Notifier) sends it now, a [`Batch`](crate::Batch)
//! when it is committed, a sea-orm
//! [`Transaction`](crate::sea_orm::Transaction) after the database commit.

use std::borrow::Cow;

use serde::Serialize;

use crate::{Notification, Op};

/// Tells clients that a collection changed.
///
/// Implemented by [`Notifier`](crate::Notifier),
/// [`Batch`](crate::Batch) and [`Transaction`](crate::sea_orm::Transaction),
/// so code that writes can take whichever its caller has:
///
/// ```
/// use tidings::{Notifier, Notify, Op};
///
/// /// Called with the notifier, a request's batch or a transaction alike.
/// fn forum_created(notify: &impl Notify, id: i32) {
///     notify.notify_with("forums", Op::Insert, &serde_json::json!({ "id": id })).unwrap();
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let notifier = Notifier::new();
/// forum_created(&notifier, 7); // goes out now
/// let batch = notifier.batch();
/// forum_created(&batch, 8); // goes out with the batch
/// batch.commit();
/// assert_eq!(notifier.cursor().seq(), 2);
/// # }
/// ```
pub trait Notify {
    /// Hands over a notification built with [`Notification`]'s methods (for
    /// an audience, or with the originating session).
    fn push(&self, notification: Notification);

    /// That `collection` changed, without data.
    fn notify(&self, collection: impl Into<Cow<'static, str>>, op: Op)
    where
        Self: Sized,
    {
        self.push(Notification::new(collection, op));
    }

    /// That `collection` changed, with `data` (typically the row's id)
    /// serialized now, once for all clients.
    ///
    /// Fails only when `data`'s `Serialize` implementation fails (for
    /// example a map with non-string keys); nothing is notified then.
    fn notify_with<T: Serialize + ?Sized>(
        &self,
        collection: impl Into<Cow<'static, str>>,
        op: Op,
        data: &T,
    ) -> Result<(), serde_json::Error>
    where
        Self: Sized,
    {
        self.push(Notification::new(collection, op).with_data(data)?);
        Ok(())
    }
}
