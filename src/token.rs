//! Who a session is on the wire: its public id, and the secret token only
//! it knows.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

/// The public id of a connected session, sent in its `hello` frame and as
/// the `origin` of the notifications its requests cause.
///
/// It is derived from the session's [`SessionToken`] (the first 8 bytes of
/// its SHA-256), so every instance computes the same id, nobody can choose
/// which id their writes show, and the id does not reveal the token. It
/// cannot make a session skip anything: only the token can.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(u64);

impl SessionId {
    /// A session id from its numeric value.
    pub const fn from_raw(raw: u64) -> Self {
        SessionId(raw)
    }

    /// Appends the 16 hex digits of the id.
    pub(crate) fn push_to(self, out: &mut String) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        for shift in (0..16).rev() {
            out.push(HEX[((self.0 >> (shift * 4)) & 0xf) as usize] as char);
        }
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl FromStr for SessionId {
    type Err = std::num::ParseIntError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        u64::from_str_radix(s, 16).map(SessionId)
    }
}

impl Serialize for SessionId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for SessionId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The secret of a connected session: 16 random bytes, sent only to that
/// session, in its `hello` frame (as 32 lowercase hex digits).
///
/// The client puts it in the `tidings-session` header of its own HTTP
/// writes so that the notifications they cause skip it (see
/// [`OriginToken`](crate::axum::OriginToken)). It is never broadcast: other
/// sessions see only its [`SessionId`]. Comparing two tokens takes the same
/// time whatever they hold, so timing does not reveal how much of a guess was
/// right. `Debug` shows the public id, never the secret; `Display` writes the
/// secret (its wire form).
#[derive(Clone, Copy)]
pub struct SessionToken {
    secret: [u8; 16],
    /// Derived once, here: frames carry it, sessions are keyed by it.
    id: SessionId,
}

impl SessionToken {
    /// A fresh token from the operating system's random number generator.
    pub(crate) fn generate() -> Self {
        let mut secret = [0; 16];
        // Without the OS generator no session can be secured: nothing
        // sensible to fall back to.
        getrandom::fill(&mut secret).expect("the operating system's random number generator failed");
        SessionToken::from_secret(secret)
    }

    fn from_secret(secret: [u8; 16]) -> Self {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(secret);
        let mut first = [0; 8];
        first.copy_from_slice(&digest[..8]);
        SessionToken { secret, id: SessionId(u64::from_be_bytes(first)) }
    }

    /// The public id derived from this token.
    pub fn id(&self) -> SessionId {
        self.id
    }
}

impl PartialEq for SessionToken {
    /// Constant time: every byte is compared, whatever differs first.
    fn eq(&self, other: &Self) -> bool {
        let diff = self.secret.iter().zip(&other.secret).fold(0u8, |acc, (a, b)| acc | (a ^ b));
        // Keeps the optimizer from turning the fold into an early exit.
        std::hint::black_box(diff) == 0
    }
}

impl Eq for SessionToken {}

impl std::hash::Hash for SessionToken {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.secret.hash(state);
    }
}

impl fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionToken {{ id: {}, .. }}", self.id)
    }
}

impl fmt::Display for SessionToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.secret.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// A string that is not a [`SessionToken`]: a token is exactly 32 lowercase
/// hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidSessionToken;

impl fmt::Display for InvalidSessionToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a session token is 32 lowercase hex digits")
    }
}

impl std::error::Error for InvalidSessionToken {}

impl FromStr for SessionToken {
    type Err = InvalidSessionToken;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        fn digit(c: u8) -> Result<u8, InvalidSessionToken> {
            match c {
                b'0'..=b'9' => Ok(c - b'0'),
                b'a'..=b'f' => Ok(c - b'a' + 10),
                _ => Err(InvalidSessionToken),
            }
        }
        let s = s.as_bytes();
        if s.len() != 32 {
            return Err(InvalidSessionToken);
        }
        let mut secret = [0; 16];
        for (byte, pair) in secret.iter_mut().zip(s.chunks_exact(2)) {
            *byte = digit(pair[0])? << 4 | digit(pair[1])?;
        }
        Ok(SessionToken::from_secret(secret))
    }
}

impl Serialize for SessionToken {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for SessionToken {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_round_trip() {
        let id = SessionId::from_raw(0x1234);
        assert_eq!(id.to_string().parse::<SessionId>().unwrap(), id);
        let mut s = String::new();
        id.push_to(&mut s);
        assert_eq!(s, id.to_string());
    }

    #[test]
    fn tokens_round_trip_and_derive_their_id() {
        let zero: SessionToken = "00000000000000000000000000000000".parse().unwrap();
        // The first 8 bytes of SHA-256 of 16 zero bytes.
        assert_eq!(zero.id().to_string(), "374708fff7719dd5");
        let counting: SessionToken = "000102030405060708090a0b0c0d0e0f".parse().unwrap();
        assert_eq!(counting.to_string(), "000102030405060708090a0b0c0d0e0f");
        assert_eq!(counting.id().to_string(), "be45cb2605bf36be");
        let fresh = SessionToken::generate();
        assert_eq!(fresh.to_string().parse::<SessionToken>().unwrap(), fresh);
        assert_ne!(SessionToken::generate(), fresh);
    }

    #[test]
    fn tokens_parse_strictly_and_compare_whole() {
        for bad in [
            "",
            "00",
            "374708fff7719dd5",
            "000102030405060708090A0B0C0D0E0F",
            "000102030405060708090a0b0c0d0e0g",
        ] {
            assert_eq!(bad.parse::<SessionToken>(), Err(InvalidSessionToken), "{bad}");
        }
        assert!("000102030405060708090a0b0c0d0e0f0".parse::<SessionToken>().is_err());
        let a: SessionToken = "000102030405060708090a0b0c0d0e0f".parse().unwrap();
        let last: SessionToken = "000102030405060708090a0b0c0d0e00".parse().unwrap();
        let first: SessionToken = "ff0102030405060708090a0b0c0d0e0f".parse().unwrap();
        assert!(a != last && a != first && a == a.to_string().parse().unwrap());
    }

    #[test]
    fn debug_shows_the_id_not_the_secret() {
        let token: SessionToken = "000102030405060708090a0b0c0d0e0f".parse().unwrap();
        let debug = format!("{token:?}");
        assert_eq!(debug, "SessionToken { id: be45cb2605bf36be, .. }");
        assert!(!debug.contains("0102030405"));
    }
}
