//! Shared test plumbing: a real server on 127.0.0.1:0 and a real WebSocket
//! client. Every wait is bounded by `LIMIT`.
#![allow(dead_code)]

pub mod example;

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tidings::Notifier;
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The longest any single step of a test may wait.
pub const LIMIT: Duration = Duration::from_secs(5);

/// Serves the notifier's WebSocket route on a fresh loopback port.
pub async fn serve(notifier: &Notifier) -> SocketAddr {
    serve_router(axum::Router::new().merge(tidings::axum::routes(notifier))).await
}

/// Serves the notifier's routes, made with `settings`, on a fresh loopback port.
pub async fn serve_with(notifier: &Notifier, settings: tidings::axum::Settings) -> SocketAddr {
    serve_router(axum::Router::new().merge(settings.routes(notifier))).await
}

pub async fn serve_router(router: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr
}

pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A connected client that has read its `hello` frame.
pub struct Client {
    pub ws: Socket,
    /// The public session id (what `origin` shows).
    pub session: String,
    /// The secret that makes this session skip its own writes (the
    /// `tidings-session` header).
    pub token: String,
    pub cursor: String,
}

impl Client {
    /// Connects to `/ws?{query}` and reads the hello frame (which proves the
    /// session is registered).
    pub async fn connect(addr: SocketAddr, query: &str) -> Client {
        let url = format!("ws://{addr}/ws?{query}");
        let (ws, _) = timeout(LIMIT, tokio_tungstenite::connect_async(url)).await.unwrap().unwrap();
        Client::from_socket(ws).await
    }

    pub async fn from_socket(ws: Socket) -> Client {
        let mut client = Client { ws, session: String::new(), token: String::new(), cursor: String::new() };
        let hello = client.next_json().await;
        assert_eq!(hello["type"], "hello", "first frame must be hello: {hello}");
        client.session = hello["session"].as_str().unwrap().to_owned();
        client.token = hello["token"].as_str().unwrap().to_owned();
        client.cursor = hello["cursor"].as_str().unwrap().to_owned();
        client
    }

    /// The next text frame (pings and pongs are skipped).
    pub async fn next_text(&mut self) -> String {
        for _ in 0..100 {
            let message = timeout(LIMIT, self.ws.next())
                .await
                .expect("no frame within the limit")
                .expect("stream ended")
                .expect("socket error");
            match message {
                Message::Text(t) => return t.to_string(),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
        panic!("only control frames");
    }

    pub async fn next_json(&mut self) -> Value {
        serde_json::from_str(&self.next_text().await).unwrap()
    }

    /// Reads until the server's close frame and returns it.
    pub async fn expect_close(&mut self) -> CloseFrame {
        for _ in 0..10_000 {
            match timeout(LIMIT, self.ws.next()).await.expect("no close within the limit") {
                Some(Ok(Message::Close(Some(frame)))) => return frame,
                Some(Ok(Message::Close(None))) => panic!("close without a code"),
                Some(Ok(_)) => continue,
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
        panic!("too many frames before close");
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.unwrap();
    }
}

/// Waits until the notifier has exactly `n` sessions.
pub async fn wait_sessions(notifier: &Notifier, n: usize) {
    let mut count = notifier.watch_sessions();
    timeout(LIMIT, count.wait_for(|c| *c == n))
        .await
        .unwrap_or_else(|_| panic!("expected {n} sessions, have {}", notifier.session_count()))
        .unwrap();
}

/// `s`, percent-encoded for a query string.
pub fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

/// The sequence part of a cursor string (`<epoch or log>-<sequence>[-<fingerprint>]`).
pub fn seq(cursor: &str) -> u64 {
    cursor.split('-').nth(1).unwrap().parse().unwrap()
}
