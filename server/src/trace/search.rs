//! Search over the trace: by key (through the key index), id, topic, tag,
//! time range; newest first, paged with an opaque cursor, no fixed cap.

use sqlx::{AnyPool, AssertSqlSafe};

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
    // Values bound in order; `$n` placeholders numbered as they are added.
    enum V {
        S(String),
        I(i64),
    }
    let mut binds: Vec<V> = Vec::new();
    let next = |v: V, binds: &mut Vec<V>| {
        binds.push(v);
        format!("${}", binds.len())
    };
    let mut sql = String::from("SELECT m.id, m.topic, m.msg_key, m.tags, m.born_at, m.stored_at FROM trace_messages m");
    if let Some(k) = &q.key {
        sql += &format!(
            " JOIN trace_keys k ON k.id = m.id AND k.msg_key = {}",
            next(V::S(k.clone()), &mut binds)
        );
    }
    sql += " WHERE 1 = 1";
    if let Some(id) = &q.id {
        sql += &format!(" AND m.id = {}", next(V::S(id.clone()), &mut binds));
    }
    if let Some(t) = &q.topic {
        sql += &format!(" AND m.topic = {}", next(V::S(t.clone()), &mut binds));
    }
    if let Some(t) = &q.tag {
        sql += &format!(" AND m.tags = {}", next(V::S(t.clone()), &mut binds));
    }
    if let Some(f) = q.from_ms {
        sql += &format!(" AND m.stored_at >= {}", next(V::I(f), &mut binds));
    }
    if let Some(t) = q.to_ms {
        sql += &format!(" AND m.stored_at <= {}", next(V::I(t), &mut binds));
    }
    if let Some((at, id)) = &q.cursor {
        let a1 = next(V::I(*at), &mut binds);
        let a2 = next(V::I(*at), &mut binds);
        let i = next(V::S(id.clone()), &mut binds);
        sql += &format!(" AND (m.stored_at < {a1} OR (m.stored_at = {a2} AND m.id < {i}))");
    }
    sql += &format!(
        " ORDER BY m.stored_at DESC, m.id DESC LIMIT {}",
        next(V::I((q.limit + 1) as i64), &mut binds)
    );
    let mut query = sqlx::query(AssertSqlSafe(sql));
    for v in binds {
        query = match v {
            V::S(s) => query.bind(s),
            V::I(i) => query.bind(i),
        };
    }
    let rows = query.fetch_all(pool).await?;
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
