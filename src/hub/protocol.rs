//! The control frames of the wire protocol (see `docs/protocol.md`).
//!
//! Notifications are the only frames without a `type` field; everything the
//! server says about the session itself has one.

use serde::{Deserialize, Serialize};

use super::frame::Frame;
use crate::{Cursor, SessionId, SessionToken};

/// A frame a client may send.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub(crate) enum ClientFrame {
    /// `where`: a filter, or a list of filters any of which may match, for
    /// every collection named (see `docs/protocol.md`).
    Subscribe {
        collections: Vec<String>,
        #[serde(default, rename = "where")]
        filter: Option<serde_json::Value>,
    },
    Unsubscribe {
        collections: Vec<String>,
    },
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
    /// Notifications were lost for this session: reload `collections`, or
    /// everything when the server cannot tell which (the field is absent).
    Resync {
        #[serde(serialize_with = "as_string")]
        cursor: Cursor,
        #[serde(skip_serializing_if = "Option::is_none")]
        collections: Option<&'a [String]>,
    },
    /// A `subscribe` was applied: the names it carried, whether `*` is
    /// subscribed, how many collections are subscribed by name.
    Subscribed { collections: Vec<&'a str>, all: bool, count: usize },
    /// An `unsubscribe` was applied; the same fields as `Subscribed`.
    Unsubscribed { collections: Vec<&'a str>, all: bool, count: usize },
    /// A client frame was refused; the session goes on.
    Error { code: ErrorCode, message: &'a str },
    /// The last frame of an SSE session that must re-authenticate (a
    /// WebSocket closes with 4401 instead).
    Reauthenticate,
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
    /// The frame, carrying the cursor of a `hello` or `resync`.
    pub(crate) fn to_frame(&self) -> Frame {
        let cursor = match self {
            ServerFrame::Hello { cursor, .. } | ServerFrame::Resync { cursor, .. } => Some(*cursor),
            _ => None,
        };
        // Our own enums with string fields: serialization cannot fail.
        Frame::new(serde_json::to_string(self).expect("control frames serialize"), cursor)
    }
}

fn as_string<S: serde::Serializer>(c: &Cursor, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_frames_have_the_documented_shape() {
        let token: SessionToken = "000102030405060708090a0b0c0d0e0f".parse().unwrap();
        let hello = ServerFrame::Hello { session: token.id(), token, cursor: Cursor::new(2, 3) };
        assert_eq!(
            hello.to_frame().as_str(),
            r#"{"type":"hello","session":"be45cb2605bf36be","token":"000102030405060708090a0b0c0d0e0f","cursor":"00000002-3"}"#
        );
        let ack = ServerFrame::Unsubscribed { collections: vec!["a"], all: false, count: 3 };
        assert_eq!(
            ack.to_frame().as_str(),
            r#"{"type":"unsubscribed","collections":["a"],"all":false,"count":3}"#
        );
        let names = ["posts".to_owned()];
        let precise = ServerFrame::Resync { cursor: Cursor::new(2, 9), collections: Some(&names) };
        assert_eq!(
            precise.to_frame().as_str(),
            r#"{"type":"resync","cursor":"00000002-9","collections":["posts"]}"#
        );
        let everything = ServerFrame::Resync { cursor: Cursor::new(2, 9), collections: None };
        assert_eq!(everything.to_frame().as_str(), r#"{"type":"resync","cursor":"00000002-9"}"#);
        let err = ServerFrame::Error { code: ErrorCode::BadFrame, message: "x" };
        assert_eq!(err.to_frame().as_str(), r#"{"type":"error","code":"bad_frame","message":"x"}"#);
    }

    #[test]
    fn client_frames_parse() {
        let f: ClientFrame = serde_json::from_str(r#"{"type":"subscribe","collections":["a"]}"#).unwrap();
        assert!(matches!(f, ClientFrame::Subscribe { collections, filter: None } if collections == ["a"]));
        let f: ClientFrame =
            serde_json::from_str(r#"{"type":"subscribe","collections":["a"],"where":{"id":[1,2]}}"#).unwrap();
        assert!(matches!(f, ClientFrame::Subscribe { filter: Some(w), .. } if w["id"][1] == 2));
        assert!(serde_json::from_str::<ClientFrame>(r#"{"type":"dance"}"#).is_err());
    }
}
