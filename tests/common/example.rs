//! The forums example as a real process: built with the test's features (a
//! no-op when `cargo test` has already built it), run from
//! `target/<profile>/examples/` (or `$CARGO_TARGET_DIR/<profile>/examples/`)
//! in a directory of its own (its SQLite file lives there) on a free port,
//! and stopped only by the PID it was started with.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::time::timeout;

use super::LIMIT;

/// Building the example when `cargo test` has not already.
const BUILD_LIMIT: Duration = Duration::from_secs(600);

/// Builds the example with this test's features and returns its path.
pub async fn binary() -> PathBuf {
    let features: Vec<&str> = [
        (cfg!(feature = "sea-orm"), "sea-orm"),
        (cfg!(feature = "outbox"), "outbox"),
        (cfg!(feature = "redis"), "redis"),
        (cfg!(feature = "postgres"), "postgres"),
    ]
    .into_iter()
    .filter_map(|(on, name)| on.then_some(name))
    .collect();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut build = tokio::process::Command::new(env!("CARGO"));
    build
        .current_dir(&root)
        .args(["build", "--quiet", "--example", "forums", "--no-default-features"])
        .args(["--features", &features.join(",")])
        .kill_on_drop(true);
    let profile = if cfg!(debug_assertions) { "debug" } else { "release" };
    if profile == "release" {
        build.arg("--release");
    }
    let status = timeout(BUILD_LIMIT, build.status())
        .await
        .expect("building the example timed out")
        .expect("cannot run cargo");
    assert!(status.success(), "cargo build --example forums failed: {status}");
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), |dir| root.join(dir));
    target.join(profile).join("examples").join(format!("forums{}", std::env::consts::EXE_SUFFIX))
}

/// A fresh directory for one test's example processes (removed by
/// [`Example`]'s owner when done, with [`remove_dir`]).
pub fn fresh_dir(name: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    let dir = std::env::temp_dir().join(format!("tidings_{name}_{}_{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn remove_dir(dir: &Path) {
    std::fs::remove_dir_all(dir).ok();
}

/// The example running; killed (SIGKILL) if dropped while it runs.
pub struct Example {
    pub child: tokio::process::Child,
    pub addr: SocketAddr,
}

impl Example {
    /// Starts the example in `dir` (its SQLite file `forums.db` is there)
    /// with `args`, on a free port, and waits until it listens.
    pub async fn start_in(dir: &Path, args: &[&str]) -> Example {
        let binary = binary().await;
        let mut child = tokio::process::Command::new(&binary)
            .args(["--addr", "127.0.0.1:0"])
            .args(args)
            .current_dir(dir)
            .env_remove("DATABASE_URL")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        // Its log goes to the test's output (shown when a test fails).
        let mut log = BufReader::new(child.stderr.take().unwrap()).lines();
        tokio::spawn(async move {
            while let Ok(Some(line)) = log.next_line().await {
                eprintln!("[forums] {line}");
            }
        });
        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let addr = timeout(LIMIT * 3, async {
            while let Some(line) = stdout.next_line().await.unwrap() {
                if let Some(addr) = line.strip_prefix("listening on http://") {
                    return addr.parse::<SocketAddr>().unwrap();
                }
            }
            panic!("the example exited before listening");
        })
        .await
        .expect("the example did not report \"listening on\" in time");
        Example { child, addr }
    }

    /// Sends SIGTERM to the process this test started, by its PID.
    pub fn terminate(&self) {
        self.signal("-TERM");
    }

    /// Sends SIGKILL to the process this test started, by its PID, and
    /// waits until it is gone.
    pub async fn kill(mut self) {
        self.signal("-KILL");
        timeout(LIMIT, self.child.wait()).await.expect("SIGKILL ends the example").unwrap();
    }

    /// SIGTERM, and waits until it has exited.
    pub async fn stop(self) {
        self.terminate();
        self.wait().await;
    }

    /// Waits until it has exited (after [`terminate`](Self::terminate)),
    /// successfully.
    pub async fn wait(mut self) {
        let status =
            timeout(LIMIT * 2, self.child.wait()).await.expect("the example exits after SIGTERM").unwrap();
        assert!(status.success(), "the example exited with {status}");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("the example is running");
        let status = std::process::Command::new("kill").args([signal, &pid.to_string()]).status().unwrap();
        assert!(status.success(), "kill {signal} {pid} failed");
    }
}
