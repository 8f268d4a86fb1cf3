//! Snapshot cursors over real sockets: a JSON read carries the cursor taken
//! before it read (`tidings-cursor`), and a client that connects with it
//! receives every write made after the read.

mod common;

use axum::Json;
use axum::extract::State;
use axum::routing::get;
use common::{Client, LIMIT, serve_router};
use serde_json::{Value, json};
use tidings::axum::{CURSOR_HEADER, Snapshot};
use tidings::{Notifier, Notify, Op};
use tokio::time::timeout;

/// A read that, like a real one, may race a write: it notifies in the middle
/// of "reading", after the snapshot was taken.
async fn list(snapshot: Snapshot, State(notifier): State<Notifier>) -> (Snapshot, Json<Value>) {
    notifier.notify_with("forums", Op::Insert, &json!({"id": "during"})).unwrap();
    (snapshot, Json(json!([])))
}

async fn without_layer(snapshot: Snapshot) -> (Snapshot, &'static str) {
    (snapshot, "unreachable")
}

#[tokio::test]
async fn a_read_carries_the_cursor_from_before_it_and_resuming_from_it_misses_nothing() {
    let notifier = Notifier::new();
    notifier.notify("forums", Op::Insert);
    let before = notifier.cursor().to_string();
    let app = axum::Router::new()
        .route("/api/forums", get(list))
        .with_state(notifier.clone())
        .layer(tidings::axum::layer(&notifier))
        .route("/bare", get(without_layer))
        .merge(tidings::axum::routes(&notifier));
    let addr = serve_router(app).await;

    let response = timeout(LIMIT, reqwest::get(format!("http://{addr}/api/forums"))).await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    let cursor = response.headers()[CURSOR_HEADER.as_str()].to_str().unwrap().to_owned();
    assert_eq!(cursor, before, "taken before the handler's write");
    // A write after the read, before the page connects.
    notifier.notify_with("forums", Op::Insert, &json!({"id": "after"})).unwrap();

    let mut client = Client::connect(addr, &format!("cursor={cursor}")).await;
    assert_eq!(client.next_json().await["data"]["id"], "during", "one reload too many, never a loss");
    assert_eq!(client.next_json().await["data"]["id"], "after", "the write after the read is delivered");

    let bare = timeout(LIMIT, reqwest::get(format!("http://{addr}/bare"))).await.unwrap().unwrap();
    assert_eq!(bare.status(), 500);
    assert_eq!(bare.json::<Value>().await.unwrap()["code"], "missing_layer");
}
