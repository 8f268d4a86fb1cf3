//! The browser client, served by [`routes`](crate::axum::routes): small,
//! dependency-free ES modules (`src/client/`) that connect to the WebSocket
//! (falling back to Server-Sent Events), resume with the last cursor, and
//! reload what changed. See `docs/client.md`. (The same files are the npm
//! package `tidings`, `src/client/package.json`, of the crate's version.)
//!
//! The modules are served under `/tidings/<version>/`, cached forever: a
//! page gets every module from one version, whatever a deployment does
//! meanwhile. They import each other as `./backoff.js`, which resolves the
//! same way in the browser and in the source tree (where the Node tests
//! import them). Pages import short-lived entries that re-export the current
//! version: `/tidings.js`, and `/tidings/<module>.js` for each public
//! module (the client and its adapters). Being relative, every specifier
//! also resolves when the routes are nested under a prefix.

use axum::Router;
use axum::body::Bytes;
use axum::response::IntoResponse;
use axum::routing::get;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};

/// The client's version: the crate's, and the npm package's.
pub(crate) const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The modules, compiled into the crate, by their file name (the same as
/// in `src/client/`), and whether pages import them (the others are
/// imported by those).
const MODULES: [(&str, &str, Public); 10] = [
    ("tidings.js", include_str!("../client/tidings.js"), Public::Yes),
    ("backoff.js", include_str!("../client/backoff.js"), Public::No),
    ("coalescer.js", include_str!("../client/coalescer.js"), Public::No),
    ("connection.js", include_str!("../client/connection.js"), Public::No),
    ("session.js", include_str!("../client/session.js"), Public::No),
    ("transport.js", include_str!("../client/transport.js"), Public::No),
    // The framework adapters: they take the framework as an argument, so
    // they import nothing but their neighbours.
    ("changes.js", include_str!("../client/changes.js"), Public::Yes),
    ("react.js", include_str!("../client/react.js"), Public::Yes),
    ("rxjs.js", include_str!("../client/rxjs.js"), Public::Yes),
    ("tanstack.js", include_str!("../client/tanstack.js"), Public::Yes),
];

/// Whether pages import a module (it has an entry, and declarations).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Public {
    Yes,
    No,
}

/// The TypeScript declarations of the public modules, served next to them
/// so that an application can fetch the types of the client it is served.
/// See docs/client.md, "TypeScript".
const DECLARATIONS: [(&str, &str); 5] = [
    ("tidings.d.ts", include_str!("../client/tidings.d.ts")),
    ("changes.d.ts", include_str!("../client/changes.d.ts")),
    ("react.d.ts", include_str!("../client/react.d.ts")),
    ("rxjs.d.ts", include_str!("../client/rxjs.d.ts")),
    ("tanstack.d.ts", include_str!("../client/tanstack.d.ts")),
];

/// How long browsers keep a versioned module: for ever (its URL changes
/// with its content).
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// How long browsers keep an entry: not at all without asking again, so a
/// page loaded after a deployment imports the new version.
const SHORT_LIVED: &str = "no-cache";

/// `GET /tidings.js`, `GET /tidings/<module>.js` (the entries),
/// `GET /tidings/<version>/<module>.js` and `…/<module>.d.ts`.
pub(crate) fn routes<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let mut router = Router::new()
        .route("/tidings.js", entry(format!("export * from \"./tidings/{VERSION}/tidings.js\";\n"), JS));
    for (name, source, public) in MODULES {
        router = router.route(&format!("/tidings/{VERSION}/{name}"), file(source, JS));
        if public == Public::Yes {
            router = router.route(&format!("/tidings/{name}"), entry(reexport(name), JS));
        }
    }
    for (name, source) in DECLARATIONS {
        router = router.route(&format!("/tidings/{VERSION}/{name}"), file(source, TS));
        // `export * from "./<version>/tidings.js"` in a declaration file
        // takes the types of `./<version>/tidings.d.ts`.
        let module = name.replace(".d.ts", ".js");
        router = router.route(&format!("/tidings/{name}"), entry(reexport(&module), TS));
    }
    router
}

const JS: &str = "text/javascript; charset=utf-8";
const TS: &str = "application/typescript; charset=utf-8";

/// What the entry of module `name` says.
fn reexport(name: &str) -> String {
    format!("// tidings {VERSION}: see docs/client.md.\nexport * from \"./{VERSION}/{name}\";\n")
}

/// A versioned file, cached for ever.
fn file<S: Clone + Send + Sync + 'static>(
    source: &'static str,
    content_type: &'static str,
) -> axum::routing::MethodRouter<S> {
    get(move || async move { ([(CONTENT_TYPE, content_type), (CACHE_CONTROL, IMMUTABLE)], source) })
        .fallback(super::method_not_allowed)
}

/// An entry, asked for again at every page load.
fn entry<S: Clone + Send + Sync + 'static>(
    text: String,
    content_type: &'static str,
) -> axum::routing::MethodRouter<S> {
    let text = Bytes::from(text);
    get(move || {
        let text = text.clone();
        async move { ([(CONTENT_TYPE, content_type), (CACHE_CONTROL, SHORT_LIVED)], text).into_response() }
    })
    .fallback(super::method_not_allowed)
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
        let served: BTreeSet<String> = MODULES
            .iter()
            .map(|(name, ..)| name.to_string())
            .chain(DECLARATIONS.iter().map(|(name, _)| name.to_string()))
            .collect();
        assert_eq!(files, served);
        // Exactly the public modules have declarations.
        let public: BTreeSet<String> = MODULES
            .iter()
            .filter(|(.., p)| *p == Public::Yes)
            .map(|(n, ..)| n.replace(".js", ".d.ts"))
            .collect();
        assert_eq!(public, DECLARATIONS.iter().map(|(n, _)| n.to_string()).collect());
    }

    /// The npm package is the crate's client, at the crate's version.
    #[test]
    fn the_npm_package_has_the_crate_version() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/client/package.json");
        let package: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        assert_eq!(package["version"], VERSION);
    }

    #[test]
    fn every_import_is_relative_and_served() {
        for (name, source, _) in MODULES {
            for specifier in imports(source) {
                let target =
                    specifier.strip_prefix("./").unwrap_or_else(|| panic!("{name} imports {specifier}"));
                assert!(
                    MODULES.iter().any(|(served, ..)| *served == target),
                    "{name} imports {specifier}, which is not served"
                );
            }
        }
        assert!(imports(MODULES[0].1).len() >= 4, "the entry's imports are found");
    }

    async fn get(router: &mut Router, path: &str) -> (StatusCode, http::HeaderMap, Bytes) {
        let response = router.call(Request::get(path).body(Body::empty()).unwrap()).await.unwrap();
        let (status, headers) = (response.status(), response.headers().clone());
        (status, headers, axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap())
    }

    #[tokio::test]
    async fn serves_every_module_at_its_version_and_entries_that_point_there() {
        let mut router: Router = routes();
        for (name, source, public) in MODULES {
            let (status, headers, body) = get(&mut router, &format!("/tidings/{VERSION}/{name}")).await;
            assert_eq!(status, StatusCode::OK, "{name}");
            assert_eq!(headers[CONTENT_TYPE], JS, "{name}");
            assert_eq!(headers[CACHE_CONTROL], IMMUTABLE, "{name}");
            assert_eq!(body, source.as_bytes(), "{name}");
            let (status, headers, body) = get(&mut router, &format!("/tidings/{name}")).await;
            if public == Public::No {
                assert_eq!(status, StatusCode::NOT_FOUND, "{name} is only served at its version");
                continue;
            }
            assert_eq!(headers[CACHE_CONTROL], SHORT_LIVED, "{name}");
            let body = std::str::from_utf8(&body).unwrap();
            assert_eq!(imports(body), [format!("./{VERSION}/{name}")], "{name}'s entry");
        }
        let (_, headers, body) = get(&mut router, "/tidings.js").await;
        assert_eq!(
            (&headers[CONTENT_TYPE], &headers[CACHE_CONTROL]),
            (&JS.parse().unwrap(), &SHORT_LIVED.parse().unwrap())
        );
        assert_eq!(imports(std::str::from_utf8(&body).unwrap()), [format!("./tidings/{VERSION}/tidings.js")]);
        for (name, source) in DECLARATIONS {
            let (status, headers, body) = get(&mut router, &format!("/tidings/{VERSION}/{name}")).await;
            assert_eq!(status, StatusCode::OK, "{name}");
            assert_eq!(headers[CONTENT_TYPE], TS, "{name}");
            assert_eq!(body, source.as_bytes(), "{name}");
            let (_, headers, body) = get(&mut router, &format!("/tidings/{name}")).await;
            assert_eq!(headers[CACHE_CONTROL], SHORT_LIVED, "{name}");
            let module = name.replace(".d.ts", ".js");
            assert_eq!(imports(std::str::from_utf8(&body).unwrap()), [format!("./{VERSION}/{module}")]);
        }
        let (status, ..) = get(&mut router, "/tidings/nothing.js").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
}
