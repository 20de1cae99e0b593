//! The web status page (docs/api.md `GET /`, `/ui/*`): plain HTML, CSS and JavaScript compiled into
//! the binary, and the cookie login it needs because browsers' EventSource cannot send an
//! `Authorization` header.
//!
//! The files are served without authentication, under a strict Content-Security-Policy (scripts,
//! styles, images and connections from this origin only; no inline code). Everything the page
//! shows comes from the API's own routes, which accept the `launcher-token` cookie that
//! [`login`] sets once it has checked the token exactly as the API does.
//!
//! Caching: the page itself is revalidated on every load (`no-cache`); it names each asset with
//! `?v=<hash of its bytes>`, and an asset asked for with its current hash may be cached for a
//! year, so an upgraded gateway is never shown with stale scripts.

use std::sync::{Arc, OnceLock};

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, Extensions, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::auth::{self, TOKEN_COOKIE};
use crate::context::{over_tls, request_token, AppState, Ctx};
use crate::error::{code, ApiError};

/// The policy of every answer of the page: nothing but this origin's own files, no inline
/// script or style, no framing, forms post only here.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// `Cache-Control` of an asset asked for with its current `?v=` hash.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// `Cache-Control` of the page and of assets asked for without their hash: revalidate each time.
const REVALIDATE: &str = "no-cache";

/// One file of the page.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

/// The page's files but `index.html`, which is rendered with their hashes.
const ASSETS: [Asset; 3] = [
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("ui/app.js"),
    },
    Asset {
        name: "style.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("ui/style.css"),
    },
    Asset {
        name: "favicon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("ui/favicon.svg"),
    },
];

/// The page; `{{v:<file>}}` stands for the hash of an asset.
const INDEX_TEMPLATE: &str = include_str!("ui/index.html");

/// The version tag of an asset: the first 16 hex digits of the SHA-256 of its bytes.
fn version(body: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(body)[..8])
}

/// The asset versions, in the order of [`ASSETS`].
fn versions() -> &'static [String] {
    static V: OnceLock<Vec<String>> = OnceLock::new();
    V.get_or_init(|| ASSETS.iter().map(|a| version(a.body)).collect())
}

/// `index.html` with the asset hashes filled in.
fn index_html() -> &'static str {
    static PAGE: OnceLock<String> = OnceLock::new();
    PAGE.get_or_init(|| {
        ASSETS
            .iter()
            .zip(versions())
            .fold(INDEX_TEMPLATE.to_string(), |page, (a, v)| {
                page.replace(&format!("{{{{v:{}}}}}", a.name), v)
            })
    })
}

/// Adds the headers every answer of the page carries.
fn secured(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    // Never guess a type other than the one declared.
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // Job ids in the page's URL stay on this origin.
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    // For browsers older than CSP's frame-ancestors.
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    resp
}

fn file(content_type: &'static str, cache: &'static str, body: impl IntoResponse) -> Response {
    secured(
        (
            [
                (header::CONTENT_TYPE, content_type),
                (header::CACHE_CONTROL, cache),
            ],
            body,
        )
            .into_response(),
    )
}

/// `GET /` and `GET /ui`: the page.
pub async fn page() -> Response {
    file("text/html; charset=utf-8", REVALIDATE, index_html())
}

/// `GET /ui/{file}`: one file of the page (`index.html`, `app.js`, `style.css`, `favicon.svg`).
pub async fn asset(Path(name): Path<String>, RawQuery(query): RawQuery) -> Result<Response, ApiError> {
    if name == "index.html" {
        return Ok(page().await);
    }
    let (asset, current) = ASSETS
        .iter()
        .zip(versions())
        .find(|(a, _)| a.name == name)
        .ok_or_else(|| {
            ApiError::new(
                code::NOT_FOUND,
                format!("the web page has no file '{name}'; it is served at /"),
            )
        })?;
    let asked = query
        .as_deref()
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("v="));
    let cache = if asked == Some(current.as_str()) {
        IMMUTABLE
    } else {
        REVALIDATE
    };
    Ok(file(asset.content_type, cache, asset.body))
}

/// Body of `POST /ui/login`, as JSON or as a form.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    token: String,
}

/// The kinds of body `POST /ui/login` takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Json,
    Form,
}

fn body_kind(headers: &HeaderMap) -> Option<Kind> {
    let ct = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let essence = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if essence == "application/x-www-form-urlencoded" {
        Some(Kind::Form)
    } else if essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
    {
        Some(Kind::Json)
    } else {
        None
    }
}

/// Refuses a request another site made the browser send (login CSRF: logging a victim in as the
/// attacker). `Sec-Fetch-Site` is set by the browser itself, so a proxy rewriting `Host` does not
/// matter; clients that are not browsers do not send it.
fn same_origin(headers: &HeaderMap) -> Result<(), ApiError> {
    match headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        None | Some("same-origin") | Some("none") => Ok(()),
        Some(other) => Err(ApiError::new(
            code::FORBIDDEN,
            format!("the web page's login and logout take requests from its own origin only (Sec-Fetch-Site: {other})"),
        )),
    }
}

fn now_unix() -> u64 {
    time::OffsetDateTime::now_utc().unix_timestamp().max(0) as u64
}

/// The expiry (Unix seconds) of a token that verified.
fn token_expiry(token: &str) -> Option<u64> {
    token.rsplit('|').nth(1)?.parse().ok()
}

/// Whether every byte may stand in a cookie value unquoted (RFC 6265 cookie-octet).
fn cookie_safe(value: &str) -> bool {
    value
        .bytes()
        .all(|b| matches!(b, 0x21 | 0x23..=0x2b | 0x2d..=0x3a | 0x3c..=0x5b | 0x5d..=0x7e))
}

/// The `Set-Cookie` value for the token cookie (`None` clears it).
fn token_cookie(value: Option<(&str, u64)>, secure: bool) -> String {
    let (value, max_age) = value.unwrap_or(("", 0));
    let secure = if secure { "; Secure" } else { "" };
    format!("{TOKEN_COOKIE}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}")
}

/// What a form post gets: a page that sends the browser back to `/` at once. Not a 303: the API
/// gives every answer outside 2xx the error body, and its OpenAPI document says so.
fn back_to_page(title: &str) -> Response {
    let body = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"0; url=/\"><title>{title}</title></head>\
         <body><p>{title}. <a href=\"/\">Back to the status page</a>.</p></body></html>\n"
    );
    file("text/html; charset=utf-8", "no-store", body)
}

fn with_cookie(mut resp: Response, cookie: &str) -> Result<Response, ApiError> {
    let v = HeaderValue::from_str(cookie)
        .map_err(|_| ApiError::new(code::INVALID, "the token cannot be kept in a cookie"))?;
    resp.headers_mut().insert(header::SET_COOKIE, v);
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// `POST /ui/login`: checks a token as the API does and keeps it in the `launcher-token` cookie
/// (HttpOnly, SameSite=Strict, Path=/, Secure over TLS) until the token expires. The token is the
/// body's (`{"token":..}` as JSON, or the form field `token`); a request without a body (and so
/// without a Content-Type) uses the `Authorization: Bearer` token, or the cookie, instead. 204;
/// a form post gets a page that goes back to `/`. A bad token is 401 with the API's error body.
pub async fn login(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    ext: Extensions,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    same_origin(&headers)?;
    let body = crate::context::body_bytes(&s, body).await?;
    let kind = body_kind(&headers);
    let token = match kind {
        None if body.is_empty() && !headers.contains_key(header::CONTENT_TYPE) => request_token(&headers)
            .ok_or_else(|| ApiError::new(code::UNAUTHORIZED, auth::AuthError::Missing.to_string()))?,
        None => {
            return Err(ApiError::new(
                code::INVALID,
                "send the token as JSON {\"token\":\"<user>|<expiry>|<signature>\"} (Content-Type: \
                 application/json) or as the form field token (application/x-www-form-urlencoded)",
            ))
        }
        Some(Kind::Json) => {
            serde_json::from_slice::<LoginBody>(&body)
                .map_err(|e| {
                    ApiError::new(
                        code::INVALID,
                        format!("the body must be {{\"token\":\"<user>|<expiry>|<signature>\"}}: {e}"),
                    )
                })?
                .token
        }
        Some(Kind::Form) => {
            serde_urlencoded::from_bytes::<LoginBody>(&body)
                .map_err(|e| {
                    ApiError::new(
                        code::INVALID,
                        format!("the form must have exactly one field, token: {e}"),
                    )
                })?
                .token
        }
    };
    let token = token.trim();
    let now = now_unix();
    let user = auth::verify_token(&s.key, token, now, s.config.server.max_token_lifetime_seconds)
        .map_err(|e| ApiError::new(code::UNAUTHORIZED, e.to_string()))?;
    let expiry = token_expiry(token).unwrap_or(now);
    if !cookie_safe(token) {
        return Err(ApiError::new(
            code::INVALID,
            format!(
                "the user name '{user}' has characters a cookie cannot hold (spaces, quotes, ',', ';', '\\' \
                 or non-ASCII); this user can use the API with the Authorization header but not the web page"
            ),
        ));
    }
    // Never beyond the token's own expiry: the browser forgets the cookie when the token dies.
    let cookie = token_cookie(Some((token, expiry.saturating_sub(now))), over_tls(&s, &ext));
    tracing::info!(user = %user, "signed in to the web page");
    let resp = match kind {
        Some(Kind::Form) => back_to_page("Signed in"),
        _ => secured(StatusCode::NO_CONTENT.into_response()),
    };
    with_cookie(resp, &cookie)
}

/// `POST /ui/logout`: clears the `launcher-token` cookie. 204, or for a form post a page that
/// goes back to `/`.
pub async fn logout(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    ext: Extensions,
) -> Result<Response, ApiError> {
    same_origin(&headers)?;
    let resp = if body_kind(&headers) == Some(Kind::Form) {
        back_to_page("Signed out")
    } else {
        secured(StatusCode::NO_CONTENT.into_response())
    };
    with_cookie(resp, &token_cookie(None, over_tls(&s, &ext)))
}

/// `GET /ui/session`: who the page is signed in as: `{"user","admin","expiresAt"}` (`expiresAt`
/// RFC 3339, null when authorization is off). 401 when the cookie (or header) is missing or bad.
pub async fn session(State(s): State<Arc<AppState>>, ctx: Ctx, headers: HeaderMap) -> Response {
    let token = request_token(&headers);
    let expires = if s.config.server.authorization_enabled {
        token
            .as_deref()
            .and_then(token_expiry)
            .and_then(|e| i64::try_from(e).ok())
            .and_then(|e| time::OffsetDateTime::from_unix_timestamp(e).ok())
            .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
    } else {
        None
    };
    let body = serde_json::json!({"user": ctx.user, "admin": ctx.admin, "expiresAt": expires});
    let mut resp = secured(axum::Json(body).into_response());
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_names_every_asset_with_its_hash() {
        let page = index_html();
        assert!(!page.contains("{{"), "every placeholder is filled: {page}");
        for (a, v) in ASSETS.iter().zip(versions()) {
            assert!(
                page.contains(&format!("/ui/{}?v={v}", a.name)),
                "{} is linked with its hash",
                a.name
            );
        }
    }

    #[test]
    fn the_page_has_no_inline_code() {
        let page = INDEX_TEMPLATE.to_ascii_lowercase();
        // Every <script> has a src, no element has an event handler or a style attribute.
        for (i, _) in page.match_indices("<script") {
            let tag = &page[i..i + page[i..].find('>').expect("tag ends")];
            assert!(tag.contains(" src="), "inline script: {tag}");
        }
        assert!(!page.contains("<style"), "inline style element");
        assert!(!page.contains(" style="), "inline style attribute");
        assert!(
            !page.contains(" onclick=") && !page.contains(" onload="),
            "inline handler"
        );
        assert!(
            !page.contains("http://") && !page.contains("https://"),
            "nothing from elsewhere"
        );
    }

    #[test]
    fn cookies_hold_only_cookie_octets() {
        assert!(cookie_safe("alice|1700000000|0123abcd"));
        for bad in ["a b|1|x", "a;b|1|x", "a,b|1|x", "a\"b|1|x", "a\\b|1|x", "é|1|x"] {
            assert!(!cookie_safe(bad), "{bad}");
        }
        assert_eq!(
            token_cookie(Some(("t", 60)), true),
            "launcher-token=t; Path=/; Max-Age=60; HttpOnly; SameSite=Strict; Secure"
        );
        assert_eq!(
            token_cookie(None, false),
            "launcher-token=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict"
        );
        assert_eq!(token_expiry("a|b|1700000000|sig"), Some(1_700_000_000));
    }
}
