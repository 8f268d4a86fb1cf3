//! Two notifiers (two "instances") on one backplane, against the real Redis
//! and PostgreSQL servers named by REDIS_URL and DATABASE_URL. Without them
//! these tests are skipped, except in CI (CI=true), where they must run.
#![cfg(any(feature = "redis", feature = "postgres"))]

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::{Client, serve};
use serde_json::{Value, json};
use tidings::backplane::Backplane;
use tidings::{Config, HealthStatus, Notification, Notifier, Notify, Op, PublishError};
use tokio::time::timeout;

/// The server URL from `var`, or `None` (skip) outside CI.
fn server(var: &str, scheme: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) if url.starts_with(scheme) => Some(url),
        _ if std::env::var_os("CI").is_some() => panic!("CI must set {var} to a {scheme} URL"),
        _ => {
            eprintln!("skipped: set {var} to a {scheme} URL to run this test");
            None
        }
    }
}

/// A name no other test (or test run) uses.
fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    format!("{prefix}_{}_{nanos}", std::process::id())
}

fn instance(backplane: impl Backplane) -> Notifier {
    Notifier::with_config(Config::default().backplane(backplane))
}

/// Reads until a notification of `collection` arrives, returning the frames
/// read before it (resyncs included).
async fn until(client: &mut Client, collection: &str) -> (Vec<Value>, Value) {
    let mut before = Vec::new();
    for _ in 0..100 {
        let frame = client.next_json().await;
        if frame["collection"] == collection {
            return (before, frame);
        }
        before.push(frame);
    }
    panic!("{collection} never arrived; got {before:?}");
}

#[cfg(feature = "redis")]
mod redis_backplane {
    use super::*;
    use common::LIMIT;

    fn backplane(url: &str, key: &str) -> tidings::backplane::Redis {
        tidings::backplane::Redis::new(url).key(key)
    }

    #[tokio::test]
    async fn a_write_on_a_reaches_b_in_order_and_once() {
        let Some(url) = server("REDIS_URL", "redis") else {
            return;
        };
        let key = unique("tidings_test");
        let (a, b) = (instance(backplane(&url, &key)), instance(backplane(&url, &key)));
        let (addr_a, addr_b) = (serve(&a).await, serve(&b).await);
        let mut on_a = Client::connect(addr_a, "").await;
        let mut on_b = Client::connect(addr_b, "").await;

        for id in 0..20 {
            a.notify_with("forums", Op::Insert, &json!({ "id": id })).unwrap();
        }
        let mut cursors = Vec::new();
        for id in 0..20 {
            let on_b_frame = on_b.next_json().await;
            let on_a_frame = on_a.next_json().await;
            assert_eq!(on_b_frame["data"]["id"], id);
            assert_eq!(on_b_frame, on_a_frame, "same frame, same stream-id cursor, on both instances");
            cursors.push(on_b_frame["cursor"].as_str().unwrap().to_owned());
        }
        assert!(cursors.windows(2).all(|w| w[0] != w[1]));
        b.notify("marker", Op::Insert);
        assert_eq!(on_a.next_json().await["collection"], "marker", "no double delivery");
        assert_eq!(on_b.next_json().await["collection"], "marker");
    }

    #[tokio::test]
    async fn a_cursor_from_a_resumes_on_b() {
        let Some(url) = server("REDIS_URL", "redis") else {
            return;
        };
        let key = unique("tidings_test");
        let (a, b) = (instance(backplane(&url, &key)), instance(backplane(&url, &key)));
        let (addr_a, addr_b) = (serve(&a).await, serve(&b).await);
        let mut on_a = Client::connect(addr_a, "").await;
        a.publish(Notification::new("forums", Op::Insert)).await.unwrap();
        let last = on_a.next_json().await["cursor"].as_str().unwrap().to_owned();
        drop(on_a);

        for id in 0..3 {
            a.publish(Notification::new("posts", Op::Insert).with_data(&json!({ "id": id })).unwrap())
                .await
                .unwrap();
        }
        let mut on_b = Client::connect(addr_b, &format!("cursor={last}")).await;
        assert_eq!(on_b.cursor, last);
        for id in 0..3 {
            let frame = on_b.next_json().await;
            assert_eq!(frame["type"], Value::Null, "no resync: {frame}");
            assert_eq!(frame["data"]["id"], id);
        }
        // And a new instance, started after all this, loads the stream's tail.
        let c = instance(backplane(&url, &key));
        let addr_c = serve(&c).await;
        let mut on_c = Client::connect(addr_c, &format!("cursor={last}")).await;
        for id in 0..3 {
            assert_eq!(on_c.next_json().await["data"]["id"], id);
        }
    }

    #[tokio::test]
    async fn a_cursor_into_what_redis_trimmed_gets_resync() {
        let Some(url) = server("REDIS_URL", "redis") else { return };
        let key = unique("tidings_test");
        let a = instance(backplane(&url, &key));
        let mut ids = Vec::new();
        for id in 0..5 {
            let n = Notification::new("posts", Op::Insert).with_data(&json!({ "id": id })).unwrap();
            a.publish(n).await.unwrap();
        }
        let client = redis::Client::open(url.as_str()).unwrap();
        let mut con = client.get_multiplexed_async_connection().await.unwrap();
        let range: redis::streams::StreamRangeReply =
            redis::cmd("XRANGE").arg(&key).arg("-").arg("+").query_async(&mut con).await.unwrap();
        ids.extend(range.ids.iter().map(|e| e.id.clone()));
        assert_eq!(ids.len(), 5);
        // Redis drops the three oldest entries.
        let _: () = redis::cmd("XTRIM").arg(&key).arg("MAXLEN").arg(2).query_async(&mut con).await.unwrap();

        // A new instance loads what is left.
        let b = instance(backplane(&url, &key));
        let addr_b = serve(&b).await;
        let mut gap = Client::connect(addr_b, &format!("cursor={}", ids[0])).await;
        assert_eq!(gap.next_json().await["type"], "resync", "entries 1 and 2 are gone");
        let mut exact = Client::connect(addr_b, &format!("cursor={}", ids[3])).await;
        assert_eq!(exact.next_json().await["data"]["id"], 4, "nothing was lost after entry 3");
        let mut bogus = Client::connect(addr_b, "cursor=99999999999999-0").await;
        assert_eq!(bogus.next_json().await["type"], "resync", "not an id of this stream");
        // An id a little ahead of the stream (crafted, or from a Redis that
        // lost data since): not honoured once this instance had time to
        // read that far, so what comes next is not skipped.
        let (ms, _) = ids[4].split_once('-').unwrap();
        let ahead = format!("{}-0", ms.parse::<u64>().unwrap() + 5_000);
        let mut beyond = Client::connect(addr_b, &format!("cursor={ahead}")).await;
        assert_eq!(beyond.cursor, ids[4], "hello carries the head");
        assert_eq!(beyond.next_json().await["type"], "resync", "beyond the stream");
        a.publish(Notification::new("posts", Op::Insert).with_data(&json!({ "id": 5 })).unwrap())
            .await
            .unwrap();
        assert_eq!(beyond.next_json().await["data"]["id"], 5, "the next one arrives");
    }

    async fn kill_subscribers(url: &str, key: &str) -> usize {
        let client = redis::Client::open(url).unwrap();
        let mut con = client.get_multiplexed_async_connection().await.unwrap();
        let list: String = redis::cmd("CLIENT").arg("LIST").query_async(&mut con).await.unwrap();
        let name = format!("name=tidings-subscriber:{key} ");
        let ids: Vec<&str> = list
            .lines()
            .filter(|l| l.contains(&name))
            .filter_map(|l| l.split(' ').find_map(|f| f.strip_prefix("id=")))
            .collect();
        for id in &ids {
            let _: () =
                redis::cmd("CLIENT").arg("KILL").arg("ID").arg(*id).query_async(&mut con).await.unwrap();
        }
        ids.len()
    }

    /// The subscribers' connections break but Redis keeps the stream: each
    /// instance reads on from where it was, so nothing is lost and nobody is
    /// told to resync, not even a client that resumes with a cursor from
    /// before the break (it receives everything since, which proves it).
    #[tokio::test]
    async fn a_killed_connection_reads_on_without_loss_or_resync() {
        let Some(url) = server("REDIS_URL", "redis") else {
            return;
        };
        let key = unique("tidings_test");
        let (a, b) = (instance(backplane(&url, &key)), instance(backplane(&url, &key)));
        let (addr_a, addr_b) = (serve(&a).await, serve(&b).await);
        let mut on_a = Client::connect(addr_a, "").await;
        let mut on_b = Client::connect(addr_b, "").await;
        a.notify("warmup", Op::Insert);
        until(&mut on_a, "warmup").await;
        let (_, warmup) = until(&mut on_b, "warmup").await;
        let last = warmup["cursor"].as_str().unwrap().to_owned();

        assert_eq!(kill_subscribers(&url, &key).await, 2, "both instances' subscribers");
        // Published while the subscribers are down: in the stream, delivered.
        a.publish(Notification::new("during", Op::Insert)).await.unwrap();
        for client in [&mut on_a, &mut on_b] {
            let (before, _) = until(client, "during").await;
            assert!(before.is_empty(), "nothing was lost, no resync: {before:?}");
        }
        let mut on_b_again = Client::connect(addr_b, &format!("cursor={last}")).await;
        let mut on_a_again = Client::connect(addr_a, &format!("cursor={last}")).await;
        b.notify("after", Op::Insert);
        for client in [&mut on_a, &mut on_b] {
            let (before, _) = until(client, "after").await;
            assert!(before.is_empty(), "{before:?}");
        }
        for client in [&mut on_a_again, &mut on_b_again] {
            assert_eq!(client.cursor, last, "resumed");
            let (before, _) = until(client, "after").await;
            assert_eq!(before.len(), 1, "{before:?}");
            assert_eq!(before[0]["collection"], "during", "{before:?}");
        }
        assert_eq!(a.health().status, HealthStatus::Ok);
    }

    #[tokio::test]
    async fn a_malformed_url_is_reported_on_every_publish() {
        let notifier = instance(tidings::backplane::Redis::new("redis://[::1"));
        for _ in 0..2 {
            let result =
                timeout(LIMIT, notifier.publish(Notification::new("forums", Op::Insert))).await.unwrap();
            assert!(
                matches!(&result, Err(PublishError::Backplane(e)) if e.contains("invalid Redis URL")),
                "{result:?}"
            );
        }
        assert_eq!(notifier.health().status, HealthStatus::Degraded);
    }

    #[tokio::test]
    async fn redis_down_reports_to_the_caller_and_in_health() {
        // Nothing listens on port 1.
        let notifier = instance(tidings::backplane::Redis::new("redis://127.0.0.1:1"));
        let result = timeout(LIMIT, notifier.publish(Notification::new("forums", Op::Insert))).await.unwrap();
        assert!(matches!(result, Err(PublishError::Backplane(_))), "{result:?}");
        let health = notifier.health();
        assert_eq!(health.status, HealthStatus::Degraded);
        assert!(health.reason.unwrap().contains("Redis"));
    }
}

#[cfg(feature = "postgres")]
mod postgres_backplane {
    use super::*;
    use sea_orm::{ConnectionTrait, Database, DbBackend, Statement, TransactionTrait};
    use tidings::sea_orm::Transaction;

    fn backplane(url: &str, channel: &str) -> tidings::backplane::Postgres {
        tidings::backplane::Postgres::new(url).channel(channel)
    }

    /// Two instances and a client on B, with both listeners known to be up.
    async fn pair(url: &str) -> (Notifier, Notifier, Client, String) {
        let channel = unique("tidings_test");
        let (a, b) = (instance(backplane(url, &channel)), instance(backplane(url, &channel)));
        let addr_b = serve(&b).await;
        let mut on_b = Client::connect(addr_b, "").await;
        // LISTEN happens in the background (and its start is announced with
        // a resync): retry a warm-up until B hears one.
        let mut heard = false;
        'publish: for _ in 0..50 {
            a.publish(Notification::new("warmup", Op::Insert)).await.unwrap();
            while let Ok(frame) = timeout(std::time::Duration::from_millis(200), on_b.next_json()).await {
                if frame["collection"] == "warmup" {
                    heard = true;
                    break 'publish;
                }
                assert_eq!(frame["type"], "resync", "{frame}");
            }
        }
        assert!(heard, "B never heard A");
        // Drain any further warm-ups.
        b.notify("ready", Op::Insert);
        until(&mut on_b, "ready").await;
        (a, b, on_b, channel)
    }

    #[tokio::test]
    async fn a_write_on_a_reaches_b_in_order() {
        let Some(url) = server("DATABASE_URL", "postgres") else {
            return;
        };
        let (a, _b, mut on_b, _) = pair(&url).await;
        for id in 0..20 {
            a.notify_with("forums", Op::Insert, &json!({ "id": id })).unwrap();
        }
        for id in 0..20 {
            assert_eq!(on_b.next_json().await["data"]["id"], id);
        }
        // Sent together, two identical notifications are still two
        // (PostgreSQL folds identical payloads within one transaction).
        a.notify("same", Op::Update);
        a.notify("same", Op::Update);
        a.notify("end", Op::Update);
        let (before, _) = until(&mut on_b, "end").await;
        assert_eq!(before.iter().filter(|f| f["collection"] == "same").count(), 2, "{before:?}");
    }

    #[tokio::test]
    async fn notify_inside_a_transaction_is_delivered_only_on_commit() {
        let Some(url) = server("DATABASE_URL", "postgres") else {
            return;
        };
        let (a, _b, mut on_b, channel) = pair(&url).await;
        let db = Database::connect(&url).await.unwrap();

        // Rolled back: nothing.
        let txn = Transaction::begin(&db, a.batch()).await.unwrap();
        txn.notify_with("forums", Op::Delete, &json!({"id": 1})).unwrap();
        txn.rollback().await.unwrap();
        // Committed: delivered.
        let txn = Transaction::begin(&db, a.batch()).await.unwrap();
        txn.notify_with("forums", Op::Insert, &json!({"id": 2})).unwrap();
        txn.commit().await.unwrap();
        let frame = on_b.next_json().await;
        assert_eq!((frame["op"].as_str(), frame["data"]["id"].as_i64()), (Some("insert"), Some(2)));

        // What that relies on: a NOTIFY issued in an open transaction is held
        // by PostgreSQL until COMMIT, while others go by.
        let raw = db.begin().await.unwrap();
        let payload = r#"{"collection":"held","op":"insert"}"#;
        raw.execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT pg_notify($1, $2)",
            [channel.as_str().into(), payload.into()],
        ))
        .await
        .unwrap();
        a.publish(Notification::new("meanwhile", Op::Insert)).await.unwrap();
        assert_eq!(on_b.next_json().await["collection"], "meanwhile", "held until commit");
        raw.commit().await.unwrap();
        assert_eq!(on_b.next_json().await["collection"], "held");
    }

    #[tokio::test]
    async fn a_killed_listener_means_resync_then_delivery_resumes() {
        let Some(url) = server("DATABASE_URL", "postgres") else {
            return;
        };
        let (a, _b, mut on_b, channel) = pair(&url).await;
        let db = Database::connect(&url).await.unwrap();
        let killed = db
            .query_all_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
                [format!("tidings-listener:{channel}").into()],
            ))
            .await
            .unwrap();
        assert_eq!(killed.len(), 2, "both instances' listeners");

        let frame = on_b.next_json().await;
        assert_eq!(frame["type"], "resync", "the loss is announced");
        // Delivery resumes once B listens again (retry: LISTEN is re-established in the background).
        let mut resumed = false;
        for _ in 0..50 {
            a.publish(Notification::new("after", Op::Insert)).await.unwrap();
            if let Ok(frame) = timeout(std::time::Duration::from_millis(200), on_b.next_json()).await {
                assert_eq!(frame["collection"], "after");
                resumed = true;
                break;
            }
        }
        assert!(resumed);
    }

    #[tokio::test]
    async fn payloads_over_the_notify_limit_are_refused_clearly() {
        let Some(url) = server("DATABASE_URL", "postgres") else {
            return;
        };
        let notifier = instance(backplane(&url, &unique("tidings_test")));
        let big = Notification::new("forums", Op::Insert).with_data(&"x".repeat(9000)).unwrap();
        let result = notifier.publish(big).await;
        assert!(matches!(result, Err(PublishError::TooLarge { limit: 7999, .. })), "{result:?}");
    }
}
