//! Who a session is: decided by the application's authorize hook.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use crate::filter::Where;

/// Who is behind a session, as far as delivery is concerned.
///
/// Returned by the hook given to [`Settings::authorize`](crate::axum::Settings::authorize).
///
/// ```
/// use tidings::Identity;
///
/// let admin = Identity::user("7").audience("admin").audience("user:7");
/// assert!(admin.belongs_to("admin"));
/// assert!(admin.may_read("anything"));
///
/// let guest = Identity::anonymous().collections(["forums"]);
/// assert!(guest.may_read("forums"));
/// assert!(!guest.may_read("audit"));
/// ```
#[derive(Clone, Default)]
pub struct Identity {
    user: Option<Arc<str>>,
    audiences: Vec<Arc<str>>,
    collections: Option<HashSet<Box<str>>>,
    expires_at: Option<Instant>,
    permit: Option<Permit>,
}

/// The application's decision on a collection and its filter.
type Permit = Arc<dyn Fn(&str, Option<&Where<'_>>) -> bool + Send + Sync>;

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("user", &self.user)
            .field("audiences", &self.audiences)
            .field("collections", &self.collections)
            .field("expires_at", &self.expires_at)
            .field("permit", &self.permit.is_some())
            .finish()
    }
}

impl Identity {
    /// Nobody in particular: no audience, every collection.
    pub fn anonymous() -> Self {
        Identity::default()
    }

    /// A known user (the id is for the application's logs and for
    /// [`Identity::user_id`]; it does not imply an audience).
    pub fn user(id: impl Into<Arc<str>>) -> Self {
        Identity { user: Some(id.into()), ..Identity::default() }
    }

    /// Adds an audience the session belongs to (e.g. `user:42`, `admin`):
    /// notifications addressed with [`Notification::to`](crate::Notification::to)
    /// reach only sessions that belong to their audience.
    pub fn audience(mut self, audience: impl Into<Arc<str>>) -> Self {
        self.audiences.push(audience.into());
        self
    }

    /// Restricts the collections the session may subscribe to (default: all).
    pub fn collections<I, S>(mut self, collections: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<Box<str>>,
    {
        self.collections = Some(collections.into_iter().map(Into::into).collect());
        self
    }

    /// Decides, at connect and at every `subscribe`, whether the session may
    /// subscribe to a collection with a filter: `permit(collection, filter)`,
    /// `filter` being `None` for the whole collection (and for `*`, which
    /// stands for every collection, unfiltered). A refusal is a
    /// `403 forbidden` at connect and an `error` frame with code `forbidden`
    /// after it. Checked after [`collections`](Self::collections).
    ///
    /// A filter the hook permitted is enforced on every notification: one
    /// whose `data` is not a JSON object, or cannot be read, is held back
    /// from a filtered subscription; only a notification without data (a
    /// condensed batch's, which names no row) passes every filter (see
    /// [`Where`]).
    ///
    /// ```
    /// use tidings::Identity;
    ///
    /// // Posts of forums 1 and 3 only; everything else of other collections.
    /// let member_of = [1, 3];
    /// let id = Identity::user("7").permit(move |collection, filter| match collection {
    ///     "posts" => filter.and_then(|f| f.values("forum_id")).is_some_and(|forums| {
    ///         forums.iter().all(|f| f.as_i64().is_some_and(|f| member_of.contains(&f)))
    ///     }),
    ///     "*" => false, // would include every post
    ///     _ => true,
    /// });
    /// assert!(!id.may_subscribe("posts", None));
    /// assert!(id.may_subscribe("forums", None));
    /// ```
    pub fn permit<F>(mut self, permit: F) -> Self
    where
        F: Fn(&str, Option<&Where<'_>>) -> bool + Send + Sync + 'static,
    {
        self.permit = Some(Arc::new(permit));
        self
    }

    /// The session ends at `at`: it is closed with code 4401
    /// (`reauthenticate`), and the client authorizes again to go on (see
    /// [`Notifier::reauthenticate_user`](crate::Notifier::reauthenticate_user)).
    /// An identity already expired when it connects is refused with 401.
    pub fn expires_at(mut self, at: Instant) -> Self {
        self.expires_at = Some(at);
        self
    }

    /// When the session ends, if the hook set an expiry.
    pub fn expiry(&self) -> Option<Instant> {
        self.expires_at
    }

    /// Whether the session may subscribe to `collection` with this filter
    /// (`None`: unfiltered): [`may_read`](Self::may_read) and the
    /// [`permit`](Self::permit) hook.
    pub fn may_subscribe(&self, collection: &str, filter: Option<&Where<'_>>) -> bool {
        (collection == "*" || self.may_read(collection))
            && self.permit.as_ref().is_none_or(|permit| permit(collection, filter))
    }

    /// The user id, if the hook set one.
    pub fn user_id(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// The audiences the session belongs to.
    pub(crate) fn audiences(&self) -> &[Arc<str>] {
        &self.audiences
    }

    /// Whether the session belongs to `audience`.
    pub fn belongs_to(&self, audience: &str) -> bool {
        self.audiences.iter().any(|a| &**a == audience)
    }

    /// Whether the session may receive notifications about `collection`.
    pub fn may_read(&self, collection: &str) -> bool {
        self.collections.as_ref().is_none_or(|c| c.contains(collection))
    }
}
