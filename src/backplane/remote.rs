//! What the engines that talk to a server (Redis, PostgreSQL) share: the
//! queue from the caller to their publishing task, the answer for a
//! backplane that cannot even start, and the reconnection backoff.

use std::sync::Weak;
use std::time::Duration;

use tokio::sync::mpsc;

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
