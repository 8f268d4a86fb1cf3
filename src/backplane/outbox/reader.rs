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
use sqlx::postgres::PgListener;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::Shared;
use super::schema::{self, Relayed};
use crate::backplane::Engine;
use crate::backplane::envelope::decode;
use crate::backplane::remote::{Backoff, Listening, next_notification, report, supervise};
use crate::backplane::{Part, Receiver};
use crate::metrics::{Operation, Stage};
use crate::{Cursor, Notification};

/// How many rows one read delivers; a read that fills it is followed by
/// another at once.
const READ: usize = 1000;

/// Where this instance has read the log to.
#[derive(Debug, Clone, Copy)]
struct Mark {
    /// The log's id, the first part of every cursor.
    log: u64,
    /// The last row read: its position (0: none yet) and fingerprint.
    position: u64,
    fingerprint: u32,
}

impl Mark {
    fn at(log: u64, row: Option<&Relayed>) -> Mark {
        Mark { log, position: row.map_or(0, |r| r.position), fingerprint: row.map_or(0, |r| r.fingerprint) }
    }

    fn cursor(&self) -> Cursor {
        Cursor::stream_of(self.log, self.position, self.fingerprint)
    }
}

pub(super) async fn run(shared: Arc<Shared>, hub: Weak<dyn Receiver>, stopped: CancellationToken) {
    let mut backoff = Backoff::new();
    // Load the tail; until the database answers, health says why.
    let mut mark = loop {
        let span = tracing::info_span!("tidings.backplane.load", backplane = Engine::Outbox.name());
        match load(&shared, &hub).instrument(span).await {
            Ok(Some(mark)) => break mark,
            Ok(None) => return,
            Err(e) => {
                crate::metrics::backplane_error(Engine::Outbox, Operation::Read);
                report(&hub, Part::Listener, Some(format!("cannot read the outbox: {e}")));
                backoff.wait().await;
            }
        }
    };
    report(&hub, Part::Listener, None);
    if shared.db.get_database_backend() == DbBackend::Postgres {
        let pool = shared.db.get_postgres_connection_pool().clone();
        tokio::spawn(
            stopped
                .run_until_cancelled_owned(supervise(Wakeup { pool, shared: shared.clone() }, hub.clone())),
        );
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
            let span = tracing::debug_span!(
                "tidings.backplane.read",
                backplane = Engine::Outbox.name(),
                after = mark.position
            );
            // The last row read comes back first: it shows the log is still
            // the one this instance read.
            let read = schema::read_from(&shared.db, &shared.names, mark.position, READ + 1).instrument(span);
            let followed = match read.await {
                Ok(read) => {
                    let Some(hub) = hub.upgrade() else { return };
                    Ok(follow(&*hub, &mut mark, read))
                }
                Err(e) => Err(e),
            };
            let outcome = match followed {
                Ok(Followed::Read { full }) => Ok(full),
                // Read on at once, from where the renewed log stands.
                Ok(Followed::Lost) => renew(&shared, &hub, &mut mark).await.map(|()| true),
                Err(e) => Err(e),
            };
            match outcome {
                Ok(more) => {
                    if std::mem::take(&mut failing) {
                        report(&hub, Part::Listener, None);
                    }
                    if !more {
                        break;
                    }
                }
                Err(e) => {
                    // Nothing is lost: the next read starts at the mark again.
                    crate::metrics::backplane_error(Engine::Outbox, Operation::Read);
                    failing = true;
                    report(&hub, Part::Listener, Some(format!("cannot read the outbox: {e}")));
                    break;
                }
            }
        }
    }
}

/// What a read found.
enum Followed {
    /// New rows (or none) after the mark, delivered; `full`: there may be more.
    Read { full: bool },
    /// The log is not the one this instance read: the row it read last is
    /// gone with nothing after it, or another row holds its position, or
    /// the log's id changed. A database restored to an earlier state, or a
    /// table emptied or created anew.
    Lost,
}

/// Delivers the rows of `read` after the mark, and moves the mark.
fn follow(hub: &dyn Receiver, mark: &mut Mark, read: schema::Read) -> Followed {
    let mut rows = read.rows;
    if read.log.is_some_and(|log| log != mark.log) {
        return Followed::Lost;
    }
    if mark.position > 0 {
        match rows.first() {
            Some(first) if first.position == mark.position => {
                if first.fingerprint != mark.fingerprint {
                    return Followed::Lost;
                }
                rows.remove(0);
            }
            // The last row read was pruned: a hole, which `deliver` tells.
            Some(_) => {}
            None => return Followed::Lost,
        }
    }
    crate::metrics::outbox_rows(Stage::Read, rows.len());
    let full = rows.len() >= READ;
    let (log, last) = (mark.log, mark.position);
    if let Some(newest) = rows.last() {
        *mark = Mark::at(log, Some(newest));
    }
    deliver(hub, log, last, rows);
    Followed::Read { full }
}

/// After the log was [lost](Followed::Lost): gives it a new id (unless
/// another instance did, or the table is new), and moves the mark to the
/// newest row. Every session resyncs: what the old log told them may not
/// be in the database any more, and what the new one holds was never read
/// here. Cursors of the old id never place again, on any instance.
async fn renew(shared: &Shared, hub: &Weak<dyn Receiver>, mark: &mut Mark) -> Result<(), sea_orm::DbErr> {
    let log = schema::renew_log_id(&shared.db, &shared.names, mark.log).await?;
    let newest = schema::read_last(&shared.db, &shared.names, 1).await?;
    tracing::warn!(
        old = mark.log,
        new = log,
        "tidings: the outbox is not the log this instance read (a database restored to an earlier state, \
         or a table created anew): every session resyncs"
    );
    *mark = Mark::at(log, newest.last());
    if let Some(hub) = hub.upgrade() {
        hub.interrupt(Some(mark.cursor()));
    }
    Ok(())
}

/// Delivers the tail the table holds (as much as the history keeps) and
/// tells the hub where it starts; returns the mark. `None` when the hub is
/// gone.
async fn load(shared: &Shared, hub: &Weak<dyn Receiver>) -> Result<Option<Mark>, sea_orm::DbErr> {
    let Some(capacity) = hub.upgrade().map(|h| h.capacity()) else { return Ok(None) };
    let log = schema::log_id(&shared.db, &shared.names).await?;
    // One row more than the history keeps: the one just before the oldest
    // kept is the floor, and its fingerprint vouches for a cursor at it.
    let mut rows = schema::read_last(&shared.db, &shared.names, capacity + 1).await?;
    let Some(hub) = hub.upgrade() else { return Ok(None) };
    let mark = Mark::at(log, rows.last());
    let before = if rows.len() > capacity { Some(rows.remove(0)) } else { None };
    // Resuming from just before the oldest row loaded leaves no gap; from
    // earlier, the rows in between are no longer here. A log loaded from
    // its first position has nothing before it (a cursor from before the
    // first notification, `0-0`, resumes). A gap marker, or a hole between
    // two rows, moves the floor up to itself: what came before it may be
    // incomplete, and only what follows is kept.
    let mut from = 0;
    let mut floor = rows.first().filter(|r| r.position > 1).map(|r| match &before {
        Some(b) if b.position + 1 == r.position => cursor(log, b),
        _ => Cursor::stream(log, r.position - 1),
    });
    for (i, row) in rows.iter().enumerate() {
        if is_gap(&row.payload) {
            (from, floor) = (i, Some(cursor(log, row)));
        } else if i > 0 && row.position != rows[i - 1].position + 1 {
            (from, floor) = (i, Some(Cursor::stream(log, row.position - 1)));
        }
    }
    rows.drain(..from);
    deliver_loaded(&*hub, log, rows);
    hub.ready(floor);
    Ok(Some(mark))
}

/// The cursor of a row: its position, vouched for by its fingerprint.
fn cursor(log: u64, row: &Relayed) -> Cursor {
    Cursor::stream_of(log, row.position, row.fingerprint)
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
            hub.interrupt(Some(cursor(log, &row)));
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
        Ok(n) => Some((n, Some(cursor(log, &row)))),
        Err(e) => {
            tracing::warn!(error = %e, position = row.position, "tidings: skipping a malformed outbox row");
            None
        }
    }
}

fn is_gap(payload: &str) -> bool {
    payload.starts_with(r#"{"gap":"#)
}

/// On PostgreSQL, the reader's wake-up, as [`supervise`] drives it: every
/// relay pass's `NOTIFY` wakes the reader, and so does each (re)connection,
/// for whatever was relayed while it was not listening. Losing the
/// connection loses nothing (the table is the truth and the poll goes on);
/// it only slows other instances' passes down to the poll interval until
/// it is back, so health stays `ok`.
struct Wakeup {
    pool: sqlx::PgPool,
    shared: Arc<Shared>,
}

impl Listening for Wakeup {
    type Connection = PgListener;

    fn engine(&self) -> Engine {
        Engine::Outbox
    }

    fn span(&self) -> tracing::Span {
        tracing::info_span!("tidings.backplane.connect", backplane = Engine::Outbox.name())
    }

    fn degrades(&self) -> bool {
        false
    }

    async fn connect(&mut self, _hub: &Arc<dyn Receiver>) -> Result<PgListener, String> {
        let cannot = |e: sqlx::Error| format!("cannot LISTEN for the outbox: {e}");
        let mut listener = PgListener::connect_with(&self.pool).await.map_err(cannot)?;
        listener.listen(self.shared.names.channel()).await.map_err(cannot)?;
        listener.eager_reconnect(false);
        self.shared.wake_reader.notify_one();
        Ok(listener)
    }

    async fn receive(&mut self, mut listener: PgListener, hub: &Weak<dyn Receiver>) -> Option<String> {
        loop {
            match next_notification(&mut listener, hub).await {
                Ok(Some(_)) => self.shared.wake_reader.notify_one(),
                Ok(None) => return None,
                Err(reason) => return Some(format!("lost the outbox's LISTEN connection: {reason}")),
            }
        }
    }
}
