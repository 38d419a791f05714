//! The queries behind a timeline: everything the trace store and the log
//! say about one message, gathered into a plain [`Facts`] value (owned
//! strings and integers, no sqlx types) that [`super::derive`] turns into
//! stages, statuses and loss points.
//!
//! Invariants: this module decides only which rows belong to the message,
//! never what they mean. Where a query depends on a rule (which delivered
//! records may have been consumed, which copy a committed half became) it
//! asks the pure side ([`super::derive::delivered`],
//! [`super::derive::committed_copy`]) so the two cannot disagree. Blobs
//! and properties from the store or the log are read defensively: damaged
//! or odd values read as absent, never as an error.

use std::collections::BTreeMap;

use sqlx::any::AnyRow;
use sqlx::AnyPool;

use super::derive;
use crate::model::topics::HALF_TOPIC;
use crate::model::{MessageId, StageName};
use crate::storage::Store;
use crate::trace::db::{int, opt_int, opt_str, text};
use crate::trace::runs::{self, Entry, Run};
use crate::trace::varint::{duplicate_of, handled_ms};
use crate::trace::TraceError;
use waybill_client::properties::{PROP_OUTBOX_ATTEMPT, PROP_OUTBOX_ROW};
use waybill_client::protocol::PROP_TRANSACTION_ID;
use waybill_client::tracecontext;

/// Everything known about one message, as read.
#[derive(Debug, Clone)]
pub struct Facts {
    /// The message's id as asked for.
    pub id: String,
    /// The run holding it: how and when the broker answered.
    pub run: Run,
    /// Its entry in the run: queue slot, times, send attempt, key.
    pub entry: Entry,
    /// The log's record, while the log still holds it.
    pub record: Option<Record>,
    /// First sampled `flushed` watermark at or past the message's end.
    pub flushed_at: Option<i64>,
    /// Per replica, the first sampled confirmation at or past the end,
    /// earliest first (read only when the run replicates).
    pub replicas: Vec<Confirmation>,
    /// Pull ranges over the message's own queue slot, by time.
    pub deliveries: Vec<RangeDelivery>,
    /// Its message events by time, then (for a committed transaction's
    /// copy) its half's `tx_*` events.
    pub events: Vec<Event>,
    /// For each record [`derive::delivered`] names (handed back or not),
    /// the first commit of its group past it (records with no such commit
    /// have no entry): consumption reads those of records not handed back,
    /// the inbox rules all of them.
    pub commits: Vec<Commit>,
    /// Periods around the message in which the tracer shed events.
    pub gaps: Vec<Gap>,
    /// A half message whose transaction committed (and was not rolled
    /// back): the copy's id and, when the trace knows it, its facts.
    pub committed: Option<Committed>,
}

/// What the log's record adds to the run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    pub producer: Option<String>,
    pub key: Option<String>,
    pub tags: Option<String>,
    /// The W3C trace id of its `traceparent` property, when valid.
    pub trace_id: Option<String>,
    /// Set when an outbox relay sent it (`WAYBILL_OUTBOX_ROW`).
    pub outbox: Option<Outbox>,
}

/// The outbox row a relayed message came from, as its properties say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outbox {
    /// The row's id, verbatim (at most [`MAX_OUTBOX_ROW`] bytes kept).
    pub row: String,
    /// Which relay attempt sent it (1 = the first), when it parses.
    pub attempt: Option<u32>,
}

/// Longest outbox row id shown (a producer sets it: bounded).
pub const MAX_OUTBOX_ROW: usize = 64;

impl Outbox {
    /// From a record's properties; `None` without a non-empty row id.
    pub fn from_properties(props: &BTreeMap<String, String>) -> Option<Outbox> {
        let row = props.get(PROP_OUTBOX_ROW)?.trim();
        if row.is_empty() {
            return None;
        }
        let mut end = row.len().min(MAX_OUTBOX_ROW);
        while !row.is_char_boundary(end) {
            end -= 1;
        }
        Some(Outbox {
            row: row[..end].to_string(),
            attempt: props.get(PROP_OUTBOX_ATTEMPT).and_then(|a| a.trim().parse().ok()),
        })
    }
}

/// A replica's first sampled confirmation of the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confirmation {
    pub replica: String,
    pub at_ms: i64,
}

/// A pull range that handed the message's queue slot to a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeDelivery {
    pub group: String,
    pub at_ms: i64,
    pub node: i64,
}

/// One `trace_events` row. Text columns read as "" and integers as 0 when
/// null, as the rows were always read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// As stored; a name this version does not know is kept verbatim.
    pub stage: StageName,
    pub group: Option<String>,
    pub at_ms: i64,
    pub node: i64,
    pub outcome: String,
    pub detail: String,
    pub record_id: String,
    pub rec_topic: String,
    pub rec_queue: i64,
    pub rec_offset: i64,
}

/// A record handed to a group: the original or one of its retry records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    pub group: String,
    pub record_id: String,
    pub topic: String,
    pub queue_id: i64,
    pub queue_offset: i64,
}

/// The first commit of a group past a delivered record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    pub record: Delivered,
    pub at_ms: i64,
    pub auto_commit: bool,
    /// How long the handler took with this record, when the commit says.
    pub handled_ms: Option<u32>,
    /// The group's inbox window when it committed (ms, 0 = forever):
    /// `None` when the committing group declared no inbox.
    pub dedupe_window_ms: Option<u64>,
    /// The inbox acknowledged this record as a duplicate without running
    /// the handler: how the first handling is known ("first handled as …").
    pub duplicate: Option<String>,
}

/// A period in which the tracer shed events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    pub from_ms: i64,
    pub to_ms: i64,
    pub dropped: i64,
    pub messages: i64,
}

/// The copy a committed half message became.
#[derive(Debug, Clone)]
pub struct Committed {
    pub id: String,
    /// `None` when the trace has no record of the copy (yet).
    pub copy: Option<Box<Facts>>,
}

/// Reads the facts of message `id`; `Ok(None)` when the id does not parse
/// or the trace has no run holding it (yet).
pub async fn gather(pool: &AnyPool, store: &Store, id: &str) -> Result<Option<Facts>, TraceError> {
    let Ok(parsed) = id.parse::<MessageId>() else {
        return Ok(None);
    };
    let Some((run, entry)) = runs::find(pool, &parsed).await? else {
        return Ok(None);
    };
    let stored = match store.read(parsed.pos) {
        Ok(m) if m.node == parsed.node && m.epoch == parsed.epoch => Some(m),
        _ => None,
    };
    let node = i64::from(run.node);
    let end = entry.end as i64;
    let flushed_at: Option<i64> = sqlx::query(
        "SELECT MIN(at) AS at FROM trace_watermarks WHERE node = $1 AND kind = 'flushed' AND position >= $2",
    )
    .bind(node)
    .bind(end)
    .fetch_one(pool)
    .await
    .ok()
    .and_then(|r| sqlx::Row::try_get::<Option<i64>, _>(&r, "at").ok().flatten());
    let replicas = if super::replicate::replicates(&run.replication) {
        replicas(pool, node, end).await?
    } else {
        Vec::new()
    };
    // Deliveries are recorded by queue offset. A message the log no longer
    // holds gave its offset up when the next boot started writing there:
    // what was delivered at that offset afterwards was another message.
    let reused_at: Option<i64> = if stored.is_none() {
        sqlx::query("SELECT MIN(first_at) AS at FROM trace_marks WHERE node = $1 AND epoch > $2")
            .bind(node)
            .bind(i64::from(parsed.epoch))
            .fetch_one(pool)
            .await
            .ok()
            .and_then(|r| sqlx::Row::try_get::<Option<i64>, _>(&r, "at").ok().flatten())
    } else {
        None
    };
    let deliveries = sqlx::query(
        "SELECT grp, at, node FROM trace_deliveries WHERE topic = $1 AND queue_id = $2 AND from_offset <= $3 \
         AND to_offset > $3 AND at < $4 ORDER BY at",
    )
    .bind(&run.topic)
    .bind(i64::from(entry.queue_id))
    .bind(entry.queue_offset as i64)
    .bind(reused_at.unwrap_or(i64::MAX))
    .fetch_all(pool)
    .await?
    .iter()
    .map(|d| RangeDelivery {
        group: text(d, "grp"),
        at_ms: int(d, "at"),
        node: int(d, "node"),
    })
    .collect();
    let mut events = read_events(pool, id, false).await?;
    // A committed transactional message: its half's prepare, checks and
    // commit belong to its path.
    if let Some(half) = stored.as_ref().and_then(|m| m.properties.get(PROP_TRANSACTION_ID)) {
        events.extend(read_events(pool, half, true).await?);
    }
    let gaps = gaps(pool, entry.born_ms, entry.stored_ms.max(entry.born_ms) + 60_000).await?;
    let record = stored.map(|m| Record {
        outbox: Outbox::from_properties(&m.properties),
        trace_id: m
            .properties
            .get(tracecontext::PROP_TRACEPARENT)
            .and_then(|tp| tracecontext::parse(tp))
            .map(|(t, _)| t.to_string()),
        producer: m.producer,
        key: m.key,
        tags: m.tags,
    });
    let mut facts = Facts {
        id: id.to_string(),
        run,
        entry,
        record,
        flushed_at,
        replicas,
        deliveries,
        events,
        commits: Vec::new(),
        gaps,
        committed: None,
    };
    for d in derive::delivered(&facts) {
        if let Some(c) = first_commit(pool, d).await? {
            facts.commits.push(c);
        }
    }
    if facts.run.topic == HALF_TOPIC {
        if let Some(copy_id) = derive::committed_copy(&facts.events) {
            let copy_id = copy_id.to_string();
            // The committed copy's path continues this one.
            let copy = Box::pin(gather(pool, store, &copy_id)).await?.map(Box::new);
            facts.committed = Some(Committed { id: copy_id, copy });
        }
    }
    Ok(Some(facts))
}

/// Per replica, the first sampled confirmation at or past `end`.
async fn replicas(pool: &AnyPool, node: i64, end: i64) -> Result<Vec<Confirmation>, TraceError> {
    let rows = sqlx::query(
        "SELECT kind, MIN(at) AS at FROM trace_watermarks WHERE node = $1 AND kind LIKE 'replicated:%' \
         AND position >= $2 GROUP BY kind ORDER BY MIN(at)",
    )
    .bind(node)
    .bind(end)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .map(|r| Confirmation {
            replica: text(r, "kind").trim_start_matches("replicated:").to_string(),
            at_ms: int(r, "at"),
        })
        .collect())
}

/// The events of message `id` by time (only `tx_*` ones with `tx_only`).
async fn read_events(pool: &AnyPool, id: &str, tx_only: bool) -> Result<Vec<Event>, TraceError> {
    let sql = if tx_only {
        "SELECT * FROM trace_events WHERE message_id = $1 AND stage LIKE 'tx_%' ORDER BY at, seq"
    } else {
        "SELECT * FROM trace_events WHERE message_id = $1 ORDER BY at, seq"
    };
    Ok(sqlx::query(sql)
        .bind(id)
        .fetch_all(pool)
        .await?
        .iter()
        .map(event)
        .collect())
}

fn event(e: &AnyRow) -> Event {
    Event {
        stage: StageName::parse(&text(e, "stage")),
        group: opt_str(e, "grp"),
        at_ms: int(e, "at"),
        node: int(e, "node"),
        outcome: text(e, "outcome"),
        detail: text(e, "detail"),
        record_id: text(e, "record_id"),
        rec_topic: text(e, "rec_topic"),
        rec_queue: int(e, "rec_queue"),
        rec_offset: int(e, "rec_offset"),
    }
}

/// The first commit of `d`'s group past `d`.
async fn first_commit(pool: &AnyPool, d: Delivered) -> Result<Option<Commit>, TraceError> {
    let row = sqlx::query(
        "SELECT at, auto_commit, handled, dedupe_window, duplicates FROM trace_commits WHERE grp = $1 AND topic = $2 AND queue_id = $3 \
         AND queue_offset > $4 ORDER BY at LIMIT 1",
    )
    .bind(&d.group)
    .bind(&d.topic)
    .bind(d.queue_id)
    .bind(d.queue_offset)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|c| {
        let blob = |col: &str| {
            sqlx::Row::try_get::<Option<Vec<u8>>, _>(&c, col)
                .ok()
                .flatten()
                .unwrap_or_default()
        };
        let offset = d.queue_offset as u64;
        Commit {
            at_ms: int(&c, "at"),
            auto_commit: int(&c, "auto_commit") != 0,
            handled_ms: handled_ms(&blob("handled"), offset),
            dedupe_window_ms: opt_int(&c, "dedupe_window").and_then(|w| u64::try_from(w).ok()),
            duplicate: duplicate_of(&blob("duplicates"), offset),
            record: d,
        }
    }))
}

/// Periods overlapping `[from_ms, to_ms]` in which the tracer dropped
/// events.
pub async fn gaps(pool: &AnyPool, from_ms: i64, to_ms: i64) -> Result<Vec<Gap>, TraceError> {
    Ok(
        sqlx::query("SELECT from_at, to_at, dropped, messages FROM trace_gaps WHERE from_at <= $1 AND to_at >= $2")
            .bind(to_ms)
            .bind(from_ms)
            .fetch_all(pool)
            .await?
            .iter()
            .map(|r| Gap {
                from_ms: int(r, "from_at"),
                to_ms: int(r, "to_at"),
                dropped: int(r, "dropped"),
                messages: int(r, "messages"),
            })
            .collect(),
    )
}
