//! Serving an application with the limits a server facing the internet
//! needs, which `axum::serve` does not set: a deadline for request headers,
//! a deadline for stalled writes, and a graceful shutdown that ends in
//! bounded time after closing every session with 1001.

use std::fmt;
use std::future::{Future, IntoFuture};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::{Instant, Sleep, timeout, timeout_at};
use tower_service::Service;

use crate::Notifier;

/// The default of [`Serve::header_read_timeout`].
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The default of [`Serve::write_timeout`].
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long to wait before accepting again after an error such as "too many
/// open files": retrying at once would spin while nothing can be accepted.
const ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// How long connections still open after the shutdown timeout get to close
/// once they are told to.
const FORCE_CLOSE_WAIT: Duration = Duration::from_secs(1);

/// Serves `app` on `listener` with the limits a public server needs, and
/// shuts down in bounded time. Await the returned [`Serve`] to run it.
///
/// Unlike a bare `axum::serve`:
/// - a client must send its request headers within
///   [`header_read_timeout`](Serve::header_read_timeout) (10 s by default),
///   which also closes idle keep-alive connections: half-open connections
///   cannot pile up until the process runs out of file descriptors;
/// - a write that makes no progress for
///   [`write_timeout`](Serve::write_timeout) (10 s by default) closes the connection:
///   a client that stops reading cannot hold a Server-Sent Events stream, a
///   download or a WebSocket open forever;
/// - once the [shutdown signal](Serve::with_graceful_shutdown) resolves, the
///   server stops accepting, closes every session with 1001 (going away),
///   lets requests in progress finish, and returns within the notifier's
///   [`shutdown_timeout`](crate::Config::shutdown_timeout) (5 s by default),
///   plus at most a second to close the connections still open then;
/// - accepted sockets have Nagle's algorithm off (see the README), and
///   handlers can extract [`ConnectInfo<SocketAddr>`](ConnectInfo).
///
/// It serves HTTP/1.1, which is what WebSockets and Server-Sent Events use.
/// Dropping the future closes every connection it serves.
///
/// ```no_run
/// use axum::{Router, routing::get};
/// use tidings::Notifier;
///
/// # #[tokio::main] async fn main() -> std::io::Result<()> {
/// let notifier = Notifier::new();
/// let app = Router::new()
///     .route("/", get(|| async { "hello" }))
///     .merge(tidings::axum::routes(&notifier));
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
/// tidings::axum::serve(listener, app, &notifier)
///     .with_graceful_shutdown(async { tokio::signal::ctrl_c().await.unwrap_or(()) })
///     .await;
/// # Ok(()) }
/// ```
pub fn serve(listener: TcpListener, app: Router, notifier: &Notifier) -> Serve {
    Serve {
        listener,
        app,
        notifier: notifier.clone(),
        header_read_timeout: HEADER_READ_TIMEOUT,
        write_timeout: WRITE_TIMEOUT,
        signal: Box::pin(std::future::pending()),
    }
}

/// A server being set up by [`serve`]; await it to run it.
#[must_use = "a server does nothing until it is awaited"]
pub struct Serve {
    listener: TcpListener,
    app: Router,
    notifier: Notifier,
    header_read_timeout: Duration,
    write_timeout: Duration,
    signal: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl Serve {
    /// How long a client may take to send a request's headers, from the
    /// moment the server starts reading them (default 10 s). An idle
    /// keep-alive connection is closed after this long too.
    pub fn header_read_timeout(mut self, timeout: Duration) -> Self {
        self.header_read_timeout = timeout;
        self
    }

    /// How long a write may make no progress before the connection is
    /// closed (default 10 s): the deadline a Server-Sent Events stream, a
    /// download or a WebSocket gets when its client stops reading. (A
    /// WebSocket session's own [`write_timeout`](super::Settings::write_timeout)
    /// closes it cleanly first when it is shorter.)
    pub fn write_timeout(mut self, timeout: Duration) -> Self {
        self.write_timeout = timeout;
        self
    }

    /// Shuts the server down gracefully once `signal` resolves (typically
    /// on Ctrl-C or SIGTERM); see [`serve`] for what that does and how long
    /// it takes. Without a signal the server runs until the future is
    /// dropped.
    pub fn with_graceful_shutdown<F>(mut self, signal: F) -> Self
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.signal = Box::pin(signal);
        self
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    async fn run(self) {
        let Serve { listener, app, notifier, header_read_timeout, write_timeout, mut signal } = self;
        let mut http = http1::Builder::new();
        http.timer(TokioTimer::new()).header_read_timeout(header_read_timeout);
        // Every connection task holds a receiver: the server knows when all
        // have ended by the sender being closed.
        let (stage, stages) = watch::channel(Stage::Serving);

        loop {
            let accepted = tokio::select! {
                biased;
                () = &mut signal => break,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((tcp, remote)) => {
                    // tidings already gathers frames into few writes; small
                    // ones must not wait for the peer's ACK.
                    tcp.set_nodelay(true).ok();
                    let io = TokioIo::new(WriteDeadline::new(tcp, write_timeout));
                    tokio::spawn(connection(io, remote, app.clone(), &http, stages.clone()));
                }
                // The client gave up before it was accepted.
                Err(e) if is_connection_error(&e) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "tidings: cannot accept connections; retrying in a second");
                    tokio::select! {
                        biased;
                        () = &mut signal => break,
                        () = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                    }
                }
            }
        }

        tracing::debug!("tidings: shutting down the server");
        drop(listener);
        drop(stages);
        stage.send_replace(Stage::Draining);
        let deadline = Instant::now() + notifier.config().shutdown_timeout;
        let connections_done = async {
            let _ = timeout_at(deadline, stage.closed()).await;
        };
        tokio::join!(notifier.shutdown(), connections_done);
        let open = stage.receiver_count();
        if open > 0 {
            tracing::warn!(
                connections = open,
                "tidings: closing connections still open after the shutdown timeout"
            );
            stage.send_replace(Stage::Closing);
            let _ = timeout(FORCE_CLOSE_WAIT, stage.closed()).await;
        }
    }
}

impl IntoFuture for Serve {
    type Output = ();
    type IntoFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.run())
    }
}

impl fmt::Debug for Serve {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Serve")
            .field("local_addr", &self.listener.local_addr().ok())
            .field("header_read_timeout", &self.header_read_timeout)
            .finish_non_exhaustive()
    }
}

/// Where the server is in its life; connections watch it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Serving,
    /// Finish the request in progress, then close.
    Draining,
    /// Close now.
    Closing,
}

/// Marks a request served by [`serve`]: its connection's writes have a
/// deadline. The SSE route warns when it is served without one.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline;

/// Warns, once per process, when the Server-Sent Events route is served
/// without [`serve`]: a client that stops reading its stream would then
/// hold it open for ever, and nothing else would say so.
pub(crate) fn check_deadline(parts: &http::request::Parts) {
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if parts.extensions.get::<Deadline>().is_none()
        && !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed)
    {
        tracing::warn!(
            "tidings: the Server-Sent Events route is not served by tidings::axum::serve: a client that \
             stops reading its stream is never closed (serve with tidings::axum::serve)"
        );
    }
}

/// The client's address, when the server provides it: [`serve`] does, as
/// does axum's `into_make_service_with_connect_info`.
pub(crate) fn peer(parts: &http::request::Parts) -> Option<SocketAddr> {
    parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(addr)| *addr)
}

/// Serves one connection until it ends, or until the server closes it.
///
/// A plain function returning the task's future, with hyper's connection
/// boxed once: an `async fn` would hold its arguments beside the connection
/// made of them, and pinning would copy it again, for as long as the
/// connection lives (a Server-Sent Events stream: as long as the session).
fn connection(
    io: TokioIo<WriteDeadline>,
    remote: SocketAddr,
    app: Router,
    http: &http1::Builder,
    mut stage: watch::Receiver<Stage>,
) -> impl Future<Output = ()> + Send + 'static {
    let service = hyper::service::service_fn(move |request: http::Request<Incoming>| {
        let mut request = request.map(Body::new);
        request.extensions_mut().insert(ConnectInfo(remote));
        request.extensions_mut().insert(Deadline);
        app.clone().call(request)
    });
    // An upgraded connection (a WebSocket) leaves this future at the
    // upgrade; its session closes on `Notifier::shutdown`.
    let mut conn = Box::pin(http.serve_connection(io, service).with_upgrades());
    async move {
        // An error from `wait_for` means the server itself is gone: close too.
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = stage.wait_for(|s| *s != Stage::Serving) => {}
        }
        conn.as_mut().graceful_shutdown();
        tokio::select! {
            _ = conn.as_mut() => {}
            _ = stage.wait_for(|s| *s == Stage::Closing) => {}
        }
    }
}

/// Errors that concern one connection, not the listener.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    )
}

/// A TCP stream whose writes fail once one has waited `limit` without the
/// peer taking a byte: a client that stops reading cannot hold a response
/// (such as an endless Server-Sent Events stream, whose writer hyper would
/// otherwise wait on forever) or a connection open. The timer is armed only
/// when a write has to wait.
struct WriteDeadline {
    tcp: TcpStream,
    limit: Duration,
    /// Created at the first write that waits, then reused.
    timer: Option<Pin<Box<Sleep>>>,
    armed: bool,
}

impl WriteDeadline {
    fn new(tcp: TcpStream, limit: Duration) -> Self {
        WriteDeadline { tcp, limit, timer: None, armed: false }
    }

    /// Passes a write's outcome on; a write still waiting when the deadline
    /// passes fails with `TimedOut`.
    fn check<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if poll.is_ready() {
            self.armed = false;
            return poll;
        }
        let limit = self.limit;
        let timer = self.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        if !self.armed {
            timer.as_mut().reset(Instant::now() + limit);
            self.armed = true;
        }
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.armed = false;
                Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "the peer stopped reading")))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for WriteDeadline {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for WriteDeadline {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.tcp).poll_write(cx, buf);
        self.check(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs);
        self.check(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.tcp).poll_flush(cx);
        self.check(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.tcp).poll_shutdown(cx);
        self.check(cx, poll)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn future_size<A, B, C, D, E, R>(_: &impl FnOnce(A, B, C, D, E) -> R) -> usize {
        size_of::<R>()
    }

    /// A connection's task lives as long as the connection (a Server-Sent
    /// Events stream: as long as its session): its future holds hyper's
    /// connection boxed, once (it was 1240 bytes with two copies of parts of
    /// it inline; about 200 now).
    #[test]
    fn a_connection_task_stays_small() {
        let size = future_size(&connection);
        assert!(size <= 512, "a connection's task future is {size} bytes");
    }
}
