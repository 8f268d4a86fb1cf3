//! The Redis Streams backplane: `XADD` to publish, `XREAD` on every instance
//! to deliver. The stream id is the cursor clients see, so a cursor from
//! one instance resumes on any other, and the stream's tail (loaded at
//! start-up) survives an instance restart.

use std::sync::{Arc, Weak};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::streams::{StreamId, StreamRangeReply, StreamReadReply};
use redis::{AsyncConnectionConfig, Client, Value};
use tokio::sync::mpsc;

use super::{Backoff, Outgoing, PublishError, decode, unusable};
use crate::hub::{Hub, Part};
use crate::{Cursor, Notification};

/// How long one `XREAD` blocks before it is sent again.
const BLOCK: Duration = Duration::from_secs(5);
/// How many queued notifications go to Redis in one pipeline.
const PIPELINE: usize = 256;
/// The field holding the envelope in each stream entry.
const FIELD: &str = "n";

#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub(crate) url: String,
    pub(crate) key: String,
    pub(crate) max_len: usize,
}

impl Options {
    pub(crate) fn new(url: String) -> Self {
        Options { url, key: "tidings".to_owned(), max_len: 10_000 }
    }
}

pub(crate) fn start(options: Options, outgoing: mpsc::UnboundedReceiver<Outgoing>, hub: Weak<Hub>) {
    let client = match Client::open(options.url.as_str()) {
        Ok(client) => client,
        Err(e) => return unusable(format!("invalid Redis URL: {e}"), outgoing, hub),
    };
    tokio::spawn(publish(client.clone(), options.clone(), outgoing, hub.clone()));
    tokio::spawn(subscribe(client, options, hub));
}

/// Sends queued notifications in order, a pipeline at a time.
async fn publish(
    client: Client,
    options: Options,
    mut outgoing: mpsc::UnboundedReceiver<Outgoing>,
    hub: Weak<Hub>,
) {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(2)))
        .set_number_of_retries(1);
    let mut connection: Option<ConnectionManager> = None;
    let mut batch = Vec::with_capacity(PIPELINE);
    while outgoing.recv_many(&mut batch, PIPELINE).await > 0 {
        if connection.is_none() {
            match client.get_connection_manager_with_config(config.clone()).await {
                Ok(c) => connection = Some(c),
                Err(e) => {
                    let reason = format!("cannot connect to Redis: {e}");
                    report(&hub, Some(reason.clone()));
                    batch.drain(..).for_each(|o| o.finish(Err(PublishError::Backplane(reason.clone()))));
                    continue;
                }
            }
        }
        // MULTI/EXEC: a committed batch lands in the stream contiguously,
        // never interleaved with another instance's notifications.
        let mut pipe = redis::pipe();
        pipe.atomic();
        for payload in batch.iter().flat_map(|out| &out.payloads) {
            pipe.cmd("XADD")
                .arg(&options.key)
                .arg("MAXLEN")
                .arg("~")
                .arg(options.max_len)
                .arg("*")
                .arg(FIELD)
                .arg(payload)
                .ignore();
        }
        let result = match connection.as_mut() {
            Some(c) => pipe.query_async::<()>(c).await,
            None => unreachable!("connected above"),
        };
        let result = result.map_err(|e| PublishError::Backplane(format!("XADD failed: {e}")));
        report(&hub, result.as_ref().err().map(ToString::to_string));
        batch.drain(..).for_each(|o| o.finish(result.clone()));
    }
}

fn report(hub: &Weak<Hub>, reason: Option<String>) {
    if let Some(hub) = hub.upgrade() {
        hub.set_degraded(Part::Publisher, reason);
    }
}

/// Reads the stream and delivers each entry to the local sessions.
async fn subscribe(client: Client, options: Options, hub: Weak<Hub>) {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(BLOCK + Duration::from_secs(2)));
    let mut last_id: Option<String> = None;
    let mut backoff = Backoff::new();
    let mut broken = false;
    loop {
        let Some(strong) = hub.upgrade() else { return };
        let connected = client.get_multiplexed_async_connection_with_config(&config).await;
        let mut connection = match connected {
            Ok(c) => c,
            Err(e) => {
                strong.set_degraded(Part::Listener, Some(format!("cannot connect to Redis: {e}")));
                broken = true;
                drop(strong);
                backoff.wait().await;
                continue;
            }
        };
        let first_load = last_id.is_none();
        let ready = prepare(&mut connection, &options, &strong, &mut last_id).await;
        if let Err(e) = ready {
            strong.set_degraded(Part::Listener, Some(format!("Redis: {e}")));
            broken = true;
            drop(strong);
            backoff.wait().await;
            continue;
        }
        if broken && !first_load {
            // Notifications may have been published while we could not read
            // (and Redis may have restarted): every local client reloads.
            strong.interrupt();
        }
        broken = false;
        strong.set_degraded(Part::Listener, None);
        backoff.reset();
        drop(strong);

        let Some(from) = last_id.clone() else { continue };
        let error = read(&mut connection, &options, &hub, from, &mut last_id).await;
        let Some(strong) = hub.upgrade() else { return };
        strong.set_degraded(Part::Listener, Some(format!("lost the Redis connection: {error}")));
        broken = true;
        drop(strong);
        backoff.wait().await;
    }
}

/// Names the connection (so operators see it) and, the first time, loads the
/// stream's tail into the history so that cursors from before this instance
/// started can be resumed.
async fn prepare(
    connection: &mut MultiplexedConnection,
    options: &Options,
    hub: &Arc<Hub>,
    last_id: &mut Option<String>,
) -> redis::RedisResult<()> {
    redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg(format!("tidings-subscriber:{}", options.key))
        .query_async::<()>(connection)
        .await?;
    if last_id.is_some() {
        return Ok(());
    }
    let capacity = hub.config.replay_capacity;
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
    hub.interrupt();
    // The newest id the stream no longer holds: resuming from before it
    // would skip what Redis trimmed.
    let mut floor = max_deleted_id(connection, &options.key).await;
    if ids.len() > capacity {
        let older = ids.remove(0);
        floor = floor.max(parse_id(&older.id).map(|c| (c.epoch_ms(), c.seq())));
    }
    if let Some((ms, seq)) = floor {
        hub.history.set_floor(Cursor::stream(ms, seq));
    }
    *last_id = Some(ids.last().map_or_else(|| "0-0".to_owned(), |e| e.id.clone()));
    hub.deliver_all(ids.iter().filter_map(decode_entry).collect());
    hub.set_ready();
    Ok(())
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
    options: &Options,
    hub: &Weak<Hub>,
    mut from: String,
    last_id: &mut Option<String>,
) -> redis::RedisError {
    loop {
        let reply: redis::RedisResult<Option<StreamReadReply>> = redis::cmd("XREAD")
            .arg("BLOCK")
            .arg(BLOCK.as_millis() as u64)
            .arg("COUNT")
            .arg(512)
            .arg("STREAMS")
            .arg(&options.key)
            .arg(&from)
            .query_async(connection)
            .await;
        let reply = match reply {
            Ok(reply) => reply,
            Err(e) => return e,
        };
        let Some(hub) = hub.upgrade() else {
            return redis::RedisError::from((redis::ErrorKind::Io, "the notifier is gone"));
        };
        let mut arrived = Vec::new();
        for key in reply.map(|r| r.keys).unwrap_or_default() {
            for entry in &key.ids {
                arrived.extend(decode_entry(entry));
                from.clone_from(&entry.id);
            }
        }
        if !arrived.is_empty() {
            hub.deliver_all(arrived);
        }
        *last_id = Some(from.clone());
    }
}

/// The notification in a stream entry, with the entry id as its cursor.
fn decode_entry(entry: &StreamId) -> Option<(Notification, Option<Cursor>)> {
    let (Some(cursor), Some(Value::BulkString(payload))) = (parse_id(&entry.id), entry.map.get(FIELD)) else {
        tracing::warn!(id = %entry.id, "tidings: skipping a stream entry that is not a notification");
        return None;
    };
    let decoded = std::str::from_utf8(payload)
        .map_err(|e| e.to_string())
        .and_then(|p| decode(p).map_err(|e| e.to_string()));
    match decoded {
        Ok(n) => Some((n, Some(cursor))),
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
