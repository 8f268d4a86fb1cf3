//! Large batches: one committed batch bigger than the history must not send
//! every client (even those keeping up) to a full reload.

mod common;

#[path = "../examples/forums/app/mod.rs"]
#[allow(dead_code)]
mod app;

use std::time::{SystemTime, UNIX_EPOCH};

use common::{Client, LIMIT};
use sea_orm::{ActiveValue::Set, EntityTrait};
use serde_json::{Value, json};
use tidings::{Notifier, Notify, Op};

/// Reads notifications until the `marker` collection arrives; panics on a
/// `resync` or any other control frame.
async fn notifications_until_marker(client: &mut Client) -> Vec<Value> {
    let mut seen = Vec::new();
    for _ in 0..2_000 {
        let frame = client.next_json().await;
        assert!(frame.get("type").is_none(), "a reader that keeps up got a control frame: {frame}");
        if frame["collection"] == "marker" {
            return seen;
        }
        seen.push(frame);
    }
    panic!("no marker after 2000 frames");
}

#[tokio::test]
async fn a_batch_larger_than_the_history_is_condensed_not_resynced() {
    let notifier = Notifier::new(); // the default history: 1024 notifications
    let addr = common::serve(&notifier).await;
    let mut reader = Client::connect(addr, "").await;

    let batch = notifier.batch();
    for id in 0..1_100 {
        batch.notify_with("posts", Op::Delete, &json!({ "id": id, "forum_id": 1 })).unwrap();
    }
    batch.notify_with("forums", Op::Delete, &json!({ "id": 1 })).unwrap();
    batch.commit();
    notifier.notify("marker", Op::Insert);

    let seen = notifications_until_marker(&mut reader).await;
    let kinds: Vec<(&str, &str, bool)> = seen
        .iter()
        .map(|f| (f["collection"].as_str().unwrap(), f["op"].as_str().unwrap(), f.get("data").is_some()))
        .collect();
    assert_eq!(kinds, [("posts", "delete", false), ("forums", "delete", false)]);
}

#[tokio::test]
async fn a_batch_within_the_limit_is_delivered_row_by_row() {
    let notifier = Notifier::new();
    let addr = common::serve(&notifier).await;
    let mut reader = Client::connect(addr, "").await;
    let batch = notifier.batch();
    for id in 0..256 {
        batch.notify_with("posts", Op::Delete, &json!({ "id": id })).unwrap();
    }
    batch.commit();
    notifier.notify("marker", Op::Insert);
    let seen = notifications_until_marker(&mut reader).await;
    let ids: Vec<i64> = seen.iter().map(|f| f["data"]["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, (0..256).collect::<Vec<_>>());
}

/// The defect as users met it: deleting a forum with 1,100 posts through the
/// example's API.
#[tokio::test]
async fn deleting_a_forum_with_1100_posts_sends_no_resync() {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().subsec_nanos();
    let path = std::env::temp_dir().join(format!("tidings_batches_{}_{nanos}.db", std::process::id()));
    let db =
        tokio::time::timeout(LIMIT * 6, app::connect(Some(&format!("sqlite://{}?mode=rwc", path.display()))))
            .await
            .unwrap()
            .unwrap();
    let forum = app::entity::forum::Entity::insert(app::entity::forum::ActiveModel {
        title: Set("big".into()),
        ..Default::default()
    })
    .exec(&db)
    .await
    .unwrap()
    .last_insert_id;
    let posts = (0..1_100).map(|i| app::entity::post::ActiveModel {
        forum_id: Set(forum),
        body: Set(format!("post {i}")),
        ..Default::default()
    });
    app::entity::post::Entity::insert_many(posts).exec(&db).await.unwrap();

    let notifier = Notifier::new();
    let addr = common::serve_router(app::router(db.clone(), notifier.clone())).await;
    let mut reader = Client::connect(addr, "").await;
    let http = reqwest::Client::builder().no_proxy().timeout(LIMIT).build().unwrap();
    let status = http.delete(format!("http://{addr}/api/forums/{forum}")).send().await.unwrap().status();
    assert_eq!(status, reqwest::StatusCode::NO_CONTENT);
    notifier.notify("marker", Op::Insert);

    let seen = notifications_until_marker(&mut reader).await;
    let collections: Vec<&str> = seen.iter().map(|f| f["collection"].as_str().unwrap()).collect();
    assert_eq!(collections, ["posts", "forums"], "{seen:?}");
    db.close().await.ok();
    for suffix in ["", "-wal", "-shm", "-journal"] {
        std::fs::remove_file(format!("{}{suffix}", path.display())).ok();
    }
}
