//! The two servers under test, tidings and the baseline (a careful
//! hand-written broadcast handler: each notification serialized once, one
//! broadcast channel for everyone or one per room), and the control API the driver uses on them:
//! `POST /emit` (emit from inside the server, timing each call) and
//! `GET /stats` (RSS, sessions, CPU, backplane cursor). With a
//! transactional `--backplane` (`outbox`, `memory-txn`), every emit is a
//! database write (see `transactional`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ws::{Message as AxMessage, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use tidings::backplane::Backplane;
use tidings::{Config, Notifier, Notify, Op};
use tokio::io::AsyncReadExt;
use tokio::sync::broadcast;

use crate::Error;
use crate::args::{Impl, ServerArgs, Shape, Switch, room_of};
use crate::machine::{cpu_ms, cpu_ns, rss_kib, unix_nanos};
use crate::report::percentile;
use crate::transactional::{self, Setup};

/// Baseline broadcast channel capacity (each room's too).
const BASELINE_CAPACITY: usize = 1024;

/// The frame the baseline sends, laid out as tidings' notification frames
/// (`{"collection":..,"op":"insert","data":{..}}`, without the cursor). It
/// is serialized once per notification, and the same shared text goes to
/// every receiver.
#[derive(Serialize)]
struct Event<'a> {
    collection: &'a str,
    op: &'static str,
    data: Payload<'a>,
}

/// A notification's data, for both implementations: `t` (emit time, ns
/// since the epoch), `i` (index), `room` (with rooms: a top-level field, so
/// that tidings' filters can match it) and the padding.
#[derive(Serialize)]
struct Payload<'a> {
    t: u64,
    i: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    room: Option<u64>,
    pad: &'a str,
}

/// The server under test, shared by the control and WebSocket handlers.
#[derive(Clone)]
enum Hub {
    /// tidings; with `writes`, each emit is a transaction on that database.
    Tidings { notifier: Notifier, writes: Option<Writes> },
    Baseline {
        /// Without rooms: one channel, every session subscribed.
        tx: broadcast::Sender<Utf8Bytes>,
        /// With rooms: a channel per room, created when its first member joins.
        rooms: Arc<DashMap<u32, broadcast::Sender<Utf8Bytes>>>,
        sessions: Arc<AtomicUsize>,
    },
}

/// Where a transactional setup's emits write.
#[derive(Clone)]
struct Writes {
    db: sea_orm::DatabaseConnection,
    /// The application's table.
    app: String,
}

/// `POST /emit?count=M&size=B&collection=C&pace_us=P[&rooms=R&shape=S]`.
/// With `rooms` (≥ 1), notification i goes to room i % R: collection
/// `room-K` (`shape=collections`) or `posts` with `"room": K` in its data
/// (`shape=filter`); `collection` is then unused.
#[derive(Deserialize)]
struct EmitParams {
    count: usize,
    #[serde(default)]
    size: usize,
    #[serde(default = "default_collection")]
    collection: String,
    #[serde(default)]
    pace_us: u64,
    #[serde(default)]
    rooms: usize,
    #[serde(default)]
    shape: Option<String>,
}

/// `GET /ws?room=K` on the baseline: join room K; without it, the one
/// channel everyone shares.
#[derive(Deserialize)]
struct BaselineParams {
    room: Option<u32>,
}

fn default_collection() -> String {
    "hot".into()
}

/// `POST /emit`'s answer: when the emits began and ended, and what each
/// emit call cost its caller.
#[derive(Serialize, Deserialize, Debug, Default)]
pub struct EmitReport {
    pub count: usize,
    pub first_emit_ns: u64,
    pub last_emit_ns: u64,
    pub caller_p50_ns: u64,
    pub caller_p99_ns: u64,
    pub caller_max_ns: u64,
}

/// `GET /stats`'s answer.
#[derive(Serialize, Deserialize, Debug, Default)]
pub struct Stats {
    pub rss_kib: u64,
    pub sessions: usize,
    /// User + system CPU time of the server process so far (10 ms ticks).
    pub cpu_ms: u64,
    /// CPU time of the server's threads so far, in ns (schedstat).
    #[serde(default)]
    pub cpu_ns: u64,
    /// tidings: `Notifier::health()`'s cursor (the last notification
    /// delivered on this instance) and status.
    #[serde(default)]
    pub cursor: String,
    #[serde(default)]
    pub status: String,
}

/// The backplane for `url`, with every instance of a run on the stream key
/// or channel `name`.
fn backplane(url: &str, name: String) -> Result<Box<dyn Backplane>, Error> {
    #[cfg(feature = "redis")]
    if url.starts_with("redis://") || url.starts_with("rediss://") {
        return Ok(Box::new(tidings::backplane::Redis::new(url).key(name)));
    }
    #[cfg(feature = "postgres")]
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Box::new(tidings::backplane::Postgres::new(url).channel(name)));
    }
    drop(name);
    // Says which feature the URL needs.
    Ok(tidings::backplane::from_url(url)?)
}

/// Serves until its stdin closes (the driver's way to stop it) or SIGTERM.
pub async fn serve(args: ServerArgs) -> Result<(), Error> {
    let hub = match args.imp {
        Impl::Tidings => {
            let mut config = Config::default().replay_capacity(args.hub.replay);
            let name = args.hub.backplane_name_or_new();
            let mut writes = None;
            match args.hub.backplane.as_deref().map(|url| (url, Setup::parse(url, &name))) {
                None => {}
                Some((_, Some(setup))) => {
                    let db = setup.connect().await?;
                    if let Some(outbox) = setup.outbox(&db).await? {
                        config = config.backplane(outbox);
                    }
                    writes = Some(Writes { db, app: setup.app_table() });
                }
                Some((url, None)) => config = config.backplane(backplane(url, name)?),
            }
            Hub::Tidings { notifier: Notifier::with_config(config), writes }
        }
        Impl::Baseline => Hub::Baseline {
            tx: broadcast::channel(BASELINE_CAPACITY).0,
            rooms: Arc::new(DashMap::new()),
            sessions: Arc::new(AtomicUsize::new(0)),
        },
    };
    let control =
        Router::new().route("/emit", post(emit)).route("/stats", get(stats)).with_state(hub.clone());
    let app = match &hub {
        Hub::Tidings { notifier, .. } => control.merge(tidings::axum::routes(notifier)),
        Hub::Baseline { .. } => {
            control.merge(Router::new().route("/ws", get(baseline_ws)).with_state(hub.clone()))
        }
    };
    let listener = tokio::net::TcpListener::bind(&args.addr).await?;
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on http://{}", listener.local_addr()?)?;
        out.flush()?;
    }
    let stop = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let stdin_closed = async {
            let mut stdin = tokio::io::stdin();
            let mut buf = [0u8; 256];
            while let Ok(n) = stdin.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        };
        tokio::select! {
            _ = stdin_closed => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
    };
    let nodelay = args.hub.nodelay == Switch::On;
    let listener = listener.tap_io(move |tcp| {
        if let Err(e) = tcp.set_nodelay(nodelay) {
            eprintln!("set_nodelay: {e}");
        }
    });
    tokio::select! {
        r = axum::serve(listener, app) => r?,
        _ = stop => {}
    }
    Ok(())
}

async fn emit(State(hub): State<Hub>, Query(p): Query<EmitParams>) -> Response {
    let count = p.count.min(1_000_000);
    let pad = "x".repeat(p.size.min(1 << 20));
    let shape = match p.shape.as_deref() {
        Some("filter") => Shape::Filter,
        _ => Shape::Collections,
    };
    let rooms = p.rooms.min(1_000_000);
    let mut costs = Vec::with_capacity(count);
    let mut first = 0;
    let mut last = 0;
    for i in 0..count {
        if i > 0 && p.pace_us > 0 {
            let pace = Duration::from_micros(p.pace_us);
            if pace >= Duration::from_millis(1) {
                tokio::time::sleep(pace).await;
            } else {
                let until = Instant::now() + pace;
                while Instant::now() < until {
                    std::hint::spin_loop();
                }
            }
        }
        // The collection and room of notification i, before any timer.
        let (collection, room) = if rooms > 0 {
            let k = room_of(i, rooms);
            (shape.collection(k), Some(k as u64))
        } else {
            (p.collection.clone(), None)
        };
        let (t, cost) = match &hub {
            Hub::Tidings { notifier, writes: None } => {
                let t = unix_nanos();
                let payload = Payload { t, i: i as u64, room, pad: &pad };
                let start = Instant::now();
                let _ = notifier.notify_with(collection, Op::Insert, &payload);
                (t, start.elapsed())
            }
            // The caller's cost is the whole write; the payload's time is
            // taken just before the commit, so latency is commit -> client.
            Hub::Tidings { notifier, writes: Some(w) } => {
                let start = Instant::now();
                let data = |t| Payload { t, i: i as u64, room, pad: &pad };
                match transactional::write(&w.db, notifier, &w.app, collection, unix_nanos, data).await {
                    Ok(t) => (t, start.elapsed()),
                    Err(e) => {
                        return (StatusCode::INTERNAL_SERVER_ERROR, format!("write {i} failed: {e}"))
                            .into_response();
                    }
                }
            }
            // Serialized once, then the same shared text to every receiver
            // of the room's channel (or of the one channel). The caller's
            // cost includes the serialization, as tidings' does.
            Hub::Baseline { tx, rooms: by_room, .. } => {
                let t = unix_nanos();
                let start = Instant::now();
                let event = Event {
                    collection: &collection,
                    op: "insert",
                    data: Payload { t, i: i as u64, room, pad: &pad },
                };
                if let Ok(json) = serde_json::to_string(&event) {
                    let text = Utf8Bytes::from(json);
                    match room {
                        None => {
                            let _ = tx.send(text);
                        }
                        Some(k) => {
                            if let Some(tx) = by_room.get(&(k as u32)) {
                                let _ = tx.send(text);
                            }
                        }
                    }
                }
                (t, start.elapsed())
            }
        };
        if i == 0 {
            first = t;
        }
        last = t;
        costs.push(cost.as_nanos() as u64);
    }
    costs.sort_unstable();
    axum::Json(EmitReport {
        count,
        first_emit_ns: first,
        last_emit_ns: last,
        caller_p50_ns: percentile(&costs, 50.0),
        caller_p99_ns: percentile(&costs, 99.0),
        caller_max_ns: costs.last().copied().unwrap_or(0),
    })
    .into_response()
}

async fn stats(State(hub): State<Hub>) -> Response {
    let (sessions, cursor, status) = match &hub {
        Hub::Tidings { notifier, .. } => {
            let health = notifier.health();
            let status = match health.reason {
                Some(reason) => format!("{}: {reason}", health.status),
                None => health.status.to_string(),
            };
            (health.sessions, health.cursor, status)
        }
        Hub::Baseline { sessions, .. } => (sessions.load(Ordering::SeqCst), String::new(), "ok".into()),
    };
    let (cpu_ms, cpu_ns) = (cpu_ms(), cpu_ns());
    axum::Json(Stats { rss_kib: rss_kib(), sessions, cpu_ms, cpu_ns, cursor, status }).into_response()
}

/// The baseline: one task per connection, subscribed to the broadcast
/// channel of its room (`?room=K`, the channel created by the room's first
/// member) or to the one channel; every received text, already serialized
/// and shared, is sent on its own (one `send` per message, no batching).
async fn baseline_ws(
    State(hub): State<Hub>,
    Query(q): Query<BaselineParams>,
    ws: WebSocketUpgrade,
) -> Response {
    let Hub::Baseline { tx, rooms, sessions } = hub else {
        return axum::http::StatusCode::NOT_FOUND.into_response();
    };
    let rx = match q.room {
        None => tx.subscribe(),
        Some(k) => rooms.entry(k).or_insert_with(|| broadcast::channel(BASELINE_CAPACITY).0).subscribe(),
    };
    ws.on_upgrade(move |socket| baseline_session(socket, rx, sessions))
}

async fn baseline_session(
    mut socket: WebSocket,
    mut rx: broadcast::Receiver<Utf8Bytes>,
    sessions: Arc<AtomicUsize>,
) {
    sessions.fetch_add(1, Ordering::SeqCst);
    loop {
        tokio::select! {
            text = rx.recv() => match text {
                Ok(text) => {
                    if socket.send(AxMessage::Text(text)).await.is_err() {
                        break;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => break,
            },
            msg = socket.recv() => match msg {
                Some(Ok(AxMessage::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
        }
    }
    sessions.fetch_sub(1, Ordering::SeqCst);
}
