//! The PostgreSQL backplane: `pg_notify` on one channel, `LISTEN` on a
//! dedicated connection in every instance. NOTIFY is transactional (sent on
//! commit, in commit order) but keeps no history: cursors are local to each
//! instance, and a lost listener connection means a `resync` for every
//! local client.

use std::sync::{Arc, Weak};
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use tokio::sync::mpsc;
use tracing::Instrument;

use super::envelope::decode;
use super::remote::{
    Listening, Outgoing, Queue, connecting, next_notification, report_publisher, supervise, unusable,
};
use super::{Backplane, Link, Publication, PublishError, Receiver};
use crate::backplane::Engine;

/// PostgreSQL refuses NOTIFY payloads of 8000 bytes or more.
const PAYLOAD_LIMIT: usize = 7999;

/// PostgreSQL `LISTEN/NOTIFY` (feature `postgres`) on one channel. NOTIFY
/// keeps no history: cursors are local to each instance.
///
/// Inside a sea-orm transaction on the database its listener is connected
/// to, notifications are published with `pg_notify` in the transaction
/// itself, so PostgreSQL delivers them if and only if it commits.
///
/// ```no_run
/// use tidings::backplane::Postgres;
/// use tidings::{Config, Notifier};
///
/// # #[tokio::main] async fn main() {
/// let postgres = Postgres::new("postgres://postgres@127.0.0.1:5432/app").channel("app_tidings");
/// let notifier = Notifier::with_config(Config::default().backplane(postgres));
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Postgres {
    url: String,
    channel: String,
}

impl Postgres {
    /// The database at `url`, channel `tidings`.
    pub fn new(url: impl Into<String>) -> Self {
        Postgres { url: url.into(), channel: "tidings".to_owned() }
    }

    /// The NOTIFY channel (default `tidings`). Instances that share it share
    /// their notifications.
    pub fn channel(mut self, channel: impl Into<String>) -> Self {
        self.channel = channel.into();
        self
    }
}

/// The application name of a channel's listener connection (visible in
/// `pg_stat_activity`, where transactions look for it).
fn listener_name(channel: &str) -> String {
    format!("tidings-listener:{channel}")
}

fn check_size(payload: &str) -> Result<(), PublishError> {
    if payload.len() > PAYLOAD_LIMIT {
        return Err(PublishError::TooLarge { size: payload.len(), limit: PAYLOAD_LIMIT });
    }
    Ok(())
}

impl Backplane for Postgres {
    fn name(&self) -> &'static str {
        Engine::Postgres.name()
    }

    fn start(&self, hub: Weak<dyn Receiver>) -> Box<dyn Link> {
        connecting(&hub);
        let (queue, outgoing) = Queue::new();
        match self.url.parse::<PgConnectOptions>() {
            Ok(connect) => {
                let pool = PgPoolOptions::new()
                    .max_connections(2)
                    .acquire_timeout(Duration::from_secs(2))
                    .connect_lazy_with(connect.clone().application_name("tidings-publisher"));
                tokio::spawn(publish(pool, self.channel.clone(), outgoing, hub.clone()));
                let options = connect.application_name(&listener_name(&self.channel));
                tokio::spawn(supervise(Listener { options, channel: self.channel.clone() }, hub));
            }
            Err(e) => unusable(format!("invalid PostgreSQL URL: {e}"), outgoing, hub),
        }
        Box::new(PostgresLink { queue, channel: self.channel.clone() })
    }
}

/// Publications go to the publishing task's queue, or into the
/// application's transaction.
struct PostgresLink {
    queue: Queue,
    /// For NOTIFY inside the application's transaction (feature `sea-orm`).
    #[cfg_attr(not(feature = "sea-orm"), allow(dead_code))]
    channel: String,
}

impl Link for PostgresLink {
    fn publish(&self, _hub: &dyn Receiver, publication: Publication) {
        self.queue.push(publication);
    }

    /// One statement: `pg_notify` for every notification, on the condition
    /// that this channel's listener is connected to the transaction's own
    /// database (NOTIFY reaches only listeners of the same database), which
    /// the statement checks in `pg_stat_activity`. When it is not, nothing
    /// is notified and the notifications go through the queue after the
    /// commit. A notification above NOTIFY's 8000-byte limit fails the
    /// commit (the transaction is rolled back).
    #[cfg(feature = "sea-orm")]
    fn publish_in_transaction<'a>(
        &'a self,
        txn: &'a sea_orm::DatabaseTransaction,
        notifications: &'a [crate::Notification],
    ) -> futures_util::future::BoxFuture<'a, Result<bool, sea_orm::DbErr>> {
        use sea_orm::{ConnectionTrait, DbBackend, Statement};
        Box::pin(async move {
            if notifications.is_empty() || txn.get_database_backend() != DbBackend::Postgres {
                return Ok(false);
            }
            let mut payloads = Vec::with_capacity(notifications.len());
            for n in notifications {
                let payload = super::envelope::encode(n);
                check_size(&payload).map_err(|e| sea_orm::DbErr::Custom(e.to_string()))?;
                payloads.push(payload);
            }
            let notify = Statement::from_sql_and_values(
                DbBackend::Postgres,
                // The payloads travel as one JSON array; its elements come out in
                // order, and pg_notify queues them in the order it is called.
                "SELECT count(pg_notify($1, payload)) AS notified \
                 FROM json_array_elements_text($2::json) AS payload \
                 WHERE EXISTS (SELECT 1 FROM pg_stat_activity \
                               WHERE application_name = $3 AND datname = current_database())",
                [
                    self.channel.as_str().into(),
                    serde_json::to_string(&payloads).expect("strings serialize").into(),
                    listener_name(&self.channel).into(),
                ],
            );
            let row = txn.query_one_raw(notify).await?;
            let notified: i64 = row.map(|r| r.try_get("", "notified")).transpose()?.unwrap_or(0);
            Ok(notified > 0)
        })
    }
}

/// How many queued publications go to PostgreSQL in one statement.
const BATCH: usize = 256;

/// Sends queued notifications in order: everything queued at once goes in
/// one statement (one transaction, one round trip), so PostgreSQL delivers
/// it together and in order.
async fn publish(
    pool: PgPool,
    channel: String,
    mut outgoing: mpsc::UnboundedReceiver<Outgoing>,
    hub: Weak<dyn Receiver>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    while outgoing.recv_many(&mut batch, BATCH).await > 0 {
        // A payload over the limit fails its own publication only.
        let (fits, too_large): (Vec<Outgoing>, Vec<Outgoing>) =
            batch.drain(..).partition(|out| out.payloads.iter().all(|p| check_size(p).is_ok()));
        for out in too_large {
            let size = out.payloads.iter().map(String::len).max().unwrap_or(0);
            out.finish(Err(PublishError::TooLarge { size, limit: PAYLOAD_LIMIT }));
        }
        if fits.is_empty() {
            continue;
        }
        let payloads: Vec<&str> =
            fits.iter().flat_map(|out| out.payloads.iter().map(String::as_str)).collect();
        // unnest yields the payloads in array order, and pg_notify queues
        // them in the order it is called.
        let span = tracing::debug_span!(
            "tidings.backplane.publish",
            backplane = Engine::Postgres.name(),
            notifications = payloads.len()
        );
        let result = sqlx::query("SELECT pg_notify($1, payload) FROM unnest($2::text[]) AS payload")
            .bind(&channel)
            .bind(&payloads)
            .execute(&pool)
            .instrument(span)
            .await
            .map(|_| ())
            .map_err(|e| PublishError::Backplane(format!("pg_notify failed: {e}")));
        report_publisher(&hub, Engine::Postgres, &result);
        fits.into_iter().for_each(|out| out.finish(result.clone()));
    }
}

/// The engine's LISTEN, as [`supervise`] drives it.
struct Listener {
    options: PgConnectOptions,
    channel: String,
}

impl Listening for Listener {
    type Connection = PgListener;

    fn engine(&self) -> Engine {
        Engine::Postgres
    }

    fn span(&self) -> tracing::Span {
        tracing::info_span!("tidings.backplane.connect", backplane = Engine::Postgres.name(), channel = %self.channel)
    }

    async fn connect(&mut self, hub: &Arc<dyn Receiver>) -> Result<PgListener, String> {
        let listener = open(&self.options, &self.channel)
            .await
            .map_err(|e| format!("cannot LISTEN on PostgreSQL: {e}"))?;
        // NOTIFY keeps no history: whatever was sent while we were not
        // listening (before the first LISTEN, or since the connection broke)
        // is gone. Every local client reloads, including one that resumes
        // with a cursor handed out before this point (a page rendered then).
        hub.interrupt(None);
        Ok(listener)
    }

    async fn receive(&mut self, mut listener: PgListener, hub: &Weak<dyn Receiver>) -> Option<String> {
        loop {
            match next_notification(&mut listener, hub).await {
                Ok(Some(notification)) => {
                    let hub = hub.upgrade()?;
                    match decode(notification.payload()) {
                        Ok(n) => hub.deliver_one(n, None),
                        Err(e) => tracing::warn!(error = %e, "tidings: skipping a malformed NOTIFY payload"),
                    }
                }
                Ok(None) => return None,
                Err(reason) => return Some(format!("lost the PostgreSQL listener: {reason}")),
            }
        }
    }
}

/// A listener on its own connection (not a pooled one), so that losing it
/// is noticed rather than silently reconnected.
async fn open(options: &PgConnectOptions, channel: &str) -> Result<PgListener, sqlx::Error> {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(2))
        .connect_with(options.clone())
        .await?;
    let mut listener = PgListener::connect_with(&pool).await?;
    listener.ignore_pool_close_event(true);
    // Report a lost connection at once; we reconnect ourselves, and resync.
    listener.eager_reconnect(false);
    listener.listen(channel).await?;
    Ok(listener)
}
