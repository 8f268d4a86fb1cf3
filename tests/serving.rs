//! Serving with `tidings::axum::serve`, and the forums example as a real
//! process: half-open connections are closed after the header timeout, and
//! SIGTERM closes every session with 1001 and ends the process within the
//! documented bound however many half-open connections it holds.
//!
//! The example runs as a process (see `common/example.rs`), with a fresh
//! SQLite file in a temporary directory and a free port.

mod common;

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use common::{Client, LIMIT};
use tidings::Notifier;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, timeout};

/// What a client that means to hold a connection open sends: the start of
/// a request whose headers never end.
const HALF_OPEN: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n";

/// Scheduling slack on a busy machine, on top of a documented bound.
const SLACK: Duration = Duration::from_secs(2);

/// Opens `n` connections that send part of their request headers and hold.
async fn hold_half_open(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        let mut tcp = timeout(LIMIT, TcpStream::connect(addr)).await.unwrap().unwrap();
        tcp.write_all(HALF_OPEN).await.unwrap();
        held.push(tcp);
    }
    held
}

/// Waits until the server ends `tcp` (end of stream or reset), skipping
/// anything it sends first (such as a 408); panics if it stays open.
async fn expect_closed_by_server(tcp: &mut TcpStream, within: Duration) {
    let mut scratch = [0u8; 1024];
    for _ in 0..1000 {
        match timeout(within, tcp.read(&mut scratch)).await {
            Err(_) => panic!("the server kept a half-open connection for more than {within:?}"),
            Ok(Ok(0) | Err(_)) => return,
            Ok(Ok(_)) => continue,
        }
    }
    panic!("too much data on a half-open connection");
}

#[tokio::test]
async fn half_open_connections_are_closed_after_the_header_timeout() {
    const HEADER_TIMEOUT: Duration = Duration::from_millis(300);
    let notifier = Notifier::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().route("/ping", get(|| async { "pong" })).merge(tidings::axum::routes(&notifier));
    let server = tidings::axum::serve(listener, app, &notifier).header_read_timeout(HEADER_TIMEOUT);
    tokio::spawn(server.into_future());

    let opened = Instant::now();
    let mut held = hold_half_open(addr, 50).await;
    // Meanwhile complete requests are served, and sessions open.
    let http = reqwest::Client::builder().no_proxy().timeout(LIMIT).build().unwrap();
    let pong = http.get(format!("http://{addr}/ping")).send().await.unwrap().text().await.unwrap();
    assert_eq!(pong, "pong");
    let _session = Client::connect(addr, "").await;

    for tcp in &mut held {
        expect_closed_by_server(tcp, HEADER_TIMEOUT + SLACK).await;
    }
    let elapsed = opened.elapsed();
    assert!(elapsed <= HEADER_TIMEOUT + SLACK, "closed after {elapsed:?}");
    assert_eq!(notifier.session_count(), 1, "the WebSocket session is not affected");
}

#[tokio::test]
async fn a_graceful_shutdown_closes_sessions_with_1001_and_ends_within_the_shutdown_timeout() {
    const SHUTDOWN_TIMEOUT: Duration = Duration::from_millis(500);
    let notifier = Notifier::with_config(tidings::Config::default().shutdown_timeout(SHUTDOWN_TIMEOUT));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().merge(tidings::axum::routes(&notifier));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        tidings::axum::serve(listener, app, &notifier)
            .with_graceful_shutdown(async {
                stopped.await.ok();
            })
            .into_future(),
    );
    let mut sessions = vec![Client::connect(addr, "").await, Client::connect(addr, "").await];
    // The header timeout (10 s) would not end these before the shutdown does.
    let mut held = hold_half_open(addr, 20).await;

    stop.send(()).unwrap();
    let signalled = Instant::now();
    for client in &mut sessions {
        assert_eq!(u16::from(client.expect_close().await.code), 1001);
    }
    // Documented: the shutdown timeout, plus at most a second.
    let bound = SHUTDOWN_TIMEOUT + Duration::from_secs(1);
    timeout(bound + SLACK, server).await.expect("the server did not return in time").unwrap();
    let elapsed = signalled.elapsed();
    assert!(elapsed <= bound + SLACK, "returned {elapsed:?} after the signal");
    for tcp in &mut held {
        expect_closed_by_server(tcp, SLACK).await;
    }
    assert!(TcpStream::connect(addr).await.is_err(), "the listener is closed");
}

// ---- the example as a process ----------------------------------------------------------

/// What the example documents: it exits within the shutdown timeout (5 s)
/// plus at most a second after SIGTERM.
const EXIT_BOUND: Duration = Duration::from_secs(6);
/// The example in a fresh directory of its own, removed when done.
struct Example {
    running: common::example::Example,
    dir: PathBuf,
}

impl Example {
    async fn start() -> Example {
        let dir = common::example::fresh_dir("serving");
        Example { running: common::example::Example::start_in(&dir, &[]).await, dir }
    }
}

impl std::ops::Deref for Example {
    type Target = common::example::Example;
    fn deref(&self) -> &Self::Target {
        &self.running
    }
}

impl std::ops::DerefMut for Example {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.running
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        common::example::remove_dir(&self.dir);
    }
}

#[tokio::test]
async fn sigterm_closes_every_session_with_1001_and_the_example_exits_in_bounded_time() {
    let mut example = Example::start().await;
    let mut sessions = Vec::new();
    for _ in 0..3 {
        sessions.push(Client::connect(example.addr, "").await);
    }
    let _held = hold_half_open(example.addr, 50).await;

    example.terminate();
    let signalled = Instant::now();
    for client in &mut sessions {
        assert_eq!(u16::from(client.expect_close().await.code), 1001);
    }
    let status = timeout(EXIT_BOUND + SLACK, example.child.wait())
        .await
        .unwrap_or_else(|_| panic!("the example still runs {:?} after SIGTERM", EXIT_BOUND + SLACK))
        .unwrap();
    let elapsed = signalled.elapsed();
    assert!(status.success(), "the example exited with {status}");
    assert!(elapsed <= EXIT_BOUND + SLACK, "exited {elapsed:?} after SIGTERM");
}

#[tokio::test]
async fn the_examples_health_route_answers_json_even_to_other_methods() {
    let mut example = Example::start().await;
    let http = reqwest::Client::builder().no_proxy().timeout(LIMIT).build().unwrap();
    let url = format!("http://{}/health", example.addr);

    // Right after start the backplane may still be connecting (`degraded`):
    // the route answers JSON either way; wait, bounded, for `ok`. (The
    // process is another one: asking is the only way to know.)
    let mut health = serde_json::Value::Null;
    for _ in 0..100 {
        health = serde_json::from_str(&http.get(&url).send().await.unwrap().text().await.unwrap()).unwrap();
        if health["status"] == "ok" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(health["status"], "ok", "{health}");

    for method in [reqwest::Method::POST, reqwest::Method::DELETE] {
        let response = http.request(method.clone(), &url).send().await.unwrap();
        assert_eq!(response.status(), 405, "{method}");
        let text = response.text().await.unwrap();
        let body: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{method} /health: not JSON ({e}): {text:?}"));
        assert_eq!(body["code"], "method_not_allowed", "{body}");
        assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()), "{body}");
    }
    example.terminate();
    timeout(EXIT_BOUND + SLACK, example.child.wait()).await.expect("the example did not exit").unwrap();
}
