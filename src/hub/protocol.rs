//! The control frames of the wire protocol (see `docs/protocol.md`).
//!
//! Notifications are the only frames without a `type` field; everything the
//! server says about the session itself has one.

use serde::{Deserialize, Serialize};

use super::frame::Frame;
use crate::{Cursor, ErrorCode, SessionId, SessionToken};

/// A frame a client may send.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub(crate) enum ClientFrame {
    /// `where`: a filter, or a list of filters any of which may match, for
    /// every collection named (see `docs/protocol.md`).
    ///
    /// `cursor`: the position of the read that loaded what the new
    /// subscription keeps fresh. What the history holds after it for the new
    /// subscription is replayed before the `subscribed` reply.
    Subscribe {
        collections: Vec<String>,
        #[serde(default, rename = "where")]
        filter: Option<serde_json::Value>,
        #[serde(default)]
        cursor: Option<String>,
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
    /// subscribed, how many collections are subscribed by name; and, when
    /// it carried a cursor, the session's position after the replay (the
    /// replayed notifications carry older cursors than the session had).
    Subscribed {
        collections: Vec<&'a str>,
        all: bool,
        count: usize,
        #[serde(skip_serializing_if = "Option::is_none", serialize_with = "as_optional_string")]
        cursor: Option<Cursor>,
    },
    /// An `unsubscribe` was applied; the same fields as `Subscribed`.
    Unsubscribed { collections: Vec<&'a str>, all: bool, count: usize },
    /// A client frame was refused; the session goes on.
    Error { code: ErrorCode, message: &'a str },
    /// The last frame of an SSE session that must re-authenticate (a
    /// WebSocket closes with 4401 instead).
    Reauthenticate,
}

impl ServerFrame<'_> {
    /// The frame, carrying the cursor of a `hello` or `resync`.
    pub(crate) fn to_frame(&self) -> Frame {
        let cursor = match self {
            ServerFrame::Hello { cursor, .. } | ServerFrame::Resync { cursor, .. } => Some(*cursor),
            ServerFrame::Subscribed { cursor, .. } => *cursor,
            _ => None,
        };
        // Our own enums with string fields: serialization cannot fail.
        Frame::new(serde_json::to_string(self).expect("control frames serialize"), cursor)
    }
}

fn as_string<S: serde::Serializer>(c: &Cursor, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(c)
}

fn as_optional_string<S: serde::Serializer>(c: &Option<Cursor>, s: S) -> Result<S::Ok, S::Error> {
    match c {
        Some(c) => s.collect_str(c),
        None => s.serialize_none(),
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
        let replayed = ServerFrame::Subscribed {
            collections: vec!["a"],
            all: false,
            count: 1,
            cursor: Some(Cursor::new(2, 7)),
        };
        assert_eq!(
            replayed.to_frame().as_str(),
            r#"{"type":"subscribed","collections":["a"],"all":false,"count":1,"cursor":"00000002-7"}"#
        );
        let err = ServerFrame::Error { code: ErrorCode::BadFrame, message: "x" };
        assert_eq!(err.to_frame().as_str(), r#"{"type":"error","code":"bad_frame","message":"x"}"#);
    }

    /// One frame of every type the server sends. The `match` makes a new
    /// variant a compile error here until it has a sample.
    fn every_server_frame() -> Vec<ServerFrame<'static>> {
        let token: SessionToken = "000102030405060708090a0b0c0d0e0f".parse().unwrap();
        let frames = vec![
            ServerFrame::Hello { session: token.id(), token, cursor: Cursor::new(2, 3) },
            ServerFrame::Resync { cursor: Cursor::new(2, 9), collections: None },
            ServerFrame::Subscribed { collections: vec!["a"], all: false, count: 1, cursor: None },
            ServerFrame::Unsubscribed { collections: vec!["a"], all: false, count: 0 },
            ServerFrame::Error { code: ErrorCode::Forbidden, message: "x" },
            ServerFrame::Reauthenticate,
        ];
        for frame in &frames {
            match frame {
                ServerFrame::Hello { .. }
                | ServerFrame::Resync { .. }
                | ServerFrame::Subscribed { .. }
                | ServerFrame::Unsubscribed { .. }
                | ServerFrame::Error { .. }
                | ServerFrame::Reauthenticate => {}
            }
        }
        frames
    }

    /// The `type` literals of the interfaces in the client's `ServerFrame`
    /// union (`src/client/tidings.d.ts`).
    fn declared_frame_types(declarations: &str) -> Vec<String> {
        let union = declarations.split("export type ServerFrame =").nth(1).expect("the ServerFrame union");
        let union = &union[..union.find(';').expect("the union ends")];
        let names = union.split('|').map(str::trim).filter(|n| !n.is_empty());
        let mut types = Vec::new();
        for name in names {
            let body = declarations
                .split(&format!("export interface {name}"))
                .nth(1)
                .unwrap_or_else(|| panic!("interface {name} is declared"));
            let body = &body[..body.find("\n}").expect("the interface ends")];
            if let Some(literal) = body.split("type: \"").nth(1) {
                types.push(literal[..literal.find('"').unwrap()].to_owned());
            }
        }
        types.sort();
        types
    }

    /// The client's declarations, the wire protocol's document and the
    /// server's frames name the same frame types: none can be added to one
    /// and forgotten in another.
    #[test]
    fn the_client_and_the_protocol_document_know_every_frame_the_server_sends() {
        let root = env!("CARGO_MANIFEST_DIR");
        let read = |path: &str| std::fs::read_to_string(format!("{root}/{path}")).unwrap();
        let (declarations, document) = (read("src/client/tidings.d.ts"), read("docs/protocol.md"));
        let mut sent: Vec<String> = every_server_frame()
            .iter()
            .map(|f| {
                let v: serde_json::Value = serde_json::from_str(f.to_frame().as_str()).unwrap();
                v["type"].as_str().unwrap().to_owned()
            })
            .collect();
        sent.sort();
        assert_eq!(declared_frame_types(&declarations), sent, "tidings.d.ts's ServerFrame union");
        for t in &sent {
            assert!(
                document.contains(&format!(r#"{{"type":"{t}""#)),
                "docs/protocol.md shows no `{t}` frame"
            );
        }
    }

    #[test]
    fn client_frames_parse() {
        let f: ClientFrame = serde_json::from_str(r#"{"type":"subscribe","collections":["a"]}"#).unwrap();
        assert!(
            matches!(f, ClientFrame::Subscribe { collections, filter: None, cursor: None } if collections == ["a"])
        );
        let f: ClientFrame =
            serde_json::from_str(r#"{"type":"subscribe","collections":["a"],"cursor":"00000002-3"}"#)
                .unwrap();
        assert!(matches!(f, ClientFrame::Subscribe { cursor: Some(c), .. } if c == "00000002-3"));
        let f: ClientFrame =
            serde_json::from_str(r#"{"type":"subscribe","collections":["a"],"where":{"id":[1,2]}}"#).unwrap();
        assert!(matches!(f, ClientFrame::Subscribe { filter: Some(w), .. } if w["id"][1] == 2));
        assert!(serde_json::from_str::<ClientFrame>(r#"{"type":"dance"}"#).is_err());
    }
}
