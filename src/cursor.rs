//! Positions in the stream of notifications, as clients see them.

use std::fmt;
use std::str::FromStr;

/// A position in the stream of emitted notifications.
///
/// Opaque to clients: a string such as `5f1c2a9e-42`. The first part is the
/// epoch, chosen at random when the [`Notifier`](crate::Notifier) starts, so a
/// cursor from before a restart is recognised as foreign; the second is the
/// sequence number of the last notification covered (`0` before the first).
///
/// ```
/// use tidings::Cursor;
///
/// let c: Cursor = "5f1c2a9e-42".parse().unwrap();
/// assert_eq!(c.seq(), 42);
/// assert_eq!(c.to_string(), "5f1c2a9e-42");
/// assert!("nonsense".parse::<Cursor>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cursor {
    epoch: u32,
    seq: u64,
}

impl Cursor {
    pub(crate) const fn new(epoch: u32, seq: u64) -> Self {
        Cursor { epoch, seq }
    }

    /// The epoch this cursor belongs to.
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// The sequence number of the last notification this cursor covers.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Appends the wire form to `out` without an intermediate allocation.
    pub(crate) fn push_to(&self, out: &mut String) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        for shift in (0..8).rev() {
            out.push(HEX[((self.epoch >> (shift * 4)) & 0xf) as usize] as char);
        }
        out.push('-');
        out.push_str(itoa::Buffer::new().format(self.seq));
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}-{}", self.epoch, self.seq)
    }
}

/// The error for a string that is not a cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidCursor;

impl fmt::Display for InvalidCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not a tidings cursor (expected `<8 hex digits>-<sequence>`)")
    }
}

impl std::error::Error for InvalidCursor {}

impl FromStr for Cursor {
    type Err = InvalidCursor;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (epoch, seq) = s.split_once('-').ok_or(InvalidCursor)?;
        if epoch.len() != 8 {
            return Err(InvalidCursor);
        }
        let epoch = u32::from_str_radix(epoch, 16).map_err(|_| InvalidCursor)?;
        let seq = seq.parse().map_err(|_| InvalidCursor)?;
        Ok(Cursor { epoch, seq })
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
            "1234567-1",
            "zzzzzzzz-1",
            "12345678-",
            "12345678--1",
        ] {
            assert!(bad.parse::<Cursor>().is_err(), "{bad}");
        }
    }
}
