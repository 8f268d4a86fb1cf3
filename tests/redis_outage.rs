//! Redis going away under two instances: each test starts its own
//! `redis-server` on a free port, kills it with SIGKILL (by the PID it
//! started), restarts it on the same port, and checks what clients on both
//! instances see. Skipped when `redis-server` is not installed, except in CI
//! (CI=true), where it must be.
#![cfg(feature = "redis")]

mod common;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{Client, LIMIT, serve};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tidings::backplane::Redis;
use tidings::{Config, HealthStatus, Notification, Notifier, Op};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::time::{Instant, timeout, timeout_at};
use tokio_tungstenite::tungstenite::Message;

/// How long a step spanning a reconnection may take: the backplane
/// reconnects with a backoff of up to 5 s.
const RECONNECT_LIMIT: Duration = Duration::from_secs(20);

/// A `redis-server` this test started, killed with SIGKILL when dropped,
/// also on panic (its `Child` is spawned with `kill_on_drop`).
struct RedisServer {
    port: u16,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server on a free port; `None` (skip) when `redis-server` is
    /// not installed, outside CI.
    async fn start() -> Option<RedisServer> {
        if Command::new("redis-server").arg("--version").output().await.is_err() {
            if std::env::var_os("CI").is_some() {
                panic!("CI must have redis-server installed");
            }
            eprintln!("skipped: redis-server is not installed");
            return None;
        }
        // The free port found may be taken by someone else before Redis
        // binds it: try a few.
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let mut server = RedisServer { port, child: None };
            if server.spawn().await {
                return Some(server);
            }
        }
        panic!("could not start redis-server on a free port");
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Spawns redis-server on `self.port` and waits until it says it accepts
    /// connections; false if it exited instead (the port was taken).
    async fn spawn(&mut self) -> bool {
        let mut child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--logfile", ""])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server starts");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let ready = timeout(LIMIT, async {
            while let Some(line) = lines.next_line().await.ok().flatten() {
                if line.contains("Ready to accept connections") {
                    return true;
                }
            }
            false
        })
        .await
        .expect("redis-server neither started nor exited within the limit");
        if !ready {
            let _ = child.kill().await;
            return false;
        }
        // Keep reading its log so that a full pipe never blocks it.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        self.child = Some(child);
        true
    }

    /// SIGKILL, and waits until the process is gone (the port is free).
    async fn kill(&mut self) {
        let mut child = self.child.take().expect("the server is running");
        child.kill().await.expect("SIGKILL to the redis-server this test started");
    }

    /// Starts it again, empty, on the same port.
    async fn restart(&mut self) {
        assert!(self.spawn().await, "redis-server restarts on port {}", self.port);
    }

    /// The id of the stream entry holding a notification of `collection`.
    async fn entry_of(&self, key: &str, collection: &str) -> (u64, u64) {
        let range: redis::streams::StreamRangeReply =
            self.command(redis::cmd("XRANGE").arg(key).arg("-").arg("+")).await;
        let needle = format!(r#""collection":"{collection}""#);
        let entry = range.ids.iter().find(|e| {
            matches!(e.map.get("n"), Some(redis::Value::BulkString(b)) if String::from_utf8_lossy(b).contains(&needle))
        });
        stream_id(&entry.unwrap_or_else(|| panic!("no {collection} in the stream")).id)
    }

    async fn command<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> T {
        let client = redis::Client::open(self.url()).unwrap();
        let mut con = timeout(LIMIT, client.get_multiplexed_async_connection()).await.unwrap().unwrap();
        timeout(LIMIT, cmd.query_async(&mut con)).await.unwrap().unwrap()
    }
}

/// A name no other test (or test run) uses.
fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    format!("{prefix}_{}_{nanos}", std::process::id())
}

type Instance = (Notifier, SocketAddr);

/// Two instances on one stream, each serving WebSocket clients.
async fn two_instances(redis: &RedisServer, key: &str) -> (Instance, Instance) {
    let a = Notifier::with_config(Config::default().backplane(Redis::new(redis.url()).key(key)));
    let b = Notifier::with_config(Config::default().backplane(Redis::new(redis.url()).key(key)));
    let (addr_a, addr_b) = (serve(&a).await, serve(&b).await);
    ((a, addr_a), (b, addr_b))
}

fn note(collection: &str, id: u64) -> Notification {
    Notification::new(collection.to_owned(), Op::Insert).with_data(&json!({ "id": id })).unwrap()
}

/// The next text frame as JSON, waiting until `deadline` at most.
async fn next_frame(client: &mut Client, deadline: Instant) -> Value {
    loop {
        let message = timeout_at(deadline, client.ws.next())
            .await
            .expect("no frame before the deadline")
            .expect("stream ended")
            .expect("socket error");
        match message {
            Message::Text(t) => return serde_json::from_str(&t).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

/// Reads until a notification of `collection` arrives (within `limit`),
/// returning the frames read before it.
async fn until(client: &mut Client, collection: &str, limit: Duration) -> (Vec<Value>, Value) {
    let deadline = Instant::now() + limit;
    let mut before = Vec::new();
    for _ in 0..1000 {
        let frame = next_frame(client, deadline).await;
        if frame["collection"] == collection {
            return (before, frame);
        }
        before.push(frame);
    }
    panic!("{collection} never arrived; got {before:?}");
}

/// A stream id as a comparable pair.
fn stream_id(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap();
    (ms.parse().unwrap(), seq.parse().unwrap())
}

fn is_resync(frame: &Value) -> bool {
    frame["type"] == "resync"
}

/// Waits until both instances report `ok` (health has no event to await:
/// polled, bounded).
async fn until_healthy(a: &Notifier, b: &Notifier, limit: Duration) {
    let deadline = Instant::now() + limit;
    while a.health().status != HealthStatus::Ok || b.health().status != HealthStatus::Ok {
        assert!(
            Instant::now() < deadline,
            "still degraded after {limit:?}: A {:?}, B {:?}",
            a.health(),
            b.health()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Clients on both instances, both of which have heard a write from each.
async fn warmed_up(a: &Instance, b: &Instance) -> (Client, Client) {
    let mut on_a = Client::connect(a.1, "").await;
    let mut on_b = Client::connect(b.1, "").await;
    a.0.publish(note("warmup", 0)).await.unwrap();
    b.0.publish(note("warmup", 1)).await.unwrap();
    for client in [&mut on_a, &mut on_b] {
        for id in 0..2 {
            let (before, frame) = until(client, "warmup", LIMIT).await;
            assert!(before.is_empty(), "{before:?}");
            assert_eq!(frame["data"]["id"], id);
        }
    }
    (on_a, on_b)
}

/// The repro of the silent loss: writes during the outage fail (and say
/// so), and after the restart the first write reaches both instances, after
/// a resync that covers the writes that could not be published.
#[tokio::test]
async fn the_first_write_after_a_redis_restart_is_delivered_and_the_outage_is_covered_by_resync() {
    let Some(mut redis) = RedisServer::start().await else { return };
    let key = unique("tidings_outage");
    let (a, b) = two_instances(&redis, &key).await;
    let (mut on_a, mut on_b) = warmed_up(&a, &b).await;

    redis.kill().await;
    for id in 0..3 {
        let through_a = timeout(LIMIT, a.0.publish(note("during", id))).await.unwrap();
        let through_b = timeout(LIMIT, b.0.publish(note("during", id))).await.unwrap();
        assert!(through_a.is_err() && through_b.is_err(), "Redis is down: {through_a:?} {through_b:?}");
    }
    // The scenario: the outage goes on for a while after the last write.
    tokio::time::sleep(Duration::from_secs(1)).await;
    redis.restart().await;
    // The scenario: a quiet second after the restart, then one write.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let published = timeout(LIMIT, a.0.publish(note("after", 1))).await.unwrap();
    assert_eq!(published, Ok(()), "the first write after the restart reaches Redis");
    let after = redis.entry_of(&key, "after").await;

    for client in [&mut on_a, &mut on_b] {
        // Delivered, or (when this instance read the stream again only after
        // the write) covered by a resync that came after it.
        let deadline = Instant::now() + RECONNECT_LIMIT;
        let mut resyncs = 0;
        loop {
            let frame = next_frame(client, deadline).await;
            if frame["collection"] == "after" {
                assert_eq!(frame["data"]["id"], 1);
                break;
            }
            assert!(is_resync(&frame), "{frame}");
            resyncs += 1;
            if stream_id(frame["cursor"].as_str().unwrap()) > after {
                break;
            }
        }
        assert!(resyncs > 0, "the writes that failed during the outage are covered by a resync");
    }
}

/// A publication that fails while every listener stays connected (Redis
/// refuses writes): once Redis takes writes again, every instance tells its
/// clients to resync, with no further write, and health returns to ok.
#[tokio::test]
async fn a_publication_refused_while_listeners_are_up_means_resync_everywhere() {
    let Some(redis) = RedisServer::start().await else { return };
    let key = unique("tidings_outage");
    let (a, b) = two_instances(&redis, &key).await;
    let (mut on_a, mut on_b) = warmed_up(&a, &b).await;

    // Every write is refused (out of memory); reads still work.
    let () = redis.command(redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg(1)).await;
    let refused = timeout(LIMIT, a.0.publish(note("refused", 0))).await.unwrap();
    assert!(refused.is_err(), "{refused:?}");
    assert_eq!(a.0.health().status, HealthStatus::Degraded);
    let () = redis.command(redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg(0)).await;

    let deadline = Instant::now() + RECONNECT_LIMIT;
    for client in [&mut on_a, &mut on_b] {
        let frame = next_frame(client, deadline).await;
        assert!(is_resync(&frame), "the refused write is announced: {frame}");
    }
    until_healthy(&a.0, &b.0, RECONNECT_LIMIT).await;
    b.0.publish(note("later", 0)).await.unwrap();
    for client in [&mut on_a, &mut on_b] {
        let (before, later) = until(client, "later", LIMIT).await;
        assert_eq!(later["data"]["id"], 0);
        assert!(before.iter().all(is_resync), "{before:?}");
    }
}

/// Health is `degraded` on both instances during the outage and `ok` again
/// after the restart without any write.
#[tokio::test]
async fn health_returns_to_ok_after_a_redis_restart_without_a_write() {
    let Some(mut redis) = RedisServer::start().await else { return };
    let key = unique("tidings_outage");
    let (a, b) = two_instances(&redis, &key).await;
    let _clients = warmed_up(&a, &b).await;

    redis.kill().await;
    for instance in [&a.0, &b.0] {
        let result = timeout(LIMIT, instance.publish(note("during", 0))).await.unwrap();
        assert!(result.is_err(), "{result:?}");
        assert_eq!(instance.health().status, HealthStatus::Degraded);
    }
    redis.restart().await;
    until_healthy(&a.0, &b.0, RECONNECT_LIMIT).await;
}

/// A client that lost its connection during the outage and resumes with its
/// last cursor, on either instance, gets a resync: the stream it read was
/// lost with the restart, and so were the writes made meanwhile.
#[tokio::test]
async fn a_cursor_from_before_a_redis_restart_gets_resync() {
    let Some(mut redis) = RedisServer::start().await else { return };
    let key = unique("tidings_outage");
    let (a, b) = two_instances(&redis, &key).await;
    let (mut reader, mut on_b) = warmed_up(&a, &b).await;
    for id in 0..3 {
        a.0.publish(note("before", id)).await.unwrap();
    }
    let mut last = String::new();
    for id in 0..3 {
        let frame = reader.next_json().await;
        assert_eq!(frame["data"]["id"], id);
        last = frame["cursor"].as_str().unwrap().to_owned();
    }
    // The client loses its connection; then Redis goes away.
    drop(reader);
    let mut on_a = Client::connect(a.1, "").await;
    until(&mut on_b, "before", LIMIT).await;

    redis.kill().await;
    for id in 0..5 {
        assert!(timeout(LIMIT, a.0.publish(note("during", id))).await.unwrap().is_err());
    }
    redis.restart().await;
    // Writes after the restart, until both instances deliver one: each reads
    // the stream again, and whatever it does about the outage is done. (A
    // write made before an instance reconnects is covered by its resync.)
    let mut delivered = [false, false];
    for id in 0..40 {
        let _ = timeout(LIMIT, a.0.publish(note("after", id))).await.unwrap();
        for (client, delivered) in [&mut on_a, &mut on_b].into_iter().zip(&mut delivered) {
            let deadline = Instant::now() + Duration::from_millis(500);
            while !*delivered && let Ok(frame) = timeout_at(deadline, client.next_json()).await {
                *delivered = frame["collection"] == "after";
            }
        }
        if delivered == [true, true] {
            break;
        }
    }
    assert_eq!(delivered, [true, true], "both instances deliver a write made after the restart");

    for addr in [b.1, a.1] {
        let mut resumed = Client::connect(addr, &format!("cursor={last}")).await;
        let frame = resumed.next_json().await;
        assert!(is_resync(&frame), "five writes were lost with Redis: {frame}");
        // The resync's cursor itself resumes without another resync.
        let cursor = frame["cursor"].as_str().unwrap().to_owned();
        let mut again = Client::connect(addr, &format!("cursor={cursor}")).await;
        a.0.publish(note("final", 0)).await.unwrap();
        let (before, _) = until(&mut again, "final", LIMIT).await;
        assert!(before.iter().all(|f| f["collection"] == "after"), "{before:?}");
        let (before, _) = until(&mut resumed, "final", LIMIT).await;
        assert!(before.iter().all(|f| f["collection"] == "after"), "{before:?}");
    }
}

/// Redis restarts while nobody writes; the first write afterwards, on a
/// publisher connection that died with the old server, is delivered.
#[tokio::test]
async fn a_write_after_a_quiet_redis_restart_is_delivered() {
    let Some(mut redis) = RedisServer::start().await else { return };
    let key = unique("tidings_outage");
    let (a, b) = two_instances(&redis, &key).await;
    let (mut on_a, mut on_b) = warmed_up(&a, &b).await;

    redis.kill().await;
    redis.restart().await;
    // Both listeners are back (they report it in health).
    until_healthy(&a.0, &b.0, RECONNECT_LIMIT).await;
    // The scenario: a quiet second, so the publisher's dead connection has
    // been idle.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let result = timeout(LIMIT, a.0.publish(note("after", 7))).await.unwrap();
    assert_eq!(result, Ok(()));
    for client in [&mut on_a, &mut on_b] {
        let (before, after) = until(client, "after", LIMIT).await;
        assert_eq!(after["data"]["id"], 7);
        assert!(before.iter().all(is_resync), "{before:?}");
    }
}
