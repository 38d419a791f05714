//! Search over the trace: by key (through the key index), id, topic, tag,
//! time range; newest first, paged with an opaque cursor, no fixed cap.

use sqlx::{Any, AnyPool, QueryBuilder};

use super::db::{int, opt_str, text};
use super::TraceError;

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

/// Runs the search; returns up to `limit` hits and whether more follow.
pub async fn run(pool: &AnyPool, q: &Query) -> Result<(Vec<Hit>, bool), TraceError> {
    let mut b: QueryBuilder<Any> =
        QueryBuilder::new("SELECT m.id, m.topic, m.msg_key, m.tags, m.born_at, m.stored_at FROM trace_messages m");
    if let Some(k) = &q.key {
        b.push(" JOIN trace_keys k ON k.id = m.id AND k.msg_key = ")
            .push_bind(k.clone());
    }
    b.push(" WHERE 1 = 1");
    if let Some(id) = &q.id {
        b.push(" AND m.id = ").push_bind(id.clone());
    }
    if let Some(t) = &q.topic {
        b.push(" AND m.topic = ").push_bind(t.clone());
    }
    if let Some(t) = &q.tag {
        b.push(" AND m.tags = ").push_bind(t.clone());
    }
    if let Some(f) = q.from_ms {
        b.push(" AND m.stored_at >= ").push_bind(f);
    }
    if let Some(t) = q.to_ms {
        b.push(" AND m.stored_at <= ").push_bind(t);
    }
    if let Some((at, id)) = &q.cursor {
        b.push(" AND (m.stored_at < ")
            .push_bind(*at)
            .push(" OR (m.stored_at = ")
            .push_bind(*at)
            .push(" AND m.id < ")
            .push_bind(id.clone())
            .push("))");
    }
    b.push(" ORDER BY m.stored_at DESC, m.id DESC LIMIT ")
        .push_bind((q.limit + 1) as i64);
    let rows = b.build().fetch_all(pool).await?;
    let more = rows.len() > q.limit;
    let hits = rows
        .iter()
        .take(q.limit)
        .map(|r| Hit {
            id: text(r, "id"),
            topic: text(r, "topic"),
            key: opt_str(r, "msg_key"),
            tags: opt_str(r, "tags"),
            born_ms: int(r, "born_at"),
            stored_ms: int(r, "stored_at"),
        })
        .collect();
    Ok((hits, more))
}
