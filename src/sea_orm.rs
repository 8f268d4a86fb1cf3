//! Notifications tied to a sea-orm transaction: sent after it commits, in
//! order, and never if it rolls back.
//!
//! ```no_run
//! use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr};
//! use tidings::{Notifier, Op, sea_orm::Transaction};
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

use std::borrow::Cow;

use sea_orm::{
    ConnectionTrait, DatabaseTransaction, DbBackend, DbErr, ExecResult, QueryResult, Statement,
    TransactionTrait,
};
use serde::Serialize;

use crate::{Batch, Notification, Op};

/// A database transaction with a [`Batch`] of notifications.
///
/// Use it wherever sea-orm takes a connection (`Entity::find().all(&txn)`,
/// `model.insert(&txn)`); it implements [`ConnectionTrait`]. Notifications
/// queued on it are handed to its batch's parent when the database commit
/// succeeds, and dropped on rollback, on error, or when the transaction is
/// dropped without commit. A transaction started with
/// [`begin`](Transaction::begin) on another one is a savepoint whose
/// notifications join the outer transaction's and go out when the outermost
/// commits.
///
/// Pass [`Notifier::batch`](crate::Notifier::batch) to send right after the
/// commit, or a request's [`Batch`]'s [`child`](Batch::child) to send after
/// the response, and only if it is a success.
pub struct Transaction {
    txn: DatabaseTransaction,
    batch: Batch,
}

impl Transaction {
    /// Begins a transaction on `db` whose notifications go to `batch` on commit.
    pub async fn begin<C>(db: &C, batch: Batch) -> Result<Transaction, DbErr>
    where
        C: TransactionTrait<Transaction = DatabaseTransaction>,
    {
        Ok(Transaction { txn: db.begin().await?, batch })
    }

    /// Begins a nested transaction (a savepoint).
    pub async fn begin_nested(&self) -> Result<Transaction, DbErr> {
        Ok(Transaction { txn: self.txn.begin().await?, batch: self.batch.child() })
    }

    /// Queues a notification without data.
    pub fn notify(&self, collection: impl Into<Cow<'static, str>>, op: Op) {
        self.batch.notify(collection, op);
    }

    /// Queues a notification with data.
    pub fn notify_with<T: Serialize + ?Sized>(
        &self,
        collection: impl Into<Cow<'static, str>>,
        op: Op,
        data: &T,
    ) -> Result<(), serde_json::Error> {
        self.batch.notify_with(collection, op, data)
    }

    /// Queues a notification built with [`Notification`]'s methods.
    pub fn push(&self, notification: Notification) {
        self.batch.push(notification);
    }

    /// The batch holding this transaction's notifications.
    pub fn batch(&self) -> &Batch {
        &self.batch
    }

    /// Commits, then sends the queued notifications (or hands them to the
    /// outer transaction). If the commit fails, nothing is sent.
    ///
    /// With the PostgreSQL backplane, on a PostgreSQL transaction of the
    /// database its listener is connected to, a root batch's notifications
    /// are instead published with
    /// `pg_notify` inside the transaction, just before `COMMIT`: PostgreSQL
    /// then delivers them if and only if the commit succeeds, even if this
    /// process dies right after it. A notification above NOTIFY's 8000-byte
    /// limit fails the commit (the transaction is rolled back).
    pub async fn commit(self) -> Result<(), DbErr> {
        #[cfg(feature = "postgres")]
        if let Some(channel) = self.notify_channel().await? {
            for n in self.batch.take() {
                let payload = crate::backplane::encode(&n);
                crate::backplane::postgres::check_size(&payload).map_err(|e| DbErr::Custom(e.to_string()))?;
                let notify = Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    "SELECT pg_notify($1, $2)",
                    [channel.as_str().into(), payload.into()],
                );
                self.txn.execute_raw(notify).await?;
            }
            return self.txn.commit().await;
        }
        self.txn.commit().await?;
        self.batch.commit();
        Ok(())
    }

    /// The NOTIFY channel to publish on inside this transaction, if the
    /// notifier uses the PostgreSQL backplane and its listener is connected
    /// to this very server and database (NOTIFY only reaches listeners of
    /// the same database): otherwise `None`, and the notifications go out
    /// through the backplane after the commit.
    #[cfg(feature = "postgres")]
    async fn notify_channel(&self) -> Result<Option<String>, DbErr> {
        let Some(options) = self.batch.root_notifier().and_then(|n| n.hub().postgres_options()) else {
            return Ok(None);
        };
        if self.batch.is_empty() || self.txn.get_database_backend() != DbBackend::Postgres {
            return Ok(None);
        }
        let listening = Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT EXISTS (SELECT 1 FROM pg_stat_activity \
             WHERE application_name = $1 AND datname = current_database()) AS listening",
            [crate::backplane::postgres::listener_name(&options.channel).into()],
        );
        let row = self.txn.query_one_raw(listening).await?;
        let listening: bool = row.map(|r| r.try_get("", "listening")).transpose()?.unwrap_or(false);
        Ok(listening.then(|| options.channel.clone()))
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

impl std::fmt::Debug for Transaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transaction").field("batch", &self.batch).finish()
    }
}
