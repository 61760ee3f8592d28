//! The web UI of AI Flow: a few static files (HTML, CSS, vanilla JavaScript, an SVG icon)
//! embedded in the binary and served at `/` and `/ui/…`. The pages call the JSON API under
//! `/api/v1` and its Server-Sent Events stream; nothing is fetched from outside and there is no
//! build step. Pages are addressed by the URL fragment (`/#/workflows/NAME`), so every page is
//! served by `/`.

use std::sync::LazyLock;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const ASSETS: &[Asset] = &[
    Asset {
        name: "index.html",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("../assets/index.html"),
    },
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../assets/app.js"),
    },
    Asset {
        name: "app.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../assets/app.css"),
    },
    Asset {
        name: "icon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("../assets/icon.svg"),
    },
];

/// Scripts only from this server; styles may be set inline (the SVG drawings use attributes).
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                   img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'";

/// A strong validator per asset: FNV-1a of its bytes, so a changed binary never serves a stale
/// page from the browser's cache while an unchanged one answers `304`.
static ETAGS: LazyLock<Vec<HeaderValue>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|a| {
            let hash = a.body.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
            });
            HeaderValue::from_str(&format!("\"{hash:016x}\"")).expect("an ASCII etag")
        })
        .collect()
});

/// `GET /` (the application page) and `GET /ui/{file}` (its script, style and icon). Needs no
/// state: merge it into the server's router beside the API.
pub fn router() -> Router {
    Router::new()
        .route("/", get(index))
        .route("/ui/{file}", get(asset))
}

async fn index(headers: HeaderMap) -> Response {
    serve(0, &headers)
}

async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    match ASSETS.iter().position(|a| a.name == file) {
        Some(i) => serve(i, &headers),
        None => (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("no UI file {file:?}"),
        )
            .into_response(),
    }
}

fn serve(i: usize, headers: &HeaderMap) -> Response {
    let a = &ASSETS[i];
    let etag = ETAGS[i].clone();
    let common = [
        (header::ETAG, etag.clone()),
        // Revalidate every time: a page load costs one small 304 per file.
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        ),
    ];
    if headers.get(header::IF_NONE_MATCH).is_some_and(|v| {
        v.as_bytes()
            .split(|b| *b == b',')
            .any(|t| t.trim_ascii() == etag.as_bytes())
    }) {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    (
        common,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(a.content_type),
        )],
        a.body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn get(path: &str, etag: Option<&HeaderValue>) -> (StatusCode, HeaderMap, String) {
        let mut req = Request::get(path);
        if let Some(e) = etag {
            req = req.header(header::IF_NONE_MATCH, e);
        }
        let res = router()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let (parts, body) = res.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        (
            parts.status,
            parts.headers,
            String::from_utf8_lossy(&bytes).into_owned(),
        )
    }

    #[tokio::test]
    async fn index_names_its_script_and_style_which_are_served() {
        let (status, headers, html) = get("/", None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert!(
            headers[header::CONTENT_SECURITY_POLICY]
                .to_str()
                .unwrap()
                .contains("script-src 'self'")
        );
        for file in ["/ui/app.js", "/ui/app.css", "/ui/icon.svg"] {
            assert!(html.contains(file), "index.html links {file}");
            let (status, headers, body) = get(file, None).await;
            assert_eq!(status, StatusCode::OK, "{file}");
            assert!(!body.is_empty(), "{file}");
            assert!(headers.contains_key(header::ETAG), "{file}");
        }
    }

    #[test]
    fn nothing_is_loaded_from_outside() {
        for a in ASSETS {
            let text = String::from_utf8_lossy(a.body);
            for (i, _) in text.match_indices("http") {
                let rest = &text[i..];
                // The SVG namespace is a name, not a download.
                assert!(
                    !(rest.starts_with("http://") || rest.starts_with("https://"))
                        || rest.starts_with("http://www.w3.org/2000/svg"),
                    "{} refers to an outside address: {:.60}",
                    a.name,
                    rest
                );
            }
        }
    }

    #[tokio::test]
    async fn unchanged_files_answer_not_modified_and_unknown_files_404() {
        let (_, headers, _) = get("/ui/app.js", None).await;
        let etag = headers[header::ETAG].clone();
        let (status, _, body) = get("/ui/app.js", Some(&etag)).await;
        assert_eq!(status, StatusCode::NOT_MODIFIED);
        assert!(body.is_empty());
        let (status, _, body) = get("/ui/nope.js", None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body.contains("nope.js"));
    }
}
