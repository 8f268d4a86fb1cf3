//! A small forum application kept live with tidings: axum + sea-orm, a JSON
//! API, and a page that reloads what changed whenever anyone writes.
//!
//! ```text
//! cargo run --example forums                               # SQLite file ./forums.db
//! cargo run --example forums -- --addr 127.0.0.1:3111
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/forums cargo run --example forums
//! # several instances sharing notifications (see docs/scaling.md):
//! cargo run --example forums --features redis -- --addr 127.0.0.1:3001 --backplane redis://127.0.0.1:6379
//! cargo run --example forums --features postgres -- --backplane postgres://postgres@127.0.0.1:5432/forums
//! cargo run --example forums -- --backplane memory         # no outbox: notifications in memory only
//! ```
//!
//! Open the page in two windows: a write in one appears in the other at once.
//! `/metrics` shows tidings' metrics (and any other the application records)
//! in the Prometheus text format; the series are listed in `docs/metrics.md`.
//!
//! By default notifications go through the **outbox** in the application's
//! own database (`tidings::backplane::Outbox`): they are written in the same
//! transaction as the data and relayed in commit order, so a restart, a
//! deploy or a crash loses none, and pages resume where they were instead
//! of reloading everything. Any number of instances on the same database
//! share them. `--backplane memory` turns it off (notifications then live in
//! this process only: a restart makes every page reload); `--no-relay` makes
//! an instance that writes and serves but leaves relaying to the others.
//!
//! It is served with `tidings::axum::serve`: request headers must arrive
//! within 10 s, a client that stops reading is dropped after the write
//! timeout, and on Ctrl-C or SIGTERM every session is closed with 1001 and
//! the process exits within the shutdown timeout (5 s) plus at most a second.

mod app;

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;

use axum::Json;
use axum::routing::get;
use clap::Parser;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use sea_orm::{DatabaseConnection, DbErr};
use tidings::backplane::{self, Backplane, Memory, Outbox};
use tidings::{Config, Notifier};

/// A small forum application kept live with tidings.
#[derive(Debug, Parser)]
#[command(
    name = "forums",
    after_help = "DATABASE_URL selects the database (default: the SQLite file ./forums.db); \
                  the default backplane is the outbox in it."
)]
struct Args {
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:3000")]
    addr: SocketAddr,
    /// Where notifications go: `outbox` (in the application's database),
    /// `memory` (this process only), or a `redis://…` or `postgres://…` URL.
    #[arg(long, value_name = "outbox|memory|URL", default_value = "outbox")]
    backplane: String,
    /// With the outbox: write and serve, but leave relaying to other instances.
    #[arg(long)]
    no_relay: bool,
}

/// Where notifications go.
enum Choice {
    /// The outbox in the application's database (the default); `relay`:
    /// whether this instance relays.
    Outbox { relay: bool },
    /// In this process's memory only.
    Memory,
    /// A Redis or PostgreSQL NOTIFY backplane.
    Url(Box<dyn Backplane>),
}

impl Args {
    /// Where notifications go, or why the `--backplane` URL is refused.
    fn choice(&self) -> Result<Choice, String> {
        Ok(match self.backplane.as_str() {
            "outbox" => Choice::Outbox { relay: !self.no_relay },
            "memory" => Choice::Memory,
            url => Choice::Url(backplane::from_url(url).map_err(|e| format!("bad --backplane: {e}"))?),
        })
    }
}

/// The backplane for `choice`: the outbox's tables are created first.
async fn backplane(choice: Choice, db: &DatabaseConnection) -> Result<Box<dyn Backplane>, DbErr> {
    Ok(match choice {
        Choice::Outbox { relay } => {
            let outbox = Outbox::new(db.clone()).relay(relay);
            outbox.migrate().await?;
            Box::new(outbox)
        }
        Choice::Memory => Box::new(Memory),
        Choice::Url(backplane) => backplane,
    })
}

/// Installs the Prometheus recorder, process-wide. It must come before the
/// notifier, which registers its hot paths' metrics when it starts.
fn install_metrics() -> Result<PrometheusHandle, String> {
    // Buckets make the latency a histogram (a summary otherwise): from
    // 50 µs to 5 s.
    let buckets =
        [0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0];
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(tidings::metrics::DELIVERY_LATENCY.to_owned()), &buckets)
        .and_then(PrometheusBuilder::install_recorder)
        .map_err(|e| e.to_string())
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        tokio::signal::ctrl_c().await.ok();
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn,sea_orm=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();

    // Bad arguments: clap prints why and the usage, and exits with 2.
    let args = Args::parse();
    let (addr, choice) = match args.choice() {
        Ok(choice) => (args.addr, choice),
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let prometheus = match install_metrics() {
        Ok(handle) => handle,
        Err(e) => {
            eprintln!("cannot install the metrics recorder: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Folds the recorded latencies into the histogram now and then, so that
    // memory does not grow between scrapes.
    let upkeep = prometheus.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    let database_url = std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty());
    let db = match app::connect(database_url.as_deref()).await {
        Ok(db) => db,
        Err(e) => {
            eprintln!("cannot open the database: {e}");
            return ExitCode::FAILURE;
        }
    };

    let backplane = match backplane(choice, &db).await {
        Ok(backplane) => backplane,
        Err(e) => {
            eprintln!("cannot create the outbox: {e}");
            return ExitCode::FAILURE;
        }
    };
    let notifier = Notifier::with_config(Config::default().backplane(backplane));
    // Health for load balancers: the backplane's state and this instance's sessions.
    let health = notifier.clone();
    let router = app::router(db.clone(), notifier.clone())
        .route(
            "/health",
            get(move || async move { Json(health.health()) }).fallback(app::api::method_not_allowed),
        )
        // For Prometheus to scrape (in production, on an internal port).
        .route(
            "/metrics",
            get(move || std::future::ready(prometheus.render())).fallback(app::api::method_not_allowed),
        );
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("cannot listen on {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let local = listener.local_addr().unwrap_or(addr);
    println!("listening on http://{local}");
    std::io::stdout().flush().ok();

    tidings::axum::serve(listener, router, &notifier)
        .with_graceful_shutdown(async {
            shutdown_signal().await;
            tracing::info!("shutting down");
        })
        .await;
    // Close the pool before the runtime goes away (otherwise exiting waits
    // for SQLite's worker threads).
    db.close().await.ok();
    tracing::info!("stopped");
    ExitCode::SUCCESS
}
