//! Delivery guarantees: resume, resync, slow clients, subscriptions,
//! audiences and the origin skip, live and in replay.

mod common;

use common::{Client, LIMIT, seq, serve, serve_router, serve_with, wait_sessions};
use serde_json::{Value, json};
use tidings::axum::{Rejection, Settings};
use tidings::{Config, Identity, Notification, Notifier, Notify, Op};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

fn marker(notifier: &Notifier) {
    notifier.notify("marker", Op::Insert);
}

#[tokio::test]
async fn resume_after_missing_n_gets_exactly_n_in_order() {
    let notifier = Notifier::new();
    let addr = serve(&notifier).await;
    let mut client = Client::connect(addr, "").await;
    notifier.notify("forums", Op::Insert);
    let last = client.next_json().await["cursor"].as_str().unwrap().to_owned();
    drop(client);
    wait_sessions(&notifier, 0).await;

    for id in 0..5 {
        notifier.notify_with("posts", Op::Insert, &json!({ "id": id })).unwrap();
    }
    let mut client = Client::connect(addr, &format!("cursor={last}")).await;
    assert_eq!(client.cursor, last, "hello confirms the resume point");
    for id in 0..5 {
        let frame = client.next_json().await;
        assert_eq!(frame["data"]["id"], id);
        assert_eq!(seq(frame["cursor"].as_str().unwrap()), seq(&last) + 1 + id);
    }
    marker(&notifier);
    assert_eq!(client.next_json().await["collection"], "marker", "no duplicates after the replay");
}

#[tokio::test]
async fn resume_from_an_evicted_cursor_gets_resync() {
    let notifier = Notifier::with_config(Config::default().replay_capacity(4));
    let addr = serve(&notifier).await;
    let old = notifier.cursor().to_string();
    for _ in 0..10 {
        notifier.notify("posts", Op::Insert);
    }
    let mut client = Client::connect(addr, &format!("cursor={old}")).await;
    let resync = client.next_json().await;
    assert_eq!(resync["type"], "resync");
    assert_eq!(resync["cursor"], notifier.cursor().to_string());
    marker(&notifier);
    assert_eq!(client.next_json().await["collection"], "marker");
}

#[tokio::test]
async fn resume_with_a_foreign_or_unknown_cursor_gets_resync() {
    let notifier = Notifier::new();
    let addr = serve(&notifier).await;
    notifier.notify("posts", Op::Insert);
    let here = notifier.cursor();
    let other_epoch = format!("{:08x}-1", here.epoch().wrapping_add(1));
    let future = format!("{:08x}-{}", here.epoch(), here.seq() + 5);
    for cursor in [other_epoch.as_str(), future.as_str(), "garbage"] {
        let mut client = Client::connect(addr, &format!("cursor={cursor}")).await;
        let frame = client.next_json().await;
        assert_eq!(frame["type"], "resync", "for cursor {cursor}");
        assert_eq!(frame["cursor"], here.to_string());
    }
}

#[tokio::test]
async fn a_client_that_stops_reading_gets_resync_while_others_keep_up() {
    let notifier = Notifier::with_config(Config::default().replay_capacity(16));
    let addr = serve(&notifier).await;
    let mut slow = Client::connect(addr, "").await;
    let mut fast = Client::connect(addr, "").await;
    let start = seq(&slow.cursor);

    // 64 × 256 KiB: more than loopback buffers hold, so the slow client's
    // writer blocks and falls more than 16 notifications behind. The fast
    // client reads each one before the next is sent, so it never lags.
    let big = "x".repeat(256 * 1024);
    for i in 0..64u64 {
        notifier.notify_with("blobs", Op::Insert, &json!({ "i": i, "blob": big })).unwrap();
        let frame = fast.next_json().await;
        assert_eq!(frame["data"]["i"], i, "the fast client receives everything, in order");
    }
    marker(&notifier);
    assert_eq!(fast.next_json().await["collection"], "marker");

    // Now the slow client reads: a contiguous run, one resync, then the rest
    // contiguous again, up to the head. Never a silent gap.
    let head = notifier.cursor().seq();
    let mut expected = start + 1;
    let mut resyncs = 0;
    for _ in 0..100 {
        if expected > head {
            break;
        }
        let frame = slow.next_json().await;
        if frame["type"] == "resync" {
            resyncs += 1;
            expected = seq(frame["cursor"].as_str().unwrap()) + 1;
            continue;
        }
        assert_eq!(seq(frame["cursor"].as_str().unwrap()), expected, "gap without resync");
        expected += 1;
    }
    assert_eq!(resyncs, 1, "the lag is reported exactly once");
    assert_eq!(expected, head + 1, "caught up with the head");
    marker(&notifier);
    assert_eq!(slow.next_json().await["cursor"], notifier.cursor().to_string(), "live again");
    assert_eq!(notifier.session_count(), 2, "a slow client is not closed");
}

#[tokio::test]
async fn subscriptions_filter_live_delivery() {
    let notifier = Notifier::new();
    let addr = serve(&notifier).await;
    let mut client = Client::connect(addr, "collections=forums").await;

    notifier.notify("posts", Op::Insert);
    notifier.notify("forums", Op::Insert);
    assert_eq!(client.next_json().await["collection"], "forums");

    client.send_text(r#"{"type":"subscribe","collections":["posts"]}"#).await;
    assert_eq!(
        client.next_json().await,
        json!({"type":"subscribed","collections":["posts"],"all":false,"count":2})
    );
    notifier.notify("posts", Op::Update);
    assert_eq!(client.next_json().await["collection"], "posts");

    client.send_text(r#"{"type":"unsubscribe","collections":["forums"]}"#).await;
    assert_eq!(
        client.next_json().await,
        json!({"type":"unsubscribed","collections":["forums"],"all":false,"count":1})
    );
    notifier.notify("forums", Op::Update);
    notifier.notify("posts", Op::Delete);
    let frame = client.next_json().await;
    assert_eq!((frame["collection"].as_str(), frame["op"].as_str()), (Some("posts"), Some("delete")));
}

#[tokio::test]
async fn subscription_replies_stay_proportional_to_what_the_client_sent() {
    let notifier = Notifier::new();
    let addr = serve(&notifier).await;
    let mut client = Client::connect(addr, "").await;
    let frame = |kind: &str, names: Value| json!({"type": kind, "collections": names}).to_string();
    let name = |i: usize, len: usize| format!("{i:03}{}", "x".repeat(len - 3));
    // Issue 9's attack: 256 subscribes of one 4,000-character name each.
    let attack = (0..256).map(|i| frame("subscribe", json!([name(i, 4000)])));
    // The smallest frames, refused or not, whose replies weigh the most.
    let small = [
        frame("subscribe", json!([])),
        frame("subscribe", json!([""])),
        frame("subscribe", json!([" "])),
        frame("unsubscribe", json!([""])),
        frame("unsubscribe", json!(["z"])),
    ];
    // The most the limits allow: 256 distinct names of 128 bytes, then one more.
    let largest = (0..257).map(|i| frame("subscribe", json!([name(i, 128)])));
    let (mut bytes_in, mut bytes_out) = (0, 0);
    let mut replies = Vec::new();
    for request in attack.chain(small).chain(largest) {
        client.send_text(&request).await;
        let reply = client.next_text().await;
        assert!(reply.len() <= 3 * request.len(), "{request:.100} answered with {reply:.300}");
        bytes_in += request.len();
        bytes_out += reply.len();
        let reply: Value = serde_json::from_str(&reply).unwrap();
        let code = reply["code"].as_str().map(str::to_owned);
        replies.push((reply["type"].as_str().unwrap().to_owned(), code));
    }
    assert!(bytes_out <= bytes_in / 10, "{bytes_in} bytes in, {bytes_out} out");
    let refused = |code: &str| (String::from("error"), Some(code.to_owned()));
    let acked = |kind: &str| (String::from(kind), None);
    assert!(replies[..256].iter().all(|r| *r == refused("bad_frame")), "names over 128 bytes are refused");
    assert_eq!(
        replies[256..261],
        [
            acked("subscribed"),
            refused("bad_frame"),
            refused("bad_frame"),
            refused("bad_frame"),
            acked("unsubscribed")
        ]
    );
    assert!(replies[261..517].iter().all(|r| *r == acked("subscribed")), "names of 128 bytes are accepted");
    assert_eq!(replies[517], refused("forbidden"), "at most 256 names per session");

    // The session still works, and holds exactly what was accepted.
    client.send_text(r#"{"type":"unsubscribe","collections":["*"]}"#).await;
    assert_eq!(
        client.next_json().await,
        json!({"type": "unsubscribed", "collections": ["*"], "all": false, "count": 256})
    );
    notifier.notify(name(256, 128), Op::Insert);
    notifier.notify(name(0, 4000), Op::Insert);
    notifier.notify(name(255, 128), Op::Insert);
    assert_eq!(client.next_json().await["collection"], name(255, 128));
}

#[tokio::test]
async fn collection_names_are_checked_in_the_query() {
    let notifier = Notifier::new();
    let addr = serve(&notifier).await;
    let too_long = "n".repeat(129);
    for bad in [too_long.as_str(), "a%20b", "forums,x*", "caf%C3%A9", "a%22b", "a,,%2A%2A"] {
        let Err((status, body)) = connect_as(addr, None, &format!("collections={bad}")).await else {
            panic!("/ws?collections={bad} must be refused")
        };
        assert_eq!((status, body["code"].as_str()), (400, Some("bad_query")), "{bad}: {body}");
        assert!(body["error"].as_str().unwrap().contains("128 bytes"), "{body}");
        let request =
            format!("GET /events?collections={bad} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
        let response = raw_http(addr, &request).await;
        assert!(
            response.starts_with("HTTP/1.1 400") && response.contains(r#""code":"bad_query""#),
            "/events?collections={bad}: {response}"
        );
    }
    assert_eq!(notifier.session_count(), 0);

    // Names at the limits are fine.
    let longest = "n".repeat(128);
    let mut client = Client::connect(addr, &format!("collections={longest},a-b_c.d:e/F9")).await;
    notifier.notify("forums", Op::Insert);
    notifier.notify("a-b_c.d:e/F9", Op::Insert);
    notifier.notify(longest.clone(), Op::Insert);
    assert_eq!(client.next_json().await["collection"], "a-b_c.d:e/F9");
    assert_eq!(client.next_json().await["collection"], longest);
}

#[tokio::test]
async fn bad_collection_names_in_frames_get_an_error_and_change_nothing() {
    let notifier = Notifier::new();
    let addr = serve(&notifier).await;
    let mut client = Client::connect(addr, "collections=forums").await;
    let too_long = "p".repeat(129);
    let frames = [
        json!({"type": "subscribe", "collections": ["posts", "bad name"]}),
        json!({"type": "subscribe", "collections": ["posts", ""]}),
        json!({"type": "subscribe", "collections": ["posts", too_long]}),
        json!({"type": "subscribe", "collections": ["posts", "*x"]}),
        json!({"type": "subscribe", "collections": ["posts", "caf\u{e9}"]}),
        json!({"type": "unsubscribe", "collections": ["forums", "x\"y"]}),
    ];
    for frame in frames {
        client.send_text(&frame.to_string()).await;
        let error = client.next_json().await;
        assert_eq!(
            (error["type"].as_str(), error["code"].as_str()),
            (Some("error"), Some("bad_frame")),
            "{frame}"
        );
        assert!(error["message"].as_str().unwrap().contains("128 bytes"), "{error}");
    }
    notifier.notify("posts", Op::Insert);
    notifier.notify("forums", Op::Insert);
    assert_eq!(client.next_json().await["collection"], "forums", "not subscribed to posts, still to forums");
}

#[tokio::test]
async fn replay_honours_the_subscription() {
    let notifier = Notifier::new();
    let addr = serve(&notifier).await;
    let last = notifier.cursor().to_string();
    notifier.notify("posts", Op::Insert);
    notifier.notify_with("forums", Op::Insert, &json!({"id": 1})).unwrap();
    notifier.notify("posts", Op::Insert);
    notifier.notify_with("forums", Op::Insert, &json!({"id": 2})).unwrap();
    let mut client = Client::connect(addr, &format!("cursor={last}&collections=forums")).await;
    assert_eq!(client.next_json().await["data"]["id"], 1);
    assert_eq!(client.next_json().await["data"]["id"], 2);
    notifier.notify_with("forums", Op::Delete, &json!({"id": 3})).unwrap();
    assert_eq!(client.next_json().await["data"]["id"], 3);
}

/// Users are told by an `x-user` header; `guest` may only read forums.
fn authorizing() -> Settings {
    Settings::default().authorize(|parts| {
        let user = parts.headers.get("x-user").and_then(|v| v.to_str().ok()).map(str::to_owned);
        async move {
            match user.as_deref() {
                None => Err(Rejection::unauthorized("send x-user")),
                Some("banned") => Err(Rejection::forbidden("banned")),
                Some("guest") => Ok(Identity::anonymous().collections(["forums", "marker"])),
                Some(user) => Ok(Identity::user(user).audience(format!("user:{user}"))),
            }
        }
    })
}

async fn connect_as(
    addr: std::net::SocketAddr,
    user: Option<&str>,
    query: &str,
) -> Result<Client, (u16, Value)> {
    let mut request = format!("ws://{addr}/ws?{query}").into_client_request().unwrap();
    if let Some(user) = user {
        request.headers_mut().insert("x-user", user.parse().unwrap());
    }
    match timeout(LIMIT, tokio_tungstenite::connect_async(request)).await.unwrap() {
        Ok((ws, _)) => Ok(Client::from_socket(ws).await),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let body = serde_json::from_slice(response.body().as_deref().unwrap_or_default()).unwrap();
            Err((response.status().as_u16(), body))
        }
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test]
async fn the_authorize_hook_rejects_before_upgrading() {
    let notifier = Notifier::new();
    let addr = serve_with(&notifier, authorizing()).await;
    let Err((status, body)) = connect_as(addr, None, "").await else { panic!("must be refused") };
    assert_eq!((status, body["code"].as_str()), (401, Some("unauthorized")));
    let Err((status, _)) = connect_as(addr, Some("banned"), "").await else { panic!("must be refused") };
    assert_eq!(status, 403);
    let Err((status, body)) = connect_as(addr, Some("guest"), "collections=audit").await else {
        panic!("must be refused")
    };
    assert_eq!(status, 403);
    assert!(body["error"].as_str().unwrap().contains("audit"));
    assert_eq!(notifier.session_count(), 0);
}

#[tokio::test]
async fn refused_subscriptions_get_an_error_frame() {
    let notifier = Notifier::new();
    let addr = serve_with(&notifier, authorizing()).await;
    let mut guest = connect_as(addr, Some("guest"), "").await.unwrap();
    guest.send_text(r#"{"type":"subscribe","collections":["audit"]}"#).await;
    let error = guest.next_json().await;
    assert_eq!((error["type"].as_str(), error["code"].as_str()), (Some("error"), Some("forbidden")));
    // Even subscribed to everything, a guest only gets what it may read.
    notifier.notify("audit", Op::Insert);
    marker(&notifier);
    assert_eq!(guest.next_json().await["collection"], "marker");
}

#[tokio::test]
async fn audiences_hold_live_and_in_replay() {
    let notifier = Notifier::new();
    let addr = serve_with(&notifier, authorizing()).await;
    let mut one = connect_as(addr, Some("1"), "").await.unwrap();
    let mut two = connect_as(addr, Some("2"), "").await.unwrap();
    let two_cursor = two.cursor.clone();

    notifier.push(Notification::new("inbox", Op::Insert).to("user:1"));
    marker(&notifier);
    assert_eq!(one.next_json().await["collection"], "inbox");
    assert_eq!(one.next_json().await["collection"], "marker");
    assert_eq!(two.next_json().await["collection"], "marker", "user 2 must not see user 1's inbox");

    drop(two);
    let mut two = connect_as(addr, Some("2"), &format!("cursor={two_cursor}")).await.unwrap();
    assert_eq!(two.next_json().await["collection"], "marker", "nor in replay");
}

#[tokio::test]
async fn the_originating_session_is_skipped_unless_asked() {
    let notifier = Notifier::new();
    let addr = serve(&notifier).await;
    let mut writer = Client::connect(addr, "").await;
    let mut other = Client::connect(addr, "").await;
    let token = writer.token.parse().unwrap();

    notifier.push(Notification::new("forums", Op::Insert).with_origin(token));
    let seen = other.next_json().await;
    assert_eq!(seen["collection"], "forums");
    assert_eq!(seen["origin"], writer.session.as_str());

    notifier.push(Notification::new("forums", Op::Update).with_origin(token).deliver_to_origin());
    assert_eq!(writer.next_json().await["op"], "update", "the insert was skipped, the opt-in update was not");
}

#[tokio::test]
async fn the_request_layer_skips_the_originator_and_drops_failed_requests() {
    let notifier = Notifier::new();
    let app = writing_app(&notifier);
    let addr = serve_router(app).await;
    let mut writer = Client::connect(addr, "").await;
    let mut other = Client::connect(addr, "").await;

    let post = |body: &'static str, session: Option<String>| post_write(addr, body, session);
    assert!(post("fail", None).await.starts_with("HTTP/1.1 422"));
    let bad = post("x", Some("not-a-session".into())).await;
    assert!(bad.starts_with("HTTP/1.1 400") && bad.contains("bad_session_header"), "{bad}");
    assert!(post("mine", Some(writer.token.clone())).await.starts_with("HTTP/1.1 201"));
    assert!(post("theirs", None).await.starts_with("HTTP/1.1 201"));

    assert_eq!(other.next_json().await["data"]["body"], "mine", "failed requests send nothing");
    assert_eq!(other.next_json().await["data"]["body"], "theirs");
    assert_eq!(writer.next_json().await["data"]["body"], "theirs", "its own write is skipped");
}

/// An app whose `POST /write` notifies `forums` with the request body, through
/// the request layer (so the `tidings-session` header applies).
fn writing_app(notifier: &Notifier) -> axum::Router {
    async fn write(batch: tidings::Batch, body: String) -> axum::http::StatusCode {
        batch.notify_with("forums", Op::Insert, &json!({ "body": body })).unwrap();
        if body == "fail" {
            axum::http::StatusCode::UNPROCESSABLE_ENTITY
        } else {
            axum::http::StatusCode::CREATED
        }
    }
    axum::Router::new()
        .route("/write", axum::routing::post(write))
        .layer(tidings::axum::layer(notifier))
        .merge(tidings::axum::routes(notifier))
}

/// `POST /write` with `body`, and `session` as the `tidings-session` header.
async fn post_write(addr: std::net::SocketAddr, body: &str, session: Option<String>) -> String {
    let mut request = format!(
        "POST /write HTTP/1.1\r\nhost: {addr}\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    if let Some(s) = session {
        request.push_str(&format!("tidings-session: {s}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    raw_http(addr, &request).await
}

#[tokio::test]
async fn nothing_a_third_party_observes_stops_delivery_to_a_session() {
    let notifier = Notifier::new();
    let addr = serve_router(writing_app(&notifier)).await;
    let mut victim = Client::connect(addr, "").await;
    let mut attacker = Client::connect(addr, "").await;

    // The victim writes with its own token; the attacker sees the result.
    assert!(post_write(addr, "victim", Some(victim.token.clone())).await.starts_with("HTTP/1.1 201"));
    let seen = attacker.next_json().await;
    assert_eq!(seen["data"]["body"], "victim");
    let origin = seen["origin"].as_str().expect("a write through the layer has an origin").to_owned();
    assert_eq!(origin, victim.session, "origin is the public session id");

    // Everything the attacker can observe, and what it could make of it.
    let mut observed = vec![
        origin.clone(),
        origin.to_uppercase(),
        format!("{origin}{origin}"),
        format!("{origin:0>32}"),
        format!("{origin:0<32}"),
        seen["cursor"].as_str().unwrap().to_owned(),
        attacker.session.clone(),
        attacker.token.clone(),
        attacker.token.to_uppercase(),
        attacker.cursor.clone(),
        victim.cursor.clone(),
    ];
    observed.dedup();
    let mut accepted = Vec::new();
    for (i, value) in observed.iter().enumerate() {
        let response = post_write(addr, &format!("attack-{i}"), Some(value.clone())).await;
        if response.starts_with("HTTP/1.1 201") {
            accepted.push(i);
        } else {
            assert!(
                response.starts_with("HTTP/1.1 400") && response.contains("bad_session_header"),
                "{response}"
            );
        }
    }
    // Well-formed tokens (the attacker's own, the padded id) are accepted:
    // the check below is about writes that did happen.
    assert!(accepted.len() >= 3, "accepted only {accepted:?} of {observed:?}");
    marker(&notifier);

    // The victim receives every accepted write, none marked as its own.
    for i in &accepted {
        let frame = victim.next_json().await;
        assert_eq!(frame["data"]["body"], format!("attack-{i}"), "written with {:?}", observed[*i]);
        assert_ne!(frame["origin"], origin.as_str(), "only the victim's token yields the victim's id");
    }
    assert_eq!(victim.next_json().await["collection"], "marker", "and nothing else");

    // The victim's own token still makes it skip its own write.
    assert!(post_write(addr, "victim-again", Some(victim.token.clone())).await.starts_with("HTTP/1.1 201"));
    marker(&notifier);
    assert_eq!(victim.next_json().await["collection"], "marker", "its own write was skipped");
}

/// A minimal HTTP/1.1 exchange over a real socket.
async fn raw_http(addr: std::net::SocketAddr, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    timeout(LIMIT, socket.read_to_string(&mut response)).await.unwrap().unwrap();
    response
}

#[tokio::test]
async fn hello_comes_after_registration_so_nothing_is_missed() {
    // Notifications race with connections: every client sees a contiguous
    // stream starting right after its hello cursor.
    let notifier = Notifier::new();
    let addr = serve(&notifier).await;
    let emitter = tokio::spawn({
        let notifier = notifier.clone();
        async move {
            for _ in 0..2000 {
                notifier.notify("posts", Op::Insert);
                tokio::task::yield_now().await;
            }
        }
    });
    let mut clients = Vec::new();
    for _ in 0..5 {
        clients.push(Client::connect(addr, "").await);
    }
    timeout(LIMIT, emitter).await.unwrap().unwrap();
    let end = notifier.cursor().seq();
    for mut client in clients {
        let mut expected = seq(&client.cursor) + 1;
        while expected <= end {
            let frame = client.next_json().await;
            assert_eq!(seq(frame["cursor"].as_str().unwrap()), expected);
            expected += 1;
        }
    }
}

#[tokio::test]
async fn a_long_run_of_filtered_notifications_does_not_hold_back_a_wanted_one() {
    let notifier = Notifier::new();
    let addr = serve(&notifier).await;
    let mut client = Client::connect(addr, "collections=posts").await;
    // One commit, one wake-up: 300 notifications the client does not want,
    // then one it does.
    let batch = notifier.batch();
    for id in 0..300 {
        batch.notify_with("forums", Op::Update, &json!({ "id": id })).unwrap();
    }
    batch.notify("posts", Op::Insert);
    batch.commit();
    assert_eq!(client.next_json().await["collection"], "posts");
}

/// Collections starting with `$` are the hub's own (its orders between
/// instances travel under them): an application's notification about one is
/// refused when published, dropped from batches, and never reaches a
/// client, not even one subscribed to everything.
#[tokio::test]
async fn reserved_collections_are_refused_and_never_delivered() {
    let notifier = Notifier::new();
    let addr = serve(&notifier).await;
    let mut everything = Client::connect(addr, "").await;

    let forged = Notification::new("$reauthenticate", Op::Update)
        .with_data(&json!({"who": {"audience": "everyone"}, "from": 1}))
        .unwrap();
    let refused = notifier.publish(forged).await;
    assert!(
        matches!(&refused, Err(tidings::PublishError::Reserved(c)) if c == "$reauthenticate"),
        "{refused:?}"
    );
    notifier.notify("$anything", Op::Insert);
    let batch = notifier.batch();
    batch.notify("$other", Op::Insert);
    batch.notify("posts", Op::Insert);
    batch.commit();

    let frame = everything.next_json().await;
    assert_eq!(frame["collection"], "posts", "only the application's own collection arrives: {frame}");
    marker(&notifier);
    assert_eq!(everything.next_json().await["collection"], "marker");
    assert_eq!(notifier.session_count(), 1, "no session was told to reauthenticate");
}
