//! The control frames of the wire protocol (see `docs/protocol.md`).
//!
//! Notifications are the only frames without a `type` field; everything the
//! server says about the session itself has one.

use axum::extract::ws::Utf8Bytes;
use serde::{Deserialize, Serialize};

use crate::{Cursor, SessionId, SessionToken};

/// A frame a client may send.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub(crate) enum ClientFrame {
    Subscribe { collections: Vec<String> },
    Unsubscribe { collections: Vec<String> },
}

/// A control frame the server sends.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub(crate) enum ServerFrame<'a> {
    /// The first frame of every session: the public id, and the secret
    /// token that only this session receives.
    Hello {
        session: SessionId,
        token: SessionToken,
        #[serde(serialize_with = "as_string")]
        cursor: Cursor,
    },
    /// Notifications were lost for this session: reload everything.
    Resync {
        #[serde(serialize_with = "as_string")]
        cursor: Cursor,
    },
    /// A `subscribe` was applied: the names it carried, whether `*` is
    /// subscribed, how many collections are subscribed by name.
    Subscribed { collections: Vec<&'a str>, all: bool, count: usize },
    /// An `unsubscribe` was applied; the same fields as `Subscribed`.
    Unsubscribed { collections: Vec<&'a str>, all: bool, count: usize },
    /// A client frame was refused; the session goes on.
    Error { code: ErrorCode, message: &'a str },
}

/// Machine-readable reasons in `error` frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ErrorCode {
    /// Not JSON, not a known control frame, or a malformed collection name.
    BadFrame,
    /// A subscription the authorize hook does not allow, or one over the
    /// per-session limit.
    Forbidden,
}

impl ServerFrame<'_> {
    pub(crate) fn to_text(&self) -> Utf8Bytes {
        // Our own enums with string fields: serialization cannot fail.
        Utf8Bytes::from(serde_json::to_string(self).expect("control frames serialize"))
    }
}

fn as_string<S: serde::Serializer>(c: &Cursor, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(c)
}

/// Close codes (RFC 6455) and the reasons the server gives with them.
pub(crate) mod close {
    pub(crate) const GOING_AWAY: u16 = 1001;
    pub(crate) const PROTOCOL_ERROR: u16 = 1002;
    pub(crate) const UNSUPPORTED: u16 = 1003;
    pub(crate) const INVALID_DATA: u16 = 1007;
    pub(crate) const TOO_BIG: u16 = 1009;

    /// The longest reason a close frame can carry: a control frame holds 125
    /// bytes, two of which are the code.
    const MAX_REASON: usize = 123;

    /// `reason`, cut to fit a close frame (at a character boundary).
    pub(crate) fn reason(mut reason: String) -> String {
        if reason.len() > MAX_REASON {
            let end = (0..=MAX_REASON).rev().find(|&i| reason.is_char_boundary(i)).unwrap_or(0);
            reason.truncate(end);
        }
        reason
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_frames_have_the_documented_shape() {
        let token: SessionToken = "000102030405060708090a0b0c0d0e0f".parse().unwrap();
        let hello = ServerFrame::Hello { session: token.id(), token, cursor: Cursor::new(2, 3) };
        assert_eq!(
            hello.to_text().as_str(),
            r#"{"type":"hello","session":"be45cb2605bf36be","token":"000102030405060708090a0b0c0d0e0f","cursor":"00000002-3"}"#
        );
        let ack = ServerFrame::Unsubscribed { collections: vec!["a"], all: false, count: 3 };
        assert_eq!(
            ack.to_text().as_str(),
            r#"{"type":"unsubscribed","collections":["a"],"all":false,"count":3}"#
        );
        let err = ServerFrame::Error { code: ErrorCode::BadFrame, message: "x" };
        assert_eq!(err.to_text().as_str(), r#"{"type":"error","code":"bad_frame","message":"x"}"#);
    }

    #[test]
    fn close_reasons_fit_a_control_frame() {
        assert_eq!(close::reason("short".into()), "short");
        let long = close::reason("é".repeat(100));
        assert!(long.len() <= 123 && long.len() >= 122, "{}", long.len());
        assert!(long.chars().all(|c| c == 'é'));
    }

    #[test]
    fn client_frames_parse() {
        let f: ClientFrame = serde_json::from_str(r#"{"type":"subscribe","collections":["a"]}"#).unwrap();
        assert!(matches!(f, ClientFrame::Subscribe { collections } if collections == ["a"]));
        assert!(serde_json::from_str::<ClientFrame>(r#"{"type":"dance"}"#).is_err());
    }
}
