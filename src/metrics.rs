//! Every metric tidings records: the names, their descriptions, and the
//! small helpers the rest of the crate records through.
//!
//! Metrics go through the [`metrics`] facade: tidings ships no exporter.
//! Install a recorder (Prometheus, StatsD, …) **before creating the
//! [`Notifier`](crate::Notifier)**: the handles of the hot paths are
//! registered once, when the notifier starts, with the recorder installed
//! at that moment. Without a recorder every metric is a no-op.
//!
//! ```no_run
//! use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
//! use tidings::Notifier;
//!
//! # #[tokio::main] async fn main() {
//! let prometheus = PrometheusBuilder::new()
//!     // A histogram (rather than a summary) for the latency:
//!     .set_buckets_for_metric(
//!         Matcher::Full(tidings::metrics::DELIVERY_LATENCY.to_owned()),
//!         &[0.000_1, 0.000_5, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0],
//!     )
//!     .unwrap()
//!     .install_recorder()
//!     .unwrap();
//! let notifier = Notifier::new(); // after the recorder
//! // Serve `prometheus.render()` at /metrics, and now and then (every few
//! // seconds) call `prometheus.run_upkeep()`.
//! # }
//! ```
//!
//! The table of series, with what each one means, is in `docs/metrics.md`.
//!
//! The hot paths (a caller's `notify`, each session's writer) only touch
//! handles registered ahead of time: an atomic add, no allocation, no label
//! formatting. Rare events (a refusal, a backplane error) go through the
//! `metrics` macros with `&'static str` labels.

use std::time::Instant;

use metrics::{
    Counter, Gauge, Histogram, Unit, counter, describe_counter, describe_gauge, describe_histogram,
};

#[cfg(any(feature = "redis", feature = "postgres", feature = "outbox"))]
use crate::backplane::Engine;

/// Gauge: the sessions connected to this instance, by `transport` (`ws`,
/// `sse`).
pub const SESSIONS: &str = "tidings_sessions";
/// Counter: notifications published by this instance's callers (`notify`,
/// `publish`, committed batches and transactions).
pub const NOTIFICATIONS_EMITTED: &str = "tidings_notifications_emitted_total";
/// Counter: frames written to clients (notifications, `hello`, `resync`,
/// replies), by `transport`.
pub const FRAMES_DELIVERED: &str = "tidings_frames_delivered_total";
/// Counter: `resync` frames sent, by `cause`: `resume` (a cursor the
/// history cannot place, at connection), `lagged` (a session fell further
/// behind than the history holds), `interrupted` (the backplane may have
/// lost notifications), `subscribe` (a `subscribe` frame's cursor the
/// history cannot place).
pub const RESYNCS: &str = "tidings_resyncs_total";
/// Counter: WebSocket sessions closed because the client did not take
/// their frames within the write timeout.
pub const SLOW_READER_CLOSES: &str = "tidings_slow_reader_closes_total";
/// Counter: connection attempts refused, by `transport` and `reason` (the
/// code of the JSON error: `forbidden`, `unauthorized`, `bad_query`,
/// `origin_not_allowed`, `shutting_down`, `not_websocket`, …).
pub const REFUSED_CONNECTIONS: &str = "tidings_refused_connections_total";
/// Counter: failed backplane operations, by `backplane` (`redis`,
/// `postgres`, `outbox`) and `operation` (`publish`, `listen`, `read`,
/// `relay`).
pub const BACKPLANE_ERRORS: &str = "tidings_backplane_errors_total";
/// Counter: the backplane's listening connection established again after
/// it was lost, by `backplane` (for the outbox: its `LISTEN` connection on
/// PostgreSQL).
pub const BACKPLANE_RECONNECTS: &str = "tidings_backplane_reconnects_total";
/// Counter: outbox rows, by `stage`: `relayed` (given their position by
/// this instance's relay), `read` (delivered from the log to this
/// instance's sessions).
pub const OUTBOX_ROWS: &str = "tidings_outbox_rows_total";
/// Histogram, seconds: from a notification entering this instance's history
/// (with the in-process backplane: the `notify` call) to the socket write
/// that carried it, by `transport`. One sample per written batch: the age of
/// its oldest notification.
pub const DELIVERY_LATENCY: &str = "tidings_delivery_latency_seconds";

/// What carries a session's frames, as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    WebSocket,
    Sse,
}

impl Transport {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Transport::WebSocket => "ws",
            Transport::Sse => "sse",
        }
    }
}

/// Why a session was sent a `resync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ResyncCause {
    Resume,
    Lagged,
    Interrupted,
    Subscribe,
}

impl ResyncCause {
    pub(crate) fn label(self) -> &'static str {
        match self {
            ResyncCause::Resume => "resume",
            ResyncCause::Lagged => "lagged",
            ResyncCause::Interrupted => "interrupted",
            ResyncCause::Subscribe => "subscribe",
        }
    }
}

/// The handles one notifier records through, registered when it starts.
pub(crate) struct Metrics {
    emitted: Counter,
    ws: SessionMetrics,
    sse: SessionMetrics,
    /// By [`ResyncCause`], in declaration order.
    resyncs: [Counter; 4],
}

impl Metrics {
    /// Describes every series and registers the hot paths' handles with the
    /// recorder installed now.
    pub(crate) fn register() -> Self {
        describe();
        Metrics {
            emitted: counter!(NOTIFICATIONS_EMITTED),
            ws: SessionMetrics::register(Transport::WebSocket),
            sse: SessionMetrics::register(Transport::Sse),
            resyncs: [
                ResyncCause::Resume,
                ResyncCause::Lagged,
                ResyncCause::Interrupted,
                ResyncCause::Subscribe,
            ]
            .map(|cause| counter!(RESYNCS, "cause" => cause.label())),
        }
    }

    /// `n` notifications were published.
    pub(crate) fn emitted(&self, n: usize) {
        self.emitted.increment(n as u64);
    }

    /// The handles of one session on `transport` (reference-count bumps).
    pub(crate) fn session(&self, transport: Transport) -> SessionMetrics {
        match transport {
            Transport::WebSocket => self.ws.clone(),
            Transport::Sse => self.sse.clone(),
        }
    }

    pub(crate) fn resync(&self, cause: ResyncCause) {
        self.resyncs[cause as usize].increment(1);
    }
}

/// What a session records: opened and closed, frames written, latency.
#[derive(Clone)]
pub(crate) struct SessionMetrics {
    sessions: Gauge,
    frames: Counter,
    latency: Histogram,
}

impl SessionMetrics {
    fn register(transport: Transport) -> Self {
        let label = transport.label();
        SessionMetrics {
            sessions: metrics::gauge!(SESSIONS, "transport" => label),
            frames: counter!(FRAMES_DELIVERED, "transport" => label),
            latency: metrics::histogram!(DELIVERY_LATENCY, "transport" => label),
        }
    }

    pub(crate) fn opened(&self) {
        self.sessions.increment(1.0);
    }

    pub(crate) fn closed(&self) {
        self.sessions.decrement(1.0);
    }

    /// `frames` were written; `oldest` is when the oldest notification among
    /// them entered the history, if any did. One clock read per batch.
    pub(crate) fn written(&self, frames: usize, oldest: Option<Instant>) {
        self.frames.increment(frames as u64);
        if let Some(emitted) = oldest {
            self.latency.record(emitted.elapsed());
        }
    }
}

/// Counts a refused connection attempt (`reason`: the rejection's code,
/// answered with HTTP `status`), and logs it.
pub(crate) fn refused(transport: Transport, reason: &'static str, status: u16) {
    let transport = transport.label();
    counter!(REFUSED_CONNECTIONS, "transport" => transport, "reason" => reason).increment(1);
    tracing::info!(transport, reason, status, "tidings: refused a connection");
}

/// Counts a WebSocket session closed because its client stopped reading.
pub(crate) fn slow_reader_closed() {
    counter!(SLOW_READER_CLOSES).increment(1);
}

/// Counts a failed backplane operation (the engine logs or reports why).
#[cfg(any(feature = "redis", feature = "postgres", feature = "outbox"))]
pub(crate) fn backplane_error(engine: Engine, operation: Operation) {
    counter!(BACKPLANE_ERRORS, "backplane" => engine.name(), "operation" => operation.label()).increment(1);
}

/// What a backplane was doing when it failed: the `operation` label of
/// [`BACKPLANE_ERRORS`].
#[cfg(any(feature = "redis", feature = "postgres", feature = "outbox"))]
#[derive(Debug, Clone, Copy)]
pub(crate) enum Operation {
    /// Handing notifications to the engine.
    Publish,
    /// Keeping the connection that receives them (LISTEN, XREAD).
    Listen,
    /// Reading the outbox's rows.
    #[cfg(feature = "outbox")]
    Read,
    /// A relay pass of the outbox.
    #[cfg(feature = "outbox")]
    Relay,
}

#[cfg(any(feature = "redis", feature = "postgres", feature = "outbox"))]
impl Operation {
    fn label(self) -> &'static str {
        match self {
            Operation::Publish => "publish",
            Operation::Listen => "listen",
            #[cfg(feature = "outbox")]
            Operation::Read => "read",
            #[cfg(feature = "outbox")]
            Operation::Relay => "relay",
        }
    }
}

/// Counts a listening connection established again after a loss.
#[cfg(any(feature = "redis", feature = "postgres", feature = "outbox"))]
pub(crate) fn backplane_reconnected(engine: Engine) {
    counter!(BACKPLANE_RECONNECTS, "backplane" => engine.name()).increment(1);
}

/// Counts outbox rows relayed or read.
#[cfg(feature = "outbox")]
pub(crate) fn outbox_rows(stage: Stage, rows: usize) {
    let stage = match stage {
        Stage::Relayed => "relayed",
        Stage::Read => "read",
    };
    counter!(OUTBOX_ROWS, "stage" => stage).increment(rows as u64);
}

/// Where outbox rows were counted: the `stage` label of [`OUTBOX_ROWS`].
#[cfg(feature = "outbox")]
#[derive(Debug, Clone, Copy)]
pub(crate) enum Stage {
    /// Given their positions by a relay pass.
    Relayed,
    /// Read by an instance's reader.
    Read,
}

/// Gives the recorder installed now each series' unit and meaning.
fn describe() {
    describe_gauge!(SESSIONS, Unit::Count, "Sessions connected to this instance, by transport.");
    describe_counter!(
        NOTIFICATIONS_EMITTED,
        Unit::Count,
        "Notifications published by this instance's callers."
    );
    describe_counter!(FRAMES_DELIVERED, Unit::Count, "Frames written to clients, by transport.");
    describe_counter!(
        RESYNCS,
        Unit::Count,
        "Resync frames sent, by cause (resume, lagged, interrupted, subscribe)."
    );
    describe_counter!(
        SLOW_READER_CLOSES,
        Unit::Count,
        "Sessions closed because the client did not read within the write timeout."
    );
    describe_counter!(
        REFUSED_CONNECTIONS,
        Unit::Count,
        "Connection attempts refused, by transport and reason."
    );
    describe_counter!(
        BACKPLANE_ERRORS,
        Unit::Count,
        "Failed backplane operations, by backplane and operation."
    );
    describe_counter!(
        BACKPLANE_RECONNECTS,
        Unit::Count,
        "Backplane listening connections established again after a loss."
    );
    describe_counter!(OUTBOX_ROWS, Unit::Count, "Outbox rows relayed or read by this instance, by stage.");
    describe_histogram!(
        DELIVERY_LATENCY,
        Unit::Seconds,
        "From a notification entering this instance's history to the socket write that carried it (oldest per batch)."
    );
}
