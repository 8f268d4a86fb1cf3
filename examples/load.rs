//! End-to-end load tool: real WebSocket clients against a real server, tidings
//! versus the obvious hand-written broadcast handler.
//!
//! ```text
//! cargo run --release --example load -- run --clients 1000 --messages 1000 --impl both
//! cargo run --release --example load -- run --mode paced --messages 200
//! cargo run --release --example load -- run --subscribed 10pct
//! cargo run --release --example load -- server --addr 127.0.0.1:0 --impl tidings
//! # write throughput of a running forums example (`cargo run --release --example forums`):
//! cargo run --release --example load -- writes --url http://127.0.0.1:3000 --concurrency 8 --seconds 10
//! # two tidings instances sharing notifications (emit on A, clients on A and B):
//! cargo run --release --features redis,postgres --example load -- run --impl tidings \
//!     --instances 2 --backplane redis://127.0.0.1:6379   # or postgres://...
//! ```
//!
//! `run` (the driver) spawns `server` as a child process per implementation,
//! opens the WebSocket clients in its own process, measures idle memory per
//! session, asks the server to emit over a small control API
//! (`POST /emit`, `GET /stats`) and prints one table row per implementation.
//! Everything listens on 127.0.0.1; every wait is bounded. See
//! `docs/benchmarks.md` ("End-to-end load tool") for the method.
//!
//! Many clients need many file descriptors in both processes: raise the limit
//! first (`ulimit -n 65536`), the child inherits it.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::ws::{Message as AxMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tidings::{Backplane, Config, Notifier, Op};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, broadcast, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Whole run of one implementation (connect, emit, receive) must end in this.
const OVERALL_TIMEOUT: Duration = Duration::from_secs(120);
/// After the emit call returned, stop waiting once no client made progress
/// for this long.
const QUIET_TIMEOUT: Duration = Duration::from_secs(5);
/// Baseline broadcast channel capacity.
const BASELINE_CAPACITY: usize = 1024;
/// Clients connecting at once.
const CONNECT_CONCURRENCY: usize = 128;

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("server") => {
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            rt.block_on(server(Args::parse(&args[1..])?))
        }
        Some("run") => {
            let args = Args::parse(&args[1..])?;
            // The driver is the measuring instrument: by default all its
            // clients run on one thread (a current-thread runtime), which is
            // cheaper per frame than work-stealing across threads and leaves
            // the other cores to the server.
            let rt = if args.driver_threads <= 1 {
                tokio::runtime::Builder::new_current_thread().enable_all().build()?
            } else {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(args.driver_threads)
                    .enable_all()
                    .build()?
            };
            rt.block_on(run(args))
        }
        Some("writes") => {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(writes(WritesArgs::parse(&args[1..])?))
        }
        _ => {
            eprintln!(
                "usage: load server --addr 127.0.0.1:0 --impl tidings|baseline [--replay N] [--nodelay on|off] \
                 [--backplane URL [--backplane-name NAME]]\n       \
                 load run [--clients N] [--messages M] [--size B] [--mode burst|paced] \
                 [--pace-us P] [--subscribed all|10pct] [--impl tidings|baseline|both] [--replay N] \
                 [--driver-threads T] [--client-read-buffer B] [--nodelay on|off] \
                 [--instances K --backplane URL [--backplane-name NAME]]\n       \
                 load writes [--url http://127.0.0.1:3000] [--concurrency C] [--seconds S]"
            );
            std::process::exit(2);
        }
    }
}

// ---------------------------------------------------------------- arguments

#[derive(Debug, Clone)]
struct Args {
    addr: String,
    imp: String,
    replay: usize,
    clients: usize,
    messages: usize,
    size: usize,
    paced: bool,
    pace_us: u64,
    ten_pct: bool,
    /// Driver runtime threads: 1 = current-thread runtime (default).
    driver_threads: usize,
    /// The clients' tungstenite read buffer (tungstenite zero-fills the free
    /// part of it before every read, so its size is a per-read cost).
    client_read_buffer: usize,
    /// TCP_NODELAY on the server's accepted sockets (axum::serve leaves
    /// Nagle on unless the listener sets it).
    nodelay: bool,
    /// A backplane URL (`redis://...`, `postgres://...`): tidings servers
    /// share notifications through it (`Backplane::from_url`).
    backplane: Option<String>,
    /// The Redis stream key / PostgreSQL channel; every instance of a run
    /// gets the same one. Default: a new one per run.
    backplane_name: Option<String>,
    /// Server processes the driver starts (`run`); clients are split evenly
    /// between them and `/emit` goes to the first one only.
    instances: usize,
}

impl Args {
    fn parse(args: &[String]) -> Result<Args, Error> {
        let mut a = Args {
            addr: "127.0.0.1:0".into(),
            imp: "both".into(),
            replay: 1024,
            clients: 1000,
            messages: 1000,
            size: 100,
            paced: false,
            pace_us: 10_000,
            ten_pct: false,
            driver_threads: 1,
            client_read_buffer: 8 * 1024,
            nodelay: true,
            backplane: None,
            backplane_name: None,
            instances: 1,
        };
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
            match flag.as_str() {
                "--addr" => a.addr = value.clone(),
                "--impl" => a.imp = value.clone(),
                "--replay" => a.replay = value.parse()?,
                "--clients" => a.clients = value.parse()?,
                "--messages" => a.messages = value.parse()?,
                "--size" => a.size = value.parse()?,
                "--pace-us" => a.pace_us = value.parse()?,
                "--driver-threads" => a.driver_threads = value.parse()?,
                "--client-read-buffer" => a.client_read_buffer = value.parse()?,
                "--backplane" => a.backplane = Some(value.clone()),
                "--backplane-name" => a.backplane_name = Some(value.clone()),
                "--instances" => a.instances = value.parse()?,
                "--nodelay" => {
                    a.nodelay = match value.as_str() {
                        "on" | "true" => true,
                        "off" | "false" => false,
                        m => return Err(format!("unknown --nodelay {m} (on|off)").into()),
                    }
                }
                "--mode" => {
                    a.paced = match value.as_str() {
                        "burst" => false,
                        "paced" => true,
                        m => return Err(format!("unknown mode {m}").into()),
                    }
                }
                "--subscribed" => {
                    a.ten_pct = match value.as_str() {
                        "all" => false,
                        "10pct" => true,
                        m => return Err(format!("unknown --subscribed {m}").into()),
                    }
                }
                f => return Err(format!("unknown flag {f}").into()),
            }
        }
        if !matches!(a.imp.as_str(), "tidings" | "baseline" | "both") {
            return Err(format!("unknown impl {}", a.imp).into());
        }
        if a.instances > 1 && a.backplane.is_none() {
            return Err(
                "--instances 2 or more needs --backplane URL (instances share nothing otherwise)".into()
            );
        }
        if a.backplane.is_some() && a.imp != "tidings" {
            return Err("--backplane needs --impl tidings (the baseline has no backplane)".into());
        }
        a.instances = a.instances.clamp(1, 8);
        a.messages = a.messages.clamp(1, 1_000_000);
        a.clients = a.clients.clamp(1, 100_000);
        Ok(a)
    }
}

/// A stream key / channel name for one run (a valid PostgreSQL identifier).
fn unique_name() -> String {
    format!("tidings_load_{}_{}", std::process::id(), unix_nanos())
}

fn unix_nanos() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

// ------------------------------------------------------------------- writes

/// `load writes`: how many writes per second a running forums example takes.
struct WritesArgs {
    url: String,
    concurrency: usize,
    seconds: u64,
}

impl WritesArgs {
    fn parse(args: &[String]) -> Result<WritesArgs, Error> {
        let mut a = WritesArgs { url: "http://127.0.0.1:3000".into(), concurrency: 8, seconds: 10 };
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
            match flag.as_str() {
                "--url" => a.url = value.trim_end_matches('/').to_owned(),
                "--concurrency" => a.concurrency = value.parse::<usize>()?.clamp(1, 256),
                "--seconds" => a.seconds = value.parse::<u64>()?.clamp(1, 600),
                f => return Err(format!("unknown flag {f}").into()),
            }
        }
        Ok(a)
    }
}

/// Creates one forum, then `concurrency` writers post to it for `seconds`
/// (each waits for its answer before the next post, as a browser does) and
/// prints writes/s and the latency of a write. Every request is bounded by a
/// timeout; a failed write is counted, not retried.
async fn writes(args: WritesArgs) -> Result<(), Error> {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
    let forum: serde_json::Value = http
        .post(format!("{}/api/forums", args.url))
        .json(&serde_json::json!({ "title": format!("load {}", unix_nanos()) }))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let id = forum["id"].as_i64().ok_or("the forum has no id")?;
    let posts = format!("{}/api/forums/{id}/posts", args.url);
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let started = Instant::now();
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..args.concurrency {
        let (http, posts) = (http.clone(), posts.clone());
        writers.spawn(async move {
            let (mut latencies, mut failed) = (Vec::new(), 0u64);
            while Instant::now() < deadline {
                let t = Instant::now();
                let body = serde_json::json!({ "body": format!("post from writer {w}") });
                match http.post(&posts).json(&body).send().await {
                    Ok(r) if r.status().is_success() => latencies.push(t.elapsed().as_micros() as u64),
                    _ => failed += 1,
                }
            }
            (latencies, failed)
        });
    }
    let (mut latencies, mut failed) = (Vec::new(), 0);
    while let Some(done) = writers.join_next().await {
        let (l, f) = done?;
        latencies.extend(l);
        failed += f;
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    println!(
        "writes: {} ok, {failed} failed in {elapsed:.1} s with {} writers: {:.0} writes/s, latency p50 {} µs, p99 {} µs",
        latencies.len(),
        args.concurrency,
        latencies.len() as f64 / elapsed,
        percentile(&latencies, 50.0),
        percentile(&latencies, 99.0),
    );
    Ok(())
}

// ------------------------------------------------------------------- server

/// What the baseline broadcasts: the obvious event struct, cloned into every
/// receiver by `broadcast` and serialized per client.
#[derive(Clone, Serialize)]
struct Event {
    collection: String,
    op: &'static str,
    data: EventData,
}

#[derive(Clone, Serialize)]
struct EventData {
    t: u64,
    i: u64,
    pad: String,
}

/// The tidings payload: the same fields, borrowed.
#[derive(Serialize)]
struct Payload<'a> {
    t: u64,
    i: u64,
    pad: &'a str,
}

#[derive(Clone)]
enum Hub {
    Tidings(Notifier),
    Baseline { tx: broadcast::Sender<Event>, sessions: Arc<AtomicUsize> },
}

#[derive(Deserialize)]
struct EmitParams {
    count: usize,
    #[serde(default)]
    size: usize,
    #[serde(default = "default_collection")]
    collection: String,
    #[serde(default)]
    pace_us: u64,
}

fn default_collection() -> String {
    "hot".into()
}

#[derive(Serialize, Deserialize, Debug, Default)]
struct EmitReport {
    count: usize,
    first_emit_ns: u64,
    last_emit_ns: u64,
    caller_p50_ns: u64,
    caller_p99_ns: u64,
    caller_max_ns: u64,
}

#[derive(Serialize, Deserialize, Debug, Default)]
struct Stats {
    rss_kib: u64,
    sessions: usize,
    /// User + system CPU time of the server process so far.
    cpu_ms: u64,
    /// tidings: `Notifier::health()`'s cursor (the last notification
    /// delivered on this instance) and status.
    #[serde(default)]
    cursor: String,
    #[serde(default)]
    status: String,
}

/// User + system CPU time of this process, from `/proc/self/stat`.
fn cpu_ms() -> u64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0;
    };
    // Fields after the parenthesized command name; utime and stime are
    // fields 14 and 15 of the whole line, in clock ticks (100 per second).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest.split_whitespace().map(|x| x.parse().unwrap_or(0)).collect();
    (f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)) * 10
}

async fn server(args: Args) -> Result<(), Error> {
    let hub = match args.imp.as_str() {
        "tidings" => {
            let mut config = Config::default().replay_capacity(args.replay);
            if let Some(url) = &args.backplane {
                // `from_url` says so when the URL's feature is not enabled.
                let name = args.backplane_name.clone().unwrap_or_else(unique_name);
                config = config.backplane(Backplane::from_url(url)?.name(name));
            }
            Hub::Tidings(Notifier::with_config(config))
        }
        "baseline" => Hub::Baseline {
            tx: broadcast::channel(BASELINE_CAPACITY).0,
            sessions: Arc::new(AtomicUsize::new(0)),
        },
        other => return Err(format!("server --impl must be tidings or baseline, not {other}").into()),
    };
    let control =
        Router::new().route("/emit", post(emit)).route("/stats", get(stats)).with_state(hub.clone());
    let app = match &hub {
        Hub::Tidings(notifier) => control.merge(tidings::axum::routes(notifier)),
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
    let nodelay = args.nodelay;
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
        let t = unix_nanos();
        if i == 0 {
            first = t;
        }
        last = t;
        let cost = match &hub {
            Hub::Tidings(notifier) => {
                let payload = Payload { t, i: i as u64, pad: &pad };
                let collection = p.collection.clone();
                let start = Instant::now();
                let _ = notifier.notify_with(collection, Op::Insert, &payload);
                start.elapsed()
            }
            Hub::Baseline { tx, .. } => {
                let event = Event {
                    collection: p.collection.clone(),
                    op: "insert",
                    data: EventData { t, i: i as u64, pad: pad.clone() },
                };
                let start = Instant::now();
                let _ = tx.send(event);
                start.elapsed()
            }
        };
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

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

async fn stats(State(hub): State<Hub>) -> Response {
    let (sessions, cursor, status) = match &hub {
        Hub::Tidings(notifier) => {
            let health = notifier.health();
            let status = match health.reason {
                Some(reason) => format!("{}: {reason}", health.status),
                None => health.status.to_owned(),
            };
            (health.sessions, health.cursor, status)
        }
        Hub::Baseline { sessions, .. } => (sessions.load(Ordering::SeqCst), String::new(), "ok".into()),
    };
    axum::Json(Stats { rss_kib: rss_kib(), sessions, cpu_ms: cpu_ms(), cursor, status }).into_response()
}

/// The baseline: one task per connection, subscribed to a broadcast channel;
/// each event is serialized for this client and sent on its own (no batching).
async fn baseline_ws(State(hub): State<Hub>, ws: WebSocketUpgrade) -> Response {
    let Hub::Baseline { tx, sessions } = hub else {
        return axum::http::StatusCode::NOT_FOUND.into_response();
    };
    ws.on_upgrade(move |socket| baseline_session(socket, tx.subscribe(), sessions))
}

async fn baseline_session(
    mut socket: WebSocket,
    mut rx: broadcast::Receiver<Event>,
    sessions: Arc<AtomicUsize>,
) {
    sessions.fetch_add(1, Ordering::SeqCst);
    loop {
        tokio::select! {
            event = rx.recv() => match event {
                Ok(event) => {
                    let Ok(json) = serde_json::to_string(&event) else { continue };
                    if socket.send(AxMessage::Text(json.into())).await.is_err() {
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

// ------------------------------------------------------------------- driver

/// A tiny HTTP/1.1 client for the control API (`Connection: close`).
async fn http_json<T: for<'de> Deserialize<'de>>(
    addr: &str,
    method: &str,
    path: &str,
    limit: Duration,
) -> Result<T, Error> {
    let request = async {
        let mut s = TcpStream::connect(addr).await?;
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        Ok::<_, Error>(buf)
    };
    let buf =
        tokio::time::timeout(limit, request).await.map_err(|_| format!("{method} {path}: timed out"))??;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) =
        text.split_once("\r\n\r\n").ok_or_else(|| format!("{method} {path}: malformed response"))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("{method} {path}: {}", head.lines().next().unwrap_or("")).into());
    }
    Ok(serde_json::from_str(body)?)
}

/// The fields of a received frame the driver looks at.
struct Seen<'a> {
    /// `type` of a control frame (`hello`, `resync`, ...).
    kind: Option<&'a [u8]>,
    collection: Option<&'a [u8]>,
    data: Option<FrameData>,
}

/// Reads a frame's `type`, `collection` and `data.t` / `data.i` with a byte
/// scan of the layouts both servers write (`{"type":"..",..}`, or
/// `{"collection":"..","op":"..","data":{"t":T,"i":I,..}..}`), and falls back
/// to a full JSON parse for anything else. Parsing every frame with
/// serde_json was a visible part of the driver's per-frame cost.
fn scan(b: &[u8]) -> Option<Seen<'_>> {
    fn string_at(b: &[u8], at: usize) -> Option<(&[u8], usize)> {
        let len = b.get(at..)?.iter().position(|&c| c == b'"' || c == b'\\')?;
        (b[at + len] == b'"').then(|| (&b[at..at + len], at + len + 1))
    }
    fn number_at(b: &[u8], at: usize) -> Option<(u64, usize)> {
        let digits = b.get(at..)?.iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 || digits > 19 {
            return None;
        }
        let n = b[at..at + digits].iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
        Some((n, at + digits))
    }
    fn find(b: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
        b.get(from..)?.windows(needle.len()).position(|w| w == needle).map(|p| from + p + needle.len())
    }
    let fast = || {
        if let Some(rest) = b.strip_prefix(br#"{"type":""#) {
            let (kind, _) = string_at(rest, 0)?;
            return Some(Seen { kind: Some(kind), collection: None, data: None });
        }
        const COLLECTION: &[u8] = br#"{"collection":""#;
        if !b.starts_with(COLLECTION) {
            return None;
        }
        let (collection, at) = string_at(b, COLLECTION.len())?;
        let at = find(b, at, br#","data":{"t":"#)?;
        let (t, at) = number_at(b, at)?;
        let at = at + br#","i":"#.len();
        (b.get(at - 5..at)? == br#","i":"#).then_some(())?;
        let (i, _) = number_at(b, at)?;
        Some(Seen { kind: None, collection: Some(collection), data: Some(FrameData { t, i }) })
    };
    fast().or_else(|| {
        let f: Frame = serde_json::from_slice(b).ok()?;
        Some(Seen {
            kind: f.kind.map(str::as_bytes),
            collection: f.collection.map(str::as_bytes),
            data: f.data,
        })
    })
}

#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<&'a str>,
    #[serde(borrow)]
    collection: Option<&'a str>,
    data: Option<FrameData>,
}

#[derive(Deserialize)]
struct FrameData {
    t: u64,
    i: u64,
}

/// What one client saw.
#[derive(Default)]
struct ClientResult {
    connected: bool,
    /// Expected to receive every notification (hot, or `all` mode).
    wanted: bool,
    /// Receive time (unix ns) per notification index; 0 = not received.
    recv: Vec<u64>,
    /// Emit time per index, from the payload.
    sent: Vec<u64>,
    received: u64,
    resyncs: u64,
    /// Missing notifications announced by a resync frame.
    covered: u64,
    /// Missing notifications not announced (gaps, or never arrived).
    silent: u64,
    /// Frames this client did not want (baseline without filtering).
    unwanted: u64,
    duplicates: u64,
    /// Which server instance the client was connected to (0 = A, which emits).
    instance: usize,
    /// Cursor forms seen in notification frames: bit 0 `<8 hex>-<seq>`
    /// (in-process, PostgreSQL), bit 1 a Redis stream id `<ms>-<seq>`.
    cursor_forms: u8,
    /// Notification frames whose cursor did not move forward (either form),
    /// or that had no cursor the driver could read.
    cursor_regressions: u64,
}

/// The two cursor forms a tidings frame can carry.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum CursorForm {
    /// `<8 hex epoch>-<seq>`: the in-process history (also PostgreSQL).
    Epoch,
    /// `<ms>-<seq>`, decimal: a Redis stream entry id.
    Stream,
}

/// The cursor at the end of a notification frame (`..,"cursor":"X"}`), as
/// an ordered pair. Gaps are not read from it: with stream ids the sequence
/// restarts every millisecond, so the driver counts received vs expected
/// notifications (by payload index) and resync frames instead, for both
/// forms; the cursor only has to move forward.
fn frame_cursor(b: &[u8]) -> Option<(CursorForm, u64, u64)> {
    const KEY: &[u8] = br#","cursor":""#;
    let body = b.strip_suffix(br#""}"#)?;
    let start = body.iter().rposition(|&c| c == b'"')? + 1;
    (start >= KEY.len() && &body[start - KEY.len()..start] == KEY).then_some(())?;
    let (left, seq) = std::str::from_utf8(&body[start..]).ok()?.split_once('-')?;
    let seq = seq.parse().ok()?;
    if left.len() == 8 && left.bytes().all(|c| c.is_ascii_hexdigit()) {
        return Some((CursorForm::Epoch, u64::from_str_radix(left, 16).ok()?, seq));
    }
    left.bytes().all(|c| c.is_ascii_digit()).then(|| Some((CursorForm::Stream, left.parse().ok()?, seq)))?
}

/// One client to open.
struct ClientSpec {
    url: String,
    tidings: bool,
    /// Expected to receive every notification (hot, or `all` mode).
    wanted: bool,
    instance: usize,
}

struct Shared {
    /// Notifications every client expects.
    messages: usize,
    /// Each client's WebSocket read buffer.
    read_buffer: usize,
    done: AtomicUsize,
    ready: AtomicUsize,
    progress: AtomicU64,
}

async fn client(
    spec: ClientSpec,
    shared: Arc<Shared>,
    connect: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
) -> ClientResult {
    let ClientSpec { url, tidings, wanted, instance } = spec;
    let (messages, read_buffer) = (shared.messages, shared.read_buffer);
    let mut r = ClientResult { wanted, instance, ..Default::default() };
    let permit = connect.acquire().await;
    let config = WebSocketConfig::default().read_buffer_size(read_buffer);
    let connected = tokio::time::timeout(
        Duration::from_secs(30),
        tokio_tungstenite::connect_async_with_config(url.as_str(), Some(config), true),
    )
    .await;
    let mut ws = match connected {
        Ok(Ok((ws, _))) => ws,
        Ok(Err(e)) => {
            eprintln!("connect failed: {e}");
            return r;
        }
        Err(_) => {
            eprintln!("connect timed out");
            return r;
        }
    };
    if tidings {
        // The hello frame: the session is registered once it is sent.
        match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) if t.contains("\"hello\"") => {}
            other => {
                eprintln!("no hello: {other:?}");
                return r;
            }
        }
    }
    drop(permit);
    r.connected = true;
    shared.ready.fetch_add(1, Ordering::SeqCst);
    if wanted {
        r.recv = vec![0; messages];
        r.sent = vec![0; messages];
    }
    let mut last_i: i64 = -1;
    let mut last_cursor: Option<(CursorForm, u64, u64)> = None;
    let mut resync_pending = false;
    let mut finished = false;
    // Created once: re-creating it per frame (a `Notified` registered and
    // dropped every time) was a visible per-frame cost.
    let stopped = stop.changed();
    tokio::pin!(stopped);
    loop {
        let msg = tokio::select! {
            biased;
            msg = ws.next() => msg,
            _ = &mut stopped => break,
        };
        let now = unix_nanos();
        let text = match msg {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
            Some(Ok(_)) => continue,
        };
        let Some(frame) = scan(text.as_bytes()) else {
            continue;
        };
        match (frame.kind, frame.data) {
            (Some(b"resync"), _) => {
                r.resyncs += 1;
                resync_pending = true;
            }
            (None, Some(data)) if wanted && frame.collection == Some(b"hot") => {
                let i = data.i as usize;
                if i >= messages {
                    continue;
                }
                if r.recv[i] != 0 {
                    r.duplicates += 1;
                    continue;
                }
                r.recv[i] = now;
                r.sent[i] = data.t;
                r.received += 1;
                if tidings {
                    match frame_cursor(text.as_bytes()) {
                        Some(c) => {
                            r.cursor_forms |= if c.0 == CursorForm::Epoch { 1 } else { 2 };
                            if last_cursor.is_some_and(|l| l.0 == c.0 && (l.1, l.2) >= (c.1, c.2)) {
                                r.cursor_regressions += 1;
                            }
                            last_cursor = Some(c);
                        }
                        None => r.cursor_regressions += 1,
                    }
                }
                shared.progress.fetch_add(1, Ordering::Relaxed);
                let gap = (i as i64 - last_i - 1).max(0) as u64;
                if resync_pending {
                    r.covered += gap;
                } else {
                    r.silent += gap;
                }
                resync_pending = false;
                last_i = last_i.max(i as i64);
                if i + 1 == messages && !finished {
                    finished = true;
                    shared.done.fetch_add(1, Ordering::SeqCst);
                }
            }
            (None, Some(_)) => r.unwanted += 1,
            _ => {}
        }
    }
    if wanted {
        let tail = (messages as i64 - last_i - 1).max(0) as u64;
        if resync_pending {
            r.covered += tail;
        } else {
            r.silent += tail;
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
    r
}

struct Row {
    imp: String,
    clients: usize,
    connected: usize,
    messages: usize,
    deliveries: u64,
    expected: u64,
    deliveries_per_s: f64,
    lat_p50_us: f64,
    lat_p99_us: f64,
    lat_max_us: f64,
    caller_p50_ns: u64,
    caller_p99_ns: u64,
    rss_idle_kib: u64,
    rss_per_session_kib: f64,
    rss_after_kib: u64,
    /// Server CPU during emit + delivery, and the driver's (clients').
    server_cpu_ms: u64,
    driver_cpu_ms: u64,
    /// Busy and total (busy + idle) CPU time of the machine, all cores.
    machine_busy_ms: u64,
    machine_total_ms: u64,
    /// Time from the first to the last emit.
    emit_span_ms: f64,
    lost: u64,
    covered: u64,
    silent: u64,
    resyncs: u64,
    unwanted: u64,
    duplicates: u64,
    /// CPU of the local `redis-server` / `postgres` processes over the span.
    engine_cpu_ms: u64,
    cursor_forms: u8,
    cursor_regressions: u64,
    /// Per instance, with two or more.
    splits: Vec<Split>,
}

async fn run(args: Args) -> Result<(), Error> {
    if let Some(limit) = nofile_soft_limit()
        && limit < (args.clients as u64 + 64)
    {
        eprintln!(
            "warning: open file limit is {limit}, below {} clients: run `ulimit -n 65536` first",
            args.clients
        );
    }
    let imps: Vec<&str> = match args.imp.as_str() {
        "both" => vec!["tidings", "baseline"],
        one => vec![one],
    };
    if args.backplane.as_deref().is_some_and(|u| u.starts_with("postgres")) && args.size > 7000 {
        eprintln!(
            "warning: PostgreSQL refuses NOTIFY payloads of 8000 bytes or more: keep --size small (e.g. 100)"
        );
    }
    println!(
        "clients={} messages={} size={}B mode={} subscribed={} replay={} cpus={} driver-threads={} client-read-buffer={}B server-nodelay={} backplane={} instances={}",
        args.clients,
        args.messages,
        args.size,
        if args.paced { format!("paced({}us)", args.pace_us) } else { "burst".into() },
        if args.ten_pct { "10pct" } else { "all" },
        args.replay,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        args.driver_threads.max(1),
        args.client_read_buffer,
        if args.nodelay { "on" } else { "off" },
        args.backplane.as_deref().unwrap_or("none"),
        if args.backplane.is_some() { args.instances } else { 1 },
    );
    let mut rows = Vec::new();
    for imp in imps {
        match tokio::time::timeout(OVERALL_TIMEOUT + Duration::from_secs(30), run_one(&args, imp)).await {
            Ok(Ok(row)) => rows.push(row),
            Ok(Err(e)) => eprintln!("{imp}: failed: {e}"),
            Err(_) => eprintln!("{imp}: timed out"),
        }
        // Let the sockets of this run close before the next one.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    print_rows(&args, &rows);
    Ok(())
}

/// (busy, busy + idle) clock ticks of all CPUs, from the first line of
/// `/proc/stat`.
fn machine_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let total: u64 = f.iter().sum();
    let idle = f.get(3).copied().unwrap_or(0) + f.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

fn nofile_soft_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// A server child process and the address it listens on.
struct Server {
    child: tokio::process::Child,
    addr: String,
}

async fn spawn_server(args: &Args, imp: &str, backplane_name: &str) -> Result<Server, Error> {
    let mut cmd = tokio::process::Command::new(std::env::current_exe()?);
    cmd.args([
        "server",
        "--addr",
        "127.0.0.1:0",
        "--impl",
        imp,
        "--replay",
        &args.replay.to_string(),
        "--nodelay",
        if args.nodelay { "on" } else { "off" },
    ]);
    if let Some(url) = &args.backplane {
        cmd.args(["--backplane", url, "--backplane-name", backplane_name]);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .map_err(|_| "server did not start")??
        .ok_or("server exited")?;
    let addr = line
        .strip_prefix("listening on http://")
        .ok_or_else(|| format!("unexpected server output: {line}"))?
        .to_owned();
    Ok(Server { child, addr })
}

async fn stop_server(mut server: Server) {
    drop(server.child.stdin.take()); // the server exits when its stdin closes
    if tokio::time::timeout(Duration::from_secs(5), server.child.wait()).await.is_err() {
        let _ = server.child.kill().await;
    }
}

/// The row label: `tidings`, or `tidings redis x2` through a backplane.
fn label(args: &Args, imp: &str) -> String {
    match &args.backplane {
        None => imp.to_owned(),
        Some(url) => {
            let scheme = url.split_once("://").map_or(url.as_str(), |(s, _)| s);
            format!("{imp} {scheme} x{}", args.instances)
        }
    }
}

async fn run_one(args: &Args, imp: &str) -> Result<Row, Error> {
    let started = Instant::now();
    let deadline = started + OVERALL_TIMEOUT;
    // Every instance of this run gets the same stream key / channel.
    let name = args.backplane_name.clone().unwrap_or_else(unique_name);
    let instances = if args.backplane.is_some() { args.instances } else { 1 };
    let mut servers = Vec::with_capacity(instances);
    let mut spawned = Ok(());
    for _ in 0..instances {
        match spawn_server(args, imp, &name).await {
            Ok(s) => servers.push(s),
            Err(e) => {
                spawned = Err(e);
                break;
            }
        }
    }
    let result = match spawned {
        Ok(()) => {
            let addrs: Vec<String> = servers.iter().map(|s| s.addr.clone()).collect();
            drive(args, imp, &addrs, deadline).await
        }
        Err(e) => Err(e),
    };
    for s in servers {
        stop_server(s).await;
    }
    if args.backplane_name.is_none()
        && let Some(url) = &args.backplane
    {
        drop_stream(url, &name).await;
    }
    result
}

/// Deletes the Redis stream a run created under its own unique key
/// (PostgreSQL channels leave nothing behind).
#[cfg(feature = "redis")]
async fn drop_stream(url: &str, key: &str) {
    if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
        return;
    }
    let del = async {
        let client = redis::Client::open(url)?;
        let mut c = client.get_multiplexed_async_connection().await?;
        redis::cmd("DEL").arg(key).query_async::<()>(&mut c).await
    };
    match tokio::time::timeout(Duration::from_secs(5), del).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("could not delete the stream {key}: {e}"),
        Err(_) => eprintln!("could not delete the stream {key}: timed out"),
    }
}

#[cfg(not(feature = "redis"))]
async fn drop_stream(_url: &str, _key: &str) {}

/// `/stats` of every instance, in order.
async fn stats_all(addrs: &[String], limit: Duration) -> Result<Vec<Stats>, Error> {
    let mut all = Vec::with_capacity(addrs.len());
    for addr in addrs {
        all.push(http_json(addr, "GET", "/stats", limit).await?);
    }
    Ok(all)
}

/// Sums of RSS, sessions and CPU over the instances.
fn total(all: &[Stats]) -> Stats {
    Stats {
        rss_kib: all.iter().map(|s| s.rss_kib).sum(),
        sessions: all.iter().map(|s| s.sessions).sum(),
        cpu_ms: all.iter().map(|s| s.cpu_ms).sum(),
        cursor: String::new(),
        status: all.first().map(|s| s.status.clone()).unwrap_or_default(),
    }
}

/// Through a backplane, before any client connects: one notification emitted
/// on instance A (collection `warmup`) must move the cursor of every
/// instance, so that publisher and subscribers are connected (PostgreSQL's
/// LISTEN in particular) before anything is measured.
async fn warm_up(addrs: &[String], limit: Duration) -> Result<(), Error> {
    let before = stats_all(addrs, limit).await?;
    let _: EmitReport = http_json(&addrs[0], "POST", "/emit?count=1&size=0&collection=warmup", limit).await?;
    let start = Instant::now();
    loop {
        let now = stats_all(addrs, limit).await?;
        if now.iter().zip(&before).all(|(n, b)| n.cursor != b.cursor) {
            for (k, s) in now.iter().enumerate() {
                eprintln!("instance {}: backplane {}, cursor {}", instance_name(k), s.status, s.cursor);
            }
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(15) {
            let states: Vec<String> = now.iter().map(|s| format!("{} ({})", s.cursor, s.status)).collect();
            return Err(format!("warm-up notification did not reach every instance: {states:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn instance_name(k: usize) -> char {
    (b'A' + (k as u8).min(25)) as char
}

/// CPU time (ms) of the backplane engines on this machine (processes named
/// `redis-server` or `postgres`), from `/proc/<pid>/stat`: part of the
/// system under test, so the report separates it from other processes.
fn engine_cpu_ms() -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut ticks = 0;
    for entry in dir.flatten() {
        let name = entry.file_name();
        if !name.to_str().is_some_and(|n| n.bytes().all(|c| c.is_ascii_digit())) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let comm = head.split_once('(').map_or("", |(_, c)| c);
        if comm != "redis-server" && comm != "postgres" {
            continue;
        }
        let f: Vec<u64> = rest.split_whitespace().map(|x| x.parse().unwrap_or(0)).collect();
        ticks += f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    }
    ticks * 10
}

/// Server `/stats` at the three points of a run, summed over the instances,
/// and per instance at the last two.
struct Snapshots {
    before: Stats,
    idle: Stats,
    after: Stats,
    idle_each: Vec<Stats>,
    after_each: Vec<Stats>,
}

async fn drive(args: &Args, imp: &str, addrs: &[String], deadline: Instant) -> Result<Row, Error> {
    let tidings = imp == "tidings";
    let label = label(args, imp);
    let ctl = Duration::from_secs(10);
    let emitter = addrs[0].clone();
    // Let the servers settle, then measure their memory without sessions.
    tokio::time::sleep(Duration::from_millis(300)).await;
    if args.backplane.is_some() {
        warm_up(addrs, ctl).await?;
    }
    let before = total(&stats_all(addrs, ctl).await?);

    let shared = Arc::new(Shared {
        messages: args.messages,
        read_buffer: args.client_read_buffer,
        done: AtomicUsize::new(0),
        ready: AtomicUsize::new(0),
        progress: AtomicU64::new(0),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let connect = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
    let mut tasks = Vec::with_capacity(args.clients);
    let mut wanted_clients = 0usize;
    for n in 0..args.clients {
        let hot = !args.ten_pct || n % 10 == 0;
        // Clients alternate between the instances: half on A, half on B.
        let instance = n % addrs.len();
        let addr = &addrs[instance];
        let url = if !args.ten_pct {
            format!("ws://{addr}/ws")
        } else if tidings {
            let c = if hot { "hot" } else { "cold" };
            format!("ws://{addr}/ws?collections={c}")
        } else {
            // The baseline has no filtering: every client gets everything
            // and the cold ones drop it on receipt.
            format!("ws://{addr}/ws")
        };
        wanted_clients += hot as usize;
        let spec = ClientSpec { url, tidings, wanted: hot, instance };
        tasks.push(tokio::spawn(client(spec, shared.clone(), connect.clone(), stop_rx.clone())));
    }
    // Wait until every client is connected and the servers count them all.
    let connect_start = Instant::now();
    let mut connected_sessions = 0;
    loop {
        let ready = shared.ready.load(Ordering::SeqCst);
        let finished = tasks.iter().filter(|t| t.is_finished()).count();
        if ready + finished >= args.clients {
            let s = total(&stats_all(addrs, ctl).await?);
            connected_sessions = s.sessions;
            if s.sessions >= ready {
                break;
            }
        }
        if Instant::now() > deadline || connect_start.elapsed() > Duration::from_secs(60) {
            eprintln!("{label}: only {} of {} clients connected", ready, args.clients);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let connect_time = connect_start.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_each = stats_all(addrs, ctl).await?;
    let idle = total(&idle_each);
    let driver_cpu_before = cpu_ms();
    let machine_before = machine_ticks();
    let engine_before = engine_cpu_ms();
    let ready = shared.ready.load(Ordering::SeqCst);
    eprintln!(
        "{label}: {ready} clients connected in {:.1} s, server sessions {} ({}), rss {} -> {} KiB",
        connect_time.as_secs_f64(),
        connected_sessions.max(idle.sessions),
        idle_each
            .iter()
            .enumerate()
            .map(|(k, s)| format!("{}: {}", instance_name(k), s.sessions))
            .collect::<Vec<_>>()
            .join(", "),
        before.rss_kib,
        idle.rss_kib
    );

    // Emit, on instance A only.
    let pace_us = if args.paced { args.pace_us } else { 0 };
    let path = format!("/emit?count={}&size={}&collection=hot&pace_us={}", args.messages, args.size, pace_us);
    let emit_limit = deadline.saturating_duration_since(Instant::now());
    let emit =
        tokio::spawn(async move { http_json::<EmitReport>(&emitter, "POST", &path, emit_limit).await });
    let mut emit_report: Option<EmitReport> = None;
    let mut emit_task = Some(emit);
    let mut last_progress = (0, Instant::now());
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if let Some(task) = emit_task.as_ref()
            && task.is_finished()
        {
            let task = emit_task.take().ok_or("emit task")?;
            emit_report = Some(task.await??);
            last_progress.1 = Instant::now();
        }
        let progress = shared.progress.load(Ordering::Relaxed);
        if progress != last_progress.0 {
            last_progress = (progress, Instant::now());
        }
        let done = shared.done.load(Ordering::SeqCst);
        let wanted_ready = if args.ten_pct { wanted_clients.min(ready) } else { ready };
        if emit_report.is_some() && done >= wanted_ready {
            break;
        }
        if emit_report.is_some() && last_progress.1.elapsed() > QUIET_TIMEOUT {
            eprintln!("{label}: no progress for {QUIET_TIMEOUT:?}, counting the rest as lost");
            break;
        }
        if Instant::now() > deadline {
            eprintln!("{label}: overall timeout, counting the rest as lost");
            break;
        }
    }
    // Give cold (baseline) clients a moment to drain what they are sent.
    if args.ten_pct && !tidings {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let after_each = stats_all(addrs, ctl).await.unwrap_or_default();
    let after = total(&after_each);
    let driver_cpu = cpu_ms().saturating_sub(driver_cpu_before);
    let machine_after = machine_ticks();
    let engine_cpu = engine_cpu_ms().saturating_sub(engine_before);
    let _ = stop_tx.send(true);
    let emit = match emit_report {
        Some(r) => r,
        None => match emit_task {
            Some(t) => tokio::time::timeout(Duration::from_secs(10), t)
                .await
                .map_err(|_| "emit did not return")???,
            None => EmitReport::default(),
        },
    };
    let mut results = Vec::with_capacity(tasks.len());
    for t in tasks {
        if let Ok(Ok(r)) = tokio::time::timeout(Duration::from_secs(10), t).await {
            results.push(r);
        }
    }
    let snapshots = Snapshots { before, idle, after, idle_each, after_each };
    let mut row = summarize(&label, args, &results, &emit, &snapshots);
    row.driver_cpu_ms = driver_cpu;
    row.engine_cpu_ms = engine_cpu;
    // Busy CPU time of the whole machine over the same span, in ms: what is
    // neither server nor driver (nor the backplane engine) is someone
    // else's (the machine is shared).
    row.machine_busy_ms = machine_after.0.saturating_sub(machine_before.0) * 10;
    row.machine_total_ms = machine_after.1.saturating_sub(machine_before.1) * 10;
    row.emit_span_ms = emit.last_emit_ns.saturating_sub(emit.first_emit_ns) as f64 / 1e6;
    Ok(row)
}

/// Fan-out latencies (ns, sorted) of the notifications received by any of
/// `results`: latest receipt over those clients − emit time; and the latest
/// receipt of all.
fn fan_out<'a>(results: impl Iterator<Item = &'a ClientResult>, m: usize) -> (Vec<u64>, u64) {
    let mut last_recv = vec![0u64; m];
    let mut sent = vec![0u64; m];
    let mut max_recv = 0u64;
    for r in results.filter(|r| r.wanted && r.connected) {
        for i in 0..m {
            if r.recv[i] != 0 {
                last_recv[i] = last_recv[i].max(r.recv[i]);
                sent[i] = r.sent[i];
                max_recv = max_recv.max(r.recv[i]);
            }
        }
    }
    let mut lat: Vec<u64> =
        (0..m).filter(|&i| last_recv[i] != 0).map(|i| last_recv[i].saturating_sub(sent[i])).collect();
    lat.sort_unstable();
    (lat, max_recv)
}

/// The figures of the clients connected to one instance.
struct Split {
    instance: usize,
    clients: usize,
    deliveries: u64,
    expected: u64,
    lat_p50_us: f64,
    lat_p99_us: f64,
    lat_max_us: f64,
    server_cpu_ms: u64,
}

fn summarize(
    label: &str,
    args: &Args,
    results: &[ClientResult],
    emit: &EmitReport,
    snaps: &Snapshots,
) -> Row {
    let (before, idle, after) = (&snaps.before, &snaps.idle, &snaps.after);
    let m = args.messages;
    let mut row = Row {
        imp: label.to_owned(),
        clients: args.clients,
        connected: results.iter().filter(|r| r.connected).count(),
        messages: m,
        deliveries: 0,
        expected: 0,
        deliveries_per_s: 0.0,
        lat_p50_us: 0.0,
        lat_p99_us: 0.0,
        lat_max_us: 0.0,
        caller_p50_ns: emit.caller_p50_ns,
        caller_p99_ns: emit.caller_p99_ns,
        rss_idle_kib: before.rss_kib,
        rss_per_session_kib: 0.0,
        rss_after_kib: after.rss_kib,
        server_cpu_ms: after.cpu_ms.saturating_sub(idle.cpu_ms),
        driver_cpu_ms: 0,
        machine_busy_ms: 0,
        machine_total_ms: 0,
        emit_span_ms: 0.0,
        lost: 0,
        covered: 0,
        silent: 0,
        resyncs: 0,
        unwanted: 0,
        duplicates: 0,
        engine_cpu_ms: 0,
        cursor_forms: results.iter().fold(0, |f, r| f | r.cursor_forms),
        cursor_regressions: results.iter().map(|r| r.cursor_regressions).sum(),
        splits: Vec::new(),
    };
    // Every client that should have received the notifications counts,
    // including those that failed to connect (all lost).
    for r in results.iter().filter(|r| r.wanted) {
        row.expected += m as u64;
        row.deliveries += r.received;
        row.resyncs += r.resyncs;
        row.unwanted += r.unwanted;
        row.duplicates += r.duplicates;
        if !r.connected {
            row.silent += m as u64;
            continue;
        }
        row.covered += r.covered;
        row.silent += r.silent;
    }
    row.unwanted += results.iter().filter(|r| !r.wanted).map(|r| r.unwanted).sum::<u64>();
    row.lost = row.expected - row.deliveries;
    let (lat, max_recv) = fan_out(results.iter(), m);
    row.lat_p50_us = percentile(&lat, 50.0) as f64 / 1e3;
    row.lat_p99_us = percentile(&lat, 99.0) as f64 / 1e3;
    row.lat_max_us = lat.last().copied().unwrap_or(0) as f64 / 1e3;
    if max_recv > emit.first_emit_ns && emit.first_emit_ns != 0 {
        row.deliveries_per_s = row.deliveries as f64 / ((max_recv - emit.first_emit_ns) as f64 / 1e9);
    }
    if idle.sessions > 0 {
        row.rss_per_session_kib = idle.rss_kib.saturating_sub(before.rss_kib) as f64 / idle.sessions as f64;
    }
    if snaps.idle_each.len() > 1 {
        for (k, (i, a)) in snaps.idle_each.iter().zip(&snaps.after_each).enumerate() {
            let mine = || results.iter().filter(move |r| r.instance == k);
            let (lat, _) = fan_out(mine(), m);
            row.splits.push(Split {
                instance: k,
                clients: mine().filter(|r| r.connected).count(),
                deliveries: mine().filter(|r| r.wanted).map(|r| r.received).sum(),
                expected: mine().filter(|r| r.wanted).count() as u64 * m as u64,
                lat_p50_us: percentile(&lat, 50.0) as f64 / 1e3,
                lat_p99_us: percentile(&lat, 99.0) as f64 / 1e3,
                lat_max_us: lat.last().copied().unwrap_or(0) as f64 / 1e3,
                server_cpu_ms: a.cpu_ms.saturating_sub(i.cpu_ms),
            });
        }
    }
    row
}

fn print_rows(args: &Args, rows: &[Row]) {
    println!();
    println!(
        "| impl | clients (connected) | deliveries / expected | deliveries/s | fan-out p50 | fan-out p99 | fan-out max | caller p50 | caller p99 | RSS base | RSS/idle session | lost (resync-covered / silent) | resyncs |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} ({}) | {} / {} | {:.0} | {:.1} ms | {:.1} ms | {:.1} ms | {} ns | {} ns | {:.1} MiB | {:.1} KiB | {} ({} / {}) | {} |",
            r.imp,
            r.clients,
            r.connected,
            r.deliveries,
            r.expected,
            r.deliveries_per_s,
            r.lat_p50_us / 1e3,
            r.lat_p99_us / 1e3,
            r.lat_max_us / 1e3,
            r.caller_p50_ns,
            r.caller_p99_ns,
            r.rss_idle_kib as f64 / 1024.0,
            r.rss_per_session_kib,
            r.lost,
            r.covered,
            r.silent,
            r.resyncs,
        );
    }
    for r in rows {
        if r.unwanted > 0 || r.duplicates > 0 {
            println!(
                "{}: {} frames received and dropped by clients that did not want them{}; duplicates {}",
                r.imp,
                r.unwanted,
                if args.ten_pct && r.imp == "baseline" {
                    " (the baseline has no server-side filtering: clients filter on receipt)"
                } else {
                    ""
                },
                r.duplicates
            );
        }
        println!(
            "{}: server RSS after the run {:.1} MiB; {} messages per client; CPU from emit to \
             the last delivery: server {} ms ({:.2} us/delivery), driver {} ms ({:.2} us/delivery), \
             backplane engine (redis-server/postgres processes) {} ms, \
             whole machine {} of {} ms busy, so {} ms by other processes (10 ms ticks); \
             emits spanned {:.1} ms",
            r.imp,
            r.rss_after_kib as f64 / 1024.0,
            r.messages,
            r.server_cpu_ms,
            r.server_cpu_ms as f64 * 1e3 / r.deliveries.max(1) as f64,
            r.driver_cpu_ms,
            r.driver_cpu_ms as f64 * 1e3 / r.deliveries.max(1) as f64,
            r.engine_cpu_ms,
            r.machine_busy_ms,
            r.machine_total_ms,
            r.machine_busy_ms.saturating_sub(r.server_cpu_ms + r.driver_cpu_ms + r.engine_cpu_ms),
            r.emit_span_ms,
        );
        if r.cursor_forms != 0 {
            let forms = match r.cursor_forms {
                1 => "<8 hex>-<seq>",
                2 => "Redis stream ids <ms>-<seq>",
                _ => "both <8 hex>-<seq> and stream ids",
            };
            println!(
                "{}: cursors {forms}; frames whose cursor did not move forward: {} \
                 (losses are counted by payload index and resync frames, for either form)",
                r.imp, r.cursor_regressions
            );
        }
        for s in &r.splits {
            println!(
                "{}: instance {}{}: {} clients, deliveries {} / {}, fan-out p50 {:.1} ms, p99 {:.1} ms, \
                 max {:.1} ms, server CPU {} ms",
                r.imp,
                instance_name(s.instance),
                if s.instance == 0 { " (emits)" } else { "" },
                s.clients,
                s.deliveries,
                s.expected,
                s.lat_p50_us / 1e3,
                s.lat_p99_us / 1e3,
                s.lat_max_us / 1e3,
                s.server_cpu_ms,
            );
        }
    }
    let by: HashMap<&str, &Row> = rows.iter().map(|r| (r.imp.as_str(), r)).collect();
    if let (Some(t), Some(b)) = (by.get("tidings"), by.get("baseline")) {
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
        println!(
            "ratio tidings/baseline: deliveries/s {:.2}x, fan-out latency p50 {:.2}x, p99 {:.2}x, RSS/session {:.2}x",
            ratio(t.deliveries_per_s, b.deliveries_per_s),
            ratio(t.lat_p50_us, b.lat_p50_us),
            ratio(t.lat_p99_us, b.lat_p99_us),
            ratio(t.rss_per_session_kib, b.rss_per_session_kib),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::{CursorForm, frame_cursor, scan};

    #[test]
    fn frame_cursor_reads_both_forms() {
        let e = frame_cursor(
            br#"{"collection":"hot","op":"insert","data":{"t":1,"i":2},"cursor":"00000abc-43"}"#,
        );
        assert_eq!(e, Some((CursorForm::Epoch, 0xabc, 43)));
        let r = frame_cursor(
            br#"{"collection":"hot","op":"insert","data":{"t":1,"i":2},"cursor":"1732380000000-7"}"#,
        );
        assert_eq!(r, Some((CursorForm::Stream, 1_732_380_000_000, 7)));
        assert_eq!(frame_cursor(br#"{"collection":"hot","op":"insert"}"#), None);
    }

    #[test]
    fn scan_reads_both_layouts_and_falls_back() {
        let t = scan(br#"{"collection":"hot","op":"insert","data":{"t":1700000000123456789,"i":42,"pad":"xx"},"cursor":"00000abc-43"}"#).unwrap();
        assert_eq!((t.kind, t.collection), (None, Some(&b"hot"[..])));
        let d = t.data.unwrap();
        assert_eq!((d.t, d.i), (1700000000123456789, 42));
        let b = scan(br#"{"collection":"cold","op":"insert","data":{"t":5,"i":0,"pad":""}}"#).unwrap();
        assert_eq!(b.collection, Some(&b"cold"[..]));
        assert_eq!(b.data.unwrap().i, 0);
        let r = scan(br#"{"type":"resync","cursor":"00000abc-9"}"#).unwrap();
        assert_eq!(r.kind, Some(&b"resync"[..]));
        // Another field order: the JSON fallback.
        let o = scan(br#"{"op":"insert","collection":"hot","data":{"i":3,"t":4}}"#).unwrap();
        let d = o.data.unwrap();
        assert_eq!((o.collection, d.t, d.i), (Some(&b"hot"[..]), 4, 3));
        assert!(scan(b"not json").is_none());
    }
}
