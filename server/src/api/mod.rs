//! HTTP API: JSON over axum, built by [`app`] so tests can drive it with
//! `oneshot` and no socket.
//!
//! # Layout
//! - [`error`]: `ApiError`, the single error → status mapping.
//! - [`json`]: the JSON body extractor with JSON errors; [`query`]: the
//!   query-string extractor with JSON errors.
//! - [`messages`]: send, read by id, search by key.
//! - [`auth`]: bearer tokens with roles, and the per-token rate, on `/api`.
//! - [`dlq`]: dead letters: list, replay one, replay many.
//! - [`consumers`]: consumer groups, queue positions and lag.
//! - [`groups`]: group operations (reset offsets, skip, delete).
//! - [`jobs`]: dead-letter redrive jobs (start, list, progress, cancel).
//! - [`events`]: the live feed (server-sent events).
//! - [`health`]: `/healthz` and `/metrics`.
//! - [`metrics`]: the per-topic and per-group series of `/metrics`.
//! - [`dashboard`]: read-only views the dashboard needs (node settings,
//!   losses, duplicates, consumer queue positions).
//! - [`ui`]: the dashboard's files, with `index.html` for deep links.
//! - [`cluster`]: the replication group view and promotion.
//! - [`audit`]: the operator actions recorded in `%AUDIT%`.
//! - [`topics`]: topics: list, show, create, delete (rates from the
//!   stats history); [`topic_browse`]: a topic's messages newest first.
//! - [`stats`]: the per-second stats history (`/stats/history`).

pub mod audit;
pub mod auth;
pub mod cluster;
pub mod consumers;
pub mod dashboard;
pub mod dlq;
pub mod error;
pub mod events;
pub mod groups;
pub mod health;
pub mod jobs;
pub mod json;
pub mod matrix;
pub mod messages;
pub mod metrics;
pub mod query;
pub mod stats;
pub mod topic_browse;
pub mod topics;
pub mod ui;

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post};
use axum::Router;
use tower_http::trace::TraceLayer;

use serde_json::Value;
use tokio::sync::broadcast;

use crate::broker::Broker;
use crate::replication::{Cluster, Node};
use crate::trace::alerts::Alerts;
use crate::trace::history::History;
use crate::trace::sink::Subscribers;
use crate::trace::Tracer;
pub use error::ApiError;

/// Default request body limit (SPEC: 4 MiB).
pub const DEFAULT_BODY_LIMIT: usize = 4 * 1024 * 1024;

/// What every handler can reach: the broker and the components beside
/// it (none of them reached through the broker).
#[derive(Clone)]
pub struct AppState {
    pub broker: Arc<Broker>,
    /// Set when tracing is on.
    pub tracer: Option<Arc<Tracer>>,
    pub alerts: Option<Arc<Alerts>>,
    /// The dashboard's live feed; every `/api/v1/events` stream subscribes.
    pub live: broadcast::Sender<Value>,
    /// This node's replication side (a served node always has one).
    pub node: Option<Arc<Node>>,
    /// Per-second stats of the last hour (filled by the sampler `serve`
    /// starts; empty in `AppState::new`).
    pub history: Arc<History>,
    /// The node's shutdown: live-feed streams end on it.
    pub stop: crate::shutdown::Stop,
}

impl AppState {
    /// A lone broker without observers (tests, tools).
    pub fn new(broker: Arc<Broker>) -> AppState {
        AppState {
            broker,
            tracer: None,
            alerts: None,
            live: broadcast::channel(1).0,
            node: None,
            history: Arc::new(History::new()),
            stop: crate::shutdown::Stop::never(),
        }
    }

    /// The broker with its observers and replication side, as `server.rs`
    /// wires them.
    pub fn wired(broker: Arc<Broker>, subscribers: &Subscribers, node: Option<Arc<Node>>) -> AppState {
        AppState {
            broker,
            tracer: subscribers.tracer().cloned(),
            alerts: subscribers.alerts().cloned(),
            live: subscribers.live().clone(),
            node,
            history: Arc::new(History::new()),
            stop: crate::shutdown::Stop::never(),
        }
    }

    /// `(produce, consume)` messages per second of a topic, averaged over
    /// the last ten seconds of history.
    pub fn topic_rates(&self, topic: &str) -> (f64, f64) {
        self.history.topic_rates(topic)
    }

    /// The replication group's state, if this node is in one.
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.node.as_ref().map(|n| &n.cluster)
    }
}

/// The whole HTTP surface, without authentication.
pub fn app(state: AppState, body_limit: usize) -> Router {
    app_with_auth(state, body_limit, None)
}

/// The whole HTTP surface; with `token`, `/api` calls need it as a bearer token.
pub fn app_with_auth(state: AppState, body_limit: usize, token: Option<String>) -> Router {
    app_with_ui(state, body_limit, auth::Access::single(token), None)
}

/// The whole HTTP surface plus, with `ui_dir`, the dashboard: non-API GETs
/// are its files (`index.html` for deep links); unknown `/api` paths stay
/// JSON 404s. `/api` calls are guarded by `access` ([`auth`]).
pub fn app_with_ui(state: AppState, body_limit: usize, access: auth::Access, ui_dir: Option<PathBuf>) -> Router {
    let api = Router::new()
        .route("/topics", get(topics::list).post(topics::create))
        .route("/topics/{topic}", get(topics::get).delete(topics::delete))
        .route("/topics/{topic}/messages", post(messages::send).get(topic_browse::list))
        .route("/messages/{id}", get(messages::get))
        .route("/messages", get(messages::search))
        .route("/dlq", get(dlq::list))
        .route("/dlq/replay", post(dlq::replay_many))
        .route("/dlq/export", get(dlq::export))
        .route("/dlq/{id}/replay", post(dlq::replay_one))
        .route("/dlq/{id}/discard", post(dlq::discard))
        .route("/dlq/jobs", post(jobs::start).get(jobs::list))
        .route("/dlq/jobs/{job}", get(jobs::get))
        .route("/dlq/jobs/{job}/cancel", post(jobs::cancel))
        .route("/consumers", get(consumers::consumers))
        .route("/consumers/duplicates", get(dashboard::duplicates))
        .route("/consumers/{group}", delete(groups::delete))
        .route("/consumers/{group}/offsets", post(groups::reset))
        .route("/consumers/{group}/skip", post(groups::skip))
        .route("/node", get(dashboard::node))
        .route("/losses", get(dashboard::losses))
        .route("/events", get(events::events))
        .route("/alerts", get(health::alerts))
        .route("/cluster", get(cluster::view))
        .route("/cluster/promote", post(cluster::promote))
        .route("/audit", get(audit::list))
        .route("/stats/history", get(stats::history))
        .route("/matrix", get(matrix::get))
        .route("/matrix/messages/{id}", get(matrix::message));
    let router = Router::new()
        .nest("/api/v1", api)
        .route("/api/openapi.json", get(openapi))
        .route("/healthz", get(health::healthz))
        .route("/metrics", get(health::metrics));
    let router = match ui_dir {
        Some(dir) => router.fallback(move |req: axum::extract::Request| ui::serve(dir.clone(), req)),
        None => router.fallback(not_found),
    };
    let mut router = router.layer(DefaultBodyLimit::max(body_limit));
    if access.tokens.is_some() {
        let broker = state.broker.clone();
        router = router.layer(axum::middleware::from_fn(move |req, next| {
            auth::require(access.clone(), broker.clone(), req, next)
        }));
    }
    router.layer(TraceLayer::new_for_http()).with_state(state)
}

/// The OpenAPI 3 description of this API (hand-kept next to the routes).
async fn openapi() -> impl axum::response::IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        include_str!("openapi.json"),
    )
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::NotFound(format!("no route for {}", uri.path()))
}
