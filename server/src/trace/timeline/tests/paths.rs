//! Typical paths: the order of their stages (ties broken by the path's
//! order) and the status overall and per group.

use super::*;

#[test]
fn stored_delivered_consumed_in_path_order() {
    let mut f = stored();
    // Delivery and commit in the same millisecond as the store: rank
    // keeps the path's order.
    f.deliveries = vec![range(GROUP, 1_000)];
    f.commits = vec![commit(own(GROUP), 1_000, false, Some(3))];
    let t = derive(&f);
    assert_eq!(names(&t), ["produce", "store", "deliver", "consume", "flush"]);
    assert_eq!(t.status, "consumed");
    assert_eq!(group_statuses(&t), [(GROUP, "consumed", 1)]);
    assert_eq!(t.loss_points, vec![]);
    let consume = t.stages.iter().find(|s| s.stage == "consume").expect("consume stage");
    assert_eq!(
        (consume.group.as_deref(), consume.node.as_deref()),
        (Some(GROUP), Some("1"))
    );

    // A second group that has it but did not commit: delivered overall.
    f.deliveries.push(range("audit", 1_500));
    let t = derive(&f);
    assert_eq!(t.status, "delivered");
    assert_eq!(group_statuses(&t), [("audit", "delivered", 1), (GROUP, "consumed", 1)]);
}

#[test]
fn retry_then_dead_letter() {
    let mut f = stored();
    let r1 = retry_record(GROUP, "0001000000010000000000000200", 0);
    f.deliveries = vec![range(GROUP, 2_000)];
    f.events = vec![
        event_on("retry", 2_100, "failed", &own(GROUP)),
        event_on("deliver", 2_200, "ok", &r1),
        event_on("dlq", 2_300, "dead", &r1),
    ];
    // A commit past the original slot: it was handed back, not consumed.
    f.commits = vec![commit(own(GROUP), 2_150, false, None)];
    assert_eq!(consumable(&f), vec![], "both records were handed back");
    let t = derive(&f);
    assert_eq!(
        names(&t),
        ["produce", "store", "flush", "deliver", "retry", "deliver", "dlq"]
    );
    assert_eq!(t.status, "dead");
    assert_eq!(group_statuses(&t), [(GROUP, "dead", 2)]);
    let risks: Vec<&str> = t.loss_points.iter().map(|l| l.stage.as_str()).collect();
    assert_eq!(risks, ["deliver", "dlq"], "redelivered, then dead-lettered");

    // Only the retry so far: retrying.
    f.events.truncate(2);
    let t = derive(&f);
    assert_eq!(t.status, "retrying");
    assert_eq!(consumable(&f), vec![r1.clone()]);

    // The retry record consumed: consumed.
    f.commits = vec![commit(r1, 2_400, false, None)];
    let t = derive(&f);
    assert_eq!(t.status, "consumed");
    assert_eq!(group_statuses(&t), [(GROUP, "consumed", 2)]);
}

#[test]
fn replayed_dead_letter() {
    let mut f = stored();
    f.deliveries = vec![range(GROUP, 2_000)];
    f.events = vec![
        event_on("dlq", 2_100, "dead", &own(GROUP)),
        event("replay", Some(GROUP), 2_100, "ok", "replayed from dead letter"),
    ];
    let t = derive(&f);
    assert_eq!(t.status, "replayed");
    assert_eq!(names(&t), ["produce", "store", "flush", "deliver", "dlq", "replay"]);
    assert_eq!(t.loss_points, vec![]);
}

#[test]
fn a_committed_half_continues_as_its_copy() {
    let copy_id = "0001000000010000000000000300";
    let mut copy = stored();
    copy.id = copy_id.into();
    copy.entry.born_ms = 990;
    copy.entry.stored_ms = 3_000;
    copy.entry.acked_ms = 3_000;
    copy.deliveries = vec![range(GROUP, 3_100)];
    copy.commits = vec![commit(
        Delivered {
            record_id: copy_id.into(),
            ..own(GROUP)
        },
        3_200,
        false,
        None,
    )];
    // The copy's timeline carries its half's transaction events.
    copy.events = vec![event("tx_commit", None, 3_000, "ok", "committed")];
    let mut f = half();
    f.events.push(Event {
        record_id: copy_id.into(),
        ..event("tx_commit", None, 3_000, "ok", "committed")
    });
    assert_eq!(committed_copy(&f.events), Some(copy_id));
    f.committed = Some(Committed {
        id: copy_id.into(),
        copy: Some(Box::new(copy)),
    });
    let t = derive(&f);
    assert_eq!(t.committed_as.as_deref(), Some(copy_id));
    assert_eq!(t.status, "consumed");
    assert_eq!(
        names(&t),
        [
            "produce",
            "store",
            "tx_prepare",
            "flush",
            "store",
            "flush",
            "tx_commit",
            "deliver",
            "consume"
        ]
    );
    assert_eq!(group_statuses(&t), [(GROUP, "consumed", 1)]);

    // The copy not traced yet: stored.
    if let Some(c) = f.committed.as_mut() {
        c.copy = None;
    }
    assert_eq!(derive(&f).status, "stored");
    // Rolled back wins over a commit event.
    f.events
        .push(event("tx_rollback", None, 4_000, "rolled_back", "rolled back"));
    assert_eq!(committed_copy(&f.events), None);
}

#[test]
fn gaps_show_with_their_note() {
    let mut f = stored();
    f.gaps = vec![Gap {
        from_ms: 0,
        to_ms: 1_000,
        dropped: 4,
        messages: 3,
    }];
    let t = derive(&f);
    assert_eq!(
        t.gaps,
        [serde_json::json!({
            "from": "1970-01-01T00:00:00.000Z", "to": "1970-01-01T00:00:01.000Z", "dropped": 4, "messages": 3,
            "note": "the tracer shed events in this period: stages may be missing",
        })]
    );
}

#[test]
fn a_stage_this_version_does_not_know_shows_as_written_and_last() {
    let mut f = stored();
    // A row another version wrote, at the same time as the store.
    f.events = vec![event("archived", None, 1_000, "ok", "moved to cold storage")];
    let t = derive(&f);
    assert_eq!(names(&t), ["produce", "store", "archived", "flush"]);
    assert_eq!(t.loss_points, vec![]);
    assert_eq!(t.status, "stored");
    let json = serde_json::to_value(&t.stages[2]).unwrap_or_default();
    assert_eq!(json["stage"], "archived");
}
