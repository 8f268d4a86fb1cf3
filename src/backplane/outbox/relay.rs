//! The relay: gives committed rows their positions, in the order they
//! became visible, and deletes what is past the retention.
//!
//! Every instance runs one (unless told not to); passes never overlap (see
//! [`schema::relay`]), so it does not matter which instance relays a row.
//! An instance relays its own commits at once; the others' rows, and rows
//! a crashed process left behind, at the latest one poll interval later.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Instant;

use tracing::Instrument;

use super::Shared;
use super::schema::{self, now_ms};
use crate::backplane::Engine;
use crate::backplane::remote::report;
use crate::backplane::{Part, Receiver};
use crate::metrics::{Operation, Stage};

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
        let woken = tokio::select! {
            () = shared.wake_relay.notified() => true,
            _ = poll.tick() => false,
        };
        if hub.strong_count() == 0 {
            return;
        }
        // A poll usually finds nothing: look (a read, on the index of
        // unrelayed rows) before taking the write lock for a pass.
        if woken || pending(&shared, &hub).await {
            relay_all(&shared, &hub).await;
        }
        if last_prune.is_none_or(|at| at.elapsed() >= shared.prune_every) {
            last_prune = Some(Instant::now());
            prune(&shared).await;
        }
    }
}

/// Relays until nothing visible is left unrelayed (or a pass fails).
async fn relay_all(shared: &Shared, hub: &Weak<dyn Receiver>) {
    loop {
        let span = tracing::debug_span!("tidings.backplane.relay", backplane = Engine::Outbox.name());
        match schema::relay(&shared.db, &shared.names, PASS).instrument(span).await {
            Ok(relayed) => {
                crate::metrics::outbox_rows(Stage::Relayed, relayed as usize);
                relay_works(shared, hub);
                if relayed > 0 {
                    shared.wake_reader.notify_one();
                }
                if relayed < PASS as u64 {
                    return;
                }
            }
            Err(e) => {
                // The rows stay in the table: the next pass takes them.
                crate::metrics::backplane_error(Engine::Outbox, Operation::Relay);
                relay_fails(shared, hub, format!("outbox relay failed: {e}"));
                return;
            }
        }
    }
}

/// Health: the relay failing degrades the publishing side; its recovery
/// clears only what it reported (the writer reports its own failures).
fn relay_fails(shared: &Shared, hub: &Weak<dyn Receiver>, reason: String) {
    shared.relay_failing.store(true, Ordering::Relaxed);
    report(hub, Part::Publisher, Some(reason));
}

fn relay_works(shared: &Shared, hub: &Weak<dyn Receiver>) {
    if shared.relay_failing.swap(false, Ordering::Relaxed) {
        report(hub, Part::Publisher, None);
    }
}

/// Whether rows wait to be relayed (true if that cannot be told).
async fn pending(shared: &Shared, hub: &Weak<dyn Receiver>) -> bool {
    match schema::any_unrelayed(&shared.db, &shared.names).await {
        Ok(any) => any,
        Err(e) => {
            relay_fails(shared, hub, format!("outbox relay failed: {e}"));
            false
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
