//! The WebSocket transport: the upgrade, then one reader and one writer task
//! per connection.
//!
//! The writer owns the session. It sleeps until the dispatcher wakes it, then
//! pulls batches of shared frames from the history and feeds them to the
//! socket until nothing is left, and only then flushes: a burst costs one
//! write system call per `write_buffer_size` bytes rather than one per frame. The reader only turns client frames into
//! commands for the writer; it never writes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Request, State};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout};

use crate::admission::{Admission, admit};
use crate::hub::Hub;
use crate::protocol::{ClientFrame, ErrorCode, ServerFrame, close};
use crate::session::Session;
use crate::{Notifier, Rejection};

/// How many commands the reader may queue for the writer. A client that
/// sends faster than its replies can be written is slowed down (the reader
/// waits), which affects nobody else.
const COMMAND_QUEUE: usize = 16;

/// How long a closing connection waits for the peer's close reply.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// The handler behind the WebSocket route: checks that it is an upgrade
/// request and that the client is admitted, then upgrades.
pub(crate) async fn upgrade(State(notifier): State<Notifier>, request: Request) -> Response {
    let hub = notifier.hub().clone();
    let (mut parts, _body) = request.into_parts();
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(u) => u,
        Err(e) => return Rejection::new(e.status(), "not_websocket", e.body_text()).into_response(),
    };
    let admission = match admit(&hub, &parts).await {
        Ok(admission) => admission,
        Err(rejection) => return rejection.into_response(),
    };
    let config = &hub.config;
    upgrade
        .read_buffer_size(config.read_buffer_size)
        .write_buffer_size(config.write_buffer_size)
        .max_message_size(config.max_message_size)
        .max_frame_size(config.max_message_size)
        .on_upgrade(move |socket| async move {
            let Admission { identity, subscriptions, cursor } = admission;
            hub.ready().await;
            let (session, first) = Session::open(hub, identity, subscriptions, cursor.as_deref());
            run(socket, session, first).await;
        })
}

/// What the reader asks of the writer.
enum Command {
    Subscribe(Vec<String>),
    Unsubscribe(Vec<String>),
    Error(ErrorCode, String),
    Close(u16, String),
}

/// Why the reader stopped.
enum ReadEnd {
    /// The peer closed the connection, or it broke.
    Peer,
    /// The reader asked the writer to close the connection.
    Requested,
}

/// Drives one connection until it ends, however it ends. The session is
/// unregistered when the writer drops it, before the socket closes.
async fn run(socket: WebSocket, session: Session, first: Vec<Utf8Bytes>) {
    let hub = session.hub().clone();
    let (sink, mut stream) = socket.split();
    let alive = Arc::new(AtomicU64::new(hub.now_ms()));
    let (commands, inbox) = mpsc::channel(COMMAND_QUEUE);
    let mut writer = tokio::spawn(write_loop(sink, session, first, inbox, alive.clone()));

    let read_end = tokio::select! {
        end = read_loop(&mut stream, &commands, &alive, &hub) => Some(end),
        _ = &mut writer => None,
    };
    // Without a sender left, the writer flushes what it owes (such as the
    // reply to the peer's close) and stops.
    drop(commands);
    if read_end.is_some() && timeout(hub.config.write_timeout, &mut writer).await.is_err() {
        writer.abort();
    }
    if !matches!(read_end, Some(ReadEnd::Peer)) {
        // We sent a close (or the peer went silent): give the peer a moment to
        // answer, so the socket ends with a clean close rather than a reset.
        let _ = timeout(CLOSE_GRACE, async { while let Some(Ok(_)) = stream.next().await {} }).await;
    }
}

async fn read_loop(
    stream: &mut SplitStream<WebSocket>,
    commands: &mpsc::Sender<Command>,
    alive: &AtomicU64,
    hub: &Hub,
) -> ReadEnd {
    while let Some(message) = stream.next().await {
        alive.store(hub.now_ms(), Ordering::Relaxed);
        let command = match message {
            Ok(Message::Text(text)) => match serde_json::from_str::<ClientFrame>(&text) {
                Ok(ClientFrame::Subscribe { collections }) => Command::Subscribe(collections),
                Ok(ClientFrame::Unsubscribe { collections }) => Command::Unsubscribe(collections),
                Err(e) => Command::Error(ErrorCode::BadFrame, format!("not a control frame: {e}")),
            },
            Ok(Message::Binary(_)) => {
                Command::Close(close::UNSUPPORTED, "binary frames are not supported".into())
            }
            Ok(Message::Ping(_) | Message::Pong(_)) => continue,
            Ok(Message::Close(_)) => return ReadEnd::Peer,
            Err(e) if is_too_big(&e) => Command::Close(
                close::TOO_BIG,
                format!("message larger than {} bytes", hub.config.max_message_size),
            ),
            Err(_) => return ReadEnd::Peer,
        };
        let closing = matches!(command, Command::Close(..));
        if commands.send(command).await.is_err() {
            return ReadEnd::Peer;
        }
        if closing {
            return ReadEnd::Requested;
        }
    }
    ReadEnd::Peer
}

fn is_too_big(e: &axum::Error) -> bool {
    use std::error::Error as _;
    matches!(
        e.source().and_then(|s| s.downcast_ref::<tungstenite::Error>()),
        Some(tungstenite::Error::Capacity(_))
    )
}

type Sink = SplitSink<WebSocket, Message>;

async fn write_loop(
    mut sink: Sink,
    mut session: Session,
    mut frames: Vec<Utf8Bytes>,
    mut inbox: mpsc::Receiver<Command>,
    alive: Arc<AtomicU64>,
) {
    let hub = session.hub().clone();
    let config = &hub.config;
    let wake = session.wake_signal();
    let mut closing = hub.closing();
    let mut ping = tokio::time::interval_at(Instant::now() + config.ping_interval, config.ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let idle_ms = config.idle_timeout.as_millis() as u64;
    let mut unflushed = false;

    loop {
        // Feed while frames are queued; flush once the queue is empty.
        let caught_up = session.pull(&mut frames);
        if !frames.is_empty() {
            if feed_all(&mut sink, &mut frames, config.write_timeout).await.is_err() {
                return;
            }
            unflushed = true;
            continue;
        }
        if !caught_up {
            // Everything read was filtered out; more is stored.
            continue;
        }
        if unflushed {
            if !matches!(within(config.write_timeout, sink.flush()).await, Some(Ok(()))) {
                return;
            }
            unflushed = false;
            continue;
        }

        // About to sleep: arm the wake-up, then look once more, so that a
        // notification that arrived since the last pull is not missed. (A
        // wake-up sent while unarmed is kept as a permit: at worst one spare
        // turn of the loop.)
        let notified = wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if !session.pull(&mut frames) || !frames.is_empty() {
            continue;
        }

        tokio::select! {
            biased;
            _ = crate::hub::shutting_down(&mut closing) => {
                send_close(&mut sink, close::GOING_AWAY, "server shutting down".into(), config.write_timeout).await;
                return;
            }
            command = inbox.recv() => match command {
                Some(Command::Subscribe(names)) => frames.push(session.subscribe(&names)),
                Some(Command::Unsubscribe(names)) => frames.push(session.unsubscribe(&names)),
                Some(Command::Error(code, message)) => {
                    frames.push(ServerFrame::Error { code, message: &message }.to_text());
                }
                Some(Command::Close(code, reason)) => {
                    send_close(&mut sink, code, reason, config.write_timeout).await;
                    return;
                }
                None => {
                    // The reader is gone: flush the close reply tungstenite queued.
                    let _ = within(config.write_timeout, sink.flush()).await;
                    return;
                }
            },
            _ = &mut notified => {}
            _ = ping.tick() => {
                if hub.now_ms().saturating_sub(alive.load(Ordering::Relaxed)) > idle_ms {
                    tracing::debug!(session = %session.id(), "tidings: closing a silent peer");
                    send_close(&mut sink, close::GOING_AWAY, "no pong: peer considered dead".into(), config.write_timeout).await;
                    return;
                }
                if !matches!(within(config.write_timeout, sink.send(Message::Ping(Default::default()))).await, Some(Ok(()))) {
                    return;
                }
            }
        }
    }
}

/// Feeds every frame to the socket's write buffer, which goes to the socket
/// whenever it holds `write_buffer_size` bytes. Fails when the socket errors
/// or does not take the frames within `limit` (a stuck client).
async fn feed_all(sink: &mut Sink, frames: &mut Vec<Utf8Bytes>, limit: Duration) -> Result<(), ()> {
    let feed = async {
        for frame in frames.drain(..) {
            sink.feed(Message::Text(frame)).await?;
        }
        Ok::<_, axum::Error>(())
    };
    match within(limit, feed).await {
        Some(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

/// `fut`'s output, or `None` if it takes longer than `limit`. Writes to a
/// healthy socket finish at their first poll; only those that have to wait
/// pay for a timer.
async fn within<F: std::future::Future>(limit: Duration, fut: F) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    let first = std::future::poll_fn(|cx| std::task::Poll::Ready(fut.as_mut().poll(cx))).await;
    match first {
        std::task::Poll::Ready(output) => Some(output),
        std::task::Poll::Pending => timeout(limit, fut).await.ok(),
    }
}

async fn send_close(sink: &mut Sink, code: u16, reason: String, limit: Duration) {
    let frame = CloseFrame { code, reason: Utf8Bytes::from(reason) };
    let _ = within(limit, sink.send(Message::Close(Some(frame)))).await;
}
