//! From the clients' records to the printed report: percentiles, fan-out
//! latency, one `Row` per implementation (and a `Split` per instance), and
//! the table and notes `run` prints.

use std::collections::HashMap;

use crate::args::RunArgs;
use crate::client::ClientResult;
use crate::instances::instance_name;
use crate::server::{EmitReport, Stats};

/// The value at percentile `p` (0 to 100) of sorted values, by nearest rank;
/// 0 for none.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// One implementation's figures: a table row and the notes printed under it.
pub struct Row {
    pub imp: String,
    pub clients: usize,
    pub connected: usize,
    pub messages: usize,
    pub deliveries: u64,
    pub expected: u64,
    pub deliveries_per_s: f64,
    pub latency: Latency,
    pub caller_p50_ns: u64,
    pub caller_p99_ns: u64,
    pub rss_idle_kib: u64,
    pub rss_per_session_kib: f64,
    pub rss_after_kib: u64,
    /// Server CPU during emit + delivery, and the driver's (clients'), in
    /// 10 ms ticks (`/proc/self/stat`).
    pub server_cpu_ms: u64,
    pub driver_cpu_ms: u64,
    /// The same, in ns, from every thread's schedstat.
    pub server_cpu_ns: u64,
    pub driver_cpu_ns: u64,
    /// Busy and total (busy + idle) CPU time of the machine, all cores.
    pub machine_busy_ms: u64,
    pub machine_total_ms: u64,
    /// Time from the first to the last emit.
    pub emit_span_ms: f64,
    pub lost: u64,
    pub covered: u64,
    pub silent: u64,
    pub resyncs: u64,
    pub unwanted: u64,
    pub duplicates: u64,
    /// Rooms: notifications received by a client not in their room.
    pub misdelivered: u64,
    /// Rooms (0: none) and how tidings clients joined them.
    pub rooms: usize,
    pub shape: &'static str,
    /// CPU of the local `redis-server` / `postgres` processes over the span.
    pub engine_cpu_ms: u64,
    pub cursor_forms: u8,
    pub cursor_regressions: u64,
    /// Per instance, with two or more.
    pub splits: Vec<Split>,
}

/// Server `/stats` at the three points of a run, summed over the instances,
/// and per instance at the last two.
pub struct Snapshots {
    pub before: Stats,
    pub idle: Stats,
    pub after: Stats,
    pub idle_each: Vec<Stats>,
    pub after_each: Vec<Stats>,
}

/// Fan-out latencies (ns, sorted) of the notifications received by any of
/// `results`: latest receipt over those clients that expect it − emit time
/// (with rooms: until the whole room has it); and the latest receipt of all.
pub fn fan_out<'a>(results: impl Iterator<Item = &'a ClientResult>, m: usize) -> (Vec<u64>, u64) {
    let mut last_recv = vec![0u64; m];
    let mut sent = vec![0u64; m];
    let mut max_recv = 0u64;
    for r in results.filter(|r| r.wanted && r.connected) {
        for (j, (&recv, &t)) in r.recv.iter().zip(&r.sent).enumerate() {
            let i = r.expect.index(j);
            if recv != 0 && i < m {
                last_recv[i] = last_recv[i].max(recv);
                sent[i] = t;
                max_recv = max_recv.max(recv);
            }
        }
    }
    let mut lat: Vec<u64> =
        (0..m).filter(|&i| last_recv[i] != 0).map(|i| last_recv[i].saturating_sub(sent[i])).collect();
    lat.sort_unstable();
    (lat, max_recv)
}

/// The figures of the clients connected to one instance.
pub struct Split {
    pub instance: usize,
    pub clients: usize,
    pub deliveries: u64,
    pub expected: u64,
    pub latency: Latency,
    pub server_cpu_ms: u64,
}

/// Fan-out latency percentiles, in µs.
#[derive(Default)]
pub struct Latency {
    pub p50_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
}

impl Latency {
    /// From `fan_out`'s sorted latencies in ns.
    fn of(sorted_ns: &[u64]) -> Latency {
        Latency {
            p50_us: percentile(sorted_ns, 50.0) as f64 / 1e3,
            p99_us: percentile(sorted_ns, 99.0) as f64 / 1e3,
            max_us: sorted_ns.last().copied().unwrap_or(0) as f64 / 1e3,
        }
    }
}

/// One implementation's row from its clients' records, the emit report and
/// the servers' `/stats`.
pub fn summarize(
    label: &str,
    args: &RunArgs,
    results: &[ClientResult],
    emit: &EmitReport,
    snaps: &Snapshots,
) -> Row {
    let (before, idle, after) = (&snaps.before, &snaps.idle, &snaps.after);
    let m = args.messages;
    let mut row = Row {
        imp: label.to_owned(),
        clients: args.clients,
        connected: results.iter().filter(|r| r.connected).count(),
        messages: m,
        deliveries: 0,
        expected: 0,
        deliveries_per_s: 0.0,
        latency: Latency::default(),
        caller_p50_ns: emit.caller_p50_ns,
        caller_p99_ns: emit.caller_p99_ns,
        rss_idle_kib: before.rss_kib,
        rss_per_session_kib: 0.0,
        rss_after_kib: after.rss_kib,
        server_cpu_ms: after.cpu_ms.saturating_sub(idle.cpu_ms),
        driver_cpu_ms: 0,
        server_cpu_ns: after.cpu_ns.saturating_sub(idle.cpu_ns),
        driver_cpu_ns: 0,
        machine_busy_ms: 0,
        machine_total_ms: 0,
        emit_span_ms: 0.0,
        lost: 0,
        covered: 0,
        silent: 0,
        resyncs: 0,
        unwanted: 0,
        duplicates: 0,
        misdelivered: results.iter().map(|r| r.misdelivered).sum(),
        rooms: args.room_count(),
        shape: args.shape.name(),
        engine_cpu_ms: 0,
        cursor_forms: results.iter().fold(0, |f, r| f | r.cursor_forms),
        cursor_regressions: results.iter().map(|r| r.cursor_regressions).sum(),
        splits: Vec::new(),
    };
    // Every client that should have received the notifications counts,
    // including those that failed to connect (all lost).
    for r in results.iter().filter(|r| r.wanted) {
        let expected = r.expect.count as u64;
        row.expected += expected;
        row.deliveries += r.received;
        row.resyncs += r.resyncs;
        row.unwanted += r.unwanted;
        row.duplicates += r.duplicates;
        if !r.connected {
            row.silent += expected;
            continue;
        }
        row.covered += r.covered;
        row.silent += r.silent;
    }
    row.unwanted += results.iter().filter(|r| !r.wanted).map(|r| r.unwanted).sum::<u64>();
    row.lost = row.expected - row.deliveries;
    let (lat, max_recv) = fan_out(results.iter(), m);
    row.latency = Latency::of(&lat);
    if max_recv > emit.first_emit_ns && emit.first_emit_ns != 0 {
        row.deliveries_per_s = row.deliveries as f64 / ((max_recv - emit.first_emit_ns) as f64 / 1e9);
    }
    if idle.sessions > 0 {
        row.rss_per_session_kib = idle.rss_kib.saturating_sub(before.rss_kib) as f64 / idle.sessions as f64;
    }
    if snaps.idle_each.len() > 1 {
        for (k, (i, a)) in snaps.idle_each.iter().zip(&snaps.after_each).enumerate() {
            let mine = || results.iter().filter(move |r| r.instance == k);
            let (lat, _) = fan_out(mine(), m);
            row.splits.push(Split {
                instance: k,
                clients: mine().filter(|r| r.connected).count(),
                deliveries: mine().filter(|r| r.wanted).map(|r| r.received).sum(),
                expected: mine().filter(|r| r.wanted).map(|r| r.expect.count as u64).sum(),
                latency: Latency::of(&lat),
                server_cpu_ms: a.cpu_ms.saturating_sub(i.cpu_ms),
            });
        }
    }
    row
}

/// The table (one row per implementation), the notes under it and the
/// tidings/baseline ratios.
pub fn print_rows(args: &RunArgs, rows: &[Row]) {
    println!();
    if args.rooms.is_some() {
        print_room_rows(rows);
    } else {
        print_broadcast_rows(rows);
    }
    print_notes(args, rows);
}

/// The table without rooms: every (wanted) client gets every notification.
fn print_broadcast_rows(rows: &[Row]) {
    println!(
        "| impl | clients (connected) | deliveries / expected | deliveries/s | fan-out p50 | fan-out p99 | fan-out max | caller p50 | caller p99 | RSS base | RSS/idle session | lost (resync-covered / silent) | resyncs |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} ({}) | {} / {} | {:.0} | {:.1} ms | {:.1} ms | {:.1} ms | {} ns | {} ns | {:.1} MiB | {:.1} KiB | {} ({} / {}) | {} |",
            r.imp,
            r.clients,
            r.connected,
            r.deliveries,
            r.expected,
            r.deliveries_per_s,
            r.latency.p50_us / 1e3,
            r.latency.p99_us / 1e3,
            r.latency.max_us / 1e3,
            r.caller_p50_ns,
            r.caller_p99_ns,
            r.rss_idle_kib as f64 / 1024.0,
            r.rss_per_session_kib,
            r.lost,
            r.covered,
            r.silent,
            r.resyncs,
        );
    }
}

/// The table with rooms: what one notification costs the server when it
/// concerns only the clients of one room.
fn print_room_rows(rows: &[Row]) {
    println!(
        "| impl | clients (connected) | rooms (shape) | notifications | deliveries / expected | server CPU / notification | driver CPU / notification | room complete p50 | room complete p99 | room complete max | caller p50 | caller p99 | RSS/idle session | missing (resync-covered / silent) | misdelivered |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        let per = |ns: u64| ns as f64 / 1e3 / r.messages.max(1) as f64;
        println!(
            "| {} | {} ({}) | {} ({}) | {} | {} / {} | {:.1} µs | {:.1} µs | {:.2} ms | {:.2} ms | {:.2} ms | {} ns | {} ns | {:.1} KiB | {} ({} / {}) | {} |",
            r.imp,
            r.clients,
            r.connected,
            r.rooms,
            r.shape,
            r.messages,
            r.deliveries,
            r.expected,
            per(r.server_cpu_ns),
            per(r.driver_cpu_ns),
            r.latency.p50_us / 1e3,
            r.latency.p99_us / 1e3,
            r.latency.max_us / 1e3,
            r.caller_p50_ns,
            r.caller_p99_ns,
            r.rss_per_session_kib,
            r.lost,
            r.covered,
            r.silent,
            r.misdelivered,
        );
    }
    for r in rows {
        if r.lost > 0 || r.misdelivered > 0 {
            println!(
                "{}: NOT A VALID RUN: {} missing, {} misdelivered (both must be 0)",
                r.imp, r.lost, r.misdelivered
            );
        }
    }
}

/// The notes under either table, and the tidings/baseline ratios.
fn print_notes(args: &RunArgs, rows: &[Row]) {
    for r in rows {
        if r.unwanted > 0 || r.duplicates > 0 {
            println!(
                "{}: {} frames received and dropped by clients that did not want them{}; duplicates {}",
                r.imp,
                r.unwanted,
                if args.ten_pct() && r.imp == "baseline" {
                    " (the baseline has no server-side filtering: clients filter on receipt)"
                } else {
                    ""
                },
                r.duplicates
            );
        }
        println!(
            "{}: server RSS after the run {:.1} MiB; {} messages {}; CPU from emit to \
             the last delivery (schedstat, all threads): server {:.1} ms ({:.2} us/delivery, \
             {:.1} us/notification), driver {:.1} ms ({:.2} us/delivery), \
             backplane engine (redis-server/postgres processes) {} ms, \
             whole machine {} of {} ms busy, so {} ms by other processes (10 ms ticks: \
             server {} ms, driver {} ms); emits spanned {:.1} ms",
            r.imp,
            r.rss_after_kib as f64 / 1024.0,
            r.messages,
            if r.rooms > 0 { "(each to one room)" } else { "per client" },
            r.server_cpu_ns as f64 / 1e6,
            r.server_cpu_ns as f64 / 1e3 / r.deliveries.max(1) as f64,
            r.server_cpu_ns as f64 / 1e3 / r.messages.max(1) as f64,
            r.driver_cpu_ns as f64 / 1e6,
            r.driver_cpu_ns as f64 / 1e3 / r.deliveries.max(1) as f64,
            r.engine_cpu_ms,
            r.machine_busy_ms,
            r.machine_total_ms,
            r.machine_busy_ms.saturating_sub(r.server_cpu_ms + r.driver_cpu_ms + r.engine_cpu_ms),
            r.server_cpu_ms,
            r.driver_cpu_ms,
            r.emit_span_ms,
        );
        if r.cursor_forms != 0 {
            let forms = match r.cursor_forms {
                1 => "<8 hex>-<seq>",
                2 => "Redis stream ids <ms>-<seq>",
                _ => "both <8 hex>-<seq> and stream ids",
            };
            println!(
                "{}: cursors {forms}; frames whose cursor did not move forward: {} \
                 (losses are counted by payload index and resync frames, for either form)",
                r.imp, r.cursor_regressions
            );
        }
        for s in &r.splits {
            println!(
                "{}: instance {}{}: {} clients, deliveries {} / {}, fan-out p50 {:.1} ms, p99 {:.1} ms, \
                 max {:.1} ms, server CPU {} ms",
                r.imp,
                instance_name(s.instance),
                if s.instance == 0 { " (emits)" } else { "" },
                s.clients,
                s.deliveries,
                s.expected,
                s.latency.p50_us / 1e3,
                s.latency.p99_us / 1e3,
                s.latency.max_us / 1e3,
                s.server_cpu_ms,
            );
        }
    }
    let by: HashMap<&str, &Row> = rows.iter().map(|r| (r.imp.as_str(), r)).collect();
    if let (Some(t), Some(b)) = (by.get("tidings"), by.get("baseline")) {
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
        if args.rooms.is_some() {
            println!(
                "ratio tidings/baseline: server CPU per notification {:.2}x, room complete p50 {:.2}x, p99 {:.2}x, RSS/session {:.2}x",
                ratio(t.server_cpu_ns as f64, b.server_cpu_ns as f64),
                ratio(t.latency.p50_us, b.latency.p50_us),
                ratio(t.latency.p99_us, b.latency.p99_us),
                ratio(t.rss_per_session_kib, b.rss_per_session_kib),
            );
            return;
        }
        println!(
            "ratio tidings/baseline: deliveries/s {:.2}x, fan-out latency p50 {:.2}x, p99 {:.2}x, RSS/session {:.2}x",
            ratio(t.deliveries_per_s, b.deliveries_per_s),
            ratio(t.latency.p50_us, b.latency.p50_us),
            ratio(t.latency.p99_us, b.latency.p99_us),
            ratio(t.rss_per_session_kib, b.rss_per_session_kib),
        );
    }
}
