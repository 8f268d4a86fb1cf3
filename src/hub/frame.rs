//! The wire form of everything a session sends: one type that owns the
//! JSON text and the cursor it carries.
//!
//! A notification's frame is written once, on the caller's side, all but its
//! cursor ([`OpenFrame`]); the history closes it with the cursor it assigns
//! under its lock ([`OpenFrame::close`]). The cursor is kept beside the
//! text, so a transport that needs it (SSE's event id) reads it back
//! without looking into the text.

use std::ops::Range;

use tungstenite::Utf8Bytes;

use crate::{Cursor, Notification};

/// A frame ready to send: its text, shared by every session that sends it
/// (a reference-count bump, never a copy), and its cursor, if it carries
/// one (notifications, `hello`, `resync`).
#[derive(Debug, Clone)]
pub(crate) struct Frame {
    text: Utf8Bytes,
    cursor: Option<Cursor>,
}

impl Frame {
    /// A frame whose text is already complete.
    pub(crate) fn new(text: String, cursor: Option<Cursor>) -> Self {
        Frame { text: Utf8Bytes::from(text), cursor }
    }

    /// The JSON text.
    pub(crate) fn as_str(&self) -> &str {
        self.text.as_str()
    }

    /// The JSON text, as the WebSocket sends it.
    pub(crate) fn into_text(self) -> Utf8Bytes {
        self.text
    }

    /// The cursor the frame carries, if any.
    pub(crate) fn cursor(&self) -> Option<Cursor> {
        self.cursor
    }
}

/// Where a session collects the frames it pulls from the history. The
/// WebSocket keeps only the text (32 bytes a frame, per session, so the
/// cursor beside it would double what every writer's buffer moves); SSE
/// keeps the whole frame, whose cursor is its event id.
pub(crate) trait Outbox {
    /// Adds a frame, shared (a reference-count bump).
    fn put(&mut self, frame: &Frame);
}

impl Outbox for Vec<Utf8Bytes> {
    fn put(&mut self, frame: &Frame) {
        self.push(frame.text.clone());
    }
}

impl Outbox for Vec<Frame> {
    fn put(&mut self, frame: &Frame) {
        self.push(frame.clone());
    }
}

impl Outbox for std::collections::VecDeque<Frame> {
    fn put(&mut self, frame: &Frame) {
        self.push_back(frame.clone());
    }
}

/// A notification's frame without its cursor:
/// `{"collection":…,"op":…[,"data":…][,"origin":…],"cursor":"`.
pub(crate) struct OpenFrame {
    text: String,
    /// Where `data` sits in `text`, copied verbatim: filters read it there.
    data: Option<Range<usize>>,
}

impl OpenFrame {
    /// Writes everything but the cursor, allocating once.
    pub(crate) fn new(n: &Notification) -> Self {
        // Fixed keys and punctuation, an origin, the longest cursor: under
        // 128 bytes.
        // Escaping can at most multiply the collection's length by six.
        let capacity = 128 + n.collection.len() * 6 + n.data.as_ref().map_or(0, |d| d.get().len());
        let mut out = String::with_capacity(capacity);
        out.push_str(r#"{"collection":"#);
        push_json_str(&mut out, &n.collection);
        out.push_str(r#","op":""#);
        out.push_str(n.op.as_str());
        out.push('"');
        let data = n.data.as_ref().map(|data| {
            out.push_str(r#","data":"#);
            let start = out.len();
            out.push_str(data.get());
            start..out.len()
        });
        if let Some(origin) = n.origin() {
            out.push_str(r#","origin":""#);
            origin.push_to(&mut out);
            out.push('"');
        }
        out.push_str(r#","cursor":""#);
        OpenFrame { text: out, data }
    }

    /// Where the notification's `data` sits in the frame's text, if it has
    /// any (the closed frame keeps it there).
    pub(crate) fn data(&self) -> Option<Range<usize>> {
        self.data.clone()
    }

    /// Appends the cursor and closes the object.
    pub(crate) fn close(self, cursor: Cursor) -> Frame {
        let OpenFrame { mut text, .. } = self;
        cursor.push_to(&mut text);
        text.push_str("\"}");
        Frame::new(text, Some(cursor))
    }
}

/// Appends `s` as a JSON string literal.
fn push_json_str(out: &mut String, s: &str) {
    // Collection names are almost always plain identifiers: skip the escaper.
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\' && b < 0x7f) {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        // Serializing a &str into a String cannot fail.
        out.push_str(&serde_json::to_string(s).expect("a str always serializes"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Op, SessionToken};

    fn frame(n: &Notification) -> Frame {
        OpenFrame::new(n).close(Cursor::new(0xabc, 7))
    }

    #[test]
    fn the_wire_form_omits_absent_fields_and_ends_with_the_cursor() {
        let f = frame(&Notification::new("forums", Op::Insert));
        assert_eq!(f.as_str(), r#"{"collection":"forums","op":"insert","cursor":"00000abc-7"}"#);
        assert_eq!(f.cursor(), Some(Cursor::new(0xabc, 7)));
    }

    #[test]
    fn the_wire_form_carries_data_and_the_public_origin() {
        let n = Notification::new("posts", Op::Delete)
            .with_data(&serde_json::json!({"id": 3}))
            .unwrap()
            .with_origin("000102030405060708090a0b0c0d0e0f".parse().unwrap());
        assert_eq!(
            frame(&n).as_str(),
            r#"{"collection":"posts","op":"delete","data":{"id":3},"origin":"be45cb2605bf36be","cursor":"00000abc-7"}"#,
            "the public id, never the token"
        );
    }

    #[test]
    fn the_data_is_found_where_the_frame_holds_it() {
        let n = Notification::new("posts", Op::Insert).with_data(&serde_json::json!({"id": 3})).unwrap();
        let open = OpenFrame::new(&n);
        let range = open.data().unwrap();
        assert_eq!(&open.close(Cursor::new(1, 1)).as_str()[range], r#"{"id":3}"#);
        assert!(OpenFrame::new(&Notification::new("posts", Op::Delete)).data().is_none());
    }

    #[test]
    fn collection_names_are_escaped() {
        let n = Notification::new("we\"ird\n", Op::Update);
        let v: serde_json::Value = serde_json::from_str(frame(&n).as_str()).unwrap();
        assert_eq!(v["collection"], "we\"ird\n");
    }

    #[test]
    fn one_allocation_covers_the_frame_and_the_longest_cursor() {
        let n = Notification::new("\"\"\"", Op::Update)
            .with_data(&serde_json::json!({"id": 1}))
            .unwrap()
            .with_origin(SessionToken::generate());
        let open = OpenFrame::new(&n);
        let capacity = open.text.capacity();
        let closed = open.close(Cursor::stream_of(u64::MAX, u64::MAX, u32::MAX));
        assert!(closed.as_str().len() <= capacity, "{} > {capacity}", closed.as_str().len());
    }
}
