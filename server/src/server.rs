//! A running node: opens the store, builds the broker, serves HTTP, and on
//! shutdown stops accepting, ends the live feed, drains the requests in
//! flight (bounded by [`DRAIN_TIMEOUT`]), then closes the store cleanly:
//! final flush, index sync, checkpoint and the clean-shutdown marker that
//! lets the next start skip the recovery scan (`storage/clean.rs`).
//!
//! Nothing on the start path waits for the trace store: the tracer connects,
//! migrates and audits in the background while the node serves.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::api::{self, AppState};
use crate::broker::{Broker, BrokerOptions, Consumers, Wiring};
use crate::config::{Config, ReplicationMode};
use crate::replication::state::Persisted;
use crate::replication::{replica, status, Cluster, Mode, Node, Role};
use crate::storage::faultfs::PowerLoss;
use crate::storage::fs::{Fs, RealFs};
use crate::storage::powercut::PowerCut;
use crate::storage::{Flush, StorageError, Store, StoreOptions};
use crate::trace::alerts::Watched;
use crate::trace::sink::Subscribers;
use crate::trace::{audit, Tracer};

/// How long requests in flight (HTTP and the broker port) get to finish
/// after a shutdown signal. A drained send normally ends with the next
/// group commit, in milliseconds; the bound is for a stuck disk or peer,
/// and gives a slow fsync several seconds while keeping the whole stop far
/// inside the usual stop timeouts (Kubernetes' 30 s grace, systemd's 90 s).
/// Cutting a request is safe: it gets no answer (its connection closes),
/// so its client counts it unknown, never acknowledged.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);
/// How long the tracer gets to write its last events and closing mark at
/// shutdown: a trace store that is down must not hold up the exit.
const TRACE_CLOSE_GRACE: Duration = Duration::from_secs(5);

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
    #[error("replication: {0}")]
    Replication(#[from] crate::replication::ReplicationError),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

/// The engine's file system and, in `--fault-fs` mode, its power switch.
pub type NodeFs = (Arc<dyn Fs>, Option<Arc<PowerCut>>);

/// The file system the engine writes through: the real one, or (hidden
/// `--fault-fs`, for `waybill matrix`) the fault-injecting one loaded from
/// the data dir, whose power SIGUSR1/SIGUSR2 cut.
pub fn node_fs(cfg: &Config) -> Result<NodeFs, ServeError> {
    if !cfg.fault_fs {
        return Ok((Arc::new(RealFs), None));
    }
    let cut = PowerCut::load(&cfg.data_dir).map_err(|e| ServeError::Store {
        dir: cfg.data_dir.clone(),
        source: StorageError::Io {
            path: cfg.data_dir.clone(),
            source: e,
        },
    })?;
    tracing::warn!("test mode: the engine's files live in memory on the fault-injecting file system (--fault-fs)");
    Ok((cut.fs(), Some(Arc::new(cut))))
}

/// Cuts the power on SIGUSR1 (unsynced writes dropped) or SIGUSR2 (torn),
/// writes what survived back to the data dir and exits at once, with no
/// shutdown step. The handlers are installed before this returns, so the
/// node never announces readiness with the signals' default (terminate).
fn arm_power_cut(cut: Arc<PowerCut>) -> Result<(), ServeError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut drop_sig = signal(SignalKind::user_defined1()).map_err(ServeError::Http)?;
    let mut tear_sig = signal(SignalKind::user_defined2()).map_err(ServeError::Http)?;
    tokio::spawn(async move {
        let mode = tokio::select! {
            _ = drop_sig.recv() => PowerLoss::DropUnsynced,
            _ = tear_sig.recv() => PowerLoss::Tear { seed: crate::time::now_ms() as u64 },
        };
        match cut.cut(mode) {
            Ok(r) => eprintln!(
                "waybill: power cut ({}): {} unsynced bytes lost, {} of them in the commit log",
                r.mode, r.unsynced_bytes, r.unsynced_log_bytes
            ),
            Err(e) => eprintln!("waybill: power cut failed to write the surviving disk back: {e}"),
        }
        std::process::exit(137);
    });
    Ok(())
}

/// Opens the store for `cfg` (recovering it) on `fs`, taking an epoch of
/// at least `min_epoch`.
pub fn open_store(cfg: &Config, fs: Arc<dyn Fs>, min_epoch: u32) -> Result<Arc<Store>, ServeError> {
    let mut flush = cfg.flush_policy();
    if cfg.unsafe_ack_before_fsync && flush == Flush::Sync {
        tracing::error!(
            "BROKEN ON PURPOSE (--unsafe-ack-before-fsync): sync-flush sends are acknowledged before the fsync"
        );
        // No periodic fsync at all: only segment rolls and checkpoints sync,
        // so a power cut surely takes acknowledged messages.
        flush = Flush::Async {
            interval: Duration::from_secs(3600),
        };
    }
    let mut opts = StoreOptions::new(cfg.data_dir.clone(), flush);
    opts.segment_bytes = cfg.segment_bytes;
    opts.node_id = cfg.node_id;
    opts.index_interval = Duration::from_millis(cfg.index_interval_ms);
    opts.reserve_bytes = cfg.disk_reserve_mb << 20;
    opts.warn_bytes = cfg.disk_warn_mb << 20;
    opts.min_epoch = min_epoch;
    Store::open(fs, opts).map(Arc::new).map_err(|source| ServeError::Store {
        dir: cfg.data_dir.clone(),
        source,
    })
}

/// Runs a node until `signal` resolves, then shuts it down gracefully.
pub async fn serve(
    cfg: Config,
    signal: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    cfg.validate()?;
    // Group members present `--auth-token` to each other; clients and
    // the dashboard any of the tokens, each with its role.
    let token: Option<Arc<str>> = cfg.auth_token.as_deref().map(Arc::from);
    let tokens = cfg.tokens().map(Arc::new);
    let token_rates = crate::broker::rate::TokenRates::new(cfg.rate_limit_per_token);
    // Read before anything opens: a bad certificate or key stops the start.
    let tls = crate::tls::load(&cfg)?;
    let link = status::Link {
        token: token.clone(),
        tls: tls.as_ref().map(|t| t.links.clone()),
    };
    let (fs, power_cut) = node_fs(&cfg)?;
    if let Some(cut) = power_cut {
        arm_power_cut(cut)?;
    }
    let mut store = {
        let cfg = cfg.clone();
        tokio::task::spawn_blocking(move || open_store(&cfg, fs, 0))
            .await
            .map_err(|e| ServeError::Http(std::io::Error::other(e)))??
    };
    let cluster = Arc::new(Cluster::new(
        cfg.node_id,
        match cfg.replication {
            ReplicationMode::Sync => Mode::Sync,
            ReplicationMode::Async => Mode::Async,
            ReplicationMode::Raft => Mode::Raft,
            ReplicationMode::None => Mode::None,
        },
        cfg.peers()?,
        &cfg.data_dir,
        Duration::from_millis(cfg.replica_timeout_ms),
        link.clone(),
    )?);
    let mut audit_base = AuditBase::default();
    if matches!(cluster.mode, Mode::Sync | Mode::Async) {
        let (s, base) = rejoin(&cfg, &cluster, store).await?;
        store = s;
        audit_base = base;
    } else {
        cluster.set(Role::Primary, cluster.persisted())?;
    }
    let opts = BrokerOptions {
        sync_flush_timeout: Duration::from_millis(cfg.sync_flush_timeout_ms),
        queues_per_topic: cfg.queues_per_topic,
        retry: cfg.retry_policy()?,
        client_timeout: Duration::from_millis(cfg.client_timeout_ms),
        replay_guard: cfg.replay_guard,
        transactions: crate::broker::transaction::TxOptions {
            check_after: Duration::from_millis(cfg.tx_check_timeout_ms.max(1)),
            max_checks: cfg.tx_max_checks,
        },
        clock: crate::time::Clock::system(),
        max_message_bytes: cfg.max_message_bytes,
    };
    // Consumer state first: Raft and replication apply to it.
    let consumers = {
        let (store, timeout, replay_queue) = (store.clone(), opts.client_timeout, opts.retry.replay_queue());
        let restored = tokio::task::spawn_blocking(move || Consumers::restore(&store, timeout, replay_queue))
            .await
            .map_err(|e| ServeError::Http(std::io::Error::other(e)))?;
        Arc::new(restored.map_err(ServeError::Broker)?)
    };
    let tracer = match cfg.trace_url() {
        Some(url) => {
            // Which acknowledged messages did the last crash take? Taken
            // now, before any new write; answered once the trace store
            // does. The node does not wait for it (see trace/writer.rs).
            let audit = if cluster.mode == Mode::Raft {
                // The commit log catches up from the Raft log after start: an
                // audit now would call messages lost that are about to be applied.
                tracing::info!("raft mode: startup audit skipped (the Raft log is the source of truth)");
                None
            } else {
                let mut start = audit::Start::at_open(&store, audit_base.cut_at);
                if let Some(end) = audit_base.recovered_end {
                    start.recovered_end = start.recovered_end.max(end);
                }
                Some(start)
            };
            let opts = crate::trace::Options {
                max_unwritten: cfg.trace_queue_messages,
                audit,
            };
            Some(Tracer::spawn(&url, store.clone(), opts).map_err(ServeError::Trace)?)
        }
        None => {
            tracing::warn!("tracing is off (--trace-db none)");
            None
        }
    };
    let otel = match &cfg.otlp_endpoint {
        Some(endpoint) => {
            let otel = crate::trace::otel::Otel::new(endpoint).map_err(ServeError::Otel)?;
            tracing::info!(%endpoint, "exporting message spans over OTLP/HTTP");
            Some(Arc::new(otel))
        }
        None => None,
    };
    let alerts = crate::trace::alerts::Alerts::new(cfg.alert_rules(), cfg.alert_webhook.clone());
    let subscribers = Arc::new(Subscribers::new(tracer.clone(), otel.clone(), Some(alerts.clone())));
    let bind = |addr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind { addr, source })
    };
    let listener = bind(cfg.http_addr).await?;
    let http_addr = listener.local_addr().map_err(ServeError::Http)?;
    let wire = bind(cfg.broker_addr).await?;
    let broker_addr = wire.local_addr().map_err(ServeError::Http)?;
    if let Ok(mut a) = cluster.http_addr.lock() {
        *a = http_addr.to_string();
    }
    let advertised = cfg.advertise_addr.clone().unwrap_or_else(|| broker_addr.to_string());
    if let Ok(mut a) = cluster.broker_addr.lock() {
        *a = advertised.clone();
    }
    let raft = if cluster.mode == Mode::Raft {
        let mut members = cluster.peers.clone();
        members.insert(cfg.node_id, advertised.clone());
        Some(
            crate::replication::raft::RaftNode::start(
                cfg.node_id,
                members,
                &cfg.data_dir,
                store.clone(),
                Duration::from_millis(cfg.replica_timeout_ms),
                consumers.clone(),
                link,
            )
            .await?,
        )
    } else {
        None
    };
    let node = Arc::new(Node {
        store: store.clone(),
        cluster: cluster.clone(),
        raft,
        events: subscribers.clone(),
        applied: consumers.clone(),
    });
    let broker = Arc::new(
        Broker::wired(
            store.clone(),
            opts,
            Wiring {
                events: Some(subscribers.clone()),
                replicas: node.replicas(),
                consumers: Some(consumers.clone()),
            },
        )
        .map_err(ServeError::Broker)?,
    );
    // Redrive jobs a crash or restart interrupted go on where they were.
    broker.resume_jobs();
    alerts.spawn(Watched {
        store: store.clone(),
        consumers,
        queues_per_topic: cfg.queues_per_topic,
        cluster: Some(cluster.clone()),
    });
    let shutdown = crate::shutdown::Shutdown::new();
    let port = crate::port::Port {
        limits: crate::port::frames::Limits::new(
            Duration::from_millis(cfg.broker_read_timeout_ms),
            Duration::from_millis(cfg.broker_idle_timeout_ms),
            // validate() keeps it within u32, so this fits usize.
            cfg.broker_inflight_bytes as usize,
        ),
        tokens: tokens.clone(),
        per_connection: cfg.rate_limit_per_connection,
        token_rates: token_rates.clone(),
        tls: tls.as_ref().map(|t| t.acceptor.clone()),
        stop: shutdown.stop(),
        drain: shutdown.drain(),
    };
    let targets = crate::port::Targets {
        broker: broker.clone(),
        node: Some(node.clone()),
    };
    let wire_task = tokio::spawn(crate::port::serve(wire, targets, port));
    tokio::spawn(check_transactions(Arc::downgrade(&broker)));
    if cluster.role() == Role::Replica && cluster.mode != Mode::Raft {
        replica::spawn_follower(node.clone());
    }
    // One machine-readable line on stdout: scripts and tests wait for it.
    println!(
        "waybill ready http={http_addr} broker={broker_addr} data_dir={}",
        cfg.data_dir.display()
    );
    tracing::info!(%http_addr, flush = ?cfg.flush_policy(), replication = cluster.mode.name(), role = cluster.role().name(), "serving");
    let ui_dir = cfg.ui_dir();
    if !ui_dir.join("index.html").is_file() {
        tracing::warn!(dir = %ui_dir.display(), "dashboard not built (./scripts/run.sh builds it); serving the API only");
    }
    let mut state = AppState::wired(broker.clone(), &subscribers, Some(node));
    state.stop = shutdown.stop();
    // Ends with the broker (it holds a weak reference).
    crate::trace::history::spawn_sampler(state.history.clone(), Arc::downgrade(&broker));
    drop(broker);
    let access = api::auth::Access {
        tokens,
        rates: token_rates,
    };
    let app = api::app_with_ui(state, cfg.max_body_bytes, access, Some(ui_dir));
    let http_stop = shutdown.stop();
    let mut http = tokio::spawn(async move {
        let stopped = async move { http_stop.wait().await };
        match tls {
            None => axum::serve(listener, app).with_graceful_shutdown(stopped).await,
            Some(t) => {
                let listener = crate::tls::TlsListener::new(listener, t.acceptor)?;
                axum::serve(listener, app).with_graceful_shutdown(stopped).await
            }
        }
    });
    let early = tokio::select! {
        r = &mut http => Some(r),
        _ = signal => None,
    };
    if let Some(r) = early {
        // Before the stop the HTTP server only ends on an error.
        r.map_err(|e| ServeError::Http(std::io::Error::other(e)))?
            .map_err(ServeError::Http)?;
        return Err(ServeError::Http(std::io::Error::other(
            "the HTTP server stopped by itself",
        )));
    }
    let began = std::time::Instant::now();
    tracing::info!("shutting down: accepting nothing new, draining requests in flight");
    shutdown.begin();
    let drain = shutdown.drain();
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        let _ = (&mut http).await;
        drain.idle().await;
    })
    .await;
    match drained {
        Ok(()) => tracing::info!(took = ?began.elapsed(), "drained"),
        Err(_) => tracing::warn!(
            broker_connections = drain.busy(),
            "requests in flight did not finish in time ({DRAIN_TIMEOUT:?}): the rest get no answer"
        ),
    }
    http.abort();
    wire_task.abort();
    if let Some(otel) = otel {
        // Flushes buffered spans; the exporter's own thread does the I/O.
        let _ = tokio::task::spawn_blocking(move || otel.shutdown()).await;
    }
    let closed = tokio::task::spawn_blocking(move || store.close_clean())
        .await
        .map_err(|e| ServeError::Http(std::io::Error::other(e)))?;
    match closed {
        Ok(m) => tracing::info!(
            end = m.end,
            records = m.records,
            took = ?began.elapsed(),
            "store closed cleanly: flushed, indexed, checkpointed; the next start skips the recovery scan"
        ),
        Err(why) => tracing::warn!(%why, "store closed without a clean-shutdown marker: the next start scans the log"),
    }
    if let Some(t) = tracer {
        // After the store closed: the closing mark says nothing of this
        // boot can be missing from the log.
        if !t.close(TRACE_CLOSE_GRACE).await {
            tracing::warn!("the trace store did not take the last events in time");
        }
    }
    Ok(())
}

/// How long a starting replica looks for its primary before it opens for
/// business anyway (it keeps looking in the background).
const REJOIN_WAIT: Duration = Duration::from_secs(5);

/// Decides this node's role at start and, for a replica, cuts what its log
/// holds that the primary never had. Returns the (re)opened store and what
/// the start-up audit compares with (see [`AuditBase`]).
async fn rejoin(
    cfg: &Config,
    cluster: &Arc<Cluster>,
    store: Arc<Store>,
) -> Result<(Arc<Store>, AuditBase), ServeError> {
    let persisted = cluster.persisted();
    // Is there a primary already, maybe of a newer term than ours?
    let asks = cluster
        .peers
        .values()
        .map(|addr| status::query(addr, Duration::from_millis(500), &cluster.link));
    let newest = futures_util::future::join_all(asks)
        .await
        .into_iter()
        .flatten()
        .filter(|s| s.role == "primary")
        .max_by_key(|s| s.term);
    let me = cluster.node_id;
    let primary = match &newest {
        Some(s) if s.term >= persisted.term => s.id,
        _ => persisted.primary.unwrap_or_else(|| cluster.initial_primary()),
    };
    if primary == me {
        cluster.set(
            Role::Primary,
            Persisted {
                term: persisted.term,
                primary: Some(me),
            },
        )?;
        return Ok((store, AuditBase::default()));
    }
    let term = newest.as_ref().map_or(persisted.term, |s| s.term.max(persisted.term));
    cluster.set(
        Role::Replica,
        Persisted {
            term,
            primary: Some(primary),
        },
    )?;
    let deadline = tokio::time::Instant::now() + REJOIN_WAIT;
    let following = loop {
        match replica::handshake(cluster, &store).await {
            Ok((_, _, f)) => break Some(f),
            Err(e) if tokio::time::Instant::now() >= deadline => {
                tracing::warn!(error = %e, "no primary answered at start; following in the background");
                break None;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    let following_known = following.is_some();
    // A node whose data dir was lost rejoins with an empty log: it must
    // not reuse an epoch its old self wrote under (ids embed it).
    let yours = following.as_ref().and_then(|f| f.yours);
    let store = match yours {
        Some(y) if store.epoch() <= y.epoch => {
            tracing::warn!(
                old_epoch = y.epoch,
                "the group holds writing of an earlier boot this data dir does not know: starting past its epoch"
            );
            reopen(cfg, store, None, y.epoch.saturating_add(1)).await?
        }
        _ => store,
    };
    let end = store.stats().log_end;
    let Some(f) = following.filter(|f| f.from < end) else {
        return Ok((store, lost_dir_base(end, yours, following_known)));
    };
    // This log holds records the primary never had (a former primary that
    // acknowledged them before a replica got them): cut them, name them.
    let cut = store.records_from(f.from);
    let own: Vec<String> = cut
        .iter()
        .filter(|(_, m)| !m.topic.starts_with('%') && m.node == me)
        .map(|(pos, m)| {
            crate::broker::MessageId {
                node: m.node,
                epoch: m.epoch,
                pos: *pos,
            }
            .to_string()
        })
        .collect();
    tracing::warn!(
        from = f.from,
        end,
        records = cut.len(),
        own_messages = own.len(),
        ids = ?own.iter().take(20).collect::<Vec<_>>(),
        "cutting the log back to where it agrees with primary {}: these records never reached it",
        f.primary
    );
    let reopened = reopen(cfg, store, Some(f.from), 0).await?;
    Ok((
        reopened,
        AuditBase {
            recovered_end: Some(f.from),
            cut_at: Some(f.from),
        },
    ))
}

/// Where the start-up audit compares this node's earlier acknowledgements:
/// `recovered_end` overrides the log end (data the group holds and this
/// node will copy back is not lost), and acknowledged messages at or past
/// `cut_at` are lost at `replicate`.
#[derive(Debug, Clone, Copy, Default)]
struct AuditBase {
    recovered_end: Option<u64>,
    cut_at: Option<u64>,
}

/// A replica whose log lacks writing of its own that the group kept (its
/// data dir was lost, or cut short): the group holds that writing up to
/// `yours.end`, and whatever it acknowledged past it never reached the
/// group. With nothing of its own in the group and an empty log, every
/// earlier acknowledgement is gone the same way.
fn lost_dir_base(end: u64, yours: Option<crate::replication::protocol::Yours>, known: bool) -> AuditBase {
    match yours {
        Some(y) if y.end > end => AuditBase {
            recovered_end: Some(y.end),
            cut_at: Some(y.end),
        },
        None if known && end == 0 => AuditBase {
            recovered_end: None,
            cut_at: Some(0),
        },
        _ => AuditBase::default(),
    }
}

/// Closes `store`, cuts its log at `cut` (if given), and opens it again
/// taking an epoch of at least `min_epoch`.
async fn reopen(cfg: &Config, store: Arc<Store>, cut: Option<u64>, min_epoch: u32) -> Result<Arc<Store>, ServeError> {
    let cfg2 = cfg.clone();
    tokio::task::spawn_blocking(move || {
        let fs = store.fs();
        store.close();
        drop(store);
        if let Some(at) = cut {
            crate::storage::truncate::truncate(&*fs, &cfg2.data_dir, at).map_err(|source| ServeError::Store {
                dir: cfg2.data_dir.clone(),
                source,
            })?;
        }
        open_store(&cfg2, fs, min_epoch)
    })
    .await
    .map_err(|e| ServeError::Http(std::io::Error::other(e)))?
}

/// Transaction check-backs, a round every 200 ms while the broker lives.
async fn check_transactions(broker: std::sync::Weak<Broker>) {
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tick.tick().await;
        let Some(b) = broker.upgrade() else { return };
        b.check_transactions().await;
    }
}
