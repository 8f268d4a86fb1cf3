//! The WebSocket hub end to end: fan-out, session lifecycle, bad input,
//! origins and shutdown, with real sockets and a real WebSocket client.

mod common;

use std::time::Duration;

use common::{Client, LIMIT, seq, serve, wait_sessions};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tidings::{Config, Notifier, Op};
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
    let notifier = Notifier::with_config(
        Config::default().ping_interval(Duration::from_millis(50)).idle_timeout(Duration::from_millis(200)),
    );
    let addr = serve(&notifier).await;
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
    let notifier = Notifier::with_config(
        Config::default().write_timeout(Duration::from_millis(300)).replay_capacity(64),
    );
    let addr = serve(&notifier).await;
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
    let notifier = Notifier::with_config(Config::default().allowed_origins(["https://app.example"]));
    let addr = serve(&notifier).await;
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
