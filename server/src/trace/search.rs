//! Search: by key, id, topic, tag, time range; newest first (stored time,
//! then id), paged with an opaque cursor, no fixed cap.
//!
//! Where each answer comes from:
//! - `id`: the id names its node, epoch and log position, so the run and
//!   the record are one lookup each.
//! - `key`: the store's key index (an index, never a scan) for messages in
//!   the log, plus the audit's `lost` rows, which keep the key of messages
//!   the log no longer has.
//! - otherwise: the trace's runs, newest first by their last stored time,
//!   expanded message by message; the log supplies tags.
//!
//! Invariant of the run walk: every message not yet examined lies in a run
//! whose `stored_to` is at most the last run read, so once `limit + 1` hits
//! are newer than that, the page is final.

use sqlx::{AnyPool, AssertSqlSafe};

use super::db::{int, text};
use super::runs::{self, Entry, Run};
use super::TraceError;
use crate::model::topics::HALF_TOPIC;
use crate::model::MessageId;
use crate::storage::{key_index, Store, StoredMessage};
use waybill_client::protocol::PROP_REAL_TOPIC;

#[derive(Debug, Clone, Default)]
pub struct Query {
    pub key: Option<String>,
    pub id: Option<String>,
    pub topic: Option<String>,
    pub tag: Option<String>,
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    pub limit: usize,
    /// `"{stored_at}:{id}"` of the last row of the previous page.
    pub cursor: Option<(i64, String)>,
}

/// One hit (the caller adds the status from the timeline).
#[derive(Debug, Clone)]
pub struct Hit {
    pub id: String,
    pub topic: String,
    pub key: Option<String>,
    pub tags: Option<String>,
    pub born_ms: i64,
    pub stored_ms: i64,
}

/// Parses a cursor given back by a previous page.
pub fn parse_cursor(s: &str) -> Option<(i64, String)> {
    let (at, id) = s.split_once(':')?;
    Some((at.parse().ok()?, id.to_string()))
}

pub fn cursor_of(h: &Hit) -> String {
    format!("{}:{}", h.stored_ms, h.id)
}

/// Runs read by the run walk's first round; each next round reads four
/// times as many, up to the most.
const FIRST_RUNS_PER_ROUND: i64 = 4;
const MAX_RUNS_PER_ROUND: i64 = 256;

/// Runs the search; returns up to `limit` hits and whether more follow.
pub async fn run(pool: &AnyPool, store: &Store, q: &Query) -> Result<(Vec<Hit>, bool), TraceError> {
    let mut hits = if let Some(id) = &q.id {
        by_id(pool, store, id).await?
    } else if let Some(key) = &q.key {
        by_key(pool, store, key).await?
    } else {
        by_runs(pool, store, q).await?
    };
    hits.retain(|h| keep(q, h));
    sort(&mut hits);
    let more = hits.len() > q.limit;
    hits.truncate(q.limit);
    Ok((hits, more))
}

fn sort(hits: &mut [Hit]) {
    hits.sort_by(|a, b| (b.stored_ms, &b.id).cmp(&(a.stored_ms, &a.id)));
}

/// Whether a hit passes every filter and lies past the cursor.
fn keep(q: &Query, h: &Hit) -> bool {
    let has_key = |k: &str| h.key.as_deref().is_some_and(|hk| key_index::words(hk).any(|w| w == k));
    q.key.as_deref().is_none_or(has_key)
        && q.id.as_deref().is_none_or(|id| id == h.id)
        && q.topic.as_deref().is_none_or(|t| t == h.topic)
        && q.tag.as_deref().is_none_or(|t| h.tags.as_deref() == Some(t))
        && q.from_ms.is_none_or(|f| h.stored_ms >= f)
        && q.to_ms.is_none_or(|t| h.stored_ms <= t)
        && q.cursor
            .as_ref()
            .is_none_or(|(at, id)| (h.stored_ms, h.id.as_str()) < (*at, id.as_str()))
        && !h.topic.starts_with('%')
}

/// A hit from the log's record. A transaction's half message shows under
/// the topic it is bound for (its status says it is a half).
fn from_record(id: &MessageId, mut m: StoredMessage) -> Hit {
    if m.topic == HALF_TOPIC {
        if let Some(t) = m.properties.remove(PROP_REAL_TOPIC) {
            m.topic = t;
        }
    }
    Hit {
        id: id.to_string(),
        topic: m.topic,
        key: m.key,
        tags: m.tags,
        born_ms: m.born_ms,
        stored_ms: m.stored_ms,
    }
}

/// The record of message `id`, when the log still holds it.
fn record(store: &Store, id: &MessageId) -> Option<StoredMessage> {
    match store.read(id.pos) {
        Ok(m) if m.node == id.node && m.epoch == id.epoch => Some(m),
        _ => None,
    }
}

/// A hit from a run entry, with the log's fields when it still has them.
fn from_entry(store: &Store, run: &Run, e: Entry) -> Hit {
    let id = e.id(run);
    match record(store, &id) {
        Some(m) => from_record(&id, m),
        None => entry_hit(run, e),
    }
}

/// A hit from what the run alone says (no tags: those are in the log).
fn entry_hit(run: &Run, e: Entry) -> Hit {
    Hit {
        id: e.id(run).to_string(),
        topic: run.topic.clone(),
        key: e.key,
        tags: None,
        born_ms: e.born_ms,
        stored_ms: e.stored_ms,
    }
}

async fn by_id(pool: &AnyPool, store: &Store, id: &str) -> Result<Vec<Hit>, TraceError> {
    let Ok(parsed) = id.parse::<MessageId>() else {
        return Ok(Vec::new());
    };
    if let Some(m) = record(store, &parsed) {
        return Ok(vec![from_record(&parsed, m)]);
    }
    Ok(runs::find(pool, &parsed)
        .await?
        .map(|(run, e)| from_entry(store, &run, e))
        .into_iter()
        .collect())
}

/// Every message with key word `key`: the log's key index, then the
/// messages the audit found lost (their key survives in the trace).
async fn by_key(pool: &AnyPool, store: &Store, key: &str) -> Result<Vec<Hit>, TraceError> {
    let mut hits: Vec<Hit> = store
        .find_by_key(key, usize::MAX)
        .into_iter()
        .map(|(pos, m)| {
            let id = MessageId {
                node: m.node,
                epoch: m.epoch,
                pos,
            };
            from_record(&id, m)
        })
        .collect();
    // Lost rows are few; LIKE narrows them, `keep` matches whole words.
    let lost = sqlx::query("SELECT DISTINCT message_id FROM trace_events WHERE outcome = 'lost' AND msg_key LIKE $1")
        .bind(format!("%{key}%"))
        .fetch_all(pool)
        .await?;
    for r in lost {
        let id = text(&r, "message_id");
        if hits.iter().any(|h| h.id == id) {
            continue;
        }
        if let Ok(parsed) = id.parse::<MessageId>() {
            if let Some((run, e)) = runs::find(pool, &parsed).await? {
                hits.push(from_entry(store, &run, e));
            }
        }
    }
    Ok(hits)
}

/// Walks runs newest first until the page is settled (see the module doc).
async fn by_runs(pool: &AnyPool, store: &Store, q: &Query) -> Result<Vec<Hit>, TraceError> {
    let mut hits: Vec<Hit> = Vec::new();
    let mut round = FIRST_RUNS_PER_ROUND;
    // Keyset of the last run read: (stored_to, node, epoch, pos_from).
    let mut after: Option<(i64, i64, i64, i64)> = None;
    loop {
        let mut sql = format!("SELECT {} FROM trace_runs WHERE 1 = 1", runs::COLUMNS);
        let mut binds: Vec<BindValue> = Vec::new();
        let mut next = |v: BindValue| {
            binds.push(v);
            format!("${}", binds.len())
        };
        if let Some(t) = &q.topic {
            sql += &format!(" AND topic = {}", next(BindValue::S(t.clone())));
        }
        if let Some(f) = q.from_ms {
            sql += &format!(" AND stored_to >= {}", next(BindValue::I(f)));
        }
        if let Some(t) = q.to_ms {
            sql += &format!(" AND stored_from <= {}", next(BindValue::I(t)));
        }
        if let Some((at, _)) = &q.cursor {
            sql += &format!(" AND stored_from <= {}", next(BindValue::I(*at)));
        }
        if let Some((s, n, e, p)) = after {
            // (stored_to, node, epoch, pos_from) < (s, n, e, p), spelled out.
            let mut v = |x: i64| next(BindValue::I(x));
            let (s0, s1, s2, n1, n2, e1, e2, p1) = (v(s), v(s), v(s), v(n), v(n), v(e), v(e), v(p));
            sql += &format!(
                " AND stored_to <= {s0} AND (stored_to < {s1} OR (stored_to = {s2} AND (node < {n1} OR \
                 (node = {n2} AND (epoch < {e1} OR (epoch = {e2} AND pos_from < {p1}))))))"
            );
        }
        sql += &format!(
            " ORDER BY stored_to DESC, node DESC, epoch DESC, pos_from DESC LIMIT {}",
            next(BindValue::I(round))
        );
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for v in binds {
            query = match v {
                BindValue::S(s) => query.bind(s),
                BindValue::I(i) => query.bind(i),
            };
        }
        let rows = query.fetch_all(pool).await?;
        let Some(last) = rows.last() else { break };
        let boundary = int(last, "stored_to");
        after = Some((boundary, int(last, "node"), int(last, "epoch"), int(last, "pos_from")));
        let full = rows.len() as i64 == round;
        round = (round * 4).min(MAX_RUNS_PER_ROUND);
        for r in &rows {
            let (run, entries) = runs::from_row(r);
            for e in entries.into_iter().rev() {
                // Tags live only in the log: read it when filtering by tag.
                let h = if q.tag.is_some() {
                    from_entry(store, &run, e)
                } else {
                    entry_hit(&run, e)
                };
                if keep(q, &h) {
                    hits.push(h);
                }
            }
        }
        sort(&mut hits);
        hits.truncate(q.limit + 1);
        // Unread runs hold only messages stored at or before `boundary`.
        let settled = hits.len() > q.limit && hits.iter().all(|h| h.stored_ms > boundary);
        if !full || settled {
            break;
        }
    }
    // The page's hits get the log's fields (tags, producer's key as stored).
    Ok(hits
        .into_iter()
        .map(|h| {
            match h
                .id
                .parse::<MessageId>()
                .ok()
                .and_then(|id| record(store, &id).map(|m| (id, m)))
            {
                Some((id, m)) => from_record(&id, m),
                None => h,
            }
        })
        .collect())
}

enum BindValue {
    S(String),
    I(i64),
}
