//! One test (at least) per loss-point rule: the rule firing, with its
//! reason in full, and (where cheap) the same path without it.

use super::*;

#[test]
fn a_plain_sync_path_carries_no_loss_point() {
    let t = derive(&stored());
    assert_eq!(t.loss_points, vec![]);
    assert_eq!(t.status, "stored");
    assert_eq!(names(&t), ["produce", "store", "flush"]);
    let produce = &t.stages[0];
    assert_eq!((produce.outcome.as_str(), produce.detail.as_str()), ("ok", "sync send"));
    assert_eq!(produce.node.as_deref(), Some("producer-1"));
    assert_eq!(t.stages[1].detail, "queue 2 offset 7, log position 0; answered SEND_OK");
    let flush = &t.stages[2];
    assert_eq!(flush.at_ms, 1001, "sync flush: time of the ack");
    assert_eq!(
        flush.detail,
        "covered by an fsync before the acknowledgement (sync flush; time of the ack)"
    );
    assert_eq!((t.key.as_deref(), t.tags.as_deref()), (Some("order-1"), Some("paid")));
}

#[test]
fn a_retried_send_risks_a_duplicate() {
    let mut f = stored();
    f.entry.attempt = 3;
    let t = derive(&f);
    assert_eq!(
        t.loss_points,
        vec![risk(
            "produce",
            "stored by the producer's attempt 3: an earlier attempt that timed out may have been stored too (a \
             duplicate under another id)",
            None
        )]
    );
    assert_eq!(t.stages[0].detail, "sync send, attempt 3");
}

#[test]
fn a_oneway_send_is_unconfirmed() {
    let mut f = stored();
    f.run.send_mode = "oneway".into();
    f.run.send_status = "NONE".into();
    let t = derive(&f);
    assert_eq!(
        t.loss_points,
        vec![risk(
            "produce",
            "oneway send: the producer never learns whether the broker stored it",
            None
        )]
    );
    assert_eq!(t.stages[0].outcome, "unconfirmed");
    assert_eq!(t.send_mode, "oneway");
}

#[test]
fn an_async_flush_already_flushed_is_at_risk_until_the_watermark() {
    let mut f = stored();
    f.run.flush_mode = "async".into();
    f.flushed_at = Some(1_500);
    let t = derive(&f);
    let flush = t.stages.iter().find(|s| s.stage == "flush").expect("flush stage");
    assert_eq!(flush.at_ms, 1_500);
    assert_eq!(
        flush.detail,
        "covered by a periodic fsync (time is the sampled watermark)"
    );
    assert_eq!(
        t.loss_points,
        vec![risk(
            "flush",
            &format!(
                "async flush: acknowledged before the fsync; at risk of a power loss until {}",
                rfc3339(1_500)
            ),
            None
        )]
    );
}

#[test]
fn an_async_flush_not_yet_flushed_has_no_flush_stage() {
    let mut f = stored();
    f.run.flush_mode = "async".into();
    let t = derive(&f);
    assert_eq!(names(&t), ["produce", "store"]);
    assert_eq!(
        t.loss_points,
        vec![risk(
            "flush",
            "async flush: acknowledged before the fsync and not yet flushed; a power loss now loses it",
            None
        )]
    );
}

#[test]
fn async_replication_is_at_risk_until_a_replica_confirms() {
    let mut f = stored();
    f.run.replication = "async".into();
    f.replicas = vec![Confirmation {
        replica: "2".into(),
        at_ms: 1_200,
    }];
    let t = derive(&f);
    let rep = t
        .stages
        .iter()
        .find(|s| s.stage == "replicate")
        .expect("replicate stage");
    assert_eq!((rep.at_ms, rep.node.as_deref()), (1_200, Some("2")));
    assert_eq!(
        rep.detail,
        "replica 2 confirmed it (async replication; time is the sampled watermark)"
    );
    assert_eq!(
        t.loss_points,
        vec![risk(
            "replicate",
            &format!(
                "async replication: acknowledged before a replica had it; losing the primary before {} (replica 2) \
                 would have lost it",
                rfc3339(1_200)
            ),
            None
        )]
    );
    assert_eq!(t.status, "replicated");

    f.replicas.clear();
    let t = derive(&f);
    assert_eq!(
        t.loss_points,
        vec![risk(
            "replicate",
            "async replication: acknowledged before a replica had it, and no replica has confirmed it yet; losing \
             the primary now loses it",
            None
        )]
    );
    assert_eq!(t.status, "stored", "no replicate stage yet");
}

#[test]
fn sync_and_raft_replication_carry_no_replication_risk() {
    let mut f = stored();
    f.run.replication = "sync".into();
    f.replicas = vec![
        Confirmation {
            replica: "2".into(),
            at_ms: 1_000,
        },
        Confirmation {
            replica: "3".into(),
            at_ms: 1_300,
        },
    ];
    let t = derive(&f);
    assert_eq!(t.loss_points, vec![]);
    let reps: Vec<(&str, i64, &str)> = t
        .stages
        .iter()
        .filter(|s| s.stage == "replicate")
        .map(|s| (s.node.as_deref().unwrap_or(""), s.at_ms, s.detail.as_str()))
        .collect();
    assert_eq!(
        reps,
        [
            (
                "2",
                1_000,
                "a replica had it before the acknowledgement (sync replication)"
            ),
            ("3", 1_300, "replica 3 confirmed it")
        ]
    );
    assert_eq!(t.status, "replicated");

    f.run.replication = "raft".into();
    let t = derive(&f);
    assert_eq!(t.loss_points, vec![]);
    let rep = t
        .stages
        .iter()
        .find(|s| s.stage == "replicate")
        .expect("replicate stage");
    assert_eq!((rep.at_ms, rep.node.as_deref()), (1_001, None));
}

#[test]
fn a_loss_the_audit_found_makes_the_message_lost() {
    let mut f = stored();
    f.record = None;
    let why = "acknowledged after the write (async flush) but not fsynced before the crash: absent from the log \
               after recovery";
    f.events = vec![event("flush", None, 5_000, "lost", why)];
    let t = derive(&f);
    assert_eq!(
        t.loss_points,
        vec![LossPoint {
            stage: Stage::Flush.into(),
            kind: LossKind::Lost,
            reason: why.into(),
            group: None,
        }]
    );
    assert_eq!(t.status, "lost");
    assert_eq!(
        t.key.as_deref(),
        Some("run-key"),
        "the run's key when the log lost the record"
    );

    // Not a loss: any other outcome.
    f.events = vec![event("flush", None, 5_000, "ok", "fine")];
    let t = derive(&f);
    assert_eq!(t.loss_points, vec![]);
    assert_eq!(t.status, "stored");
}

#[test]
fn auto_commit_risks_a_failed_handler() {
    let mut f = stored();
    f.deliveries = vec![range(GROUP, 2_000)];
    f.commits = vec![commit(own(GROUP), 2_010, true, None)];
    let t = derive(&f);
    assert_eq!(
        t.loss_points,
        vec![risk(
            "consume",
            "auto-commit: the offset was committed before the handler succeeded",
            Some(GROUP)
        )]
    );
    let consume = t.stages.iter().find(|s| s.stage == "consume").expect("consume stage");
    assert_eq!(consume.outcome, "committed");
    assert_eq!(
        consume.detail,
        "offset auto-committed on delivery; the handler's result is unknown"
    );

    // A handler's commit: no risk, and its time when the commit says.
    f.commits = vec![commit(own(GROUP), 2_010, false, Some(12))];
    let t = derive(&f);
    assert_eq!(t.loss_points, vec![]);
    let consume = t.stages.iter().find(|s| s.stage == "consume").expect("consume stage");
    assert_eq!(consume.outcome, "ok");
    assert_eq!(
        consume.detail,
        "handled with CONSUME_SUCCESS in 12 ms; offset committed"
    );
    f.commits = vec![commit(own(GROUP), 2_010, false, None)];
    let t = derive(&f);
    let consume = t.stages.iter().find(|s| s.stage == "consume").expect("consume stage");
    assert_eq!(consume.detail, "handled with CONSUME_SUCCESS; offset committed");
}

#[test]
fn a_redelivery_risks_duplicate_effects() {
    let mut f = stored();
    f.deliveries = vec![range(GROUP, 2_000), range(GROUP, 32_000)];
    let t = derive(&f);
    assert_eq!(
        t.loss_points,
        vec![risk(
            "deliver",
            "delivered 2 times to this group without idempotent handling: duplicate effects possible",
            Some(GROUP)
        )]
    );
    let details: Vec<&str> = t
        .stages
        .iter()
        .filter(|s| s.stage == "deliver")
        .map(|s| s.detail.as_str())
        .collect();
    assert_eq!(
        details,
        ["delivered", "delivered again (redelivery of an uncommitted message)"]
    );
    assert_eq!(group_statuses(&t), [(GROUP, "delivered", 2)]);
    assert_eq!(t.status, "delivered");

    // Once per group is no redelivery, even with two groups.
    f.deliveries = vec![range(GROUP, 2_000), range("audit", 2_000)];
    assert_eq!(derive(&f).loss_points, vec![]);
}

#[test]
fn a_dead_letter_not_replayed_is_a_risk_and_a_replay_clears_it() {
    let mut f = stored();
    f.deliveries = vec![range(GROUP, 2_000)];
    f.events = vec![event_on("dlq", 2_100, "dead", &own(GROUP))];
    let t = derive(&f);
    assert_eq!(
        t.loss_points,
        vec![risk(
            "dlq",
            "dead letter not replayed: the group never processed it",
            Some(GROUP)
        )]
    );
    assert_eq!(t.status, "dead");

    f.events.push(event("replay", Some(GROUP), 9_000, "ok", "replayed"));
    let t = derive(&f);
    assert_eq!(t.loss_points, vec![]);
    assert_eq!(t.status, "replayed");
    assert_eq!(group_statuses(&t), [(GROUP, "replayed", 1)]);
}

#[test]
fn a_broker_rollback_after_unanswered_checks_risks_a_lost_commit() {
    let mut f = half();
    f.events.push(event("tx_check", None, 7_000, "asked", "check 1 of 1"));
    f.events.push(event(
        "tx_rollback",
        None,
        13_000,
        "rolled_back",
        "rolled back by the broker: 1 checks went unanswered or UNKNOW (producer group tx)",
    ));
    let t = derive(&f);
    assert_eq!(
        t.loss_points,
        vec![risk(
            "tx_check",
            "rolled back because the producer never confirmed its local transaction: if that transaction \
             committed, this message is lost",
            None
        )]
    );
    assert_eq!(t.status, "rolled_back");
    assert_eq!(
        names(&t),
        ["produce", "store", "tx_prepare", "flush", "tx_check", "tx_rollback"]
    );

    // The producer's own rollback is no risk.
    let mut f = half();
    f.events.push(event(
        "tx_rollback",
        None,
        1_100,
        "rolled_back",
        "rolled back after its local transaction",
    ));
    let t = derive(&f);
    assert_eq!(t.loss_points, vec![]);
    assert_eq!(t.status, "rolled_back");
}

#[test]
fn a_transaction_undecided_after_checks_is_a_risk() {
    let mut f = half();
    let t = derive(&f);
    assert_eq!(t.loss_points, vec![], "no check yet");
    assert_eq!(t.status, "half");

    f.events.push(event("tx_check", None, 7_000, "asked", "check 1 of 3"));
    f.events.push(event("tx_check", None, 13_000, "asked", "check 2 of 3"));
    let t = derive(&f);
    assert_eq!(
        t.loss_points,
        vec![risk(
            "tx_check",
            "transaction undecided after 2 checks: consumers will not see it unless its producer group commits",
            None
        )]
    );
    assert_eq!(t.status, "half");
}
