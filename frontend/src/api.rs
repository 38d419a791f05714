//! Calls to the JSON API and the small helpers every page shares.
//!
//! All answers are kept as `serde_json::Value`: the dashboard shows what the
//! server sends and tolerates fields it does not know, so a newer server
//! never breaks an older page. Errors carry the server's `{"error": …}`
//! text, or the HTTP status when there is none.

use leptos::prelude::*;
use serde_json::Value;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{Request, RequestCache, RequestInit, Response};

/// What a page has for one request: the one place loading, error and
/// ready states are told apart.
#[derive(Debug, Clone, PartialEq)]
pub enum Load {
    Loading,
    Failed(String),
    Ready(Value),
}

impl From<Result<Value, ApiError>> for Load {
    fn from(r: Result<Value, ApiError>) -> Self {
        match r {
            Ok(v) => Load::Ready(v),
            Err(e) => Load::Failed(e.to_string()),
        }
    }
}

/// Why a call failed.
#[derive(Debug, Clone, PartialEq)]
pub enum ApiError {
    /// No answer (network, browser).
    Network(String),
    /// An answer with a non-2xx status; `message` is the server's text.
    Status { status: u16, message: String },
}

impl ApiError {
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Status { status, .. } => Some(*status),
            ApiError::Network(_) => None,
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiError::Network(m) => write!(
                f,
                "the node did not answer ({m}): is it running and reachable? Try again once the header shows \"live\""
            ),
            ApiError::Status { status, message } => write!(f, "HTTP {status}: {message}"),
        }
    }
}

/// Where the token typed into the prompt is kept (this browser only).
const TOKEN_KEY: &str = "waybill.token";

fn storage() -> Option<web_sys::Storage> {
    web_sys::window()?.local_storage().ok()?
}

/// The `--auth-token` this browser sends, if the user gave one.
pub fn token() -> Option<String> {
    storage()?.get_item(TOKEN_KEY).ok()?.filter(|t| !t.is_empty())
}

/// Keeps `t` for every later call (empty: forget it).
pub fn set_token(t: &str) {
    if let Some(s) = storage() {
        let _ = if t.is_empty() {
            s.remove_item(TOKEN_KEY)
        } else {
            s.set_item(TOKEN_KEY, t)
        };
    }
}

thread_local! {
    static AUTH_NEEDED: RwSignal<bool> = RwSignal::new(false);
}

/// Set when the node answered 401: the app shows the token prompt.
pub fn auth_needed() -> RwSignal<bool> {
    AUTH_NEEDED.with(|s| *s)
}

/// A browser error as a sentence: a JS `Error`'s message (`Failed to
/// fetch`), never its debug form (which carries a wasm stack trace).
fn js(e: JsValue) -> ApiError {
    let text = e
        .dyn_ref::<js_sys::Error>()
        .map(|err| String::from(err.message()))
        .or_else(|| e.as_string())
        .unwrap_or_else(|| "the browser gave no reason".into());
    ApiError::Network(text)
}

/// `GET url` → JSON.
pub async fn get(url: &str) -> Result<Value, ApiError> {
    call("GET", url, None).await
}

/// `POST url` (no body) → JSON.
pub async fn post(url: &str) -> Result<Value, ApiError> {
    call("POST", url, None).await
}

/// `DELETE url` → JSON.
pub async fn delete(url: &str) -> Result<Value, ApiError> {
    call("DELETE", url, None).await
}

/// `POST url` with a JSON body → JSON.
pub async fn post_json(url: &str, body: &Value) -> Result<Value, ApiError> {
    call("POST", url, Some(body)).await
}

async fn call(method: &str, url: &str, body: Option<&Value>) -> Result<Value, ApiError> {
    let opts = RequestInit::new();
    opts.set_method(method);
    if let Some(b) = body {
        opts.set_body(&JsValue::from_str(&b.to_string()));
    }
    // Live data: never from the HTTP cache. This also keeps Chrome from
    // holding a second identical GET behind the first one's cache lock.
    opts.set_cache(RequestCache::NoStore);
    let req = Request::new_with_str_and_init(url, &opts).map_err(js)?;
    req.headers().set("accept", "application/json").map_err(js)?;
    if body.is_some() {
        req.headers().set("content-type", "application/json").map_err(js)?;
    }
    req.headers().set("x-waybill-user", "dashboard").map_err(js)?;
    if let Some(t) = token() {
        req.headers().set("authorization", &format!("Bearer {t}")).map_err(js)?;
    }
    let window = web_sys::window().ok_or_else(|| ApiError::Network("no window".into()))?;
    let resp: Response = JsFuture::from(window.fetch_with_request(&req))
        .await
        .map_err(js)?
        .dyn_into()
        .map_err(js)?;
    let text = JsFuture::from(resp.text().map_err(js)?)
        .await
        .map_err(js)?
        .as_string()
        .unwrap_or_default();
    let parsed: Option<Value> = serde_json::from_str(&text).ok();
    if resp.status() == 401 {
        auth_needed().set(true);
    }
    if !resp.ok() {
        let message = parsed
            .as_ref()
            .and_then(|v| v.get("error"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| resp.status_text());
        return Err(ApiError::Status {
            status: resp.status(),
            message,
        });
    }
    parsed.ok_or_else(|| ApiError::Status {
        status: resp.status(),
        message: "the answer is not JSON".into(),
    })
}

/// Loads `url` into `into` now and again each time the live feed reports a
/// change, for as long as the calling page lives.
pub fn load_live(url: impl Fn() -> Option<String> + Send + Sync + 'static, into: RwSignal<Load>) {
    let live = crate::live::use_live();
    Effect::new(move |_| {
        live.changed.track();
        let Some(u) = url() else { return };
        leptos::task::spawn_local(async move {
            let r = get(&u).await;
            let next = Load::from(r);
            // Keep the old table on screen while a reload is in flight; only
            // a real change re-renders.
            if into.try_with_untracked(|cur| *cur != next).unwrap_or(false) {
                into.set(next);
            }
        });
    });
}

/// Percent-encodes a query value.
pub fn enc(s: &str) -> String {
    String::from(js_sys::encode_uri_component(s))
}

/// A string field, or "".
pub fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

/// A number field, or 0.
pub fn n(v: &Value, k: &str) -> u64 {
    v.get(k).and_then(Value::as_u64).unwrap_or(0)
}

/// An array field, or empty.
pub fn arr<'a>(v: &'a Value, k: &str) -> &'a [Value] {
    v.get(k).and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[])
}

/// An RFC 3339 time as `HH:MM:SS.mmm` (with the date when not today), in
/// the viewer's local time.
pub fn time(rfc3339: &str) -> String {
    if rfc3339.is_empty() {
        return String::new();
    }
    let d = js_sys::Date::new(&JsValue::from_str(rfc3339));
    if d.get_time().is_nan() {
        return rfc3339.to_string();
    }
    let today = js_sys::Date::new_0();
    let hms = format!(
        "{:02}:{:02}:{:02}.{:03}",
        d.get_hours(),
        d.get_minutes(),
        d.get_seconds(),
        d.get_milliseconds()
    );
    if d.to_date_string() == today.to_date_string() {
        hms
    } else {
        format!(
            "{}-{:02}-{:02} {hms}",
            d.get_full_year(),
            d.get_month() + 1,
            d.get_date()
        )
    }
}

/// Epoch milliseconds as [`time`] shows them.
pub fn time_ms(ms: i64) -> String {
    let d = js_sys::Date::new(&JsValue::from_f64(ms as f64));
    time(&String::from(d.to_iso_string()))
}

/// CSS class for a message or dead-letter status.
pub fn status_class(status: &str) -> &'static str {
    match status {
        "consumed" | "SEND_OK" | "ok" | "replayed" | "duplicate" => "st st-ok",
        "stored" | "replicated" | "delivered" | "half" => "st st-flow",
        "retrying" | "quarantined" | "risk" => "st st-warn",
        "dead" | "lost" | "rolled_back" | "failed" => "st st-bad",
        _ => "st",
    }
}

/// The furthest stage of the path a status says the message reached.
pub fn stage_reached(status: &str) -> &'static str {
    match status {
        "half" => "tx_prepare",
        "stored" => "store",
        "replicated" => "replicate",
        "delivered" => "deliver",
        "consumed" => "consume",
        "retrying" => "retry",
        "dead" => "dlq",
        "replayed" => "replay",
        "rolled_back" => "tx_rollback",
        "lost" => "lost",
        _ => "",
    }
}

/// The standard rendering of a load state: `ready` runs only on data.
pub fn show(load: RwSignal<Load>, ready: impl Fn(Value) -> AnyView + Send + Sync + 'static) -> impl IntoView {
    move || match load.get() {
        Load::Loading => view! { <p class="loading" role="status">"Loading…"</p> }.into_any(),
        Load::Failed(e) => view! { <p class="error" role="alert">{e}</p> }.into_any(),
        Load::Ready(v) => ready(v),
    }
}

/// Base64 → bytes (bodies that are not UTF-8 arrive as `body_base64`).
pub fn base64_bytes(b64: &str) -> Option<Vec<u8>> {
    let window = web_sys::window()?;
    let bin = window.atob(b64).ok()?;
    Some(bin.chars().map(|c| c as u32 as u8).collect())
}

/// Bytes as a hex dump, 16 per line.
pub fn hex(bytes: &[u8]) -> String {
    bytes
        .chunks(16)
        .enumerate()
        .map(|(i, row)| {
            let h: Vec<String> = row.iter().map(|b| format!("{b:02x}")).collect();
            format!("{:08x}  {}", i * 16, h.join(" "))
        })
        .collect::<Vec<_>>()
        .join("\n")
}
