//! What server-side filters cost: the caller's `notify`, and the
//! dispatcher's work per notification, with 1,000 sessions that each have a
//! different filter.
//!
//! Run with `cargo bench --bench filters -- --noplot`. Results are in
//! `docs/benchmarks.md` ("Filters").
//!
//! The sessions are real: an axum server on a loopback port and 1,000
//! tokio-tungstenite clients, session `i` connected with
//! `?collections=posts,everything,marker&where={"posts":{"forum_id":i}}`.
//! The process needs about 2,100 file descriptors (`ulimit -n 4096`).
//!
//! - `filters/notify/sessions=N`: `notify_with("posts", Op::Update, &{id,
//!   forum_id})`, what a handler pays: with 0 sessions (the baseline) and
//!   with the 1,000 filtered ones. The caller never reads the data's fields
//!   (the first filtered session to read the entry does, once for all):
//!   `filters/notify/sessions=1,filtered` (one session whose filter no post
//!   passes) shows what a filtered session still costs the caller, its
//!   wake-up. `TIDINGS_BENCH_WORKERS=<n>` sets the runtime's worker threads.
//! - `filters/dispatch/<kind>`: a burst of 1,000 notifications, then one
//!   marker every session receives; timed until all 1,000 sessions have
//!   read their marker, so it covers every session's pass over the burst
//!   (criterion's throughput is in notifications). `<kind>`: `by_name` (the
//!   baseline: a collection nobody subscribes to, refused by name),
//!   `filtered` (posts of 1,000 different forums: each one passes one
//!   session's filter and is held back from 999, a million filter checks
//!   per burst) and `unfiltered` (a collection every session takes whole: a
//!   million frames written, what every client received before server-side
//!   filters).

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use futures_util::StreamExt;
use serde::Serialize;
use tidings::{Notifier, Notify, Op};
use tokio::runtime::Runtime;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

/// How many connected sessions, each with its own filter.
const SESSIONS: u64 = 1000;

/// How many notifications one dispatch burst holds: one per session, and
/// fewer than the history holds (1,024), so no session lags into a resync.
const BURST: u64 = 1000;

/// How many clients connect at once while the bench sets up.
const CONNECT_CONCURRENCY: usize = 100;

/// A post as a handler would send it: its id and its forum.
#[derive(Serialize)]
struct Post {
    id: u64,
    forum_id: u64,
}

/// What the clients have received, summed over all of them.
struct Received {
    /// How many markers: a burst is done when this grew by `SESSIONS`.
    markers: watch::Sender<u64>,
    /// How many `posts` frames: each filtered post must reach one session.
    posts: AtomicU64,
}

/// The percent-encoded `where` of session `i`.
fn filter_of(i: u64) -> String {
    let json = format!(r#"{{"posts":{{"forum_id":{i}}}}}"#);
    json.bytes()
        .map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

/// Serves `notifier` on a loopback port and connects the filtered clients.
fn connect_clients(rt: &Runtime, notifier: &Notifier, received: &Arc<Received>, sessions: u64) {
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
        let addr = listener.local_addr().expect("local address");
        let app = axum::Router::new().merge(tidings::axum::routes(notifier));
        tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });

        // One session: forum 1,000,000's, which no post here names.
        let first = if sessions == 1 { 1_000_000 } else { 0 };
        futures_util::stream::iter(first..first + sessions)
            .for_each_concurrent(CONNECT_CONCURRENCY, |i| {
                let url =
                    format!("ws://{addr}/ws?collections=posts,everything,marker&where={}", filter_of(i));
                let received = received.clone();
                async move {
                    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
                        .await
                        .unwrap_or_else(|e| panic!("connect: {e} (is `ulimit -n` at least 4096?)"));
                    tokio::spawn(async move {
                        while let Some(Ok(message)) = ws.next().await {
                            let Message::Text(text) = message else { continue };
                            if text.starts_with(r#"{"collection":"marker""#) {
                                received.markers.send_modify(|n| *n += 1);
                            } else if text.starts_with(r#"{"collection":"posts""#) {
                                received.posts.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    });
                }
            })
            .await;
        let mut count = notifier.watch_sessions();
        tokio::time::timeout(Duration::from_secs(30), count.wait_for(|n| *n as u64 >= sessions))
            .await
            .expect("every session registers within 30 s")
            .expect("the notifier is alive");
    });
}

/// Sends a burst of `BURST` notifications made by `one`, then the marker,
/// and waits until every session read the marker.
fn burst(rt: &Runtime, notifier: &Notifier, received: &Received, one: &dyn Fn(u64)) -> Duration {
    let mut markers = received.markers.subscribe();
    let target = *markers.borrow() + SESSIONS;
    let start = Instant::now();
    for i in 0..BURST {
        one(i);
    }
    notifier.notify("marker", Op::Insert);
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(30), markers.wait_for(|n| *n >= target))
            .await
            .expect("every session reads the marker within 30 s")
            .expect("the counter is alive");
    });
    start.elapsed()
}

fn benches(c: &mut Criterion) {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    // As in benches/notify.rs: `TIDINGS_BENCH_WORKERS=1` leaves the bench
    // thread a core of its own on a small machine.
    if let Some(workers) = std::env::var("TIDINGS_BENCH_WORKERS").ok().and_then(|w| w.parse().ok()) {
        builder.worker_threads(workers);
    }
    let rt = builder.enable_all().build().expect("tokio runtime");
    // The notifiers spawn their waker on the current runtime.
    let guard = rt.enter();

    let idle = Notifier::new();
    let loaded = Notifier::new();
    let received = Arc::new(Received { markers: watch::Sender::new(0), posts: AtomicU64::new(0) });
    connect_clients(&rt, &loaded, &received, SESSIONS);
    let one = Notifier::new();
    let nobody = Arc::new(Received { markers: watch::Sender::new(0), posts: AtomicU64::new(0) });
    // Session 1,000,000's filter: forum 1,000,000, which no post names.
    connect_clients(&rt, &one, &nobody, 1);

    let mut group = c.benchmark_group("filters/notify");
    for (sessions, notifier) in [(0, &idle), (SESSIONS, &loaded)] {
        group.bench_function(BenchmarkId::from_parameter(format!("sessions={sessions}")), |b| {
            let post = Post { id: 42, forum_id: 7 };
            b.iter(|| {
                notifier.notify_with(black_box("posts"), Op::Update, black_box(&post)).expect("serializes")
            })
        });
    }
    // One session whose filter nothing passes: nothing is sent, and the
    // fields are read on that session's side. The difference with
    // `sessions=0` is what one filtered session costs the caller (its
    // wake-up).
    group.bench_function("sessions=1,filtered", |b| {
        let post = Post { id: 42, forum_id: 7 };
        b.iter(|| one.notify_with(black_box("posts"), Op::Update, black_box(&post)).expect("serializes"))
    });
    group.finish();
    // Let the fan-out of what the caller bench sent finish before timing
    // bursts: one burst of nothing but the marker.
    burst(&rt, &loaded, &received, &|_| {});

    let mut group = c.benchmark_group("filters/dispatch");
    group.throughput(Throughput::Elements(BURST));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    let posts_before = received.posts.load(Ordering::Relaxed);
    let mut filtered_bursts = 0u64;
    let kinds: [(&str, &dyn Fn(u64)); 3] = [
        ("by_name", &|i| loaded.notify_with("nobody", Op::Update, &Post { id: i, forum_id: i }).unwrap()),
        // Forum i: session i's filter, and no other session's.
        ("filtered", &|i| loaded.notify_with("posts", Op::Update, &Post { id: i, forum_id: i }).unwrap()),
        ("unfiltered", &|i| {
            loaded.notify_with("everything", Op::Update, &Post { id: i, forum_id: i }).unwrap()
        }),
    ];
    for (kind, one) in kinds {
        group.bench_function(kind, |b| {
            b.iter_custom(|iters| {
                if kind == "filtered" {
                    filtered_bursts += iters;
                }
                (0..iters).map(|_| burst(&rt, &loaded, &received, one)).sum()
            })
        });
    }
    group.finish();
    // Each filtered post reached exactly one session: the filters did hold
    // the others back, and did let the right one through.
    let posts = received.posts.load(Ordering::Relaxed) - posts_before;
    assert_eq!(posts, filtered_bursts * BURST, "each filtered post reaches exactly one session");

    drop(guard);
    rt.shutdown_background();
}

fn config() -> Criterion {
    Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1))
}

criterion_group! {
    name = filters;
    config = config();
    targets = benches
}
criterion_main!(filters);
