//! The forums application: entities, repository, JSON API and the page.
//!
//! Shared by `main.rs` and by `tests/forums_api.rs`.

pub mod api;
pub mod entity;
pub mod page;
pub mod repository;

use std::time::Duration;

use axum::Router;
use axum::routing::get;
use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr, Schema, TransactionTrait,
};
use tidings::Notifier;

use entity::{forum, post};
use repository::Repository;

/// The database used when `DATABASE_URL` is not set: a SQLite file in the
/// current directory, created on first run.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://forums.db?mode=rwc";

/// What every handler can reach.
#[derive(Clone, Debug)]
pub struct AppState {
    pub repo: Repository,
    pub notifier: Notifier,
}

/// The whole application: the page at `/`, the JSON API under `/api` and the
/// WebSocket at `/ws`.
///
/// The request layer gives each request a `tidings::Batch`; the repository
/// queues its notifications there (after each commit), and the layer sends
/// them once the response is a 2xx, skipping the tab named in the
/// `tidings-session` header.
pub fn router(db: DatabaseConnection, notifier: Notifier) -> Router {
    let state = AppState { repo: Repository::new(db), notifier: notifier.clone() };
    // Who a connection is: the `user` cookie (see `api::authorize`).
    let live = tidings::axum::Settings::default().authorize(api::authorize(state.repo.clone()));
    Router::new()
        .route("/", get(page::index))
        .merge(api::routes())
        .fallback(api::not_found)
        .method_not_allowed_fallback(api::method_not_allowed)
        .with_state(state)
        .layer(tidings::axum::layer(&notifier))
        .merge(live.routes(&notifier))
}

/// How long a SQLite writer waits for another's lock before it fails.
pub const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// An arbitrary key for the PostgreSQL advisory lock that serializes schema
/// creation between instances starting at the same moment.
const SCHEMA_LOCK: i64 = 0x0074_6964_696e_6773; // "tidings" in ASCII

/// Connects to `database_url` (default [`DEFAULT_DATABASE_URL`]) and creates
/// the tables and indexes from the entities if they do not exist yet.
/// Works with `sqlite:` and `postgres:` URLs.
///
/// SQLite runs as SQLite applications do today: write-ahead log (readers
/// never block the writer), `synchronous=NORMAL` (an fsync per checkpoint
/// rather than per commit; a power cut can lose the last commits, never
/// corrupt the file) and a busy timeout, so concurrent writers wait for the
/// lock instead of failing with `database is locked`.
pub async fn connect(database_url: Option<&str>) -> Result<DatabaseConnection, DbErr> {
    let mut options = ConnectOptions::new(database_url.unwrap_or(DEFAULT_DATABASE_URL));
    options.map_sqlx_sqlite_opts(|sqlite| {
        sqlite
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(SQLITE_BUSY_TIMEOUT)
    });
    let db = Database::connect(options).await?;
    create_schema(&db).await?;
    Ok(db)
}

/// Creates the tables and indexes, once, however many instances start at
/// the same moment.
///
/// `CREATE TABLE IF NOT EXISTS` alone is not enough on PostgreSQL: two
/// sessions that both find the table missing both create it, and the second
/// fails on the catalog's unique index (`pg_type_typname_nsp_index`). So the
/// statements run in one transaction that first takes an advisory lock: the
/// second instance waits for the first to commit, then finds everything
/// there. (DDL is transactional in PostgreSQL; SQLite serializes writers by
/// itself.)
async fn create_schema(db: &DatabaseConnection) -> Result<(), DbErr> {
    let backend = db.get_database_backend();
    let schema = Schema::new(backend);
    let txn = db.begin().await?;
    if backend == DbBackend::Postgres {
        txn.execute_unprepared(&format!("SELECT pg_advisory_xact_lock({SCHEMA_LOCK})")).await?;
    }
    // Forums first: posts reference them.
    txn.execute(schema.create_table_from_entity(forum::Entity).if_not_exists()).await?;
    txn.execute(schema.create_table_from_entity(post::Entity).if_not_exists()).await?;
    for mut index in schema.create_index_from_entity(post::Entity) {
        txn.execute(index.if_not_exists()).await?;
    }
    txn.commit().await
}
