//! Fan-out by subscription: a notification concerns only the sessions that
//! may receive it, so a session on a quiet room never pays for the traffic
//! of the others, not even with a `resync`.

mod common;

use common::{Client, serve};
use serde_json::json;
use tidings::{Config, Notifier, Notify, Op};

/// The two ways a page watches one room: the room as a collection, or the
/// rows of a shared collection filtered by a field.
struct Shape {
    /// The query of a client in room `k`.
    query: fn(u32) -> String,
    /// Notifies room `k`.
    notify: fn(&Notifier, u32, u64),
}

const ROOMS_AS_COLLECTIONS: Shape = Shape {
    query: |k| format!("collections=room-{k}"),
    notify: |notifier, k, i| {
        notifier.notify_with(format!("room-{k}"), Op::Insert, &json!({ "room": k, "i": i })).unwrap();
    },
};

const ROOMS_AS_FILTERS: Shape = Shape {
    query: |k| {
        format!("collections=posts&where={}", common::encode(&json!({"posts": {"room": k}}).to_string()))
    },
    notify: |notifier, k, i| {
        notifier.notify_with("posts", Op::Insert, &json!({ "room": k, "i": i })).unwrap();
    },
};

/// The `i` of the notifications of a burst no page waits for.
const BURST: u64 = 1_000_000;

/// Waits until the busy page has the paced notification `i`, whose cursor
/// is `cursor`: as a notification, or covered by a `resync` at or past it.
/// (A burst may make the busy page lag: a `resync` is its due, and when the
/// fan-out runs beside the caller it may come after `i` was appended, and
/// then stands for it.)
async fn paced(busy: &mut Client, i: u64, cursor: &str) {
    for _ in 0..10_000 {
        let frame = busy.next_json().await;
        if frame["type"] == "resync" {
            if common::seq(frame["cursor"].as_str().unwrap()) >= common::seq(cursor) {
                return;
            }
        } else if frame["data"]["i"].as_u64().is_some_and(|n| n < BURST) {
            assert_eq!(frame["data"]["i"], i, "{frame}");
            return;
        }
    }
    panic!("the busy page never got its paced notification");
}

/// A page on room 1 stays connected while room 2 gets thousands of
/// notifications, hundreds of times more than the history holds, both from
/// a caller that waits for each delivery and from one that never yields.
/// When room 1 gets one, the page receives exactly it: no `resync`, no gap.
async fn a_quiet_room_is_never_resynced(shape: Shape) {
    let notifier = Notifier::with_config(Config::default().replay_capacity(4));
    let addr = serve(&notifier).await;
    let mut quiet = Client::connect(addr, &(shape.query)(1)).await;
    let mut busy = Client::connect(addr, &(shape.query)(2)).await;

    for round in 0..3u64 {
        // The busy page reads each one before the next is sent.
        for i in 0..50 {
            (shape.notify)(&notifier, 2, i);
            paced(&mut busy, i, &notifier.cursor().to_string()).await;
        }
        // A caller that never yields: nothing else runs meanwhile (on this
        // single-threaded runtime).
        for i in 0..1000 {
            (shape.notify)(&notifier, 2, BURST + i);
        }
        (shape.notify)(&notifier, 1, round);
        let frame = quiet.next_json().await;
        assert_eq!(frame["data"], json!({ "room": 1, "i": round }), "round {round}: {frame}");
        assert_eq!(frame["cursor"], notifier.cursor().to_string(), "the newest notification");
    }
}

#[tokio::test]
async fn a_quiet_room_as_a_collection_is_never_resynced() {
    a_quiet_room_is_never_resynced(ROOMS_AS_COLLECTIONS).await;
}

#[tokio::test]
async fn a_quiet_room_as_a_filter_is_never_resynced() {
    a_quiet_room_is_never_resynced(ROOMS_AS_FILTERS).await;
}

/// The same on a multi-threaded runtime, where the fan-out runs beside the
/// caller: the quiet page is still handed only its own notification.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_room_is_never_resynced_beside_a_busy_caller() {
    a_quiet_room_is_never_resynced(ROOMS_AS_FILTERS).await;
}

/// More notifications than the fan-out task's queue holds (65,536), from a
/// caller that never yields: the task cannot tell who wanted the ones it
/// never saw, so every session checks what it may have lost. A page whose
/// collections changed gets a `resync` naming them; a page to whom nothing
/// it may see changed gets nothing at all, and its next notification
/// arrives as usual. Nothing is lost silently.
#[tokio::test]
async fn an_overflowing_fan_out_never_loses_silently() {
    let notifier = Notifier::with_config(Config::default().replay_capacity(4));
    let addr = serve(&notifier).await;
    let mut changed = Client::connect(addr, "collections=a").await;
    let mut untouched = Client::connect(addr, "collections=c").await;
    notifier.notify("a", Op::Insert);
    for _ in 0..70_000 {
        notifier.notify("b", Op::Insert);
    }
    notifier.notify("a", Op::Update);
    let head = notifier.cursor().to_string();

    let frame = changed.next_json().await;
    assert_eq!(frame["type"], "resync", "{frame}");
    assert_eq!(frame["collections"], json!(["a"]), "{frame}");
    assert_eq!(frame["cursor"], head);

    notifier.notify("c", Op::Insert);
    let frame = untouched.next_json().await;
    assert_eq!(frame["collection"], "c", "no resync before it: {frame}");
    assert_eq!(frame["cursor"], notifier.cursor().to_string());
}
