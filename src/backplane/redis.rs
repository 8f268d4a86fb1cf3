//! The Redis Streams backplane: `XADD` to publish, `XREAD` on every instance
//! to deliver. The stream id is the cursor clients see, so a cursor from
//! one instance resumes on any other, and the stream's tail (loaded at
//! start-up) survives an instance restart.
//!
//! Nothing is lost silently when Redis goes away. A publication that fails
//! leaves a gap marker owed to the stream, added as soon as Redis takes
//! writes again: every instance that reads it tells its clients to resync.
//! A subscriber that reconnects reads on from where it was if the same
//! server still holds everything after that point; otherwise it fences off
//! everything before the reconnection, and every session resyncs.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::streams::{StreamId, StreamRangeReply, StreamReadReply};
use redis::{AsyncConnectionConfig, Client, InfoDict, Value};
use tokio::sync::mpsc;
use tracing::Instrument;

use super::envelope::decode;
use super::remote::{Backoff, Listening, Outgoing, Queue, connecting, report_publisher, supervise, unusable};
use super::{Backplane, Link, Publication, PublishError, Receiver};
use crate::backplane::Engine;
use crate::{Cursor, Notification};

/// How long one `XREAD` blocks before it is sent again.
const BLOCK: Duration = Duration::from_secs(5);
/// How many queued notifications go to Redis in one pipeline.
const PIPELINE: usize = 256;
/// The field holding the envelope in each stream entry.
const FIELD: &str = "n";
/// The field of a gap marker: an entry saying that notifications may have
/// been lost at this point of the stream (a publication failed). Its value
/// says why, for operators reading the stream.
const GAP_FIELD: &str = "gap";
/// How long the publisher's connection may sit unused before it is checked
/// (`PING`) ahead of a publication: Redis may have restarted, or closed it
/// as idle, meanwhile, and a publication on a dead connection fails.
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// Redis Streams (Redis 5 or later; feature `redis`): `XADD` to one stream,
/// read by every instance with `XREAD`. Cursors are stream ids, valid on
/// every instance, and the stream's tail (loaded at start-up) survives an
/// instance restart.
///
/// ```no_run
/// use tidings::backplane::Redis;
/// use tidings::{Config, Notifier};
///
/// # #[tokio::main] async fn main() {
/// let redis = Redis::new("redis://127.0.0.1:6379").key("myapp:tidings");
/// let notifier = Notifier::with_config(Config::default().backplane(redis));
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Redis {
    url: String,
    key: String,
    max_len: usize,
}

impl Redis {
    /// The server at `url`; the stream key `tidings`, trimmed to about
    /// 10,000 entries.
    pub fn new(url: impl Into<String>) -> Self {
        Redis { url: url.into(), key: "tidings".to_owned(), max_len: 10_000 }
    }

    /// The stream key (default `tidings`). Instances that share it share
    /// their notifications.
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = key.into();
        self
    }

    /// About how many entries the stream keeps (`XADD MAXLEN ~`, default
    /// 10,000): a cursor older than that gets `resync`.
    pub fn max_len(mut self, entries: usize) -> Self {
        self.max_len = entries.max(1);
        self
    }
}

impl Backplane for Redis {
    fn name(&self) -> &'static str {
        Engine::Redis.name()
    }

    fn assigns_cursors(&self) -> bool {
        true
    }

    fn start(&self, hub: Weak<dyn Receiver>) -> Box<dyn Link> {
        connecting(&hub);
        let (queue, outgoing) = Queue::new();
        match Client::open(self.url.as_str()) {
            Ok(client) => {
                tokio::spawn(publish(Publisher::new(client.clone(), self.clone()), outgoing, hub.clone()));
                tokio::spawn(supervise(Subscriber::new(client, self.clone()), hub));
            }
            Err(e) => unusable(format!("invalid Redis URL: {e}"), outgoing, hub),
        }
        Box::new(RedisLink(queue))
    }
}

/// Publications go to the publishing task's queue.
struct RedisLink(Queue);

impl Link for RedisLink {
    fn publish(&self, _hub: &dyn Receiver, publication: Publication) {
        self.0.push(publication);
    }
}

/// Sends queued notifications in order, a pipeline at a time; while a gap
/// marker is owed and nothing is queued, retries it alone with backoff (so
/// that clients elsewhere learn of the loss, and health of the recovery,
/// without waiting for the next write).
async fn publish(
    mut publisher: Publisher,
    mut outgoing: mpsc::UnboundedReceiver<Outgoing>,
    hub: Weak<dyn Receiver>,
) {
    let mut batch = Vec::with_capacity(PIPELINE);
    let mut backoff = Backoff::new();
    loop {
        let received = if publisher.owed.is_some() {
            tokio::select! {
                received = outgoing.recv_many(&mut batch, PIPELINE) => received,
                () = backoff.wait() => {
                    let result = publisher.send(&[]).await;
                    report(&hub, &result, &mut backoff);
                    continue;
                }
            }
        } else {
            outgoing.recv_many(&mut batch, PIPELINE).await
        };
        if received == 0 {
            // The notifier is gone; other instances' clients may still be
            // owed a resync: one last try.
            if publisher.owed.is_some() {
                let _ = publisher.send(&[]).await;
            }
            return;
        }
        let span = tracing::debug_span!(
            "tidings.backplane.publish",
            backplane = Engine::Redis.name(),
            publications = batch.len()
        );
        let result = publisher.send(&batch).instrument(span).await;
        report(&hub, &result, &mut backoff);
        batch.drain(..).for_each(|o| o.finish(result.clone()));
    }
}

fn report(hub: &Weak<dyn Receiver>, result: &Result<(), PublishError>, backoff: &mut Backoff) {
    if result.is_ok() {
        backoff.reset();
    }
    report_publisher(hub, Engine::Redis, result);
}

/// The publishing side: one connection, replaced whenever it fails.
///
/// A publication that fails is not retried: it may have reached Redis
/// before the connection broke, and a retry would deliver it twice. Its
/// caller learns of the failure, and the publisher owes the stream a gap
/// marker, added before the next publication or alone on a timer. However
/// many publications fail, the debt is one marker: nothing queues up.
struct Publisher {
    client: Client,
    options: Redis,
    config: AsyncConnectionConfig,
    connection: Option<MultiplexedConnection>,
    /// When `connection` last answered.
    answered: Instant,
    /// Why a gap marker is owed, if one is.
    owed: Option<String>,
}

impl Publisher {
    fn new(client: Client, options: Redis) -> Self {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)));
        Publisher { client, options, config, connection: None, answered: Instant::now(), owed: None }
    }

    /// Publishes an owed gap marker and then `batch` in one MULTI/EXEC: a
    /// committed batch lands in the stream contiguously, never interleaved
    /// with another instance's notifications, and after the marker.
    async fn send(&mut self, batch: &[Outgoing]) -> Result<(), PublishError> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        if let Some(reason) = &self.owed {
            self.add(&mut pipe, GAP_FIELD, reason);
        }
        for payload in batch.iter().flat_map(|out| &out.payloads) {
            self.add(&mut pipe, FIELD, payload);
        }
        let result = match self.connection().await {
            Ok(connection) => {
                pipe.query_async::<()>(connection).await.map_err(|e| format!("XADD failed: {e}"))
            }
            Err(e) => Err(format!("cannot connect to Redis: {e}")),
        };
        match result {
            Ok(()) => {
                self.answered = Instant::now();
                self.owed = None;
                Ok(())
            }
            Err(reason) => {
                self.connection = None;
                self.owed.get_or_insert_with(|| reason.clone());
                Err(PublishError::Backplane(reason))
            }
        }
    }

    fn add(&self, pipe: &mut redis::Pipeline, field: &str, value: &str) {
        pipe.cmd("XADD")
            .arg(&self.options.key)
            .arg("MAXLEN")
            .arg("~")
            .arg(self.options.max_len)
            .arg("*")
            .arg(field)
            .arg(value)
            .ignore();
    }

    /// The connection, checked with a `PING` when it sat unused for a
    /// while and replaced if that fails: a connection Redis dropped
    /// meanwhile (a restart, an idle timeout) costs a reconnection, not a
    /// failed publication and a resync everywhere.
    async fn connection(&mut self) -> redis::RedisResult<&mut MultiplexedConnection> {
        if let Some(connection) = &mut self.connection
            && self.answered.elapsed() >= IDLE_CHECK
        {
            match redis::cmd("PING").query_async::<()>(connection).await {
                Ok(()) => self.answered = Instant::now(),
                Err(e) => {
                    tracing::debug!(error = %e, "tidings: the idle Redis publisher connection is gone; reconnecting");
                    self.connection = None;
                }
            }
        }
        let connection = match self.connection.take() {
            Some(connection) => connection,
            None => {
                let mut connection =
                    self.client.get_multiplexed_async_connection_with_config(&self.config).await?;
                redis::cmd("CLIENT")
                    .arg("SETNAME")
                    .arg(format!("tidings-publisher:{}", self.options.key))
                    .query_async::<()>(&mut connection)
                    .await?;
                self.answered = Instant::now();
                connection
            }
        };
        Ok(self.connection.insert(connection))
    }
}

/// Where the subscriber is in the stream, kept across reconnections.
struct Position {
    /// The id reading goes on from: the last entry read, a fence set after a
    /// loss, or `0-0` for a stream that was empty.
    after: String,
    /// Whether `after` is the id of an entry read (Redis can then be asked
    /// whether it still holds it).
    at_entry: bool,
    /// The run id of the Redis server the stream was read from: another
    /// server (a restart, a failover) may not hold what this one did.
    server: Option<String>,
}

/// The engine's reader of the stream, as [`supervise`] drives it: it
/// delivers each entry to the local sessions.
struct Subscriber {
    client: Client,
    options: Redis,
    config: AsyncConnectionConfig,
    /// Where reading goes on from, across connections (`None` until the
    /// stream's tail is loaded).
    position: Option<Position>,
}

impl Subscriber {
    fn new(client: Client, options: Redis) -> Self {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(BLOCK + Duration::from_secs(2)));
        Subscriber { client, options, config, position: None }
    }
}

impl Listening for Subscriber {
    type Connection = MultiplexedConnection;

    fn engine(&self) -> Engine {
        Engine::Redis
    }

    fn span(&self) -> tracing::Span {
        tracing::info_span!("tidings.backplane.connect", backplane = Engine::Redis.name(), key = %self.options.key)
    }

    async fn connect(&mut self, hub: &Arc<dyn Receiver>) -> Result<MultiplexedConnection, String> {
        let mut connection = self
            .client
            .get_multiplexed_async_connection_with_config(&self.config)
            .await
            .map_err(|e| format!("cannot connect to Redis: {e}"))?;
        prepare(&mut connection, &self.options, hub, &mut self.position)
            .await
            .map_err(|e| format!("Redis: {e}"))?;
        Ok(connection)
    }

    async fn receive(
        &mut self,
        mut connection: MultiplexedConnection,
        hub: &Weak<dyn Receiver>,
    ) -> Option<String> {
        let position = self.position.as_mut().expect("prepared before it receives");
        let error = read(&mut connection, &self.options, hub, position).await;
        Some(format!("lost the Redis connection: {error}"))
    }
}

/// Names the connection (so operators see it); the first time, loads the
/// stream's tail; after a broken connection, makes sure that reading on
/// loses nothing, or fences off what may have been lost.
async fn prepare(
    connection: &mut MultiplexedConnection,
    options: &Redis,
    hub: &Arc<dyn Receiver>,
    position: &mut Option<Position>,
) -> redis::RedisResult<()> {
    redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg(format!("tidings-subscriber:{}", options.key))
        .query_async::<()>(connection)
        .await?;
    let server = server_id(connection).await;
    match position {
        None => {
            *position = Some(load(connection, options, hub, server).await?);
            Ok(())
        }
        Some(position) => resume(connection, options, hub.as_ref(), position, server).await,
    }
}

/// The run id of the Redis server, which changes when it restarts (or
/// another server takes over); `None` when it will not say.
async fn server_id(connection: &mut MultiplexedConnection) -> Option<String> {
    let info: InfoDict = redis::cmd("INFO").arg("server").query_async(connection).await.ok()?;
    info.get("run_id")
}

/// Loads the stream's tail into the history, so that cursors from before
/// this instance started can be resumed.
async fn load(
    connection: &mut MultiplexedConnection,
    options: &Redis,
    hub: &Arc<dyn Receiver>,
    server: Option<String>,
) -> redis::RedisResult<Position> {
    let capacity = hub.capacity();
    let tail: StreamRangeReply = redis::cmd("XREVRANGE")
        .arg(&options.key)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(capacity + 1)
        .query_async(connection)
        .await?;
    let mut ids = tail.ids;
    ids.reverse();
    // Sessions opened before the tail was here (the start-up wait ran out)
    // start before it: they lag, and get a resync rather than old
    // notifications presented as new.
    hub.interrupt(None);
    // The newest id the stream no longer holds: resuming from before it
    // would skip what Redis trimmed.
    let mut floor = max_deleted_id(connection, &options.key).await;
    if ids.len() > capacity {
        let older = ids.remove(0);
        floor = floor.max(parse_id(&older.id).map(|c| (c.epoch_ms(), c.seq())));
    }
    let floor = floor.map(|(ms, seq)| Cursor::stream(ms, seq));
    let position = Position {
        after: ids.last().map_or_else(|| "0-0".to_owned(), |e| e.id.clone()),
        at_entry: !ids.is_empty(),
        server,
    };
    deliver(hub.as_ref(), &ids);
    hub.ready(floor);
    Ok(position)
}

/// After a broken connection. Reading on from `position` loses nothing if
/// the same server still holds everything after it. Otherwise (Redis
/// restarted, another server took over, the stream was trimmed past it)
/// what was lost cannot be known: every session resyncs, and reading goes
/// on from a fence past every id issued before now, so that no cursor from
/// before, the last one read included, resumes without a resync.
async fn resume(
    connection: &mut MultiplexedConnection,
    options: &Redis,
    hub: &dyn Receiver,
    position: &mut Position,
    server: Option<String>,
) -> redis::RedisResult<()> {
    let same_server = server.is_some() && server == position.server;
    if !same_server || !holds_everything_after(connection, options, position).await? {
        let fence = fence(connection, &position.after).await?;
        hub.interrupt(Some(fence));
        position.after = fence.to_string();
        position.at_entry = false;
    }
    position.server = server;
    Ok(())
}

/// Whether the stream still holds every entry after `position`.
async fn holds_everything_after(
    connection: &mut MultiplexedConnection,
    options: &Redis,
    position: &Position,
) -> redis::RedisResult<bool> {
    let after = parse_id(&position.after).map(|c| (c.epoch_ms(), c.seq()));
    // Redis 7 names the newest entry it removed (trimmed or deleted).
    let removed = max_deleted_id(connection, &options.key).await;
    if removed.is_some_and(|removed| Some(removed) > after) {
        return Ok(false);
    }
    if !position.at_entry {
        return Ok(true);
    }
    // Before Redis 7: trimming removes the oldest entries first, so if the
    // last entry read is still there, so is everything after it.
    let held: StreamRangeReply = redis::cmd("XRANGE")
        .arg(&options.key)
        .arg(&position.after)
        .arg(&position.after)
        .arg("COUNT")
        .arg(1)
        .query_async(connection)
        .await?;
    Ok(!held.ids.is_empty())
}

/// A stream id after every id Redis issued before now (by its clock; ids
/// of this millisecond may come after it) and after `after`: reading on
/// from it gets every entry added from now on, and no cursor handed out
/// before it equals it.
async fn fence(connection: &mut MultiplexedConnection, after: &str) -> redis::RedisResult<Cursor> {
    let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(connection).await?;
    let now_ms = secs.saturating_mul(1000).saturating_add(micros / 1000);
    let by_clock = Cursor::stream(now_ms.saturating_sub(1), u64::MAX);
    let past_after = parse_id(after).map(|c| Cursor::stream(c.epoch_ms(), c.seq().saturating_add(1)));
    Ok(match past_after {
        Some(past) if past.stream_cmp(&by_clock) == Some(std::cmp::Ordering::Greater) => past,
        _ => by_clock,
    })
}

/// The newest id the stream may have lost (trimmed or deleted), from
/// `XINFO STREAM`: `max-deleted-entry-id` when Redis reports one; otherwise,
/// when more entries were added than remain, the first remaining entry (a
/// conservative floor: a cursor from just before it gets a resync it might
/// not have needed, never a silent gap). `None` when nothing was removed or
/// the stream does not exist.
async fn max_deleted_id(connection: &mut MultiplexedConnection, key: &str) -> Option<(u64, u64)> {
    let info: Value = redis::cmd("XINFO").arg("STREAM").arg(key).query_async(connection).await.ok()?;
    let pairs: Vec<(Value, Value)> = match info {
        Value::Map(pairs) => pairs,
        Value::Array(items) => {
            let mut items = items.into_iter();
            std::iter::from_fn(|| Some((items.next()?, items.next()?))).collect()
        }
        _ => return None,
    };
    let text = |v: &Value| match v {
        Value::BulkString(b) => std::str::from_utf8(b).ok().map(str::to_owned),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    };
    let field = |name: &str| pairs.iter().find(|(k, _)| text(k).as_deref() == Some(name)).map(|(_, v)| v);
    let id = |v: Option<&Value>| {
        let v = v?;
        let id = match v {
            // `first-entry` is an entry: [id, [field, value, …]].
            Value::Array(entry) => entry.first().and_then(text),
            other => text(other),
        };
        parse_id(&id?).filter(|c| *c != Cursor::stream(0, 0)).map(|c| (c.epoch_ms(), c.seq()))
    };
    if let Some(deleted) = id(field("max-deleted-entry-id")) {
        return Some(deleted);
    }
    let count = |name: &str| field(name).and_then(text).and_then(|t| t.parse::<u64>().ok());
    match (count("entries-added"), count("length")) {
        (Some(added), Some(length)) if added > length => id(field("first-entry")),
        _ => None,
    }
}

/// Reads until the connection fails; returns the error.
async fn read(
    connection: &mut MultiplexedConnection,
    options: &Redis,
    hub: &Weak<dyn Receiver>,
    position: &mut Position,
) -> redis::RedisError {
    loop {
        let reply: redis::RedisResult<Option<StreamReadReply>> = redis::cmd("XREAD")
            .arg("BLOCK")
            .arg(BLOCK.as_millis() as u64)
            .arg("COUNT")
            .arg(512)
            .arg("STREAMS")
            .arg(&options.key)
            .arg(&position.after)
            .query_async(connection)
            .await;
        let reply = match reply {
            Ok(reply) => reply,
            Err(e) => return e,
        };
        let Some(hub) = hub.upgrade() else {
            return redis::RedisError::from((redis::ErrorKind::Io, "the notifier is gone"));
        };
        for key in reply.map(|r| r.keys).unwrap_or_default() {
            deliver(hub.as_ref(), &key.ids);
            if let Some(last) = key.ids.last() {
                position.after.clone_from(&last.id);
                position.at_entry = true;
            }
        }
    }
}

/// Delivers stream entries in order: notifications into the history, and a
/// gap marker as an interruption at its id.
fn deliver(hub: &dyn Receiver, entries: &[StreamId]) {
    let mut arrived = Vec::with_capacity(entries.len());
    for entry in entries {
        match decode_entry(entry) {
            Some(StreamEntry::Notification(n, cursor)) => arrived.push((n, Some(cursor))),
            Some(StreamEntry::Gap(at)) => {
                if !arrived.is_empty() {
                    hub.deliver(&mut std::mem::take(&mut arrived).into_iter());
                }
                hub.interrupt(Some(at));
            }
            None => {}
        }
    }
    if !arrived.is_empty() {
        hub.deliver(&mut arrived.into_iter());
    }
}

/// What a stream entry holds.
enum StreamEntry {
    /// A notification, with the entry id as its cursor.
    Notification(Notification, Cursor),
    /// A gap marker: notifications before this id may have been lost.
    Gap(Cursor),
}

/// The notification or gap marker in a stream entry; `None` (logged) for
/// anything else.
fn decode_entry(entry: &StreamId) -> Option<StreamEntry> {
    let cursor = parse_id(&entry.id);
    if let (Some(at), true) = (cursor, entry.map.contains_key(GAP_FIELD)) {
        return Some(StreamEntry::Gap(at));
    }
    let (Some(cursor), Some(Value::BulkString(payload))) = (cursor, entry.map.get(FIELD)) else {
        tracing::warn!(id = %entry.id, "tidings: skipping a stream entry that is not a notification");
        return None;
    };
    let decoded = std::str::from_utf8(payload)
        .map_err(|e| e.to_string())
        .and_then(|p| decode(p).map_err(|e| e.to_string()));
    match decoded {
        Ok(n) => Some(StreamEntry::Notification(n, cursor)),
        Err(e) => {
            tracing::warn!(id = %entry.id, error = %e, "tidings: skipping a malformed stream entry");
            None
        }
    }
}

fn parse_id(id: &str) -> Option<Cursor> {
    let (ms, seq) = id.split_once('-')?;
    Some(Cursor::stream(ms.parse().ok()?, seq.parse().ok()?))
}
