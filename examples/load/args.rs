//! The command line (clap): the `server`, `run` and `writes` subcommands,
//! their flags and defaults, and the checks between flags that clap cannot
//! state on its own.

use std::convert::Infallible;
use std::fmt::Display;
use std::str::FromStr;

use clap::error::ErrorKind;
use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

use crate::machine::unix_nanos;

/// End-to-end load tool: real WebSocket clients against a real server,
/// tidings versus a careful hand-written broadcast handler.
#[derive(Parser, Debug)]
#[command(
    name = "load",
    after_help = "Flags of each command: `load <COMMAND> --help`. Method: docs/benchmarks.md, \
                  \"End-to-end load tool\". Many clients need many open files: `ulimit -n 65536` first."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// One server (tidings or the baseline) with its control API; `run` starts these itself
    Server(ServerArgs),
    /// The driver: starts the servers, connects the clients, emits, prints a row per implementation
    Run(RunArgs),
    /// Writes per second and write latency of a running forums example
    Writes(WritesArgs),
}

/// `load server`.
#[derive(Args, Debug, Clone)]
pub struct ServerArgs {
    /// Address to listen on; the bound one is printed as `listening on http://ADDR`
    #[arg(long, default_value = "127.0.0.1:0")]
    pub addr: String,
    /// Which server to run
    #[arg(long = "impl", value_name = "IMPL", value_enum)]
    pub imp: Impl,
    #[command(flatten)]
    pub hub: HubArgs,
}

/// The server flags `run` passes on to every server it starts.
#[derive(Args, Debug, Clone)]
pub struct HubArgs {
    /// tidings replay capacity: notifications kept, and each session's queue bound
    #[arg(long, default_value_t = 1024)]
    pub replay: usize,
    /// TCP_NODELAY on the server's accepted sockets (axum leaves Nagle on otherwise)
    #[arg(long, value_enum, default_value_t = Switch::On)]
    pub nodelay: Switch,
    /// Backplane URL (redis://…, postgres://…) tidings servers share notifications through; or
    /// `outbox[:postgres://…]` / `memory-txn[:postgres://…]`: every emit a sea-orm transaction
    /// (on a temporary SQLite file without a URL), through the outbox or published in memory [default: none]
    #[arg(long, value_name = "URL")]
    pub backplane: Option<String>,
    /// Redis stream key / PostgreSQL channel, the same for every instance [default: a new one per run]
    #[arg(long, value_name = "NAME")]
    pub backplane_name: Option<String>,
}

impl HubArgs {
    /// The stream key / channel of a run: the one given, or a new one.
    pub fn backplane_name_or_new(&self) -> String {
        self.backplane_name.clone().unwrap_or_else(unique_name)
    }
}

/// A stream key / channel name for one run (a valid PostgreSQL identifier).
fn unique_name() -> String {
    format!("tidings_load_{}_{}", std::process::id(), unix_nanos())
}

/// `load run`.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Implementations to measure, one after the other
    #[arg(long = "impl", value_name = "IMPL", value_enum, default_value_t = Impls::Both)]
    pub imp: Impls,
    /// WebSocket clients, opened in the driver process (clamped to 1..=100000)
    #[arg(long, default_value_t = 1000, value_parser = clamped::<usize>(1, 100_000))]
    pub clients: usize,
    /// Notifications emitted (clamped to 1..=1000000)
    #[arg(long, default_value_t = 1000, value_parser = clamped::<usize>(1, 1_000_000))]
    pub messages: usize,
    /// Padding bytes in each notification's payload
    #[arg(long, value_name = "BYTES", default_value_t = 100)]
    pub size: usize,
    /// burst: emit back to back; paced: --pace-us apart
    #[arg(long, value_enum, default_value_t = Mode::Burst)]
    pub mode: Mode,
    /// Microseconds between emits with --mode paced (below 1000: a spin wait)
    #[arg(long, default_value_t = 10_000)]
    pub pace_us: u64,
    /// Clients that subscribe to the emitted collection: all, or every tenth
    #[arg(long, value_enum, default_value_t = Subscribed::All)]
    pub subscribed: Subscribed,
    /// Rooms: client n joins room n % R and notification i goes to room i % R only
    /// (clamped to 1..=100000) [default: no rooms, every client gets every notification]
    #[arg(long, value_name = "R", value_parser = clamped::<usize>(1, 100_000))]
    pub rooms: Option<usize>,
    /// With --rooms, how tidings clients join a room: a collection per room (`room-K`),
    /// or one collection `posts` with the filter `where={"posts":{"room":K}}`
    #[arg(long, value_enum, default_value_t = Shape::Collections)]
    pub shape: Shape,
    /// Driver runtime threads; 1 = a current-thread runtime, cheapest per frame
    #[arg(long, default_value_t = 1)]
    pub driver_threads: usize,
    /// Each client's read buffer in bytes (tungstenite zero-fills it before every read)
    #[arg(long, value_name = "BYTES", default_value_t = 8 * 1024)]
    pub client_read_buffer: usize,
    /// Server processes; 2 or more need --backplane; /emit goes to the first (clamped to 1..=8)
    #[arg(long, default_value_t = 1, value_parser = clamped::<usize>(1, 8))]
    pub instances: usize,
    #[command(flatten)]
    pub hub: HubArgs,
}

impl RunArgs {
    pub fn paced(&self) -> bool {
        self.mode == Mode::Paced
    }

    pub fn ten_pct(&self) -> bool {
        self.subscribed == Subscribed::TenPct
    }

    /// The number of rooms, 0 without `--rooms`.
    pub fn room_count(&self) -> usize {
        self.rooms.unwrap_or(0)
    }
}

/// `load writes`.
#[derive(Args, Debug, Clone)]
pub struct WritesArgs {
    /// Base URL of the forums example
    #[arg(long, default_value = "http://127.0.0.1:3000", value_parser = without_trailing_slash)]
    pub url: String,
    /// Writers posting at once, each waiting for its answer (clamped to 1..=256)
    #[arg(long, default_value_t = 8, value_parser = clamped::<usize>(1, 256))]
    pub concurrency: usize,
    /// How long to write (clamped to 1..=600)
    #[arg(long, default_value_t = 10, value_parser = clamped::<u64>(1, 600))]
    pub seconds: u64,
}

/// One server implementation.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Impl {
    Tidings,
    Baseline,
}

impl Impl {
    pub fn name(self) -> &'static str {
        match self {
            Impl::Tidings => "tidings",
            Impl::Baseline => "baseline",
        }
    }
}

/// The implementations a run measures.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Impls {
    Tidings,
    Baseline,
    Both,
}

impl Impls {
    pub fn each(self) -> &'static [Impl] {
        match self {
            Impls::Tidings => &[Impl::Tidings],
            Impls::Baseline => &[Impl::Baseline],
            Impls::Both => &[Impl::Tidings, Impl::Baseline],
        }
    }
}

/// How the server emits (`--mode`).
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Burst,
    Paced,
}

/// Which clients subscribe to the emitted collection (`--subscribed`).
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subscribed {
    All,
    #[value(name = "10pct")]
    TenPct,
}

/// How tidings clients join a room (`--shape`).
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// A collection per room: `?collections=room-K`, notified as `room-K`.
    Collections,
    /// One collection, filtered: `?collections=posts&where={"posts":{"room":K}}`.
    Filter,
}

impl Shape {
    pub fn name(self) -> &'static str {
        match self {
            Shape::Collections => "collections",
            Shape::Filter => "filter",
        }
    }

    /// The collection notification `i`'s frame carries in room `room`
    /// (both implementations write the same frames).
    pub fn collection(self, room: usize) -> String {
        match self {
            Shape::Collections => format!("room-{room}"),
            Shape::Filter => "posts".to_owned(),
        }
    }
}

/// The room of notification `i` with `rooms` rooms (round robin, so each
/// room gets every R-th notification and the driver knows which).
pub fn room_of(i: usize, rooms: usize) -> usize {
    i % rooms.max(1)
}

/// `on` / `off` (also `true` / `false`, as the tool always accepted).
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Switch {
    #[value(alias = "true")]
    On,
    #[value(alias = "false")]
    Off,
}

impl Switch {
    pub fn name(self) -> &'static str {
        match self {
            Switch::On => "on",
            Switch::Off => "off",
        }
    }
}

impl Cli {
    /// Parses the command line; on a bad one prints why and exits with 2.
    pub fn parse_checked() -> Cli {
        let cli = Cli::parse();
        if let Err(why) = cli.command.check() {
            // The subcommand's own usage line under the error, as clap's
            // own errors have.
            let mut cli_command = Cli::command();
            cli_command.build();
            let name = cli.command.name();
            let mut command = cli_command.find_subcommand(name).cloned().unwrap_or(cli_command);
            command.error(ErrorKind::ArgumentConflict, why).exit();
        }
        cli
    }
}

impl Command {
    fn name(&self) -> &'static str {
        match self {
            Command::Server(_) => "server",
            Command::Run(_) => "run",
            Command::Writes(_) => "writes",
        }
    }

    /// What clap cannot say: a flag that needs another flag to have a value.
    fn check(&self) -> Result<(), &'static str> {
        let (tidings_only, hub) = match self {
            Command::Server(a) => (a.imp == Impl::Tidings, &a.hub),
            Command::Run(a) => {
                if a.rooms.is_some() && a.ten_pct() {
                    return Err("--rooms and --subscribed 10pct do not combine (rooms choose who gets what)");
                }
                if a.instances > 1 && a.hub.backplane.is_none() {
                    return Err(
                        "--instances 2 or more needs --backplane URL (instances share nothing otherwise)",
                    );
                }
                (a.imp == Impls::Tidings, &a.hub)
            }
            Command::Writes(_) => return Ok(()),
        };
        if hub.backplane.is_some() && !tidings_only {
            return Err("--backplane needs --impl tidings (the baseline has no backplane)");
        }
        Ok(())
    }
}

/// A number parser that brings the value into `lo..=hi` instead of refusing it.
fn clamped<T>(lo: T, hi: T) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static
where
    T: FromStr + Ord + Copy + Send + Sync + 'static,
    T::Err: Display,
{
    move |s| s.parse::<T>().map(|v| v.clamp(lo, hi)).map_err(|e| e.to_string())
}

/// `--url http://host:3000/` and `--url http://host:3000` are the same.
fn without_trailing_slash(s: &str) -> Result<String, Infallible> {
    Ok(s.trim_end_matches('/').to_owned())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::{Cli, Command, Impl, Impls, Mode, Shape, Subscribed, Switch, room_of};

    fn parse(line: &[&str]) -> Result<Command, String> {
        let cli = Cli::try_parse_from(std::iter::once("load").chain(line.iter().copied()))
            .map_err(|e| e.to_string())?;
        cli.command.check().map_err(str::to_owned)?;
        Ok(cli.command)
    }

    #[test]
    fn clap_accepts_the_definitions() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn run_defaults_and_clamps() {
        let Ok(Command::Run(a)) = parse(&["run"]) else { panic!("run") };
        assert_eq!((a.imp, a.clients, a.messages, a.size), (Impls::Both, 1000, 1000, 100));
        assert_eq!((a.mode, a.pace_us, a.subscribed), (Mode::Burst, 10_000, Subscribed::All));
        assert_eq!((a.driver_threads, a.client_read_buffer, a.instances), (1, 8192, 1));
        assert_eq!((a.rooms, a.room_count(), a.shape), (None, 0, Shape::Collections));
        assert_eq!((a.hub.replay, a.hub.nodelay, a.hub.backplane), (1024, Switch::On, None));
        let Ok(Command::Run(a)) = parse(&["run", "--rooms", "0", "--shape", "filter"]) else { panic!("run") };
        assert_eq!((a.rooms, a.shape), (Some(1), Shape::Filter));
        let Ok(Command::Run(a)) =
            parse(&["run", "--clients", "0", "--messages", "2000000", "--subscribed", "10pct"])
        else {
            panic!("run")
        };
        assert_eq!((a.clients, a.messages, a.ten_pct()), (1, 1_000_000, true));
        let Ok(Command::Run(a)) = parse(&[
            "run",
            "--impl",
            "tidings",
            "--instances",
            "20",
            "--backplane",
            "redis://x",
            "--nodelay",
            "false",
        ]) else {
            panic!("run")
        };
        assert_eq!((a.instances, a.hub.nodelay), (8, Switch::Off));
    }

    #[test]
    fn flags_that_need_other_flags() {
        assert!(parse(&["run", "--instances", "2"]).unwrap_err().contains("--backplane URL"));
        assert!(parse(&["run", "--backplane", "redis://x"]).unwrap_err().contains("--impl tidings"));
        let e = parse(&["server", "--impl", "baseline", "--backplane", "redis://x"]).unwrap_err();
        assert!(e.contains("--impl tidings"));
        assert!(parse(&["server"]).is_err(), "server needs --impl");
        assert!(parse(&["run", "--mode", "fast"]).is_err());
        assert!(parse(&["run", "--rooms", "4", "--subscribed", "10pct"]).unwrap_err().contains("--rooms"));
        let Ok(Command::Server(s)) = parse(&["server", "--impl", "tidings"]) else { panic!("server") };
        assert_eq!((s.addr.as_str(), s.imp), ("127.0.0.1:0", Impl::Tidings));
    }

    #[test]
    fn rooms_round_robin() {
        assert_eq!((0..5).map(|i| room_of(i, 2)).collect::<Vec<_>>(), [0, 1, 0, 1, 0]);
        assert_eq!(room_of(7, 0), 0);
        assert_eq!(
            (Shape::Collections.collection(3), Shape::Filter.collection(3)),
            ("room-3".into(), "posts".into())
        );
    }

    #[test]
    fn writes_defaults_and_clamps() {
        let Ok(Command::Writes(w)) = parse(&["writes", "--url", "http://h:1//", "--seconds", "0"]) else {
            panic!("writes")
        };
        assert_eq!((w.url.as_str(), w.concurrency, w.seconds), ("http://h:1", 8, 1));
    }
}
