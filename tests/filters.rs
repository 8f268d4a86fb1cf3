//! Row-level filters over real sockets: `where` in subscribe frames, in the
//! connect query and over SSE; moves and deletes; limits and their errors.
//!
//! "Nothing else arrived" is checked by ordering, not by waiting: after the
//! notifications a client must not get, a marker it must get is sent, and
//! the next frame it reads has to be that marker.

mod common;

use std::net::SocketAddr;

use common::{Client, LIMIT, encode, serve, wait_sessions};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tidings::{Notification, Notifier, Notify, Op};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::timeout;

fn post(notifier: &Notifier, op: Op, data: Value) {
    notifier.notify_with("posts", op, &data).unwrap();
}

/// Sends a marker on `marker`, which every client here subscribes to
/// unfiltered, and checks that it is the next frame `client` reads.
async fn expect_marker(notifier: &Notifier, client: &mut Client) {
    notifier.notify("marker", Op::Insert);
    let frame = client.next_json().await;
    assert_eq!(frame["collection"], "marker", "a frame the filter should have held back: {frame}");
}

async fn subscribe(client: &mut Client, frame: Value) -> Value {
    client.send_text(&frame.to_string()).await;
    client.next_json().await
}

#[tokio::test]
async fn a_subscribe_frame_with_where_filters_by_equality() {
    let notifier = Notifier::new();
    let addr = serve(&notifier).await;
    let mut client = Client::connect(addr, "collections=marker").await;
    let ack =
        subscribe(&mut client, json!({"type":"subscribe","collections":["posts"],"where":{"forum_id":3}}))
            .await;
    assert_eq!(ack["type"], "subscribed", "{ack}");

    post(&notifier, Op::Insert, json!({"id": 1, "forum_id": 5}));
    post(&notifier, Op::Insert, json!({"id": 2, "forum_id": 3}));
    let frame = client.next_json().await;
    assert_eq!((frame["collection"].as_str(), frame["data"]["id"].as_i64()), (Some("posts"), Some(2)));
    expect_marker(&notifier, &mut client).await;

    // Subscribing again replaces the filter: now forum 5 only.
    subscribe(&mut client, json!({"type":"subscribe","collections":["posts"],"where":{"forum_id":5}})).await;
    post(&notifier, Op::Insert, json!({"id": 3, "forum_id": 3}));
    post(&notifier, Op::Insert, json!({"id": 4, "forum_id": 5}));
    assert_eq!(client.next_json().await["data"]["id"], 4);
    expect_marker(&notifier, &mut client).await;
}

#[tokio::test]
async fn in_and_and_conditions_and_alternatives() {
    let notifier = Notifier::new();
    let addr = serve(&notifier).await;
    let mut client = Client::connect(addr, "collections=marker").await;
    let where_ = json!([{"forum_id": [1, 2], "kind": "question"}, {"id": 99}]);
    let ack =
        subscribe(&mut client, json!({"type":"subscribe","collections":["posts"],"where":where_})).await;
    assert_eq!(ack["type"], "subscribed", "{ack}");

    post(&notifier, Op::Insert, json!({"id": 1, "forum_id": 1, "kind": "answer"})); // AND fails
    post(&notifier, Op::Insert, json!({"id": 2, "forum_id": 3, "kind": "question"})); // in fails
    post(&notifier, Op::Insert, json!({"id": 3, "forum_id": 2, "kind": "question"})); // passes
    post(&notifier, Op::Insert, json!({"id": 99, "forum_id": 7})); // the other alternative
    assert_eq!(client.next_json().await["data"]["id"], 3);
    assert_eq!(client.next_json().await["data"]["id"], 99);
    expect_marker(&notifier, &mut client).await;
}

#[tokio::test]
async fn filters_in_the_connect_query_apply_from_the_first_frame() {
    let notifier = Notifier::new();
    let addr = serve(&notifier).await;
    let filters = encode(r#"{"forums":{"id":[1,2]}}"#);
    let mut client = Client::connect(addr, &format!("collections=forums,marker&where={filters}")).await;
    for id in 0..4 {
        notifier.notify_with("forums", Op::Update, &json!({ "id": id })).unwrap();
    }
    assert_eq!(client.next_json().await["data"]["id"], 1);
    assert_eq!(client.next_json().await["data"]["id"], 2);
    expect_marker(&notifier, &mut client).await;
}

#[tokio::test]
async fn notifications_without_data_reach_filtered_subscribers() {
    // A condensed batch, or a notify without data, says nothing a filter can
    // check: holding it back could hide a change the page shows.
    let notifier = Notifier::new();
    let addr = serve(&notifier).await;
    let filters = encode(r#"{"posts":{"forum_id":3}}"#);
    let mut client = Client::connect(addr, &format!("collections=posts,marker&where={filters}")).await;
    notifier.notify("posts", Op::Delete);
    let frame = client.next_json().await;
    assert_eq!((frame["collection"].as_str(), frame.get("data")), (Some("posts"), None));
    expect_marker(&notifier, &mut client).await;
}

#[tokio::test]
async fn a_move_reaches_both_sides_and_a_delete_reaches_the_rows_subscribers() {
    let notifier = Notifier::new();
    let addr = serve(&notifier).await;
    let forum = |n: u32| {
        let filters = encode(&json!({ "posts": { "forum_id": n } }).to_string());
        format!("collections=posts,marker&where={filters}")
    };
    let mut three = Client::connect(addr, &forum(3)).await;
    let mut five = Client::connect(addr, &forum(5)).await;
    let mut seven = Client::connect(addr, &forum(7)).await;

    // Post 9 moves from forum 3 to forum 5: `before` states the old value.
    post(&notifier, Op::Update, json!({"id": 9, "forum_id": 5, "before": {"forum_id": 3}}));
    for client in [&mut three, &mut five] {
        let frame = client.next_json().await;
        assert_eq!((frame["op"].as_str(), frame["data"]["id"].as_i64()), (Some("update"), Some(9)));
        assert_eq!(frame["data"]["before"]["forum_id"], 3, "the frame is the notification as sent");
    }
    // Then it is deleted from forum 5: its data carries the row's fields.
    post(&notifier, Op::Delete, json!({"id": 9, "forum_id": 5}));
    let frame = five.next_json().await;
    assert_eq!((frame["op"].as_str(), frame["data"]["id"].as_i64()), (Some("delete"), Some(9)));
    for client in [&mut three, &mut five, &mut seven] {
        expect_marker(&notifier, client).await;
    }
}

#[tokio::test]
async fn bad_filters_are_refused_with_an_error_frame_and_change_nothing() {
    let notifier = Notifier::new();
    let addr = serve(&notifier).await;
    let mut client = Client::connect(addr, "collections=marker").await;
    subscribe(&mut client, json!({"type":"subscribe","collections":["posts"],"where":{"forum_id":3}})).await;

    let values: Vec<u32> = (0..65).collect();
    for (frame, code) in [
        (json!({"type":"subscribe","collections":["posts"],"where":{"forum_id":{"gt":3}}}), "bad_frame"),
        (json!({"type":"subscribe","collections":["posts"],"where":{"a b":1}}), "bad_frame"),
        (json!({"type":"subscribe","collections":["posts"],"where":"forum_id=3"}), "bad_frame"),
        (json!({"type":"subscribe","collections":["*"],"where":{"id":1}}), "bad_frame"),
        (json!({"type":"subscribe","collections":["posts"],"where":{"id":values}}), "forbidden"),
    ] {
        let error = subscribe(&mut client, frame.clone()).await;
        assert_eq!((error["type"].as_str(), error["code"].as_str()), (Some("error"), Some(code)), "{frame}");
        assert!(error["message"].as_str().unwrap().len() < 120, "{error}");
    }
    // The filter from before the refusals still holds.
    post(&notifier, Op::Insert, json!({"id": 1, "forum_id": 4}));
    post(&notifier, Op::Insert, json!({"id": 2, "forum_id": 3}));
    assert_eq!(client.next_json().await["data"]["id"], 2);
    expect_marker(&notifier, &mut client).await;
}

#[tokio::test]
async fn bad_filters_in_the_query_are_answered_with_400() {
    let notifier = Notifier::new();
    let addr = serve(&notifier).await;
    let http = reqwest::Client::new();
    for filters in [r#"{"posts":{"forum_id":{"gt":3}}}"#, "not json", r#"{"posts":{"id":[]}}"#] {
        let url = format!("http://{addr}/events?collections=posts&where={}", encode(filters));
        let response = timeout(LIMIT, http.get(url).send()).await.unwrap().unwrap();
        assert_eq!(response.status(), 400, "{filters}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], "bad_query", "{body}");
    }
}

/// A minimal SSE reader: HTTP/1.0, so the body is the raw event stream.
async fn sse_events(addr: SocketAddr, query: &str) -> tokio::io::Lines<BufReader<TcpStream>> {
    let mut socket = TcpStream::connect(addr).await.unwrap();
    let request =
        format!("GET /events?{query} HTTP/1.0\r\nhost: {addr}\r\naccept: text/event-stream\r\n\r\n");
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut lines = BufReader::new(socket).lines();
    let status = timeout(LIMIT, lines.next_line()).await.unwrap().unwrap().unwrap();
    assert!(status.contains(" 200 "), "{status}");
    lines
}

async fn next_sse_data(lines: &mut tokio::io::Lines<BufReader<TcpStream>>) -> Value {
    for _ in 0..1000 {
        let line = timeout(LIMIT, lines.next_line()).await.unwrap().unwrap().expect("stream ended");
        if let Some(data) = line.strip_prefix("data: ").or(line.strip_prefix("data:")) {
            return serde_json::from_str(data).unwrap();
        }
    }
    panic!("too many lines without data");
}

#[tokio::test]
async fn sse_sessions_filter_by_the_query() {
    let notifier = Notifier::new();
    let addr = serve(&notifier).await;
    let filters = encode(r#"{"posts":{"forum_id":3}}"#);
    let mut events = sse_events(addr, &format!("collections=posts,marker&where={filters}")).await;
    assert_eq!(next_sse_data(&mut events).await["type"], "hello");
    post(&notifier, Op::Insert, json!({"id": 1, "forum_id": 4}));
    post(&notifier, Op::Insert, json!({"id": 2, "forum_id": 3}));
    notifier.notify("marker", Op::Insert);
    assert_eq!(next_sse_data(&mut events).await["data"]["id"], 2);
    assert_eq!(next_sse_data(&mut events).await["collection"], "marker");
}

fn forum_1() -> String {
    format!("collections=posts,marker&where={}", encode(r#"{"posts":{"forum_id":1}}"#))
}

#[tokio::test]
async fn a_replay_of_what_came_before_any_session_is_filtered() {
    // As an instance that just started and loaded its outbox's tail: no
    // session existed when those entries were appended.
    let notifier = Notifier::new();
    let addr = serve(&notifier).await;
    let start = encode(&notifier.cursor().to_string());
    post(&notifier, Op::Insert, json!({"id": 1, "forum_id": 2}));
    post(&notifier, Op::Insert, json!({"id": 2, "forum_id": 1}));
    let mut client = Client::connect(addr, &format!("{}&cursor={start}", forum_1())).await;
    assert_eq!(client.next_json().await["data"]["id"], 2, "the private forum's post was replayed");
    expect_marker(&notifier, &mut client).await;
}

#[tokio::test]
async fn a_replay_of_what_came_while_no_session_filtered_is_filtered() {
    let notifier = Notifier::new();
    let addr = serve(&notifier).await;
    let query = forum_1();
    let client = Client::connect(addr, &query).await;
    let seen = encode(&notifier.cursor().to_string());
    drop(client);
    wait_sessions(&notifier, 0).await;
    post(&notifier, Op::Insert, json!({"id": 3, "forum_id": 2}));
    post(&notifier, Op::Insert, json!({"id": 4, "forum_id": 1}));
    let mut client = Client::connect(addr, &format!("{query}&cursor={seen}")).await;
    assert_eq!(client.next_json().await["data"]["id"], 4, "appended while nobody filtered");
    expect_marker(&notifier, &mut client).await;
}

#[tokio::test]
async fn data_a_filter_cannot_read_reaches_only_unfiltered_subscribers() {
    let notifier = Notifier::new();
    let addr = serve(&notifier).await;
    let filters = encode(r#"{"posts":{"forum_id":1}}"#);
    let mut filtered = Client::connect(addr, &format!("collections=posts,marker&where={filters}")).await;
    let mut everything = Client::connect(addr, "collections=posts,marker").await;
    // Not an object; an object with a number no f64 holds.
    for raw in ["[1,2]", r#""forum 1""#, "7", r#"{"forum_id":1,"size":1e400}"#] {
        let data = RawValue::from_string(raw.to_owned()).unwrap();
        notifier.publish(Notification::new("posts", Op::Insert).with_raw_data(data)).await.unwrap();
        let text = everything.next_text().await;
        assert!(text.contains(&format!(r#""data":{raw}"#)), "{text}");
    }
    expect_marker(&notifier, &mut filtered).await;
}

#[tokio::test]
async fn where_without_collections_subscribes_only_the_filtered_collections() {
    let notifier = Notifier::new();
    let addr = serve(&notifier).await;
    let filters = encode(r#"{"posts":{"forum_id":1}}"#);
    let mut client = Client::connect(addr, &format!("where={filters}")).await;
    notifier.notify("forums", Op::Insert);
    post(&notifier, Op::Insert, json!({"id": 1, "forum_id": 2}));
    post(&notifier, Op::Insert, json!({"id": 2, "forum_id": 1}));
    let frame = client.next_json().await;
    assert_eq!(
        (frame["collection"].as_str(), frame["data"]["id"].as_i64()),
        (Some("posts"), Some(2)),
        "{frame}"
    );
}
