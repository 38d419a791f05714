//! Bounded per-second history of the node's stats, for
//! `GET /api/v1/stats/history` and the dashboard's charts.
//!
//! A sampler task ([`spawn_sampler`]) reads the broker once a second into a
//! [`Reading`] of cumulative counters and gauges; [`History::record`] turns
//! it into a [`Sample`] (counters become per-second deltas) kept in a ring.
//!
//! Series (one [`Kind`], maybe a topic or a group):
//! - `produce` per user topic: messages stored by produce requests;
//! - `consume` per user topic: committed offsets moved (all groups);
//! - `lag` per group: messages of its topic not committed yet (a gauge);
//! - `retry`, `dlq`: retry records (replays excluded) and dead letters
//!   written, node-wide;
//! - `fsync_ms`: mean fsync latency over the second (0 without fsync);
//! - `unflushed_bytes`: acknowledged log bytes not fsynced yet (a gauge).
//!
//! Invariants and bounds:
//! - at most [`KEEP`] samples (one hour): the oldest is dropped first;
//! - at most [`MAX_TOPICS`] topics and [`MAX_GROUPS`] groups get series;
//!   labels beyond are not recorded and counted in
//!   [`History::untracked`] (a label once tracked keeps its slot), so a
//!   sample holds at most 2 × 128 + 128 + 4 values: worst case ≈ 22 MB;
//! - samples are sparse: a zero count is not stored and reads as 0;
//! - a counter that went backwards (offset reset, restart) counts 0, never
//!   a negative rate.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use serde_json::{json, Value};

use crate::broker::retry::{dlq_topic, retry_topic};
use crate::broker::Broker;

/// Samples kept: one hour at one a second.
pub const KEEP: usize = 3_600;
/// Topics with `produce`/`consume` series.
pub const MAX_TOPICS: usize = 128;
/// Groups with a `lag` series.
pub const MAX_GROUPS: usize = 128;
/// How often the sampler reads the broker.
pub const EVERY: Duration = Duration::from_secs(1);
/// Samples averaged by [`History::topic_rates`] (ten seconds).
const RATE_WINDOW: usize = 10;

/// What a series measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Produce,
    Consume,
    Lag,
    Retry,
    Dlq,
    FsyncMs,
    UnflushedBytes,
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::Produce,
        Kind::Consume,
        Kind::Lag,
        Kind::Retry,
        Kind::Dlq,
        Kind::FsyncMs,
        Kind::UnflushedBytes,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Produce => "produce",
            Kind::Consume => "consume",
            Kind::Lag => "lag",
            Kind::Retry => "retry",
            Kind::Dlq => "dlq",
            Kind::FsyncMs => "fsync_ms",
            Kind::UnflushedBytes => "unflushed_bytes",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == s)
    }

    /// Counts per second: a step of several seconds shows their per-second
    /// average. The others (gauges, latency) show the step's maximum.
    pub fn is_count(self) -> bool {
        matches!(self, Kind::Produce | Kind::Consume | Kind::Retry | Kind::Dlq)
    }
}

/// One series: a kind and the topic or group it is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeriesKey {
    pub kind: Kind,
    pub topic: Option<String>,
    pub group: Option<String>,
}

impl SeriesKey {
    fn node(kind: Kind) -> SeriesKey {
        SeriesKey {
            kind,
            topic: None,
            group: None,
        }
    }

    fn topic(kind: Kind, topic: &str) -> SeriesKey {
        SeriesKey {
            kind,
            topic: Some(topic.to_string()),
            group: None,
        }
    }

    fn group(kind: Kind, group: &str) -> SeriesKey {
        SeriesKey {
            kind,
            topic: None,
            group: Some(group.to_string()),
        }
    }

    /// `{"kind", "topic"?, "group"?}` plus `extra` fields.
    pub fn to_json(&self, extra: (&str, Value)) -> Value {
        let mut v = json!({ "kind": self.kind.name() });
        if let Some(t) = &self.topic {
            v["topic"] = json!(t);
        }
        if let Some(g) = &self.group {
            v["group"] = json!(g);
        }
        v[extra.0] = extra.1;
        v
    }
}

/// Cumulative counters and gauges read from the broker at one instant.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reading {
    pub at_ms: i64,
    /// Messages stored by produce requests since start, per user topic.
    pub produced: BTreeMap<String, u64>,
    /// Committed offsets summed over groups, per user topic.
    pub consumed: BTreeMap<String, u64>,
    /// Messages not committed yet, per group (gauge).
    pub lag: BTreeMap<String, u64>,
    /// Retry records in every `%RETRY%` topic, replay queues excluded.
    pub retries: u64,
    /// Records in every `%DLQ%` topic.
    pub dead: u64,
    pub fsyncs: u64,
    pub fsync_nanos: u64,
    /// Log bytes written but not fsynced (gauge).
    pub unflushed_bytes: u64,
}

/// One second of history: `(series id, value)`, zeros left out.
#[derive(Debug, Clone)]
struct Sample {
    at_ms: i64,
    values: Vec<(u16, f64)>,
}

#[derive(Default)]
struct Inner {
    keys: Vec<SeriesKey>,
    ids: HashMap<SeriesKey, u16>,
    topics: HashSet<String>,
    groups: HashSet<String>,
    untracked: HashSet<String>,
    ring: VecDeque<Sample>,
    prev: Option<Reading>,
}

impl Inner {
    /// The series' id, registering it if its label still fits the caps.
    fn id(&mut self, key: SeriesKey) -> Option<u16> {
        if let Some(id) = self.ids.get(&key) {
            return Some(*id);
        }
        let fits = match (&key.topic, &key.group) {
            (Some(t), _) => self.topics.contains(t) || self.topics.len() < MAX_TOPICS,
            (_, Some(g)) => self.groups.contains(g) || self.groups.len() < MAX_GROUPS,
            _ => true,
        };
        if !fits {
            // Bounded: at most one entry per label seen, and labels are
            // topic and group names the broker itself bounds.
            if self.untracked.len() < 4 * (MAX_TOPICS + MAX_GROUPS) {
                let label = key.topic.clone().or_else(|| key.group.clone()).unwrap_or_default();
                self.untracked.insert(label);
            }
            return None;
        }
        if let Some(t) = &key.topic {
            self.topics.insert(t.clone());
        }
        if let Some(g) = &key.group {
            self.groups.insert(g.clone());
        }
        let id = u16::try_from(self.keys.len()).ok()?;
        self.keys.push(key.clone());
        self.ids.insert(key, id);
        Some(id)
    }

    fn push(&mut self, values: &mut Vec<(u16, f64)>, key: SeriesKey, value: f64) {
        if let Some(id) = self.id(key) {
            if value != 0.0 {
                values.push((id, value));
            }
        }
    }
}

/// The ring of samples; see the module doc.
#[derive(Default)]
pub struct History {
    // std Mutex: held for in-memory work only (one sample in, or one
    // query's copy out), never across an await.
    inner: Mutex<Inner>,
}

/// Growth of a cumulative counter; a counter that went back counts 0.
fn delta(now: u64, before: u64) -> f64 {
    now.saturating_sub(before) as f64
}

impl History {
    pub fn new() -> History {
        History::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds the sample for `r` (counters: the growth since the previous
    /// reading; the first reading only sets the baseline of those).
    pub fn record(&self, r: Reading) {
        let mut inner = self.lock();
        let prev = inner.prev.take().unwrap_or_else(|| Reading {
            // Produce counts start at 0 with the node: what was sent before
            // the first reading still counts. The rest start from the
            // first reading (committed offsets survive a restart).
            produced: BTreeMap::new(),
            ..r.clone()
        });
        let mut values = Vec::new();
        for (t, n) in &r.produced {
            let d = delta(*n, prev.produced.get(t).copied().unwrap_or(0));
            inner.push(&mut values, SeriesKey::topic(Kind::Produce, t), d);
        }
        for (t, n) in &r.consumed {
            // Offsets at the first reading are the baseline (they survive
            // restarts); a topic first committed later counts from 0.
            let d = delta(*n, prev.consumed.get(t).copied().unwrap_or(0));
            inner.push(&mut values, SeriesKey::topic(Kind::Consume, t), d);
        }
        for (g, n) in &r.lag {
            inner.push(&mut values, SeriesKey::group(Kind::Lag, g), *n as f64);
        }
        let retry = delta(r.retries, prev.retries);
        inner.push(&mut values, SeriesKey::node(Kind::Retry), retry);
        let dead = delta(r.dead, prev.dead);
        inner.push(&mut values, SeriesKey::node(Kind::Dlq), dead);
        let fsyncs = r.fsyncs.saturating_sub(prev.fsyncs);
        let fsync_ms = match fsyncs {
            0 => 0.0,
            n => r.fsync_nanos.saturating_sub(prev.fsync_nanos) as f64 / n as f64 / 1e6,
        };
        inner.push(&mut values, SeriesKey::node(Kind::FsyncMs), fsync_ms);
        inner.push(
            &mut values,
            SeriesKey::node(Kind::UnflushedBytes),
            r.unflushed_bytes as f64,
        );
        if inner.ring.len() >= KEEP {
            inner.ring.pop_front();
        }
        inner.ring.push_back(Sample { at_ms: r.at_ms, values });
        inner.prev = Some(r);
    }

    /// Topics and groups seen beyond the caps (not recorded).
    pub fn untracked(&self) -> usize {
        self.lock().untracked.len()
    }

    /// Every series `keep` accepts over `[from_ms, to_ms]` in buckets of
    /// `step_ms` aligned to multiples of it: `[bucket start ms, value]` for
    /// each bucket holding at least one sample (sum / step seconds for
    /// counts, max otherwise). Callers bound the bucket count.
    pub fn series(
        &self,
        from_ms: i64,
        to_ms: i64,
        step_ms: i64,
        keep: impl Fn(&SeriesKey) -> bool,
    ) -> Vec<(SeriesKey, Vec<(i64, f64)>)> {
        let step_ms = step_ms.max(1);
        let inner = self.lock();
        let wanted: Vec<(u16, &SeriesKey)> = inner
            .keys
            .iter()
            .enumerate()
            .filter(|(_, k)| keep(k))
            .filter_map(|(i, k)| Some((u16::try_from(i).ok()?, k)))
            .collect();
        let slot: HashMap<u16, usize> = wanted.iter().enumerate().map(|(i, (id, _))| (*id, i)).collect();
        // Per wanted series, bucket start → accumulated value.
        let mut acc: Vec<BTreeMap<i64, f64>> = vec![BTreeMap::new(); wanted.len()];
        for s in inner.ring.iter().filter(|s| s.at_ms >= from_ms && s.at_ms <= to_ms) {
            let bucket = s.at_ms.div_euclid(step_ms) * step_ms;
            for a in acc.iter_mut() {
                a.entry(bucket).or_insert(0.0);
            }
            for (id, v) in &s.values {
                let Some(i) = slot.get(id) else { continue };
                let cell = acc[*i].entry(bucket).or_insert(0.0);
                if wanted[*i].1.kind.is_count() {
                    *cell += v;
                } else {
                    *cell = cell.max(*v);
                }
            }
        }
        let per_s = step_ms as f64 / 1000.0;
        wanted
            .into_iter()
            .zip(acc)
            .map(|((_, key), points)| {
                let count = key.kind.is_count() && per_s != 1.0;
                let points = points
                    .into_iter()
                    .map(|(at, v)| (at, if count { v / per_s } else { v }))
                    .collect();
                (key.clone(), points)
            })
            .collect()
    }

    /// The newest sample, every tracked series (0 where it has none):
    /// `{"at_ms", "series": [{"kind","topic"?,"group"?,"value"}]}`.
    pub fn latest(&self) -> Option<Value> {
        let inner = self.lock();
        let s = inner.ring.back()?;
        let mut values = vec![0.0; inner.keys.len()];
        for (id, v) in &s.values {
            if let Some(cell) = values.get_mut(usize::from(*id)) {
                *cell = *v;
            }
        }
        let series: Vec<Value> = inner
            .keys
            .iter()
            .zip(values)
            .map(|(k, v)| k.to_json(("value", json!(v))))
            .collect();
        Some(json!({ "at_ms": s.at_ms, "series": series }))
    }

    /// `(produce, consume)` messages per second of `topic` over the last
    /// ten samples (fewer right after start: averaged over those).
    pub fn topic_rates(&self, topic: &str) -> (f64, f64) {
        let inner = self.lock();
        let id = |kind| inner.ids.get(&SeriesKey::topic(kind, topic)).copied();
        let (p, c) = (id(Kind::Produce), id(Kind::Consume));
        let recent: Vec<&Sample> = inner.ring.iter().rev().take(RATE_WINDOW).collect();
        if recent.is_empty() {
            return (0.0, 0.0);
        }
        let sum = |want: Option<u16>| -> f64 {
            recent
                .iter()
                .flat_map(|s| s.values.iter())
                .filter(|(id, _)| Some(*id) == want)
                .map(|(_, v)| v)
                // From +0.0: an empty f64 `sum()` is -0.0, shown as "-0.0/s".
                .fold(0.0, |a, v| a + v)
        };
        let n = recent.len() as f64;
        (sum(p) / n, sum(c) / n)
    }
}

/// Reads the broker's counters now (user topics only for per-topic series).
pub fn read(broker: &Broker) -> Reading {
    let store = broker.store();
    let s = store.stats();
    let mut r = Reading {
        at_ms: crate::time::now_ms(),
        fsyncs: s.fsyncs,
        fsync_nanos: s.fsync_nanos,
        unflushed_bytes: s.log_end.saturating_sub(s.flushed),
        ..Reading::default()
    };
    for ((topic, _status), n) in broker.produced() {
        if !topic.starts_with('%') {
            *r.produced.entry(topic).or_default() += n;
        }
    }
    let replay_queue = broker.options().retry.replay_queue();
    let mut ends: HashMap<(String, u32), u64> = HashMap::new();
    for (t, q, len) in store.queues() {
        if t.starts_with("%RETRY%") && q != replay_queue {
            r.retries += len;
        } else if t.starts_with("%DLQ%") {
            r.dead += len;
        }
        ends.insert((t, q), len);
    }
    for g in broker.groups().views() {
        for (t, q, off) in &g.offsets {
            if !t.starts_with('%') {
                let end = ends.get(&(t.clone(), *q)).copied().unwrap_or(0);
                *r.consumed.entry(t.clone()).or_default() += (*off).min(end);
            }
        }
        let Some(topic) = &g.topic else { continue };
        // Retry and dead-letter queues are not lag (as in /api/v1/consumers).
        let (retry, dlq) = (retry_topic(&g.group), dlq_topic(&g.group));
        let lag: u64 = ends
            .iter()
            .filter(|((t, _), _)| t == topic && *t != retry && *t != dlq)
            .map(|((t, q), end)| end.saturating_sub(broker.groups().offset(&g.group, t, *q).unwrap_or(0)))
            .sum();
        r.lag.insert(g.group.clone(), lag);
    }
    r
}

/// Starts the once-a-second sampler; it ends when the broker is dropped.
pub fn spawn_sampler(history: Arc<History>, broker: Weak<Broker>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(EVERY);
        // A late tick (busy runtime) is one sample later, not a burst.
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(broker) = broker.upgrade() else { return };
            // A few lock-protected copies of the broker's tables.
            let reading = read(&broker);
            drop(broker);
            history.record(reading);
        }
    })
}

#[cfg(test)]
#[path = "history_tests.rs"]
mod tests;
