//! The forums application: entities, repository, JSON API and the page.
//!
//! Shared by `main.rs` and by `tests/forums_api.rs`.

pub mod api;
pub mod entity;
pub mod page;
pub mod repository;

use axum::Router;
use axum::routing::get;
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, DbErr, Schema};
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
    Router::new()
        .route("/", get(page::index))
        .merge(api::routes())
        .fallback(api::not_found)
        .method_not_allowed_fallback(api::method_not_allowed)
        .with_state(state)
        .layer(tidings::axum::layer(&notifier))
        .merge(tidings::axum::routes(&notifier))
}

/// Connects to `database_url` (default [`DEFAULT_DATABASE_URL`]) and creates
/// the tables and indexes from the entities if they do not exist yet.
/// Works with `sqlite:` and `postgres:` URLs.
pub async fn connect(database_url: Option<&str>) -> Result<DatabaseConnection, DbErr> {
    let db = Database::connect(database_url.unwrap_or(DEFAULT_DATABASE_URL)).await?;
    create_schema(&db).await?;
    Ok(db)
}

async fn create_schema(db: &DatabaseConnection) -> Result<(), DbErr> {
    let schema = Schema::new(db.get_database_backend());
    // Forums first: posts reference them.
    db.execute(schema.create_table_from_entity(forum::Entity).if_not_exists()).await?;
    db.execute(schema.create_table_from_entity(post::Entity).if_not_exists()).await?;
    for mut index in schema.create_index_from_entity(post::Entity) {
        db.execute(index.if_not_exists()).await?;
    }
    Ok(())
}
