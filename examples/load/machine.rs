//! Readings of the clock and of `/proc`: wall time in ns, CPU time of this
//! process (10 ms ticks, and ns from schedstat), of the backplane engines and of the whole machine, RSS, and the
//! open-file limit.

use std::time::{SystemTime, UNIX_EPOCH};

/// Wall-clock time: server and clients run on the same machine, so emit and
/// receipt times compare directly.
pub fn unix_nanos() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// User + system CPU time of this process, from `/proc/self/stat`.
pub fn cpu_ms() -> u64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0;
    };
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    cpu_ticks(rest) * 10
}

/// CPU time of all the live threads of this process, in ns: the first field
/// of each `/proc/self/task/<tid>/schedstat` (time on CPU, ns precision),
/// summed. Threads that exited are not counted (the servers and the driver
/// keep theirs for the whole run). 0 where the kernel has no schedstat.
pub fn cpu_ns() -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    dir.flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next().and_then(|ns| ns.parse::<u64>().ok()))
        .sum()
}

/// utime + stime, in clock ticks (100 per second), from the fields of a
/// `/proc/<pid>/stat` line after the parenthesized command name (it may
/// contain spaces); they are fields 14 and 15 of the whole line.
fn cpu_ticks(after_command: &str) -> u64 {
    let f: Vec<u64> = after_command.split_whitespace().map(|x| x.parse().unwrap_or(0)).collect();
    f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)
}

/// CPU time (ms) of the backplane engines on this machine (processes named
/// `redis-server` or `postgres`), from `/proc/<pid>/stat`: part of the
/// system under test, so the report separates it from other processes.
pub fn engine_cpu_ms() -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut ticks = 0;
    for entry in dir.flatten() {
        let name = entry.file_name();
        if !name.to_str().is_some_and(|n| n.bytes().all(|c| c.is_ascii_digit())) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let comm = head.split_once('(').map_or("", |(_, c)| c);
        if comm != "redis-server" && comm != "postgres" {
            continue;
        }
        ticks += cpu_ticks(rest);
    }
    ticks * 10
}

/// (busy, busy + idle) clock ticks of all CPUs, from the first line of
/// `/proc/stat`.
pub fn machine_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let total: u64 = f.iter().sum();
    let idle = f.get(3).copied().unwrap_or(0) + f.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// Resident memory of this process, from `/proc/self/status`.
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

pub fn nofile_soft_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}
