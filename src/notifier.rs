//! The handle applications hold: cheap to clone, called after every write.

use std::sync::Arc;

use tokio::sync::watch;

use crate::backplane::{Publication, PublishError};
use crate::hub::{Hub, Reauthenticate, Who};
use crate::{Batch, Config, Cursor, Notification, Notify, SessionToken};

/// Tells every connected client what changed.
///
/// Clone it into handlers and repositories (it is an `Arc`). Each call
/// serializes the notification once, appends it to the shared history (with
/// a Redis or PostgreSQL backplane: encodes it and queues it for the
/// publishing task) and returns; waking the sessions happens on a background
/// task, so the cost to the caller does not depend on how many clients are
/// connected.
///
/// ```
/// use tidings::{Notifier, Notify, Op};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let notifier = Notifier::new();
///
/// // After a write:
/// notifier.notify("forums", Op::Insert);
/// notifier.notify_with("forums", Op::Update, &serde_json::json!({ "id": 7 })).unwrap();
///
/// // From a spawned task, exactly the same:
/// let n = notifier.clone();
/// tokio::spawn(async move { n.notify("posts", Op::Delete) }).await.unwrap();
///
/// assert_eq!(notifier.cursor().seq(), 3);
/// # }
/// ```
///
/// Must be created inside a tokio runtime (it spawns its fan-out task), and
/// after the application's [`metrics`](crate::metrics) recorder, if any, is
/// installed.
#[derive(Clone)]
pub struct Notifier {
    hub: Arc<Hub>,
}

impl Notifier {
    /// A notifier with the default [`Config`].
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        Notifier::with_config(Config::default())
    }

    /// A notifier with the given configuration.
    pub fn with_config(config: Config) -> Self {
        Notifier { hub: Hub::start(config) }
    }

    /// Like [`push`](Notify::push), but waits until the backplane has taken
    /// the notification and reports whether it did. With the in-process
    /// backplane it cannot fail.
    ///
    /// When it fails, the application's write has already happened: decide
    /// whether to retry, or to answer the request anyway (other clients
    /// will catch up at their next `resync` or reload). Instances that lost
    /// their backplane connection tell their clients to resync when it
    /// returns.
    pub async fn publish(&self, notification: Notification) -> Result<(), PublishError> {
        self.hub.publish_and_wait(notification).await
    }

    /// The notifier's state, for a health endpoint.
    pub fn health(&self) -> Health {
        let degraded = self.hub.degraded();
        Health {
            backplane: self.hub.config.backplane.name(),
            status: if degraded.is_some() { HealthStatus::Degraded } else { HealthStatus::Ok },
            reason: degraded,
            sessions: self.session_count(),
            cursor: self.cursor().to_string(),
        }
    }

    /// Waits until the backplane has loaded its history: at once for the
    /// in-process engine; for the [`Outbox`](crate::backplane::Outbox) and
    /// Redis, once the log's tail is read, so that cursors from before a
    /// restart resume. Sessions that open earlier wait (up to 2 s) by
    /// themselves; this is for start-up code and tests that want to know.
    /// It waits for as long as the backplane is unreachable: bound it with
    /// a timeout.
    pub async fn ready(&self) {
        self.hub.wait_loaded().await;
    }

    /// A batch whose notifications go out together when it is committed, and
    /// never if it is dropped first. See [`Batch`].
    pub fn batch(&self) -> Batch {
        Batch::new(self.hub.clone(), None)
    }

    /// A batch whose notifications are marked as caused by the session whose
    /// token this is (see [`Notification::with_origin`]), so that session
    /// skips them: what the request layer ([`axum::layer`](crate::axum::layer))
    /// gives each request from its `tidings-session` header, for code that
    /// handles requests some other way.
    pub fn batch_with_origin(&self, session: Option<SessionToken>) -> Batch {
        Batch::new(self.hub.clone(), session)
    }

    /// Closes every session whose identity belongs to `audience` with code
    /// 4401 ([`REAUTHENTICATE`](crate::axum::REAUTHENTICATE)), for example
    /// after a permission change: each client authorizes again (the
    /// authorize hook decides anew) and resumes from its cursor.
    ///
    /// Sessions of this instance are told at once; the order also goes
    /// through the backplane, so every instance sharing it tells its own
    /// sessions as the order reaches it (with the outbox, as durably and in
    /// the same order as the notifications around it). Returns how many
    /// sessions of this instance were told at once.
    ///
    /// The order is published like a notification: if the backplane loses
    /// it (Redis or PostgreSQL NOTIFY unreachable at that moment), other
    /// instances never hear of it, and their sessions keep the identity
    /// they authorized with. Give identities an expiry
    /// ([`Identity::expires_at`](crate::Identity::expires_at)) as the
    /// backstop. (With the outbox, a lost order leaves a gap marker, which
    /// makes every session resync, not re-authenticate.)
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let notifier = tidings::Notifier::new();
    /// // User 7 left forum 3: sessions of its members re-check.
    /// assert_eq!(notifier.reauthenticate_audience("forum:3"), 0);
    /// # }
    /// ```
    pub fn reauthenticate_audience(&self, audience: &str) -> usize {
        self.reauthenticate(Who::Audience(audience.to_owned()))
    }

    /// Closes every session whose identity is the user `user_id`
    /// ([`Identity::user`](crate::Identity::user)) with code 4401, for
    /// example at logout or when the user's permissions change: on this
    /// instance at once, and on every instance sharing the backplane as the
    /// order reaches it (as for
    /// [`reauthenticate_audience`](Self::reauthenticate_audience)). Returns
    /// how many sessions of this instance were told at once.
    pub fn reauthenticate_user(&self, user_id: &str) -> usize {
        self.reauthenticate(Who::User(user_id.to_owned()))
    }

    fn reauthenticate(&self, who: Who) -> usize {
        let order = Reauthenticate { who, from: self.hub.id };
        let told = self.hub.reauthenticate(|identity| order.concerns(identity));
        self.hub.publish(Publication::one(order.notification()));
        told
    }

    /// The cursor of the last notification sent.
    pub fn cursor(&self) -> Cursor {
        self.hub.history.head()
    }

    /// How many sessions are connected.
    pub fn session_count(&self) -> usize {
        self.hub.session_count()
    }

    /// A receiver of the session count, for metrics and for waiting until
    /// clients have connected or left.
    pub fn watch_sessions(&self) -> watch::Receiver<usize> {
        self.hub.watch_sessions()
    }

    /// The configuration this notifier runs with.
    pub fn config(&self) -> &Config {
        &self.hub.config
    }

    /// Closes every session with code 1001 (going away), refuses new ones
    /// with 503, and waits until all have closed or the shutdown timeout has
    /// passed.
    ///
    /// axum's graceful shutdown does not wait for upgraded connections, so
    /// call this from the shutdown future:
    ///
    /// ```no_run
    /// # async fn run(listener: tokio::net::TcpListener, app: axum::Router, notifier: tidings::Notifier) {
    /// axum::serve(listener, app)
    ///     .with_graceful_shutdown(async move {
    ///         tokio::signal::ctrl_c().await.ok();
    ///         notifier.shutdown().await;
    ///     })
    ///     .await
    ///     .unwrap();
    /// # }
    /// ```
    pub async fn shutdown(&self) {
        self.hub.shutdown().await;
    }

    pub(crate) fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }
}

impl Notify for Notifier {
    /// Publishes the notification now: serialized once, appended to the
    /// history (or handed to the backplane), and handed to the sessions that
    /// may receive it off the caller's path.
    fn push(&self, notification: Notification) {
        self.hub.publish(Publication::one(notification));
    }
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("cursor", &self.cursor().to_string())
            .field("sessions", &self.session_count())
            .finish()
    }
}

/// Whether the notifier reaches every session it should: the `status` of
/// [`Health`], `"ok"` or `"degraded"` in JSON.
///
/// ```
/// use tidings::{HealthStatus, Notifier};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let health = Notifier::new().health();
/// assert_eq!(health.status, HealthStatus::Ok);
/// assert_eq!(serde_json::to_value(&health).unwrap()["status"], "ok");
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum HealthStatus {
    /// Notifications reach this instance's sessions.
    Ok,
    /// The backplane is unreachable: notifications from other instances do
    /// not arrive (see [`Health::reason`]); sessions resync when it is back.
    Degraded,
}

impl HealthStatus {
    /// `"ok"` or `"degraded"`, as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Ok => "ok",
            HealthStatus::Degraded => "degraded",
        }
    }
}

impl std::fmt::Display for HealthStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What [`Notifier::health`] reports; serializes to JSON for a health route.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Health {
    /// The backplane's [`name`](crate::backplane::Backplane::name): `in-process`,
    /// `redis`, `postgres`, or an outside engine's.
    pub backplane: &'static str,
    /// `ok`, or `degraded` while the backplane is unreachable.
    pub status: HealthStatus,
    /// Why it is degraded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Connected sessions on this instance.
    pub sessions: usize,
    /// The cursor of the last notification delivered on this instance.
    pub cursor: String,
}
