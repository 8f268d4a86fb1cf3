//! The WebSocket transport: the upgrade, then one task per connection.
//!
//! The task owns the session. It sleeps until the hub wakes it, then
//! pulls batches of shared frames from the history and feeds them to the
//! socket until nothing is left, and only then flushes: a burst costs one
//! write system call per `write_buffer_size` bytes rather than one per
//! frame. While idle it also reads what the client sends (control frames,
//! pongs, the close); a client that sends faster than its replies can be
//! written is slowed down, which affects nobody else.
//!
//! An idle session costs a few KiB (see docs/benchmarks.md): one task whose
//! future holds the connection once, a write buffer allocated only while
//! frames wait to be written, and what is rare boxed when it happens.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ws::close_code;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use http::header::{CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION, UPGRADE};
use http::request::Parts;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{Instant, timeout, timeout_at};
use tokio_tungstenite::WebSocketStream;
use tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tungstenite::protocol::frame::{CloseFrame, Frame as WireFrame};
use tungstenite::protocol::{Role, WebSocketConfig};
use tungstenite::{Message, Utf8Bytes, error::ProtocolError};

use super::admission::{Admission, admit};
use super::batched::Batched;
use super::{Endpoint, Rejection, Settings};
use crate::ErrorCode;
use crate::hub::{ClientFrame, Connection, Frame, Hub, ServerFrame, Session};
use crate::metrics::{self, Transport};

/// How long a closing connection waits for the peer's close reply.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// How many bytes a closing connection reads and discards, at most, so that
/// closing the socket does not reset the connection (see [`linger`]).
const DRAIN_LIMIT: usize = 1 << 20;

/// The upgraded connection. axum's `WebSocket` would hide the socket, which
/// a clean close after a protocol error needs (see [`linger`]). Writes are
/// gathered below tungstenite, in a buffer freed whenever it is flushed
/// (see [`Batched`]).
type Socket = WebSocketStream<Batched<TokioIo<Upgraded>>>;

/// The handler behind the WebSocket route: checks that it is an upgrade
/// request and that the client is admitted, then upgrades.
pub(crate) async fn upgrade(State(endpoint): State<Endpoint>, request: Request) -> Response {
    let Endpoint { notifier, settings } = endpoint;
    let hub = notifier.hub().clone();
    let (mut parts, _body) = request.into_parts();
    let accept = match handshake(&parts) {
        Ok(accept) => accept,
        Err(rejection) => return super::refused(Transport::WebSocket, rejection).into_response(),
    };
    let Some(on_upgrade) = parts.extensions.remove::<OnUpgrade>() else {
        let rejection = not_websocket(StatusCode::UPGRADE_REQUIRED, "this connection cannot be upgraded");
        return super::refused(Transport::WebSocket, rejection).into_response();
    };
    let admission = match admit(&hub, &settings, &parts).await {
        Ok(admission) => admission,
        Err(rejection) => return super::refused(Transport::WebSocket, rejection).into_response(),
    };
    let connection = Connection { transport: Transport::WebSocket, peer: super::serve::peer(&parts) };
    tokio::spawn(open(on_upgrade, hub, settings, admission, connection));
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(SEC_WEBSOCKET_ACCEPT, accept);
    response
}

/// The connection after the 101: opens the session, then hands it to a
/// task of its own (see [`run`]), whose future holds nothing of the opening.
async fn open(
    on_upgrade: OnUpgrade,
    hub: Arc<Hub>,
    settings: Arc<Settings>,
    admission: Admission,
    connection: Connection,
) {
    // Fails when the client went away before the 101 reached it.
    let Ok(io) = on_upgrade.await else { return };
    // tungstenite writes every frame through at once (its own buffer never
    // shrinks); `Batched` gathers them, and lets go of its buffer when flushed.
    let config = WebSocketConfig::default()
        .read_buffer_size(settings.read_buffer_size)
        .write_buffer_size(0)
        .max_message_size(Some(settings.max_message_size))
        .max_frame_size(Some(settings.max_message_size));
    let io = Batched::new(TokioIo::new(io), settings.write_buffer_size);
    let socket = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
    let Admission { identity, subscriptions, cursor } = admission;
    hub.wait_to_open(cursor.as_deref()).await;
    let (session, first) = Session::open(hub, connection, identity, subscriptions, cursor.as_deref());
    tokio::spawn(run(socket, session, first, settings));
}

/// Checks the headers of an upgrade request (RFC 6455, section 4.2.1) and
/// returns the `Sec-WebSocket-Accept` value that answers its key.
fn handshake(parts: &Parts) -> Result<HeaderValue, Rejection> {
    if parts.method != Method::GET {
        return Err(not_websocket(
            StatusCode::METHOD_NOT_ALLOWED,
            "a WebSocket upgrade must be a GET request",
        ));
    }
    let bad = |message: &str| not_websocket(StatusCode::BAD_REQUEST, message);
    if !has_token(&parts.headers, CONNECTION, "upgrade") {
        return Err(bad("the Connection header must contain `upgrade`"));
    }
    if !has_token(&parts.headers, UPGRADE, "websocket") {
        return Err(bad("the Upgrade header must be `websocket`"));
    }
    if parts.headers.get(SEC_WEBSOCKET_VERSION).is_none_or(|v| v != "13") {
        return Err(bad("the Sec-WebSocket-Version header must be 13"));
    }
    let key =
        parts.headers.get(SEC_WEBSOCKET_KEY).ok_or_else(|| bad("the Sec-WebSocket-Key header is missing"))?;
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    // Base64: always a valid header value.
    Ok(HeaderValue::from_str(&accept).expect("base64 is a valid header value"))
}

/// Whether the comma-separated header `name` contains `token` (ASCII case-insensitive).
fn has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

fn not_websocket(status: StatusCode, message: &str) -> Rejection {
    Rejection::new(status, ErrorCode::NotWebsocket, message)
}

/// What a client frame asks of the session.
enum Command {
    Subscribe { names: Vec<String>, filter: Option<serde_json::Value>, after: Option<String> },
    Unsubscribe(Vec<String>),
    Error(ErrorCode, String),
}

/// How a connection ended.
enum End {
    /// The peer closed the connection, or it broke: nothing is left to read.
    Peer,
    /// The server sent its close frame (or the socket failed): see
    /// [`linger`]. `readable` is false after a protocol error, when
    /// tungstenite reads nothing more.
    Closed { readable: bool },
}

/// Drives one connection until it ends, however it ends: one task, which
/// reads what the client sends while the session is idle and writes what
/// the history has for it. The session is unregistered before the socket
/// closes.
///
/// The returned future is the task's, alive as long as the session and part
/// of the task's allocation: it holds the connection once (an `async fn`
/// would also keep its arguments), and what is rare (replies to client
/// frames, pings, the close) is boxed when it happens.
fn run(
    socket: Socket,
    session: Session,
    first: Vec<Frame>,
    settings: Arc<Settings>,
) -> impl Future<Output = ()> + Send + 'static {
    let hub = session.hub().clone();
    let interval = settings.ping_interval;
    let mut ping = tokio::time::interval_at(Instant::now() + interval, interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let frames = first.into_iter().map(Frame::into_text).collect();
    let alive = hub.now_ms();
    let mut conn = Conn { socket, session, frames, alive, settings };
    async move {
        let wake = conn.session.mailbox();
        let closing = hub.closing();
        // Made once: a timer for the identity's expiry is armed once, not at
        // every turn of the loop. (Pinned where it is made: no second copy.)
        let mut reauthenticate = std::pin::pin!(conn.session.must_reauthenticate());
        let end = loop {
            if conn.catch_up().await == Flow::Stop {
                break End::Closed { readable: true };
            }
            // About to sleep: arm the wake-up, then look once more, so that a
            // notification that arrived since the last pull is not missed. (A
            // wake-up sent while unarmed is kept as a permit: at worst one
            // spare turn of the loop.)
            let mut notified = std::pin::pin!(wake.notified());
            notified.as_mut().enable();
            if !conn.session.pull(&mut conn.frames) || !conn.frames.is_empty() {
                continue;
            }
            // Idle: the frame list a burst grew is given back (it is empty).
            if conn.frames.capacity() > super::IDLE_FRAMES {
                conn.frames = Vec::new();
            }
            let event = tokio::select! {
                biased;
                () = closing.cancelled() => Event::Close(close_code::AWAY, "server shutting down"),
                () = &mut reauthenticate => Event::Close(super::REAUTHENTICATE, "reauthenticate"),
                message = conn.socket.next() => Event::Read(message),
                () = &mut notified => continue,
                _ = ping.tick() => Event::Ping,
            };
            // Boxed: client frames and pings are rare, and their state would
            // otherwise be part of every idle session's task.
            if let Some(end) = Box::pin(conn.handle(event)).await {
                break end;
            }
        };
        let Conn { socket, session, .. } = conn;
        // Unregistered before the socket closes.
        drop(session);
        if let End::Closed { readable } = end {
            // Boxed: its state holds a 4 KiB scratch buffer.
            Box::pin(linger(socket, readable)).await;
        }
    }
}

/// After the server's close frame: waits for the peer's close reply, then
/// makes sure that closing the socket does not reset the connection.
///
/// A socket closed with unread input answers with a reset (RST) instead of
/// a FIN, and a reset can destroy the close frame before the peer reads it,
/// or fail the peer's own writes. That input is there whenever reading
/// stopped early: after a protocol error or an oversized frame tungstenite
/// reads nothing more, and a peer may still be sending. So the write half is
/// shut down (the peer reads the close frame, then end of stream) and what
/// the peer still sends is read and discarded until it closes its side, for
/// at most [`CLOSE_GRACE`] and [`DRAIN_LIMIT`] bytes.
async fn linger(mut socket: Socket, readable: bool) {
    let deadline = Instant::now() + CLOSE_GRACE;
    if readable {
        let replied = timeout_at(deadline, async {
            loop {
                match socket.next().await {
                    Some(Ok(_)) => continue,
                    // The close handshake is complete: nothing is left unread.
                    None => return true,
                    Some(Err(_)) => return false,
                }
            }
        });
        if let Ok(true) = replied.await {
            return;
        }
    }
    let io = socket.get_mut();
    let _ = timeout_at(deadline, async {
        io.shutdown().await?;
        let mut scratch = [0u8; 4096];
        let mut left = DRAIN_LIMIT;
        while left > 0 {
            match io.read(&mut scratch).await? {
                0 => break,
                n => left = left.saturating_sub(n),
            }
        }
        Ok::<_, std::io::Error>(())
    })
    .await;
}

/// The close code and reason for a read error the peer caused, or `None`
/// when the connection merely broke.
///
/// tungstenite raises these errors while decoding a frame, before its state
/// changes, so the connection can still send a close frame after them.
fn violation(e: &tungstenite::Error, max_message_size: usize) -> Option<(u16, String)> {
    match e {
        tungstenite::Error::Capacity(_) => {
            Some((close_code::SIZE, format!("message larger than {max_message_size} bytes")))
        }
        tungstenite::Error::Utf8(_) => Some((close_code::INVALID, "invalid UTF-8 in a text frame".into())),
        // The peer closed the TCP connection without a close frame.
        tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake) => None,
        tungstenite::Error::Protocol(violation) => {
            Some((close_code::PROTOCOL, close_reason(format!("protocol error: {violation}"))))
        }
        _ => None,
    }
}

/// What woke an idle connection, other than a notification.
enum Event {
    /// Close with this code and reason.
    Close(u16, &'static str),
    /// What the client sent; `None`: the connection ended.
    Read(Option<Result<Message, tungstenite::Error>>),
    Ping,
}

/// Whether the writer goes on.
#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    Stop,
}

/// A connection and the session it serves.
struct Conn {
    socket: Socket,
    session: Session,
    /// Frames pulled from the history (or replies) not yet fed to the
    /// socket: their text only, shared with every other session.
    frames: Vec<Utf8Bytes>,
    /// When something last arrived from the peer ([`Hub::now_ms`]).
    alive: u64,
    /// The routes' settings: timeouts and limits (shared by every session).
    settings: Arc<Settings>,
}

impl Conn {
    /// Acts on what woke the connection while idle: `Some` when it ends.
    async fn handle(&mut self, event: Event) -> Option<End> {
        match event {
            Event::Close(code, reason) => {
                self.close(code, reason.into()).await;
                Some(End::Closed { readable: true })
            }
            Event::Read(message) => self.read(message).await,
            Event::Ping => match self.ping().await {
                Flow::Continue => None,
                Flow::Stop => Some(End::Closed { readable: true }),
            },
        }
    }

    /// Acts on what the client sent: a control frame is answered (the reply
    /// goes out with the next frames); `Some` when the connection ends.
    async fn read(&mut self, message: Option<Result<Message, tungstenite::Error>>) -> Option<End> {
        let Some(message) = message else { return self.peer_gone().await };
        self.alive = self.session.hub().now_ms();
        let command = match message {
            Ok(Message::Text(text)) => match serde_json::from_str::<ClientFrame>(&text) {
                Ok(ClientFrame::Subscribe { collections, filter, cursor }) => {
                    Command::Subscribe { names: collections, filter, after: cursor }
                }
                Ok(ClientFrame::Unsubscribe { collections }) => Command::Unsubscribe(collections),
                Err(e) => Command::Error(ErrorCode::BadFrame, format!("not a control frame: {e}")),
            },
            Ok(Message::Binary(_)) => {
                let reason = "binary frames are not supported".into();
                return self.refuse(close_code::UNSUPPORTED, reason, true).await;
            }
            Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => return None,
            Ok(Message::Close(_)) => return self.peer_gone().await,
            Err(e) => {
                return match violation(&e, self.settings.max_message_size) {
                    Some((code, reason)) => self.refuse(code, reason, false).await,
                    None => self.peer_gone().await,
                };
            }
        };
        self.obey(command);
        None
    }

    /// The peer closed or the connection broke: flushes the close reply
    /// tungstenite queued, if any.
    async fn peer_gone(&mut self) -> Option<End> {
        let _ = within(self.settings.write_timeout, self.socket.flush()).await;
        Some(End::Peer)
    }

    /// The peer sent something that ends its session: closes with this code
    /// and reason.
    async fn refuse(&mut self, code: u16, reason: String, readable: bool) -> Option<End> {
        self.close(code, reason).await;
        Some(End::Closed { readable })
    }

    /// Feeds frames while the history has some for this session, then
    /// flushes once: `Stop` when the socket fails or is stuck, or when the
    /// session must re-authenticate (checked before every pull: a session
    /// that always has more to send is closed all the same).
    async fn catch_up(&mut self) -> Flow {
        let limit = self.settings.write_timeout;
        let mut unflushed = 0;
        loop {
            if self.session.must_reauthenticate_now() {
                return Box::pin(self.close(super::REAUTHENTICATE, "reauthenticate".into())).await;
            }
            let caught_up = self.session.pull(&mut self.frames);
            if !self.frames.is_empty() {
                unflushed += self.frames.len();
                match feed_all(&mut self.socket, &mut self.frames, limit).await {
                    Some(Ok(())) => {}
                    Some(Err(_)) => return Flow::Stop,
                    None => return self.stuck(),
                }
            } else if caught_up {
                // (Not caught up with nothing to send: everything read was
                // filtered out, and more is stored.)
                break;
            }
        }
        if unflushed > 0 {
            match within(limit, self.socket.flush()).await {
                Some(Ok(())) => self.session.written(unflushed),
                Some(Err(_)) => return Flow::Stop,
                None => return self.stuck(),
            }
        }
        Flow::Continue
    }

    /// The client did not take its frames within the write timeout: the
    /// session ends (it would only fall further behind).
    fn stuck(&self) -> Flow {
        metrics::slow_reader_closed();
        tracing::info!(parent: self.session.span(), "tidings: closing a slow reader (write timeout)");
        Flow::Stop
    }

    /// Carries out what a client frame asked: the reply (after what a
    /// `subscribe` with a cursor replays) joins the frames to send.
    fn obey(&mut self, command: Command) {
        let reply = match command {
            Command::Subscribe { names, filter, after } => {
                return self.session.subscribe(&names, filter.as_ref(), after.as_deref(), &mut self.frames);
            }
            Command::Unsubscribe(names) => self.session.unsubscribe(&names),
            Command::Error(code, message) => ServerFrame::Error { code, message: &message }.to_frame(),
        };
        self.frames.push(reply.into_text());
    }

    /// Closes a peer from which nothing (not even a pong) arrived for the
    /// idle timeout, or pings it.
    async fn ping(&mut self) -> Flow {
        let silent_ms = self.session.hub().now_ms().saturating_sub(self.alive);
        if silent_ms > self.settings.idle_timeout.as_millis() as u64 {
            tracing::debug!(session = %self.session.id(), "tidings: closing a silent peer");
            return self.close(close_code::AWAY, "no pong: peer considered dead".into()).await;
        }
        let ping = self.socket.send(Message::Ping(Default::default()));
        match within(self.settings.write_timeout, ping).await {
            Some(Ok(())) => Flow::Continue,
            _ => Flow::Stop,
        }
    }

    /// Sends a close frame (bounded by the write timeout) and stops.
    async fn close(&mut self, code: u16, reason: String) -> Flow {
        let frame = CloseFrame { code: CloseCode::from(code), reason: reason.into() };
        let limit = self.settings.write_timeout;
        let _ = within(limit, self.socket.send(Message::Close(Some(frame)))).await;
        Flow::Stop
    }
}

/// A shared frame as a text message. The frame is known to be UTF-8, so it
/// goes out as a prepared frame: no copy, and no second validation.
fn text(frame: Utf8Bytes) -> Message {
    let bytes = bytes::Bytes::from(frame);
    Message::Frame(WireFrame::message(bytes, OpCode::Data(Data::Text), true))
}

/// Feeds every frame to the socket's write buffer, which goes to the socket
/// whenever it holds `write_buffer_size` bytes. `None` when the socket does
/// not take the frames within `limit` (a stuck client). `frames` is empty
/// afterwards, whatever the outcome.
///
/// (A hand-written loop rather than an `async` block awaiting `feed`: this
/// future is part of every writer's task, and theirs would be three times
/// larger.)
async fn feed_all(
    sink: &mut Socket,
    frames: &mut Vec<Utf8Bytes>,
    limit: Duration,
) -> Option<Result<(), tungstenite::Error>> {
    let mut fed = 0;
    let feed = std::future::poll_fn(|cx| {
        while fed < frames.len() {
            std::task::ready!(sink.poll_ready_unpin(cx))?;
            sink.start_send_unpin(text(std::mem::take(&mut frames[fed])))?;
            fed += 1;
        }
        std::task::Poll::Ready(Ok(()))
    });
    let result = within(limit, feed).await;
    frames.clear();
    result
}

/// `fut`'s output, or `None` if it takes longer than `limit`. Writes to a
/// healthy socket finish at their first poll; only those that have to wait
/// pay for a timer (boxed: it would otherwise make every writer's task
/// larger).
async fn within<F: Future + Unpin>(limit: Duration, mut fut: F) -> Option<F::Output> {
    let first =
        std::future::poll_fn(|cx| std::task::Poll::Ready(std::pin::Pin::new(&mut fut).poll(cx))).await;
    match first {
        std::task::Poll::Ready(output) => Some(output),
        std::task::Poll::Pending => Box::pin(timeout(limit, fut)).await.ok(),
    }
}

/// The longest reason a close frame can carry: a control frame holds 125
/// bytes, two of which are the code.
const MAX_REASON: usize = 123;

/// `reason`, cut to fit a close frame (at a character boundary).
fn close_reason(mut reason: String) -> String {
    if reason.len() > MAX_REASON {
        let end = (0..=MAX_REASON).rev().find(|&i| reason.is_char_boundary(i)).unwrap_or(0);
        reason.truncate(end);
    }
    reason
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future `f` returns.
    fn future_size<A, B, C, D, R>(_: &impl FnOnce(A, B, C, D) -> R) -> usize {
        size_of::<R>()
    }

    /// A session's task future is part of the task's allocation, for as long
    /// as the session lives: it must not grow back to what it was (4.8 KiB
    /// of lingering buffer in the reader's, 1.9 KiB in the writer's, with a
    /// second task and a channel beside them). About 1.2 KiB today.
    #[test]
    fn an_idle_session_task_stays_small() {
        let run = future_size(&run);
        assert!(run <= 1536, "the session's task future is {run} bytes");
    }

    #[test]
    fn close_reasons_fit_a_control_frame() {
        assert_eq!(close_reason("short".into()), "short");
        let long = close_reason("é".repeat(100));
        assert!(long.len() <= 123 && long.len() >= 122, "{}", long.len());
        assert!(long.chars().all(|c| c == 'é'));
    }
}
