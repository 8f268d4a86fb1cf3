//! The caller's cost of a notification, with and without connected clients.
//!
//! Run with `cargo bench --bench notify -- --noplot`. Method and results are
//! in `docs/benchmarks.md`.
//!
//! The sessions are real: an axum server on a loopback port and 1000
//! tokio-tungstenite clients, each drained by its own task. The measured code
//! runs on the bench thread, as a request handler's call to `notify` would,
//! while the runtime's workers fan the notifications out to the clients. The
//! process needs about 2100 file descriptors (`ulimit -n 4096`).
//! `TIDINGS_BENCH_WORKERS=<n>` sets the runtime's worker threads (default:
//! one per core). `TIDINGS_BENCH_METRICS=1` installs a Prometheus recorder
//! and a tracing subscriber first, as an application exporting both would
//! (the notify cost with metrics and tracing on; see `docs/benchmarks.md`).

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use futures_util::StreamExt;
use serde::Serialize;
use tidings::{Notification, Notifier, Notify, Op};
use tokio::runtime::Runtime;

/// How many idle clients the loaded notifier has.
const SESSIONS: usize = 1000;

/// How many clients connect at once while the bench sets up.
const CONNECT_CONCURRENCY: usize = 100;

/// Small data, as a handler would send: the row's id.
#[derive(Serialize)]
struct Row {
    id: u64,
}

/// A notifier, and how many clients are connected to it.
struct Setup {
    notifier: Notifier,
    sessions: usize,
}

impl Setup {
    fn label(&self) -> String {
        format!("sessions={}", self.sessions)
    }
}

/// Serves `notifier` on a loopback port and connects `clients` WebSocket
/// clients that read everything they are sent, until the process exits.
fn connect_clients(rt: &Runtime, notifier: &Notifier, clients: usize) {
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
        let addr = listener.local_addr().expect("local address");
        let app = axum::Router::new().merge(tidings::axum::routes(notifier));
        tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });

        let url = format!("ws://{addr}/ws");
        futures_util::stream::iter(0..clients)
            .for_each_concurrent(CONNECT_CONCURRENCY, |_| {
                let url = url.clone();
                async move {
                    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
                        .await
                        .unwrap_or_else(|e| panic!("connect to {url}: {e} (is `ulimit -n` at least 4096?)"));
                    // Keep reading so the socket never fills; reading also
                    // answers the server's pings.
                    tokio::spawn(async move { while let Some(Ok(_)) = ws.next().await {} });
                }
            })
            .await;

        let mut count = notifier.watch_sessions();
        tokio::time::timeout(Duration::from_secs(30), count.wait_for(|n| *n >= clients))
            .await
            .unwrap_or_else(|_| {
                panic!("only {} of {clients} sessions registered within 30 s", notifier.session_count())
            })
            .expect("the notifier is alive");
    });
}

/// With `TIDINGS_BENCH_METRICS=1`: a Prometheus recorder (its upkeep on a
/// thread of its own, as an exporter runs it) and a tracing subscriber at
/// INFO writing to nowhere, installed before any notifier starts.
fn observe() {
    let on = std::env::var("TIDINGS_BENCH_METRICS").unwrap_or_default();
    if on == "1" || on == "metrics" {
        let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
            .install_recorder()
            .expect("install the recorder");
        std::thread::spawn(move || {
            loop {
                std::thread::sleep(Duration::from_secs(5));
                handle.run_upkeep();
            }
        });
    }
    if on == "1" || on == "tracing" {
        tracing_subscriber::fmt().with_max_level(tracing::Level::INFO).with_writer(std::io::sink).init();
    }
}

fn benches(c: &mut Criterion) {
    observe();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    // One worker per core by default; `TIDINGS_BENCH_WORKERS=1` leaves the
    // bench thread a core of its own on a small machine.
    if let Some(workers) = std::env::var("TIDINGS_BENCH_WORKERS").ok().and_then(|w| w.parse().ok()) {
        builder.worker_threads(workers);
    }
    let rt = builder.enable_all().build().expect("tokio runtime");
    // The notifiers spawn their dispatcher on the current runtime.
    let guard = rt.enter();

    let idle = Setup { notifier: Notifier::new(), sessions: 0 };
    let loaded = Setup { notifier: Notifier::new(), sessions: SESSIONS };
    connect_clients(&rt, &loaded.notifier, loaded.sessions);
    let setups = [&idle, &loaded];

    let mut group = c.benchmark_group("notify");
    for setup in setups {
        let notifier = &setup.notifier;
        group.bench_function(BenchmarkId::new("no_data", setup.label()), |b| {
            b.iter(|| notifier.notify(black_box("forums"), Op::Insert))
        });
        group.bench_function(BenchmarkId::new("with_data", setup.label()), |b| {
            let row = Row { id: 42 };
            b.iter(|| {
                notifier
                    .notify_with(black_box("forums"), Op::Update, black_box(&row))
                    .expect("a Row serializes")
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("serialize");
    group.bench_function("no_data", |b| b.iter(|| Notification::new(black_box("forums"), Op::Insert)));
    group.bench_function("with_data", |b| {
        let row = Row { id: 42 };
        b.iter(|| {
            Notification::new(black_box("forums"), Op::Update)
                .with_data(black_box(&row))
                .expect("a Row serializes")
        })
    });
    group.finish();

    let mut group = c.benchmark_group("batch_commit");
    for setup in setups {
        for size in [1u64, 10, 100] {
            let notifier = &setup.notifier;
            let id = BenchmarkId::new(format!("size={size}"), setup.label());
            group.bench_function(id, |b| {
                b.iter_batched(
                    || {
                        let batch = notifier.batch();
                        for id in 0..size {
                            batch.notify_with("forums", Op::Update, &Row { id }).expect("a Row serializes");
                        }
                        batch
                    },
                    |batch| {
                        batch.commit();
                        // Dropped outside the measurement.
                        batch
                    },
                    BatchSize::SmallInput,
                )
            });
        }
    }
    group.finish();

    // Ends the server and the clients without waiting for them.
    drop(guard);
    rt.shutdown_background();
}

fn config() -> Criterion {
    Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1))
}

criterion_group! {
    name = notify;
    config = config();
    targets = benches
}
criterion_main!(notify);
