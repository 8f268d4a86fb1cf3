//! The browser client, served by [`routes`](crate::axum::routes): small,
//! dependency-free ES modules (`src/client/`) that connect to the WebSocket
//! (falling back to Server-Sent Events), resume with the last cursor, and
//! reload what changed. See `docs/client.md`.
//!
//! Pages import `/tidings.js`. The modules are served under `/tidings/` and
//! import each other as `./backoff.js`, which resolves the same way in the
//! browser (against `/tidings/…`) and in the source tree (against
//! `src/client/…`, where the Node tests import them). `/tidings.js` is only a
//! re-export of `/tidings/tidings.js`, so it stays out of the app's root and
//! needs no rewriting of import specifiers.

use axum::Router;
use axum::response::IntoResponse;
use axum::routing::get;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};

/// The modules, compiled into the crate, by their file name under
/// `/tidings/` (the same as in `src/client/`).
const MODULES: [(&str, &str); 10] = [
    ("tidings.js", include_str!("../client/tidings.js")),
    ("backoff.js", include_str!("../client/backoff.js")),
    ("coalescer.js", include_str!("../client/coalescer.js")),
    ("connection.js", include_str!("../client/connection.js")),
    ("session.js", include_str!("../client/session.js")),
    ("transport.js", include_str!("../client/transport.js")),
    // The framework adapters: they take the framework as an argument, so
    // they import nothing but their neighbours.
    ("changes.js", include_str!("../client/changes.js")),
    ("react.js", include_str!("../client/react.js")),
    ("rxjs.js", include_str!("../client/rxjs.js")),
    ("tanstack.js", include_str!("../client/tanstack.js")),
];

/// The TypeScript declarations of the public modules, served next to them
/// (`/tidings/tidings.d.ts`) so that an application can fetch the types of
/// the client it is served. See docs/client.md, "TypeScript".
const DECLARATIONS: [(&str, &str); 5] = [
    ("tidings.d.ts", include_str!("../client/tidings.d.ts")),
    ("changes.d.ts", include_str!("../client/changes.d.ts")),
    ("react.d.ts", include_str!("../client/react.d.ts")),
    ("rxjs.d.ts", include_str!("../client/rxjs.d.ts")),
    ("tanstack.d.ts", include_str!("../client/tanstack.d.ts")),
];

/// `/tidings.js`: what pages import. The specifier is relative, so the
/// modules are found under the same prefix when the routes are nested.
const ENTRY: &str =
    "// The tidings browser client: see docs/client.md.\nexport * from \"./tidings/tidings.js\";\n";

/// `GET /tidings.js`, `GET /tidings/<module>.js` and `GET /tidings/<module>.d.ts`.
pub(crate) fn routes<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let not_allowed = super::method_not_allowed;
    let mut router =
        Router::new().route("/tidings.js", get(|| async { script(ENTRY) }).fallback(not_allowed));
    for (name, source) in MODULES {
        let module = get(move || async move { script(source) }).fallback(not_allowed);
        router = router.route(&format!("/tidings/{name}"), module);
    }
    for (name, source) in DECLARATIONS {
        let declaration = get(move || async move { typescript(source) }).fallback(not_allowed);
        router = router.route(&format!("/tidings/{name}"), declaration);
    }
    router
}

/// A module as a JavaScript response. Browsers may cache it for five
/// minutes, so a new version reaches pages soon after a deployment.
fn script(source: &'static str) -> impl IntoResponse {
    ([(CONTENT_TYPE, "text/javascript; charset=utf-8"), (CACHE_CONTROL, "public, max-age=300")], source)
}

/// A declaration file as a TypeScript response, cached like the modules.
fn typescript(source: &'static str) -> impl IntoResponse {
    (
        [(CONTENT_TYPE, "application/typescript; charset=utf-8"), (CACHE_CONTROL, "public, max-age=300")],
        source,
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use axum::body::Body;
    use http::{Request, StatusCode};
    use tower_service::Service;

    use super::*;

    /// The relative specifiers a module imports or re-exports from.
    fn imports(source: &str) -> Vec<&str> {
        source
            .lines()
            .map(str::trim_start)
            .filter(|line| !line.starts_with('*') && !line.starts_with("/*") && !line.starts_with("//"))
            .filter_map(|line| {
                line.split_once("from \"").or_else(|| line.split_once("import \"")).map(|(_, rest)| rest)
            })
            .filter_map(|rest| rest.split_once('"').map(|(specifier, _)| specifier))
            .collect()
    }

    #[test]
    fn every_file_in_src_client_is_served() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/client");
        let files: BTreeSet<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .filter(|name| name.ends_with(".js") || name.ends_with(".d.ts"))
            .collect();
        let served: BTreeSet<String> =
            MODULES.iter().chain(&DECLARATIONS).map(|(name, _)| name.to_string()).collect();
        assert_eq!(files, served);
    }

    #[test]
    fn every_import_is_relative_and_served() {
        assert_eq!(imports(ENTRY), ["./tidings/tidings.js"]);
        for (name, source) in MODULES {
            for specifier in imports(source) {
                let target =
                    specifier.strip_prefix("./").unwrap_or_else(|| panic!("{name} imports {specifier}"));
                assert!(
                    MODULES.iter().any(|(served, _)| *served == target),
                    "{name} imports {specifier}, which is not served"
                );
            }
        }
        assert!(imports(MODULES[0].1).len() >= 4, "the entry's imports are found");
    }

    #[tokio::test]
    async fn serves_the_entry_every_module_and_their_declarations() {
        let mut router: Router = routes();
        let expected = std::iter::once(("/tidings.js".to_string(), ENTRY))
            .chain(MODULES.iter().map(|(name, source)| (format!("/tidings/{name}"), *source)));
        for (path, source) in expected {
            let response = router.call(Request::get(&path).body(Body::empty()).unwrap()).await.unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            assert_eq!(response.headers()[CONTENT_TYPE], "text/javascript; charset=utf-8", "{path}");
            assert_eq!(response.headers()[CACHE_CONTROL], "public, max-age=300", "{path}");
            let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
            assert_eq!(body, source.as_bytes(), "{path}");
        }
        for (name, source) in DECLARATIONS {
            let path = format!("/tidings/{name}");
            let response = router.call(Request::get(&path).body(Body::empty()).unwrap()).await.unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            assert_eq!(response.headers()[CONTENT_TYPE], "application/typescript; charset=utf-8", "{path}");
            let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
            assert_eq!(body, source.as_bytes(), "{path}");
        }
        let missing =
            router.call(Request::get("/tidings/nothing.js").body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    }
}
