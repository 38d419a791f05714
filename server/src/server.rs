//! A running node: opens the store, builds the broker, serves HTTP, and on
//! shutdown closes the store so the final flush and checkpoint happen.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::api::{self, AppState};
use crate::broker::{Broker, BrokerOptions};
use crate::config::Config;
use crate::storage::fs::RealFs;
use crate::storage::{StorageError, Store, StoreOptions};
use crate::trace::{audit, Tracer};

/// How long in-flight requests get to finish after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Errors that stop a node from starting or running.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("cannot open the store in {dir}: {source}")]
    Store {
        dir: std::path::PathBuf,
        #[source]
        source: StorageError,
    },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Otel(crate::trace::otel::OtelError),
    #[error("trace store: {0}")]
    Trace(#[source] crate::trace::TraceError),
    #[error("cannot restore broker state: {0}")]
    Broker(#[source] crate::broker::BrokerError),
    #[error("HTTP server failed: {0}")]
    Http(#[source] std::io::Error),
}

/// Opens the store for `cfg` (recovering it) on the real file system.
pub fn open_store(cfg: &Config) -> Result<Arc<Store>, ServeError> {
    let mut opts = StoreOptions::new(cfg.data_dir.clone(), cfg.flush_policy());
    opts.segment_bytes = cfg.segment_bytes;
    opts.node_id = cfg.node_id;
    opts.index_interval = Duration::from_millis(cfg.index_interval_ms);
    Store::open(Arc::new(RealFs), opts)
        .map(Arc::new)
        .map_err(|source| ServeError::Store {
            dir: cfg.data_dir.clone(),
            source,
        })
}

/// Runs a node until `shutdown` resolves.
pub async fn serve(
    cfg: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    cfg.validate()?;
    let store = {
        let cfg = cfg.clone();
        tokio::task::spawn_blocking(move || open_store(&cfg))
            .await
            .map_err(|e| ServeError::Http(std::io::Error::other(e)))??
    };
    let broker = Arc::new(
        Broker::new(
            store.clone(),
            BrokerOptions {
                sync_flush_timeout: Duration::from_millis(cfg.sync_flush_timeout_ms),
                queues_per_topic: cfg.queues_per_topic,
                retry: cfg.retry_policy()?,
                client_timeout: Duration::from_millis(cfg.client_timeout_ms),
                replay_guard: cfg.replay_guard,
            },
        )
        .map_err(ServeError::Broker)?,
    );
    if let Some(url) = cfg.trace_url() {
        let tracer = Tracer::start(&url, store.clone()).await.map_err(ServeError::Trace)?;
        // Before any new write: which acknowledged messages did the last
        // crash take?
        let report = audit::run(tracer.pool(), &store).await.map_err(ServeError::Trace)?;
        tracing::info!(checked = report.checked, lost = report.lost.len(), "trace audit done");
        broker.set_tracer(tracer);
    } else {
        tracing::warn!("tracing is off (--trace-db none)");
    }
    if let Some(endpoint) = &cfg.otlp_endpoint {
        let otel = crate::trace::otel::Otel::new(endpoint).map_err(ServeError::Otel)?;
        broker.set_otel(Arc::new(otel));
        tracing::info!(%endpoint, "exporting message spans over OTLP/HTTP");
    }
    let alerts = crate::trace::alerts::Alerts::new(cfg.alert_rules(), cfg.alert_webhook.clone());
    broker.set_alerts(alerts.clone());
    alerts.spawn(broker.clone());
    let bind = |addr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind { addr, source })
    };
    let listener = bind(cfg.http_addr).await?;
    let http_addr = listener.local_addr().map_err(ServeError::Http)?;
    let wire = bind(cfg.broker_addr).await?;
    let broker_addr = wire.local_addr().map_err(ServeError::Http)?;
    let wire_task = tokio::spawn(crate::broker::listener::serve(wire, broker.clone()));
    // One machine-readable line on stdout: scripts and tests wait for it.
    println!(
        "waybill ready http={http_addr} broker={broker_addr} data_dir={}",
        cfg.data_dir.display()
    );
    tracing::info!(%http_addr, flush = ?cfg.flush_policy(), "serving");
    let otel = broker.otel().cloned();
    let ui_dir = cfg.ui_dir();
    if !ui_dir.join("index.html").is_file() {
        tracing::warn!(dir = %ui_dir.display(), "dashboard not built (./scripts/run.sh builds it); serving the API only");
    }
    let app = api::app_with_ui(
        AppState { broker },
        cfg.max_body_bytes,
        cfg.auth_token.clone(),
        Some(ui_dir),
    );
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let graceful = async move {
        shutdown.await;
        tracing::info!("shutting down");
        let _ = stop_tx.send(());
    };
    let server = axum::serve(listener, app).with_graceful_shutdown(graceful);
    let forced = async move {
        let _ = stop_rx.await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        r = server => r.map_err(ServeError::Http)?,
        _ = forced => tracing::warn!("in-flight requests did not finish in time"),
    }
    wire_task.abort();
    if let Some(otel) = otel {
        // Flushes buffered spans; the exporter's own thread does the I/O.
        let _ = tokio::task::spawn_blocking(move || otel.shutdown()).await;
    }
    tokio::task::spawn_blocking(move || store.close())
        .await
        .map_err(|e| ServeError::Http(std::io::Error::other(e)))?;
    Ok(())
}
