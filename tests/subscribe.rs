//! A `subscribe` frame with a cursor, over real sockets: what was written
//! between the read behind a new subscription and the moment it reached
//! the server is replayed; a cursor the history cannot place gets a
//! `resync` for the collections subscribed; a malformed one is refused.
//!
//! "Nothing else arrived" is checked by ordering: after the frames a client
//! must get, a marker is notified, and the next frame it reads has to be
//! that marker.

mod common;

use common::{Client, serve};
use serde_json::{Value, json};
use tidings::{Config, Notifier, Notify, Op};

fn post(notifier: &Notifier, id: i64, forum_id: i64) {
    notifier.notify_with("posts", Op::Insert, &json!({"id": id, "forum_id": forum_id})).unwrap();
}

/// Notifies the marker and returns its cursor once `client` read it.
async fn marker(notifier: &Notifier, client: &mut Client) -> String {
    notifier.notify("marker", Op::Insert);
    let frame = client.next_json().await;
    assert_eq!(frame["collection"], "marker", "a frame that should not have come: {frame}");
    frame["cursor"].as_str().unwrap().to_owned()
}

/// Sends a `subscribe` for posts of `forum_id` from `cursor`.
async fn subscribe_posts(client: &mut Client, forum_id: i64, cursor: &str) {
    let frame =
        json!({"type":"subscribe","collections":["posts"],"where":{"forum_id":forum_id},"cursor":cursor});
    client.send_text(&frame.to_string()).await;
}

/// The next `count` frames.
async fn frames(client: &mut Client, count: usize) -> Vec<Value> {
    let mut frames = Vec::with_capacity(count);
    for _ in 0..count {
        frames.push(client.next_json().await);
    }
    frames
}

fn post_ids(frames: &[Value]) -> Vec<i64> {
    frames.iter().filter(|f| f["collection"] == "posts").map(|f| f["data"]["id"].as_i64().unwrap()).collect()
}

/// The repro of the moving subscription: the page read forum 3 at `read`,
/// a post to forum 3 was written, and only then did the `subscribe` reach
/// the server, after the session had read on past that post (a marker).
#[tokio::test]
async fn a_subscribe_with_a_cursor_replays_what_was_written_after_the_read() {
    let notifier = Notifier::new();
    let addr = serve(&notifier).await;
    let mut client = Client::connect(addr, "collections=marker").await;
    let read = client.cursor.clone();

    post(&notifier, 1, 5);
    post(&notifier, 2, 3);
    let position = marker(&notifier, &mut client).await;

    subscribe_posts(&mut client, 3, &read).await;
    let got = frames(&mut client, 2).await;
    assert_eq!(post_ids(&got[..1]), [2], "the post to forum 3 after the read is replayed: {got:?}");
    assert_eq!(got[1]["type"], "subscribed", "{got:?}");
    // The replayed frame carries an older cursor than the session had: the
    // reply gives the client its position back.
    assert_eq!(got[1]["cursor"], position.as_str(), "{got:?}");

    // From now on, live, by the new filter only.
    post(&notifier, 3, 5);
    post(&notifier, 4, 3);
    assert_eq!(client.next_json().await["data"]["id"], 4);
    marker(&notifier, &mut client).await;
}

/// The same, when the session had not read past the post yet: it was
/// handed out (to nobody) under the old subscription, and is read again
/// with the new one.
#[tokio::test]
async fn a_subscribe_with_a_cursor_delivers_what_was_handed_out_under_the_old_subscription() {
    let notifier = Notifier::new();
    let addr = serve(&notifier).await;
    let mut client = Client::connect(addr, "collections=marker").await;
    let read = client.cursor.clone();

    post(&notifier, 1, 3);
    post(&notifier, 2, 5);
    subscribe_posts(&mut client, 3, &read).await;
    let got = frames(&mut client, 2).await;
    assert_eq!(post_ids(&got), [1], "{got:?}");
    assert!(got.iter().any(|f| f["type"] == "subscribed"), "{got:?}");
    marker(&notifier, &mut client).await;
}

/// Without a cursor, the subscription starts where the server is: what was
/// written before it arrived is the page's to read (the behaviour the
/// cursor exists to fix, kept for clients that send none).
#[tokio::test]
async fn a_subscribe_without_a_cursor_starts_at_the_head() {
    let notifier = Notifier::new();
    let addr = serve(&notifier).await;
    let mut client = Client::connect(addr, "collections=marker").await;
    post(&notifier, 1, 3);
    marker(&notifier, &mut client).await;
    client.send_text(r#"{"type":"subscribe","collections":["posts"],"where":{"forum_id":3}}"#).await;
    let ack = client.next_json().await;
    assert_eq!(ack["type"], "subscribed", "{ack}");
    assert!(ack.get("cursor").is_none(), "{ack}");
    marker(&notifier, &mut client).await;
}

/// A cursor the history no longer holds, when the index of changes can
/// place it: a `resync` names only the subscribed collections that changed
/// after it.
#[tokio::test]
async fn a_subscribe_with_a_cursor_older_than_the_history_gets_a_precise_resync() {
    let notifier = Notifier::with_config(Config::default().replay_capacity(2));
    let addr = serve(&notifier).await;
    let mut client = Client::connect(addr, "collections=marker").await;
    let read = client.cursor.clone();
    post(&notifier, 1, 3);
    for _ in 0..3 {
        marker(&notifier, &mut client).await;
    }
    let frame = json!({"type":"subscribe","collections":["posts","comments"],"cursor":read});
    client.send_text(&frame.to_string()).await;
    let got = frames(&mut client, 2).await;
    assert_eq!(got[0]["type"], "resync", "{got:?}");
    assert_eq!(got[0]["collections"], json!(["posts"]), "{got:?}");
    assert_eq!(got[1]["type"], "subscribed", "{got:?}");
    marker(&notifier, &mut client).await;

    // Nothing of either changed after a recent cursor: no resync at all.
    let recent = marker(&notifier, &mut client).await;
    let frame = json!({"type":"subscribe","collections":["comments"],"cursor":recent});
    client.send_text(&frame.to_string()).await;
    assert_eq!(client.next_json().await["type"], "subscribed");
    marker(&notifier, &mut client).await;
}

/// Cursors the server cannot place (another instance's epoch, beyond the
/// head) get a `resync` for exactly the collections subscribed; a
/// malformed one is refused and changes nothing.
#[tokio::test]
async fn a_subscribe_with_a_cursor_it_cannot_place_gets_a_resync_for_its_collections() {
    let notifier = Notifier::new();
    let addr = serve(&notifier).await;
    let mut client = Client::connect(addr, "collections=marker").await;
    let epoch = client.cursor.split_once('-').unwrap().0.to_owned();
    let other = if epoch == "00000001" { "00000002-1" } else { "00000001-1" };
    for cursor in [other.to_owned(), format!("{epoch}-1000012")] {
        subscribe_posts(&mut client, 3, &cursor).await;
        let got = frames(&mut client, 2).await;
        assert_eq!(got[0]["type"], "resync", "{cursor}: {got:?}");
        assert_eq!(got[0]["collections"], json!(["posts"]), "{cursor}: {got:?}");
        assert_eq!(got[0]["cursor"], client.cursor.as_str(), "the resync moves nothing: {got:?}");
        assert_eq!(got[1]["type"], "subscribed", "{cursor}: {got:?}");
    }

    client.send_text(r#"{"type":"subscribe","collections":["comments"],"cursor":"yesterday"}"#).await;
    let error = client.next_json().await;
    assert_eq!(
        (error["type"].as_str(), error["code"].as_str()),
        (Some("error"), Some("bad_frame")),
        "{error}"
    );
    notifier.notify("comments", Op::Insert);
    marker(&notifier, &mut client).await;
}
