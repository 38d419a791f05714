//! The replicate stage of a timeline: which replica confirmed the message
//! when (from sampled replication watermarks), and the risk an
//! acknowledgement before a replica had it carried.

use sqlx::AnyPool;

use super::{stage, LossPoint, Stage};
use crate::time::rfc3339;
use crate::trace::db::{int, text};
use crate::trace::TraceError;

/// How the broker answered the producer (from the message's run).
pub(super) struct Answer<'a> {
    /// Replication mode: none, sync, async or raft.
    pub mode: &'a str,
    pub send_status: &'a str,
    pub acked: i64,
}

/// The replicate stage: per replica, the first sampled confirmation at or
/// past the message's end; and the async-replication loss point.
pub(super) async fn replicate_stages(
    pool: &AnyPool,
    answer: Answer<'_>,
    node: i64,
    end: i64,
    stages: &mut Vec<Stage>,
    loss: &mut Vec<LossPoint>,
) -> Result<(), TraceError> {
    let mode = answer.mode;
    if mode == "none" || mode.is_empty() {
        return Ok(());
    }
    let rows = sqlx::query(
        "SELECT kind, MIN(at) AS at FROM trace_watermarks WHERE node = $1 AND kind LIKE 'replicated:%' \
         AND position >= $2 GROUP BY kind ORDER BY MIN(at)",
    )
    .bind(node)
    .bind(end)
    .fetch_all(pool)
    .await?;
    let confirmed: Vec<(String, i64)> = rows
        .iter()
        .map(|r| {
            let kind = text(r, "kind");
            (kind.trim_start_matches("replicated:").to_string(), int(r, "at"))
        })
        .collect();
    let acked = answer.acked;
    if mode == "raft" && answer.send_status == "SEND_OK" {
        stages.push(stage(
            "replicate",
            acked,
            None,
            "ok",
            "a majority of the Raft group had it before the acknowledgement (time of the ack)".into(),
            None,
        ));
        return Ok(());
    }
    if mode == "sync" && answer.send_status == "SEND_OK" {
        let at = confirmed.first().map_or(acked, |(_, at)| (*at).min(acked));
        let who = confirmed.first().map(|(r, _)| r.clone());
        stages.push(stage(
            "replicate",
            at,
            who,
            "ok",
            "a replica had it before the acknowledgement (sync replication)".into(),
            None,
        ));
        for (r, at) in confirmed.iter().skip(1) {
            stages.push(stage(
                "replicate",
                *at,
                Some(r.clone()),
                "ok",
                format!("replica {r} confirmed it"),
                None,
            ));
        }
        return Ok(());
    }
    for (r, at) in &confirmed {
        stages.push(stage(
            "replicate",
            *at,
            Some(r.clone()),
            "ok",
            format!("replica {r} confirmed it ({mode} replication; time is the sampled watermark)"),
            None,
        ));
    }
    if mode == "async" {
        loss.push(LossPoint {
            stage: "replicate".into(),
            kind: "risk",
            reason: match confirmed.first() {
                Some((r, at)) => format!(
                    "async replication: acknowledged before a replica had it; losing the primary before {} (replica {r}) \
                     would have lost it",
                    rfc3339(*at)
                ),
                None => "async replication: acknowledged before a replica had it, and no replica has confirmed it \
                         yet; losing the primary now loses it"
                    .into(),
            },
            group: None,
        });
    }
    Ok(())
}
