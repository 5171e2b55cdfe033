//! `GET /`: the status page: plain HTML, CSS and a little vanilla JavaScript, embedded in
//! the binary (no build step). Every URL in it is relative, so it works wherever
//! [`configure`](super::configure) is mounted (`web::scope("/ops")` serves it at `/ops/`;
//! `/ops` redirects there). The page only reads: `sessions`, `overview`, `rules` and
//! `events`.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse};

use super::auth::Authorized;

const INDEX_HTML: &str = include_str!("assets/index.html");
const STYLE_CSS: &str = include_str!("assets/style.css");
const APP_JS: &str = include_str!("assets/app.js");

/// The page's Content-Security-Policy: nothing but its own scripts, styles and requests.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, content_type))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(body)
}

/// `GET /`: the page.
pub(crate) async fn index(_: Authorized) -> HttpResponse {
    let mut r = asset("text/html; charset=utf-8", INDEX_HTML);
    if let Ok(v) = header::HeaderValue::from_str(CSP) {
        r.headers_mut().insert(header::CONTENT_SECURITY_POLICY, v);
    }
    r
}

/// `GET ` (the mount point without its trailing slash, e.g. `/ops`): redirects to `/ops/`
/// so that the page's relative URLs resolve under it.
pub(crate) async fn to_index(req: HttpRequest) -> HttpResponse {
    let location = format!("{}/", req.path());
    HttpResponse::PermanentRedirect()
        .insert_header((header::LOCATION, location))
        .finish()
}

/// `GET /assets/style.css`.
pub(crate) async fn style(_: Authorized) -> HttpResponse {
    asset("text/css; charset=utf-8", STYLE_CSS)
}

/// `GET /assets/app.js`.
pub(crate) async fn app(_: Authorized) -> HttpResponse {
    asset("text/javascript; charset=utf-8", APP_JS)
}
