//! The dashboard's files: every GET that is not `/api…` (nor `/healthz`,
//! `/metrics`, which have routes) is a file of the built UI folder, or its
//! `index.html` so deep links (`/messages/{id}`, `/dlq?group=g`) work on
//! reload; the Leptos router takes it from there.
//!
//! Invariants: unknown `/api` paths and non-GET requests keep the JSON 404
//! of the API; paths are resolved inside the folder only (tower-http's
//! `ServeDir` rejects `..`); responses say `no-cache` so a rebuilt UI is
//! picked up at once (files are small and revalidated by date); a missing
//! build answers 503 with how to build it rather than a blank page.

use std::path::PathBuf;

use axum::extract::Request;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use tower::ServiceExt;
use tower_http::services::{ServeDir, ServeFile};

use super::error::ApiError;

/// Serves `dir` for non-API GETs; everything else is the API's 404.
pub async fn serve(dir: PathBuf, req: Request) -> Response {
    let path = req.uri().path();
    if path == "/api" || path.starts_with("/api/") || !matches!(*req.method(), Method::GET | Method::HEAD) {
        return ApiError::NotFound(format!("no route for {path}")).into_response();
    }
    let index = dir.join("index.html");
    if !index.is_file() {
        return missing(&dir).into_response();
    }
    let files = ServeDir::new(&dir).fallback(ServeFile::new(index));
    let mut resp = match files.oneshot(req).await {
        Ok(r) => r.into_response(),
        Err(never) => match never {},
    };
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

fn missing(dir: &std::path::Path) -> impl IntoResponse {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Html(format!(
            "<!doctype html><meta charset=utf-8><title>Waybill</title>\
             <h1>The dashboard is not built</h1>\
             <p>No <code>index.html</code> in <code>{}</code>. Build it with <code>./scripts/run.sh</code> \
             (or <code>cargo run -p xtask -- dashboard</code>), or point <code>--ui-dir</code> at a built copy. \
             The JSON API works without it: <a href=/api/openapi.json>/api/openapi.json</a>.</p>",
            html_escape(&dir.display().to_string())
        )),
    )
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}
