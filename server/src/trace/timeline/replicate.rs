//! The replicate stage of a timeline: which replica confirmed the message
//! when (from sampled replication watermarks, read by [`super::facts`]),
//! and the risk an acknowledgement before a replica had it carried. Pure.

use super::facts::Facts;
use super::{loss, stage, LossPoint, Stage};
use crate::model;

/// Whether a run's replication mode has replicas to read watermarks of.
pub(super) fn replicates(mode: &str) -> bool {
    !(mode == "none" || mode.is_empty())
}

/// The replicate stages: per replica, the first sampled confirmation at or
/// past the message's end; and the async-replication loss point.
pub(super) fn replicate_stages(f: &Facts, stages: &mut Vec<Stage>, loss: &mut Vec<LossPoint>) {
    let mode = f.run.replication.as_str();
    if !replicates(mode) {
        return;
    }
    let confirmed = &f.replicas;
    let acked = f.entry.acked_ms;
    let send_ok = f.run.send_status == "SEND_OK";
    if mode == "raft" && send_ok {
        stages.push(stage(
            model::Stage::Replicate,
            acked,
            None,
            "ok",
            "a majority of the Raft group had it before the acknowledgement (time of the ack)".into(),
            None,
        ));
        return;
    }
    if mode == "sync" && send_ok {
        let at = confirmed.first().map_or(acked, |c| c.at_ms.min(acked));
        let who = confirmed.first().map(|c| c.replica.clone());
        stages.push(stage(
            model::Stage::Replicate,
            at,
            who,
            "ok",
            "a replica had it before the acknowledgement (sync replication)".into(),
            None,
        ));
        for c in confirmed.iter().skip(1) {
            stages.push(stage(
                model::Stage::Replicate,
                c.at_ms,
                Some(c.replica.clone()),
                "ok",
                format!("replica {} confirmed it", c.replica),
                None,
            ));
        }
        return;
    }
    for c in confirmed {
        stages.push(stage(
            model::Stage::Replicate,
            c.at_ms,
            Some(c.replica.clone()),
            "ok",
            format!(
                "replica {} confirmed it ({mode} replication; time is the sampled watermark)",
                c.replica
            ),
            None,
        ));
    }
    if mode == "async" {
        loss.push(loss::async_replication(confirmed.first()));
    }
}
