//! The transactional setups, where every emit is a write: a
//! `tidings::sea_orm::Transaction` that inserts one application row, queues
//! the notification and commits.
//!
//! - `--backplane outbox` / `outbox:postgres://…`: the notification goes
//!   through the outbox ([`tidings::backplane::Outbox`], migrated first),
//!   so the measured latency is commit → relay → reader → client;
//! - `--backplane memory-txn` / `memory-txn:postgres://…`: the same
//!   transaction on the same database, the notification published in
//!   memory after the commit: the baseline the outbox is compared with.
//!
//! Without a URL, the database is a SQLite file in the temporary directory
//! (WAL, `synchronous=NORMAL`, as the forums example runs it). Every
//! instance of a run uses the tables named after the run's backplane name
//! (`<name>` and `<name>_log` for the outbox, `<name>_app` for the rows);
//! the driver creates the application table before the servers start and
//! drops everything (or removes the SQLite file) after them, unless the run
//! was given its name (`--backplane-name`).

use std::path::PathBuf;
use std::time::Duration;

use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement};
use serde::Serialize;
use tidings::backplane::Outbox;
use tidings::sea_orm::Transaction;
use tidings::{Notifier, Notify, Op};

use crate::Error;

/// Where the notifications of a transactional setup go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// Into the outbox table, in the transaction.
    Outbox,
    /// Into the in-memory hub, after the commit.
    Memory,
}

/// A transactional setup, parsed from `--backplane`.
#[derive(Clone, Debug)]
pub struct Setup {
    pub route: Route,
    /// The database URL.
    pub url: String,
    /// The SQLite file, when the database is one in the temporary directory.
    file: Option<PathBuf>,
    /// The outbox table (the run's backplane name).
    table: String,
}

impl Setup {
    /// `outbox[:URL]` or `memory-txn[:URL]`, with the run's backplane
    /// `name`; `None` for any other backplane.
    pub fn parse(backplane: &str, name: &str) -> Option<Setup> {
        let (route, rest) = if let Some(rest) = backplane.strip_prefix("outbox") {
            (Route::Outbox, rest)
        } else if let Some(rest) = backplane.strip_prefix("memory-txn") {
            (Route::Memory, rest)
        } else {
            return None;
        };
        let (url, file) = match rest.strip_prefix(':') {
            Some(url) if !url.is_empty() => (url.to_owned(), None),
            _ if rest.is_empty() => {
                let file = std::env::temp_dir().join(format!("{name}.db"));
                (format!("sqlite://{}?mode=rwc", file.display()), Some(file))
            }
            _ => return None,
        };
        Some(Setup { route, url, file, table: name.to_owned() })
    }

    /// The application's table.
    pub fn app_table(&self) -> String {
        format!("{}_app", self.table)
    }

    /// Connects; SQLite with the settings SQLite applications use.
    pub async fn connect(&self) -> Result<DatabaseConnection, Error> {
        let mut options = ConnectOptions::new(&self.url);
        options.sqlx_logging(false).map_sqlx_sqlite_opts(|sqlite| {
            sqlite
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(5))
        });
        Ok(Database::connect(options).await?)
    }

    /// The outbox every instance of the run shares, migrated; `None` for
    /// the in-memory route.
    pub async fn outbox(&self, db: &DatabaseConnection) -> Result<Option<Outbox>, Error> {
        if self.route == Route::Memory {
            return Ok(None);
        }
        let outbox = Outbox::new(db.clone()).table(&self.table);
        outbox.migrate().await?;
        Ok(Some(outbox))
    }

    /// Creates the application's table (the driver, before the servers).
    pub async fn create(&self) -> Result<(), Error> {
        let db = self.connect().await?;
        let id = match db.get_database_backend() {
            DbBackend::Postgres => "id BIGSERIAL PRIMARY KEY",
            _ => "id INTEGER PRIMARY KEY AUTOINCREMENT",
        };
        db.execute_unprepared(&format!(
            "CREATE TABLE IF NOT EXISTS {} ({id}, title TEXT NOT NULL)",
            self.app_table()
        ))
        .await?;
        Ok(())
    }

    /// Drops the run's tables, or removes its SQLite file (the driver,
    /// after the servers).
    pub async fn drop_all(&self) {
        if let Some(file) = &self.file {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
            }
            return;
        }
        let drop = async {
            let db = self.connect().await?;
            for table in [self.app_table(), format!("{}_log", self.table), self.table.clone()] {
                db.execute_unprepared(&format!("DROP TABLE IF EXISTS {table}")).await?;
            }
            Ok::<_, Error>(())
        };
        match tokio::time::timeout(Duration::from_secs(10), drop).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("could not drop the tables of {}: {e}", self.table),
            Err(_) => eprintln!("could not drop the tables of {}: timed out", self.table),
        }
    }
}

/// One write: a transaction that inserts a row into `app`, queues the
/// notification `data(t)` (with `t` the time just before the commit, in ns
/// since the epoch, from `now`) and commits. Returns `t`.
pub async fn write<D: Serialize>(
    db: &DatabaseConnection,
    notifier: &Notifier,
    app: &str,
    collection: String,
    now: impl Fn() -> u64,
    data: impl FnOnce(u64) -> D,
) -> Result<u64, Error> {
    let txn = Transaction::begin(db, notifier.batch()).await?;
    let backend = db.get_database_backend();
    let sql = match backend {
        DbBackend::Sqlite => format!("INSERT INTO {app} (title) VALUES (?)"),
        _ => format!("INSERT INTO {app} (title) VALUES ($1)"),
    };
    txn.execute_raw(Statement::from_sql_and_values(backend, sql, ["a title".into()])).await?;
    let t = now();
    txn.notify_with(collection, Op::Insert, &data(t))?;
    txn.commit().await?;
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::{Route, Setup};

    #[test]
    fn parses_the_transactional_backplanes() {
        let s = Setup::parse("outbox", "run_1").unwrap();
        assert_eq!(s.route, Route::Outbox);
        assert!(s.url.starts_with("sqlite://") && s.url.ends_with("run_1.db?mode=rwc"), "{}", s.url);
        assert_eq!(s.app_table(), "run_1_app");
        let s = Setup::parse("memory-txn:postgres://u@h/db", "run_2").unwrap();
        assert_eq!((s.route, s.url.as_str(), s.file.is_none()), (Route::Memory, "postgres://u@h/db", true));
        for other in ["redis://x", "postgres://x", "outbox:", "outboxes", "memory"] {
            assert!(Setup::parse(other, "n").is_none(), "{other}");
        }
    }
}
