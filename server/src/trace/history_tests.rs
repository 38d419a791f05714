//! Unit tests of the stats history: readings are fed by hand with their
//! own timestamps (no clock, no sleep).

use std::collections::BTreeMap;

use super::*;

fn reading(at_s: i64, produced: &[(&str, u64)], consumed: &[(&str, u64)]) -> Reading {
    let map = |v: &[(&str, u64)]| v.iter().map(|(k, n)| (k.to_string(), *n)).collect::<BTreeMap<_, _>>();
    Reading {
        at_ms: at_s * 1000,
        produced: map(produced),
        consumed: map(consumed),
        ..Reading::default()
    }
}

fn points(h: &History, kind: Kind, topic: Option<&str>, from_s: i64, to_s: i64, step_s: i64) -> Vec<(i64, f64)> {
    h.series(from_s * 1000, to_s * 1000, step_s * 1000, |k| {
        k.kind == kind && k.topic.as_deref() == topic
    })
    .into_iter()
    .next()
    .map(|(_, p)| p)
    .unwrap_or_default()
}

#[test]
fn counters_become_per_second_deltas_whose_sum_is_the_total() {
    let h = History::new();
    // Sent before the first reading still counts (produce starts at 0).
    h.record(reading(100, &[("a", 3)], &[("a", 5)]));
    h.record(reading(101, &[("a", 10), ("b", 4)], &[("a", 9)]));
    h.record(reading(102, &[("a", 10), ("b", 6)], &[("a", 9)]));
    assert_eq!(
        points(&h, Kind::Produce, Some("a"), 100, 102, 1),
        vec![(100_000, 3.0), (101_000, 7.0), (102_000, 0.0)]
    );
    assert_eq!(
        points(&h, Kind::Produce, Some("b"), 100, 102, 1),
        vec![(100_000, 0.0), (101_000, 4.0), (102_000, 2.0)]
    );
    // Consumed offsets survive restarts: the first reading is the baseline.
    assert_eq!(
        points(&h, Kind::Consume, Some("a"), 100, 102, 1),
        vec![(100_000, 0.0), (101_000, 4.0), (102_000, 0.0)]
    );
    // Step 2 s: counts are per-second averages; buckets align to the step.
    assert_eq!(
        points(&h, Kind::Produce, Some("a"), 100, 102, 2),
        vec![(100_000, 5.0), (102_000, 0.0)]
    );
}

#[test]
fn gauges_take_the_maximum_and_counters_never_go_negative() {
    let h = History::new();
    let mut r = reading(10, &[], &[("t", 50)]);
    r.lag.insert("g".into(), 7);
    r.fsyncs = 2;
    r.fsync_nanos = 4_000_000;
    h.record(r.clone());
    r.at_ms = 11_000;
    r.lag.insert("g".into(), 3);
    r.fsyncs = 4;
    r.fsync_nanos = 10_000_000; // two fsyncs, 6 ms → 3 ms each
    r.consumed.insert("t".into(), 20); // offsets reset back
    h.record(r);
    let lag = h.series(10_000, 11_000, 2_000, |k| k.kind == Kind::Lag);
    assert_eq!(lag.len(), 1);
    assert_eq!(lag[0].0.group.as_deref(), Some("g"));
    assert_eq!(lag[0].1, vec![(10_000, 7.0)]);
    assert_eq!(
        points(&h, Kind::FsyncMs, None, 10, 11, 1),
        vec![(10_000, 0.0), (11_000, 3.0)]
    );
    assert_eq!(
        points(&h, Kind::Consume, Some("t"), 10, 11, 1),
        vec![(10_000, 0.0), (11_000, 0.0)]
    );
}

#[test]
fn the_ring_keeps_one_hour_and_labels_beyond_the_cap_are_not_tracked() {
    let h = History::new();
    for s in 0..(KEEP as i64 + 5) {
        h.record(reading(s, &[("a", s as u64)], &[]));
    }
    let p = points(&h, Kind::Produce, Some("a"), 0, KEEP as i64 + 10, 1);
    assert_eq!(p.len(), KEEP);
    assert_eq!(p.first().map(|x| x.0), Some(5_000));

    let h = History::new();
    let many: Vec<(String, u64)> = (0..MAX_TOPICS + 3).map(|i| (format!("t{i:03}"), 1)).collect();
    let many: Vec<(&str, u64)> = many.iter().map(|(t, n)| (t.as_str(), *n)).collect();
    h.record(reading(1, &many, &[]));
    assert_eq!(h.untracked(), 3);
    let tracked = h.series(0, 2_000, 1_000, |k| k.kind == Kind::Produce);
    assert_eq!(tracked.len(), MAX_TOPICS);
}

#[test]
fn latest_and_topic_rates_read_the_newest_samples() {
    let h = History::new();
    assert_eq!(h.latest(), None);
    assert_eq!(h.topic_rates("a"), (0.0, 0.0));
    h.record(reading(1, &[("a", 0)], &[("a", 0)]));
    for s in 2..=21 {
        // 4/s produced for 20 s, the last 10 s also 2/s consumed.
        let c = if s > 11 { 2 * (s as u64 - 11) } else { 0 };
        h.record(reading(s, &[("a", 4 * (s as u64 - 1))], &[("a", c)]));
    }
    assert_eq!(h.topic_rates("a"), (4.0, 2.0));
    assert_eq!(h.topic_rates("nope"), (0.0, 0.0));
    // Not -0.0 (an empty f64 sum), which a page shows as "-0.0/s".
    let (p, c) = h.topic_rates("nope");
    assert!(p.is_sign_positive() && c.is_sign_positive(), "{p} {c}");
    let latest = h.latest().unwrap_or_default();
    assert_eq!(latest["at_ms"], 21_000);
    let produce = latest["series"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["kind"] == "produce" && s["topic"] == "a")
        .cloned();
    assert_eq!(produce.map(|s| s["value"].clone()), Some(serde_json::json!(4.0)));
}
