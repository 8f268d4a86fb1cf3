//! The Server-Sent Events transport, for networks where WebSockets are
//! blocked: the same sessions, subscriptions, audiences and authorization as
//! the WebSocket, one-way.
//!
//! Every frame is sent as an SSE `message` event whose data is exactly the
//! JSON the WebSocket would carry, so clients parse both the same way. The
//! event `id` is the frame's cursor, so the browser's automatic
//! `Last-Event-ID` resumes where the stream broke. Subscriptions are chosen
//! with the `collections` query parameter (there is no upstream channel).
//!
//! The HTTP server, not a tidings task, writes the stream, and while the
//! socket is full it does not poll the stream: a client that stops reading
//! cannot be noticed from here. [`serve`](crate::axum::serve) closes it with
//! a write deadline of `write_timeout` on every connection.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use tokio_util::sync::CancellationToken;

use super::Endpoint;
use super::admission::{Admission, admit};
use crate::hub::{Connection, Frame, Mailbox, ServerFrame, Session};
use crate::metrics::Transport;

/// The handler behind the SSE route.
pub(crate) async fn events(State(endpoint): State<Endpoint>, request: Request) -> Response {
    let Endpoint { notifier, settings } = endpoint;
    let hub = notifier.hub().clone();
    let (parts, _body) = request.into_parts();
    super::serve::check_deadline(&parts);
    let Admission { identity, subscriptions, cursor } = match admit(&hub, &settings, &parts).await {
        Ok(admission) => admission,
        Err(rejection) => return super::refused(Transport::Sse, rejection).into_response(),
    };
    // The browser sends Last-Event-ID when it reconnects by itself; it is
    // newer than the cursor in the URL it first connected with.
    let last_event_id = parts.headers.get("last-event-id").and_then(|v| v.to_str().ok());
    let resume = last_event_id.map(str::to_owned).or(cursor);
    let keep_alive = KeepAlive::new().interval(settings.ping_interval).text("");
    let closing = hub.closing();
    hub.wait_to_open(resume.as_deref()).await;
    let connection = Connection { transport: Transport::Sse, peer: super::serve::peer(&parts) };
    let (session, first) = Session::open(hub, connection, identity, subscriptions, resume.as_deref());
    let mut response =
        Sse::new(stream(session, first.into(), closing)).keep_alive(keep_alive).into_response();
    // Proxies such as nginx would otherwise buffer the stream.
    response.headers_mut().insert("x-accel-buffering", http::HeaderValue::from_static("no"));
    response
}

/// The session's frames as SSE events; ends when the hub shuts down. The
/// session is unregistered when the client goes away and the response body
/// (this stream) is dropped.
fn stream(
    session: Session,
    pending: VecDeque<Frame>,
    closing: CancellationToken,
) -> impl Stream<Item = Result<Event, Infallible>> {
    struct State {
        session: Session,
        wake: Arc<Mailbox>,
        pending: VecDeque<Frame>,
        closing: CancellationToken,
        /// Made once, so an expiry's timer is armed once.
        reauthenticate: Pin<Box<dyn Future<Output = ()> + Send>>,
        /// The `reauthenticate` frame was queued: the stream ends after it.
        ending: bool,
    }
    let state = State {
        wake: session.mailbox(),
        reauthenticate: Box::pin(session.must_reauthenticate()),
        session,
        pending,
        closing,
        ending: false,
    };
    futures_util::stream::unfold(state, |mut state| async move {
        loop {
            if let Some(frame) = state.pending.pop_front() {
                state.session.written(1);
                return Some((Ok(event(&frame)), state));
            }
            if state.ending {
                return None;
            }
            // Checked before every pull, not only while idle: under steady
            // traffic the stream never is.
            if state.session.must_reauthenticate_now() {
                state.pending.push_back(ServerFrame::Reauthenticate.to_frame());
                state.ending = true;
                continue;
            }
            let wake = &state.wake;
            let notified = wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // (What waits is sent first: `pending` is empty here.)
            let caught_up = state.session.pull(&mut state.pending);
            if !state.pending.is_empty() || !caught_up {
                continue;
            }
            // Idle: what a burst grew is given back (it is empty here).
            if state.pending.capacity() > super::IDLE_FRAMES {
                state.pending = VecDeque::new();
            }
            tokio::select! {
                biased;
                () = state.closing.cancelled() => return None,
                () = state.reauthenticate.as_mut() => {
                    // No close codes on SSE: a last frame says it.
                    state.pending.push_back(ServerFrame::Reauthenticate.to_frame());
                    state.ending = true;
                }
                _ = notified => {}
            }
        }
    })
}

/// The frame as an SSE event whose id is the frame's cursor, if it has one.
fn event(frame: &Frame) -> Event {
    let event = Event::default().data(frame.as_str());
    match frame.cursor() {
        Some(cursor) => event.id(cursor.to_string()),
        None => event,
    }
}
