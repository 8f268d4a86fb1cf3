//! The relay: gives committed rows their positions, in the order they
//! became visible, and deletes what is past the retention.
//!
//! Every instance runs one (unless told not to); passes never overlap (see
//! [`schema::relay`]), so it does not matter which instance relays a row.
//! An instance relays its own commits at once; the others' rows, and rows
//! a crashed process left behind, at the latest one poll interval later.

use std::sync::{Arc, Weak};
use std::time::Instant;

use tracing::Instrument;

use super::Shared;
use super::schema::{self, now_ms};
use crate::backplane::{Part, Receiver};

/// How many rows one relay pass positions; a pass that fills it is
/// followed by another at once.
const PASS: usize = 1000;

pub(super) async fn run(shared: Arc<Shared>, hub: Weak<dyn Receiver>) {
    let mut poll = tokio::time::interval(shared.poll);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first pass runs at once: rows a crashed process left behind go
    // out when this instance starts.
    let mut last_prune: Option<Instant> = None;
    loop {
        tokio::select! {
            () = shared.wake_relay.notified() => {}
            _ = poll.tick() => {}
        }
        if hub.strong_count() == 0 {
            return;
        }
        relay_all(&shared, &hub).await;
        if last_prune.is_none_or(|at| at.elapsed() >= shared.prune_every) {
            last_prune = Some(Instant::now());
            prune(&shared).await;
        }
    }
}

/// Relays until nothing visible is left unrelayed (or a pass fails).
async fn relay_all(shared: &Shared, hub: &Weak<dyn Receiver>) {
    loop {
        let span = tracing::debug_span!("tidings.backplane.relay", backplane = "outbox");
        match schema::relay(&shared.db, &shared.names, PASS).instrument(span).await {
            Ok(relayed) => {
                crate::metrics::outbox_rows("relayed", relayed as usize);
                report(hub, None);
                if relayed > 0 {
                    shared.wake_reader.notify_one();
                }
                if relayed < PASS as u64 {
                    return;
                }
            }
            Err(e) => {
                // The rows stay in the table: the next pass takes them.
                crate::metrics::backplane_error("outbox", "relay");
                report(hub, Some(format!("outbox relay failed: {e}")));
                return;
            }
        }
    }
}

async fn prune(shared: &Shared) {
    let before = shared.keep_for.map(|age| now_ms() - i64::try_from(age.as_millis()).unwrap_or(i64::MAX));
    match schema::prune(&shared.db, &shared.names, shared.keep, before).await {
        Ok(0) => {}
        Ok(deleted) => tracing::debug!(deleted, table = %shared.names.table, "tidings: pruned the outbox"),
        Err(e) => tracing::warn!(error = %e, "tidings: pruning the outbox failed"),
    }
}

fn report(hub: &Weak<dyn Receiver>, reason: Option<String>) {
    if let Some(hub) = hub.upgrade() {
        hub.degraded(Part::Publisher, reason);
    }
}
