//! End-to-end load tool: real WebSocket clients against a real server, tidings
//! versus a careful hand-written broadcast handler (per room with `--rooms`).
//!
//! ```text
//! cargo run --release --example load -- run --clients 1000 --messages 1000 --impl both
//! cargo run --release --example load -- run --mode paced --messages 200
//! cargo run --release --example load -- run --subscribed 10pct
//! # rooms: client n joins room n % R, notification i goes to room i % R only
//! # (server CPU per notification, latency until the whole room has it):
//! cargo run --release --example load -- run --impl both --clients 200 --rooms 20 \
//!     --messages 200 --mode paced --pace-us 2000                  # a collection per room
//! cargo run --release --example load -- run --impl both --clients 200 --rooms 20 \
//!     --messages 200 --mode paced --pace-us 2000 --shape filter   # one collection, `where` filters
//! cargo run --release --example load -- server --addr 127.0.0.1:0 --impl tidings
//! # write throughput of a running forums example (`cargo run --release --example forums`):
//! cargo run --release --example load -- writes --url http://127.0.0.1:3000 --concurrency 8 --seconds 10
//! # two tidings instances sharing notifications (emit on A, clients on A and B):
//! cargo run --release --features redis,postgres --example load -- run --impl tidings \
//!     --instances 2 --backplane redis://127.0.0.1:6379   # or postgres://...
//! # every emit a sea-orm transaction, through the outbox (SQLite file in the
//! # temporary directory, or PostgreSQL), and the same writes published in memory:
//! cargo run --release --example load -- run --impl tidings --backplane outbox   # or outbox:postgres://...
//! cargo run --release --example load -- run --impl tidings --backplane memory-txn   # or memory-txn:postgres://...
//! ```
//!
//! `run` (the driver) spawns `server` as a child process per implementation,
//! opens the WebSocket clients in its own process, measures idle memory per
//! session, asks the server to emit over a small control API
//! (`POST /emit`, `GET /stats`) and prints one table row per implementation.
//! Everything listens on 127.0.0.1; every wait is bounded. See
//! `docs/benchmarks.md` ("End-to-end load tool") for the method.
//!
//! Many clients need many file descriptors in both processes: raise the limit
//! first (`ulimit -n 65536`), the child inherits it.
//!
//! Where things are:
//! - `args`: the command line (clap): subcommands, flags, defaults, checks;
//! - `server`: the tidings and baseline servers and their control API;
//! - `driver`: `run`, one implementation after the other;
//! - `instances`: starting, stopping and querying the server processes;
//! - `client`: one measuring WebSocket client (the driver's hot loop);
//! - `scan`: the byte-scan parser of received frames;
//! - `report`: percentiles, the rows and the printed table;
//! - `transactional`: the `outbox` and `memory-txn` setups, where each emit is a write;
//! - `writes`: the `writes` mode, against the forums example;
//! - `machine`: readings of the clock and `/proc` (CPU, RSS, open files).

mod args;
mod client;
mod driver;
mod instances;
mod machine;
mod report;
mod scan;
mod server;
mod transactional;
mod writes;

use args::{Cli, Command};

type Error = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), Error> {
    match Cli::parse_checked().command {
        Command::Server(args) => {
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            rt.block_on(server::serve(args))
        }
        Command::Run(args) => {
            // The driver is the measuring instrument: by default all its
            // clients run on one thread (a current-thread runtime), which is
            // cheaper per frame than work-stealing across threads and leaves
            // the other cores to the server.
            let rt = if args.driver_threads <= 1 {
                tokio::runtime::Builder::new_current_thread().enable_all().build()?
            } else {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(args.driver_threads)
                    .enable_all()
                    .build()?
            };
            rt.block_on(driver::run(args))
        }
        Command::Writes(args) => {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(writes::run(args))
        }
    }
}
