//! Positions in the stream of notifications, as clients see them.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

/// A position in the stream of emitted notifications.
///
/// Opaque to clients. Two forms exist:
///
/// - in-process (and PostgreSQL backplane) cursors, such as `5f1c2a9e-42`:
///   an epoch of 8 hex digits chosen at random when the
///   [`Notifier`](crate::Notifier) starts, so a cursor from before a restart is
///   recognised as foreign, then the sequence number of the last notification
///   covered (`0` before the first);
/// - Redis backplane cursors, which are the stream entry ids, such as
///   `1732380000000-0`, valid on every instance sharing the stream.
///
/// ```
/// use tidings::Cursor;
///
/// let c: Cursor = "5f1c2a9e-42".parse().unwrap();
/// assert_eq!(c.seq(), 42);
/// assert_eq!(c.to_string(), "5f1c2a9e-42");
/// let r: Cursor = "1732380000000-3".parse().unwrap();
/// assert_eq!(r.to_string(), "1732380000000-3");
/// assert!("nonsense".parse::<Cursor>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cursor {
    kind: Kind,
    major: u64,
    minor: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    /// `major` is the epoch (32 bits), `minor` the sequence number.
    Local,
    /// A Redis stream id: `major` milliseconds, `minor` sequence.
    Stream,
}

impl Cursor {
    pub(crate) const fn new(epoch: u32, seq: u64) -> Self {
        Cursor { kind: Kind::Local, major: epoch as u64, minor: seq }
    }

    pub(crate) const fn stream(ms: u64, seq: u64) -> Self {
        Cursor { kind: Kind::Stream, major: ms, minor: seq }
    }

    pub(crate) fn kind(&self) -> Kind {
        self.kind
    }

    /// The epoch of an in-process cursor (0 for a stream id).
    pub fn epoch(&self) -> u32 {
        match self.kind {
            Kind::Local => self.major as u32,
            Kind::Stream => 0,
        }
    }

    /// The sequence number of the last notification this cursor covers (for
    /// a stream id, the part after the dash).
    pub fn seq(&self) -> u64 {
        self.minor
    }

    /// The milliseconds part of a stream id.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn epoch_ms(&self) -> u64 {
        self.major
    }

    /// Orders two stream ids; `None` when they are not both stream ids.
    pub(crate) fn stream_cmp(&self, other: &Cursor) -> Option<Ordering> {
        (self.kind == Kind::Stream && other.kind == Kind::Stream)
            .then(|| (self.major, self.minor).cmp(&(other.major, other.minor)))
    }

    /// Appends the wire form to `out` without an intermediate allocation.
    pub(crate) fn push_to(&self, out: &mut String) {
        match self.kind {
            Kind::Local => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                for shift in (0..8).rev() {
                    out.push(HEX[((self.major >> (shift * 4)) & 0xf) as usize] as char);
                }
            }
            Kind::Stream => out.push_str(itoa::Buffer::new().format(self.major)),
        }
        out.push('-');
        out.push_str(itoa::Buffer::new().format(self.minor));
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            Kind::Local => write!(f, "{:08x}-{}", self.major, self.minor),
            Kind::Stream => write!(f, "{}-{}", self.major, self.minor),
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
        let (major, minor) = s.split_once('-').ok_or(InvalidCursor)?;
        let minor = minor.parse().map_err(|_| InvalidCursor)?;
        // Stream ids are millisecond timestamps: 13 digits today, never 8.
        if major.len() == 8 {
            let epoch = u32::from_str_radix(major, 16).map_err(|_| InvalidCursor)?;
            Ok(Cursor::new(epoch, minor))
        } else if !major.is_empty() && major.bytes().all(|b| b.is_ascii_digit()) {
            Ok(Cursor::stream(major.parse().map_err(|_| InvalidCursor)?, minor))
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
