//! The one vocabulary of the errors the server answers: the `code` of an
//! `error` frame and of an HTTP error's JSON body (see `docs/protocol.md`).

use std::fmt;

use serde::Serialize;

/// Why the server refused something, machine-readable: the `code` field of
/// an `error` frame (the session goes on) and of the JSON body of an HTTP
/// error (see [`Rejection`](crate::axum::Rejection)).
///
/// ```
/// use tidings::ErrorCode;
///
/// assert_eq!(ErrorCode::OriginNotAllowed.as_str(), "origin_not_allowed");
/// assert_eq!(serde_json::to_value(ErrorCode::BadFrame).unwrap(), "bad_frame");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// A client frame that is not JSON, not a known control frame, or names
    /// a malformed collection, filter or cursor.
    BadFrame,
    /// A subscription the authorize hook or its `permit` does not allow,
    /// one over the per-session limits; or a connection the hook refuses
    /// (403).
    Forbidden,
    /// A connection whose client did not say who it is, or whose identity
    /// expired (401).
    Unauthorized,
    /// A connection's query string (`cursor`, `collections`, `where`) is
    /// malformed (400).
    BadQuery,
    /// A request to the WebSocket route that is not a WebSocket handshake
    /// (400, 426).
    NotWebsocket,
    /// A WebSocket handshake from a page of another site (403).
    OriginNotAllowed,
    /// The server is shutting down (503).
    ShuttingDown,
    /// A method other than GET on the library's routes (405).
    MethodNotAllowed,
    /// A handler extracts a `Batch` (or a snapshot) without the layer that
    /// provides it (500: a bug in the application's router).
    MissingLayer,
    /// A `tidings-session` header that is not a session's token (400).
    BadSessionHeader,
}

impl ErrorCode {
    /// Every code, in the order `docs/protocol.md` lists them.
    pub const ALL: &'static [ErrorCode] = &[
        ErrorCode::BadFrame,
        ErrorCode::Forbidden,
        ErrorCode::Unauthorized,
        ErrorCode::BadQuery,
        ErrorCode::NotWebsocket,
        ErrorCode::OriginNotAllowed,
        ErrorCode::ShuttingDown,
        ErrorCode::MethodNotAllowed,
        ErrorCode::MissingLayer,
        ErrorCode::BadSessionHeader,
    ];

    /// The code as it appears on the wire and in metrics labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadFrame => "bad_frame",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::BadQuery => "bad_query",
            ErrorCode::NotWebsocket => "not_websocket",
            ErrorCode::OriginNotAllowed => "origin_not_allowed",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::MissingLayer => "missing_layer",
            ErrorCode::BadSessionHeader => "bad_session_header",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The wire form and `as_str` agree, and `docs/protocol.md` documents
    /// every code: a code cannot be added and forgotten there.
    #[test]
    fn every_code_is_documented_with_its_wire_form() {
        let document =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/protocol.md")).unwrap();
        for &code in ErrorCode::ALL {
            assert_eq!(serde_json::to_value(code).unwrap(), code.as_str());
            assert!(document.contains(&format!("`{code}`")), "docs/protocol.md does not list `{code}`");
        }
    }
}
