//! The forums example's database set-up: several instances may start at
//! once on a fresh PostgreSQL database, and SQLite runs with the settings
//! SQLite applications use (WAL, `synchronous=NORMAL`, a busy timeout).
//!
//! The PostgreSQL test needs `DATABASE_URL` (a server where it may create a
//! database); without it the test is skipped, except in CI (`CI` set), where
//! a missing database fails it.

#[path = "../examples/forums/app/mod.rs"]
#[allow(dead_code)]
mod app;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sea_orm::{ConnectionTrait, Database, DbBackend, Statement};
use tokio::time::timeout;

const SETUP_LIMIT: Duration = Duration::from_secs(30);

fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{prefix}_{}_{nanos}", std::process::id())
}

fn database_url() -> Option<String> {
    let url = std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty());
    if url.is_none() && std::env::var_os("CI").is_some() {
        panic!("DATABASE_URL must be set in CI");
    }
    url
}

/// The same server and credentials as `admin_url`, database `name`.
fn with_database(admin_url: &str, name: &str) -> String {
    let (base, query) = admin_url.split_once('?').unwrap_or((admin_url, ""));
    let server = base.rsplit_once('/').map_or(base, |(server, _)| server);
    if query.is_empty() { format!("{server}/{name}") } else { format!("{server}/{name}?{query}") }
}

#[tokio::test]
async fn instances_starting_together_on_a_fresh_postgres_database_all_start() {
    let Some(admin_url) = database_url() else { return };
    let name = unique("tidings_startup");
    let admin = timeout(SETUP_LIMIT, Database::connect(&admin_url)).await.unwrap().unwrap();
    admin.execute_unprepared(&format!("CREATE DATABASE {name}")).await.unwrap();
    let url = with_database(&admin_url, &name);

    // Several rounds, each on an empty schema: the race is between the
    // instances' catalog checks and their CREATEs, so one round may miss it.
    let mut failures = Vec::new();
    for round in 0..5 {
        let starts = (0..4).map(|_| {
            let url = url.clone();
            tokio::spawn(async move { timeout(SETUP_LIMIT, app::connect(Some(&url))).await })
        });
        for start in futures_util::future::join_all(starts).await {
            match start.unwrap() {
                Ok(Ok(db)) => db.close().await.unwrap(),
                Ok(Err(e)) => failures.push(format!("round {round}: {e}")),
                Err(_) => failures.push(format!("round {round}: timed out")),
            }
        }
        let db = Database::connect(&url).await.unwrap();
        db.execute_unprepared("DROP TABLE IF EXISTS posts; DROP TABLE IF EXISTS forums").await.unwrap();
        db.close().await.unwrap();
    }
    admin.execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await.ok();
    admin.close().await.ok();
    assert!(failures.is_empty(), "instances failed to start: {failures:#?}");
}

#[tokio::test]
async fn sqlite_uses_wal_normal_sync_and_a_busy_timeout() {
    let path = std::env::temp_dir().join(format!("{}.db", unique("tidings_sqlite_settings")));
    let db = app::connect(Some(&format!("sqlite://{}?mode=rwc", path.display()))).await.unwrap();
    let pragma = |name: &str| {
        let db = &db;
        let sql = format!("PRAGMA {name}");
        async move {
            let row =
                db.query_one_raw(Statement::from_string(DbBackend::Sqlite, sql)).await.unwrap().unwrap();
            row.try_get_by_index::<String>(0)
                .or_else(|_| row.try_get_by_index::<i64>(0).map(|v| v.to_string()))
                .unwrap()
        }
    };
    assert_eq!(pragma("journal_mode").await, "wal");
    assert_eq!(pragma("synchronous").await, "1", "1 is NORMAL");
    assert_eq!(pragma("busy_timeout").await, app::SQLITE_BUSY_TIMEOUT.as_millis().to_string());
    db.close().await.ok();
    for suffix in ["", "-wal", "-shm"] {
        std::fs::remove_file(format!("{}{suffix}", path.display())).ok();
    }
}
