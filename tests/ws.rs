//! The WebSocket hub end to end: fan-out, session lifecycle, bad input,
//! origins and shutdown, with real sockets and a real WebSocket client.

mod common;

use std::time::Duration;

use common::{Client, LIMIT, seq, serve, serve_with, wait_sessions};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tidings::axum::Settings;
use tidings::{Config, Notifier, Notify, Op};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

#[tokio::test]
async fn every_session_receives_the_exact_json() {
    let notifier = Notifier::new();
    let addr = serve(&notifier).await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(Client::connect(addr, "").await);
    }
    let start = seq(&clients[0].cursor);
    let epoch = clients[0].cursor.split_once('-').unwrap().0.to_owned();

    notifier.notify("forums", Op::Insert);
    notifier.notify_with("posts", Op::Update, &json!({"id": 7})).unwrap();

    for client in &mut clients {
        assert_eq!(
            client.next_text().await,
            format!(r#"{{"collection":"forums","op":"insert","cursor":"{epoch}-{}"}}"#, start + 1)
        );
        assert_eq!(
            client.next_text().await,
            format!(
                r#"{{"collection":"posts","op":"update","data":{{"id":7}},"cursor":"{epoch}-{}"}}"#,
                start + 2
            )
        );
    }
}

#[tokio::test]
async fn a_closed_session_is_removed() {
    let notifier = Notifier::new();
    let addr = serve(&notifier).await;
    let mut client = Client::connect(addr, "").await;
    assert_eq!(notifier.session_count(), 1);
    client.ws.close(None).await.unwrap();
    wait_sessions(&notifier, 0).await;
}

#[tokio::test]
async fn a_dropped_connection_is_removed() {
    let notifier = Notifier::new();
    let addr = serve(&notifier).await;
    let client = Client::connect(addr, "").await;
    drop(client); // TCP closed without a close frame
    wait_sessions(&notifier, 0).await;
}

#[tokio::test]
async fn a_silent_peer_is_closed_and_removed() {
    let notifier = Notifier::new();
    let settings =
        Settings::default().ping_interval(Duration::from_millis(50)).idle_timeout(Duration::from_millis(200));
    let addr = serve_with(&notifier, settings).await;
    // This client reads its hello and then is never polled again: it cannot
    // answer pings, like a peer whose network vanished.
    let _silent = Client::connect(addr, "").await;
    // This one keeps reading, so it answers pings and must stay.
    let mut alive = Client::connect(addr, "").await;
    wait_sessions(&notifier, 2).await;

    // The live client reads (and so answers) ten pings: four idle timeouts.
    let (pinged, mut marker) = {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let reader = tokio::spawn(async move {
            let mut pings = 0;
            while pings < 10 {
                match timeout(LIMIT, alive.ws.next()).await.unwrap().unwrap().unwrap() {
                    Message::Ping(_) => pings += 1,
                    other => panic!("unexpected {other:?}"),
                }
            }
            tx.send(()).unwrap();
            alive.next_json().await
        });
        (rx, reader)
    };
    timeout(LIMIT, pinged).await.unwrap().unwrap();
    assert_eq!(notifier.session_count(), 1, "only the silent peer may be removed");
    notifier.notify("marker", Op::Insert);
    let frame = timeout(LIMIT, &mut marker).await.unwrap().unwrap();
    assert_eq!(frame["collection"], "marker");
}

#[tokio::test]
async fn a_stuck_client_is_closed_while_others_keep_receiving() {
    let notifier = Notifier::with_config(Config::default().replay_capacity(64));
    let addr = serve_with(&notifier, Settings::default().write_timeout(Duration::from_millis(300))).await;
    let _stuck = Client::connect(addr, "").await; // never reads again
    let mut reader = Client::connect(addr, "").await;

    // 32 MB of notifications: far more than loopback socket buffers hold, so
    // the stuck client's writer blocks and times out. The reading client
    // reads each one before the next is sent, so it never lags.
    let big = "x".repeat(256 * 1024);
    for i in 0..128 {
        notifier.notify_with("blobs", Op::Insert, &json!({"i": i, "blob": big})).unwrap();
        let frame = reader.next_json().await;
        assert_eq!(frame["data"]["i"], i, "the reading client keeps receiving, in order");
    }
    wait_sessions(&notifier, 1).await;
    notifier.notify("marker", Op::Insert);
    assert_eq!(reader.next_json().await["collection"], "marker");
}

#[tokio::test]
async fn oversized_frames_close_only_their_session() {
    let notifier = Notifier::new();
    let addr = serve(&notifier).await;
    let mut bad = Client::connect(addr, "").await;
    let mut good = Client::connect(addr, "").await;

    bad.send_text(&"x".repeat(64 * 1024)).await;
    let close = bad.expect_close().await;
    assert_eq!(u16::from(close.code), 1009);
    assert!(close.reason.contains("4096"), "reason: {}", close.reason);

    notifier.notify("forums", Op::Insert);
    assert_eq!(good.next_json().await["collection"], "forums");
    wait_sessions(&notifier, 1).await;
}

#[tokio::test]
async fn binary_frames_close_only_their_session() {
    let notifier = Notifier::new();
    let addr = serve(&notifier).await;
    let mut bad = Client::connect(addr, "").await;
    let mut good = Client::connect(addr, "").await;

    bad.ws.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    let close = bad.expect_close().await;
    assert_eq!(u16::from(close.code), 1003);
    assert!(close.reason.contains("binary"));

    notifier.notify("forums", Op::Insert);
    assert_eq!(good.next_json().await["collection"], "forums");
    wait_sessions(&notifier, 1).await;
}

#[tokio::test]
async fn malformed_and_unknown_frames_get_an_error_and_the_session_goes_on() {
    let notifier = Notifier::new();
    let addr = serve(&notifier).await;
    let mut bad = Client::connect(addr, "").await;
    let mut good = Client::connect(addr, "").await;

    for input in ["{not json", r#"{"type":"dance"}"#, r#"{"type":"subscribe"}"#, "[]"] {
        bad.send_text(input).await;
        let error = bad.next_json().await;
        assert_eq!(error["type"], "error", "for {input}");
        assert_eq!(error["code"], "bad_frame", "for {input}");
        assert!(error["message"].as_str().unwrap().len() > 5);
    }
    notifier.notify("forums", Op::Insert);
    assert_eq!(bad.next_json().await["collection"], "forums");
    assert_eq!(good.next_json().await["collection"], "forums");
    assert_eq!(notifier.session_count(), 2);
}

async fn upgrade_status(addr: std::net::SocketAddr, origin: Option<&str>) -> (u16, String) {
    let mut request = format!("ws://{addr}/ws").into_client_request().unwrap();
    if let Some(origin) = origin {
        request.headers_mut().insert("origin", origin.parse().unwrap());
    }
    match timeout(LIMIT, tokio_tungstenite::connect_async(request)).await.unwrap() {
        Ok((ws, response)) => {
            drop(ws);
            (response.status().as_u16(), String::new())
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let body = String::from_utf8(response.body().clone().unwrap_or_default()).unwrap();
            (response.status().as_u16(), body)
        }
        Err(e) => panic!("unexpected error {e}"),
    }
}

#[tokio::test]
async fn foreign_origins_are_refused_by_default() {
    let notifier = Notifier::new();
    let addr = serve(&notifier).await;
    assert_eq!(upgrade_status(addr, Some(&format!("http://{addr}"))).await.0, 101);
    assert_eq!(upgrade_status(addr, None).await.0, 101);
    let (status, body) = upgrade_status(addr, Some("https://evil.example")).await;
    assert_eq!(status, 403);
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["code"], "origin_not_allowed");
}

#[tokio::test]
async fn an_allow_list_replaces_the_same_host_rule() {
    let notifier = Notifier::new();
    let addr = serve_with(&notifier, Settings::default().allowed_origins(["https://app.example"])).await;
    assert_eq!(upgrade_status(addr, Some("https://app.example")).await.0, 101);
    assert_eq!(upgrade_status(addr, Some(&format!("http://{addr}"))).await.0, 403);
}

#[tokio::test]
async fn shutdown_sends_going_away_and_refuses_new_sessions() {
    let notifier = Notifier::new();
    let addr = serve(&notifier).await;
    let mut a = Client::connect(addr, "").await;
    let mut b = Client::connect(addr, "").await;

    let shutdown = tokio::spawn({
        let notifier = notifier.clone();
        async move { notifier.shutdown().await }
    });
    for client in [&mut a, &mut b] {
        let close = client.expect_close().await;
        assert_eq!(u16::from(close.code), 1001);
    }
    timeout(LIMIT, shutdown).await.unwrap().unwrap();
    assert_eq!(notifier.session_count(), 0);
    let (status, body) = upgrade_status(addr, None).await;
    assert_eq!(status, 503, "{body}");
}

#[tokio::test]
async fn graceful_shutdown_of_the_server_ends_promptly() {
    let notifier = Notifier::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn({
        let notifier = notifier.clone();
        let app = axum::Router::new().merge(tidings::axum::routes(&notifier));
        async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    stopped.await.ok();
                    notifier.shutdown().await;
                })
                .await
        }
    });
    let mut client = Client::connect(addr, "").await;
    stop.send(()).unwrap();
    assert_eq!(u16::from(client.expect_close().await.code), 1001);
    timeout(LIMIT, server).await.expect("server must exit promptly").unwrap().unwrap();
}

// ---- bad bytes on the wire ---------------------------------------------------------

/// A WebSocket client written by hand on a raw TCP stream, so that a test can
/// send what no well-behaved client library would (unmasked frames, reserved
/// bits, invalid UTF-8, garbage) and read exactly what the server answers.
struct RawClient {
    tcp: tokio::net::TcpStream,
    /// Bytes read but not yet consumed.
    buf: Vec<u8>,
}

/// A server frame: its opcode and payload (server frames are never masked).
struct RawFrame {
    opcode: u8,
    payload: Vec<u8>,
}

impl RawClient {
    /// Upgrades by hand and reads the hello frame.
    async fn connect(addr: std::net::SocketAddr) -> RawClient {
        use tokio::io::AsyncWriteExt;
        let mut tcp = timeout(LIMIT, tokio::net::TcpStream::connect(addr)).await.unwrap().unwrap();
        let request = format!(
            "GET /ws HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        );
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut client = RawClient { tcp, buf: Vec::new() };
        let head = client.read_head().await;
        assert!(head.starts_with("HTTP/1.1 101"), "not upgraded: {head}");
        let hello = client.read_frame().await.expect("the hello frame");
        assert_eq!(hello.opcode, 0x1);
        assert!(String::from_utf8(hello.payload).unwrap().contains(r#""type":"hello""#));
        client
    }

    /// Reads more bytes into the buffer; false at end of stream or on a
    /// socket error (such as a reset).
    async fn fill(&mut self) -> bool {
        use tokio::io::AsyncReadExt;
        let mut chunk = [0u8; 4096];
        match timeout(LIMIT, self.tcp.read(&mut chunk)).await.expect("no data within the limit") {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    async fn read_head(&mut self) -> String {
        for _ in 0..100 {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8(self.buf.drain(..end + 4).collect()).unwrap();
                return head;
            }
            assert!(self.fill().await, "connection ended inside the response head");
        }
        panic!("response head too long");
    }

    /// The next whole frame; `None` if the connection ended (or was reset)
    /// before one arrived.
    async fn read_frame(&mut self) -> Option<RawFrame> {
        for _ in 0..10_000 {
            if let Some((header, len)) = Self::parse_header(&self.buf)
                && self.buf.len() >= header + len
            {
                let opcode = self.buf[0] & 0x0f;
                let payload = self.buf[header..header + len].to_vec();
                self.buf.drain(..header + len);
                return Some(RawFrame { opcode, payload });
            }
            if !self.fill().await {
                return None;
            }
        }
        panic!("frame too long");
    }

    /// The header length and payload length of the frame at the start of
    /// `buf`, once the header is complete.
    fn parse_header(buf: &[u8]) -> Option<(usize, usize)> {
        let short = usize::from(*buf.get(1)? & 0x7f);
        match short {
            126 => Some((4, usize::from(u16::from_be_bytes(buf.get(2..4)?.try_into().unwrap())))),
            127 => Some((10, u64::from_be_bytes(buf.get(2..10)?.try_into().unwrap()) as usize)),
            n => Some((2, n)),
        }
    }

    /// Reads until the server's close frame and returns its code and reason;
    /// panics if the connection ends without one.
    async fn expect_close(&mut self) -> (u16, String) {
        for _ in 0..10_000 {
            let frame = self.read_frame().await.expect("the connection ended without a close frame");
            if frame.opcode == 0x8 {
                assert!(frame.payload.len() >= 2, "close frame without a code");
                let code = u16::from_be_bytes([frame.payload[0], frame.payload[1]]);
                let reason = String::from_utf8(frame.payload[2..].to_vec()).expect("the reason is UTF-8");
                return (code, reason);
            }
        }
        panic!("too many frames before close");
    }

    /// Reads until the server ends the connection; an error (a reset) is
    /// returned, unread frames are skipped.
    async fn expect_clean_end(&mut self) -> std::io::Result<()> {
        use tokio::io::AsyncReadExt;
        let mut chunk = [0u8; 4096];
        for _ in 0..10_000 {
            match timeout(LIMIT, self.tcp.read(&mut chunk)).await.expect("the connection did not end") {
                Ok(0) => return Ok(()),
                Ok(_) => continue,
                Err(e) => return Err(e),
            }
        }
        panic!("too much data before the end");
    }

    async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        use tokio::io::AsyncWriteExt;
        timeout(LIMIT, self.tcp.write_all(bytes)).await.expect("writing timed out")
    }
}

/// One frame as a client would build it: `first` is the FIN/RSV/opcode byte;
/// the payload is masked unless `masked` is false.
fn raw_frame(first: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mask_bit = if masked { 0x80 } else { 0 };
    let mut out = vec![first];
    match payload.len() {
        n if n < 126 => out.push(mask_bit | n as u8),
        n if n <= 0xffff => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if masked {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

/// A close reason must fit a control frame (at most 123 bytes) and say something.
fn assert_reason(reason: &str) {
    assert!(!reason.is_empty() && reason.len() <= 123, "reason: {reason:?}");
}

#[tokio::test]
async fn invalid_utf8_closes_with_1007() {
    let notifier = Notifier::new();
    let addr = serve(&notifier).await;
    let mut good = Client::connect(addr, "").await;
    for payload in [&[0xff, 0xfe][..], &[b'{', 0xc3, 0x28, b'}'][..]] {
        let mut bad = RawClient::connect(addr).await;
        bad.send(&raw_frame(0x81, payload, true)).await.unwrap();
        let (code, reason) = bad.expect_close().await;
        assert_eq!(code, 1007, "for {payload:?}: {reason}");
        assert_reason(&reason);
        assert!(reason.contains("UTF-8"), "reason: {reason}");
    }
    notifier.notify("forums", Op::Insert);
    assert_eq!(good.next_json().await["collection"], "forums");
    wait_sessions(&notifier, 1).await;
}

#[tokio::test]
async fn protocol_violations_close_with_1002() {
    let notifier = Notifier::new();
    let addr = serve(&notifier).await;
    let mut good = Client::connect(addr, "").await;
    let subscribe = br#"{"type":"subscribe","collections":["x"]}"#;
    let garbage = "this is not a WebSocket frame, ".repeat(5);
    let cases: [(&str, Vec<u8>); 6] = [
        ("an unmasked frame", raw_frame(0x81, subscribe, false)),
        ("a reserved bit", raw_frame(0x81 | 0x40, subscribe, true)),
        ("an unknown data opcode", raw_frame(0x83, b"x", true)),
        ("an unknown control opcode", raw_frame(0x8b, b"", true)),
        ("a continuation without a start", raw_frame(0x80, b"x", true)),
        ("garbage", garbage.into_bytes()),
    ];
    for (what, bytes) in cases {
        let mut bad = RawClient::connect(addr).await;
        bad.send(&bytes).await.unwrap();
        let (code, reason) = bad.expect_close().await;
        assert_eq!(code, 1002, "for {what}: {reason}");
        assert_reason(&reason);
    }
    notifier.notify("forums", Op::Insert);
    assert_eq!(good.next_json().await["collection"], "forums");
    wait_sessions(&notifier, 1).await;
}

#[tokio::test]
async fn an_oversized_frame_followed_by_more_data_gets_1009_and_a_clean_end() {
    let notifier = Notifier::new();
    let addr = serve(&notifier).await;
    // The frame is refused from its header; the rest of it, and more frames
    // after it, are still unread on the server's socket when it closes.
    let mut bytes = raw_frame(0x81, &vec![b'x'; 64 * 1024], true);
    for _ in 0..16 {
        bytes.extend(raw_frame(0x81, &vec![b'y'; 4000], true));
    }
    for attempt in 0..10 {
        let mut bad = RawClient::connect(addr).await;
        bad.send(&bytes).await.unwrap_or_else(|e| panic!("attempt {attempt}: sending: {e}"));
        let (code, reason) = bad.expect_close().await;
        assert_eq!(code, 1009, "attempt {attempt}: {reason}");
        assert!(reason.contains("4096"), "reason: {reason}");
        // The client answers the close, as RFC 6455 asks; the server must
        // have read (or discarded) everything, so the connection ends with
        // a FIN rather than a reset that can destroy the close frame.
        bad.send(&raw_frame(0x88, &1009u16.to_be_bytes(), true))
            .await
            .unwrap_or_else(|e| panic!("attempt {attempt}: answering the close: {e}"));
        bad.expect_clean_end().await.unwrap_or_else(|e| panic!("attempt {attempt}: {e}"));
    }
    wait_sessions(&notifier, 0).await;
}

#[tokio::test]
async fn other_methods_on_the_library_routes_get_a_json_405() {
    let notifier = Notifier::new();
    let addr = serve(&notifier).await;
    let http = reqwest::Client::builder().no_proxy().timeout(LIMIT).build().unwrap();
    for path in ["/ws", "/events", "/tidings.js"] {
        for method in [reqwest::Method::POST, reqwest::Method::PUT, reqwest::Method::DELETE] {
            let response = http.request(method.clone(), format!("http://{addr}{path}")).send().await.unwrap();
            assert_eq!(response.status(), 405, "{method} {path}");
            let allow = response.headers().get("allow").map(|v| v.to_str().unwrap().to_owned());
            assert!(allow.as_deref().is_some_and(|a| a.contains("GET")), "{method} {path}: allow {allow:?}");
            let body: serde_json::Value = serde_json::from_str(&response.text().await.unwrap())
                .unwrap_or_else(|e| panic!("{method} {path}: the body is not JSON: {e}"));
            assert_eq!(body["code"], "method_not_allowed", "{method} {path}: {body}");
            assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()), "{method} {path}: {body}");
        }
    }
}

#[tokio::test]
async fn a_get_that_is_not_an_upgrade_gets_a_json_error() {
    let notifier = Notifier::new();
    let addr = serve(&notifier).await;
    let http = reqwest::Client::builder().no_proxy().timeout(LIMIT).build().unwrap();
    let cases: [(&[(&str, &str)], &str); 3] = [
        (&[], "Connection"),
        (&[("connection", "upgrade"), ("upgrade", "websocket")], "Version"),
        (
            &[
                ("connection", "keep-alive, Upgrade"),
                ("upgrade", "WebSocket"),
                ("sec-websocket-version", "13"),
            ],
            "Key",
        ),
    ];
    for (headers, missing) in cases {
        let mut request = http.get(format!("http://{addr}/ws"));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 400, "{headers:?}");
        let body: serde_json::Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
        assert_eq!(body["code"], "not_websocket", "{body}");
        assert!(body["error"].as_str().unwrap().contains(missing), "{body}");
    }
    assert_eq!(notifier.session_count(), 0);
}
