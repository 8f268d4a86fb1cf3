//! One measuring WebSocket client: connects, reads every frame, and records
//! when each notification arrived and what was lost, duplicated, unwanted
//! or (with rooms) misdelivered.
//! Its read loop is the driver's hot path (docs/benchmarks.md, "Driver
//! revisions").

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{Semaphore, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::machine::unix_nanos;
use crate::scan::{CursorForm, frame_cursor, scan};

/// What one client saw.
#[derive(Default)]
pub struct ClientResult {
    pub connected: bool,
    /// Expected to receive notifications (hot, `all` mode, or rooms).
    pub wanted: bool,
    /// Which notifications it expects; `recv` and `sent` are by slot.
    pub expect: Expect,
    /// Receive time (unix ns) per expected notification (slot); 0 = not received.
    pub recv: Vec<u64>,
    /// Emit time per slot, from the payload.
    pub sent: Vec<u64>,
    pub received: u64,
    pub resyncs: u64,
    /// Missing notifications announced by a resync frame.
    pub covered: u64,
    /// Missing notifications not announced (gaps, or never arrived).
    pub silent: u64,
    /// Frames this client did not want (baseline without filtering).
    pub unwanted: u64,
    pub duplicates: u64,
    /// Rooms: notifications of another room (or another collection) received.
    pub misdelivered: u64,
    /// Which server instance the client was connected to (0 = A, which emits).
    pub instance: usize,
    /// Cursor forms seen in notification frames: bit 0 `<8 hex>-<seq>`
    /// (in-process, PostgreSQL), bit 1 a Redis stream id `<ms>-<seq>`.
    pub cursor_forms: u8,
    /// Notification frames whose cursor did not move forward (either form),
    /// or that had no cursor the driver could read.
    pub cursor_regressions: u64,
}

impl ClientResult {
    /// `n` notifications that did not arrive: covered when a resync frame
    /// announced them, silent otherwise.
    fn count_missing(&mut self, n: u64, announced: bool) {
        if announced {
            self.covered += n;
        } else {
            self.silent += n;
        }
    }
}

/// The notification indices a client expects: `first`, `first + step`, …,
/// `count` of them (slots 0..count). Without rooms all M (0, 1, …); in room
/// K of R, K, K + R, … below M.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Expect {
    pub first: usize,
    pub step: usize,
    pub count: usize,
}

impl Expect {
    /// Every one of `m` notifications.
    pub fn all(m: usize) -> Expect {
        Expect { first: 0, step: 1, count: m }
    }

    /// The notifications of room `k` of `rooms`, of `m` sent round robin
    /// (notification i to room i % rooms).
    pub fn room(k: usize, rooms: usize, m: usize) -> Expect {
        let rooms = rooms.max(1);
        let count = if k < m { (m - k).div_ceil(rooms) } else { 0 };
        Expect { first: k, step: rooms, count }
    }

    /// The slot of notification `i`, if this client expects it.
    pub fn slot(&self, i: usize) -> Option<usize> {
        let d = i.checked_sub(self.first)?;
        (d % self.step.max(1) == 0).then(|| d / self.step.max(1)).filter(|&j| j < self.count)
    }

    /// The notification index of slot `j`.
    pub fn index(&self, j: usize) -> usize {
        self.first + j * self.step
    }
}

/// One client to open.
pub struct ClientSpec {
    pub url: String,
    pub tidings: bool,
    /// Expected to receive notifications (hot, `all` mode, or rooms).
    pub wanted: bool,
    pub instance: usize,
    /// Which notifications, if wanted.
    pub expect: Expect,
    /// The collection its notifications carry (`hot`, `room-K`, `posts`).
    pub collection: String,
    /// Rooms: any other notification is a misdelivery.
    pub rooms: bool,
}

/// What the clients of a run share with the driver.
pub struct Shared {
    /// Each client's WebSocket read buffer.
    pub read_buffer: usize,
    /// Clients that received the last notification they expect (or expect none).
    pub done: AtomicUsize,
    /// Clients connected (and, with tidings, past their hello).
    pub ready: AtomicUsize,
    /// Notifications received, all clients together.
    pub progress: AtomicU64,
}

pub async fn client(
    spec: ClientSpec,
    shared: Arc<Shared>,
    connect: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
) -> ClientResult {
    let ClientSpec { url, tidings, wanted, instance, expect, collection, rooms } = spec;
    let read_buffer = shared.read_buffer;
    let count = expect.count;
    let mut r = ClientResult { wanted, instance, expect, ..Default::default() };
    let permit = connect.acquire().await;
    let config = WebSocketConfig::default().read_buffer_size(read_buffer);
    let connected = tokio::time::timeout(
        Duration::from_secs(30),
        tokio_tungstenite::connect_async_with_config(url.as_str(), Some(config), true),
    )
    .await;
    let mut ws = match connected {
        Ok(Ok((ws, _))) => ws,
        Ok(Err(e)) => {
            eprintln!("connect failed: {e}");
            return r;
        }
        Err(_) => {
            eprintln!("connect timed out");
            return r;
        }
    };
    if tidings {
        // The hello frame: the session is registered once it is sent.
        match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) if t.contains("\"hello\"") => {}
            other => {
                eprintln!("no hello: {other:?}");
                return r;
            }
        }
    }
    drop(permit);
    r.connected = true;
    shared.ready.fetch_add(1, Ordering::SeqCst);
    if wanted {
        r.recv = vec![0; count];
        r.sent = vec![0; count];
    }
    // The last slot received.
    let mut last_j: i64 = -1;
    let mut last_cursor: Option<(CursorForm, u64, u64)> = None;
    let mut resync_pending = false;
    let mut finished = false;
    if wanted && count == 0 {
        // A room no notification goes to (more rooms than notifications).
        finished = true;
        shared.done.fetch_add(1, Ordering::SeqCst);
    }
    // Created once: re-creating it per frame (a `Notified` registered and
    // dropped every time) was a visible per-frame cost.
    let stopped = stop.changed();
    tokio::pin!(stopped);
    loop {
        let msg = tokio::select! {
            biased;
            msg = ws.next() => msg,
            _ = &mut stopped => break,
        };
        let now = unix_nanos();
        let text = match msg {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
            Some(Ok(_)) => continue,
        };
        let Some(frame) = scan(text.as_bytes()) else {
            continue;
        };
        match (frame.kind, frame.data) {
            (Some(b"resync"), _) => {
                r.resyncs += 1;
                resync_pending = true;
            }
            (None, Some(data)) if wanted && frame.collection == Some(collection.as_bytes()) => {
                let Some(j) = expect.slot(data.i as usize) else {
                    if rooms {
                        r.misdelivered += 1;
                    }
                    continue;
                };
                if r.recv[j] != 0 {
                    r.duplicates += 1;
                    continue;
                }
                r.recv[j] = now;
                r.sent[j] = data.t;
                r.received += 1;
                if tidings {
                    match frame_cursor(text.as_bytes()) {
                        Some(c) => {
                            r.cursor_forms |= if c.0 == CursorForm::Epoch { 1 } else { 2 };
                            if last_cursor.is_some_and(|l| l.0 == c.0 && (l.1, l.2) >= (c.1, c.2)) {
                                r.cursor_regressions += 1;
                            }
                            last_cursor = Some(c);
                        }
                        None => r.cursor_regressions += 1,
                    }
                }
                shared.progress.fetch_add(1, Ordering::Relaxed);
                r.count_missing((j as i64 - last_j - 1).max(0) as u64, resync_pending);
                resync_pending = false;
                last_j = last_j.max(j as i64);
                if j + 1 == count && !finished {
                    finished = true;
                    shared.done.fetch_add(1, Ordering::SeqCst);
                }
            }
            (None, Some(_)) if rooms => r.misdelivered += 1,
            (None, Some(_)) => r.unwanted += 1,
            _ => {}
        }
    }
    if wanted {
        r.count_missing((count as i64 - last_j - 1).max(0) as u64, resync_pending);
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
    r
}

#[cfg(test)]
mod tests {
    use super::Expect;

    #[test]
    fn expect_slots() {
        let all = Expect::all(3);
        assert_eq!((all.slot(0), all.slot(2), all.slot(3)), (Some(0), Some(2), None));
        // Room 2 of 5, 12 notifications: 2, 7 (12 is past the end).
        let r = Expect::room(2, 5, 12);
        assert_eq!(r.count, 2);
        assert_eq!(
            (r.slot(2), r.slot(7), r.slot(12), r.slot(3), r.slot(0)),
            (Some(0), Some(1), None, None, None)
        );
        assert_eq!(r.index(1), 7);
        assert_eq!(Expect::room(7, 10, 5).count, 0);
        assert_eq!(Expect::room(0, 1, 4), Expect::all(4));
    }
}
