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
/// assert_eq!(r, Cursor::Stream { ms: 1732380000000, seq: 3 });
/// assert_eq!(r.to_string(), "1732380000000-3");
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
    /// outbox positions `<log id>-<position>` (the log id being the time
    /// the outbox table was created, so that a log created anew never
    /// places an old cursor).
    Stream {
        /// Milliseconds since the Unix epoch (Redis' clock at `XADD`; the
        /// outbox's creation time).
        ms: u64,
        /// The entry's sequence number within that millisecond (the
        /// outbox's position).
        seq: u64,
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
        Cursor::Stream { ms, seq }
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
            (Cursor::Stream { ms: a, seq: x }, Cursor::Stream { ms: b, seq: y }) => Some((a, x).cmp(&(b, y))),
            _ => None,
        }
    }

    /// Appends the wire form to `out` without an intermediate allocation.
    pub(crate) fn push_to(&self, out: &mut String) {
        let seq = match *self {
            Cursor::Local { epoch, seq } => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                for shift in (0..8).rev() {
                    out.push(HEX[((epoch >> (shift * 4)) & 0xf) as usize] as char);
                }
                seq
            }
            Cursor::Stream { ms, seq } => {
                out.push_str(itoa::Buffer::new().format(ms));
                seq
            }
        };
        out.push('-');
        out.push_str(itoa::Buffer::new().format(seq));
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cursor::Local { epoch, seq } => write!(f, "{epoch:08x}-{seq}"),
            Cursor::Stream { ms, seq } => write!(f, "{ms}-{seq}"),
        }
    }
}

/// The error for a string that is not a cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidCursor;

impl fmt::Display for InvalidCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "not a tidings cursor (expected `<8 hex digits>-<sequence>` or a stream id `<ms>-<sequence>`)",
        )
    }
}

impl std::error::Error for InvalidCursor {}

impl FromStr for Cursor {
    type Err = InvalidCursor;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (head, seq) = s.split_once('-').ok_or(InvalidCursor)?;
        let seq = seq.parse().map_err(|_| InvalidCursor)?;
        // Stream ids are millisecond timestamps: 13 digits today, never 8.
        if head.len() == 8 {
            let epoch = u32::from_str_radix(head, 16).map_err(|_| InvalidCursor)?;
            Ok(Cursor::Local { epoch, seq })
        } else if !head.is_empty() && head.bytes().all(|b| b.is_ascii_digit()) {
            Ok(Cursor::Stream { ms: head.parse().map_err(|_| InvalidCursor)?, seq })
        } else {
            Err(InvalidCursor)
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
        ] {
            let mut s = String::new();
            c.push_to(&mut s);
            assert_eq!(s, c.to_string());
            assert_eq!(s.parse::<Cursor>().unwrap(), c);
        }
    }

    #[test]
    fn rejects_malformed() {
        for bad in ["", "-", "12345678", "zzzzzzzz-1", "12345678-", "12345678--1", "-5", "1x-2"] {
            assert!(bad.parse::<Cursor>().is_err(), "{bad}");
        }
    }

    #[test]
    fn stream_ids_order() {
        let a = Cursor::stream(5, 1);
        assert_eq!(a.stream_cmp(&Cursor::stream(5, 2)), Some(Ordering::Less));
        assert_eq!(a.stream_cmp(&Cursor::stream(4, 9)), Some(Ordering::Greater));
        assert_eq!(a.stream_cmp(&Cursor::new(5, 1)), None);
    }
}
