//! `load writes`: how many writes per second a running forums example
//! takes, and the latency of one write.

use std::time::{Duration, Instant};

use crate::Error;
use crate::args::WritesArgs;
use crate::machine::unix_nanos;
use crate::report::percentile;

/// Creates one forum, then `concurrency` writers post to it for `seconds`
/// (each waits for its answer before the next post, as a browser does) and
/// prints writes/s and the latency of a write. Every request is bounded by a
/// timeout; a failed write is counted, not retried.
pub async fn run(args: WritesArgs) -> Result<(), Error> {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
    let forum: serde_json::Value = http
        .post(format!("{}/api/forums", args.url))
        .json(&serde_json::json!({ "title": format!("load {}", unix_nanos()) }))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let id = forum["id"].as_i64().ok_or("the forum has no id")?;
    let posts = format!("{}/api/forums/{id}/posts", args.url);
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let started = Instant::now();
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..args.concurrency {
        let (http, posts) = (http.clone(), posts.clone());
        writers.spawn(async move {
            let (mut latencies, mut failed) = (Vec::new(), 0u64);
            while Instant::now() < deadline {
                let t = Instant::now();
                let body = serde_json::json!({ "body": format!("post from writer {w}") });
                match http.post(&posts).json(&body).send().await {
                    Ok(r) if r.status().is_success() => latencies.push(t.elapsed().as_micros() as u64),
                    _ => failed += 1,
                }
            }
            (latencies, failed)
        });
    }
    let (mut latencies, mut failed) = (Vec::new(), 0);
    while let Some(done) = writers.join_next().await {
        let (l, f) = done?;
        latencies.extend(l);
        failed += f;
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    println!(
        "writes: {} ok, {failed} failed in {elapsed:.1} s with {} writers: {:.0} writes/s, latency p50 {} µs, p99 {} µs",
        latencies.len(),
        args.concurrency,
        latencies.len() as f64 / elapsed,
        percentile(&latencies, 50.0),
        percentile(&latencies, 99.0),
    );
    Ok(())
}
