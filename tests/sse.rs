//! The Server-Sent Events transport over a real socket: same frames, same
//! cursors, resumable with Last-Event-ID, same checks as the WebSocket.

mod common;

use std::net::SocketAddr;

use common::{LIMIT, serve, serve_with, wait_sessions};
use serde_json::{Value, json};
use tidings::axum::{Rejection, Settings};
use tidings::{Config, Identity, Notifier, Notify, Op};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// A minimal SSE client: HTTP/1.0, so the body is the raw event stream.
struct EventStream {
    lines: tokio::io::Lines<BufReader<TcpStream>>,
    status: u16,
}

#[derive(Debug)]
struct SseEvent {
    id: Option<String>,
    data: Value,
}

impl EventStream {
    async fn open(addr: SocketAddr, query: &str, headers: &[(&str, &str)]) -> EventStream {
        let mut socket = TcpStream::connect(addr).await.unwrap();
        let mut request =
            format!("GET /events?{query} HTTP/1.0\r\nhost: {addr}\r\naccept: text/event-stream\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        socket.write_all(request.as_bytes()).await.unwrap();
        let mut lines = BufReader::new(socket).lines();
        let status_line = timeout(LIMIT, lines.next_line()).await.unwrap().unwrap().unwrap();
        let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
        // Skip the response headers.
        for _ in 0..100 {
            if timeout(LIMIT, lines.next_line()).await.unwrap().unwrap().unwrap().is_empty() {
                break;
            }
        }
        EventStream { lines, status }
    }

    async fn body(mut self) -> String {
        let mut body = String::new();
        while let Some(line) = timeout(LIMIT, self.lines.next_line()).await.unwrap().unwrap() {
            body.push_str(&line);
        }
        body
    }

    /// The next event, skipping heartbeat comments; `None` at end of stream.
    async fn next(&mut self) -> Option<SseEvent> {
        let (mut id, mut data) = (None, String::new());
        for _ in 0..1000 {
            let line =
                timeout(LIMIT, self.lines.next_line()).await.expect("no event within the limit").unwrap()?;
            if line.is_empty() {
                if data.is_empty() {
                    continue; // a heartbeat comment's terminator
                }
                return Some(SseEvent { id, data: serde_json::from_str(&data).unwrap() });
            } else if let Some(v) = line.strip_prefix("data: ").or(line.strip_prefix("data:")) {
                data.push_str(v);
            } else if let Some(v) = line.strip_prefix("id: ").or(line.strip_prefix("id:")) {
                id = Some(v.to_owned());
            }
        }
        panic!("too many lines without an event");
    }
}

#[tokio::test]
async fn sse_carries_the_same_frames_with_the_cursor_as_id() {
    let notifier = Notifier::new();
    let addr = serve(&notifier).await;
    let mut events = EventStream::open(addr, "", &[]).await;
    assert_eq!(events.status, 200);
    let hello = events.next().await.unwrap();
    assert_eq!(hello.data["type"], "hello");
    assert_eq!(hello.id.as_deref(), hello.data["cursor"].as_str());
    wait_sessions(&notifier, 1).await;

    notifier.notify_with("forums", Op::Insert, &json!({"id": 1})).unwrap();
    let event = events.next().await.unwrap();
    assert_eq!(event.data["collection"], "forums");
    assert_eq!(event.data["data"], json!({"id": 1}));
    assert_eq!(event.id.as_deref(), Some(notifier.cursor().to_string().as_str()));
}

#[tokio::test]
async fn last_event_id_resumes_exactly_where_the_stream_broke() {
    let notifier = Notifier::new();
    let addr = serve(&notifier).await;
    let mut events = EventStream::open(addr, "", &[]).await;
    events.next().await.unwrap();
    notifier.notify("forums", Op::Insert);
    let last = events.next().await.unwrap().id.unwrap();
    drop(events);
    wait_sessions(&notifier, 0).await;

    for id in 0..3 {
        notifier.notify_with("posts", Op::Insert, &json!({ "id": id })).unwrap();
    }
    // The URL's cursor is older; the header the browser adds wins.
    let mut events = EventStream::open(addr, "cursor=garbage", &[("last-event-id", &last)]).await;
    assert_eq!(events.next().await.unwrap().data["cursor"], last.as_str());
    for id in 0..3 {
        assert_eq!(events.next().await.unwrap().data["data"]["id"], id);
    }
}

#[tokio::test]
async fn an_unknown_last_event_id_gets_resync() {
    let notifier = Notifier::new();
    let addr = serve(&notifier).await;
    let mut events = EventStream::open(addr, "", &[("last-event-id", "00000000-99")]).await;
    assert_eq!(events.next().await.unwrap().data["type"], "hello");
    assert_eq!(events.next().await.unwrap().data["type"], "resync");
}

#[tokio::test]
async fn sse_honours_subscriptions_and_authorization() {
    let settings = Settings::default().authorize(|parts| {
        let ok = parts.headers.contains_key("x-user");
        async move {
            if ok {
                Ok(Identity::user("1").audience("user:1").collections(["forums", "inbox"]))
            } else {
                Err(Rejection::unauthorized("send x-user"))
            }
        }
    });
    let notifier = Notifier::new();
    let addr = serve_with(&notifier, settings).await;

    let refused = EventStream::open(addr, "", &[]).await;
    assert_eq!(refused.status, 401);
    let body: Value = serde_json::from_str(&refused.body().await).unwrap();
    assert_eq!(body["code"], "unauthorized");
    assert_eq!(EventStream::open(addr, "collections=audit", &[("x-user", "1")]).await.status, 403);

    let mut events = EventStream::open(addr, "collections=forums", &[("x-user", "1")]).await;
    events.next().await.unwrap();
    notifier.notify("posts", Op::Insert);
    notifier.push(tidings::Notification::new("forums", Op::Update).to("user:2"));
    notifier.notify("forums", Op::Delete);
    let event = events.next().await.unwrap();
    assert_eq!(
        (event.data["collection"].as_str(), event.data["op"].as_str()),
        (Some("forums"), Some("delete"))
    );
}

#[tokio::test]
async fn shutdown_ends_the_stream_and_disconnects_unregister() {
    let notifier = Notifier::new();
    let addr = serve(&notifier).await;
    let mut events = EventStream::open(addr, "", &[]).await;
    events.next().await.unwrap();
    let gone = EventStream::open(addr, "", &[]).await;
    wait_sessions(&notifier, 2).await;
    drop(gone);
    wait_sessions(&notifier, 1).await;

    timeout(LIMIT, notifier.shutdown()).await.unwrap();
    assert!(events.next().await.is_none(), "the stream ends on shutdown");
    assert_eq!(EventStream::open(addr, "", &[]).await.status, 503);
}

#[tokio::test]
async fn sse_skips_long_filtered_runs_without_stalling() {
    let notifier = Notifier::new();
    let addr = serve(&notifier).await;
    let mut events = EventStream::open(addr, "collections=posts", &[]).await;
    events.next().await.unwrap();
    let batch = notifier.batch();
    for id in 0..300 {
        batch.notify_with("forums", Op::Update, &json!({ "id": id })).unwrap();
    }
    batch.notify("posts", Op::Insert);
    batch.commit();
    assert_eq!(events.next().await.unwrap().data["collection"], "posts");
}

#[tokio::test]
async fn a_client_that_stops_reading_its_stream_is_closed_after_the_write_timeout() {
    use std::future::IntoFuture;
    use tokio::io::AsyncReadExt;

    let notifier = Notifier::with_config(Config::default().replay_capacity(64));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().merge(tidings::axum::routes(&notifier));
    let server =
        tidings::axum::serve(listener, app, &notifier).write_timeout(std::time::Duration::from_millis(300));
    tokio::spawn(server.into_future());

    let mut stuck = EventStream::open(addr, "", &[]).await;
    stuck.next().await.unwrap(); // its hello; it never reads again
    let mut reader = common::Client::connect(addr, "").await;
    wait_sessions(&notifier, 2).await;

    // 32 MB of notifications: far more than loopback socket buffers and
    // the server's own buffers hold. The WebSocket client reads each one
    // before the next is sent, so it never lags.
    let big = "x".repeat(256 * 1024);
    for i in 0..128 {
        notifier.notify_with("blobs", Op::Insert, &json!({"i": i, "blob": big})).unwrap();
        assert_eq!(reader.next_json().await["data"]["i"], i, "the reading client keeps receiving");
    }
    wait_sessions(&notifier, 1).await;

    // The server closed the stuck stream: what is left in the socket ends.
    let mut socket = stuck.lines.into_inner();
    let mut scratch = vec![0u8; 64 * 1024];
    let mut ended = false;
    for _ in 0..100_000 {
        match timeout(LIMIT, socket.read(&mut scratch)).await.expect("the stream is still open") {
            Ok(0) | Err(_) => {
                ended = true;
                break;
            }
            Ok(_) => continue,
        }
    }
    assert!(ended, "the stream did not end");
    notifier.notify("marker", Op::Insert);
    assert_eq!(reader.next_json().await["collection"], "marker");
}
