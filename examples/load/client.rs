//! One measuring WebSocket client: connects, reads every frame, and records
//! when each notification arrived and what was lost, duplicated or unwanted.
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
    /// Expected to receive every notification (hot, or `all` mode).
    pub wanted: bool,
    /// Receive time (unix ns) per notification index; 0 = not received.
    pub recv: Vec<u64>,
    /// Emit time per index, from the payload.
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

/// One client to open.
pub struct ClientSpec {
    pub url: String,
    pub tidings: bool,
    /// Expected to receive every notification (hot, or `all` mode).
    pub wanted: bool,
    pub instance: usize,
}

/// What the clients of a run share with the driver.
pub struct Shared {
    /// Notifications every client expects.
    pub messages: usize,
    /// Each client's WebSocket read buffer.
    pub read_buffer: usize,
    /// Clients that received the last notification.
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
    let ClientSpec { url, tidings, wanted, instance } = spec;
    let (messages, read_buffer) = (shared.messages, shared.read_buffer);
    let mut r = ClientResult { wanted, instance, ..Default::default() };
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
        r.recv = vec![0; messages];
        r.sent = vec![0; messages];
    }
    let mut last_i: i64 = -1;
    let mut last_cursor: Option<(CursorForm, u64, u64)> = None;
    let mut resync_pending = false;
    let mut finished = false;
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
            (None, Some(data)) if wanted && frame.collection == Some(b"hot") => {
                let i = data.i as usize;
                if i >= messages {
                    continue;
                }
                if r.recv[i] != 0 {
                    r.duplicates += 1;
                    continue;
                }
                r.recv[i] = now;
                r.sent[i] = data.t;
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
                r.count_missing((i as i64 - last_i - 1).max(0) as u64, resync_pending);
                resync_pending = false;
                last_i = last_i.max(i as i64);
                if i + 1 == messages && !finished {
                    finished = true;
                    shared.done.fetch_add(1, Ordering::SeqCst);
                }
            }
            (None, Some(_)) => r.unwanted += 1,
            _ => {}
        }
    }
    if wanted {
        r.count_missing((messages as i64 - last_i - 1).max(0) as u64, resync_pending);
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
    r
}
