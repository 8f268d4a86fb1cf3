//! The outbox backplane with real SQLite files and the local PostgreSQL:
//! rollbacks leave nothing, commits are delivered once and in commit order,
//! cursors survive a restart and resume on another instance, and retention
//! turns old cursors into `resync`.
//!
//! The PostgreSQL tests need `DATABASE_URL`; each works in tables of its own
//! (`outbox_<pid>_<n>`), dropped at the end. Outside CI they are skipped
//! when `DATABASE_URL` is unset.
#![cfg(feature = "outbox")]

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::{Client, LIMIT, serve};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement};
use serde_json::{Value, json};
use tidings::backplane::Outbox;
use tidings::sea_orm::Transaction;
use tidings::{Config, Notification, Notifier, Notify, Op};
use tokio::time::timeout;

/// A table name no other test (or test run) uses.
fn unique_table() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("outbox_{}_{}_{nanos}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// A fresh SQLite file with the application's table `rows`.
async fn sqlite() -> DatabaseConnection {
    let path = std::env::temp_dir().join(format!("tidings-{}.db", unique_table()));
    // As SQLite applications run: write-ahead log, and writers that wait
    // for the lock (on every pooled connection) instead of failing.
    let mut options = sea_orm::ConnectOptions::new(format!("sqlite://{}?mode=rwc", path.display()));
    options.map_sqlx_sqlite_opts(|sqlite| {
        sqlite
            .journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(5))
    });
    let db = Database::connect(options).await.unwrap();
    db.execute_unprepared("CREATE TABLE rows (id INTEGER PRIMARY KEY, v TEXT)").await.unwrap();
    db
}

/// The local PostgreSQL, or `None` (skip) outside CI when unset.
async fn postgres() -> Option<DatabaseConnection> {
    let Some(url) = std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty()) else {
        assert!(std::env::var_os("CI").is_none(), "DATABASE_URL must be set in CI");
        eprintln!("skipped: DATABASE_URL is not set");
        return None;
    };
    Some(Database::connect(url).await.expect("DATABASE_URL is reachable"))
}

/// An outbox in a table of its own on `db`, created.
async fn outbox(db: &DatabaseConnection, table: &str) -> Outbox {
    let outbox = Outbox::new(db.clone()).table(table);
    outbox.migrate().await.unwrap();
    outbox
}

fn notifier(outbox: Outbox) -> Notifier {
    Notifier::with_config(Config::default().backplane(outbox))
}

async fn drop_tables(db: &DatabaseConnection, table: &str) {
    for t in [format!("{table}_log"), table.to_owned()] {
        db.execute_unprepared(&format!("DROP TABLE IF EXISTS {t}")).await.unwrap();
    }
}

async fn count(db: &DatabaseConnection, table: &str) -> i64 {
    let row = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            format!("SELECT count(*) AS n FROM {table}"),
        ))
        .await
        .unwrap()
        .unwrap();
    row.try_get("", "n").unwrap()
}

/// Waits until the notifier has loaded the log.
async fn wait_ready(notifier: &Notifier) {
    timeout(LIMIT, notifier.ready()).await.expect("the outbox loaded its log within the limit");
}

fn collection_and_id(frame: &Value) -> (String, i64) {
    (frame["collection"].as_str().unwrap().to_owned(), frame["data"]["id"].as_i64().unwrap_or(-1))
}

/// What every backend must do: a rollback leaves no row and sends nothing;
/// a commit sends its notifications once each, in order, with cursors of
/// the log.
async fn rollback_and_commit(db: DatabaseConnection, table: &str) {
    let notifier = notifier(outbox(&db, table).await);
    wait_ready(&notifier).await;
    let addr = serve(&notifier).await;
    let mut a = Client::connect(addr, "").await;
    let mut b = Client::connect(addr, "").await;

    let txn = Transaction::begin(&db, notifier.batch()).await.unwrap();
    txn.notify_with("rows", Op::Insert, &json!({"id": 1})).unwrap();
    txn.rollback().await.unwrap();
    let txn = Transaction::begin(&db, notifier.batch()).await.unwrap();
    txn.notify_with("rows", Op::Insert, &json!({"id": 2})).unwrap();
    drop(txn);
    assert_eq!(count(&db, table).await, 0, "a rollback leaves no outbox row");

    let txn = Transaction::begin(&db, notifier.batch()).await.unwrap();
    txn.notify_with("rows", Op::Insert, &json!({"id": 3})).unwrap();
    txn.notify_with("rows", Op::Update, &json!({"id": 4})).unwrap();
    txn.commit().await.unwrap();
    assert_eq!(count(&db, table).await, 2);

    for client in [&mut a, &mut b] {
        let first = client.next_json().await;
        let second = client.next_json().await;
        assert_eq!(collection_and_id(&first), ("rows".to_owned(), 3), "{first}");
        assert_eq!(collection_and_id(&second), ("rows".to_owned(), 4), "{second}");
        let mut parts = first["cursor"].as_str().unwrap().split('-');
        let (log, position) = (parts.next().unwrap(), parts.next().unwrap());
        assert_eq!(position, "1", "the first position of a new log");
        let next = second["cursor"].as_str().unwrap();
        assert!(
            next.starts_with(&format!("{log}-2-")),
            "{next}: the next position, with its row's fingerprint"
        );
    }
    // Exactly once: the next frame is the marker, not a repeat.
    notifier.notify("marker", Op::Insert);
    for client in [&mut a, &mut b] {
        assert_eq!(client.next_json().await["collection"], "marker");
    }
    drop_tables(&db, table).await;
}

#[tokio::test]
async fn sqlite_rollback_leaves_nothing_and_commit_is_delivered_once_in_order() {
    rollback_and_commit(sqlite().await, &unique_table()).await;
}

#[tokio::test]
async fn postgres_rollback_leaves_nothing_and_commit_is_delivered_once_in_order() {
    let Some(db) = postgres().await else { return };
    rollback_and_commit(db, &unique_table()).await;
}

/// Two PostgreSQL transactions insert in one order and commit in the other.
/// Their ids (from a sequence, at insert) say T1 came first; a reader that
/// tailed by id would have moved past T2's id and never read T1. The relay
/// positions rows as they become visible: clients get T2, then T1, each
/// exactly once.
///
/// The transactions write their outbox rows with plain SQL, as any process
/// sharing the table may (the payload is the documented envelope), because
/// a [`Transaction`] inserts its rows just before its `COMMIT` and so
/// cannot be paused in between.
#[tokio::test]
async fn interleaved_postgres_transactions_are_delivered_in_commit_order() {
    use sea_orm::TransactionTrait;
    let Some(db) = postgres().await else { return };
    let table = unique_table();
    // Raw transactions do not wake the relay: it finds them by polling.
    let notifier = notifier(outbox(&db, &table).await.poll_interval(Duration::from_millis(10)));
    wait_ready(&notifier).await;
    let addr = serve(&notifier).await;
    let mut client = Client::connect(addr, "").await;

    let insert = |id: i64| {
        let payload = tidings::backplane::envelope::encode(
            &Notification::new("rows", Op::Insert).with_data(&json!({ "id": id })).unwrap(),
        );
        Statement::from_sql_and_values(
            DbBackend::Postgres,
            format!("INSERT INTO {table} (payload, created_ms) VALUES ($1, 0) RETURNING id"),
            [payload.into()],
        )
    };
    let t1 = db.begin().await.unwrap();
    let t1_id: i64 = t1.query_one_raw(insert(1)).await.unwrap().unwrap().try_get("", "id").unwrap();
    let t2 = db.begin().await.unwrap();
    let t2_id: i64 = t2.query_one_raw(insert(2)).await.unwrap().unwrap().try_get("", "id").unwrap();
    assert!(t1_id < t2_id, "T1 inserted first: {t1_id} < {t2_id}");

    t2.commit().await.unwrap();
    let first = client.next_json().await;
    assert_eq!(collection_and_id(&first), ("rows".to_owned(), 2), "T2 committed first: {first}");

    t1.commit().await.unwrap();
    let second = client.next_json().await;
    assert_eq!(
        collection_and_id(&second),
        ("rows".to_owned(), 1),
        "T1, committed last, still arrives: {second}"
    );
    let position = |f: &Value| common::seq(f["cursor"].as_str().unwrap());
    assert_eq!((position(&first), position(&second)), (1, 2), "positions follow commit order, not ids");

    notifier.notify("marker", Op::Insert);
    assert_eq!(client.next_json().await["collection"], "marker", "each exactly once");
    drop_tables(&db, &table).await;
}

/// What an instance restart looks like to a client: a notifier stops, a new
/// one starts on the same database, and the client comes back with its
/// cursor. It gets exactly what it missed, and no `resync`; a second
/// instance running beside the first serves the same cursor.
async fn restart_and_second_instance(db: DatabaseConnection, table: &str) {
    let first = notifier(outbox(&db, table).await);
    wait_ready(&first).await;
    let addr = serve(&first).await;
    let mut client = Client::connect(addr, "").await;
    first.notify_with("rows", Op::Insert, &json!({"id": 1})).unwrap();
    let seen = client.next_json().await;
    let cursor = seen["cursor"].as_str().unwrap().to_owned();
    drop(client);
    first.shutdown().await;
    drop(first);

    // The restarted instance; writes happen while the client is away.
    let second = notifier(outbox(&db, table).await);
    wait_ready(&second).await;
    let txn = Transaction::begin(&db, second.batch()).await.unwrap();
    txn.notify_with("rows", Op::Update, &json!({"id": 1})).unwrap();
    txn.notify_with("posts", Op::Insert, &json!({"id": 7})).unwrap();
    txn.commit().await.unwrap();
    // A third instance, beside the second, on the same log.
    let third = notifier(outbox(&db, table).await);
    wait_ready(&third).await;

    for instance in [&second, &third] {
        let addr = serve(instance).await;
        let mut client = Client::connect(addr, &format!("cursor={cursor}")).await;
        let a = client.next_json().await;
        let b = client.next_json().await;
        assert!(a.get("type").is_none(), "a notification, no resync after a restart: {a}");
        assert_eq!(collection_and_id(&a), ("rows".to_owned(), 1));
        assert_eq!(collection_and_id(&b), ("posts".to_owned(), 7));
        assert_eq!(common::seq(b["cursor"].as_str().unwrap()), common::seq(&cursor) + 2);
        instance.notify("marker", Op::Insert);
        assert_eq!(client.next_json().await["collection"], "marker", "exactly what it missed");
    }
    drop_tables(&db, table).await;
}

#[tokio::test]
async fn sqlite_cursor_resumes_after_a_restart_and_on_another_instance() {
    restart_and_second_instance(sqlite().await, &unique_table()).await;
}

#[tokio::test]
async fn postgres_cursor_resumes_after_a_restart_and_on_another_instance() {
    let Some(db) = postgres().await else { return };
    restart_and_second_instance(db, &unique_table()).await;
}

/// A notification committed by an instance that does not relay (standing
/// for one that died between its commit and its relay pass) is delivered
/// by the next instance that does, when it starts.
#[tokio::test]
async fn a_row_committed_but_never_relayed_goes_out_when_a_relay_starts() {
    let db = sqlite().await;
    let table = unique_table();
    let silent = notifier(outbox(&db, &table).await.relay(false));
    wait_ready(&silent).await;
    let txn = Transaction::begin(&db, silent.batch()).await.unwrap();
    txn.notify_with("rows", Op::Delete, &json!({"id": 5})).unwrap();
    txn.commit().await.unwrap();
    let cursor = silent.cursor().to_string();
    drop(silent);

    let relaying = notifier(outbox(&db, &table).await);
    wait_ready(&relaying).await;
    let addr = serve(&relaying).await;
    let mut client = Client::connect(addr, &format!("cursor={cursor}")).await;
    let frame = client.next_json().await;
    assert_eq!(collection_and_id(&frame), ("rows".to_owned(), 5), "{frame}");
    drop_tables(&db, &table).await;
}

/// Retention: rows past the newest `retain` are pruned; after a restart a
/// cursor older than them gets `resync`, one inside them resumes. Without
/// a restart, a lagging session's resync names exactly the collections that
/// changed that it may see.
#[tokio::test]
async fn cursors_older_than_retention_get_resync() {
    let db = sqlite().await;
    let table = unique_table();
    let make = |db: &DatabaseConnection| {
        let outbox = Outbox::new(db.clone()).table(&table).retain(3).prune_interval(Duration::from_millis(1));
        async move {
            outbox.migrate().await.unwrap();
            Notifier::with_config(Config::default().replay_capacity(3).backplane(outbox))
        }
    };
    let first = make(&db).await;
    wait_ready(&first).await;
    let addr = serve(&first).await;
    let mut client = Client::connect(addr, "").await;
    let mut cursors = Vec::new();
    for id in 1..=6 {
        let txn = Transaction::begin(&db, first.batch()).await.unwrap();
        txn.notify_with("rows", Op::Insert, &json!({"id": id})).unwrap();
        txn.commit().await.unwrap();
        cursors.push(client.next_json().await["cursor"].as_str().unwrap().to_owned());
    }
    // The relay prunes on its passes: one more write makes it run again.
    first.notify("marker", Op::Insert);
    client.next_json().await;
    timeout(LIMIT, async {
        while count(&db, &table).await > 3 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("pruned down to the retention");
    first.shutdown().await;
    drop(first);

    let second = make(&db).await;
    wait_ready(&second).await;
    let addr = serve(&second).await;
    let mut old = Client::connect(addr, &format!("cursor={}", cursors[1])).await;
    let frame = old.next_json().await;
    assert_eq!(frame["type"], "resync", "{frame}");
    assert!(frame.get("collections").is_none(), "what was pruned is unknown: reload everything ({frame})");
    let mut recent = Client::connect(addr, &format!("cursor={}", cursors[4])).await;
    let frame = recent.next_json().await;
    assert_eq!(collection_and_id(&frame), ("rows".to_owned(), 6), "{frame}");
    let frame = recent.next_json().await;
    assert_eq!(frame["collection"], "marker", "{frame}");

    // Precise resync on the outbox: a client that comes back after more
    // changes than the history holds is told which collections changed,
    // and only those it may see.
    let seen = frame["cursor"].as_str().unwrap().to_owned();
    drop((old, recent));
    // One write at a time, each seen by a watcher before the next: with
    // a history and a retention of 3, a faster pace would make the watcher
    // lag, or let the relay prune rows this instance has not read yet
    // (which it rightly answers with a plain resync).
    let mut watcher = Client::connect(addr, "").await;
    for id in 0..4 {
        if id == 2 {
            second.push(Notification::new("secrets", Op::Insert).to("admins"));
        }
        let txn = Transaction::begin(&db, second.batch()).await.unwrap();
        txn.notify_with("posts", Op::Insert, &json!({"id": id})).unwrap();
        txn.commit().await.unwrap();
        let frame = watcher.next_json().await;
        assert_eq!(frame["collection"], "posts", "the watcher is not an admin: {frame}");
    }
    let mut back = Client::connect(addr, &format!("cursor={seen}")).await;
    // The history holds 3: the client's cursor was evicted by the 5 writes.
    let frame = back.next_json().await;
    assert_eq!(frame["type"], "resync", "{frame}");
    assert_eq!(frame["collections"], json!(["posts"]), "names posts, hides the admins' secrets: {frame}");
    drop_tables(&db, &table).await;
}

/// Two instances on one PostgreSQL table, four writers committing at once
/// through both: both relays run, one pass at a time, and clients on either
/// instance receive every notification exactly once, in the same order,
/// under dense positions.
#[tokio::test]
async fn concurrent_writers_on_two_postgres_instances_give_one_order_everywhere() {
    let Some(db) = postgres().await else { return };
    let table = unique_table();
    let instances = [notifier(outbox(&db, &table).await), notifier(outbox(&db, &table).await)];
    for instance in &instances {
        wait_ready(instance).await;
    }
    let mut clients = Vec::new();
    for instance in &instances {
        clients.push(Client::connect(serve(instance).await, "").await);
    }
    const WRITERS: i64 = 4;
    const EACH: i64 = 25;
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let db = db.clone();
        let instance = instances[(w % 2) as usize].clone();
        writers.push(tokio::spawn(async move {
            for i in 0..EACH {
                let txn = Transaction::begin(&db, instance.batch()).await.unwrap();
                txn.notify_with("rows", Op::Insert, &json!({ "id": w * 1000 + i })).unwrap();
                txn.commit().await.unwrap();
            }
        }));
    }
    for writer in writers {
        timeout(LIMIT * 4, writer).await.expect("the writers finished").unwrap();
    }
    let mut orders = Vec::new();
    for client in &mut clients {
        let mut order = Vec::new();
        for expected in 1..=(WRITERS * EACH) as u64 {
            let frame = client.next_json().await;
            assert_eq!(common::seq(frame["cursor"].as_str().unwrap()), expected, "dense positions: {frame}");
            order.push(frame["data"]["id"].as_i64().unwrap());
        }
        orders.push(order);
    }
    assert_eq!(orders[0], orders[1], "the same order on both instances");
    let mut ids = orders[0].clone();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), (WRITERS * EACH) as usize, "each notification exactly once");
    // Each writer's own notifications stay in its commit order.
    for w in 0..WRITERS {
        let own: Vec<i64> = orders[0].iter().copied().filter(|id| id / 1000 == w).collect();
        assert!(own.windows(2).all(|p| p[0] < p[1]), "writer {w} out of order: {own:?}");
    }
    drop_tables(&db, &table).await;
}

/// A dropped notifier leaves no connection behind: its LISTEN connection
/// (and its relay and reader) end with it.
#[tokio::test]
async fn a_dropped_notifier_closes_its_listen_connection() {
    let Some(db) = postgres().await else { return };
    let table = unique_table();
    let listening = |db: DatabaseConnection, table: String| async move {
        let sql = format!("SELECT count(*) AS n FROM pg_stat_activity WHERE query = 'LISTEN \"{table}\"'");
        let row = db.query_one_raw(Statement::from_string(DbBackend::Postgres, sql)).await.unwrap().unwrap();
        row.try_get::<i64>("", "n").unwrap()
    };
    // pg_stat_activity has no event to await: look, in bounded steps.
    let wait_for = |n: i64| {
        let (db, table) = (db.clone(), table.clone());
        async move {
            for _ in 0..500 {
                if listening(db.clone(), table.clone()).await == n {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!("never {n} LISTEN connections on {table}");
        }
    };
    let notifier = notifier(outbox(&db, &table).await);
    wait_ready(&notifier).await;
    wait_for(1).await;
    drop(notifier);
    wait_for(0).await;
    drop_tables(&db, &table).await;
}

/// Retention by age: relayed rows older than `retain_for` are deleted by
/// the relay, except the newest (the log's current position).
#[tokio::test]
async fn rows_older_than_the_age_limit_are_pruned_but_the_newest_is_kept() {
    let db = sqlite().await;
    let table = unique_table();
    let outbox = Outbox::new(db.clone())
        .table(&table)
        .retain_for(Some(Duration::from_millis(1)))
        .prune_interval(Duration::from_millis(1))
        .poll_interval(Duration::from_millis(5));
    outbox.migrate().await.unwrap();
    let notifier = notifier(outbox);
    wait_ready(&notifier).await;
    let addr = serve(&notifier).await;
    let mut client = Client::connect(addr, "").await;
    for id in 0..3 {
        let txn = Transaction::begin(&db, notifier.batch()).await.unwrap();
        txn.notify_with("rows", Op::Insert, &json!({ "id": id })).unwrap();
        txn.commit().await.unwrap();
        client.next_json().await;
    }
    // Pruning runs on the relay's own schedule: look, in bounded steps.
    timeout(LIMIT, async {
        while count(&db, &table).await > 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("pruned down to the newest row");
    let row = db
        .query_one_raw(Statement::from_string(DbBackend::Sqlite, format!("SELECT position FROM {table}")))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.try_get::<i64>("", "position").unwrap(), 3, "the newest row stays");
    drop_tables(&db, &table).await;
}

/// Revocation reaches every instance: `reauthenticate_user` on one
/// instance closes that user's sessions on another (4401), through the
/// outbox, and leaves the other users' sessions alone.
#[tokio::test]
async fn reauthenticating_a_user_on_one_instance_closes_its_sessions_on_another() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let db = sqlite().await;
    let table = unique_table();
    let instance = |outbox: Outbox| Notifier::with_config(Config::default().backplane(outbox));
    let settings = || {
        tidings::axum::Settings::default().authorize(|parts| {
            let user = parts.headers.get("x-user").and_then(|v| v.to_str().ok()).map(str::to_owned);
            async move { Ok(tidings::Identity::user(user.unwrap_or_default())) }
        })
    };
    // A does not relay: its order waits for B's relay (at B's next poll),
    // which leaves user 3 time to authorize again on A before the order
    // comes back to A.
    let (a, b) = (instance(outbox(&db, &table).await.relay(false)), instance(outbox(&db, &table).await));
    wait_ready(&a).await;
    wait_ready(&b).await;
    let (addr_a, addr_b) =
        (common::serve_with(&a, settings()).await, common::serve_with(&b, settings()).await);
    let connect = |addr: std::net::SocketAddr, user: &'static str| async move {
        let mut request = format!("ws://{addr}/ws").into_client_request().unwrap();
        request.headers_mut().insert("x-user", user.parse().unwrap());
        let (ws, _) = timeout(LIMIT, tokio_tungstenite::connect_async(request)).await.unwrap().unwrap();
        Client::from_socket(ws).await
    };
    let mut three_on_a = connect(addr_a, "3").await;
    let mut three_on_b = connect(addr_b, "3").await;
    let mut five = connect(addr_b, "5").await;

    assert_eq!(a.reauthenticate_user("3"), 1, "told at once on this instance");
    for client in [&mut three_on_a, &mut three_on_b] {
        let close = client.expect_close().await;
        assert_eq!((u16::from(close.code), close.reason.as_str()), (4401, "reauthenticate"));
    }
    // User 3 authorizes again on A before the order comes back to A through
    // the outbox: the echo must not close the new session.
    let mut again = connect(addr_a, "3").await;
    // The order is not a notification: the others get the next write (after
    // the order in the log), nothing else.
    a.notify("marker", Op::Insert);
    assert_eq!(five.next_json().await["collection"], "marker");
    assert_eq!(again.next_json().await["collection"], "marker", "the new session of user 3 stays open");
    drop_tables(&db, &table).await;
}

/// A hole in the middle of the log (a row deleted out of order) is not
/// skipped silently: after a restart a cursor from before it gets
/// `resync`; so does one at the deleted row (nothing here can show that
/// the client's row is the one that was deleted); one after it resumes.
#[tokio::test]
async fn a_hole_in_the_log_means_resync_for_cursors_before_it() {
    let db = sqlite().await;
    let table = unique_table();
    let first = notifier(outbox(&db, &table).await);
    wait_ready(&first).await;
    let mut client = Client::connect(serve(&first).await, "").await;
    let mut cursors = Vec::new();
    for id in 1..=5 {
        first.notify_with("rows", Op::Insert, &json!({ "id": id })).unwrap();
        cursors.push(client.next_json().await["cursor"].as_str().unwrap().to_owned());
    }
    first.shutdown().await;
    drop(first);
    db.execute_unprepared(&format!("DELETE FROM {table} WHERE position = 3")).await.unwrap();

    let second = notifier(outbox(&db, &table).await);
    wait_ready(&second).await;
    let addr = serve(&second).await;
    let mut before = Client::connect(addr, &format!("cursor={}", cursors[0])).await;
    let frame = before.next_json().await;
    assert_eq!(frame["type"], "resync", "position 3 is gone: {frame}");
    let mut at = Client::connect(addr, &format!("cursor={}", cursors[2])).await;
    let frame = at.next_json().await;
    assert_eq!(frame["type"], "resync", "position 3 cannot be vouched for: {frame}");
    let mut after = Client::connect(addr, &format!("cursor={}", cursors[3])).await;
    assert_eq!(collection_and_id(&after.next_json().await), ("rows".to_owned(), 5));
    drop_tables(&db, &table).await;
}

/// A restarted instance loads the log's tail before any session exists: a
/// page that resumes with a filter is replayed only what passes it.
async fn filtered_resume_after_a_restart(db: DatabaseConnection, table: &str) {
    let first = notifier(outbox(&db, table).await);
    wait_ready(&first).await;
    let addr = serve(&first).await;
    let mut client = Client::connect(addr, "collections=rows").await;
    first.notify_with("rows", Op::Insert, &json!({"id": 0})).unwrap();
    let cursor = client.next_json().await["cursor"].as_str().unwrap().to_owned();
    drop(client);
    let txn = Transaction::begin(&db, first.batch()).await.unwrap();
    txn.notify_with("posts", Op::Insert, &json!({"id": 1, "forum_id": 2})).unwrap();
    txn.notify_with("posts", Op::Insert, &json!({"id": 2, "forum_id": 1})).unwrap();
    txn.commit().await.unwrap();
    first.shutdown().await;
    drop(first);

    let second = notifier(outbox(&db, table).await);
    wait_ready(&second).await;
    let addr = serve(&second).await;
    let filter = common::encode(&json!({"posts": {"forum_id": 1}}).to_string());
    let query = format!("collections=posts,marker&where={filter}&cursor={cursor}");
    let mut client = Client::connect(addr, &query).await;
    let frame = client.next_json().await;
    assert_eq!(collection_and_id(&frame), ("posts".to_owned(), 2), "forum 2's post was replayed: {frame}");
    second.notify("marker", Op::Insert);
    assert_eq!(client.next_json().await["collection"], "marker", "nothing else");
    drop_tables(&db, table).await;
}

#[tokio::test]
async fn sqlite_a_filtered_resume_after_a_restart_replays_only_what_passes() {
    filtered_resume_after_a_restart(sqlite().await, &unique_table()).await;
}

#[tokio::test]
async fn postgres_a_filtered_resume_after_a_restart_replays_only_what_passes() {
    let Some(db) = postgres().await else { return };
    filtered_resume_after_a_restart(db, &unique_table()).await;
}

/// The cursor of the `n`th notification of a log whose first has `first`.
fn position(first: &str, n: u64) -> String {
    let log = first.split('-').next().unwrap();
    format!("{log}-{n}")
}

/// A cursor beyond the log (crafted, or from a database restored to an
/// earlier state) is not honoured: after a bounded wait for this instance
/// to read that far, it gets `resync`, and the session then receives every
/// write after its hello, the next position included. (The repro:
/// with the cursor `L-2` before the log reached 2, writes 2 and 3 were
/// lost.)
#[tokio::test]
async fn a_cursor_beyond_the_log_gets_resync_and_loses_nothing_after() {
    let db = sqlite().await;
    let table = unique_table();
    let notifier = notifier(outbox(&db, &table).await);
    wait_ready(&notifier).await;
    let addr = serve(&notifier).await;
    let mut first = Client::connect(addr, "").await;
    notifier
        .publish(Notification::new("forums", Op::Insert).with_data(&json!({"id": 1})).unwrap())
        .await
        .unwrap();
    let one = first.next_json().await["cursor"].as_str().unwrap().to_owned();

    for (ahead, ids) in [(position(&one, 2), [2, 3]), (position(&one, 1_000_012), [4, 5])] {
        let head = notifier.cursor().to_string();
        let mut client = Client::connect(addr, &format!("cursor={ahead}")).await;
        assert_eq!(client.cursor, head, "hello carries the head, not the cursor beyond it");
        let resync = client.next_json().await;
        assert_eq!(resync["type"], "resync", "{ahead}: {resync}");
        assert_eq!(resync["cursor"], head);
        for id in ids {
            notifier
                .publish(Notification::new("forums", Op::Insert).with_data(&json!({"id": id})).unwrap())
                .await
                .unwrap();
            assert_eq!(
                client.next_json().await["data"]["id"],
                id,
                "{ahead}: nothing after the hello is lost"
            );
        }
    }
    drop_tables(&db, &table).await;
}

/// Two instances on one SQLite log: A relays and reads at once, B only
/// polls (every 500 ms). A client that got a cursor from A and resumes on B
/// before B has read it is honoured once B has caught up: no `resync`, and
/// exactly what came after.
#[tokio::test]
async fn a_cursor_from_an_instance_ahead_is_honoured_once_this_one_caught_up() {
    let db = sqlite().await;
    let table = unique_table();
    let a = notifier(outbox(&db, &table).await);
    let b_outbox =
        Outbox::new(db.clone()).table(&table).relay(false).poll_interval(Duration::from_millis(500));
    let b = notifier(b_outbox);
    wait_ready(&a).await;
    wait_ready(&b).await;
    let (addr_a, addr_b) = (serve(&a).await, serve(&b).await);
    let mut on_a = Client::connect(addr_a, "").await;
    for id in 1..=3 {
        a.publish(Notification::new("posts", Op::Insert).with_data(&json!({"id": id})).unwrap())
            .await
            .unwrap();
    }
    let mut cursors = Vec::new();
    for _ in 1..=3 {
        cursors.push(on_a.next_json().await["cursor"].as_str().unwrap().to_owned());
    }
    // B polls every 500 ms: it has most likely not read 2 yet.
    let mut on_b = Client::connect(addr_b, &format!("cursor={}", cursors[1])).await;
    assert_eq!(on_b.cursor, cursors[1], "resumed where the client was");
    let frame = on_b.next_json().await;
    assert_eq!((frame["data"]["id"].as_i64(), &frame["cursor"]), (Some(3), &json!(cursors[2])), "{frame}");
    a.publish(Notification::new("posts", Op::Insert).with_data(&json!({"id": 4})).unwrap()).await.unwrap();
    assert_eq!(on_b.next_json().await["data"]["id"], 4);
    drop_tables(&db, &table).await;
}

/// Rolls the outbox back to `position`, as restoring a backup taken then
/// would: later rows are gone, and the ids they had are handed out again.
async fn restore_to(db: &DatabaseConnection, table: &str, position: i64) {
    db.execute_unprepared(&format!("DELETE FROM {table} WHERE position > {position} OR position IS NULL"))
        .await
        .unwrap();
    let rewind = match db.get_database_backend() {
        DbBackend::Postgres => {
            format!("SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")
        }
        _ => format!("UPDATE sqlite_sequence SET seq = (SELECT max(id) FROM {table}) WHERE name = '{table}'"),
    };
    db.execute_unprepared(&rewind).await.unwrap();
}

/// Writes `ids` one by one, each read by `client` before the next; returns
/// their cursors.
async fn write_rows(
    notifier: &Notifier,
    client: &mut Client,
    ids: std::ops::RangeInclusive<i64>,
) -> Vec<String> {
    let mut cursors = Vec::new();
    for id in ids {
        notifier.notify_with("rows", Op::Insert, &json!({ "id": id })).unwrap();
        let frame = client.next_json().await;
        assert_eq!(frame["collection"], "rows", "{frame}");
        assert_eq!(collection_and_id(&frame), ("rows".to_owned(), id), "{frame}");
        cursors.push(frame["cursor"].as_str().unwrap().to_owned());
    }
    cursors
}

/// The database is restored to an earlier state while an instance runs:
/// its positions go back, and the next rows take positions the sessions
/// already saw. The instance notices (the last row it read is gone or is
/// another row), every session gets `resync`, the log gets a new id so no
/// cursor of the old one is ever placed again, and what is written after
/// is delivered.
async fn a_restore_under_a_running_instance(db: DatabaseConnection, table: &str) {
    let notifier = notifier(outbox(&db, table).await);
    wait_ready(&notifier).await;
    let addr = serve(&notifier).await;
    let mut client = Client::connect(addr, "").await;
    let cursors = write_rows(&notifier, &mut client, 1..=5).await;

    restore_to(&db, table, 3).await;
    for id in 6..=8 {
        notifier.notify_with("rows", Op::Insert, &json!({ "id": id })).unwrap();
    }
    let frame = client.next_json().await;
    assert_eq!(frame["type"], "resync", "positions 4 and 5 now hold other rows: {frame}");
    assert!(frame.get("collections").is_none(), "nobody knows what the restore undid: {frame}");
    let renewed = frame["cursor"].as_str().unwrap();
    assert_ne!(renewed.split('-').next(), cursors[0].split('-').next(), "a new log id: {renewed}");
    // Rows 6 to 8 relayed after the renewal come as notifications (those
    // before it are covered by the resync); then 9, and no second resync.
    notifier.notify_with("rows", Op::Insert, &json!({ "id": 9 })).unwrap();
    let mut ids = Vec::new();
    while ids.last() != Some(&9) {
        assert!(ids.len() < 4, "row 9 did not come after {ids:?}");
        let frame = client.next_json().await;
        let (collection, id) = collection_and_id(&frame);
        assert!(collection == "rows" && (6..=9).contains(&id), "{frame}");
        ids.push(id);
    }

    // Cursors of the old log, from before the restore point or after it.
    for old in [&cursors[2], &cursors[4]] {
        let mut back = Client::connect(addr, &format!("cursor={old}")).await;
        let frame = back.next_json().await;
        assert_eq!(frame["type"], "resync", "{old}: {frame}");
    }
    notifier.shutdown().await;
    drop_tables(&db, table).await;
}

#[tokio::test]
async fn sqlite_a_restore_under_a_running_instance_resyncs_every_session() {
    a_restore_under_a_running_instance(sqlite().await, &unique_table()).await;
}

#[tokio::test]
async fn postgres_a_restore_under_a_running_instance_resyncs_every_session() {
    let Some(db) = postgres().await else { return };
    a_restore_under_a_running_instance(db, &unique_table()).await;
}

/// The database is restored while the application is stopped, and new
/// rows take the positions of the lost ones before a client comes back
/// with a cursor from before the restore: the cursor names a row that is
/// not the one at its position now (its fingerprint differs), so it gets
/// `resync` instead of a replay that would skip the new rows. A cursor
/// from before the restore point names a row the restore kept: it resumes.
async fn a_cursor_from_before_a_restore(db: DatabaseConnection, table: &str) {
    let first = notifier(outbox(&db, table).await);
    wait_ready(&first).await;
    // Served by a server the test stops: the instance must be gone, as a
    // stopped application is (a running one would see the restore itself).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = axum::Router::new().merge(tidings::axum::routes(&first));
    let server = tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let mut client = Client::connect(addr, "").await;
    let cursors = write_rows(&first, &mut client, 1..=5).await;
    first.shutdown().await;
    server.abort();
    let _ = server.await;
    drop((first, client));

    restore_to(&db, table, 3).await;
    let second = notifier(outbox(&db, table).await);
    wait_ready(&second).await;
    let addr = serve(&second).await;
    let mut watcher = Client::connect(addr, "").await;
    let after = write_rows(&second, &mut watcher, 6..=8).await;
    assert_eq!(
        after.iter().map(|c| common::seq(c)).collect::<Vec<_>>(),
        [4, 5, 6],
        "the positions of the lost rows are handed out again"
    );

    let mut lost = Client::connect(addr, &format!("cursor={}", cursors[4])).await;
    let frame = lost.next_json().await;
    assert_eq!(frame["type"], "resync", "position 5 is another row now: {frame}");
    let mut kept = Client::connect(addr, &format!("cursor={}", cursors[2])).await;
    for id in 6..=8 {
        assert_eq!(collection_and_id(&kept.next_json().await), ("rows".to_owned(), id));
    }
    second.shutdown().await;
    drop_tables(&db, table).await;
}

#[tokio::test]
async fn sqlite_a_cursor_from_before_a_restore_gets_resync_after_a_restart() {
    a_cursor_from_before_a_restore(sqlite().await, &unique_table()).await;
}

#[tokio::test]
async fn postgres_a_cursor_from_before_a_restore_gets_resync_after_a_restart() {
    let Some(db) = postgres().await else { return };
    a_cursor_from_before_a_restore(db, &unique_table()).await;
}
