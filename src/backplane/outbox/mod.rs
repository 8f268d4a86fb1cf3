//! The outbox backplane: notifications written to a table of the
//! application's own database, in the same transaction as the data, and
//! relayed from there in commit order to every instance.
//!
//! Three tasks run per instance, each in its own file:
//! - the **writer** (here) inserts the notifications published outside a
//!   transaction (`notify`), batched;
//! - the **relay** ([`relay`]) gives rows their positions once they are
//!   committed, and prunes old ones;
//! - the **reader** ([`reader`]) loads the log's tail at start-up and then
//!   delivers what the relays position, in order, to this instance's hub.
//!
//! The table is the truth; wake-ups only make things fast. A commit wakes
//! this instance's relay at once; on PostgreSQL a relay pass wakes every
//! instance's reader with `NOTIFY`; and relay and reader also look at the
//! table at a fixed interval, which is what recovers rows a crashed process
//! committed but never relayed, and what reaches other processes on SQLite.

mod reader;
mod relay;
mod schema;

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Weak};
use std::time::Duration;

use sea_orm::{DatabaseConnection, DbErr};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::remote::{Backoff, Outgoing, Queue, connecting, report_publisher, unusable};
use super::{Backplane, Link, Publication, PublishError, Receiver};
use crate::backplane::Engine;
use schema::Names;

/// How many queued notifications the writer inserts in one statement.
const WRITE_BATCH: usize = 256;

/// A durable, commit-ordered log of notifications in the application's own
/// database (SQLite or PostgreSQL through sea-orm; feature `outbox`, on by
/// default).
///
/// - **Durable.** Notifications queued in a
///   [`sea_orm::Transaction`](crate::sea_orm::Transaction) are inserted into
///   the outbox table in that same transaction: a commit keeps the data and
///   its notifications together, a rollback neither. A process that dies
///   right after the commit loses nothing: the next relay pass, on any
///   instance, publishes them.
/// - **Commit-ordered.** Cursors are positions the relay assigns once a row
///   is committed (`<log id>-<position>-<fingerprint>`), so a transaction that commits
///   late is delivered after, never behind, what clients already hold.
/// - **Resumable everywhere.** Every instance reads the same log and loads
///   its tail at start-up: a client's cursor resumes exactly after a
///   restart, a deploy, or on another instance, and only a cursor older
///   than the retention gets `resync`.
///
/// ```no_run
/// use tidings::backplane::Outbox;
/// use tidings::{Config, Notifier};
///
/// # #[tokio::main] async fn main() -> Result<(), sea_orm::DbErr> {
/// let db = sea_orm::Database::connect("sqlite://app.db?mode=rwc").await?;
/// let outbox = Outbox::new(db.clone());
/// outbox.migrate().await?; // creates the tables if they do not exist
/// let notifier = Notifier::with_config(Config::default().backplane(outbox));
/// # Ok(()) }
/// ```
///
/// The transactions whose notifications go to the outbox must run on the
/// same database. On SQLite, run it as SQLite applications run with
/// several writers: write-ahead log and a busy timeout
/// (`ConnectOptions::map_sqlx_sqlite_opts`), so that the relay's writes
/// wait for the application's instead of failing with `database is locked`. A `notify` outside any transaction is inserted on its own
/// (batched with others) by a background writer, right after the call.
///
/// On PostgreSQL, each instance keeps one connection of the pool for
/// `LISTEN` (taken out of the pool, which opens another in its place).
///
/// Restoring a backup of the database, or failing over to a replica that
/// missed the last commits, moves the log's positions back, and the next
/// rows take positions clients already saw. Nothing needs doing by hand:
/// - every cursor also names the row at its position (a fingerprint of
///   its id and creation time), and a cursor whose row is not the one at
///   its position now gets `resync`, on every instance, restarted or not;
/// - a running instance that finds the last row it read gone, or another
///   row in its place, gives the log a new id (every session resyncs once,
///   and no cursor of the old id places again).
///
/// See `docs/scaling.md` for how it compares with the other engines, and
/// `docs/benchmarks.md` for what it costs per write.
#[derive(Debug, Clone)]
pub struct Outbox {
    db: DatabaseConnection,
    names: Result<Names, String>,
    /// Keep at most this many relayed rows; 0: the history's capacity.
    keep: usize,
    /// Delete relayed rows older than this.
    keep_for: Option<Duration>,
    /// How often the relay and the reader look at the table unprompted.
    poll: Duration,
    /// How often the relay prunes.
    prune_every: Duration,
    /// Whether this instance relays.
    relay: bool,
}

impl Outbox {
    /// The outbox on `db`, in the table `tidings_outbox` (and
    /// `tidings_outbox_log`).
    pub fn new(db: DatabaseConnection) -> Self {
        Outbox {
            db,
            names: Names::new("tidings_outbox"),
            keep: 0,
            keep_for: Some(Duration::from_secs(24 * 3600)),
            poll: Duration::from_secs(1),
            prune_every: Duration::from_secs(60),
            relay: true,
        }
    }

    /// The table's name (default `tidings_outbox`; the log's id is kept in
    /// `<table>_log`): 1–48 lower-case ASCII letters, digits and `_`.
    /// Instances that share it share their notifications. A bad name makes
    /// [`migrate`](Self::migrate) fail and the backplane report it in its
    /// health.
    pub fn table(mut self, table: &str) -> Self {
        self.names = Names::new(table);
        self
    }

    /// Retention by count: keep at most the newest `rows` relayed rows.
    /// The default, `0`, keeps as many as the notifier's history holds
    /// ([`Config::replay_capacity`](crate::Config::replay_capacity)); more
    /// is pointless, since a cursor is resumed from the history, which an
    /// instance loads from the table's tail when it starts.
    pub fn retain(mut self, rows: usize) -> Self {
        self.keep = rows;
        self
    }

    /// Retention by age: relayed rows older than `age` are deleted (default
    /// 24 hours; `None`: by count only). The newest row is always kept.
    pub fn retain_for(mut self, age: Option<Duration>) -> Self {
        self.keep_for = age;
        self
    }

    /// How often the relay and the reader look at the table without being
    /// woken (default 1 s): the longest a row committed by a process that
    /// died before relaying it waits, and, on SQLite, how late another
    /// process's notifications arrive.
    pub fn poll_interval(mut self, every: Duration) -> Self {
        self.poll = every.max(Duration::from_millis(1));
        self
    }

    /// How often the relay deletes rows past the retention (default 60 s).
    pub fn prune_interval(mut self, every: Duration) -> Self {
        self.prune_every = every.max(Duration::from_millis(1));
        self
    }

    /// Whether this instance relays (default `true`). An instance that does
    /// not still writes notifications to the table and delivers what the
    /// others relay: for a process that should not take the relay's load,
    /// such as a batch job, or to hold a committed notification unrelayed
    /// (a crash between commit and publication) in a test.
    pub fn relay(mut self, relay: bool) -> Self {
        self.relay = relay;
        self
    }

    /// Creates the outbox's tables if they do not exist. Safe to run from
    /// every instance at start-up, concurrently; or run the statements of
    /// [`schema`](Self::schema) in the application's own migrations instead.
    pub async fn migrate(&self) -> Result<(), DbErr> {
        let names = self.names.as_ref().map_err(|e| DbErr::Custom(e.clone()))?;
        schema::migrate(&self.db, names).await
    }

    /// The statements [`migrate`](Self::migrate) runs, for the database's
    /// backend: for an application that keeps its schema in its own
    /// migrations.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let db = sea_orm::Database::connect("sqlite::memory:").await.unwrap();
    /// let statements = tidings::backplane::Outbox::new(db).schema().unwrap();
    /// assert!(statements[0].starts_with("CREATE TABLE IF NOT EXISTS tidings_outbox "));
    /// # }
    /// ```
    pub fn schema(&self) -> Result<Vec<String>, DbErr> {
        let names = self.names.as_ref().map_err(|e| DbErr::Custom(e.clone()))?;
        Ok(schema::create_statements(sea_orm::ConnectionTrait::get_database_backend(&self.db), names))
    }
}

impl Backplane for Outbox {
    fn name(&self) -> &'static str {
        Engine::Outbox.name()
    }

    fn assigns_cursors(&self) -> bool {
        true
    }

    fn start(&self, hub: Weak<dyn Receiver>) -> Box<dyn Link> {
        connecting(&hub);
        let (queue, outgoing) = Queue::new();
        let backend = sea_orm::ConnectionTrait::get_database_backend(&self.db);
        let stopped = CancellationToken::new();
        let names = match &self.names {
            Ok(names) if schema::supported(backend) => names.clone(),
            unsupported => {
                let reason = match unsupported {
                    Err(e) => e.clone(),
                    Ok(_) => format!("the outbox runs on SQLite or PostgreSQL, not {backend:?}"),
                };
                unusable(reason, outgoing, hub);
                return Box::new(OutboxLink { queue, shared: None, stopped });
            }
        };
        let keep = match self.keep {
            0 => hub.upgrade().map_or(1, |h| h.capacity()),
            n => n,
        };
        let shared = Arc::new(Shared {
            db: self.db.clone(),
            names,
            keep,
            keep_for: self.keep_for,
            poll: self.poll,
            prune_every: self.prune_every,
            relay_failing: AtomicBool::new(false),
            wake_relay: Notify::new(),
            wake_reader: Notify::new(),
        });
        // The writer ends by itself once the link (and so its queue) is
        // dropped, after inserting what was queued; relay and reader (and
        // the reader's LISTEN connection) end as the link is dropped.
        tokio::spawn(write(shared.clone(), outgoing, hub.clone()));
        if self.relay {
            tokio::spawn(stopped.clone().run_until_cancelled_owned(relay::run(shared.clone(), hub.clone())));
        }
        tokio::spawn(stopped.clone().run_until_cancelled_owned(reader::run(
            shared.clone(),
            hub,
            stopped.clone(),
        )));
        Box::new(OutboxLink { queue, shared: Some(shared), stopped })
    }
}

/// What the three tasks of one instance share.
struct Shared {
    db: DatabaseConnection,
    names: Names,
    /// Retention by count.
    keep: usize,
    /// Retention by age.
    keep_for: Option<Duration>,
    poll: Duration,
    prune_every: Duration,
    /// Whether the relay's last pass failed (health: the writer and the
    /// relay report the same part, each clearing only its own failure).
    relay_failing: AtomicBool,
    /// Poked after a commit or a write: run a relay pass now.
    wake_relay: Notify,
    /// Poked after this instance's relay pass (and by LISTEN for the
    /// others'): read the log now.
    wake_reader: Notify,
}

/// Publications go to the writer; a transaction's notifications go into
/// the transaction.
struct OutboxLink {
    queue: Queue,
    /// `None` for an outbox that could not start (its health says why).
    shared: Option<Arc<Shared>>,
    /// Cancelled when the link is dropped (its notifier is gone): stops the
    /// relay and the reader.
    stopped: CancellationToken,
}

impl Drop for OutboxLink {
    fn drop(&mut self) {
        self.stopped.cancel();
    }
}

impl Link for OutboxLink {
    fn publish(&self, _hub: &dyn Receiver, publication: Publication) {
        self.queue.push(publication);
    }

    /// Inserts the notifications into the outbox table, in the transaction.
    fn publish_in_transaction<'a>(
        &'a self,
        txn: &'a sea_orm::DatabaseTransaction,
        notifications: &'a [crate::Notification],
    ) -> futures_util::future::BoxFuture<'a, Result<bool, DbErr>> {
        Box::pin(async move {
            let Some(shared) = &self.shared else { return Ok(false) };
            let payloads: Vec<String> = notifications.iter().map(super::envelope::encode).collect();
            let payloads: Vec<&str> = payloads.iter().map(String::as_str).collect();
            schema::insert(txn, &shared.names, &payloads).await?;
            Ok(true)
        })
    }

    fn committed(&self) {
        if let Some(shared) = &self.shared {
            shared.wake_relay.notify_one();
        }
    }
}

/// The payload of a gap marker: notifications may have been lost here (an
/// insert failed), so every reader tells its sessions to resync.
fn gap_marker(reason: &str) -> String {
    serde_json::json!({ "gap": reason }).to_string()
}

/// Inserts the notifications published outside a transaction, in order,
/// everything queued at once in one statement. A failed insert loses its
/// notifications (the caller of `publish` is told) and owes the log a gap
/// marker, inserted before anything else once the database takes writes
/// again.
async fn write(
    shared: Arc<Shared>,
    mut outgoing: mpsc::UnboundedReceiver<Outgoing>,
    hub: Weak<dyn Receiver>,
) {
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    let mut owed_gap: Option<String> = None;
    let mut backoff = Backoff::new();
    loop {
        let received = match &owed_gap {
            None => outgoing.recv_many(&mut batch, WRITE_BATCH).await,
            // Retry the gap marker on its own after a while, even if
            // nothing else is published.
            Some(_) => tokio::select! {
                n = outgoing.recv_many(&mut batch, WRITE_BATCH) => n,
                () = backoff.wait() => usize::MAX,
            },
        };
        if received == 0 {
            return;
        }
        let gap = owed_gap.as_deref().map(gap_marker);
        let payloads: Vec<&str> = gap
            .iter()
            .map(String::as_str)
            .chain(batch.iter().flat_map(|o| o.payloads.iter().map(String::as_str)))
            .collect();
        if payloads.is_empty() {
            continue;
        }
        let span = tracing::debug_span!(
            "tidings.backplane.publish",
            backplane = Engine::Outbox.name(),
            rows = payloads.len()
        );
        let result = schema::insert_all(&shared.db, &shared.names, &payloads)
            .instrument(span)
            .await
            .map_err(|e| PublishError::Backplane(format!("outbox insert failed: {e}")));
        // Health: reported when inserts start failing and when they work
        // again, so that a working writer does not clear the relay's report.
        match &result {
            Ok(()) => {
                if owed_gap.take().is_some() {
                    report_publisher(&hub, Engine::Outbox, &result);
                }
                backoff.reset();
                shared.wake_relay.notify_one();
            }
            Err(e) => {
                report_publisher(&hub, Engine::Outbox, &result);
                owed_gap = Some(e.to_string());
            }
        }
        batch.drain(..).for_each(|out| out.finish(result.clone()));
    }
}
