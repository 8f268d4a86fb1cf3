//! The data: what changed, and who should hear about it.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use serde::Serialize;
use serde_json::value::RawValue;

use crate::{SessionId, SessionToken};

/// What happened to the rows of a collection.
///
/// Serialized in lowercase: `"insert"`, `"update"`, `"delete"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// Rows were created.
    Insert,
    /// Rows were changed.
    Update,
    /// Rows were removed.
    Delete,
}

impl Op {
    /// The wire name: `insert`, `update` or `delete`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Op::Insert => "insert",
            Op::Update => "update",
            Op::Delete => "delete",
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One change, ready to be broadcast.
///
/// On the wire it is a JSON object; `data` and `origin` are omitted when absent,
/// and the hub adds the `cursor` it assigns when the notification is delivered:
///
/// ```json
/// {"collection":"forums","op":"insert","data":{"id":7},"cursor":"5f1c2a9e-42"}
/// ```
///
/// Clients must ignore fields they do not know: later versions may add some.
///
/// ```
/// use tidings::{Notification, Op};
///
/// let n = Notification::new("forums", Op::Update)
///     .with_data(&serde_json::json!({ "id": 7 }))
///     .unwrap()
///     .to("user:42");
/// assert_eq!(n.collection(), "forums");
/// assert_eq!(n.data().unwrap().get(), r#"{"id":7}"#);
/// ```
#[derive(Debug, Clone)]
pub struct Notification {
    pub(crate) collection: Cow<'static, str>,
    pub(crate) op: Op,
    // Serialized once, on the caller's side; never re-serialized per client.
    pub(crate) data: Option<Box<RawValue>>,
    pub(crate) audience: Option<Arc<str>>,
    /// The public id of the session whose request caused this change: the
    /// server derived it from that session's secret token, so it names that
    /// session and no other.
    pub(crate) origin: Option<SessionId>,
    pub(crate) skip_origin: bool,
    /// An order from one hub to every hub (see `hub::control`), not a
    /// change: no client ever receives it. Only this crate sets it, so an
    /// application's notification can never pass for one.
    pub(crate) control: bool,
}

/// The prefix of the collections reserved for the hub's own orders.
pub(crate) const RESERVED_PREFIX: char = '$';

impl Notification {
    /// A notification about `collection` without data.
    ///
    /// Collections starting with `$` are reserved for the hub's own orders:
    /// a notification about one is refused when it is published
    /// ([`Notifier::publish`](crate::Notifier::publish) returns
    /// [`PublishError::Reserved`](crate::PublishError::Reserved); `notify`
    /// and batches drop it with a warning), and no client ever receives one.
    /// (Clients cannot subscribe to such names either.)
    pub fn new(collection: impl Into<Cow<'static, str>>, op: Op) -> Self {
        Notification {
            collection: collection.into(),
            op,
            data: None,
            audience: None,
            origin: None,
            skip_origin: true,
            control: false,
        }
    }

    /// Whether this is an application's notification about a reserved
    /// collection (`$…`): refused when published, never delivered.
    pub(crate) fn is_reserved(&self) -> bool {
        !self.control && self.collection.starts_with(RESERVED_PREFIX)
    }

    /// Attaches `data`, serialized now, once.
    ///
    /// Fails only when `data`'s `Serialize` implementation fails (for example a map
    /// with non-string keys).
    pub fn with_data<T: Serialize + ?Sized>(mut self, data: &T) -> Result<Self, serde_json::Error> {
        self.data = Some(serde_json::value::to_raw_value(data)?);
        Ok(self)
    }

    /// Attaches data that is already serialized JSON.
    pub fn with_raw_data(mut self, data: Box<RawValue>) -> Self {
        self.data = Some(data);
        self
    }

    /// Addresses the notification to one audience (for example `user:42` or
    /// `admin`): only sessions whose [`Identity`](crate::Identity) belongs to it
    /// receive it, live or in replay. Without an audience every session may.
    pub fn to(mut self, audience: impl Into<Arc<str>>) -> Self {
        self.audience = Some(audience.into());
        self
    }

    /// Records the session whose request caused this change, by its secret
    /// token (see [`OriginToken`](crate::axum::OriginToken)). That session does
    /// not receive the notification unless
    /// [`deliver_to_origin`](Self::deliver_to_origin) is called; every session
    /// sees the token's public [`SessionId`] in the `origin` field, never the
    /// token.
    pub fn with_origin(mut self, session: SessionToken) -> Self {
        self.origin = Some(session.id());
        self
    }

    /// Delivers the notification to its originating session too (the default
    /// is to skip it, since that tab already knows about its own write).
    pub fn deliver_to_origin(mut self) -> Self {
        self.skip_origin = false;
        self
    }

    /// The collection this notification is about.
    pub fn collection(&self) -> &str {
        &self.collection
    }

    /// What happened.
    pub fn op(&self) -> Op {
        self.op
    }

    /// The serialized data, if any.
    pub fn data(&self) -> Option<&RawValue> {
        self.data.as_deref()
    }

    /// The audience, if the notification is addressed to one.
    pub fn audience(&self) -> Option<&str> {
        self.audience.as_deref()
    }

    /// The public id of the originating session, if known.
    pub fn origin(&self) -> Option<SessionId> {
        self.origin
    }

    /// The token of the session that must not receive this notification, if
    /// any.
    pub(crate) fn origin_to_skip(&self) -> Option<SessionId> {
        self.origin.filter(|_| self.skip_origin)
    }
}
