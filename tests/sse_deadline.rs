//! Serving the Server-Sent Events route without `tidings::axum::serve` is
//! not silent: it has no write deadline, so a client that stops reading
//! would hold its stream for ever, and the route says so (once per
//! process, which is why this test has a file, and so a process, of its
//! own).

mod common;

use std::sync::{Arc, Mutex};

use common::{LIMIT, serve};
use tidings::Notifier;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// Where the log lines go: the test reads them back.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Opens the SSE stream and reads its first event's data line.
async fn first_event(addr: std::net::SocketAddr) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET /events HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut lines = BufReader::new(tcp).lines();
    timeout(LIMIT, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.starts_with("data:") {
                return;
            }
        }
        panic!("the stream ended before its first event");
    })
    .await
    .expect("an event within the limit");
}

#[tokio::test]
async fn the_sse_route_warns_when_served_without_a_write_deadline() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt().with_writer(move || writer.clone()).with_ansi(false).finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let warning = "not served by tidings::axum::serve";
    let logged = || String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();

    // Served by tidings::axum::serve: nothing to say.
    let notifier = Notifier::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().merge(tidings::axum::routes(&notifier));
    tokio::spawn(std::future::IntoFuture::into_future(tidings::axum::serve(listener, app, &notifier)));
    first_event(addr).await;
    assert!(!logged().contains(warning), "{}", logged());

    // Served by a bare axum::serve: a warning.
    let bare = Notifier::new();
    first_event(serve(&bare).await).await;
    assert!(logged().contains(warning), "no warning in: {}", logged());
}
