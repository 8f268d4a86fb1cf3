//! The outbox's two tables and every statement run against them, for
//! SQLite and PostgreSQL.
//!
//! `<table>` holds one row per notification:
//!
//! | column | meaning |
//! | --- | --- |
//! | `id` | assigned at insert: the order within a transaction, *not* commit order |
//! | `position` | assigned by the relay once the row is visible (committed): dense, in the order rows became visible; `NULL` until then |
//! | `payload` | the notification's envelope (JSON), or a gap marker |
//! | `created_ms` | when it was written (ms since the Unix epoch), for retention |
//!
//! `<table>_log` holds one row, the log's id: the time it was created, in
//! ms. It is the first half of every cursor (`<log id>-<position>`), so a
//! cursor from a log that was dropped and created again is never placed in
//! the new one.

use std::time::{SystemTime, UNIX_EPOCH};

use sea_orm::{
    ConnectionTrait, DatabaseConnection, DbBackend, DbErr, IsolationLevel, Statement, TransactionTrait, Value,
};

/// At most this many rows per `INSERT` (SQLite allows 32,766 parameters).
const INSERT_CHUNK: usize = 500;

/// The names of one outbox, checked once: they are spliced into SQL.
#[derive(Debug, Clone)]
pub(crate) struct Names {
    /// The notifications' table.
    pub(crate) table: String,
    /// The table holding the log's id.
    pub(crate) log: String,
    /// The key of the PostgreSQL advisory lock that lets one relay pass run
    /// at a time: derived from the table's name by a fixed hash, so every
    /// instance (every process, every build) agrees on it.
    pub(crate) lock_key: i64,
}

impl Names {
    /// The names for `table`: 1–48 ASCII lower-case letters, digits and
    /// underscores, not starting with a digit.
    pub(crate) fn new(table: &str) -> Result<Names, String> {
        let valid = !table.is_empty()
            && table.len() <= 48
            && table.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            && !table.as_bytes()[0].is_ascii_digit();
        if !valid {
            return Err(format!(
                "invalid outbox table name {table:?}: use 1-48 lower-case letters, digits and `_`, \
                 not starting with a digit"
            ));
        }
        let hash = fnv1a64(b"tidings:".iter().chain(table.as_bytes()));
        Ok(Names { table: table.to_owned(), log: format!("{table}_log"), lock_key: hash as i64 })
    }

    /// The NOTIFY channel that wakes instances after a relay pass.
    pub(crate) fn channel(&self) -> &str {
        &self.table
    }
}

/// A statement for `backend`, written with PostgreSQL's `$1` placeholders
/// (SQLite reads `?1`).
pub(crate) fn statement(backend: DbBackend, sql: &str, values: Vec<Value>) -> Statement {
    let sql = match backend {
        DbBackend::Sqlite => sql.replace('$', "?"),
        _ => sql.to_owned(),
    };
    Statement::from_sql_and_values(backend, sql, values)
}

/// Whether the outbox runs on `backend`.
pub(crate) fn supported(backend: DbBackend) -> bool {
    matches!(backend, DbBackend::Sqlite | DbBackend::Postgres)
}

/// Milliseconds since the Unix epoch, by this machine's clock.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// The statements that create the tables (if they do not exist) and the
/// log's id (if it has none), for `backend`.
pub(crate) fn create_statements(backend: DbBackend, names: &Names) -> Vec<String> {
    let Names { table, log, .. } = names;
    let id = match backend {
        DbBackend::Postgres => "id BIGSERIAL PRIMARY KEY",
        _ => "id INTEGER PRIMARY KEY AUTOINCREMENT",
    };
    vec![
        format!(
            "CREATE TABLE IF NOT EXISTS {table} ({id}, position BIGINT UNIQUE, \
             payload TEXT NOT NULL, created_ms BIGINT NOT NULL)"
        ),
        // What the relay looks for on every pass: the rows not yet relayed.
        format!("CREATE INDEX IF NOT EXISTS {table}_unrelayed ON {table} (id) WHERE position IS NULL"),
        // One row at most (its key is always 1), however many instances
        // create it at once.
        format!(
            "CREATE TABLE IF NOT EXISTS {log} (one INTEGER PRIMARY KEY CHECK (one = 1), log_id BIGINT NOT NULL)"
        ),
        format!("INSERT INTO {log} (one, log_id) VALUES (1, {}) ON CONFLICT DO NOTHING", now_ms()),
    ]
}

/// Creates the tables if they do not exist, in one transaction; on
/// PostgreSQL under an advisory lock, so instances starting together do not
/// race each other.
pub(crate) async fn migrate(db: &DatabaseConnection, names: &Names) -> Result<(), DbErr> {
    let backend = db.get_database_backend();
    if !supported(backend) {
        return Err(DbErr::Custom(format!(
            "the tidings outbox runs on SQLite or PostgreSQL, not {backend:?}"
        )));
    }
    let txn = db.begin().await?;
    if backend == DbBackend::Postgres {
        txn.execute_raw(statement(backend, "SELECT pg_advisory_xact_lock($1)", vec![names.lock_key.into()]))
            .await?;
    }
    for sql in create_statements(backend, names) {
        txn.execute_unprepared(&sql).await?;
    }
    txn.commit().await
}

/// Inserts `payloads`, in order, on the connection, all or none (in a
/// transaction when they take more than one statement).
pub(crate) async fn insert_all(
    db: &DatabaseConnection,
    names: &Names,
    payloads: &[&str],
) -> Result<(), DbErr> {
    if payloads.len() <= INSERT_CHUNK {
        return insert(db, names, payloads).await;
    }
    let txn = db.begin().await?;
    insert(&txn, names, payloads).await?;
    txn.commit().await
}

/// Inserts `payloads`, in order, on `db` (a transaction or a connection).
pub(crate) async fn insert<C: ConnectionTrait>(
    db: &C,
    names: &Names,
    payloads: &[&str],
) -> Result<(), DbErr> {
    let backend = db.get_database_backend();
    let now = now_ms();
    for chunk in payloads.chunks(INSERT_CHUNK) {
        let mut sql = format!("INSERT INTO {} (payload, created_ms) VALUES ", names.table);
        let mut values = Vec::with_capacity(chunk.len() + 1);
        values.push(now.into());
        for (i, payload) in chunk.iter().enumerate() {
            if i > 0 {
                sql.push_str(", ");
            }
            // Rows get their ids in the order of this list.
            sql.push_str(&format!("(${}, $1)", i + 2));
            values.push((*payload).into());
        }
        db.execute_raw(statement(backend, &sql, values)).await?;
    }
    Ok(())
}

/// The log's id (see the module's docs).
pub(crate) async fn log_id<C: ConnectionTrait>(db: &C, names: &Names) -> Result<u64, DbErr> {
    let backend = db.get_database_backend();
    let row = db
        .query_one_raw(statement(backend, &format!("SELECT log_id FROM {}", names.log), vec![]))
        .await?
        .ok_or_else(|| DbErr::Custom(format!("{} has no log id: run Outbox::migrate", names.log)))?;
    let id: i64 = row.try_get("", "log_id")?;
    Ok(id as u64)
}

/// One relayed row: its position, its payload, and its fingerprint.
pub(crate) struct Relayed {
    pub(crate) position: u64,
    pub(crate) payload: String,
    /// Drawn from the row's id and creation time: a database restored to an
    /// earlier state hands the same positions to other rows, which have
    /// other fingerprints (see [`Cursor::Stream`](crate::Cursor::Stream)).
    pub(crate) fingerprint: u32,
}

/// What a read found: the log's id, and the relayed rows from a position on.
pub(crate) struct Read {
    /// `None` when no row came back (the id is read with the rows).
    pub(crate) log: Option<u64>,
    pub(crate) rows: Vec<Relayed>,
}

/// The relayed rows from position `from` on (that row included, so the
/// reader can tell it is still the one it read), oldest first, at most
/// `limit`, with the log's id.
pub(crate) async fn read_from<C: ConnectionTrait>(
    db: &C,
    names: &Names,
    from: u64,
    limit: usize,
) -> Result<Read, DbErr> {
    let sql = format!(
        "SELECT position, payload, id, created_ms, (SELECT log_id FROM {}) AS log_id FROM {} \
         WHERE position >= $1 ORDER BY position LIMIT $2",
        names.log, names.table
    );
    let backend = db.get_database_backend();
    let found =
        db.query_all_raw(statement(backend, &sql, vec![(from as i64).into(), (limit as i64).into()])).await?;
    let log = match found.first() {
        Some(row) => Some(row.try_get::<i64>("", "log_id")? as u64),
        None => None,
    };
    Ok(Read { log, rows: found.iter().map(relayed).collect::<Result<_, _>>()? })
}

/// The newest `limit` relayed rows, oldest first.
pub(crate) async fn read_last<C: ConnectionTrait>(
    db: &C,
    names: &Names,
    limit: usize,
) -> Result<Vec<Relayed>, DbErr> {
    let sql = format!(
        "SELECT position, payload, id, created_ms FROM {} WHERE position IS NOT NULL \
         ORDER BY position DESC LIMIT $1",
        names.table
    );
    let backend = db.get_database_backend();
    let found = db.query_all_raw(statement(backend, &sql, vec![(limit as i64).into()])).await?;
    let mut newest_first: Vec<Relayed> = found.iter().map(relayed).collect::<Result<_, _>>()?;
    newest_first.reverse();
    Ok(newest_first)
}

fn relayed(row: &sea_orm::QueryResult) -> Result<Relayed, DbErr> {
    let position: i64 = row.try_get("", "position")?;
    let id: i64 = row.try_get("", "id")?;
    let created_ms: i64 = row.try_get("", "created_ms")?;
    Ok(Relayed {
        position: position as u64,
        payload: row.try_get("", "payload")?,
        fingerprint: fingerprint(id, created_ms),
    })
}

/// FNV-1a, 64 bits: stable across processes and builds, unlike std's
/// hashers (instances must agree on lock keys and fingerprints).
fn fnv1a64<'a>(bytes: impl IntoIterator<Item = &'a u8>) -> u64 {
    bytes
        .into_iter()
        .fold(0xcbf2_9ce4_8422_2325, |hash, b| (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

/// A row's fingerprint: FNV-1a over its id and creation time, folded to 32
/// bits, never 0 (which means "none" in a cursor).
fn fingerprint(id: i64, created_ms: i64) -> u32 {
    let hash = fnv1a64(id.to_le_bytes().iter().chain(&created_ms.to_le_bytes()));
    let folded = (hash ^ (hash >> 32)) as u32;
    folded.max(1)
}

/// Gives the log a new id, later than `old`, unless it has one already
/// (another instance renewed it, or the table was created anew); returns
/// the log's id. For a log this instance no longer recognises: cursors of
/// the old id then never place in it, and the new id is always later than
/// `old` (a backup restored with an even older id gets a new one too), so
/// the history's cursors keep growing.
pub(crate) async fn renew_log_id(db: &DatabaseConnection, names: &Names, old: u64) -> Result<u64, DbErr> {
    let backend = db.get_database_backend();
    let new = (now_ms() as u64).max(old + 1);
    let sql = format!("UPDATE {} SET log_id = $1 WHERE log_id <= $2", names.log);
    db.execute_raw(statement(backend, &sql, vec![(new as i64).into(), (old as i64).into()])).await?;
    log_id(db, names).await
}

/// Gives the next positions to up to `limit` rows that are visible and not
/// yet relayed, in the order of their ids; returns how many it relayed.
///
/// This is where commit order comes from. A row's position is assigned only
/// once the row is visible, after the positions of every row relayed
/// before it: a transaction that commits late gets a later position however
/// early it inserted, so no reader tailing by position can have passed it.
/// (Ids come from a sequence at insert time: concurrent PostgreSQL
/// transactions commit in another order than their ids.)
///
/// One pass runs at a time: on PostgreSQL under a transaction-scoped
/// advisory lock (a relay on another instance waits, then sees this
/// pass's positions); on SQLite a single statement holds the write lock.
/// On PostgreSQL the pass ends with a `NOTIFY` on the table's channel,
/// sent on commit: the wake-up of every instance's reader.
pub(crate) async fn relay(db: &DatabaseConnection, names: &Names, limit: usize) -> Result<u64, DbErr> {
    let backend = db.get_database_backend();
    let table = &names.table;
    // The base (the last position given) is read in the same statement as
    // the rows, so two relays can never hand out the same position (and the
    // unique index on `position` would refuse it anyway).
    let update = format!(
        "UPDATE {table} SET position = r.base + r.rank \
         FROM (SELECT id, (SELECT coalesce(max(position), 0) FROM {table}) AS base, \
                      row_number() OVER (ORDER BY id) AS rank \
               FROM {table} WHERE position IS NULL ORDER BY id LIMIT $1) AS r \
         WHERE {table}.id = r.id"
    );
    let update = statement(backend, &update, vec![(limit as i64).into()]);
    if backend == DbBackend::Sqlite {
        return Ok(db.execute_raw(update).await?.rows_affected());
    }
    // Read committed, whatever the server's default: the statements after
    // the lock must see the positions the pass before this one committed.
    let txn = db.begin_with_config(Some(IsolationLevel::ReadCommitted), None).await?;
    txn.execute_raw(statement(backend, "SELECT pg_advisory_xact_lock($1)", vec![names.lock_key.into()]))
        .await?;
    let relayed = txn.execute_raw(update).await?.rows_affected();
    if relayed > 0 {
        txn.execute_raw(statement(backend, "SELECT pg_notify($1, '')", vec![names.channel().into()])).await?;
    }
    txn.commit().await?;
    Ok(relayed)
}

/// Whether any row waits to be relayed (visible to this connection).
pub(crate) async fn any_unrelayed<C: ConnectionTrait>(db: &C, names: &Names) -> Result<bool, DbErr> {
    let backend = db.get_database_backend();
    let sql = format!("SELECT id FROM {} WHERE position IS NULL LIMIT 1", names.table);
    Ok(db.query_one_raw(statement(backend, &sql, vec![])).await?.is_some())
}

/// Deletes relayed rows beyond the newest `keep`, and those up to the
/// newest written before `before_ms`; never the newest relayed row (the
/// log's current position) nor a row not yet relayed, and always a prefix
/// of the log. Returns how many it deleted.
///
/// Two statements: the count bound is a range of the `position` index;
/// the age bound reads the rows the first one kept (at most `keep`).
pub(crate) async fn prune<C: ConnectionTrait>(
    db: &C,
    names: &Names,
    keep: usize,
    before_ms: Option<i64>,
) -> Result<u64, DbErr> {
    let backend = db.get_database_backend();
    let table = &names.table;
    let by_count = format!("DELETE FROM {table} WHERE position <= (SELECT max(position) FROM {table}) - $1");
    let mut deleted = db
        .execute_raw(statement(backend, &by_count, vec![(keep.max(1) as i64).into()]))
        .await?
        .rows_affected();
    if let Some(before) = before_ms {
        // A prefix of the log, never a row in its middle: up to the newest
        // old row (rows are not written in position order: a long
        // transaction, another writer's clock).
        let by_age = format!(
            "DELETE FROM {table} WHERE position <= (SELECT max(position) FROM {table} WHERE created_ms < $1) \
             AND position < (SELECT max(position) FROM {table})"
        );
        deleted += db.execute_raw(statement(backend, &by_age, vec![before.into()])).await?.rows_affected();
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_are_checked_and_lock_keys_are_stable() {
        for bad in ["", "Outbox", "1box", "out-box", "out box", "x;drop", &"a".repeat(49)] {
            assert!(Names::new(bad).is_err(), "{bad}");
        }
        let names = Names::new("tidings_outbox").unwrap();
        assert_eq!(names.log, "tidings_outbox_log");
        // A fixed hash: the same key in every process and every build.
        assert_eq!(names.lock_key, Names::new("tidings_outbox").unwrap().lock_key);
        assert_ne!(names.lock_key, Names::new("other_outbox").unwrap().lock_key);
    }
}
