//! Positions in the stream of notifications, as clients see them.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

/// A position in the stream of delivered notifications.
///
/// Opaque to clients, which only keep the last one they saw and send it back.
///
/// ```
/// use tidings::Cursor;
///
/// let c: Cursor = "5f1c2a9e-42".parse().unwrap();
/// assert_eq!(c, Cursor::Local { epoch: 0x5f1c2a9e, seq: 42 });
/// assert_eq!(c.to_string(), "5f1c2a9e-42");
/// let r: Cursor = "1732380000000-3".parse().unwrap();
/// assert_eq!(r, Cursor::Stream { ms: 1732380000000, seq: 3, fingerprint: 0 });
/// assert_eq!(r.to_string(), "1732380000000-3");
/// let o: Cursor = "1732380000000-3-00c0ffee".parse().unwrap();
/// assert_eq!(o, Cursor::Stream { ms: 1732380000000, seq: 3, fingerprint: 0xc0ffee });
/// assert_eq!(o.to_string(), "1732380000000-3-00c0ffee");
/// assert!("nonsense".parse::<Cursor>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Cursor {
    /// In-process (and PostgreSQL NOTIFY) cursors, such as `5f1c2a9e-42`.
    Local {
        /// Chosen at random when the [`Notifier`](crate::Notifier) starts
        /// (8 hex digits on the wire), so a cursor from before a restart is
        /// recognised as foreign.
        epoch: u32,
        /// The sequence number of the last notification covered (`0`
        /// before the first).
        seq: u64,
    },
    /// Positions in a log a backplane keeps, valid on every instance
    /// sharing it: Redis stream entry ids, such as `1732380000000-0`, or
    /// outbox positions `<log id>-<position>-<fingerprint>` (the log id
    /// being the time the outbox table was created, so that a log created
    /// anew never places an old cursor).
    Stream {
        /// Milliseconds since the Unix epoch (Redis' clock at `XADD`; the
        /// outbox's creation time).
        ms: u64,
        /// The entry's sequence number within that millisecond (the
        /// outbox's position).
        seq: u64,
        /// Which entry holds that position, for logs whose positions can be
        /// handed out twice (8 hex digits on the wire; `0`, and absent from
        /// the wire, when the log has no such thing: Redis ids are never
        /// reused). An outbox restored from a backup gives its positions
        /// again, to other rows: the fingerprint, drawn from the row,
        /// tells the two apart, so such a cursor gets `resync` instead of
        /// skipping the new rows. Not part of the order.
        fingerprint: u32,
    },
}

/// Which family a cursor belongs to; cursors of different families never
/// compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    Local,
    Stream,
}

impl Cursor {
    pub(crate) const fn new(epoch: u32, seq: u64) -> Self {
        Cursor::Local { epoch, seq }
    }

    pub(crate) const fn stream(ms: u64, seq: u64) -> Self {
        Cursor::Stream { ms, seq, fingerprint: 0 }
    }

    /// A stream position held by the entry with this fingerprint (nonzero).
    pub(crate) const fn stream_of(ms: u64, seq: u64, fingerprint: u32) -> Self {
        Cursor::Stream { ms, seq, fingerprint }
    }

    /// The fingerprint of the entry at a stream position (0: none).
    pub(crate) fn fingerprint(&self) -> u32 {
        match *self {
            Cursor::Stream { fingerprint, .. } => fingerprint,
            Cursor::Local { .. } => 0,
        }
    }

    /// Whether `given`, a cursor a client sent, names this entry: the same
    /// position and, when `given` carries a fingerprint, the same one (an
    /// entry whose fingerprint is not known cannot vouch for it).
    pub(crate) fn is_named_by(&self, given: &Cursor) -> bool {
        match (*self, *given) {
            (
                Cursor::Stream { ms: a, seq: x, fingerprint: f },
                Cursor::Stream { ms: b, seq: y, fingerprint: g },
            ) => (a, x) == (b, y) && (g == 0 || f == g),
            _ => self == given,
        }
    }

    pub(crate) fn kind(&self) -> Kind {
        match self {
            Cursor::Local { .. } => Kind::Local,
            Cursor::Stream { .. } => Kind::Stream,
        }
    }

    /// The epoch of an in-process cursor (0 for a stream id).
    pub fn epoch(&self) -> u32 {
        match *self {
            Cursor::Local { epoch, .. } => epoch,
            Cursor::Stream { .. } => 0,
        }
    }

    /// The sequence number of the last notification this cursor covers (for
    /// a stream id, the part after the dash).
    pub fn seq(&self) -> u64 {
        match *self {
            Cursor::Local { seq, .. } | Cursor::Stream { seq, .. } => seq,
        }
    }

    /// The milliseconds part of a stream id (0 for an in-process cursor).
    pub(crate) fn epoch_ms(&self) -> u64 {
        match *self {
            Cursor::Stream { ms, .. } => ms,
            Cursor::Local { .. } => 0,
        }
    }

    /// Orders two stream ids; `None` when they are not both stream ids.
    pub(crate) fn stream_cmp(&self, other: &Cursor) -> Option<Ordering> {
        match (*self, *other) {
            (Cursor::Stream { ms: a, seq: x, .. }, Cursor::Stream { ms: b, seq: y, .. }) => {
                Some((a, x).cmp(&(b, y)))
            }
            _ => None,
        }
    }

    /// Appends the wire form to `out` without an intermediate allocation.
    pub(crate) fn push_to(&self, out: &mut String) {
        match *self {
            Cursor::Local { epoch, seq } => {
                push_hex(out, epoch);
                out.push('-');
                out.push_str(itoa::Buffer::new().format(seq));
            }
            Cursor::Stream { ms, seq, fingerprint } => {
                out.push_str(itoa::Buffer::new().format(ms));
                out.push('-');
                out.push_str(itoa::Buffer::new().format(seq));
                if fingerprint != 0 {
                    out.push('-');
                    push_hex(out, fingerprint);
                }
            }
        }
    }
}

/// Appends `value` as 8 lower-case hex digits.
fn push_hex(out: &mut String, value: u32) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for shift in (0..8).rev() {
        out.push(HEX[((value >> (shift * 4)) & 0xf) as usize] as char);
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cursor::Local { epoch, seq } => write!(f, "{epoch:08x}-{seq}"),
            Cursor::Stream { ms, seq, fingerprint: 0 } => write!(f, "{ms}-{seq}"),
            Cursor::Stream { ms, seq, fingerprint } => write!(f, "{ms}-{seq}-{fingerprint:08x}"),
        }
    }
}

/// The error for a string that is not a cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidCursor;

impl fmt::Display for InvalidCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "not a tidings cursor (expected `<8 hex digits>-<sequence>`, a stream id `<ms>-<sequence>`, \
             or an outbox position `<log id>-<position>-<8 hex digits>`)",
        )
    }
}

impl std::error::Error for InvalidCursor {}

impl FromStr for Cursor {
    type Err = InvalidCursor;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
        let hex = |part: &str| part.len() == 8 && part.bytes().all(|b| b.is_ascii_hexdigit());
        let mut parts = s.split('-');
        let (head, seq, fingerprint) = (parts.next(), parts.next(), parts.next());
        let (Some(head), Some(seq), None) = (head, seq, parts.next()) else { return Err(InvalidCursor) };
        if !digits(seq) {
            return Err(InvalidCursor);
        }
        let seq = seq.parse().map_err(|_| InvalidCursor)?;
        // Stream ids are millisecond timestamps: 13 digits today, never 8.
        match fingerprint {
            None if head.len() == 8 && hex(head) => {
                Ok(Cursor::Local { epoch: u32::from_str_radix(head, 16).map_err(|_| InvalidCursor)?, seq })
            }
            None if digits(head) => Ok(Cursor::stream(head.parse().map_err(|_| InvalidCursor)?, seq)),
            Some(f) if digits(head) && hex(f) => {
                let fingerprint = u32::from_str_radix(f, 16).map_err(|_| InvalidCursor)?;
                if fingerprint == 0 {
                    return Err(InvalidCursor);
                }
                Ok(Cursor::stream_of(head.parse().map_err(|_| InvalidCursor)?, seq, fingerprint))
            }
            _ => Err(InvalidCursor),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_to_matches_display() {
        for c in [
            Cursor::new(0, 0),
            Cursor::new(0xdead_beef, 42),
            Cursor::new(u32::MAX, u64::MAX),
            Cursor::stream(1_732_380_000_000, 7),
            Cursor::stream_of(1_732_380_000_000, 7, 0x0bad_cafe),
        ] {
            let mut s = String::new();
            c.push_to(&mut s);
            assert_eq!(s, c.to_string());
            assert_eq!(s.parse::<Cursor>().unwrap(), c);
        }
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "-",
            "12345678",
            "zzzzzzzz-1",
            "12345678-",
            "12345678--1",
            "-5",
            "1x-2",
            "5-+3",
            "5-3-",
            "5-3-123",
            "5-3-0000000g",
            "5-3-00000000",
            "abcdef12-3-00000001",
            "5-3-00000001-1",
        ] {
            assert!(bad.parse::<Cursor>().is_err(), "{bad}");
        }
    }

    #[test]
    fn stream_ids_order() {
        let a = Cursor::stream(5, 1);
        assert_eq!(a.stream_cmp(&Cursor::stream(5, 2)), Some(Ordering::Less));
        assert_eq!(a.stream_cmp(&Cursor::stream(4, 9)), Some(Ordering::Greater));
        assert_eq!(a.stream_cmp(&Cursor::new(5, 1)), None);
        // The fingerprint names the entry; it takes no part in the order.
        let held = Cursor::stream_of(5, 1, 7);
        assert_eq!(held.stream_cmp(&a), Some(Ordering::Equal));
        assert!(held.is_named_by(&Cursor::stream_of(5, 1, 7)));
        assert!(held.is_named_by(&a), "a cursor without a fingerprint names the position");
        assert!(!held.is_named_by(&Cursor::stream_of(5, 1, 8)), "another row at that position");
        assert!(!a.is_named_by(&held), "an entry without a fingerprint cannot vouch for one");
    }
}
