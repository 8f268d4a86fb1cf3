//! The browser client, served by [`routes`](crate::axum::routes): small,
//! dependency-free ES modules (`src/client/`) that connect to the WebSocket
//! (falling back to Server-Sent Events), resume with the last cursor, and
//! reload what changed. See `docs/client.md`. (The same files are the npm
//! package `tidings`, `src/client/package.json`, of the crate's version.)
//!
//! The modules are served under `/tidings/<release>/`, cached forever: the
//! release is the crate's version and a hash of the files, so a URL never
//! serves two contents, even between released versions. Everything an
//! entry imports comes from one release, whatever a deployment does
//! meanwhile. They import each other as `./backoff.js`, which resolves the
//! same way in the browser and in the source tree (where the Node tests
//! import them). Pages import short-lived entries that re-export the current
//! release: `/tidings.js`, and `/tidings/<module>.js` for each public
//! module (the client and its adapters). Being relative, every specifier
//! also resolves when the routes are nested under a prefix.
//!
//! During a rolling deployment an instance may be asked for a release it
//! does not serve (an entry from a newer instance, a module requested from
//! an older one): it redirects to its own, so the page works, with modules
//! of two releases in the rare page that hit both.

use std::sync::OnceLock;

use axum::Router;
use axum::body::Bytes;
use axum::extract::Path;
use axum::response::IntoResponse;
use axum::routing::get;
use http::StatusCode;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, LOCATION};

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

/// How long browsers keep a released file: for ever (its URL changes with
/// its content).
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// How long browsers keep an entry: not at all without asking again, so a
/// page loaded after a deployment imports the new release.
const SHORT_LIVED: &str = "no-cache";

/// The release the modules are served under: the crate's version and a
/// hash of every file served (FNV-1a, 32 bits), such as `0.1.0-1f2e3d4c`.
pub(crate) fn release() -> &'static str {
    static RELEASE: OnceLock<String> = OnceLock::new();
    RELEASE.get_or_init(|| {
        let mut hash: u32 = 0x811c_9dc5;
        let sources = MODULES.iter().map(|(_, s, _)| *s).chain(DECLARATIONS.iter().map(|(_, s)| *s));
        for byte in sources.flat_map(str::bytes) {
            hash = (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193);
        }
        format!("{VERSION}-{hash:08x}")
    })
}

/// `GET /tidings.js`, `GET /tidings/<module>.js` (the entries),
/// `GET /tidings/<release>/<module>.js` and `…/<module>.d.ts`, and a
/// redirect from another release's files to this one's.
pub(crate) fn routes<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let release = release();
    let mut router = Router::new()
        .route("/tidings.js", entry(format!("export * from \"./tidings/{release}/tidings.js\";\n"), JS));
    for (name, source, public) in MODULES {
        router = router.route(&format!("/tidings/{release}/{name}"), file(source, JS));
        if public == Public::Yes {
            router = router.route(&format!("/tidings/{name}"), entry(reexport(name), JS));
        }
    }
    for (name, source) in DECLARATIONS {
        router = router.route(&format!("/tidings/{release}/{name}"), file(source, TS));
        // `export * from "./<release>/tidings.js"` in a declaration file
        // takes the types of `./<release>/tidings.d.ts`.
        let module = name.replace(".d.ts", ".js");
        router = router.route(&format!("/tidings/{name}"), entry(reexport(&module), TS));
    }
    router.route("/tidings/{release}/{file}", get(other_release).fallback(super::method_not_allowed))
}

/// A file of a release this instance does not serve: redirected to this
/// instance's (relatively, so a nested prefix is kept), never cached.
async fn other_release(Path((_, file)): Path<(String, String)>) -> axum::response::Response {
    let served =
        MODULES.iter().map(|(n, ..)| *n).chain(DECLARATIONS.iter().map(|(n, _)| *n)).any(|n| n == file);
    if !served {
        return StatusCode::NOT_FOUND.into_response();
    }
    let location = format!("../{}/{file}", release());
    (StatusCode::TEMPORARY_REDIRECT, [(LOCATION, location.as_str()), (CACHE_CONTROL, "no-store")])
        .into_response()
}

const JS: &str = "text/javascript; charset=utf-8";
const TS: &str = "application/typescript; charset=utf-8";

/// What the entry of module `name` says.
fn reexport(name: &str) -> String {
    let release = release();
    format!("// tidings {release}: see docs/client.md.\nexport * from \"./{release}/{name}\";\n")
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
    async fn serves_every_module_at_its_release_and_entries_that_point_there() {
        let mut router: Router = routes();
        let release = release();
        assert!(
            release.starts_with(&format!("{VERSION}-")) && release.len() == VERSION.len() + 9,
            "{release}"
        );
        for (name, source, public) in MODULES {
            let (status, headers, body) = get(&mut router, &format!("/tidings/{release}/{name}")).await;
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
            assert_eq!(imports(body), [format!("./{release}/{name}")], "{name}'s entry");
        }
        let (_, headers, body) = get(&mut router, "/tidings.js").await;
        assert_eq!(
            (&headers[CONTENT_TYPE], &headers[CACHE_CONTROL]),
            (&JS.parse().unwrap(), &SHORT_LIVED.parse().unwrap())
        );
        assert_eq!(imports(std::str::from_utf8(&body).unwrap()), [format!("./tidings/{release}/tidings.js")]);
        for (name, source) in DECLARATIONS {
            let (status, headers, body) = get(&mut router, &format!("/tidings/{release}/{name}")).await;
            assert_eq!(status, StatusCode::OK, "{name}");
            assert_eq!(headers[CONTENT_TYPE], TS, "{name}");
            assert_eq!(body, source.as_bytes(), "{name}");
            let (_, headers, body) = get(&mut router, &format!("/tidings/{name}")).await;
            assert_eq!(headers[CACHE_CONTROL], SHORT_LIVED, "{name}");
            let module = name.replace(".d.ts", ".js");
            assert_eq!(imports(std::str::from_utf8(&body).unwrap()), [format!("./{release}/{module}")]);
        }
        let (status, ..) = get(&mut router, "/tidings/nothing.js").await;
        assert_eq!(status, StatusCode::NOT_FOUND);

        // Another release's file (a rolling deployment): redirected here,
        // relatively, and never cached; what is not a file of ours is not.
        let (status, headers, _) = get(&mut router, "/tidings/0.0.9-00000000/react.js").await;
        assert_eq!(status, StatusCode::TEMPORARY_REDIRECT);
        assert_eq!(headers[LOCATION], format!("../{release}/react.js").as_str());
        assert_eq!(headers[CACHE_CONTROL], "no-store");
        let (status, ..) = get(&mut router, "/tidings/0.0.9-00000000/evil.js").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
}
