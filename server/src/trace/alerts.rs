//! Alerts: threshold rules evaluated every second, shown in the API and the
//! live feed, exported as metrics, and POSTed to `--alert-webhook` when they
//! fire and when they resolve.
//!
//! Rules (thresholds from the config; 0 turns a rule off):
//! - `dlq_inflow`: dead-letterings per group in the last minute.
//! - `consumer_lag`: messages between a group's committed offset and the
//!   queue end, summed over the topic's queues.
//! - `unflushed_age`: how long acknowledged-but-not-fsynced data (async
//!   flush) has been waiting — data at risk of a power loss — with the bytes.
//! - `flush_queue`: sync-flush sends waiting for their fsync.
//! - `replica_lag`: on a primary, bytes of log a replica has not confirmed
//!   (connected or not) — what losing the primary now would lose under
//!   async replication, and what blocks sends under sync replication.
//! - `disk_space`: free space on the data disk below `--disk-warn-mb`,
//!   before writes are refused at `--disk-reserve-mb`.
//!
//! A webhook that fails is retried at the next transition only; alert
//! delivery never blocks evaluation or the broker.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde_json::json;

use crate::broker::Consumers;
use crate::replication::Cluster;
use crate::storage::space::DiskState;
use crate::storage::Store;
use crate::time::now_ms;

/// Evaluation period.
const EVERY: Duration = Duration::from_secs(1);
/// Webhook request timeout: a slow receiver must not pile up requests.
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct AlertRules {
    pub dlq_inflow_per_min: u64,
    pub consumer_lag: u64,
    pub unflushed_age_ms: u64,
    pub flush_queue: u64,
    pub replica_lag_bytes: u64,
}

impl Default for AlertRules {
    fn default() -> Self {
        AlertRules {
            dlq_inflow_per_min: 1,
            consumer_lag: 10_000,
            unflushed_age_ms: 5_000,
            flush_queue: 10_000,
            replica_lag_bytes: 64 << 20,
        }
    }
}

/// One firing alert.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Alert {
    pub alert: &'static str,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
    pub threshold: f64,
    pub summary: String,
    pub since_ms: i64,
}

impl Alert {
    fn key(&self) -> String {
        format!("{}{:?}", self.alert, self.labels)
    }
}

pub struct Alerts {
    rules: AlertRules,
    webhook: Option<String>,
    // std Mutex: replaced once per evaluation; readers clone.
    firing: Mutex<BTreeMap<String, Alert>>,
    /// When unflushed data started waiting (ms), 0 when all is flushed.
    unflushed_since: Mutex<i64>,
    /// Times (ms) of recent dead-letterings per group, for the DLQ-inflow
    /// rule; pruned to the last minute. std Mutex: push/prune only.
    dlq_moves: Mutex<HashMap<String, VecDeque<i64>>>,
}

/// What the rules look at: the store, the consumer state and, in a
/// replication group, the cluster state. Never the broker.
#[derive(Clone)]
pub struct Watched {
    pub store: Arc<Store>,
    pub consumers: Arc<Consumers>,
    /// Queues per topic (the lag sums over them).
    pub queues_per_topic: u32,
    pub cluster: Option<Arc<Cluster>>,
}

impl Alerts {
    pub fn new(rules: AlertRules, webhook: Option<String>) -> Arc<Alerts> {
        Arc::new(Alerts {
            rules,
            webhook,
            firing: Mutex::new(BTreeMap::new()),
            unflushed_since: Mutex::new(0),
            dlq_moves: Mutex::new(HashMap::new()),
        })
    }

    /// Records a dead-lettering by `group` at `at_ms`.
    pub fn note_dead_letter(&self, group: &str, at_ms: i64) {
        let mut moves = self.dlq_moves.lock().unwrap_or_else(|p| p.into_inner());
        let q = moves.entry(group.to_string()).or_default();
        q.push_back(at_ms);
        while q.front().is_some_and(|t| at_ms - *t > 60_000) {
            q.pop_front();
        }
    }

    /// Dead-letterings per group in the last minute.
    pub fn dlq_inflow(&self) -> Vec<(String, u64)> {
        let now = now_ms();
        let moves = self.dlq_moves.lock().unwrap_or_else(|p| p.into_inner());
        moves
            .iter()
            .map(|(g, q)| (g.clone(), q.iter().filter(|t| now - **t <= 60_000).count() as u64))
            .collect()
    }

    /// Starts the evaluation loop.
    pub fn spawn(self: &Arc<Self>, watched: Watched) {
        let me = self.clone();
        tokio::spawn(async move {
            let client = reqwest::Client::builder().timeout(WEBHOOK_TIMEOUT).build().ok();
            let mut tick = tokio::time::interval(EVERY);
            loop {
                tick.tick().await;
                let now = me.evaluate(&watched);
                me.apply(now, client.as_ref()).await;
            }
        });
    }

    /// Alerts firing now.
    pub fn firing(&self) -> Vec<Alert> {
        self.firing
            .lock()
            .map(|f| f.values().cloned().collect())
            .unwrap_or_default()
    }

    fn evaluate(&self, w: &Watched) -> Vec<Alert> {
        let r = &self.rules;
        let now = now_ms();
        let mut out = Vec::new();
        let mut alert = |name: &'static str, labels: &[(&str, &str)], value: u64, threshold: u64, summary: String| {
            if threshold > 0 && value >= threshold {
                out.push(Alert {
                    alert: name,
                    labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                    value: value as f64,
                    threshold: threshold as f64,
                    summary,
                    since_ms: now,
                });
            }
        };
        for (group, n) in self.dlq_inflow() {
            alert(
                "dlq_inflow",
                &[("group", &group)],
                n,
                r.dlq_inflow_per_min,
                format!("{n} message(s) dead-lettered by group {group} in the last minute"),
            );
        }
        let store = &w.store;
        let groups = w.consumers.groups();
        for (group, topic) in groups.subscriptions() {
            let lag: u64 = (0..w.queues_per_topic)
                .map(|q| {
                    let end = store.queue_len(&topic, q);
                    end.saturating_sub(groups.offset(&group, &topic, q).unwrap_or(0))
                })
                .sum();
            alert(
                "consumer_lag",
                &[("group", &group), ("topic", &topic)],
                lag,
                r.consumer_lag,
                format!("group {group} is {lag} messages behind on {topic}"),
            );
        }
        let s = store.stats();
        let unflushed = s.log_end.saturating_sub(s.flushed);
        let age = {
            let mut since = self.unflushed_since.lock().unwrap_or_else(|p| p.into_inner());
            if unflushed == 0 {
                *since = 0;
                0
            } else {
                if *since == 0 {
                    *since = now;
                }
                (now - *since).max(0) as u64
            }
        };
        alert(
            "unflushed_age",
            &[],
            age,
            r.unflushed_age_ms,
            format!("{unflushed} acknowledged bytes not fsynced for {age} ms: at risk of a power loss"),
        );
        alert(
            "flush_queue",
            &[],
            s.flush_waiters as u64,
            r.flush_queue,
            format!("{} sends waiting for an fsync", s.flush_waiters),
        );
        if let Some(c) = &w.cluster {
            let shipping = matches!(c.mode, crate::replication::Mode::Sync | crate::replication::Mode::Async);
            if shipping && c.role() == crate::replication::Role::Primary {
                for (id, info) in c.replicas() {
                    let lag = s.log_end.saturating_sub(info.durable);
                    let id = id.to_string();
                    alert(
                        "replica_lag",
                        &[("replica", &id)],
                        lag,
                        r.replica_lag_bytes,
                        format!(
                            "replica {id} ({}) has not confirmed the last {lag} bytes of the log",
                            if info.connected { "connected" } else { "disconnected" }
                        ),
                    );
                }
            }
        }
        // Free space below the warning mark: before writes are refused.
        let disk = store.disk();
        if disk.state != DiskState::Ok {
            let refused = disk.state == DiskState::Full;
            out.push(Alert {
                alert: "disk_space",
                labels: BTreeMap::new(),
                value: disk.available_bytes as f64,
                threshold: disk.warn_bytes as f64,
                summary: format!(
                    "{} MiB free on the data disk ({}; writes are refused below {} MiB)",
                    disk.available_bytes >> 20,
                    if refused {
                        "writes refused now"
                    } else {
                        "below the warning mark"
                    },
                    disk.reserve_bytes >> 20
                ),
                since_ms: now,
            });
        }
        out
    }

    /// Swaps in the new firing set; notifies transitions.
    async fn apply(&self, now: Vec<Alert>, client: Option<&reqwest::Client>) {
        let (fired, resolved) = {
            let mut firing = self.firing.lock().unwrap_or_else(|p| p.into_inner());
            let mut next = BTreeMap::new();
            let mut fired = Vec::new();
            for mut a in now {
                let key = a.key();
                match firing.remove(&key) {
                    Some(old) => a.since_ms = old.since_ms,
                    None => fired.push(a.clone()),
                }
                next.insert(key, a);
            }
            let resolved: Vec<Alert> = std::mem::replace(&mut *firing, next).into_values().collect();
            (fired, resolved)
        };
        for (state, list) in [("firing", fired), ("resolved", resolved)] {
            for a in list {
                tracing::warn!(alert = a.alert, labels = ?a.labels, state, summary = %a.summary, "alert");
                if let (Some(url), Some(client)) = (&self.webhook, client) {
                    let body = json!({
                        "alert": a.alert, "state": state, "labels": a.labels, "value": a.value,
                        "threshold": a.threshold, "summary": a.summary, "since_ms": a.since_ms, "at_ms": now_ms(),
                    });
                    if let Err(e) = client.post(url).json(&body).send().await {
                        tracing::warn!(error = %e, "alert webhook failed");
                    }
                }
            }
        }
    }

    /// Prometheus lines: one gauge per firing alert (value 1) and the value.
    pub fn metrics_text(&self) -> String {
        let mut out = String::from(
            "# HELP waybill_alert_firing Alerts firing now (1), by alert and labels.\n# TYPE waybill_alert_firing gauge\n",
        );
        for a in self.firing() {
            let mut labels = format!("alert=\"{}\"", a.alert);
            for (k, v) in &a.labels {
                labels.push_str(&format!(",{k}=\"{}\"", v.replace('"', "'")));
            }
            out.push_str(&format!("waybill_alert_firing{{{labels}}} 1\n"));
        }
        out
    }
}
