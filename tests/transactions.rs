//! Transaction-scoped notifications with a real SQLite database: sent after
//! commit, in order and coalesced; never on rollback.

mod common;

use common::{Client, serve};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection};
use serde_json::json;
use tidings::sea_orm::Transaction;
use tidings::{Notifier, Notify, Op};

async fn database() -> DatabaseConnection {
    let path = std::env::temp_dir().join(format!(
        "tidings-tx-{}-{}.db",
        std::process::id(),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
    ));
    let db = Database::connect(format!("sqlite://{}?mode=rwc", path.display())).await.unwrap();
    db.execute_unprepared("CREATE TABLE rows (id INTEGER PRIMARY KEY, v TEXT)").await.unwrap();
    db
}

async fn setup() -> (Notifier, DatabaseConnection, Client) {
    let notifier = Notifier::new();
    let addr = serve(&notifier).await;
    let client = Client::connect(addr, "").await;
    (notifier, database().await, client)
}

fn marker(notifier: &Notifier) {
    notifier.notify("marker", Op::Insert);
}

#[tokio::test]
async fn rollback_and_drop_send_nothing() {
    let (notifier, db, mut client) = setup().await;

    let txn = Transaction::begin(&db, notifier.batch()).await.unwrap();
    txn.execute_unprepared("INSERT INTO rows (id) VALUES (1)").await.unwrap();
    txn.notify_with("rows", Op::Insert, &json!({"id": 1})).unwrap();
    txn.rollback().await.unwrap();

    let txn = Transaction::begin(&db, notifier.batch()).await.unwrap();
    txn.execute_unprepared("INSERT INTO rows (id) VALUES (2)").await.unwrap();
    txn.notify_with("rows", Op::Insert, &json!({"id": 2})).unwrap();
    drop(txn);

    marker(&notifier);
    assert_eq!(client.next_json().await["collection"], "marker");
}

#[tokio::test]
async fn commit_sends_once_in_order_coalesced_and_after_the_data_is_visible() {
    let (notifier, db, mut client) = setup().await;

    let txn = Transaction::begin(&db, notifier.batch()).await.unwrap();
    txn.execute_unprepared("INSERT INTO rows (id, v) VALUES (1, 'a'), (2, 'b'), (3, 'c')").await.unwrap();
    txn.notify_with("rows", Op::Insert, &json!({"id": 1})).unwrap();
    txn.notify_with("rows", Op::Insert, &json!({"id": 2})).unwrap();
    txn.execute_unprepared("UPDATE rows SET v = 'z' WHERE id = 1").await.unwrap();
    txn.notify_with("rows", Op::Update, &json!({"id": 1, "v": "y"})).unwrap();
    txn.notify_with("rows", Op::Update, &json!({"id": 1, "v": "z"})).unwrap(); // coalesced
    txn.notify_with("rows", Op::Insert, &json!({"id": 3})).unwrap();
    txn.notify_with("rows", Op::Update, &json!({"id": 1, "v": "z"})).unwrap(); // coalesced
    assert_eq!(txn.batch().len(), 4);
    txn.commit().await.unwrap();

    let mut seen = Vec::new();
    for _ in 0..4 {
        let frame = client.next_json().await;
        // The row is already visible from another connection: sent after commit.
        let id = frame["data"]["id"].as_i64().unwrap();
        let row = db
            .query_one_raw(sea_orm::Statement::from_string(
                db.get_database_backend(),
                format!("SELECT v FROM rows WHERE id = {id}"),
            ))
            .await
            .unwrap();
        assert!(row.is_some(), "row {id} must be committed before its notification");
        seen.push((frame["op"].as_str().unwrap().to_owned(), frame["data"].clone()));
    }
    assert_eq!(
        seen,
        [
            ("insert".to_owned(), json!({"id": 1})),
            ("insert".to_owned(), json!({"id": 2})),
            ("update".to_owned(), json!({"id": 1, "v": "z"})),
            ("insert".to_owned(), json!({"id": 3})),
        ]
    );
    marker(&notifier);
    assert_eq!(client.next_json().await["collection"], "marker", "each one exactly once");
}

#[tokio::test]
async fn savepoints_send_with_the_outermost_commit() {
    let (notifier, db, mut client) = setup().await;

    // Inner commits, outer rolls back: nothing.
    let outer = Transaction::begin(&db, notifier.batch()).await.unwrap();
    let inner = outer.begin_nested().await.unwrap();
    inner.notify_with("rows", Op::Insert, &json!({"id": 10})).unwrap();
    inner.commit().await.unwrap();
    assert_eq!(outer.batch().len(), 1, "handed to the outer transaction, not sent");
    outer.rollback().await.unwrap();

    // Inner rolls back, outer commits: only the outer's.
    let outer = Transaction::begin(&db, notifier.batch()).await.unwrap();
    outer.notify_with("rows", Op::Insert, &json!({"id": 20})).unwrap();
    let inner = outer.begin_nested().await.unwrap();
    inner.notify_with("rows", Op::Insert, &json!({"id": 21})).unwrap();
    inner.rollback().await.unwrap();
    let inner = outer.begin_nested().await.unwrap();
    inner.notify_with("rows", Op::Insert, &json!({"id": 22})).unwrap();
    inner.commit().await.unwrap();
    outer.commit().await.unwrap();

    assert_eq!(client.next_json().await["data"]["id"], 20);
    assert_eq!(client.next_json().await["data"]["id"], 22);
    marker(&notifier);
    assert_eq!(client.next_json().await["collection"], "marker");
}

#[tokio::test]
async fn a_failed_commit_sends_nothing() {
    let (notifier, db, mut client) = setup().await;
    // A deferred foreign key is only checked at COMMIT, so the commit itself fails.
    db.execute_unprepared("CREATE TABLE parents (id INTEGER PRIMARY KEY)").await.unwrap();
    db.execute_unprepared(
        "CREATE TABLE children (id INTEGER PRIMARY KEY, parent_id INTEGER NOT NULL \
         REFERENCES parents (id) DEFERRABLE INITIALLY DEFERRED)",
    )
    .await
    .unwrap();

    let txn = Transaction::begin(&db, notifier.batch()).await.unwrap();
    txn.execute_unprepared("INSERT INTO children (id, parent_id) VALUES (1, 999)").await.unwrap();
    txn.notify_with("children", Op::Insert, &json!({"id": 1})).unwrap();
    assert!(txn.commit().await.is_err(), "the deferred constraint must fail the commit");

    marker(&notifier);
    assert_eq!(client.next_json().await["collection"], "marker");
}
