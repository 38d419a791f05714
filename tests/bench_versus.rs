//! `waybill-bench` (the workspace's bench crate) as users run it: the same
//! workload against its own Waybill node and NATS JetStream, JSON out.
//!
//! Contract: `--vs nats://ADDR --json` prints exactly one JSON object: the
//! figures of `waybill bench` for Waybill, plus `peer` (the same figures for
//! NATS, `target` "nats") and `ratio` (Waybill msgs/s ÷ NATS msgs/s). The
//! test uses the NATS server (JetStream on) every dev machine and CI runs
//! on 127.0.0.1:4222; the `--peer-sync always` path (pip install) is
//! exercised by hand only. Bad input fails with a message and a non-zero
//! exit.

#[path = "common/bench_json.rs"]
mod bench_json;

use bench_json::{check_figures, expect_refused, num, run_json};

const BENCH: &str = env!("CARGO_BIN_EXE_waybill-bench");

#[test]
fn versus_nats_adds_peer_and_ratio() -> anyhow::Result<()> {
    let v = run_json(
        BENCH,
        &[
            "--vs",
            "nats://127.0.0.1:4222",
            "--duration",
            "2",
            "--json",
            "--probe-secs",
            "1",
        ],
    )?;
    check_figures(&v, true)?;
    let peer = &v["peer"];
    anyhow::ensure!(peer.is_object(), "no peer in {v}");
    check_figures(peer, false)?;
    assert_eq!(peer["target"], "nats");
    assert_eq!(peer["failed"], 0);
    let ratio = num(&v, "ratio")?;
    let expected = num(&v, "msgs_per_sec")? / num(peer, "msgs_per_sec")?;
    assert!(
        (ratio - expected).abs() <= 0.01 * expected.max(1.0),
        "{ratio} vs {expected}"
    );
    Ok(())
}

#[test]
fn bad_input_fails_with_a_message() -> anyhow::Result<()> {
    for args in [
        &["--vs", "http://127.0.0.1:4222"][..],
        &["--vs", "nats://127.0.0.1:4222", "--producers", "0"][..],
        &["--peer-sync", "always"][..],
    ] {
        expect_refused(BENCH, args)?;
    }
    Ok(())
}
