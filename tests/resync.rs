//! Precise resync: a session that lost notifications is told which
//! collections changed since what it saw, within what it may see, and told
//! to reload everything only when the server cannot tell.

mod common;

use common::{Client, LIMIT, seq, serve, serve_with};
use serde_json::{Value, json};
use tidings::axum::{Rejection, Settings};
use tidings::{Config, Identity, Notification, Notifier, Notify, Op};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// The `collections` of a `resync` frame: `None` when absent (everything).
fn named(resync: &Value) -> Option<Vec<&str>> {
    assert_eq!(resync["type"], "resync", "expected a resync: {resync}");
    resync
        .get("collections")
        .map(|list| list.as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect())
}

#[tokio::test]
async fn a_slow_reader_is_told_exactly_which_collections_changed() {
    let notifier = Notifier::with_config(Config::default().replay_capacity(16));
    let addr = serve(&notifier).await;
    let mut slow = Client::connect(addr, "collections=blobs,posts,forums").await;
    let mut fast = Client::connect(addr, "").await;

    // As in tests/delivery.rs: 64 × 256 KiB fill the loopback buffers, so
    // the slow client's writer blocks and falls more than 16 behind, while
    // the fast client reads each one before the next is sent.
    let big = "x".repeat(256 * 1024);
    for i in 0..64u64 {
        notifier.notify_with("blobs", Op::Insert, &json!({ "i": i, "blob": big })).unwrap();
        assert_eq!(fast.next_json().await["data"]["i"], i);
    }
    // After the lag: one the slow client subscribed to, one it did not.
    notifier.notify("posts", Op::Insert);
    notifier.notify("comments", Op::Insert);
    assert_eq!(fast.next_json().await["collection"], "posts");
    assert_eq!(fast.next_json().await["collection"], "comments");

    let mut resync = None;
    for _ in 0..100 {
        let frame = slow.next_json().await;
        if frame["type"] == "resync" {
            resync = Some(frame);
            break;
        }
        assert_eq!(frame["collection"], "blobs", "before the resync, only blobs it read in time");
    }
    let resync = resync.expect("the slow client lagged");
    // `forums` never changed; `comments` did, but is not subscribed.
    assert_eq!(named(&resync), Some(vec!["blobs", "posts"]), "{resync}");
    assert_eq!(resync["cursor"], notifier.cursor().to_string());
    notifier.notify("forums", Op::Update);
    assert_eq!(slow.next_json().await["collection"], "forums", "live again after the resync");
}

#[tokio::test]
async fn resuming_from_an_evicted_cursor_names_what_changed_since_it() {
    let notifier = Notifier::with_config(Config::default().replay_capacity(4));
    let addr = serve(&notifier).await;
    let before_forums = notifier.cursor().to_string();
    notifier.notify("forums", Op::Insert);
    let after_forums = notifier.cursor().to_string();
    for _ in 0..10 {
        notifier.notify("posts", Op::Insert);
    }
    let head = notifier.cursor().to_string();

    let cases = [
        (&before_forums, "", vec!["forums", "posts"]),
        (&after_forums, "", vec!["posts"]),
        (&after_forums, "&collections=forums,tags", vec![]),
    ];
    for (cursor, query, expected) in cases {
        let mut client = Client::connect(addr, &format!("cursor={cursor}{query}")).await;
        assert_eq!(client.cursor, head, "hello carries the head, not the evicted cursor");
        let resync = client.next_json().await;
        assert_eq!(named(&resync), Some(expected), "from {cursor}{query}: {resync}");
        assert_eq!(resync["cursor"], head);
    }
}

/// `x-user: admin` is in audience `admin`; `x-user: guest` is in none and
/// may read `posts` and `audit` only.
fn with_audiences() -> Settings {
    Settings::default().authorize(|parts| {
        let user = parts.headers.get("x-user").and_then(|v| v.to_str().ok()).map(str::to_owned);
        async move {
            match user.as_deref() {
                Some("admin") => Ok(Identity::user("admin").audience("admin")),
                Some("guest") => Ok(Identity::user("guest").collections(["posts", "audit"])),
                _ => Err(Rejection::unauthorized("send x-user")),
            }
        }
    })
}

async fn connect_as(addr: std::net::SocketAddr, user: &str, query: &str) -> Client {
    let mut request = format!("ws://{addr}/ws?{query}").into_client_request().unwrap();
    request.headers_mut().insert("x-user", user.parse().unwrap());
    let (ws, _) = timeout(LIMIT, tokio_tungstenite::connect_async(request)).await.unwrap().unwrap();
    Client::from_socket(ws).await
}

#[tokio::test]
async fn a_resync_never_names_what_the_session_may_not_see() {
    let notifier = Notifier::with_config(Config::default().replay_capacity(4));
    let addr = serve_with(&notifier, with_audiences()).await;
    let old = notifier.cursor().to_string();
    notifier.push(Notification::new("audit", Op::Insert).to("admin"));
    notifier.notify("reports", Op::Insert);
    for _ in 0..5 {
        notifier.notify("posts", Op::Insert);
    }

    let mut admin = connect_as(addr, "admin", &format!("cursor={old}")).await;
    let resync = admin.next_json().await;
    assert_eq!(named(&resync), Some(vec!["audit", "posts", "reports"]), "{resync}");

    // Subscribed to everything, the guest still learns nothing of the admin
    // audience's `audit`, nor of `reports`, which it may not read.
    let mut guest = connect_as(addr, "guest", &format!("cursor={old}")).await;
    let resync = guest.next_json().await;
    assert_eq!(named(&resync), Some(vec!["posts"]), "{resync}");
    assert!(!resync.to_string().contains("audit"), "{resync}");
}

#[tokio::test]
async fn only_a_cursor_the_server_can_place_gets_a_list() {
    let notifier = Notifier::with_config(Config::default().replay_capacity(2));
    let addr = serve(&notifier).await;
    let evicted = notifier.cursor();
    for _ in 0..5 {
        notifier.notify("posts", Op::Insert);
    }
    let here = notifier.cursor();
    let other_epoch = format!("{:08x}-{}", here.epoch().wrapping_add(1), evicted.seq());
    let future = format!("{:08x}-{}", here.epoch(), here.seq() + 5);
    for cursor in [other_epoch.as_str(), future.as_str(), "garbage", "1732380000000-0"] {
        let mut client = Client::connect(addr, &format!("cursor={cursor}")).await;
        let resync = client.next_json().await;
        assert_eq!(named(&resync), None, "{cursor}: reload everything: {resync}");
        assert_eq!(resync["cursor"], here.to_string());
    }
    let mut client = Client::connect(addr, &format!("cursor={evicted}")).await;
    assert_eq!(named(&client.next_json().await), Some(vec!["posts"]), "this epoch's evicted cursor");
}

#[tokio::test]
async fn past_the_index_bound_old_cursors_get_a_full_resync() {
    let notifier = Notifier::with_config(Config::default().replay_capacity(4));
    let addr = serve(&notifier).await;
    let oldest = notifier.cursor().to_string();
    notifier.notify("posts", Op::Insert);
    // One notification to each of 4,096 users: more (collection, audience)
    // pairs than the index keeps, so it forgets the oldest ones.
    for user in 0..4096 {
        notifier.push(Notification::new("inbox", Op::Insert).to(format!("user:{user}")));
    }
    let recent = notifier.cursor().to_string();
    notifier.notify("forums", Op::Insert);
    for _ in 0..4 {
        notifier.notify("tags", Op::Insert);
    }

    let mut client = Client::connect(addr, &format!("cursor={oldest}")).await;
    let resync = client.next_json().await;
    assert_eq!(named(&resync), None, "from before what the index knows: {resync}");

    let mut client = Client::connect(addr, &format!("cursor={recent}")).await;
    let resync = client.next_json().await;
    assert_eq!(named(&resync), Some(vec!["forums", "tags"]), "a recent cursor is still precise: {resync}");
    assert!(seq(resync["cursor"].as_str().unwrap()) > seq(&recent));
}
