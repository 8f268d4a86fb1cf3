//! What the outbox costs: per write, and how fast its relay empties a backlog.
//!
//! ```text
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/test cargo bench --bench outbox -- --noplot
//! ```
//!
//! - `write/<backplane>/<database>`: one write request as an application
//!   makes it: a [`Transaction`] that inserts one application row, queues
//!   one notification and commits. `memory` publishes after the commit;
//!   `outbox` inserts the notification into the outbox table inside the
//!   transaction (its relay and reader run in the background, on the same
//!   runtime, as they would in the application). `outbox-unrelayed` is
//!   the outbox on an instance that does not relay: the insert alone.
//!   After the criterion benches, alternated rounds of single writes print
//!   each variant's p50 / p90 / p99 and this process's CPU per write.
//! - `relay_10000/<backplane>/<database>`: 10,000 notifications, committed
//!   in transactions of 100 by an instance that does not relay; then a
//!   relaying instance starts and the time runs until a real WebSocket
//!   client on 127.0.0.1, resuming from the cursor before the backlog, has
//!   received the last one. `memory` is the same client receiving 10,000
//!   notifications published in memory (the fan-out alone).
//! - Before the benches, the bench prints the outbox table's size per row
//!   (10,000 relayed rows) and what one prune of it costs.
//!
//! SQLite runs on a file in the temporary directory, as the forums example
//! runs it (WAL, `synchronous=NORMAL`, 5 s busy timeout). PostgreSQL runs
//! on `DATABASE_URL` (skipped when unset), in tables of the bench's own
//! (`outbox_bench_<pid>_<ns>_…`), dropped at the end. The outbox's relay
//! prunes every second (retention: the notifier's history, 1024 rows), and
//! the application table is emptied between benches, so nothing grows
//! without bound. Method and results: `docs/benchmarks.md`, "Outbox".

use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, SamplingMode, criterion_group, criterion_main};
use futures_util::StreamExt;
use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement};
use serde::Serialize;
use tidings::backplane::Outbox;
use tidings::sea_orm::Transaction;
use tidings::{Config, Notifier, Notify, Op};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;

/// Notifications in the relay benches' backlog.
const BACKLOG: usize = 10_000;
/// Notifications per transaction when the backlog is written.
const PER_TRANSACTION: usize = 100;
/// History of the relay benches' notifiers: the whole backlog, so that a
/// client resuming from before it is served from the history, not resynced.
const RELAY_HISTORY: usize = 16_384;
/// The longest any single wait of the bench may take.
const LIMIT: Duration = Duration::from_secs(60);

/// The notification's data, as a handler would send: the row's id.
#[derive(Serialize)]
struct Row {
    id: u64,
}

/// One database the benches run on.
struct Target {
    /// `sqlite` or `postgres`.
    name: &'static str,
    url: String,
    db: DatabaseConnection,
    /// The SQLite file, removed at the end.
    file: Option<PathBuf>,
}

/// A name no other run uses: `outbox_bench_<pid>_<ns>_<what>`.
fn unique(what: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_nanos();
    format!("outbox_bench_{}_{nanos}_{what}", std::process::id())
}

/// Connects to `url`; SQLite with the settings SQLite applications use.
async fn connect(url: &str) -> DatabaseConnection {
    let mut options = ConnectOptions::new(url);
    options.sqlx_logging(false).map_sqlx_sqlite_opts(|sqlite| {
        sqlite
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
    });
    Database::connect(options).await.unwrap_or_else(|e| panic!("connect to {url}: {e}"))
}

/// The databases to run on: a fresh SQLite file, and PostgreSQL if
/// `DATABASE_URL` is set.
async fn databases() -> Vec<Target> {
    let file = std::env::temp_dir().join(format!("{}.db", unique("sqlite")));
    let url = format!("sqlite://{}?mode=rwc", file.display());
    let mut all = vec![Target { name: "sqlite", db: connect(&url).await, url, file: Some(file) }];
    match std::env::var("DATABASE_URL").ok().filter(|u| u.starts_with("postgres")) {
        Some(url) => all.push(Target { name: "postgres", db: connect(&url).await, url, file: None }),
        None => eprintln!("DATABASE_URL is not a postgres:// URL: the PostgreSQL benches are skipped"),
    }
    all
}

/// A statement written with `$1` placeholders, for the database's backend.
fn statement(db: &DatabaseConnection, sql: &str, values: Vec<sea_orm::Value>) -> Statement {
    let backend = db.get_database_backend();
    let sql = if backend == DbBackend::Sqlite { sql.replace('$', "?") } else { sql.to_owned() };
    Statement::from_sql_and_values(backend, sql, values)
}

async fn execute(db: &DatabaseConnection, sql: &str) {
    db.execute_unprepared(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
}

async fn count(db: &DatabaseConnection, table: &str) -> i64 {
    let sql = format!("SELECT count(*) AS n FROM {table}");
    let row = db.query_one_raw(statement(db, &sql, vec![])).await.expect("count").expect("a row");
    row.try_get("", "n").expect("a count")
}

/// Drops an outbox's tables. (The notifiers that used it are gone, and
/// their LISTEN connections with them: see `tests/outbox.rs`,
/// `a_dropped_notifier_closes_its_listen_connection`.)
async fn drop_outbox(db: &DatabaseConnection, table: &str) {
    execute(db, &format!("DROP TABLE IF EXISTS {table}_log")).await;
    execute(db, &format!("DROP TABLE IF EXISTS {table}")).await;
}

/// The application's table.
async fn create_app_table(db: &DatabaseConnection, table: &str) {
    let id = match db.get_database_backend() {
        DbBackend::Postgres => "id BIGSERIAL PRIMARY KEY",
        _ => "id INTEGER PRIMARY KEY AUTOINCREMENT",
    };
    execute(db, &format!("CREATE TABLE {table} ({id}, title TEXT NOT NULL)")).await;
}

/// One write request: insert a row, queue its notification, commit.
async fn write(db: &DatabaseConnection, notifier: &Notifier, app: &str, id: u64) {
    let txn = Transaction::begin(db, notifier.batch()).await.expect("begin");
    let insert = statement(db, &format!("INSERT INTO {app} (title) VALUES ($1)"), vec!["a title".into()]);
    txn.execute_raw(insert).await.expect("insert the application row");
    txn.notify_with("rows", Op::Insert, &Row { id }).expect("a Row serializes");
    txn.commit().await.expect("commit");
}

/// Writes one at a time, timing each, alternating the variants in
/// rounds, and prints each one's distribution: criterion reports means of
/// samples, which hide whether a cost is spread over every write or
/// concentrated in a few slow ones, and the rounds put every variant
/// through the same moments of a shared machine.
async fn write_alternated(db: &DatabaseConnection, variants: &[(&str, Notifier)], app: &str, database: &str) {
    const ROUNDS: usize = 5;
    const PER_ROUND: usize = 400;
    let mut times: Vec<Vec<Duration>> = vec![Vec::with_capacity(ROUNDS * PER_ROUND); variants.len()];
    let mut cpu_ms = vec![0; variants.len()];
    for _ in 0..ROUNDS {
        for (((_, notifier), times), cpu_ms) in variants.iter().zip(&mut times).zip(&mut cpu_ms) {
            let cpu_before = process_cpu_ms();
            for id in 0..PER_ROUND {
                let start = Instant::now();
                write(db, notifier, app, id as u64).await;
                times.push(start.elapsed());
            }
            // Let what the last commit set off (a relay pass, a read) end
            // inside this variant's account.
            tokio::time::sleep(Duration::from_millis(20)).await;
            *cpu_ms += process_cpu_ms() - cpu_before;
        }
    }
    let mut baseline = None;
    for (((name, _), times), cpu_ms) in variants.iter().zip(&mut times).zip(cpu_ms) {
        times.sort_unstable();
        let at = |p: usize| times[(times.len() - 1) * p / 100].as_secs_f64() * 1e6;
        let slow = times.iter().filter(|t| **t >= Duration::from_millis(1)).count();
        let p50 = at(50);
        let added = baseline
            .map_or(String::new(), |b: f64| format!(" (p50 {:+.0} µs vs {})", p50 - b, variants[0].0));
        baseline.get_or_insert(p50);
        println!(
            "write/{name}/{database}, {} writes in {ROUNDS} alternated rounds: p50 {p50:.0} µs{added}, \
             p90 {:.0} µs, p99 {:.0} µs, max {:.0} µs; {slow} took 1 ms or more; \
             this process's CPU {:.0} µs per write",
            times.len(),
            at(90),
            at(99),
            times[times.len() - 1].as_secs_f64() * 1e6,
            cpu_ms as f64 * 1e3 / times.len() as f64,
        );
    }
}

/// User + system CPU time of this process (all its threads: the bench,
/// the runtime's workers, SQLite's connection threads), in ms, from
/// `/proc/self/stat` (fields 14 and 15, in ticks of 10 ms).
fn process_cpu_ms() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_command = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<u64> = after_command.split_whitespace().map(|f| f.parse().unwrap_or(0)).collect();
    (fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0)) * 10
}

/// An outbox in a fresh table on `db`, created.
async fn create_outbox(db: &DatabaseConnection, table: &str) -> Outbox {
    let outbox = Outbox::new(db.clone()).table(table);
    outbox.migrate().await.expect("create the outbox tables");
    outbox
}

async fn ready(notifier: &Notifier) {
    timeout(LIMIT, notifier.ready()).await.expect("the outbox loaded its log within the limit");
}

/// Serves the notifier's WebSocket route on a loopback port.
async fn serve(notifier: &Notifier) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
    let addr = listener.local_addr().expect("local address");
    let app = axum::Router::new().merge(tidings::axum::routes(notifier));
    let server = tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    (addr, server)
}

/// Connects to `/ws?<query>` and reads until `n` notifications have
/// arrived; a `resync` (something lost) fails the bench.
async fn receive(addr: std::net::SocketAddr, query: &str, n: usize) {
    let url = format!("ws://{addr}/ws?{query}");
    let (mut ws, _) = timeout(LIMIT, tokio_tungstenite::connect_async(url.as_str()))
        .await
        .expect("connect within the limit")
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
    let mut received = 0;
    while received < n {
        let message = timeout(LIMIT, ws.next())
            .await
            .unwrap_or_else(|_| panic!("only {received} of {n} notifications within the limit"))
            .expect("the stream ended")
            .expect("socket error");
        if let Message::Text(text) = message {
            if text.starts_with(r#"{"type":"resync""#) {
                panic!("resync after {received} of {n} notifications: {text}");
            }
            if text.starts_with(r#"{"collection""#) {
                received += 1;
            }
        }
    }
}

/// Commits `BACKLOG` notifications through an instance that does not relay
/// and returns the cursor just before them.
async fn write_backlog(db: &DatabaseConnection, outbox: &Outbox) -> String {
    let silent = Notifier::with_config(
        Config::default().replay_capacity(RELAY_HISTORY).backplane(outbox.clone().relay(false)),
    );
    ready(&silent).await;
    let cursor = silent.cursor().to_string();
    for first in (0..BACKLOG).step_by(PER_TRANSACTION) {
        let txn = Transaction::begin(db, silent.batch()).await.expect("begin");
        for id in first..first + PER_TRANSACTION {
            txn.notify_with("rows", Op::Insert, &Row { id: id as u64 }).expect("a Row serializes");
        }
        txn.commit().await.expect("commit");
    }
    silent.shutdown().await;
    cursor
}

/// One relay bench iteration on `url`: a backlog in a fresh table, then the
/// time from starting a relaying instance to the client's last frame.
/// Each iteration has its own pool, so the connections an ended notifier
/// still holds (its LISTEN waits up to 30 s) never starve the next one.
async fn relay_once(url: &str) -> Duration {
    let db = connect(url).await;
    let table = unique("relay");
    let outbox = create_outbox(&db, &table).await;
    let cursor = write_backlog(&db, &outbox).await;
    let start = Instant::now();
    let relaying = Notifier::with_config(Config::default().replay_capacity(RELAY_HISTORY).backplane(outbox));
    let (addr, server) = serve(&relaying).await;
    receive(addr, &format!("cursor={cursor}"), BACKLOG).await;
    let elapsed = start.elapsed();
    relaying.shutdown().await;
    server.abort();
    drop(relaying);
    drop_outbox(&db, &table).await;
    elapsed
}

/// The same client receiving `BACKLOG` notifications published in memory.
async fn memory_once() -> Duration {
    let start = Instant::now();
    let notifier = Notifier::with_config(Config::default().replay_capacity(RELAY_HISTORY));
    let (addr, server) = serve(&notifier).await;
    let cursor = notifier.cursor().to_string();
    for id in 0..BACKLOG {
        notifier.notify_with("rows", Op::Insert, &Row { id: id as u64 }).expect("a Row serializes");
    }
    receive(addr, &format!("cursor={cursor}"), BACKLOG).await;
    let elapsed = start.elapsed();
    notifier.shutdown().await;
    server.abort();
    elapsed
}

/// Bytes per outbox row (10,000 relayed rows, indexes included) and the
/// time one prune takes, printed before the benches.
async fn table_growth(database: &Target) {
    let db = connect(&database.url).await;
    let table = unique("growth");
    let size = |db: DatabaseConnection, table: String| async move {
        match db.get_database_backend() {
            DbBackend::Postgres => {
                let sql = format!("SELECT pg_total_relation_size('{table}') AS n");
                let row = db.query_one_raw(statement(&db, &sql, vec![])).await.expect("size").expect("a row");
                row.try_get::<i64>("", "n").expect("a size") as u64
            }
            _ => {
                // Everything in the main file, then the file's length.
                execute(&db, "PRAGMA wal_checkpoint(TRUNCATE)").await;
                let file = database.file.as_ref().expect("the SQLite file");
                std::fs::metadata(file).expect("the SQLite file's size").len()
            }
        }
    };
    let outbox = create_outbox(&db, &table).await;
    let before = size(db.clone(), table.clone()).await;
    // Relayed (positions given, as the table holds them in steady state),
    // never pruned here.
    let cursor = write_backlog(&db, &outbox).await;
    let relaying = Notifier::with_config(
        Config::default().replay_capacity(RELAY_HISTORY).backplane(outbox.clone().retain(BACKLOG + 1)),
    );
    let (addr, server) = serve(&relaying).await;
    receive(addr, &format!("cursor={cursor}"), BACKLOG).await;
    relaying.shutdown().await;
    server.abort();
    drop(relaying);
    let after = size(db.clone(), table.clone()).await;
    // What one relay pass's prune runs (the statement of
    // `src/backplane/outbox/schema.rs`, `prune`), with the default
    // retention of 1024 rows.
    let prune = format!(
        "DELETE FROM {table} WHERE position < (SELECT max(position) FROM {table}) \
         AND (position <= (SELECT max(position) FROM {table}) - $1 OR created_ms < $2)"
    );
    let start = Instant::now();
    let deleted = db
        .execute_raw(statement(&db, &prune, vec![1024i64.into(), i64::MIN.into()]))
        .await
        .expect("prune")
        .rows_affected();
    let first_prune = start.elapsed();
    let start = Instant::now();
    db.execute_raw(statement(&db, &prune, vec![1024i64.into(), i64::MIN.into()])).await.expect("prune");
    let idle_prune = start.elapsed();
    let left = count(&db, &table).await;
    let sql = format!("SELECT CAST(avg(length(payload)) AS DOUBLE PRECISION) AS n FROM {table}");
    let row = db.query_one_raw(statement(&db, &sql, vec![])).await.expect("avg").expect("a row");
    let payload: f64 = row.try_get("", "n").expect("an average");
    let after_prune = size(db.clone(), table.clone()).await;
    println!(
        "outbox table on {}: {} bytes for {BACKLOG} rows ({:.0} bytes/row, indexes included, payload {:.0} bytes; empty: {before}); \
         prune to 1024 rows: deleted {deleted} in {:.2} ms, then a prune with nothing to delete: {:.3} ms; \
         {left} rows left, size after the prune {after_prune} bytes",
        database.name,
        after - before,
        (after - before) as f64 / BACKLOG as f64,
        payload,
        first_prune.as_secs_f64() * 1e3,
        idle_prune.as_secs_f64() * 1e3,
    );
    drop_outbox(&db, &table).await;
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    // The notifiers spawn their tasks on the current runtime.
    let guard = rt.enter();
    let databases = rt.block_on(databases());
    for database in &databases {
        rt.block_on(table_growth(database));
    }

    let mut group = c.benchmark_group("write");
    for database in &databases {
        let db = &database.db;
        let app = unique("app");
        rt.block_on(create_app_table(db, &app));
        // In memory; through the outbox; and through the outbox of an
        // instance that does not relay: the insert alone, without the
        // relay's and the reader's statements after each commit (its rows
        // stay until its table is dropped below).
        let relayed = unique("outbox");
        let unrelayed = unique("unrelayed");
        let variants = rt.block_on(async {
            let outbox = create_outbox(db, &relayed).await.prune_interval(Duration::from_secs(1));
            let silent = create_outbox(db, &unrelayed).await.relay(false);
            let variants = [
                ("memory", Notifier::new()),
                ("outbox", Notifier::with_config(Config::default().backplane(outbox))),
                ("outbox-unrelayed", Notifier::with_config(Config::default().backplane(silent))),
            ];
            for (_, notifier) in &variants {
                ready(notifier).await;
            }
            variants
        });
        for (name, notifier) in &variants {
            let mut id = 0;
            group.bench_function(BenchmarkId::new(*name, database.name), |b| {
                b.to_async(&rt).iter(|| {
                    id += 1;
                    write(db, notifier, &app, id)
                })
            });
            rt.block_on(execute(db, &format!("DELETE FROM {app}")));
        }
        rt.block_on(async {
            write_alternated(db, &variants, &app, database.name).await;
            for (_, notifier) in &variants {
                notifier.shutdown().await;
            }
            drop(variants);
            execute(db, &format!("DROP TABLE {app}")).await;
            drop_outbox(db, &relayed).await;
            drop_outbox(db, &unrelayed).await;
        });
    }
    group.finish();

    let mut group = c.benchmark_group(format!("relay_{BACKLOG}"));
    // Few, long iterations, each with its own backlog written outside the
    // measured time.
    group.sample_size(10).sampling_mode(SamplingMode::Flat).measurement_time(Duration::from_secs(2));
    group.bench_function(BenchmarkId::new("memory", "none"), |b| {
        b.to_async(&rt).iter_custom(|iters| async move {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                total += memory_once().await;
            }
            total
        })
    });
    for database in &databases {
        group.bench_function(BenchmarkId::new("outbox", database.name), |b| {
            b.to_async(&rt).iter_custom(|iters| async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += relay_once(&database.url).await;
                }
                total
            })
        });
    }
    group.finish();

    for database in &databases {
        if let Some(file) = &database.file {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
            }
        }
    }
    drop(guard);
    rt.shutdown_background();
}

fn config() -> Criterion {
    Criterion::default().measurement_time(Duration::from_secs(5)).warm_up_time(Duration::from_secs(1))
}

criterion_group! {
    name = outbox;
    config = config();
    targets = benches
}
criterion_main!(outbox);
