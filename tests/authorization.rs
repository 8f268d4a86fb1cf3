//! Authorization per filter and over time, over real sockets: the identity's
//! `permit` hook at connect and at every subscribe, revocation by user and
//! by audience (close code 4401), and expiry.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{Client, LIMIT, encode, wait_sessions};
use serde_json::{Value, json};
use tidings::axum::{Rejection, Settings};
use tidings::{Config, Identity, Notifier, Notify, Op};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

fn notifier() -> Notifier {
    Notifier::new()
}

fn notifier_with(config: Config) -> Notifier {
    Notifier::with_config(config)
}

/// Serves the notifier's routes with [`settings`] on a fresh loopback port.
async fn serve(notifier: &Notifier) -> SocketAddr {
    common::serve_with(notifier, settings()).await
}

/// Who the `x-user` header names: user `n` belongs to audience `user:n`
/// and `forum:n`, may read posts of forum `n` only (by filter), and, with
/// `x-ttl-ms`, expires after that many milliseconds.
fn settings() -> Settings {
    Settings::default().authorize(|parts| {
        let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let user = header("x-user");
        let ttl = header("x-ttl-ms").and_then(|t| t.parse::<u64>().ok());
        async move {
            let Some(user) = user else { return Err(Rejection::unauthorized("who are you?")) };
            let forum: i64 = user.parse().map_err(|_| Rejection::forbidden("bad user"))?;
            let mut identity = Identity::user(user.clone())
                .audience(format!("user:{user}"))
                .audience(format!("forum:{forum}"))
                .permit(move |collection, filter| match collection {
                    "posts" => filter
                        .and_then(|f| f.values("forum_id"))
                        .is_some_and(|forums| forums.iter().all(|f| f.as_i64() == Some(forum))),
                    "*" => false,
                    _ => true,
                });
            if let Some(ms) = ttl {
                identity = identity.expires_at(Instant::now() + Duration::from_millis(ms));
            }
            Ok(identity)
        }
    })
}

fn posts_of(forum: u32) -> String {
    format!("collections=posts,marker&where={}", encode(&json!({"posts": {"forum_id": forum}}).to_string()))
}

/// Connects as `user` with extra headers; `Err(status)` when refused.
async fn connect(addr: SocketAddr, query: &str, headers: &[(&str, &str)]) -> Result<Client, u16> {
    let mut request = format!("ws://{addr}/ws?{query}").into_client_request().unwrap();
    for (name, value) in headers {
        let name = http::HeaderName::from_bytes(name.as_bytes()).unwrap();
        request.headers_mut().insert(name, value.parse().unwrap());
    }
    match timeout(LIMIT, tokio_tungstenite::connect_async(request)).await.unwrap() {
        Ok((ws, _)) => Ok(Client::from_socket(ws).await),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
        Err(e) => panic!("connect: {e}"),
    }
}

#[tokio::test]
async fn the_permit_hook_decides_per_filter_at_connect() {
    let notifier = notifier();
    let addr = serve(&notifier).await;
    let user = [("x-user", "3")];
    assert_eq!(connect(addr, &posts_of(4), &user).await.err(), Some(403), "another forum's posts");
    assert_eq!(connect(addr, "collections=posts", &user).await.err(), Some(403), "all posts, unfiltered");
    assert_eq!(connect(addr, "", &user).await.err(), Some(403), "`*` includes every post");
    let mut client = connect(addr, &posts_of(3), &user).await.expect("its own forum");
    notifier.notify_with("posts", Op::Insert, &json!({"id": 1, "forum_id": 3})).unwrap();
    assert_eq!(client.next_json().await["data"]["id"], 1);
}

#[tokio::test]
async fn the_permit_hook_decides_at_every_subscribe() {
    let notifier = notifier();
    let addr = serve(&notifier).await;
    let mut client = connect(addr, "collections=marker", &[("x-user", "3")]).await.unwrap();
    for frame in [
        json!({"type":"subscribe","collections":["posts"],"where":{"forum_id":[3,4]}}),
        json!({"type":"subscribe","collections":["posts"]}),
    ] {
        client.send_text(&frame.to_string()).await;
        let error = client.next_json().await;
        assert_eq!(
            (error["type"].as_str(), error["code"].as_str()),
            (Some("error"), Some("forbidden")),
            "{frame}"
        );
    }
    client
        .send_text(&json!({"type":"subscribe","collections":["posts"],"where":{"forum_id":3}}).to_string())
        .await;
    assert_eq!(client.next_json().await["type"], "subscribed");
    notifier.notify_with("posts", Op::Insert, &json!({"id": 1, "forum_id": 4})).unwrap();
    notifier.notify_with("posts", Op::Insert, &json!({"id": 2, "forum_id": 3})).unwrap();
    assert_eq!(client.next_json().await["data"]["id"], 2);
}

async fn expect_reauthenticate(client: &mut Client) {
    let close = client.expect_close().await;
    assert_eq!((u16::from(close.code), close.reason.as_str()), (4401, "reauthenticate"));
}

#[tokio::test]
async fn revoking_a_user_or_an_audience_closes_only_its_sessions_with_4401() {
    let notifier = notifier();
    let addr = serve(&notifier).await;
    let mut three = connect(addr, &posts_of(3), &[("x-user", "3")]).await.unwrap();
    let mut five = connect(addr, &posts_of(5), &[("x-user", "5")]).await.unwrap();
    let mut seven = connect(addr, &posts_of(7), &[("x-user", "7")]).await.unwrap();
    wait_sessions(&notifier, 3).await;

    assert_eq!(notifier.reauthenticate_user("3"), 1);
    expect_reauthenticate(&mut three).await;
    assert_eq!(notifier.reauthenticate_audience("forum:5"), 1);
    expect_reauthenticate(&mut five).await;
    wait_sessions(&notifier, 1).await;
    // The others go on.
    notifier.notify("marker", Op::Insert);
    assert_eq!(seven.next_json().await["collection"], "marker");
    assert_eq!(notifier.reauthenticate_user("nobody"), 0);
}

#[tokio::test]
async fn an_identity_expires_and_its_session_is_closed_with_4401() {
    let notifier = notifier();
    let addr = serve(&notifier).await;
    let mut short = connect(addr, &posts_of(3), &[("x-user", "3"), ("x-ttl-ms", "300")]).await.unwrap();
    let mut long = connect(addr, &posts_of(3), &[("x-user", "3"), ("x-ttl-ms", "600000")]).await.unwrap();
    let opened = Instant::now();
    expect_reauthenticate(&mut short).await;
    assert!(opened.elapsed() >= Duration::from_millis(250), "not before its expiry");
    notifier.notify("marker", Op::Insert);
    assert_eq!(long.next_json().await["collection"], "marker", "an identity that has not expired stays");
    // Already expired when it connects: refused.
    assert_eq!(connect(addr, &posts_of(3), &[("x-user", "3"), ("x-ttl-ms", "0")]).await.err(), Some(401));
}

#[tokio::test]
async fn an_sse_session_ends_with_a_reauthenticate_frame() {
    let notifier = notifier();
    let addr = serve(&notifier).await;
    let mut socket = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET /events?{} HTTP/1.0\r\nhost: {addr}\r\naccept: text/event-stream\r\nx-user: 3\r\n\r\n",
        posts_of(3)
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut lines = BufReader::new(socket).lines();
    let mut frames: Vec<Value> = Vec::new();
    let mut told = false;
    for _ in 0..1000 {
        let Some(line) = timeout(LIMIT, lines.next_line()).await.unwrap().unwrap() else { break };
        if let Some(data) = line.strip_prefix("data: ").or(line.strip_prefix("data:")) {
            frames.push(serde_json::from_str(data).unwrap());
            if !told {
                told = true;
                assert_eq!(frames[0]["type"], "hello");
                assert_eq!(notifier.reauthenticate_user("3"), 1);
            }
        }
    }
    let types: Vec<&str> = frames.iter().map(|f| f["type"].as_str().unwrap_or("notification")).collect();
    assert_eq!(types, ["hello", "reauthenticate"], "then the stream ends");
}

#[tokio::test]
async fn where_without_collections_is_checked_as_those_collections_not_as_star() {
    let notifier = notifier();
    let addr = serve(&notifier).await;
    let query = format!("where={}", encode(&json!({"posts": {"forum_id": 3}}).to_string()));
    let mut client = connect(addr, &query, &[("x-user", "3")]).await.expect("not refused as `*`");
    notifier.notify_with("posts", Op::Insert, &json!({"id": 1, "forum_id": 4})).unwrap();
    notifier.notify_with("posts", Op::Insert, &json!({"id": 2, "forum_id": 3})).unwrap();
    assert_eq!(client.next_json().await["data"]["id"], 2);
}

/// Frames are read at most 5 a millisecond: slower than the notifications
/// come, so the server's writer always has more to send.
const PACE: u64 = 5;

/// Connects as `user` through a socket with a small receive buffer, so that
/// a writer that sends faster than the client reads is soon held up.
async fn connect_narrow(addr: SocketAddr, user: &str, ttl_ms: &str) -> Client {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(32 * 1024).unwrap();
    let stream = socket.connect(addr).await.unwrap();
    let mut request = format!("ws://{addr}/ws?collections=marker").into_client_request().unwrap();
    request.headers_mut().insert("x-user", user.parse().unwrap());
    request.headers_mut().insert("x-ttl-ms", ttl_ms.parse().unwrap());
    let plain = tokio_tungstenite::MaybeTlsStream::Plain(stream);
    let (ws, _) = timeout(LIMIT, tokio_tungstenite::client_async(request, plain)).await.unwrap().unwrap();
    Client::from_socket(ws).await
}

/// What a paced reader saw last.
enum Seen {
    /// The frames it read lag `behind` notifications behind the head.
    Behind,
    Closed(u16, String),
    /// Neither within the limit.
    Nothing,
}

/// Reads at [`PACE`] until the frames read are more than `behind`
/// notifications behind the notifier's head (more than the socket's
/// buffers hold, so the writer has more to send than it can), or until a
/// close frame, or for at most `within`.
async fn read_paced(client: &mut Client, notifier: &Notifier, behind: u64, within: Duration) -> Seen {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let deadline = tokio::time::Instant::now() + within;
    // Bounded by the deadline; the count only guards against a runaway.
    for read in 0..100_000_000u64 {
        if read % PACE == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let Ok(message) = tokio::time::timeout_at(deadline, client.ws.next()).await else {
            return Seen::Nothing;
        };
        match message {
            Some(Ok(Message::Close(Some(frame)))) => {
                return Seen::Closed(frame.code.into(), frame.reason.to_string());
            }
            Some(Ok(Message::Text(text))) if behind > 0 => {
                let frame: Value = serde_json::from_str(&text).unwrap();
                let Some(cursor) = frame["cursor"].as_str() else { continue };
                if notifier.cursor().seq() - common::seq(cursor) > behind {
                    return Seen::Behind;
                }
            }
            Some(Ok(_)) => continue,
            other => panic!("expected frames then a close frame, got {other:?}"),
        }
    }
    Seen::Nothing
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_under_steady_traffic_is_still_closed_with_4401() {
    // Room for everything the writers fall behind by: no resync (after
    // which a writer would be caught up for a moment).
    let notifier = notifier_with(Config::default().replay_capacity(100_000));
    let addr = serve(&notifier).await;
    let mut busy = connect_narrow(addr, "3", "600000").await;
    let mut short = connect_narrow(addr, "5", "6000").await;
    let connected = Instant::now();
    // Notifications keep coming until the test ends (or 30 s pass).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic = {
        let (notifier, stop) = (notifier.clone(), stop.clone());
        // 1 KiB a frame: the socket's buffers fill in a few thousand.
        let payload = json!({ "text": "x".repeat(1024) });
        std::thread::spawn(move || {
            let started = Instant::now();
            while !stop.load(std::sync::atomic::Ordering::Relaxed)
                && started.elapsed() < Duration::from_secs(30)
            {
                // At most 20,000 a second: more than the clients read.
                for _ in 0..100 {
                    notifier.notify_with("marker", Op::Insert, &payload).unwrap();
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    // 8 MiB behind: more than the server's send buffer (4 MiB at most) and
    // the client's receive buffer hold.
    let (a, b) = tokio::join!(
        read_paced(&mut busy, &notifier, 8_000, Duration::from_secs(10)),
        read_paced(&mut short, &notifier, 8_000, Duration::from_secs(10)),
    );
    assert!(matches!((a, b), (Seen::Behind, Seen::Behind)), "both writers fell behind");
    assert!(connected.elapsed() < Duration::from_secs(5), "well before the short identity expires");
    assert_eq!(notifier.reauthenticate_user("3"), 1);
    let (revoked, expired) = tokio::join!(
        read_paced(&mut busy, &notifier, 0, Duration::from_secs(4)),
        read_paced(&mut short, &notifier, 0, Duration::from_secs(9)),
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    traffic.join().unwrap();
    let closed = |seen: Seen| match seen {
        Seen::Closed(code, reason) => Some((code, reason)),
        _ => None,
    };
    let reauthenticate = Some((4401, "reauthenticate".to_owned()));
    assert_eq!(closed(revoked), reauthenticate, "revoked, closed within 4 s");
    assert_eq!(closed(expired), reauthenticate, "expired, closed within 3 s of its expiry");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sse_session_under_steady_traffic_still_ends_with_reauthenticate() {
    let notifier = notifier_with(Config::default().replay_capacity(100_000));
    let addr = serve(&notifier).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(32 * 1024).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    let request = format!(
        "GET /events?collections=marker HTTP/1.0\r\nhost: {addr}\r\naccept: text/event-stream\r\nx-user: 3\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut lines = BufReader::new(stream).lines();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic = {
        let (notifier, stop) = (notifier.clone(), stop.clone());
        let payload = json!({ "text": "x".repeat(1024) });
        std::thread::spawn(move || {
            let started = Instant::now();
            while !stop.load(std::sync::atomic::Ordering::Relaxed)
                && started.elapsed() < Duration::from_secs(30)
            {
                for _ in 0..100 {
                    notifier.notify_with("marker", Op::Insert, &payload).unwrap();
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    // Read at PACE until 8,000 notifications behind (more than the buffers
    // hold), then revoke and read on until the `reauthenticate` frame.
    let mut revoked: Option<tokio::time::Instant> = None;
    let mut last = None;
    let start = tokio::time::Instant::now();
    let mut frames = 0u64;
    for _ in 0..100_000_000u64 {
        let deadline = revoked.map_or(start + Duration::from_secs(10), |at| at + Duration::from_secs(4));
        if tokio::time::Instant::now() >= deadline {
            break;
        }
        let Ok(line) = tokio::time::timeout_at(deadline, lines.next_line()).await else { break };
        let Some(line) = line.unwrap() else { break };
        let Some(data) = line.strip_prefix("data: ").or(line.strip_prefix("data:")) else { continue };
        frames += 1;
        if frames.is_multiple_of(PACE) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let frame: Value = serde_json::from_str(data).unwrap();
        if frame["type"] == "reauthenticate" {
            last = Some(frame);
            break;
        }
        if revoked.is_none()
            && let Some(cursor) = frame["cursor"].as_str().filter(|_| frame["collection"] == "marker")
            && notifier.cursor().seq() - common::seq(cursor) > 8_000
        {
            assert_eq!(notifier.reauthenticate_user("3"), 1);
            revoked = Some(tokio::time::Instant::now());
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    traffic.join().unwrap();
    assert!(revoked.is_some(), "the stream fell behind");
    assert_eq!(
        last.map(|f| f["type"].clone()),
        Some(json!("reauthenticate")),
        "within 4 s of the revocation"
    );
}
