//! The wire form of a notification between instances: what the Redis and
//! PostgreSQL engines put in the stream or the NOTIFY payload, and the
//! outbox in its rows. An engine written outside this crate must carry
//! notifications in it too: it is the only form that keeps the hub's orders
//! between instances marked as orders.
//!
//! ```
//! use tidings::backplane::envelope;
//! use tidings::{Notification, Op};
//!
//! let n = Notification::new("posts", Op::Delete).with_data(&serde_json::json!({ "id": 3 })).unwrap();
//! let back = envelope::decode(&envelope::encode(&n)).unwrap();
//! assert_eq!(back.collection(), "posts");
//! assert_eq!(back.data().unwrap().get(), r#"{"id":3}"#);
//! ```

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::{Notification, Op, SessionId};

/// A notification as it travels between instances: the fields, not the
/// frame, since each instance assigns the cursor it puts in the frame.
#[derive(Serialize, Deserialize)]
struct Envelope<'a> {
    /// Unique per process: PostgreSQL folds identical payloads sent in one
    /// transaction into one, which would swallow a repeated notification.
    #[serde(default)]
    n: u64,
    #[serde(borrow)]
    collection: Cow<'a, str>,
    op: Op,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    data: Option<&'a RawValue>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    audience: Option<Cow<'a, str>>,
    /// The public id of the originating session, which every instance
    /// skips. Never the secret token: the instance that took the request
    /// already checked it, and ids are unique among live sessions (they key
    /// each hub's registry), so the secret need not travel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    origin: Option<SessionId>,
    /// (Field names as in earlier versions, so instances of both understand
    /// each other during a rolling deploy.)
    #[serde(default, rename = "deliver_to_origin", skip_serializing_if = "std::ops::Not::not")]
    deliver_to_origin: bool,
    /// An order from one hub to every hub, not a change (out of band of the
    /// application's collections, whatever its collection says).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    control: bool,
}

/// The envelope of `n` as JSON: every field but the cursor, which each
/// instance assigns itself, plus a number unique to this process.
pub fn encode(n: &Notification) -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let envelope = Envelope {
        n: NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        collection: Cow::Borrowed(&n.collection),
        op: n.op,
        data: n.data.as_deref(),
        audience: n.audience.as_deref().map(Cow::Borrowed),
        origin: n.origin,
        deliver_to_origin: !n.skip_origin,
        control: n.control,
    };
    serde_json::to_string(&envelope).expect("an envelope always serializes")
}

/// The notification in an envelope made by [`encode`] (on any instance).
pub fn decode(payload: &str) -> Result<Notification, serde_json::Error> {
    let e: Envelope = serde_json::from_str(payload)?;
    let mut n = Notification::new(e.collection.into_owned(), e.op);
    if let Some(data) = e.data {
        n = n.with_raw_data(data.to_owned());
    }
    if let Some(audience) = e.audience {
        n = n.to(audience.as_ref());
    }
    n.origin = e.origin;
    if e.deliver_to_origin {
        n = n.deliver_to_origin();
    }
    n.control = e.control;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SessionToken;

    #[test]
    fn envelopes_round_trip() {
        let token = SessionToken::generate();
        let n = Notification::new("posts", Op::Delete)
            .with_data(&serde_json::json!({"id": 3}))
            .unwrap()
            .to("user:1")
            .with_origin(token)
            .deliver_to_origin();
        let back = decode(&encode(&n)).unwrap();
        assert_eq!(back.collection(), "posts");
        assert_eq!(back.op(), Op::Delete);
        assert_eq!(back.data().unwrap().get(), r#"{"id":3}"#);
        assert_eq!(back.audience(), Some("user:1"));
        assert_eq!(back.origin(), Some(token.id()));
        assert!(back.origin_to_skip().is_none());
        let skipping = decode(&encode(&Notification::new("posts", Op::Insert).with_origin(token))).unwrap();
        assert_eq!(
            skipping.origin_to_skip(),
            Some(token.id()),
            "the receiving instance skips the same session"
        );
        assert!(!encode(&skipping).contains(&token.to_string()), "the secret never travels");
        let plain = Notification::new("forums", Op::Insert);
        assert_ne!(encode(&plain), encode(&plain), "each envelope is unique");
        assert!(encode(&plain).ends_with(r#""collection":"forums","op":"insert"}"#));
        assert_eq!(decode(&encode(&plain)).unwrap().origin_to_skip(), None);
        assert_eq!(decode(r#"{"collection":"a","op":"update"}"#).unwrap().collection(), "a");
    }
}
