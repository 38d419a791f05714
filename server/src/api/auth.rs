//! `--auth-token`: every `/api` call must carry `Authorization: Bearer TOKEN`.
//!
//! `/healthz` and `/metrics` stay open for probes and scrapers. The token is
//! compared in constant time; a missing or wrong one gets 401 with the usual
//! `{"error": …}` body and a `WWW-Authenticate: Bearer` header. The live
//! feed (`GET /api/v1/events`) also takes it as `?access_token=`, because a
//! browser's `EventSource` cannot send headers.

use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// Equal in time independent of where the inputs differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Checks the bearer token on `/api` paths.
pub async fn require(token: std::sync::Arc<str>, req: Request, next: Next) -> Response {
    if !req.uri().path().starts_with("/api") {
        return next.run(req).await;
    }
    let header_token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.as_bytes().to_vec());
    let given = header_token.or_else(|| {
        (req.method() == axum::http::Method::GET && req.uri().path() == "/api/v1/events")
            .then(|| query_token(req.uri().query()?))
            .flatten()
    });
    match given {
        Some(t) if same(&t, token.as_bytes()) => next.run(req).await,
        _ => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            Json(json!({"error": "missing or wrong bearer token (Authorization: Bearer TOKEN)"})),
        )
            .into_response(),
    }
}

/// `access_token` from a query string, percent-decoded.
fn query_token(query: &str) -> Option<Vec<u8>> {
    let raw = query.split('&').find_map(|p| p.strip_prefix("access_token="))?;
    let b = raw.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn compares_whole_tokens() {
        assert!(super::same(b"secret", b"secret"));
        assert!(!super::same(b"secret", b"secreT"));
        assert!(!super::same(b"secret", b"secret2"));
    }

    #[test]
    fn reads_a_percent_encoded_query_token() {
        assert_eq!(
            super::query_token("x=1&access_token=s%2Fc%20r"),
            Some(b"s/c r".to_vec())
        );
        assert_eq!(super::query_token("access_token=%zz"), None);
        assert_eq!(super::query_token("token=abc"), None);
    }
}
