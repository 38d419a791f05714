//! Per-topic and per-group series of `/metrics`, derived at scrape time
//! from what the store and broker already keep (consume queue lengths,
//! committed offsets, flushed and replicated positions): nothing is counted
//! on the hot path but the produce answers, once per request.
//!
//! - `waybill_topic_messages_produced_total{topic,status}`: stored by
//!   produce requests since start, by the status the producer got;
//! - `waybill_topic_messages_stored_total{topic}`: in the topic's queues;
//! - `waybill_topic_messages_flushed_total{topic}`: of those, covered by an
//!   fsync;
//! - `waybill_topic_messages_replicated_total{topic,replica}`: confirmed by
//!   each replica (on a primary);
//! - `waybill_topic_messages_consumed_total{topic,group}`: below the
//!   group's committed offsets;
//! - `waybill_consumer_lag{group,topic}`, `waybill_group_retries_total{group}`
//!   (retry records written), `waybill_group_dlq_total{group}`;
//! - `waybill_transactions_open`;
//! - `waybill_refused_total{reason}`: requests refused over a limit
//!   (message size, key, tags, producer, properties, rate).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;

use crate::broker::retry::{dlq_topic, retry_topic};
use crate::broker::Broker;
use crate::replication::Cluster;

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A label value with `\` and `"` escaped (Prometheus text format).
fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

pub fn write(out: &mut String, broker: &Broker, cluster: Option<&Arc<Cluster>>) {
    let store = broker.store();
    let flushed = store.stats().flushed;
    // User topics and their queues.
    let mut topics: BTreeMap<String, Vec<(u32, u64)>> = BTreeMap::new();
    let mut all: BTreeMap<String, u64> = BTreeMap::new();
    for (t, q, len) in store.queues() {
        *all.entry(t.clone()).or_default() += len;
        if !t.starts_with('%') {
            topics.entry(t).or_default().push((q, len));
        }
    }

    header(
        out,
        "waybill_topic_messages_produced_total",
        "Messages stored by produce requests since start, by topic and the status the producer got.",
        "counter",
    );
    for ((t, status), n) in broker.produced() {
        let _ = writeln!(
            out,
            "waybill_topic_messages_produced_total{{topic=\"{}\",status=\"{status}\"}} {n}",
            label(&t)
        );
    }
    header(
        out,
        "waybill_topic_messages_stored_total",
        "Messages in the topic's queues.",
        "counter",
    );
    for (t, queues) in &topics {
        let n: u64 = queues.iter().map(|(_, len)| len).sum();
        let _ = writeln!(out, "waybill_topic_messages_stored_total{{topic=\"{}\"}} {n}", label(t));
    }
    header(
        out,
        "waybill_topic_messages_flushed_total",
        "Messages of the topic covered by an fsync.",
        "counter",
    );
    for (t, queues) in &topics {
        let n: u64 = queues
            .iter()
            .map(|(q, _)| store.queue_count_below(t, *q, flushed))
            .sum();
        let _ = writeln!(
            out,
            "waybill_topic_messages_flushed_total{{topic=\"{}\"}} {n}",
            label(t)
        );
    }
    if let Some(c) = cluster {
        let replicas = c.replicas();
        if !replicas.is_empty() {
            header(
                out,
                "waybill_topic_messages_replicated_total",
                "Messages of the topic each replica confirmed.",
                "counter",
            );
            for (id, info) in replicas {
                for (t, queues) in &topics {
                    let n: u64 = queues
                        .iter()
                        .map(|(q, _)| store.queue_count_below(t, *q, info.durable))
                        .sum();
                    let _ = writeln!(
                        out,
                        "waybill_topic_messages_replicated_total{{topic=\"{}\",replica=\"{id}\"}} {n}",
                        label(t)
                    );
                }
            }
        }
    }

    let subscriptions = broker.groups().subscriptions();
    header(
        out,
        "waybill_topic_messages_consumed_total",
        "Messages of the topic below the group's committed offsets.",
        "counter",
    );
    let mut lags = Vec::new();
    for (group, topic) in &subscriptions {
        let (mut consumed, mut lag) = (0u64, 0u64);
        for (q, len) in topics.get(topic).map(Vec::as_slice).unwrap_or_default() {
            let committed = broker.groups().offset(group, topic, *q).unwrap_or(0).min(*len);
            consumed += committed;
            lag += len - committed;
        }
        let _ = writeln!(
            out,
            "waybill_topic_messages_consumed_total{{topic=\"{}\",group=\"{}\"}} {consumed}",
            label(topic),
            label(group)
        );
        lags.push((group, topic, lag));
    }
    header(
        out,
        "waybill_consumer_lag",
        "Messages a group has not committed yet.",
        "gauge",
    );
    for (group, topic, lag) in lags {
        let _ = writeln!(
            out,
            "waybill_consumer_lag{{group=\"{}\",topic=\"{}\"}} {lag}",
            label(group),
            label(topic)
        );
    }
    let mut groups: Vec<&String> = subscriptions.iter().map(|(g, _)| g).collect();
    groups.sort();
    groups.dedup();
    header(
        out,
        "waybill_group_retries_total",
        "Retry records written for the group (handed back, scheduled for redelivery; replays included).",
        "counter",
    );
    for g in &groups {
        let n = all.get(&retry_topic(g)).copied().unwrap_or(0);
        let _ = writeln!(out, "waybill_group_retries_total{{group=\"{}\"}} {n}", label(g));
    }
    header(
        out,
        "waybill_group_dlq_total",
        "Messages the group dead-lettered.",
        "counter",
    );
    for g in &groups {
        let n = all.get(&dlq_topic(g)).copied().unwrap_or(0);
        let _ = writeln!(out, "waybill_group_dlq_total{{group=\"{}\"}} {n}", label(g));
    }
    header(
        out,
        "waybill_transactions_open",
        "Half messages whose transaction has not ended.",
        "gauge",
    );
    let _ = writeln!(out, "waybill_transactions_open {}", broker.transactions().open_count());
    header(
        out,
        "waybill_refused_total",
        "Requests refused over a limit, by reason.",
        "counter",
    );
    for (reason, n) in broker.refusals().snapshot() {
        let _ = writeln!(out, "waybill_refused_total{{reason=\"{reason}\"}} {n}");
    }
}
