//! The forums example's JSON API against a real server and real WebSocket
//! clients: every write notifies its collection after the commit, failed
//! writes notify nothing, and a tab's own writes skip that tab.
//!
//! Each test runs on a fresh SQLite file, and also on a fresh PostgreSQL
//! database when `DATABASE_URL` is set (e.g.
//! `postgres://postgres@127.0.0.1:5432/test`). Every wait is bounded by `LIMIT`;
//! "no notification" is proven by the next frame being a later write's.

#[path = "../examples/forums/app/mod.rs"]
#[allow(dead_code)]
mod app;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use reqwest::{Method, StatusCode};
use sea_orm::{ConnectionTrait, Database};
use serde_json::{Value, json};
use tidings::Notifier;
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The longest any single step may wait.
const LIMIT: Duration = Duration::from_secs(5);
/// Setting up a database (creating a Postgres database, the schema) may take longer.
const SETUP_LIMIT: Duration = Duration::from_secs(30);

// ---- databases -----------------------------------------------------------------

/// A fresh database for one test, removed by [`TestDb::remove`].
enum TestDb {
    Sqlite { url: String, path: PathBuf },
    Postgres { url: String, admin_url: String, name: String },
}

fn unique_suffix() -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{}_{}_{nanos}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

impl TestDb {
    fn sqlite() -> TestDb {
        let path = std::env::temp_dir().join(format!("tidings_forums_{}.db", unique_suffix()));
        let url = format!("sqlite://{}?mode=rwc", path.display());
        TestDb::Sqlite { url, path }
    }

    /// Creates a uniquely named database on the server `admin_url` points to.
    async fn postgres(admin_url: &str) -> TestDb {
        let name = format!("tidings_{}", unique_suffix());
        let admin = timeout(SETUP_LIMIT, Database::connect(admin_url))
            .await
            .expect("connecting to DATABASE_URL timed out")
            .expect("cannot connect to DATABASE_URL");
        admin.execute_unprepared(&format!("CREATE DATABASE {name}")).await.expect("CREATE DATABASE");
        admin.close().await.ok();
        // Same server and credentials, other database: replace the path.
        let (base, query) = admin_url.split_once('?').unwrap_or((admin_url, ""));
        let server = base.rsplit_once('/').map_or(base, |(server, _)| server);
        let url =
            if query.is_empty() { format!("{server}/{name}") } else { format!("{server}/{name}?{query}") };
        TestDb::Postgres { url, admin_url: admin_url.to_owned(), name }
    }

    fn url(&self) -> &str {
        match self {
            TestDb::Sqlite { url, .. } | TestDb::Postgres { url, .. } => url,
        }
    }

    async fn remove(self) {
        match self {
            TestDb::Sqlite { path, .. } => {
                for suffix in ["", "-wal", "-shm", "-journal"] {
                    let mut p = path.clone().into_os_string();
                    p.push(suffix);
                    std::fs::remove_file(p).ok();
                }
            }
            TestDb::Postgres { admin_url, name, .. } => {
                if let Ok(Ok(admin)) = timeout(SETUP_LIMIT, Database::connect(&admin_url)).await {
                    // FORCE: the test's server may still hold pooled connections.
                    admin
                        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await
                        .ok();
                    admin.close().await.ok();
                }
            }
        }
    }
}

/// Runs `test` against SQLite, then against PostgreSQL if `DATABASE_URL` is set.
async fn on_each_database<F, Fut>(test: F)
where
    F: Fn(Server) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut databases = vec![TestDb::sqlite()];
    if let Some(url) = std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty()) {
        databases.push(TestDb::postgres(&url).await);
    }
    for db in databases {
        let server = Server::start(db.url()).await;
        test(server).await;
        db.remove().await;
    }
}

// ---- the server and its clients ---------------------------------------------

/// The example's router on a fresh loopback port, with a fresh notifier.
struct Server {
    addr: SocketAddr,
    http: reqwest::Client,
    #[allow(dead_code)]
    notifier: Notifier,
}

impl Server {
    async fn start(database_url: &str) -> Server {
        let db = timeout(SETUP_LIMIT, app::connect(Some(database_url)))
            .await
            .expect("connecting timed out")
            .expect("cannot connect or create the schema");
        let notifier = Notifier::new();
        let router = app::router(db, notifier.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        let http = reqwest::Client::builder().no_proxy().timeout(LIMIT).build().unwrap();
        Server { addr, http, notifier }
    }

    /// Sends a request with an optional raw JSON body and session header;
    /// returns the status and the parsed body (`Null` when empty).
    async fn raw(
        &self,
        method: Method,
        path: &str,
        body: Option<&str>,
        session: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut request = self.http.request(method, format!("http://{}{path}", self.addr));
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body.to_owned());
        }
        if let Some(session) = session {
            request = request.header("tidings-session", session);
        }
        let response = request.send().await.expect("request failed");
        let status = response.status();
        let text = response.text().await.expect("reading the body");
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{status}: body is not JSON ({e}): {text:?}"))
        };
        (status, value)
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let body = body.map(|b| b.to_string());
        self.raw(method, path, body.as_deref(), None).await
    }

    /// A request that must succeed with `expected`; returns the body.
    async fn ok(&self, method: Method, path: &str, body: Option<Value>, expected: StatusCode) -> Value {
        let (status, value) = self.call(method.clone(), path, body).await;
        assert_eq!(status, expected, "{method} {path}: {value}");
        value
    }

    async fn create_forum(&self, title: &str) -> i64 {
        let forum =
            self.ok(Method::POST, "/api/forums", Some(json!({ "title": title })), StatusCode::CREATED).await;
        assert_eq!(forum["title"], title);
        forum["id"].as_i64().unwrap()
    }

    async fn create_post(&self, forum: i64, body: &str) -> i64 {
        let post = self
            .ok(
                Method::POST,
                &format!("/api/forums/{forum}/posts"),
                Some(json!({ "body": body })),
                StatusCode::CREATED,
            )
            .await;
        assert_eq!(post["forum_id"], forum);
        assert_eq!(post["body"], body);
        post["id"].as_i64().unwrap()
    }

    async fn client(&self) -> Client {
        Client::connect(self.addr).await
    }
}

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A WebSocket client that has read its hello frame (so it is registered).
struct Client {
    ws: Socket,
    /// The public id, shown as `origin`.
    session: String,
    /// The secret for the `tidings-session` header.
    token: String,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Client {
        // No Origin header: a non-browser client, which the default allows.
        let (ws, _) = timeout(LIMIT, tokio_tungstenite::connect_async(format!("ws://{addr}/ws")))
            .await
            .expect("connecting timed out")
            .expect("WebSocket handshake failed");
        let mut client = Client { ws, session: String::new(), token: String::new() };
        let hello = client.next_frame().await;
        assert_eq!(hello["type"], "hello", "first frame must be hello: {hello}");
        assert!(hello["cursor"].is_string(), "{hello}");
        client.session = hello["session"].as_str().unwrap().to_owned();
        client.token = hello["token"].as_str().unwrap().to_owned();
        client
    }

    /// The next text frame, parsed; pings and pongs are skipped.
    async fn next_frame(&mut self) -> Value {
        loop {
            let message = timeout(LIMIT, self.ws.next())
                .await
                .expect("no frame within the limit")
                .expect("the stream ended")
                .expect("socket error");
            match message {
                Message::Text(text) => return serde_json::from_str(&text).unwrap(),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// The next frame, which must be a notification about `collection`/`op`
    /// with exactly `data`; returns it.
    async fn expect(&mut self, collection: &str, op: &str, data: Value) -> Value {
        let frame = self.next_frame().await;
        assert!(frame.get("type").is_none(), "expected a notification, got {frame}");
        assert_eq!(frame["collection"], collection, "{frame}");
        assert_eq!(frame["op"], op, "{frame}");
        assert_eq!(frame["data"], data, "{frame}");
        assert!(
            frame["cursor"].as_str().is_some_and(|c| !c.is_empty()),
            "notification without a cursor: {frame}"
        );
        frame
    }
}

/// Asserts a 4xx answer with the API's JSON error body and the given code.
fn assert_error(status: StatusCode, body: &Value, expected: StatusCode, code: &str) {
    assert_eq!(status, expected, "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()), "error body without a message: {body}");
}

// ---- tests ------------------------------------------------------------------------

#[tokio::test]
async fn forum_writes_notify_the_forums_collection() {
    on_each_database(|server| async move {
        let mut client = server.client().await;

        let id = server.create_forum("Rust").await;
        client.expect("forums", "insert", json!({ "id": id })).await;

        let renamed = server
            .ok(
                Method::PATCH,
                &format!("/api/forums/{id}"),
                Some(json!({ "title": "Rust lang" })),
                StatusCode::OK,
            )
            .await;
        assert_eq!(renamed["title"], "Rust lang");
        client.expect("forums", "update", json!({ "id": id })).await;

        let list = server.ok(Method::GET, "/api/forums", None, StatusCode::OK).await;
        assert_eq!(list.as_array().unwrap().len(), 1);
        assert_eq!(list[0]["title"], "Rust lang");

        server.ok(Method::DELETE, &format!("/api/forums/{id}"), None, StatusCode::NO_CONTENT).await;
        client.expect("forums", "delete", json!({ "id": id })).await;

        let (status, body) = server.call(Method::GET, &format!("/api/forums/{id}"), None).await;
        assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    })
    .await;
}

#[tokio::test]
async fn post_writes_notify_the_posts_collection() {
    on_each_database(|server| async move {
        let mut client = server.client().await;
        let forum = server.create_forum("General").await;
        client.expect("forums", "insert", json!({ "id": forum })).await;

        let id = server.create_post(forum, "first!").await;
        client.expect("posts", "insert", json!({ "id": id, "forum_id": forum })).await;

        let edited = server
            .ok(Method::PATCH, &format!("/api/posts/{id}"), Some(json!({ "body": "second" })), StatusCode::OK)
            .await;
        assert_eq!(edited["body"], "second");
        client.expect("posts", "update", json!({ "id": id, "forum_id": forum })).await;

        let posts = server.ok(Method::GET, &format!("/api/forums/{forum}/posts"), None, StatusCode::OK).await;
        assert_eq!(posts, json!([edited]));

        server.ok(Method::DELETE, &format!("/api/posts/{id}"), None, StatusCode::NO_CONTENT).await;
        client.expect("posts", "delete", json!({ "id": id, "forum_id": forum })).await;

        let posts = server.ok(Method::GET, &format!("/api/forums/{forum}/posts"), None, StatusCode::OK).await;
        assert_eq!(posts, json!([]));
    })
    .await;
}

#[tokio::test]
async fn failed_writes_answer_json_errors_and_notify_nothing() {
    on_each_database(|server| async move {
        let mut client = server.client().await;
        let forum = server.create_forum("Existing").await;
        client.expect("forums", "insert", json!({ "id": forum })).await;
        let post = server.create_post(forum, "a post").await;
        client.expect("posts", "insert", json!({ "id": post, "forum_id": forum })).await;

        let forum_path = format!("/api/forums/{forum}");
        let posts_path = format!("/api/forums/{forum}/posts");
        let post_path = format!("/api/posts/{post}");
        let failures: Vec<(Method, String, Option<&str>, StatusCode, &str)> = vec![
            (
                Method::POST,
                "/api/forums".into(),
                Some("{\"title\":"),
                StatusCode::BAD_REQUEST,
                "invalid_json",
            ),
            (
                Method::POST,
                "/api/forums".into(),
                Some("{}"),
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_field",
            ),
            (
                Method::POST,
                "/api/forums".into(),
                Some("{\"title\":\"  \"}"),
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_field",
            ),
            (
                Method::POST,
                "/api/forums".into(),
                Some("{\"title\":7}"),
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_field",
            ),
            (
                Method::POST,
                "/api/forums".into(),
                None,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
            ),
            (Method::PATCH, forum_path.clone(), Some("not json"), StatusCode::BAD_REQUEST, "invalid_json"),
            (
                Method::PATCH,
                forum_path.clone(),
                Some("{\"title\":\"\"}"),
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_field",
            ),
            (
                Method::PATCH,
                "/api/forums/999999".into(),
                Some("{\"title\":\"x\"}"),
                StatusCode::NOT_FOUND,
                "not_found",
            ),
            (
                Method::PATCH,
                "/api/forums/abc".into(),
                Some("{\"title\":\"x\"}"),
                StatusCode::BAD_REQUEST,
                "invalid_id",
            ),
            (Method::DELETE, "/api/forums/999999".into(), None, StatusCode::NOT_FOUND, "not_found"),
            (
                Method::POST,
                posts_path.clone(),
                Some("{\"text\":\"x\"}"),
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_field",
            ),
            (
                Method::POST,
                posts_path.clone(),
                Some("{\"body\":\"\\n\"}"),
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_field",
            ),
            (
                Method::POST,
                "/api/forums/999999/posts".into(),
                Some("{\"body\":\"x\"}"),
                StatusCode::NOT_FOUND,
                "not_found",
            ),
            (
                Method::PATCH,
                post_path.clone(),
                Some("{body: \"x\"}"),
                StatusCode::BAD_REQUEST,
                "invalid_json",
            ),
            (Method::PATCH, post_path.clone(), Some("{}"), StatusCode::UNPROCESSABLE_ENTITY, "invalid_field"),
            (
                Method::PATCH,
                "/api/posts/999999".into(),
                Some("{\"body\":\"x\"}"),
                StatusCode::NOT_FOUND,
                "not_found",
            ),
            (Method::DELETE, "/api/posts/999999".into(), None, StatusCode::NOT_FOUND, "not_found"),
            (
                Method::PUT,
                forum_path.clone(),
                Some("{}"),
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
            ),
            (Method::POST, "/api/nothing".into(), Some("{}"), StatusCode::NOT_FOUND, "not_found"),
        ];

        for (i, (method, path, body, expected, code)) in failures.into_iter().enumerate() {
            let (status, error) = server.raw(method.clone(), &path, body, None).await;
            assert!(status.is_client_error(), "{method} {path}");
            assert_error(status, &error, expected, code);
            // Nothing was sent: the next frame is the next successful write's.
            let marker = server.create_forum(&format!("marker {i}")).await;
            client.expect("forums", "insert", json!({ "id": marker })).await;
        }

        // The failed writes changed nothing.
        let existing = server.ok(Method::GET, &forum_path, None, StatusCode::OK).await;
        assert_eq!(existing["title"], "Existing");
        let posts = server.ok(Method::GET, &posts_path, None, StatusCode::OK).await;
        assert_eq!(posts.as_array().unwrap().len(), 1);
        assert_eq!(posts[0]["body"], "a post");
    })
    .await;
}

#[tokio::test]
async fn a_post_for_a_missing_forum_rolls_back_and_sends_nothing() {
    on_each_database(|server| async move {
        let mut client = server.client().await;
        let (status, body) =
            server.call(Method::POST, "/api/forums/424242/posts", Some(json!({ "body": "lost" }))).await;
        assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");

        let forum = server.create_forum("after").await;
        client.expect("forums", "insert", json!({ "id": forum })).await;
        let posts = server.ok(Method::GET, &format!("/api/forums/{forum}/posts"), None, StatusCode::OK).await;
        assert_eq!(posts, json!([]));
    })
    .await;
}

#[tokio::test]
async fn the_writing_tab_skips_its_own_notifications() {
    on_each_database(|server| async move {
        let mut writer = server.client().await;
        let mut other = server.client().await;

        let body = json!({ "title": "from the writer" }).to_string();
        let (status, forum) = server.raw(Method::POST, "/api/forums", Some(&body), Some(&writer.token)).await;
        assert_eq!(status, StatusCode::CREATED, "{forum}");
        let id = forum["id"].as_i64().unwrap();

        let seen = other.expect("forums", "insert", json!({ "id": id })).await;
        assert_eq!(seen["origin"], writer.session.as_str(), "{seen}");

        // A write without the header reaches both: the writer's next frame is
        // this one, so it skipped its own.
        let second = server.create_forum("from elsewhere").await;
        let frame = writer.expect("forums", "insert", json!({ "id": second })).await;
        assert!(frame.get("origin").is_none(), "{frame}");
        other.expect("forums", "insert", json!({ "id": second })).await;

        // A header that is not a token is refused before the handler runs,
        // the public id that everyone sees as `origin` included: it proves
        // nothing, and nothing is written.
        for header in ["not-a-session", writer.session.as_str()] {
            let (status, error) = server.raw(Method::POST, "/api/forums", Some(&body), Some(header)).await;
            assert_error(status, &error, StatusCode::BAD_REQUEST, "bad_session_header");
            assert!(error["error"].as_str().unwrap().contains("token"), "{error}");
        }

        let third = server.create_forum("third").await;
        other.expect("forums", "insert", json!({ "id": third })).await;
    })
    .await;
}

#[tokio::test]
async fn deleting_a_forum_deletes_its_posts_and_notifies_each_after_commit() {
    on_each_database(|server| async move {
        let mut client = server.client().await;
        let forum = server.create_forum("doomed").await;
        client.expect("forums", "insert", json!({ "id": forum })).await;
        let keep = server.create_forum("kept").await;
        client.expect("forums", "insert", json!({ "id": keep })).await;
        let kept_post = server.create_post(keep, "stays").await;
        client.expect("posts", "insert", json!({ "id": kept_post, "forum_id": keep })).await;

        let mut posts = Vec::new();
        for body in ["one", "two", "three"] {
            let id = server.create_post(forum, body).await;
            client.expect("posts", "insert", json!({ "id": id, "forum_id": forum })).await;
            posts.push(id);
        }

        server.ok(Method::DELETE, &format!("/api/forums/{forum}"), None, StatusCode::NO_CONTENT).await;
        for id in posts {
            client.expect("posts", "delete", json!({ "id": id, "forum_id": forum })).await;
        }
        client.expect("forums", "delete", json!({ "id": forum })).await;

        // Committed: the forum and its posts are gone, the other forum's stay.
        let (status, body) = server.call(Method::GET, &format!("/api/forums/{forum}/posts"), None).await;
        assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
        let remaining =
            server.ok(Method::GET, &format!("/api/forums/{keep}/posts"), None, StatusCode::OK).await;
        assert_eq!(remaining.as_array().unwrap().len(), 1);
        assert_eq!(remaining[0]["id"], kept_post);

        // Nothing else was queued: the next frame is the next write's.
        let next = server.create_forum("next").await;
        client.expect("forums", "insert", json!({ "id": next })).await;
    })
    .await;
}

#[tokio::test]
async fn the_page_renders_forums_and_the_selected_forums_posts() {
    on_each_database(|server| async move {
        let forum = server.create_forum("Tom & <Jerry>").await;
        let post = server.create_post(forum, "cheese").await;
        let page = |query: String| {
            let http = server.http.clone();
            let url = format!("http://{}/{query}", server.addr);
            async move {
                let response = http.get(url).send().await.unwrap();
                assert_eq!(response.status(), StatusCode::OK);
                response.text().await.unwrap()
            }
        };

        let home = page(String::new()).await;
        assert!(home.contains(r#"<ul id="forums">"#), "{home}");
        assert!(home.contains(&format!(r#"data-id="{forum}""#)));
        assert!(home.contains("Tom &#38; &#60;Jerry&#62;"), "titles are escaped: {home}");
        assert!(home.contains(r#"id="status""#));
        assert!(!home.contains("cheese"));

        let selected = page(format!("?forum={forum}")).await;
        assert!(selected.contains(r#"<ul id="posts">"#));
        assert!(selected.contains(&format!(r#"data-id="{post}""#)));
        assert!(selected.contains("cheese"));

        // An unknown or malformed forum selects nothing instead of failing.
        for query in ["?forum=999999", "?forum=abc"] {
            let page = page(query.to_owned()).await;
            assert!(!page.contains("cheese"), "{query}");
        }
    })
    .await;
}

#[tokio::test]
async fn the_pages_cursor_replays_what_happened_after_rendering() {
    on_each_database(|server| async move {
        let html =
            server.http.get(format!("http://{}/", server.addr)).send().await.unwrap().text().await.unwrap();
        let cursor = html
            .split_once(r#"data-cursor=""#)
            .and_then(|(_, rest)| rest.split_once('"'))
            .map(|(cursor, _)| cursor.to_owned())
            .expect("the page carries its cursor");

        // A write between rendering and connecting is not lost: the page's
        // script connects with ?cursor=<the page's cursor>.
        let forum = server.create_forum("while loading").await;
        let url = format!("ws://{}/ws?cursor={cursor}", server.addr);
        let (ws, _) = timeout(LIMIT, tokio_tungstenite::connect_async(url))
            .await
            .expect("connecting timed out")
            .expect("WebSocket handshake failed");
        let mut client = Client { ws, session: String::new(), token: String::new() };
        let hello = client.next_frame().await;
        assert_eq!(hello["type"], "hello", "{hello}");
        client.expect("forums", "insert", json!({ "id": forum })).await;
    })
    .await;
}

#[tokio::test]
async fn text_with_nul_characters_is_refused_the_same_on_every_database() {
    on_each_database(|server| async move {
        let mut client = server.client().await;
        let forum = server.create_forum("Clean").await;
        client.expect("forums", "insert", json!({ "id": forum })).await;
        let post = server.create_post(forum, "clean post").await;
        client.expect("posts", "insert", json!({ "id": post, "forum_id": forum })).await;

        // PostgreSQL cannot store U+0000 in text; SQLite could, but the API
        // must not depend on the database behind it.
        let writes = [
            (Method::POST, "/api/forums".to_owned(), json!({ "title": "a\u{0}b" })),
            (Method::PATCH, format!("/api/forums/{forum}"), json!({ "title": "\u{0}" })),
            (Method::POST, format!("/api/forums/{forum}/posts"), json!({ "body": "x\u{0}" })),
            (Method::PATCH, format!("/api/posts/{post}"), json!({ "body": "line\n\u{0}line" })),
        ];
        for (i, (method, path, body)) in writes.into_iter().enumerate() {
            let (status, error) = server.call(method.clone(), &path, Some(body)).await;
            assert_error(status, &error, StatusCode::BAD_REQUEST, "invalid_field");
            assert!(error["error"].as_str().unwrap().contains("NUL"), "{method} {path}: {error}");
            // Nothing was sent: the next frame is the next successful write's.
            let marker = server.create_forum(&format!("marker {i}")).await;
            client.expect("forums", "insert", json!({ "id": marker })).await;
        }
        let kept = server.ok(Method::GET, &format!("/api/forums/{forum}"), None, StatusCode::OK).await;
        assert_eq!(kept["title"], "Clean");
        let posts = server.ok(Method::GET, &format!("/api/forums/{forum}/posts"), None, StatusCode::OK).await;
        assert_eq!(posts.as_array().unwrap().len(), 1);
        assert_eq!(posts[0]["body"], "clean post");
    })
    .await;
}

/// The example's identity (issue 12): the `user` cookie; the forum titled
/// "Staff" is ana's only, through the API and per filter on the WebSocket;
/// logging out closes the user's sessions with 4401.
#[tokio::test]
async fn the_private_forum_is_seen_by_its_members_only_and_logout_revokes() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    let db = TestDb::sqlite();
    let conn = timeout(SETUP_LIMIT, app::connect(Some(db.url()))).await.unwrap().unwrap();
    let notifier = Notifier::new();
    let router = app::router(conn, notifier.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let http = reqwest::Client::builder().no_proxy().timeout(LIMIT).build().unwrap();
    let get = |path: String, user: &'static str| {
        http.get(format!("http://{addr}{path}")).header("cookie", format!("user={user}")).send()
    };
    let create = |title: &'static str| {
        http.post(format!("http://{addr}/api/forums")).json(&json!({ "title": title })).send()
    };
    let staff = create("Staff").await.unwrap().json::<Value>().await.unwrap()["id"].as_i64().unwrap();
    create("Open").await.unwrap();

    let titles = |forums: Value| -> Vec<String> {
        forums.as_array().unwrap().iter().map(|f| f["title"].as_str().unwrap().to_owned()).collect()
    };
    assert_eq!(
        titles(get("/api/forums".into(), "ana").await.unwrap().json().await.unwrap()),
        ["Staff", "Open"]
    );
    assert_eq!(titles(get("/api/forums".into(), "ben").await.unwrap().json().await.unwrap()), ["Open"]);
    assert_eq!(
        get(format!("/api/forums/{staff}/posts"), "ben").await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(get(format!("/api/forums/{staff}/posts"), "ana").await.unwrap().status(), StatusCode::OK);

    let connect = |user: &'static str| {
        let filter = json!({ "posts": { "forum_id": staff } }).to_string();
        let query: String = filter
            .bytes()
            .map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") })
            .collect();
        let mut request =
            format!("ws://{addr}/ws?collections=posts&where={query}").into_client_request().unwrap();
        request.headers_mut().insert("cookie", format!("user={user}").parse().unwrap());
        tokio_tungstenite::connect_async(request)
    };
    match timeout(LIMIT, connect("ben")).await.unwrap() {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status(), 403),
        other => panic!("ben must be refused the private forum's posts: {:?}", other.map(|_| ())),
    }
    let (mut ana, _) = timeout(LIMIT, connect("ana")).await.unwrap().unwrap();
    let hello = timeout(LIMIT, ana.next()).await.unwrap().unwrap().unwrap();
    assert!(hello.to_text().unwrap().contains(r#""type":"hello""#));

    let logout = http.post(format!("http://{addr}/api/logout")).json(&json!({ "user": "ana" })).send();
    assert_eq!(logout.await.unwrap().status(), StatusCode::NO_CONTENT);
    let mut closed = None;
    for _ in 0..100 {
        match timeout(LIMIT, ana.next()).await.unwrap() {
            Some(Ok(Message::Close(frame))) => {
                closed = frame;
                break;
            }
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
    let frame = closed.expect("a close frame with a code");
    assert_eq!((u16::from(frame.code), frame.reason.as_str()), (4401, "reauthenticate"));
    db.remove().await;
}

#[tokio::test]
async fn outsiders_cannot_change_the_private_forum_by_id() {
    let db = TestDb::sqlite();
    let server = Server::start(db.url()).await;
    let http = &server.http;
    let url = |path: String| format!("http://{}{path}", server.addr);
    let send = |method: Method, path: String, user: Option<&str>, body: Option<Value>| {
        let mut request = http.request(method, url(path));
        if let Some(user) = user {
            request = request.header("cookie", format!("user={user}"));
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send()
    };
    let staff = server.create_forum(app::api::PRIVATE_FORUM).await;
    let created = send(
        Method::POST,
        format!("/api/forums/{staff}/posts"),
        Some("ana"),
        Some(json!({"body": "secret"})),
    );
    let post = created.await.unwrap().json::<Value>().await.unwrap()["id"].as_i64().unwrap();

    // Neither a non-member nor an anonymous visitor: 404, as for the reads.
    for user in [Some("ben"), None] {
        let attempts = [
            (Method::PATCH, format!("/api/posts/{post}"), Some(json!({"body": "defaced"}))),
            (Method::DELETE, format!("/api/posts/{post}"), None),
            (Method::PATCH, format!("/api/forums/{staff}"), Some(json!({"title": "Renamed"}))),
            (Method::DELETE, format!("/api/forums/{staff}"), None),
        ];
        for (method, path, body) in attempts {
            let response = send(method.clone(), path.clone(), user, body).await.unwrap();
            let status = response.status();
            let error: Value = response.json().await.unwrap();
            assert_error(status, &error, StatusCode::NOT_FOUND, "not_found");
            assert!(!error.to_string().contains("secret"), "{method} {path} as {user:?}: {error}");
        }
    }
    // Nothing changed; a member still can.
    let posts: Value = send(Method::GET, format!("/api/forums/{staff}/posts"), Some("ana"), None)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(posts[0]["body"], "secret", "{posts}");
    let edit =
        send(Method::PATCH, format!("/api/posts/{post}"), Some("ana"), Some(json!({"body": "edited"})));
    assert_eq!(edit.await.unwrap().status(), StatusCode::OK);
    let rename = send(
        Method::PATCH,
        format!("/api/forums/{staff}"),
        Some("ana"),
        Some(json!({"title": app::api::PRIVATE_FORUM})),
    );
    assert_eq!(rename.await.unwrap().status(), StatusCode::OK);
    let delete = send(Method::DELETE, format!("/api/forums/{staff}"), Some("ana"), None);
    assert_eq!(delete.await.unwrap().status(), StatusCode::NO_CONTENT);
    db.remove().await;
}
