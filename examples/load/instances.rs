//! The server processes a run starts (the same binary, `load server …`) and
//! how the driver talks to them: spawn and stop, the control API (`/emit`,
//! `/stats`) over a tiny HTTP client, the backplane warm-up, and deleting a
//! run's Redis stream.

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::Error;
use crate::args::{HubArgs, Impl};
use crate::server::{EmitReport, Stats};

/// A tiny HTTP/1.1 client for the control API (`Connection: close`).
pub async fn http_json<T: for<'de> Deserialize<'de>>(
    addr: &str,
    method: &str,
    path: &str,
    limit: Duration,
) -> Result<T, Error> {
    let request = async {
        let mut s = TcpStream::connect(addr).await?;
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        Ok::<_, Error>(buf)
    };
    let buf =
        tokio::time::timeout(limit, request).await.map_err(|_| format!("{method} {path}: timed out"))??;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) =
        text.split_once("\r\n\r\n").ok_or_else(|| format!("{method} {path}: malformed response"))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("{method} {path}: {}", head.lines().next().unwrap_or("")).into());
    }
    Ok(serde_json::from_str(body)?)
}

/// A server child process and the address it listens on.
pub struct Server {
    child: tokio::process::Child,
    pub addr: String,
}

/// Starts `load server` for `imp` with the run's server flags and waits for
/// the address it listens on.
pub async fn spawn_server(hub: &HubArgs, imp: Impl, backplane_name: &str) -> Result<Server, Error> {
    let mut cmd = tokio::process::Command::new(std::env::current_exe()?);
    cmd.args([
        "server",
        "--addr",
        "127.0.0.1:0",
        "--impl",
        imp.name(),
        "--replay",
        &hub.replay.to_string(),
        "--nodelay",
        hub.nodelay.name(),
    ]);
    if let Some(url) = &hub.backplane {
        cmd.args(["--backplane", url, "--backplane-name", backplane_name]);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .map_err(|_| "server did not start")??
        .ok_or("server exited")?;
    let addr = line
        .strip_prefix("listening on http://")
        .ok_or_else(|| format!("unexpected server output: {line}"))?
        .to_owned();
    Ok(Server { child, addr })
}

/// Closes the server's stdin and waits for it to exit (kills it after 5 s).
pub async fn stop_server(mut server: Server) {
    drop(server.child.stdin.take()); // the server exits when its stdin closes
    if tokio::time::timeout(Duration::from_secs(5), server.child.wait()).await.is_err() {
        let _ = server.child.kill().await;
    }
}

/// `/stats` of every instance, in order.
pub async fn stats_all(addrs: &[String], limit: Duration) -> Result<Vec<Stats>, Error> {
    let mut all = Vec::with_capacity(addrs.len());
    for addr in addrs {
        all.push(http_json(addr, "GET", "/stats", limit).await?);
    }
    Ok(all)
}

/// Sums of RSS, sessions and CPU over the instances.
pub fn total(all: &[Stats]) -> Stats {
    Stats {
        rss_kib: all.iter().map(|s| s.rss_kib).sum(),
        sessions: all.iter().map(|s| s.sessions).sum(),
        cpu_ms: all.iter().map(|s| s.cpu_ms).sum(),
        cpu_ns: all.iter().map(|s| s.cpu_ns).sum(),
        cursor: String::new(),
        status: all.first().map(|s| s.status.clone()).unwrap_or_default(),
    }
}

/// Through a backplane, before any client connects: one notification emitted
/// on instance A (collection `warmup`) must move the cursor of every
/// instance, so that publisher and subscribers are connected (PostgreSQL's
/// LISTEN in particular) before anything is measured.
pub async fn warm_up(addrs: &[String], limit: Duration) -> Result<(), Error> {
    let before = stats_all(addrs, limit).await?;
    let _: EmitReport = http_json(&addrs[0], "POST", "/emit?count=1&size=0&collection=warmup", limit).await?;
    let start = Instant::now();
    loop {
        let now = stats_all(addrs, limit).await?;
        if now.iter().zip(&before).all(|(n, b)| n.cursor != b.cursor) {
            for (k, s) in now.iter().enumerate() {
                eprintln!("instance {}: backplane {}, cursor {}", instance_name(k), s.status, s.cursor);
            }
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(15) {
            let states: Vec<String> = now.iter().map(|s| format!("{} ({})", s.cursor, s.status)).collect();
            return Err(format!("warm-up notification did not reach every instance: {states:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Instances are named A, B, …; A is the one that emits.
pub fn instance_name(k: usize) -> char {
    (b'A' + (k as u8).min(25)) as char
}

/// Deletes the Redis stream a run created under its own unique key
/// (PostgreSQL channels leave nothing behind).
#[cfg(feature = "redis")]
pub async fn drop_stream(url: &str, key: &str) {
    if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
        return;
    }
    let del = async {
        let client = redis::Client::open(url)?;
        let mut c = client.get_multiplexed_async_connection().await?;
        redis::cmd("DEL").arg(key).query_async::<()>(&mut c).await
    };
    match tokio::time::timeout(Duration::from_secs(5), del).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("could not delete the stream {key}: {e}"),
        Err(_) => eprintln!("could not delete the stream {key}: timed out"),
    }
}

#[cfg(not(feature = "redis"))]
pub async fn drop_stream(_url: &str, _key: &str) {}
