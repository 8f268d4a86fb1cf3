//! Notifications tied to a sea-orm transaction: sent when it commits (with
//! the outbox, written in it), in order, and never if it rolls back.
//!
//! ```no_run
//! use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr};
//! use tidings::{Notifier, Notify, Op, sea_orm::Transaction};
//!
//! async fn delete_forum(db: &DatabaseConnection, notifier: &Notifier, id: i32) -> Result<(), DbErr> {
//!     let txn = Transaction::begin(db, notifier.batch()).await?;
//!     txn.execute_unprepared(&format!("DELETE FROM posts WHERE forum_id = {id}")).await?;
//!     txn.notify_with("posts", Op::Delete, &serde_json::json!({ "forum_id": id })).unwrap();
//!     txn.execute_unprepared(&format!("DELETE FROM forums WHERE id = {id}")).await?;
//!     txn.notify_with("forums", Op::Delete, &serde_json::json!({ "id": id })).unwrap();
//!     txn.commit().await // both notifications go out now, not before
//! }
//! ```

use sea_orm::{
    ConnectionTrait, DatabaseTransaction, DbBackend, DbErr, ExecResult, QueryResult, Statement,
    TransactionTrait,
};

use crate::batch::condense;
use crate::{Batch, Notification, Notify};

/// A database transaction with a [`Batch`] of notifications.
///
/// Use it wherever sea-orm takes a connection (`Entity::find().all(&txn)`,
/// `model.insert(&txn)`); it implements [`ConnectionTrait`]. Notifications
/// queued on it go out only if the database commit succeeds, and are
/// dropped on rollback, on error, or when the transaction is dropped
/// without commit. A transaction started with
/// [`begin_nested`](Transaction::begin_nested) is a savepoint whose
/// notifications join the outer transaction's and go out when the outermost
/// commits.
///
/// When they go out depends on the backplane:
/// - One that publishes inside transactions (the
///   [`Outbox`](crate::backplane::Outbox), and PostgreSQL NOTIFY on the
///   database its listener is connected to) takes them into the
///   transaction itself, whichever batch it was begun with: they are
///   committed with the data and go out at the commit, whatever the
///   response of the request (the change they describe has happened).
/// - Otherwise they are handed to the batch at the commit: pass
///   [`Notifier::batch`](crate::Notifier::batch) to send right after it, or
///   a request's [`Batch`]'s [`child`](Batch::child) to send after the
///   response, and only if it is a success.
pub struct Transaction {
    txn: DatabaseTransaction,
    batch: Batch,
    /// A savepoint inside another [`Transaction`]: its notifications join
    /// the outer one's, which alone publishes.
    nested: bool,
}

impl Transaction {
    /// Begins a transaction on `db` whose notifications go to `batch` on commit.
    pub async fn begin<C>(db: &C, batch: Batch) -> Result<Transaction, DbErr>
    where
        C: TransactionTrait<Transaction = DatabaseTransaction>,
    {
        Ok(Transaction { txn: db.begin().await?, batch, nested: false })
    }

    /// Begins a nested transaction (a savepoint).
    pub async fn begin_nested(&self) -> Result<Transaction, DbErr> {
        Ok(Transaction { txn: self.txn.begin().await?, batch: self.batch.child(), nested: true })
    }

    /// The batch holding this transaction's notifications.
    pub fn batch(&self) -> &Batch {
        &self.batch
    }

    /// Commits, then sends the queued notifications (or hands them to the
    /// outer transaction). If the commit fails, nothing is sent.
    ///
    /// A backplane that can publish inside the transaction does so instead,
    /// just before `COMMIT`, whichever batch the transaction was begun with
    /// (the request's included): the database then keeps or delivers the
    /// notifications if and only if the commit succeeds, even if this
    /// process dies right after it.
    /// - The [`Outbox`](crate::backplane::Outbox) writes them to its table,
    ///   and relays them once the commit is done.
    /// - The PostgreSQL backplane queues `pg_notify`, on a transaction of the
    ///   database its listener is connected to. A notification it cannot
    ///   take (above NOTIFY's 8000-byte limit) fails the commit (the
    ///   transaction is rolled back).
    pub async fn commit(self) -> Result<(), DbErr> {
        if self.nested || self.batch.is_empty() {
            self.txn.commit().await?;
            self.batch.commit();
            return Ok(());
        }
        let hub = self.batch.hub().clone();
        let notifications = condense(self.batch.take(), hub.config.condense_above());
        if let Err(txn) = hub.publish_in_transaction(self.txn, &notifications).await? {
            txn.commit().await?;
            // Published after the commit: now for a root batch, after the
            // response for a request's.
            self.batch.commit_items(notifications);
        }
        Ok(())
    }

    /// Rolls back and drops the queued notifications.
    pub async fn rollback(self) -> Result<(), DbErr> {
        self.batch.discard();
        self.txn.rollback().await
    }
}

#[async_trait::async_trait]
impl ConnectionTrait for Transaction {
    fn get_database_backend(&self) -> DbBackend {
        self.txn.get_database_backend()
    }

    async fn execute_raw(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
        self.txn.execute_raw(stmt).await
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        self.txn.execute_unprepared(sql).await
    }

    async fn query_one_raw(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        self.txn.query_one_raw(stmt).await
    }

    async fn query_all_raw(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        self.txn.query_all_raw(stmt).await
    }

    fn support_returning(&self) -> bool {
        self.txn.support_returning()
    }
}

impl Notify for Transaction {
    /// Queues the notification on the transaction's batch.
    fn push(&self, notification: Notification) {
        self.batch.push(notification);
    }
}

impl std::fmt::Debug for Transaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transaction").field("batch", &self.batch).finish()
    }
}
