//! The forums example, with its default outbox, through what a deployment
//! lives through: a restart (SIGTERM) and a crash (SIGKILL) between a
//! commit and its relay. Clients come back with their cursor and get
//! exactly what they missed, with no `resync`.
#![cfg(feature = "outbox")]

mod common;

use common::example::{Example, fresh_dir, remove_dir};
use common::{Client, LIMIT};
use serde_json::{Value, json};

async fn create_forum(example: &Example, title: &str) -> i64 {
    let http = reqwest::Client::builder().no_proxy().timeout(LIMIT).build().unwrap();
    let response = http
        .post(format!("http://{}/api/forums", example.addr))
        .json(&json!({ "title": title }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "creating a forum");
    response.json::<Value>().await.unwrap()["id"].as_i64().unwrap()
}

fn forum_insert(frame: &Value) -> i64 {
    assert!(frame.get("type").is_none(), "a notification, not {frame}");
    assert_eq!((&frame["collection"], &frame["op"]), (&json!("forums"), &json!("insert")), "{frame}");
    frame["data"]["id"].as_i64().unwrap()
}

#[tokio::test]
async fn a_client_resumes_across_a_restart_of_the_example_with_no_resync() {
    let dir = fresh_dir("restart");
    let first = Example::start_in(&dir, &[]).await;
    let mut client = Client::connect(first.addr, "").await;
    let id = create_forum(&first, "before").await;
    let frame = client.next_json().await;
    assert_eq!(forum_insert(&frame), id);
    let cursor = frame["cursor"].as_str().unwrap().to_owned();

    first.terminate();
    assert_eq!(u16::from(client.expect_close().await.code), 1001);
    drop(client);
    first.wait().await;

    let second = Example::start_in(&dir, &[]).await;
    let missed = [create_forum(&second, "while away 1").await, create_forum(&second, "while away 2").await];
    let mut client = Client::connect(second.addr, &format!("cursor={cursor}")).await;
    assert_eq!(forum_insert(&client.next_json().await), missed[0], "no resync: the first write it missed");
    assert_eq!(forum_insert(&client.next_json().await), missed[1]);
    let after = create_forum(&second, "after").await;
    assert_eq!(forum_insert(&client.next_json().await), after, "exactly what it missed, then live");
    drop(client);
    second.stop().await;
    remove_dir(&dir);
}

/// An instance started with `--no-relay` commits and answers, but leaves
/// its notification unrelayed: the state a crash right after the commit
/// leaves behind. It is killed with SIGKILL; the next instance relays the
/// row when it starts, and the client that was waiting gets it.
#[tokio::test]
async fn a_notification_committed_before_a_sigkill_is_delivered_after_the_restart() {
    let dir = fresh_dir("sigkill");
    let first = Example::start_in(&dir, &[]).await;
    let mut client = Client::connect(first.addr, "").await;
    create_forum(&first, "relayed").await;
    let cursor = client.next_json().await["cursor"].as_str().unwrap().to_owned();
    drop(client);
    first.stop().await;

    let crashing = Example::start_in(&dir, &["--no-relay"]).await;
    let lost_without_outbox = create_forum(&crashing, "committed, then SIGKILL").await;
    crashing.kill().await;

    let restarted = Example::start_in(&dir, &[]).await;
    let mut client = Client::connect(restarted.addr, &format!("cursor={cursor}")).await;
    assert_eq!(forum_insert(&client.next_json().await), lost_without_outbox);
    drop(client);
    restarted.stop().await;
    remove_dir(&dir);
}
