//! What the engines that talk to a server (Redis, PostgreSQL, the outbox's
//! LISTEN) share: the queue from the caller to their publishing task, the
//! answer for a backplane that cannot even start, the supervision loop of
//! their listeners with its reconnection backoff, and the idle check of a
//! PostgreSQL LISTEN.

use std::future::Future;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::Instrument;

use super::{Done, Part, Publication, PublishError, Receiver, envelope};
use crate::backplane::Engine;
use crate::metrics::Operation;

/// A publication encoded on the caller's side (so the publishing task only
/// sends bytes), waiting in the queue to the publishing task.
pub(crate) struct Outgoing {
    /// Encoded notifications, published together and in order (a batch).
    pub(crate) payloads: Vec<String>,
    done: Done,
}

impl Outgoing {
    /// Tells the caller of [`Notifier::publish`](crate::Notifier::publish),
    /// if one waits, how it went; a failure is logged either way.
    pub(crate) fn finish(self, result: Result<(), PublishError>) {
        self.done.finish(result);
    }
}

/// The caller's end of the queue to a publishing task.
pub(crate) struct Queue(mpsc::UnboundedSender<Outgoing>);

impl Queue {
    /// The queue and the receiving end its publishing task drains.
    pub(crate) fn new() -> (Queue, mpsc::UnboundedReceiver<Outgoing>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Queue(tx), rx)
    }

    /// Encodes the publication and queues it; if the publishing task is
    /// gone, the publication fails as `Closed`.
    pub(crate) fn push(&self, publication: Publication) {
        let (notifications, done) = publication.into_parts();
        let payloads = notifications.map(|n| envelope::encode(&n)).collect();
        if let Err(e) = self.0.send(Outgoing { payloads, done }) {
            e.0.finish(Err(PublishError::Closed));
        }
    }
}

/// Reports how the last publication went as the publisher's health, and
/// counts a failure in the `backplane`'s metrics.
pub(crate) fn report_publisher(hub: &Weak<dyn Receiver>, engine: Engine, result: &Result<(), PublishError>) {
    if result.is_err() {
        crate::metrics::backplane_error(engine, Operation::Publish);
    }
    report(hub, Part::Publisher, result.as_ref().err().map(ToString::to_string));
}

/// Reports the state of one part of the engine to its hub, if the hub is
/// still there: `Some(reason)` while it is broken, `None` once it works.
pub(crate) fn report(hub: &Weak<dyn Receiver>, part: Part, reason: Option<String>) {
    if let Some(hub) = hub.upgrade() {
        hub.degraded(part, reason);
    }
}

/// Until its listener is connected, an engine is degraded: health says so
/// from the start.
pub(crate) fn connecting(hub: &Weak<dyn Receiver>) {
    report(hub, Part::Listener, Some("connecting to the backplane".to_owned()));
}

/// For a backplane that cannot even start (a malformed URL): health says
/// why, and every publication fails with that reason.
pub(crate) fn unusable(
    reason: String,
    mut queue: mpsc::UnboundedReceiver<Outgoing>,
    hub: Weak<dyn Receiver>,
) {
    tokio::spawn(async move {
        if let Some(hub) = hub.upgrade() {
            hub.degraded(Part::Listener, Some(reason.clone()));
            // Nothing will ever be loaded: sessions need not wait for it.
            hub.ready(None);
        }
        while let Some(out) = queue.recv().await {
            out.finish(Err(PublishError::Backplane(reason.clone())));
        }
    });
}

/// Exponential backoff with jitter for reconnecting, from 100 ms to 5 s.
pub(crate) struct Backoff(u32);

impl Backoff {
    pub(crate) fn new() -> Self {
        Backoff(0)
    }

    pub(crate) fn reset(&mut self) {
        self.0 = 0;
    }

    pub(crate) async fn wait(&mut self) {
        use std::hash::BuildHasher;
        let base = 100u64 << self.0.min(6);
        let jitter = std::collections::hash_map::RandomState::new().hash_one(self.0) % (base / 2 + 1);
        self.0 += 1;
        tokio::time::sleep(Duration::from_millis((base + jitter).min(5_000))).await;
    }
}

/// One engine's receiving connection (PostgreSQL's LISTEN, Redis' XREAD,
/// the outbox's LISTEN), as [`supervise`] drives it: connect, receive until
/// the connection is lost, and again.
pub(crate) trait Listening: Send {
    /// What [`connect`](Self::connect) opens.
    type Connection: Send;

    /// The engine, for metrics and traces.
    fn engine(&self) -> Engine;

    /// The span of a connection attempt (with what it connects to).
    fn span(&self) -> tracing::Span;

    /// Whether health is degraded while it is down. (The outbox's LISTEN
    /// only wakes its reader, which polls the table anyway: losing it
    /// delays, and loses nothing.)
    fn degrades(&self) -> bool {
        true
    }

    /// Connects and gets ready to receive; `Err(reason)` when it cannot.
    fn connect(
        &mut self,
        hub: &Arc<dyn Receiver>,
    ) -> impl Future<Output = Result<Self::Connection, String>> + Send;

    /// Receives until the connection is lost (`Some(reason)`) or the hub is
    /// gone (`None`).
    fn receive(
        &mut self,
        connection: Self::Connection,
        hub: &Weak<dyn Receiver>,
    ) -> impl Future<Output = Option<String>> + Send;
}

/// The supervision loop every remote engine's listener runs: connects
/// (with backoff between failures), reports health and metrics, receives
/// until the connection is lost, and connects again; ends when the hub is
/// gone.
pub(crate) async fn supervise(mut listening: impl Listening, hub: Weak<dyn Receiver>) {
    let engine = listening.engine();
    let mut backoff = Backoff::new();
    let mut connected_before = false;
    loop {
        let Some(strong) = hub.upgrade() else { return };
        let span = listening.span();
        match listening.connect(&strong).instrument(span).await {
            Ok(connection) => {
                if listening.degrades() {
                    strong.degraded(Part::Listener, None);
                }
                if std::mem::replace(&mut connected_before, true) {
                    crate::metrics::backplane_reconnected(engine);
                }
                backoff.reset();
                drop(strong);
                let Some(reason) = listening.receive(connection, &hub).await else { return };
                let Some(strong) = hub.upgrade() else { return };
                lost(&listening, strong.as_ref(), reason);
            }
            Err(reason) => lost(&listening, strong.as_ref(), reason),
        }
        backoff.wait().await;
    }
}

/// Counts and reports a listener down for `reason`.
fn lost(listening: &impl Listening, hub: &dyn Receiver, reason: String) {
    crate::metrics::backplane_error(listening.engine(), Operation::Listen);
    if listening.degrades() {
        hub.degraded(Part::Listener, Some(reason));
    } else {
        tracing::warn!(
            backplane = listening.engine().name(),
            reason,
            "tidings: listener down; polling until it is back"
        );
    }
}

/// How long a LISTEN connection may stay silent before it is checked: a
/// connection that died without a reset (a NAT or firewall dropping it)
/// would otherwise leave the listener waiting forever.
#[cfg(any(feature = "postgres", feature = "outbox"))]
const IDLE_CHECK: Duration = Duration::from_secs(30);

/// The next notification on a PostgreSQL `listener`, checking the
/// connection with `SELECT 1` (bounded) whenever nothing arrived for
/// [`IDLE_CHECK`]. `Err(reason)` when the connection is lost; `Ok(None)`
/// when the hub is gone (nothing would arrive for it).
#[cfg(any(feature = "postgres", feature = "outbox"))]
pub(crate) async fn next_notification(
    listener: &mut sqlx::postgres::PgListener,
    hub: &Weak<dyn Receiver>,
) -> Result<Option<sqlx::postgres::PgNotification>, String> {
    loop {
        match tokio::time::timeout(IDLE_CHECK, listener.try_recv()).await {
            Ok(Ok(Some(notification))) => return Ok(Some(notification)),
            Ok(Ok(None)) => return Err("the listener connection was closed".to_owned()),
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_idle) => {
                if hub.strong_count() == 0 {
                    return Ok(None);
                }
                // Notifications arriving meanwhile are buffered by the
                // listener and returned by the next try_recv.
                let ping = sqlx::query("SELECT 1").execute(&mut *listener);
                match tokio::time::timeout(Duration::from_secs(5), ping).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return Err(format!("the idle check failed: {e}")),
                    Err(_) => return Err("the idle check timed out".to_owned()),
                }
            }
        }
    }
}
