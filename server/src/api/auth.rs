//! Who may call `/api`: bearer tokens, each with a name and a role
//! (`model::access`), and the per-token request rate.
//!
//! With tokens configured every `/api` call must carry one as
//! `Authorization: Bearer TOKEN`: none or an unknown one gets 401 (with
//! `WWW-Authenticate: Bearer`), a role below what the call needs gets 403
//! ([`required`]: reads are `viewer`, topics and promotion `admin`, every
//! other write `operator`), a token over `rate_limit_per_token` gets 429.
//! All answer the usual `{"error": …}` body. `/healthz` and `/metrics` stay
//! open for probes and scrapers. The live feed (`GET /api/v1/events`) also
//! takes the token as `?access_token=`, because a browser's `EventSource`
//! cannot send headers.
//!
//! A caller that got through is named to the handlers by overwriting
//! `x-waybill-user` with its token's name, so every write is recorded
//! under that name (audit, timelines) and cannot be claimed by another.
//! Without tokens the node is open and `x-waybill-user` is what the client
//! says (the dashboard says "dashboard", the CLI the local user).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::Request;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::broker::limits::Reason;
use crate::broker::rate::TokenRates;
use crate::broker::Broker;
use crate::model::access::{Role, Tokens};

/// What the `/api` guard checks against.
#[derive(Clone)]
pub struct Access {
    /// The accepted tokens (none: an open node).
    pub tokens: Option<Arc<Tokens>>,
    /// Per-token request rates (shared with the broker port).
    pub rates: Arc<TokenRates>,
}

impl Access {
    /// `--auth-token` alone, without rate limits (tests, tools).
    pub fn single(token: Option<String>) -> Access {
        Access {
            tokens: Tokens::new(token.as_deref(), []).map(Arc::new),
            rates: TokenRates::new(0),
        }
    }
}

/// The role a call needs.
pub fn required(method: &Method, path: &str) -> Role {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Role::Viewer;
    }
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method, segments.as_slice()) {
        (&Method::POST, ["api", "v1", "topics"])
        | (&Method::DELETE, ["api", "v1", "topics", _])
        | (_, ["api", "v1", "cluster", ..]) => Role::Admin,
        _ => Role::Operator,
    }
}

fn refuse(status: StatusCode, message: String) -> Response {
    let mut resp = (status, Json(json!({ "error": message }))).into_response();
    if status == StatusCode::UNAUTHORIZED {
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    resp
}

/// The guard on `/api` paths (see the module comment).
pub async fn require(access: Access, broker: Arc<Broker>, mut req: Request, next: Next) -> Response {
    if !req.uri().path().starts_with("/api") {
        return next.run(req).await;
    }
    let Some(tokens) = &access.tokens else {
        return next.run(req).await;
    };
    let header_token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.as_bytes().to_vec());
    let given = header_token.or_else(|| {
        (req.method() == Method::GET && req.uri().path() == "/api/v1/events")
            .then(|| query_token(req.uri().query()?))
            .flatten()
    });
    let Some(caller) = given.and_then(|t| tokens.identify(&t)) else {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token (Authorization: Bearer TOKEN)".into(),
        );
    };
    let needs = required(req.method(), req.uri().path());
    if caller.role < needs {
        return refuse(
            StatusCode::FORBIDDEN,
            format!(
                "token {:?} has the {} role; {} {} needs {}",
                caller.name,
                caller.role.as_str(),
                req.method(),
                req.uri().path(),
                needs.as_str()
            ),
        );
    }
    if !access.rates.allow(&caller.name, Instant::now()) {
        broker.refusals().add(Reason::Rate);
        return refuse(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "rate limit: token {:?} may make {} requests/s; slow down and retry",
                caller.name,
                access.rates.per_sec()
            ),
        );
    }
    match HeaderValue::from_str(&caller.name) {
        Ok(name) => {
            req.headers_mut().insert("x-waybill-user", name);
        }
        Err(_) => {
            req.headers_mut().remove("x-waybill-user");
        }
    }
    req.extensions_mut().insert(caller);
    next.run(req).await
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
    use super::*;

    #[test]
    fn reads_need_a_viewer_topics_and_promotion_an_admin_other_writes_an_operator() {
        let r = |m: Method, p: &str| required(&m, p);
        assert_eq!(r(Method::GET, "/api/v1/topics"), Role::Viewer);
        assert_eq!(r(Method::GET, "/api/v1/events"), Role::Viewer);
        assert_eq!(r(Method::POST, "/api/v1/topics"), Role::Admin);
        assert_eq!(r(Method::DELETE, "/api/v1/topics/orders"), Role::Admin);
        assert_eq!(r(Method::POST, "/api/v1/cluster/promote"), Role::Admin);
        assert_eq!(r(Method::POST, "/api/v1/topics/orders/messages"), Role::Operator);
        assert_eq!(r(Method::POST, "/api/v1/dlq/replay"), Role::Operator);
        assert_eq!(r(Method::DELETE, "/api/v1/consumers/billing"), Role::Operator);
    }

    #[test]
    fn reads_a_percent_encoded_query_token() {
        assert_eq!(query_token("x=1&access_token=s%2Fc%20r"), Some(b"s/c r".to_vec()));
        assert_eq!(query_token("access_token=%zz"), None);
        assert_eq!(query_token("token=abc"), None);
    }
}
