//! The byte-scan frame parser: what the clients read from each received
//! frame (`type`, `collection`, `data.t` / `data.i`, and the cursor) without
//! a JSON parse of the layouts both servers write.

use serde::Deserialize;

/// The fields of a received frame the driver looks at.
pub struct Seen<'a> {
    /// `type` of a control frame (`hello`, `resync`, ...).
    pub kind: Option<&'a [u8]>,
    pub collection: Option<&'a [u8]>,
    pub data: Option<FrameData>,
}

/// Reads a frame's `type`, `collection` and `data.t` / `data.i` with a byte
/// scan of the layouts both servers write (`{"type":"..",..}`, or
/// `{"collection":"..","op":"..","data":{"t":T,"i":I,..}..}`), and falls back
/// to a full JSON parse for anything else. Parsing every frame with
/// serde_json was a visible part of the driver's per-frame cost.
pub fn scan(b: &[u8]) -> Option<Seen<'_>> {
    fn string_at(b: &[u8], at: usize) -> Option<(&[u8], usize)> {
        let len = b.get(at..)?.iter().position(|&c| c == b'"' || c == b'\\')?;
        (b[at + len] == b'"').then(|| (&b[at..at + len], at + len + 1))
    }
    fn number_at(b: &[u8], at: usize) -> Option<(u64, usize)> {
        let digits = b.get(at..)?.iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 || digits > 19 {
            return None;
        }
        let n = b[at..at + digits].iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
        Some((n, at + digits))
    }
    fn find(b: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
        b.get(from..)?.windows(needle.len()).position(|w| w == needle).map(|p| from + p + needle.len())
    }
    let fast = || {
        if let Some(rest) = b.strip_prefix(br#"{"type":""#) {
            let (kind, _) = string_at(rest, 0)?;
            return Some(Seen { kind: Some(kind), collection: None, data: None });
        }
        const COLLECTION: &[u8] = br#"{"collection":""#;
        if !b.starts_with(COLLECTION) {
            return None;
        }
        let (collection, at) = string_at(b, COLLECTION.len())?;
        let at = find(b, at, br#","data":{"t":"#)?;
        let (t, at) = number_at(b, at)?;
        let at = at + br#","i":"#.len();
        (b.get(at - 5..at)? == br#","i":"#).then_some(())?;
        let (i, _) = number_at(b, at)?;
        Some(Seen { kind: None, collection: Some(collection), data: Some(FrameData { t, i }) })
    };
    fast().or_else(|| {
        let f: Frame = serde_json::from_slice(b).ok()?;
        Some(Seen {
            kind: f.kind.map(str::as_bytes),
            collection: f.collection.map(str::as_bytes),
            data: f.data,
        })
    })
}

#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<&'a str>,
    #[serde(borrow)]
    collection: Option<&'a str>,
    data: Option<FrameData>,
}

#[derive(Deserialize)]
pub struct FrameData {
    pub t: u64,
    pub i: u64,
}

/// The two cursor forms a tidings frame can carry.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum CursorForm {
    /// `<8 hex epoch>-<seq>`: the in-process history (also PostgreSQL).
    Epoch,
    /// `<ms>-<seq>`, decimal: a Redis stream entry id.
    Stream,
}

/// The cursor at the end of a notification frame (`..,"cursor":"X"}`), as
/// an ordered pair. Gaps are not read from it: with stream ids the sequence
/// restarts every millisecond, so the driver counts received vs expected
/// notifications (by payload index) and resync frames instead, for both
/// forms; the cursor only has to move forward.
pub fn frame_cursor(b: &[u8]) -> Option<(CursorForm, u64, u64)> {
    const KEY: &[u8] = br#","cursor":""#;
    let body = b.strip_suffix(br#""}"#)?;
    let start = body.iter().rposition(|&c| c == b'"')? + 1;
    (start >= KEY.len() && &body[start - KEY.len()..start] == KEY).then_some(())?;
    // `<epoch>-<seq>`, `<ms>-<seq>`, or an outbox's `<log>-<position>-<fingerprint>`.
    let mut parts = std::str::from_utf8(&body[start..]).ok()?.split('-');
    let (left, seq) = (parts.next()?, parts.next()?);
    let seq = seq.parse().ok()?;
    if left.len() == 8 && left.bytes().all(|c| c.is_ascii_hexdigit()) {
        return Some((CursorForm::Epoch, u64::from_str_radix(left, 16).ok()?, seq));
    }
    left.bytes().all(|c| c.is_ascii_digit()).then(|| Some((CursorForm::Stream, left.parse().ok()?, seq)))?
}

#[cfg(test)]
mod tests {
    use super::{CursorForm, frame_cursor, scan};

    #[test]
    fn frame_cursor_reads_both_forms() {
        let e = frame_cursor(
            br#"{"collection":"hot","op":"insert","data":{"t":1,"i":2},"cursor":"00000abc-43"}"#,
        );
        assert_eq!(e, Some((CursorForm::Epoch, 0xabc, 43)));
        let r = frame_cursor(
            br#"{"collection":"hot","op":"insert","data":{"t":1,"i":2},"cursor":"1732380000000-7"}"#,
        );
        assert_eq!(r, Some((CursorForm::Stream, 1_732_380_000_000, 7)));
        assert_eq!(frame_cursor(br#"{"collection":"hot","op":"insert"}"#), None);
    }

    #[test]
    fn scan_reads_both_layouts_and_falls_back() {
        let t = scan(br#"{"collection":"hot","op":"insert","data":{"t":1700000000123456789,"i":42,"pad":"xx"},"cursor":"00000abc-43"}"#).unwrap();
        assert_eq!((t.kind, t.collection), (None, Some(&b"hot"[..])));
        let d = t.data.unwrap();
        assert_eq!((d.t, d.i), (1700000000123456789, 42));
        let b = scan(br#"{"collection":"cold","op":"insert","data":{"t":5,"i":0,"pad":""}}"#).unwrap();
        assert_eq!(b.collection, Some(&b"cold"[..]));
        assert_eq!(b.data.unwrap().i, 0);
        // Rooms: `room` after `i`, the baseline's frame without a cursor.
        let m = scan(br#"{"collection":"room-3","op":"insert","data":{"t":7,"i":23,"room":3,"pad":""}}"#)
            .unwrap();
        assert_eq!((m.collection, m.data.map(|d| d.i)), (Some(&b"room-3"[..]), Some(23)));
        let r = scan(br#"{"type":"resync","cursor":"00000abc-9"}"#).unwrap();
        assert_eq!(r.kind, Some(&b"resync"[..]));
        // Another field order: the JSON fallback.
        let o = scan(br#"{"op":"insert","collection":"hot","data":{"i":3,"t":4}}"#).unwrap();
        let d = o.data.unwrap();
        assert_eq!((o.collection, d.t, d.i), (Some(&b"hot"[..]), 4, 3));
        assert!(scan(b"not json").is_none());
    }
}
