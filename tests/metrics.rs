//! The forums example's `/metrics`, scraped after a scenario: WebSocket and
//! SSE sessions connect, writes are delivered, connections are refused, a
//! client resumes with a cursor that cannot be placed (a `resync`), and a
//! session closes. Each named series must show exactly what happened.
//!
//! The example runs as its own process (the `metrics` recorder is global to
//! a process), with its default outbox on a fresh SQLite file.
#![cfg(feature = "outbox")]

mod common;

use std::net::SocketAddr;

use common::example::{Example, fresh_dir, remove_dir};
use common::{Client, LIMIT};
use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;

fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().timeout(LIMIT).build().unwrap()
}

async fn create_forum(addr: SocketAddr, title: &str) {
    let response = http()
        .post(format!("http://{addr}/api/forums"))
        .json(&json!({ "title": title }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "creating a forum");
}

/// One scrape of `/metrics`, in the Prometheus text format.
struct Scrape(String);

impl Scrape {
    async fn take(addr: SocketAddr) -> Scrape {
        let response = http().get(format!("http://{addr}/metrics")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        Scrape(response.text().await.unwrap())
    }

    /// The value of the series `name` whose labels include `labels`; 0 when
    /// no such series was ever recorded (what Prometheus would assume for a
    /// counter).
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let mut found = None;
        for line in self.0.lines().filter(|l| !l.starts_with('#')) {
            let Some((series, value)) = line.rsplit_once(' ') else { continue };
            let (series_name, series_labels) = series.split_once('{').unwrap_or((series, ""));
            if series_name != name
                || !labels.iter().all(|(k, v)| series_labels.contains(&format!("{k}=\"{v}\"")))
            {
                continue;
            }
            assert!(found.is_none(), "more than one series matches {name} {labels:?}:\n{}", self.0);
            found = Some(value.parse::<f64>().unwrap());
        }
        found.unwrap_or(0.0)
    }

    fn has_help(&self, name: &str) -> bool {
        self.0.lines().any(|l| l.starts_with(&format!("# HELP {name} ")))
    }
}

/// Scrapes until `done` holds (the server counts some things after the
/// client saw them: a session closing, the count of a batch after its
/// flush), at most 50 times over `LIMIT`; returns the last scrape either way
/// for the assertions to explain.
async fn scrape_until(addr: SocketAddr, done: impl Fn(&Scrape) -> bool) -> Scrape {
    let mut scrape = Scrape::take(addr).await;
    for _ in 0..50 {
        if done(&scrape) {
            break;
        }
        tokio::time::sleep(LIMIT / 50).await;
        scrape = Scrape::take(addr).await;
    }
    scrape
}

/// An SSE session over a raw HTTP/1.0 connection (the body is the stream
/// itself, not chunked).
struct Sse {
    lines: tokio::io::Lines<BufReader<TcpStream>>,
}

impl Sse {
    async fn open(addr: SocketAddr) -> Sse {
        let mut socket = TcpStream::connect(addr).await.unwrap();
        let request = format!("GET /events HTTP/1.0\r\nhost: {addr}\r\naccept: text/event-stream\r\n\r\n");
        socket.write_all(request.as_bytes()).await.unwrap();
        let mut lines = BufReader::new(socket).lines();
        let status = timeout(LIMIT, lines.next_line()).await.unwrap().unwrap().unwrap();
        assert!(status.contains(" 200 "), "{status}");
        Sse { lines }
    }

    /// The data of the next event (heartbeats and other fields skipped).
    async fn next_data(&mut self) -> Value {
        for _ in 0..1000 {
            let line = timeout(LIMIT, self.lines.next_line()).await.expect("no SSE event in time").unwrap();
            let line = line.expect("the SSE stream ended");
            if let Some(data) = line.strip_prefix("data: ").or_else(|| line.strip_prefix("data:")) {
                return serde_json::from_str(data).unwrap();
            }
        }
        panic!("no data line in 1000 lines");
    }
}

/// A WebSocket upgrade request that `admit` refuses or the handshake
/// rejects, made over plain HTTP; returns the status.
async fn refused_upgrade(addr: SocketAddr, headers: &[(&str, &str)]) -> u16 {
    let mut request = http().get(format!("http://{addr}/ws"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap().status().as_u16()
}

const WS: (&str, &str) = ("transport", "ws");
const SSE: (&str, &str) = ("transport", "sse");

#[tokio::test]
async fn the_example_shows_each_named_series_at_metrics() {
    let dir = fresh_dir("metrics");
    let example = Example::start_in(&dir, &["--backplane", "outbox"]).await;
    let addr = example.addr;

    // Two WebSocket sessions and one SSE session receive three writes.
    let mut a = Client::connect(addr, "").await;
    let mut b = Client::connect(addr, "").await;
    let mut sse = Sse::open(addr).await;
    assert_eq!(sse.next_data().await["type"], "hello");
    for title in ["one", "two", "three"] {
        create_forum(addr, title).await;
    }
    for _ in 0..3 {
        for client in [&mut a, &mut b] {
            assert_eq!(client.next_json().await["op"], "insert");
        }
        assert_eq!(sse.next_data().await["op"], "insert");
    }

    // Refused: not an upgrade at all; an upgrade from a foreign origin.
    assert_eq!(refused_upgrade(addr, &[]).await, 400);
    let upgrade = [
        ("connection", "upgrade"),
        ("upgrade", "websocket"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("origin", "http://elsewhere.example"),
    ];
    assert_eq!(refused_upgrade(addr, &upgrade).await, 403);

    // A cursor the history cannot place: hello, then resync.
    let mut c = Client::connect(addr, "cursor=not-a-cursor").await;
    assert_eq!(c.next_json().await["type"], "resync");

    let expected_frames = |s: &Scrape| {
        // a, b: hello + 3; c: hello + resync. sse: hello + 3.
        s.value("tidings_frames_delivered_total", &[WS]) == 10.0
            && s.value("tidings_frames_delivered_total", &[SSE]) == 4.0
            && s.value("tidings_outbox_rows_total", &[("stage", "read")]) == 3.0
    };
    let s = scrape_until(addr, expected_frames).await;
    assert_eq!(s.value("tidings_sessions", &[WS]), 3.0, "{}", s.0);
    assert_eq!(s.value("tidings_sessions", &[SSE]), 1.0);
    assert_eq!(s.value("tidings_notifications_emitted_total", &[]), 3.0, "the three writes");
    assert_eq!(s.value("tidings_frames_delivered_total", &[WS]), 10.0, "{}", s.0);
    assert_eq!(s.value("tidings_frames_delivered_total", &[SSE]), 4.0);
    assert_eq!(s.value("tidings_resyncs_total", &[("cause", "resume")]), 1.0);
    assert_eq!(s.value("tidings_resyncs_total", &[("cause", "lagged")]), 0.0);
    assert_eq!(s.value("tidings_resyncs_total", &[("cause", "interrupted")]), 0.0);
    let refused = |reason| s.value("tidings_refused_connections_total", &[WS, ("reason", reason)]);
    assert_eq!(refused("not_websocket"), 1.0);
    assert_eq!(refused("origin_not_allowed"), 1.0);
    assert_eq!(s.value("tidings_slow_reader_closes_total", &[]), 0.0);
    assert_eq!(s.value("tidings_outbox_rows_total", &[("stage", "relayed")]), 3.0);
    assert_eq!(s.value("tidings_outbox_rows_total", &[("stage", "read")]), 3.0);
    assert_eq!(s.value("tidings_backplane_errors_total", &[("backplane", "outbox")]), 0.0);
    // One latency sample per written batch that carried a notification:
    // each of a, b and the SSE session wrote 1 to 3 such batches.
    let samples = s.value("tidings_delivery_latency_seconds_count", &[WS]);
    assert!((2.0..=6.0).contains(&samples), "{samples} samples\n{}", s.0);
    assert!((1.0..=3.0).contains(&s.value("tidings_delivery_latency_seconds_count", &[SSE])));
    let total = s.value("tidings_delivery_latency_seconds_sum", &[WS]);
    assert!(total > 0.0 && total < samples * LIMIT.as_secs_f64(), "sum {total} s over {samples} samples");
    let bucket = s.value("tidings_delivery_latency_seconds_bucket", &[WS, ("le", "+Inf")]);
    assert_eq!(bucket, samples, "a histogram with buckets, as the example configures");
    for name in ["tidings_sessions", "tidings_frames_delivered_total", "tidings_delivery_latency_seconds"] {
        assert!(s.has_help(name), "{name} is described");
    }

    // A session that closes leaves the gauge.
    a.ws.send(Message::Close(None)).await.unwrap();
    drop(a);
    let s = scrape_until(addr, |s| s.value("tidings_sessions", &[WS]) == 2.0).await;
    assert_eq!(s.value("tidings_sessions", &[WS]), 2.0, "{}", s.0);

    drop((b, c, sse));
    example.stop().await;
    remove_dir(&dir);
}
