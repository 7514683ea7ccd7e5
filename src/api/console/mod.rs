//! The web console at `/ui/`: static files embedded in the binary, served
//! without a token (they hold no data; every data call the page makes sends
//! the bearer token the user entered). The page is a few ES modules on
//! Preact + htm and cronstrue, vendored in `vendor/` (see its README.md):
//! nothing is built with Node, and nothing is fetched from elsewhere.
//!
//! Every response carries a strict Content-Security-Policy (scripts,
//! styles and API calls from this origin only; no inline scripts, no
//! frames) and an ETag; browsers revalidate (`no-cache`) and get a 304
//! while the binary is the same.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use sha2::{Digest, Sha256};

use super::error::ApiError;
use super::AppState;

/// Where the console is mounted (`/ui` redirects here).
pub const PREFIX: &str = "/ui/";

/// The policy of every console response: everything from this origin only,
/// no inline script or style elements, no plugins, no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self'; connect-src 'self'; font-src 'self'; base-uri 'none'; \
    form-action 'none'; frame-ancestors 'none'";

/// One embedded file.
struct Asset {
    /// Its path below [`PREFIX`] (`""`: the page itself).
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const SVG: &str = "image/svg+xml";
const TEXT: &str = "text/plain; charset=utf-8";

macro_rules! asset {
    ($path:literal, $file:literal, $type:expr) => {
        Asset {
            path: $path,
            content_type: $type,
            body: include_bytes!($file),
        }
    };
}

/// Every file the console serves.
static ASSETS: &[Asset] = &[
    asset!("", "assets/index.html", HTML),
    asset!("style.css", "assets/style.css", CSS),
    asset!("favicon.svg", "assets/favicon.svg", SVG),
    asset!("app.js", "assets/app.js", JS),
    asset!("api.js", "assets/api.js", JS),
    asset!("format.js", "assets/format.js", JS),
    asset!("widgets.js", "assets/widgets.js", JS),
    asset!("schedules.js", "assets/schedules.js", JS),
    asset!("schedule.js", "assets/schedule.js", JS),
    asset!("runs.js", "assets/runs.js", JS),
    asset!("cluster.js", "assets/cluster.js", JS),
    asset!(
        "vendor/htm-preact-standalone.module.js",
        "vendor/htm-preact-standalone.module.js",
        JS
    ),
    asset!("vendor/cronstrue.min.js", "vendor/cronstrue.min.js", JS),
    asset!("vendor/LICENSE-htm", "vendor/LICENSE-htm", TEXT),
    asset!("vendor/LICENSE-preact", "vendor/LICENSE-preact", TEXT),
    asset!("vendor/LICENSE-cronstrue", "vendor/LICENSE-cronstrue", TEXT),
];

/// The strong ETag of each asset (in [`ASSETS`]' order): the first 16 bytes
/// of its SHA-256, so a new binary with a changed file is never served
/// from a stale cache.
static ETAGS: LazyLock<Vec<HeaderValue>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|a| {
            let digest = Sha256::digest(a.body);
            let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
            HeaderValue::from_str(&format!("\"{hex}\"")).unwrap_or(HeaderValue::from_static("\"\""))
        })
        .collect()
});

/// Whether `path` belongs to the console (served without a token).
pub fn is_console_path(path: &str) -> bool {
    path == "/ui" || path.starts_with(PREFIX)
}

/// The console's routes, merged into the API's router (not part of the
/// OpenAPI document: they are files, not API).
pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/ui", get(redirect))
        .route(PREFIX, get(index))
        .route("/ui/{*path}", get(file))
}

async fn redirect() -> Response {
    (
        StatusCode::PERMANENT_REDIRECT,
        [(header::LOCATION, HeaderValue::from_static(PREFIX))],
    )
        .into_response()
}

async fn index(headers: HeaderMap) -> Response {
    serve("", &headers)
}

async fn file(Path(path): Path<String>, headers: HeaderMap) -> Response {
    serve(&path, &headers)
}

/// The asset at `path`, or a 404 naming it; a 304 when the browser's copy
/// (`If-None-Match`) is current.
fn serve(path: &str, request: &HeaderMap) -> Response {
    let Some(i) = ASSETS.iter().position(|a| a.path == path) else {
        return ApiError::not_found(format!("the console has no file {PREFIX}{path}"))
            .into_response();
    };
    let asset = &ASSETS[i];
    let etag = ETAGS
        .get(i)
        .cloned()
        .unwrap_or(HeaderValue::from_static("\"\""));
    let fresh = request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|tag| {
            let tag = tag.trim();
            tag == "*" || tag.trim_start_matches("W/").as_bytes() == etag.as_bytes()
        });
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            )],
            asset.body,
        )
            .into_response()
    };
    let h = response.headers_mut();
    h.insert(header::ETAG, etag);
    // Revalidate every time: a cheap 304, and never a page of one version
    // with scripts of another after an upgrade.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_is_served_with_its_type_and_policy() {
        for a in ASSETS {
            let r = serve(a.path, &HeaderMap::new());
            assert_eq!(r.status(), StatusCode::OK, "{}", a.path);
            assert_eq!(
                r.headers().get(header::CONTENT_TYPE).map(|v| v.as_bytes()),
                Some(a.content_type.as_bytes())
            );
            assert!(r.headers().contains_key(header::CONTENT_SECURITY_POLICY));
            let mut again = HeaderMap::new();
            if let Some(tag) = r.headers().get(header::ETAG) {
                again.insert(header::IF_NONE_MATCH, tag.clone());
            }
            assert_eq!(serve(a.path, &again).status(), StatusCode::NOT_MODIFIED);
        }
        assert_eq!(
            serve("nope.js", &HeaderMap::new()).status(),
            StatusCode::NOT_FOUND
        );
    }

    #[test]
    fn the_page_has_no_inline_script_or_style() {
        let page = std::str::from_utf8(ASSETS[0].body).unwrap_or_default();
        for tag in page.split("<script").skip(1) {
            assert!(tag.contains(" src="), "inline script: <script{tag}");
        }
        assert!(!page.contains("<style"), "inline style element");
        assert!(!page.contains("style="), "inline style attribute");
    }
}
