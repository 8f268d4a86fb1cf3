//! `load run`: for each implementation, start its server(s), connect the
//! clients, measure idle memory, emit, wait for the deliveries (every wait
//! bounded), and hand the records to the report.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, watch};

use crate::Error;
use crate::args::{Impl, RunArgs, Shape};
use crate::client::{ClientSpec, Expect, Shared, client};
use crate::instances::{
    drop_stream, http_json, instance_name, spawn_server, stats_all, stop_server, total, warm_up,
};
use crate::machine::{cpu_ms, cpu_ns, engine_cpu_ms, machine_ticks, nofile_soft_limit};
use crate::report::{Row, Snapshots, print_rows, summarize};
use crate::server::EmitReport;
use crate::transactional::Setup;

/// Whole run of one implementation (connect, emit, receive) must end in this.
const OVERALL_TIMEOUT: Duration = Duration::from_secs(120);
/// After the emit call returned, stop waiting once no client made progress
/// for this long.
const QUIET_TIMEOUT: Duration = Duration::from_secs(5);
/// Clients connecting at once.
const CONNECT_CONCURRENCY: usize = 128;

pub async fn run(args: RunArgs) -> Result<(), Error> {
    if let Some(limit) = nofile_soft_limit()
        && limit < (args.clients as u64 + 64)
    {
        eprintln!(
            "warning: open file limit is {limit}, below {} clients: run `ulimit -n 65536` first",
            args.clients
        );
    }
    if args.hub.backplane.as_deref().is_some_and(|u| u.starts_with("postgres")) && args.size > 7000 {
        eprintln!(
            "warning: PostgreSQL refuses NOTIFY payloads of 8000 bytes or more: keep --size small (e.g. 100)"
        );
    }
    println!(
        "clients={} messages={} size={}B mode={} subscribed={} rooms={} replay={} cpus={} driver-threads={} client-read-buffer={}B server-nodelay={} backplane={} instances={}",
        args.clients,
        args.messages,
        args.size,
        if args.paced() { format!("paced({}us)", args.pace_us) } else { "burst".into() },
        if args.ten_pct() { "10pct" } else { "all" },
        match args.rooms {
            Some(r) => format!("{r}({})", args.shape.name()),
            None => "none".into(),
        },
        args.hub.replay,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        args.driver_threads.max(1),
        args.client_read_buffer,
        args.hub.nodelay.name(),
        args.hub.backplane.as_deref().unwrap_or("none"),
        if args.hub.backplane.is_some() { args.instances } else { 1 },
    );
    let mut rows = Vec::new();
    for &imp in args.imp.each() {
        match tokio::time::timeout(OVERALL_TIMEOUT + Duration::from_secs(30), run_one(&args, imp)).await {
            Ok(Ok(row)) => rows.push(row),
            Ok(Err(e)) => eprintln!("{}: failed: {e}", imp.name()),
            Err(_) => eprintln!("{}: timed out", imp.name()),
        }
        // Let the sockets of this run close before the next one.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    print_rows(&args, &rows);
    Ok(())
}

/// The row label: `tidings`, or `tidings redis x2` through a backplane.
fn label(args: &RunArgs, imp: Impl) -> String {
    match &args.hub.backplane {
        None => imp.name().to_owned(),
        Some(url) => {
            let scheme = url.split_once("://").map_or(url.as_str(), |(s, _)| s);
            format!("{} {scheme} x{}", imp.name(), args.instances)
        }
    }
}

/// One implementation: its server(s) up, the measurement, then everything
/// stopped and cleaned up, whatever the outcome.
async fn run_one(args: &RunArgs, imp: Impl) -> Result<Row, Error> {
    let started = Instant::now();
    let deadline = started + OVERALL_TIMEOUT;
    // Every instance of this run gets the same stream key / channel.
    let name = args.hub.backplane_name_or_new();
    // A transactional setup's application table exists before any server
    // writes to it.
    let setup = args.hub.backplane.as_deref().and_then(|url| Setup::parse(url, &name));
    if let Some(setup) = &setup {
        setup.create().await?;
    }
    let instances = if args.hub.backplane.is_some() { args.instances } else { 1 };
    let mut servers = Vec::with_capacity(instances);
    let mut spawned = Ok(());
    for _ in 0..instances {
        match spawn_server(&args.hub, imp, &name).await {
            Ok(s) => servers.push(s),
            Err(e) => {
                spawned = Err(e);
                break;
            }
        }
    }
    let result = match spawned {
        Ok(()) => {
            let addrs: Vec<String> = servers.iter().map(|s| s.addr.clone()).collect();
            drive(args, imp, &addrs, deadline).await
        }
        Err(e) => Err(e),
    };
    for s in servers {
        stop_server(s).await;
    }
    if args.hub.backplane_name.is_none()
        && let Some(url) = &args.hub.backplane
    {
        match &setup {
            Some(setup) => setup.drop_all().await,
            None => drop_stream(url, &name).await,
        }
    }
    result
}

/// Connects the clients to `addrs`, emits on the first, waits for the
/// deliveries and returns the row.
async fn drive(args: &RunArgs, imp: Impl, addrs: &[String], deadline: Instant) -> Result<Row, Error> {
    let tidings = imp == Impl::Tidings;
    let label = label(args, imp);
    let ctl = Duration::from_secs(10);
    let emitter = addrs[0].clone();
    // Let the servers settle, then measure their memory without sessions.
    tokio::time::sleep(Duration::from_millis(300)).await;
    if args.hub.backplane.is_some() {
        warm_up(addrs, ctl).await?;
    }
    let before = total(&stats_all(addrs, ctl).await?);

    let shared = Arc::new(Shared {
        read_buffer: args.client_read_buffer,
        done: AtomicUsize::new(0),
        ready: AtomicUsize::new(0),
        progress: AtomicU64::new(0),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let connect = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
    let mut tasks = Vec::with_capacity(args.clients);
    let mut wanted_clients = 0usize;
    let rooms = args.room_count();
    for n in 0..args.clients {
        let hot = !args.ten_pct() || n % 10 == 0;
        // Clients alternate between the instances: half on A, half on B.
        let instance = n % addrs.len();
        let addr = &addrs[instance];
        // Rooms: client n joins room n % R.
        let room = n % rooms.max(1);
        let url = if rooms > 0 {
            match (tidings, args.shape) {
                (false, _) => format!("ws://{addr}/ws?room={room}"),
                (true, Shape::Collections) => format!("ws://{addr}/ws?collections=room-{room}"),
                (true, Shape::Filter) => {
                    let filter = format!(r#"{{"posts":{{"room":{room}}}}}"#);
                    format!("ws://{addr}/ws?collections=posts&where={}", percent_encode(&filter))
                }
            }
        } else if !args.ten_pct() {
            format!("ws://{addr}/ws")
        } else if tidings {
            let c = if hot { "hot" } else { "cold" };
            format!("ws://{addr}/ws?collections={c}")
        } else {
            // The baseline has no filtering: every client gets everything
            // and the cold ones drop it on receipt.
            format!("ws://{addr}/ws")
        };
        wanted_clients += hot as usize;
        let (expect, collection) = if rooms > 0 {
            (Expect::room(room, rooms, args.messages), args.shape.collection(room))
        } else {
            (Expect::all(args.messages), "hot".to_owned())
        };
        let spec = ClientSpec { url, tidings, wanted: hot, instance, expect, collection, rooms: rooms > 0 };
        tasks.push(tokio::spawn(client(spec, shared.clone(), connect.clone(), stop_rx.clone())));
    }
    // Wait until every client is connected and the servers count them all.
    let connect_start = Instant::now();
    let mut connected_sessions = 0;
    loop {
        let ready = shared.ready.load(Ordering::SeqCst);
        let finished = tasks.iter().filter(|t| t.is_finished()).count();
        if ready + finished >= args.clients {
            let s = total(&stats_all(addrs, ctl).await?);
            connected_sessions = s.sessions;
            if s.sessions >= ready {
                break;
            }
        }
        if Instant::now() > deadline || connect_start.elapsed() > Duration::from_secs(60) {
            eprintln!("{label}: only {} of {} clients connected", ready, args.clients);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let connect_time = connect_start.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_each = stats_all(addrs, ctl).await?;
    let idle = total(&idle_each);
    let driver_cpu_before = cpu_ms();
    let driver_ns_before = cpu_ns();
    let machine_before = machine_ticks();
    let engine_before = engine_cpu_ms();
    let ready = shared.ready.load(Ordering::SeqCst);
    eprintln!(
        "{label}: {ready} clients connected in {:.1} s, server sessions {} ({}), rss {} -> {} KiB",
        connect_time.as_secs_f64(),
        connected_sessions.max(idle.sessions),
        idle_each
            .iter()
            .enumerate()
            .map(|(k, s)| format!("{}: {}", instance_name(k), s.sessions))
            .collect::<Vec<_>>()
            .join(", "),
        before.rss_kib,
        idle.rss_kib
    );

    // Emit, on instance A only.
    let pace_us = if args.paced() { args.pace_us } else { 0 };
    let mut path =
        format!("/emit?count={}&size={}&collection=hot&pace_us={}", args.messages, args.size, pace_us);
    if rooms > 0 {
        path.push_str(&format!("&rooms={rooms}&shape={}", args.shape.name()));
    }
    let emit_limit = deadline.saturating_duration_since(Instant::now());
    let emit =
        tokio::spawn(async move { http_json::<EmitReport>(&emitter, "POST", &path, emit_limit).await });
    let mut emit_report: Option<EmitReport> = None;
    let mut emit_task = Some(emit);
    let mut last_progress = (0, Instant::now());
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if let Some(task) = emit_task.as_ref()
            && task.is_finished()
        {
            let task = emit_task.take().ok_or("emit task")?;
            emit_report = Some(task.await??);
            last_progress.1 = Instant::now();
        }
        let progress = shared.progress.load(Ordering::Relaxed);
        if progress != last_progress.0 {
            last_progress = (progress, Instant::now());
        }
        let done = shared.done.load(Ordering::SeqCst);
        let wanted_ready = if args.ten_pct() { wanted_clients.min(ready) } else { ready };
        if emit_report.is_some() && done >= wanted_ready {
            break;
        }
        if emit_report.is_some() && last_progress.1.elapsed() > QUIET_TIMEOUT {
            eprintln!("{label}: no progress for {QUIET_TIMEOUT:?}, counting the rest as lost");
            break;
        }
        if Instant::now() > deadline {
            eprintln!("{label}: overall timeout, counting the rest as lost");
            break;
        }
    }
    // Give cold (baseline) clients a moment to drain what they are sent.
    if args.ten_pct() && !tidings {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let after_each = stats_all(addrs, ctl).await.unwrap_or_default();
    let after = total(&after_each);
    let driver_cpu = cpu_ms().saturating_sub(driver_cpu_before);
    let driver_ns = cpu_ns().saturating_sub(driver_ns_before);
    let machine_after = machine_ticks();
    let engine_cpu = engine_cpu_ms().saturating_sub(engine_before);
    let _ = stop_tx.send(true);
    let emit = match emit_report {
        Some(r) => r,
        None => match emit_task {
            Some(t) => tokio::time::timeout(Duration::from_secs(10), t)
                .await
                .map_err(|_| "emit did not return")???,
            None => EmitReport::default(),
        },
    };
    let mut results = Vec::with_capacity(tasks.len());
    for t in tasks {
        if let Ok(Ok(r)) = tokio::time::timeout(Duration::from_secs(10), t).await {
            results.push(r);
        }
    }
    let snapshots = Snapshots { before, idle, after, idle_each, after_each };
    let mut row = summarize(&label, args, &results, &emit, &snapshots);
    row.driver_cpu_ms = driver_cpu;
    row.driver_cpu_ns = driver_ns;
    row.engine_cpu_ms = engine_cpu;
    // Busy CPU time of the whole machine over the same span, in ms: what is
    // neither server nor driver (nor the backplane engine) is someone
    // else's (the machine is shared).
    row.machine_busy_ms = machine_after.0.saturating_sub(machine_before.0) * 10;
    row.machine_total_ms = machine_after.1.saturating_sub(machine_before.1) * 10;
    row.emit_span_ms = emit.last_emit_ns.saturating_sub(emit.first_emit_ns) as f64 / 1e6;
    Ok(row)
}

/// `s` percent-encoded for a query string: every byte but the unreserved
/// ones (`A-Za-z0-9-._~`) as `%XX`.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn percent_encodes_a_filter() {
        assert_eq!(
            super::percent_encode(r#"{"posts":{"room":7}}"#),
            "%7B%22posts%22%3A%7B%22room%22%3A7%7D%7D"
        );
    }
}
