//! The slow-reader series, in process: a client that stops reading is
//! closed after the write timeout (`tidings_slow_reader_closes_total`), and
//! one that falls behind the history gets a `resync` counted with cause
//! `lagged`.
//!
//! The `metrics` recorder is global to a process: this binary holds one
//! test, which installs a Prometheus recorder before any notifier starts.

mod common;

use std::time::Duration;

use common::{Client, seq, serve, wait_sessions};
use serde_json::json;
use tidings::axum::Settings;
use tidings::{Config, Notifier, Notify, Op};

/// The value of the series `name` with all of `labels` in `text`; 0 when
/// absent.
fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(series, _)| {
            let (n, l) = series.split_once('{').unwrap_or((series, ""));
            n == name && labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .map(|(_, v)| v.parse::<f64>().unwrap())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stuck_readers_are_counted_as_closed_and_lagging_ones_as_resynced() {
    let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder().unwrap();
    let big = "x".repeat(256 * 1024);

    // A client that never reads: its writer blocks, and is closed after the
    // write timeout (32 MB is far more than loopback buffers hold).
    let strict = Notifier::with_config(Config::default().replay_capacity(64));
    let addr =
        common::serve_with(&strict, Settings::default().write_timeout(Duration::from_millis(300))).await;
    let _stuck = Client::connect(addr, "").await;
    let mut reader = Client::connect(addr, "").await;
    for i in 0..128 {
        strict.notify_with("blobs", Op::Insert, &json!({ "i": i, "blob": big })).unwrap();
        assert_eq!(reader.next_json().await["data"]["i"], i);
    }
    wait_sessions(&strict, 1).await;
    let text = prometheus.render();
    assert_eq!(value(&text, "tidings_slow_reader_closes_total", &[]), 1.0, "{text}");
    assert_eq!(value(&text, "tidings_resyncs_total", &[("cause", "lagged")]), 0.0, "the reader kept up");

    // A client that reads late, with the default (long) write timeout: it
    // falls more than 16 notifications behind and gets a resync (more than
    // one if it was lapped while its socket still took frames): each one it
    // receives is counted.
    let patient = Notifier::with_config(Config::default().replay_capacity(16));
    let addr = serve(&patient).await;
    let mut slow = Client::connect(addr, "").await;
    let start = seq(&slow.cursor);
    for i in 0..64u64 {
        patient.notify_with("blobs", Op::Insert, &json!({ "i": i, "blob": big })).unwrap();
    }
    let head = patient.cursor().seq();
    let mut resyncs = 0;
    let mut expected = start + 1;
    for _ in 0..100 {
        if expected > head {
            break;
        }
        let frame = slow.next_json().await;
        if frame["type"] == "resync" {
            resyncs += 1;
            expected = seq(frame["cursor"].as_str().unwrap()) + 1;
        } else {
            expected += 1;
        }
    }
    assert!(resyncs > 0, "the slow client lagged");
    let text = prometheus.render();
    assert_eq!(value(&text, "tidings_resyncs_total", &[("cause", "lagged")]), f64::from(resyncs), "{text}");
    assert_eq!(value(&text, "tidings_resyncs_total", &[("cause", "interrupted")]), 0.0);
    assert_eq!(value(&text, "tidings_slow_reader_closes_total", &[]), 1.0, "a lagging client is not closed");
    assert_eq!(value(&text, "tidings_sessions", &[("transport", "ws")]), 2.0, "the reader and the slow one");
    assert_eq!(value(&text, "tidings_notifications_emitted_total", &[]), 192.0);
}
