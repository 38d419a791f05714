//! Loss windows: where acknowledged messages may be gone from the log with
//! no trace row to name them, found by the audit after a restart.
//!
//! The audit names every lost message whose run the tracer wrote. What it
//! cannot name are acknowledgements still in the tracer's queue or batch
//! when the node died. The writer's marks (see [`super::mark`]) bound them:
//! - **tail**: a boot under async flush that did not close cleanly. Its
//!   unnamed losses were acknowledged after its last mark's `covered_at`
//!   and before the next boot started, lie at or past where its data in the
//!   log ends (where the next boot started writing), and number at most its
//!   `max_unwritten` (the tracer's bound on accepted-but-unwritten messages;
//!   sends past it were fsynced before their answer). The log end it
//!   reached died with it: `to_pos` is unknown (null).
//! - **gap**: a batch the trace store refused (written as a gap row with the
//!   log range of its acknowledged-but-unsynced messages) that the log no
//!   longer holds: exact range, count bounded by the row.
//! - **unmarked**: a boot that wrote to the log but whose tracer never wrote
//!   a mark (store away the whole time, or tracing off): no bound (null).
//!
//! Sync-flush boots get no window: their acknowledgements were fsynced, so
//! only a storage fault can take them (recovery reports that as damage) —
//! unless this node's log was cut or lost when it rejoined its group
//! ([`Start::cut_at`]): then what they acknowledged past the cut never
//! reached the group, and their unwritten tail is a window like an async
//! boot's.
//! Each boot is examined once: its windows are stored in `trace_windows`.

use std::collections::BTreeSet;

use sqlx::{AnyPool, Row};

use super::audit::Start;
use super::db::{int, opt_int, text};
use super::{TraceError, WindowTotals};
use crate::storage::{Store, WriterRun};

/// One window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub node: u16,
    /// The boot whose acknowledgements it covers.
    pub epoch: u32,
    /// `tail`, `gap` or `unmarked`.
    pub kind: String,
    /// Acknowledged at or after (None: unknown) …
    pub from_ms: Option<i64>,
    /// … and at or before.
    pub to_ms: i64,
    /// At log positions from here …
    pub from_pos: u64,
    /// … to here, exclusive (None: unknown).
    pub to_pos: Option<u64>,
    /// At most this many (None: no bound).
    pub max_count: Option<u64>,
    pub found_ms: i64,
    pub reason: String,
}

impl Window {
    /// Whether a message of boot `epoch` at `pos` lies inside.
    pub fn holds(&self, node: u16, epoch: u32, pos: u64) -> bool {
        self.node == node && self.epoch == epoch && pos >= self.from_pos && self.to_pos.is_none_or(|t| pos < t)
    }
}

/// Where boot `epoch`'s data in the log ends now: where a later boot of
/// this node started writing (it appended from its recovered end), or the
/// end this boot recovered. Gone messages of that boot lie at or past it.
pub fn boot_end(runs: &[WriterRun], node: u16, epoch: u32, current: u32, start: &Start) -> u64 {
    runs.iter()
        .filter(|r| r.node == node && r.epoch > epoch && r.epoch < current)
        .map(|r| r.start)
        .min()
        .unwrap_or(start.recovered_end)
        .min(start.recovered_end)
}

/// One boot's last mark.
struct Mark {
    epoch: u32,
    first_at: i64,
    at: i64,
    covered_at: i64,
    flush_mode: String,
    max_unwritten: u64,
    closed: bool,
}

/// A gap row with acknowledged-but-unsynced messages.
struct RiskGap {
    epoch: u32,
    from_at: i64,
    to_at: i64,
    at_risk: u64,
    pos_from: u64,
    pos_to: u64,
}

/// Finds, stores and returns the windows of earlier boots not examined yet.
pub(crate) async fn find(
    pool: &AnyPool,
    store: &Store,
    start: &Start,
    log_runs: &[WriterRun],
) -> Result<Vec<Window>, TraceError> {
    let node = store.node_id();
    let current = store.epoch();
    let marks: Vec<Mark> = sqlx::query(
        "SELECT epoch, first_at, at, covered_at, flush_mode, max_unwritten, closed FROM trace_marks \
         WHERE node = $1 AND epoch < $2 ORDER BY epoch",
    )
    .bind(i64::from(node))
    .bind(i64::from(current))
    .fetch_all(pool)
    .await?
    .iter()
    .map(|r| Mark {
        epoch: int(r, "epoch") as u32,
        first_at: int(r, "first_at"),
        at: int(r, "at"),
        covered_at: int(r, "covered_at"),
        flush_mode: text(r, "flush_mode"),
        max_unwritten: int(r, "max_unwritten") as u64,
        closed: int(r, "closed") != 0,
    })
    .collect();
    // Boots before the first mark predate loss windows: nothing to compare.
    let Some(floor) = marks.first().map(|m| m.epoch) else {
        return Ok(Vec::new());
    };
    let seen: BTreeSet<u32> = sqlx::query("SELECT DISTINCT epoch FROM trace_windows WHERE node = $1")
        .bind(i64::from(node))
        .fetch_all(pool)
        .await?
        .iter()
        .map(|r| int(r, "epoch") as u32)
        .collect();
    let gaps: Vec<RiskGap> = sqlx::query(
        "SELECT epoch, from_at, to_at, at_risk, pos_from, pos_to FROM trace_gaps \
         WHERE node = $1 AND at_risk > 0 AND epoch >= $2 AND epoch < $3",
    )
    .bind(i64::from(node))
    .bind(i64::from(floor))
    .bind(i64::from(current))
    .fetch_all(pool)
    .await?
    .iter()
    .map(|r| RiskGap {
        epoch: int(r, "epoch") as u32,
        from_at: int(r, "from_at"),
        to_at: int(r, "to_at"),
        at_risk: int(r, "at_risk") as u64,
        pos_from: int(r, "pos_from") as u64,
        pos_to: int(r, "pos_to") as u64,
    })
    .collect();
    let now = crate::time::now_ms();
    let mut out = Vec::new();
    for epoch in (floor..current).filter(|e| !seen.contains(e)) {
        let end = boot_end(log_runs, node, epoch, current, start);
        // Every later boot started after this one ended.
        let to_ms = marks
            .iter()
            .find(|m| m.epoch > epoch)
            .map_or(start.started_ms, |m| m.first_at.min(start.started_ms));
        let window = |kind: &str, from_ms, max_count, reason| Window {
            node,
            epoch,
            kind: kind.to_string(),
            from_ms,
            to_ms,
            from_pos: end,
            to_pos: None,
            max_count,
            found_ms: now,
            reason,
        };
        let mut found = Vec::new();
        match marks.iter().find(|m| m.epoch == epoch) {
            // A sync-flush boot's acknowledgements were fsynced: only a
            // log cut or lost on rejoining a group (async replication)
            // can take them, and then its unwritten tail is at risk too.
            Some(m) if m.closed || (m.flush_mode != "async" && start.cut_at.is_none()) => {}
            Some(m) => found.push(window(
                "tail",
                Some(m.covered_at),
                Some(m.max_unwritten),
                format!(
                    "boot {epoch} ({}) did not shut down cleanly; its tracer had written every \
                     acknowledgement up to its last mark, and held at most {} more unwritten. Those the log lost \
                     past position {end} are gone without a trace row.",
                    if m.flush_mode == "async" {
                        "async flush; sends past that bound were fsynced before their answer"
                    } else {
                        "its log was cut or lost when this node rejoined its group"
                    },
                    m.max_unwritten
                ),
            )),
            None if log_runs.iter().any(|r| r.node == node && r.epoch == epoch) => found.push(window(
                "unmarked",
                marks.iter().filter(|m| m.epoch < epoch).map(|m| m.at).max(),
                None,
                format!(
                    "boot {epoch} wrote to the log but its tracer never wrote a mark (trace store unreachable the \
                     whole time, or tracing off): what it acknowledged and the log lost past position {end} is \
                     gone unrecorded, count unknown."
                ),
            )),
            None => {}
        }
        for g in gaps.iter().filter(|g| g.epoch == epoch && g.pos_to > end) {
            found.push(Window {
                kind: "gap".into(),
                from_ms: Some(g.from_at),
                to_ms: g.to_at,
                from_pos: g.pos_from.max(end),
                to_pos: Some(g.pos_to),
                max_count: Some(g.at_risk),
                reason: format!(
                    "the trace store refused a batch of boot {epoch} holding {} acknowledged messages not yet \
                     fsynced; the log lost some of their range",
                    g.at_risk
                ),
                ..window("gap", None, None, String::new())
            });
        }
        if !found.is_empty() {
            insert(pool, &found).await?;
            for w in &found {
                tracing::warn!(
                    epoch = w.epoch,
                    kind = %w.kind,
                    from_pos = w.from_pos,
                    max_count = ?w.max_count,
                    "audit: loss window (acknowledged messages may be gone unrecorded)"
                );
            }
            out.extend(found);
        }
    }
    Ok(out)
}

/// Stores one boot's windows together.
async fn insert(pool: &AnyPool, found: &[Window]) -> Result<(), TraceError> {
    let mut tx = pool.begin().await?;
    for w in found {
        sqlx::query(
            "INSERT INTO trace_windows (node, epoch, kind, from_at, to_at, from_pos, to_pos, max_count, found_at, \
             reason) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(i64::from(w.node))
        .bind(i64::from(w.epoch))
        .bind(w.kind.as_str())
        .bind(w.from_ms)
        .bind(w.to_ms)
        .bind(w.from_pos as i64)
        .bind(w.to_pos.map(|p| p as i64))
        .bind(w.max_count.map(|c| c as i64))
        .bind(w.found_ms)
        .bind(w.reason.as_str())
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

const COLUMNS: &str = "node, epoch, kind, from_at, to_at, from_pos, to_pos, max_count, found_at, reason";

fn from_row(r: &sqlx::any::AnyRow) -> Window {
    Window {
        node: int(r, "node") as u16,
        epoch: int(r, "epoch") as u32,
        kind: text(r, "kind"),
        from_ms: opt_int(r, "from_at"),
        to_ms: int(r, "to_at"),
        from_pos: int(r, "from_pos") as u64,
        to_pos: opt_int(r, "to_pos").map(|p| p as u64),
        max_count: opt_int(r, "max_count").map(|c| c as u64),
        found_ms: int(r, "found_at"),
        reason: text(r, "reason"),
    }
}

/// Stored windows of every node, newest first.
pub async fn list(pool: &AnyPool, limit: i64) -> Result<Vec<Window>, TraceError> {
    let sql = format!("SELECT {COLUMNS} FROM trace_windows ORDER BY found_at DESC, node, epoch DESC LIMIT $1");
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(limit)
        .fetch_all(pool)
        .await?;
    Ok(rows.iter().map(from_row).collect())
}

/// The window a message of boot `epoch` at `pos` on `node` lies in, if any.
pub async fn containing(pool: &AnyPool, node: u16, epoch: u32, pos: u64) -> Result<Option<Window>, TraceError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM trace_windows WHERE node = $1 AND epoch = $2 AND from_pos <= $3 \
         AND (to_pos IS NULL OR to_pos > $3) ORDER BY found_at LIMIT 1"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(i64::from(node))
        .bind(i64::from(epoch))
        .bind(pos as i64)
        .fetch_optional(pool)
        .await?;
    Ok(row.as_ref().map(from_row))
}

/// This node's windows, summed for `/metrics`.
pub async fn totals(pool: &AnyPool, node: u16) -> Result<WindowTotals, TraceError> {
    let r = sqlx::query(
        "SELECT COUNT(*) AS n, CAST(COALESCE(SUM(max_count), 0) AS BIGINT) AS m, \
         CAST(COALESCE(SUM(CASE WHEN max_count IS NULL THEN 1 ELSE 0 END), 0) AS BIGINT) AS u \
         FROM trace_windows WHERE node = $1",
    )
    .bind(i64::from(node))
    .fetch_one(pool)
    .await?;
    Ok(WindowTotals {
        windows: r.try_get::<i64, _>("n").unwrap_or(0) as u64,
        max_messages: int(&r, "m") as u64,
        unbounded: int(&r, "u") as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::{boot_end, Window};
    use crate::storage::WriterRun;
    use crate::trace::audit::Start;

    fn run(start: u64, epoch: u32) -> WriterRun {
        WriterRun { start, node: 1, epoch }
    }

    #[test]
    fn a_boots_data_ends_where_a_later_boot_of_this_node_started_writing() {
        let start = Start {
            recovered_end: 900,
            cut_at: None,
            started_ms: 0,
        };
        let runs = [
            run(0, 1),
            run(300, 2),
            run(500, 4),
            WriterRun {
                start: 200,
                node: 2,
                epoch: 3,
            },
        ];
        // Boot 1 lost everything past 300 (boot 2 wrote from there).
        assert_eq!(boot_end(&runs, 1, 1, 5, &start), 300);
        // Boot 3 wrote nothing left in the log: boot 4 started at 500.
        assert_eq!(boot_end(&runs, 1, 3, 5, &start), 500);
        // The last boot ends where this one recovered; this boot's own
        // writes (epoch 5) never count.
        assert_eq!(boot_end(&[run(0, 1), run(900, 5)], 1, 4, 5, &start), 900);
    }

    #[test]
    fn a_window_holds_positions_of_its_boot_only() {
        let w = Window {
            node: 1,
            epoch: 3,
            kind: "tail".into(),
            from_ms: None,
            to_ms: 0,
            from_pos: 100,
            to_pos: None,
            max_count: Some(5),
            found_ms: 0,
            reason: String::new(),
        };
        assert!(w.holds(1, 3, 100) && w.holds(1, 3, u64::MAX));
        assert!(!w.holds(1, 3, 99) && !w.holds(1, 2, 200) && !w.holds(2, 3, 200));
        let bounded = Window { to_pos: Some(150), ..w };
        assert!(bounded.holds(1, 3, 149) && !bounded.holds(1, 3, 150));
    }
}
