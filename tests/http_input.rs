//! Bad input over HTTP gets a clear 4xx JSON error and changes nothing stored.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use tower::ServiceExt;
use waybill::api::{app, AppState, DEFAULT_BODY_LIMIT};
use waybill::broker::{Broker, BrokerOptions};
use waybill::storage::fs::RealFs;
use waybill::storage::{Flush, Store, StoreOptions};

async fn call(app: &Router, req: Request<Body>) -> anyhow::Result<(StatusCode, serde_json::Value)> {
    let resp = app.clone().oneshot(req).await?;
    let status = resp.status();
    let bytes = resp.into_body().collect().await?.to_bytes();
    let json =
        serde_json::from_slice(&bytes).unwrap_or_else(|_| serde_json::json!({"raw": String::from_utf8_lossy(&bytes)}));
    Ok((status, json))
}

fn post(uri: &str, content_type: Option<&str>, body: impl Into<Body>) -> anyhow::Result<Request<Body>> {
    let mut b = Request::post(uri);
    if let Some(ct) = content_type {
        b = b.header("content-type", ct);
    }
    Ok(b.body(body.into())?)
}

#[tokio::test]
async fn given_bad_requests_should_answer_4xx_json_and_leave_the_log_unchanged() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let store = Arc::new(Store::open(
        Arc::new(RealFs),
        StoreOptions::new(tmp.path(), Flush::Sync),
    )?);
    let broker = Arc::new(Broker::new(store.clone(), BrokerOptions::default())?);
    let app = app(AppState::new(broker), DEFAULT_BODY_LIMIT);
    let json = Some("application/json");

    let (code, ok) = call(
        &app,
        post("/api/v1/topics/orders/messages", json, r#"{"key":"k","body":"kept"}"#)?,
    )
    .await?;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(ok["status"], "SEND_OK");
    let id = ok["id"].as_str().unwrap_or_default().to_string();
    let before = store.stats();

    let too_big = format!(r#"{{"body":"{}"}}"#, "x".repeat(DEFAULT_BODY_LIMIT + 1));
    let cases: Vec<(&str, Request<Body>, StatusCode)> = vec![
        (
            "malformed JSON",
            post("/api/v1/topics/orders/messages", json, r#"{"body": "#)?,
            StatusCode::BAD_REQUEST,
        ),
        (
            "not JSON at all",
            post("/api/v1/topics/orders/messages", json, "body=x")?,
            StatusCode::BAD_REQUEST,
        ),
        (
            "missing body field",
            post("/api/v1/topics/orders/messages", json, r#"{"key":"k"}"#)?,
            StatusCode::BAD_REQUEST,
        ),
        (
            "wrong field type",
            post("/api/v1/topics/orders/messages", json, r#"{"body":5}"#)?,
            StatusCode::BAD_REQUEST,
        ),
        (
            "no content type",
            post("/api/v1/topics/orders/messages", None, r#"{"body":"x"}"#)?,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            "oversize body",
            post("/api/v1/topics/orders/messages", json, too_big)?,
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            "illegal topic",
            post("/api/v1/topics/bad%20topic/messages", json, r#"{"body":"x"}"#)?,
            StatusCode::BAD_REQUEST,
        ),
        (
            "path traversal topic",
            post("/api/v1/topics/..%2Fetc/messages", json, r#"{"body":"x"}"#)?,
            StatusCode::BAD_REQUEST,
        ),
        (
            "system topic",
            post("/api/v1/topics/%25DLQ%25g/messages", json, r#"{"body":"x"}"#)?,
            StatusCode::BAD_REQUEST,
        ),
        (
            "too long topic",
            post(
                &format!("/api/v1/topics/{}/messages", "t".repeat(200)),
                json,
                r#"{"body":"x"}"#,
            )?,
            StatusCode::BAD_REQUEST,
        ),
        (
            "oversize key",
            post(
                "/api/v1/topics/orders/messages",
                json,
                format!(r#"{{"key":"{}","body":"x"}}"#, "k".repeat(5000)),
            )?,
            StatusCode::BAD_REQUEST,
        ),
        (
            "malformed id",
            Request::get("/api/v1/messages/not-an-id").body(Body::empty())?,
            StatusCode::BAD_REQUEST,
        ),
        (
            "unknown id",
            Request::get("/api/v1/messages/00010000000100000000000FFFFF").body(Body::empty())?,
            StatusCode::NOT_FOUND,
        ),
        (
            "search without a filter",
            Request::get("/api/v1/messages").body(Body::empty())?,
            StatusCode::BAD_REQUEST,
        ),
        (
            "unknown route",
            Request::get("/api/v1/nothing").body(Body::empty())?,
            StatusCode::NOT_FOUND,
        ),
        (
            "search by an id that is not one",
            Request::get("/api/v1/messages?id=zzz").body(Body::empty())?,
            StatusCode::BAD_REQUEST,
        ),
        (
            "search with from after to",
            Request::get("/api/v1/messages?key=k&from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z")
                .body(Body::empty())?,
            StatusCode::BAD_REQUEST,
        ),
        // Query strings that do not parse: JSON errors too, not axum's text.
        (
            "a limit that is not a number",
            Request::get("/api/v1/messages?key=k&limit=abc").body(Body::empty())?,
            StatusCode::BAD_REQUEST,
        ),
        (
            "a negative dead-letter page size",
            Request::get("/api/v1/dlq?group=g&limit=-1").body(Body::empty())?,
            StatusCode::BAD_REQUEST,
        ),
        (
            "a history step that is not a number",
            Request::get("/api/v1/stats/history?step=often").body(Body::empty())?,
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (what, req, want) in cases {
        let (code, body) = call(&app, req).await?;
        assert_eq!(code, want, "{what}: {body}");
        let msg = body["error"].as_str().unwrap_or_default();
        assert!(!msg.is_empty(), "{what}: error message missing in {body}");
        println!("{what}: {code} {msg:.100}");
    }

    let (code, doc) = call(&app, Request::get("/api/openapi.json").body(Body::empty())?).await?;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.0.3");
    for path in [
        "/api/v1/topics/{topic}/messages",
        "/api/v1/messages/{id}",
        "/api/v1/dlq",
        "/api/v1/events",
    ] {
        assert!(doc["paths"][path].is_object(), "OpenAPI lacks {path}");
    }

    let after = store.stats();
    assert_eq!(after.appended_msgs, before.appended_msgs, "bad input stored something");
    assert_eq!(after.log_end, before.log_end);
    let (code, kept) = call(
        &app,
        Request::get(format!("/api/v1/messages/{id}")).body(Body::empty())?,
    )
    .await?;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(kept["body"], "kept");
    // No traceparent came over HTTP: the broker created one.
    assert!(kept["properties"]["traceparent"]
        .as_str()
        .is_some_and(|t| t.starts_with("00-")));
    Ok(())
}

#[tokio::test]
async fn given_an_auth_token_api_calls_need_it_and_probes_do_not() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let store = Arc::new(Store::open(
        Arc::new(RealFs),
        StoreOptions::new(tmp.path(), Flush::Sync),
    )?);
    let broker = Arc::new(Broker::new(store.clone(), BrokerOptions::default())?);
    let app = waybill::api::app_with_auth(AppState::new(broker), DEFAULT_BODY_LIMIT, Some("s3cret".into()));
    let send = |auth: Option<&str>| -> anyhow::Result<Request<Body>> {
        let mut b = Request::post("/api/v1/topics/orders/messages").header("content-type", "application/json");
        if let Some(a) = auth {
            b = b.header("authorization", a);
        }
        Ok(b.body(Body::from(r#"{"body":"x"}"#))?)
    };
    for auth in [None, Some("Bearer wrong"), Some("s3cret"), Some("Basic s3cret")] {
        let (code, body) = call(&app, send(auth)?).await?;
        assert_eq!(code, StatusCode::UNAUTHORIZED, "{auth:?}");
        assert!(body["error"].as_str().is_some());
    }
    assert_eq!(store.stats().appended_msgs, 0, "refused calls stored nothing");
    let (code, ok) = call(&app, send(Some("Bearer s3cret"))?).await?;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(ok["status"], "SEND_OK");
    let (code, _) = call(&app, Request::get("/api/openapi.json").body(Body::empty())?).await?;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    for open in ["/healthz", "/metrics"] {
        let resp = app.clone().oneshot(Request::get(open).body(Body::empty())?).await?;
        assert_eq!(resp.status(), StatusCode::OK, "{open} stays open");
    }
    Ok(())
}
