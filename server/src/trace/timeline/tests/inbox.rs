//! The idempotent consumer (inbox) and the outbox relay on a timeline: a
//! suppressed duplicate's consume stage, no redelivery risk for a group
//! whose commits declared an inbox (still one without), a replay past the
//! inbox's window, and the produce stage of a relayed message.

use std::collections::BTreeMap;

use super::*;
use crate::trace::timeline::facts::{Outbox, MAX_OUTBOX_ROW};

const HOUR: u64 = 3_600_000;
const FIRST: &str = "first handled as 0001000000010000000000000099 at 2026-12-01T10:00:00.000Z";

/// A handler's commit of `record` by a group whose inbox keeps keys
/// `window` ms (`None`: no inbox).
fn inbox_commit(record: Delivered, at_ms: i64, window: Option<u64>) -> Commit {
    Commit {
        dedupe_window_ms: window,
        ..commit(record, at_ms, false, Some(3))
    }
}

/// Delivered at 2000, dead-lettered at 2100 (the group's commit past the
/// original at 2110), replayed at `replay_at`, the replayed copy delivered
/// and committed right after; every commit with `window`.
fn replayed(replay_at: i64, window: Option<u64>) -> Facts {
    let mut f = stored();
    let copy = retry_record(GROUP, "0001000000010000000000000500", 0);
    f.deliveries = vec![range(GROUP, 2_000)];
    f.events = vec![
        event_on("dlq", 2_100, "dead", &own(GROUP)),
        event("replay", Some(GROUP), replay_at, "ok", "replayed from dead letter"),
        event_on("deliver", replay_at + 10, "ok", &copy),
    ];
    f.commits = vec![
        inbox_commit(own(GROUP), 2_110, window),
        inbox_commit(copy, replay_at + 20, window),
    ];
    f
}

#[test]
fn a_duplicate_the_inbox_suppressed_is_consumed_with_outcome_duplicate() {
    let mut f = stored();
    f.deliveries = vec![range(GROUP, 2_000)];
    f.commits = vec![Commit {
        duplicate: Some(FIRST.into()),
        ..inbox_commit(own(GROUP), 2_010, Some(HOUR))
    }];
    let t = derive(&f);
    let consume = t.stages.iter().find(|s| s.stage == "consume").expect("consume stage");
    assert_eq!(consume.outcome, "duplicate");
    assert_eq!(
        consume.detail,
        format!("duplicate suppressed: {FIRST}; offset committed")
    );
    assert_eq!(consume.group.as_deref(), Some(GROUP));
    assert_eq!(group_statuses(&t), [(GROUP, "consumed", 1)]);
    assert_eq!(t.groups[0].dedupe_window_ms, Some(HOUR));
    assert_eq!(t.status, "consumed");
    assert_eq!(t.loss_points, vec![]);
}

#[test]
fn a_redelivery_to_a_group_with_an_inbox_carries_no_duplicate_risk() {
    // Redelivered pull ranges (a rebalance), committed once.
    let mut f = stored();
    f.deliveries = vec![range(GROUP, 2_000), range(GROUP, 32_000)];
    f.commits = vec![inbox_commit(own(GROUP), 32_010, Some(HOUR))];
    let t = derive(&f);
    assert_eq!(t.loss_points, vec![]);
    assert_eq!(group_statuses(&t), [(GROUP, "consumed", 2)]);

    // Handed back for a retry, the retry record consumed: both commits
    // (the one past the original too) declared the inbox.
    let r1 = retry_record(GROUP, "0001000000010000000000000300", 4);
    f.deliveries = vec![range(GROUP, 2_000)];
    f.events = vec![
        event_on("retry", 2_100, "failed", &own(GROUP)),
        event_on("deliver", 3_100, "ok", &r1),
    ];
    f.commits = vec![
        inbox_commit(own(GROUP), 2_110, Some(0)),
        inbox_commit(r1, 3_110, Some(0)),
    ];
    let t = derive(&f);
    assert_eq!(t.loss_points, vec![]);
    assert_eq!(group_statuses(&t), [(GROUP, "consumed", 2)]);
    assert_eq!(t.groups[0].dedupe_window_ms, Some(0));
}

#[test]
fn a_redelivery_without_an_inbox_still_risks_duplicate_effects() {
    let redelivered = risk(
        "deliver",
        "delivered 2 times to this group without idempotent handling: duplicate effects possible",
        Some(GROUP),
    );
    let mut f = stored();
    f.deliveries = vec![range(GROUP, 2_000), range(GROUP, 32_000)];
    f.commits = vec![inbox_commit(own(GROUP), 32_010, None)];
    let t = derive(&f);
    assert_eq!(t.loss_points, vec![redelivered.clone()]);
    assert_eq!(t.groups[0].dedupe_window_ms, None);

    // One handling without the inbox is enough to repeat an effect.
    let r1 = retry_record(GROUP, "0001000000010000000000000300", 4);
    f.deliveries = vec![range(GROUP, 2_000)];
    f.events = vec![
        event_on("retry", 2_100, "failed", &own(GROUP)),
        event_on("deliver", 3_100, "ok", &r1),
    ];
    f.commits = vec![
        inbox_commit(own(GROUP), 2_110, None),
        inbox_commit(r1, 3_110, Some(HOUR)),
    ];
    assert_eq!(derive(&f).loss_points, vec![redelivered.clone()]);

    // No commit yet: nothing says the group deduplicates.
    f.commits = vec![];
    assert_eq!(derive(&f).loss_points, vec![redelivered]);
}

#[test]
fn a_replay_past_the_inbox_window_is_a_risk_on_the_replay() {
    let t = derive(&replayed(2_000 + 2 * HOUR as i64 + 60_000, Some(HOUR)));
    assert_eq!(
        t.loss_points,
        vec![risk(
            "replay",
            "replayed 2h 1m after its first delivery, beyond the group's dedupe window (1h): a handler that saw \
             it before runs again",
            Some(GROUP)
        )]
    );
    assert_eq!(group_statuses(&t), [(GROUP, "consumed", 2)]);
    let replay = t.stages.iter().find(|s| s.stage == "replay").expect("replay stage");
    assert_eq!(replay.group.as_deref(), Some(GROUP));
}

#[test]
fn a_replay_within_the_window_or_a_forever_inbox_is_no_risk() {
    let within = derive(&replayed(2_000 + HOUR as i64 / 2, Some(HOUR)));
    assert_eq!(within.loss_points, vec![]);
    assert_eq!(within.status, "consumed");
    let forever = derive(&replayed(2_000 + 48 * HOUR as i64, Some(0)));
    assert_eq!(forever.loss_points, vec![]);
    // Without an inbox the same path is a redelivery risk, not a window one.
    let none = derive(&replayed(2_000 + 48 * HOUR as i64, None));
    assert_eq!(
        none.loss_points,
        vec![risk(
            "deliver",
            "delivered 2 times to this group without idempotent handling: duplicate effects possible",
            Some(GROUP)
        )]
    );
}

#[test]
fn a_message_relayed_from_an_outbox_says_its_row_and_attempt() {
    let mut f = stored();
    if let Some(r) = f.record.as_mut() {
        r.outbox = Some(Outbox {
            row: "42".into(),
            attempt: Some(2),
        });
    }
    let t = derive(&f);
    assert_eq!(t.stages[0].stage, "produce");
    assert_eq!(t.stages[0].detail, "sync send; relayed from outbox row 42, attempt 2");
    f.entry.attempt = 3;
    assert_eq!(
        derive(&f).stages[0].detail,
        "sync send, attempt 3; relayed from outbox row 42, attempt 2"
    );
    if let Some(o) = f.record.as_mut().and_then(|r| r.outbox.as_mut()) {
        o.attempt = None;
    }
    assert_eq!(
        derive(&f).stages[0].detail,
        "sync send, attempt 3; relayed from outbox row 42"
    );
}

#[test]
fn outbox_properties_are_read_defensively() {
    let props = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    };
    let row = waybill_client::properties::PROP_OUTBOX_ROW;
    let attempt = waybill_client::properties::PROP_OUTBOX_ATTEMPT;
    assert_eq!(
        Outbox::from_properties(&props(&[(row, "42"), (attempt, "2")])),
        Some(Outbox {
            row: "42".into(),
            attempt: Some(2)
        })
    );
    assert_eq!(Outbox::from_properties(&props(&[(attempt, "2")])), None);
    assert_eq!(Outbox::from_properties(&props(&[(row, " "), (attempt, "2")])), None);
    let odd = Outbox::from_properties(&props(&[(row, &"é".repeat(100)), (attempt, "-1")]));
    assert_eq!(odd.as_ref().map(|o| o.row.len()), Some(MAX_OUTBOX_ROW));
    assert_eq!(odd.and_then(|o| o.attempt), None);
}
