//! Cross-site WebSocket hijacking protection: browsers send cookies with a
//! WebSocket handshake from any site, so the `Origin` header must be checked.

use http::header::{HOST, ORIGIN};
use http::{HeaderMap, StatusCode};

use super::{Origins, Rejection};
use crate::ErrorCode;

/// Accepts or refuses the upgrade request's `Origin`.
pub(crate) fn check(policy: &Origins, headers: &HeaderMap) -> Result<(), Rejection> {
    // Browsers always send Origin on a WebSocket handshake; its absence means
    // a non-browser client, which cookies-based hijacking does not concern.
    let Some(origin) = headers.get(ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or_default();
    let allowed = match policy {
        Origins::Any => true,
        Origins::List(list) => list.iter().any(|o| o.trim_end_matches('/').eq_ignore_ascii_case(origin)),
        Origins::SameHost => {
            let host = headers.get(HOST).and_then(|h| h.to_str().ok());
            let origin_host = origin.split_once("://").map(|(_, rest)| rest.trim_end_matches('/'));
            matches!((origin_host, host), (Some(o), Some(h)) if o.eq_ignore_ascii_case(h))
        }
    };
    if allowed {
        Ok(())
    } else {
        Err(Rejection::new(
            StatusCode::FORBIDDEN,
            ErrorCode::OriginNotAllowed,
            format!("origin `{origin}` may not open a WebSocket here"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(origin: Option<&str>, host: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(HOST, host.parse().unwrap());
        if let Some(o) = origin {
            h.insert(ORIGIN, o.parse().unwrap());
        }
        h
    }

    #[test]
    fn same_host_compares_host_and_port() {
        let p = Origins::SameHost;
        assert!(check(&p, &headers(Some("http://127.0.0.1:3000"), "127.0.0.1:3000")).is_ok());
        assert!(check(&p, &headers(Some("http://127.0.0.1:3001"), "127.0.0.1:3000")).is_err());
        assert!(check(&p, &headers(Some("https://evil.example"), "127.0.0.1:3000")).is_err());
        assert!(check(&p, &headers(Some("null"), "127.0.0.1:3000")).is_err());
        assert!(check(&p, &headers(None, "127.0.0.1:3000")).is_ok());
    }

    #[test]
    fn list_matches_exact_origins() {
        let p = Origins::List(vec!["https://app.example.com".into()]);
        assert!(check(&p, &headers(Some("https://app.example.com"), "internal:80")).is_ok());
        assert!(check(&p, &headers(Some("http://app.example.com"), "internal:80")).is_err());
        assert!(check(&Origins::Any, &headers(Some("https://x.example"), "y")).is_ok());
    }
}
