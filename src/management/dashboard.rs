//! The web dashboard: static files compiled into the binary and served at `/` of the
//! management listener (everything outside `/api/`). The pages are plain HTML, CSS and
//! ES modules that call the HTTP API with the credentials typed into their login form,
//! so serving them needs no authentication, no bundler and no network access.
//!
//! Caching: the file names carry no content hash, so browsers must revalidate
//! (`cache-control: no-cache`); each file's `etag` (a hash of its bytes) makes that a
//! 304 without a body. The content security policy allows only this origin's
//! scripts, styles and API calls.

use std::sync::OnceLock;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Response, StatusCode};

/// One file of the dashboard.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($path:literal, $type:expr) => {
        Asset { path: concat!("/", $path), content_type: $type, body: include_bytes!(concat!("dashboard/", $path)) }
    };
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";

static ASSETS: &[Asset] = &[
    asset!("index.html", HTML),
    asset!("app.css", "text/css; charset=utf-8"),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("dom.js", JS),
    asset!("chart.js", JS),
    asset!("pages/overview.js", JS),
    asset!("pages/connections.js", JS),
    asset!("pages/exchanges.js", JS),
    asset!("pages/queues.js", JS),
    asset!("pages/admin.js", JS),
    asset!("favicon.svg", "image/svg+xml"),
];

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
                   frame-ancestors 'none'";

/// The answer for a path outside `/api/`: a dashboard file, 405 for a method other than
/// GET or HEAD on one, or `None` (the caller's 404).
pub fn answer(method: &Method, path: &str, if_none_match: Option<&str>) -> Option<Response<Full<Bytes>>> {
    let path = if path == "/" { "/index.html" } else { path };
    let index = ASSETS.iter().position(|a| a.path == path)?;
    let asset = &ASSETS[index];
    if method != Method::GET && method != Method::HEAD {
        return Some(
            Response::builder()
                .status(StatusCode::METHOD_NOT_ALLOWED)
                .header("allow", "GET, HEAD")
                .body(Full::new(Bytes::new()))
                .unwrap_or_default(),
        );
    }
    let etag = &etags()[index];
    let not_modified = if_none_match.is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let builder = Response::builder()
        .header("etag", etag.as_str())
        .header("cache-control", "no-cache")
        .header("x-content-type-options", "nosniff")
        .header("referrer-policy", "no-referrer");
    let builder = if asset.content_type == HTML {
        builder.header("content-security-policy", CSP).header("x-frame-options", "DENY")
    } else {
        builder
    };
    let response = if not_modified {
        builder.status(StatusCode::NOT_MODIFIED).body(Full::new(Bytes::new()))
    } else {
        let body = if method == Method::HEAD { Bytes::new() } else { Bytes::from_static(asset.body) };
        builder
            .status(StatusCode::OK)
            .header("content-type", asset.content_type)
            .header("content-length", asset.body.len())
            .body(Full::new(body))
    };
    Some(response.unwrap_or_default())
}

/// Each asset's entity tag: FNV-1a of its bytes, computed once.
fn etags() -> &'static [String] {
    static ETAGS: OnceLock<Vec<String>> = OnceLock::new();
    ETAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| {
                let hash = a
                    .body
                    .iter()
                    .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3));
                format!("\"{hash:016x}\"")
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn body(r: Response<Full<Bytes>>) -> Bytes {
        smol::block_on(r.into_body().collect()).map(|c| c.to_bytes()).unwrap_or_default()
    }

    #[test]
    fn root_is_the_index_page_with_its_headers() {
        let r = answer(&Method::GET, "/", None).expect("index");
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], HTML);
        assert_eq!(r.headers()["cache-control"], "no-cache");
        assert!(r.headers()["content-security-policy"].to_str().unwrap().contains("script-src 'self'"));
        assert!(String::from_utf8_lossy(&body(r)).contains("<script type=\"module\" src=\"app.js\">"));
    }

    #[test]
    fn every_asset_has_its_type_and_every_module_import_is_served() {
        let r = answer(&Method::GET, "/pages/queues.js", None).expect("module");
        assert_eq!(r.headers()["content-type"], JS);
        assert_eq!(
            answer(&Method::GET, "/favicon.svg", None).expect("icon").headers()["content-type"],
            "image/svg+xml"
        );
        // Every `from './x.js'` / `'../x.js'` in a module names a served file.
        for a in ASSETS.iter().filter(|a| a.content_type == JS) {
            let text = std::str::from_utf8(a.body).expect("UTF-8");
            let dir = &a.path[..a.path.rfind('/').unwrap_or(0)];
            for line in text.lines().filter(|l| l.starts_with("import ")) {
                let target = line.rsplit(['\'', '"']).nth(1).expect("import source");
                let resolved = match target.strip_prefix("../") {
                    Some(rest) => format!("{}/{rest}", &dir[..dir.rfind('/').unwrap_or(0)]),
                    None => format!("{dir}/{}", target.trim_start_matches("./")),
                };
                assert!(
                    ASSETS.iter().any(|b| b.path == resolved),
                    "{} imports {target} ({resolved}): not served",
                    a.path
                );
            }
        }
    }

    #[test]
    fn a_matching_etag_is_304_and_head_has_no_body() {
        let first = answer(&Method::GET, "/app.js", None).expect("app.js");
        let etag = first.headers()["etag"].to_str().unwrap().to_string();
        let again = answer(&Method::GET, "/app.js", Some(&etag)).expect("app.js");
        assert_eq!(again.status(), 304);
        assert!(body(again).is_empty());
        let stale = answer(&Method::GET, "/app.js", Some("\"0\"")).expect("app.js");
        assert_eq!(stale.status(), 200);
        let head = answer(&Method::HEAD, "/app.css", None).expect("app.css");
        assert_eq!(head.status(), 200);
        assert!(body(head).is_empty());
    }

    #[test]
    fn unknown_paths_are_not_dashboard_files_and_writes_are_405() {
        assert!(answer(&Method::GET, "/nope.js", None).is_none());
        assert!(answer(&Method::GET, "/dashboard/app.js", None).is_none());
        assert!(answer(&Method::GET, "/../Cargo.toml", None).is_none());
        let post = answer(&Method::POST, "/", None).expect("405");
        assert_eq!(post.status(), 405);
        assert_eq!(post.headers()["allow"], "GET, HEAD");
    }
}
