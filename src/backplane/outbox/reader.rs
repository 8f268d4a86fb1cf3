//! The reader: loads the log's tail into the history at start-up, then
//! delivers every relayed row, by position, to this instance's hub.
//!
//! Positions are dense and become visible in order (one relay pass at a
//! time, each committed before the next begins), so reading `position >
//! last` never skips a row. A hole can only mean rows were pruned before
//! this instance read them (it was stopped, or far behind): that is told to
//! sessions as an interruption at the hole, so cursors from before it
//! `resync`.

use std::sync::{Arc, Weak};

use sea_orm::DbBackend;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::Shared;
use super::schema::{self, Relayed};
use crate::backplane::envelope::decode;
use crate::backplane::remote::{Backoff, report};
use crate::backplane::{Part, Receiver};
use crate::{Cursor, Notification};

/// How many rows one read delivers; a read that fills it is followed by
/// another at once.
const READ: usize = 1000;

pub(super) async fn run(shared: Arc<Shared>, hub: Weak<dyn Receiver>, stopped: CancellationToken) {
    let mut backoff = Backoff::new();
    // Load the tail; until the database answers, health says why.
    let (log, mut last) = loop {
        let span = tracing::info_span!("tidings.backplane.load", backplane = "outbox");
        match load(&shared, &hub).instrument(span).await {
            Ok(Some(loaded)) => break loaded,
            Ok(None) => return,
            Err(e) => {
                crate::metrics::backplane_error("outbox", "read");
                report(&hub, Part::Listener, Some(format!("cannot read the outbox: {e}")));
                backoff.wait().await;
            }
        }
    };
    report(&hub, Part::Listener, None);
    if shared.db.get_database_backend() == DbBackend::Postgres {
        let pool = shared.db.get_postgres_connection_pool().clone();
        tokio::spawn(stopped.run_until_cancelled_owned(listen(pool, shared.clone(), hub.clone())));
    }
    let mut poll = tokio::time::interval(shared.poll);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            () = shared.wake_reader.notified() => {}
            _ = poll.tick() => {}
        }
        let Some(strong) = hub.upgrade() else { return };
        drop(strong);
        loop {
            let span = tracing::debug_span!("tidings.backplane.read", backplane = "outbox", after = last);
            match schema::read_after(&shared.db, &shared.names, last, READ).instrument(span).await {
                Ok(rows) => {
                    crate::metrics::outbox_rows("read", rows.len());
                    if failing {
                        failing = false;
                        report(&hub, Part::Listener, None);
                    }
                    let Some(newest) = rows.last().map(|r| r.position) else { break };
                    let full = rows.len() == READ;
                    let Some(hub) = hub.upgrade() else { return };
                    deliver(&*hub, log, last, rows);
                    last = newest;
                    if !full {
                        break;
                    }
                }
                Err(e) => {
                    // Nothing is lost: the next read starts at `last` again.
                    crate::metrics::backplane_error("outbox", "read");
                    failing = true;
                    report(&hub, Part::Listener, Some(format!("cannot read the outbox: {e}")));
                    break;
                }
            }
        }
    }
}

/// Delivers the tail the table holds (as much as the history keeps) and
/// tells the hub where it starts; returns the log's id and the last
/// position read. `None` when the hub is gone.
async fn load(shared: &Shared, hub: &Weak<dyn Receiver>) -> Result<Option<(u64, u64)>, sea_orm::DbErr> {
    let Some(capacity) = hub.upgrade().map(|h| h.capacity()) else { return Ok(None) };
    let log = schema::log_id(&shared.db, &shared.names).await?;
    let mut rows = schema::read_last(&shared.db, &shared.names, capacity).await?;
    let Some(hub) = hub.upgrade() else { return Ok(None) };
    let last = rows.last().map_or(0, |r| r.position);
    // Resuming from just before the oldest row loaded leaves no gap; from
    // earlier, the rows in between are no longer here. A log loaded from
    // its first position has nothing before it (a cursor from before the
    // first notification, `0-0`, resumes). A gap marker, or a hole between
    // two rows, moves the floor up to itself: what came before it may be
    // incomplete, and only what follows is kept.
    let mut from = 0;
    let mut floor = rows.first().filter(|r| r.position > 1).map(|r| Cursor::stream(log, r.position - 1));
    for (i, row) in rows.iter().enumerate() {
        if is_gap(&row.payload) {
            (from, floor) = (i, Some(Cursor::stream(log, row.position)));
        } else if i > 0 && row.position != rows[i - 1].position + 1 {
            (from, floor) = (i, Some(Cursor::stream(log, row.position - 1)));
        }
    }
    rows.drain(..from);
    deliver_loaded(&*hub, log, rows);
    hub.ready(floor);
    Ok(Some((log, last)))
}

fn deliver_loaded(hub: &dyn Receiver, log: u64, rows: Vec<Relayed>) {
    let mut items = rows.into_iter().filter_map(|row| entry(log, row));
    hub.deliver(&mut items);
}

/// Delivers rows read after `last`: a hole (before the first, or between
/// two) means rows were pruned unread.
fn deliver(hub: &dyn Receiver, log: u64, last: u64, rows: Vec<Relayed>) {
    // Gap markers and holes interrupt the stream where they stand; the
    // notifications between them go out in runs.
    let mut run: Vec<(Notification, Option<Cursor>)> = Vec::new();
    let mut expected = last + 1;
    for row in rows {
        if row.position != expected {
            tracing::warn!(
                expected,
                next = row.position,
                "tidings: outbox rows were pruned before this instance read them"
            );
            hub.deliver(&mut run.drain(..));
            hub.interrupt(Some(Cursor::stream(log, row.position - 1)));
        }
        expected = row.position + 1;
        if is_gap(&row.payload) {
            hub.deliver(&mut run.drain(..));
            hub.interrupt(Some(Cursor::stream(log, row.position)));
            continue;
        }
        if let Some(item) = entry(log, row) {
            run.push(item);
        }
    }
    hub.deliver(&mut run.into_iter());
}

/// A row as the hub takes it; `None` (logged) for a payload that is not a
/// notification.
fn entry(log: u64, row: Relayed) -> Option<(Notification, Option<Cursor>)> {
    if is_gap(&row.payload) {
        return None;
    }
    match decode(&row.payload) {
        Ok(n) => Some((n, Some(Cursor::stream(log, row.position)))),
        Err(e) => {
            tracing::warn!(error = %e, position = row.position, "tidings: skipping a malformed outbox row");
            None
        }
    }
}

fn is_gap(payload: &str) -> bool {
    payload.starts_with(r#"{"gap":"#)
}

/// On PostgreSQL: wakes the reader on every relay pass's `NOTIFY`, and
/// once after each (re)connection, for whatever was relayed while it was
/// not listening. Losing the connection loses nothing (the table is the
/// truth and the poll goes on); it only slows other instances' passes
/// down to the poll interval until it is back.
async fn listen(pool: sqlx::PgPool, shared: Arc<Shared>, hub: Weak<dyn Receiver>) {
    let mut backoff = Backoff::new();
    let mut connected_before = false;
    loop {
        if hub.strong_count() == 0 {
            return;
        }
        let span = tracing::info_span!("tidings.backplane.connect", backplane = "outbox");
        let connected = async {
            let mut listener = sqlx::postgres::PgListener::connect_with(&pool).await?;
            listener.listen(shared.names.channel()).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        let mut listener = match connected.instrument(span).await {
            Ok(listener) => listener,
            Err(e) => {
                crate::metrics::backplane_error("outbox", "listen");
                tracing::warn!(error = %e, "tidings: cannot LISTEN for the outbox; polling");
                backoff.wait().await;
                continue;
            }
        };
        listener.eager_reconnect(false);
        if std::mem::replace(&mut connected_before, true) {
            crate::metrics::backplane_reconnected("outbox");
        }
        backoff.reset();
        shared.wake_reader.notify_one();
        // Ends when the connection does (or the task is cancelled with
        // the notifier).
        while let Ok(Some(_)) = listener.try_recv().await {
            shared.wake_reader.notify_one();
        }
        crate::metrics::backplane_error("outbox", "listen");
        tracing::warn!("tidings: lost the outbox's LISTEN connection; polling until it is back");
        backoff.wait().await;
    }
}
