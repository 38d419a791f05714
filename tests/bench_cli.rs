//! `waybill bench` as users run it: the real binary, its own node, JSON out.
//!
//! Contract: `--json` prints exactly one JSON object on stdout with
//! `msgs_per_sec`, `mb_per_sec`, `p50_ms`, `p99_ms`, `fsyncs_per_sec`,
//! `msgs_per_fsync`, `e2e_p99_ms`; numbers are sane (something was sent,
//! p99 ≥ p50, a sync-flush fsync covers at least one message). Bad input
//! fails with a message and a non-zero exit. Comparisons with peers
//! (`--vs`) moved to `waybill-bench` (its tests: `bench_versus.rs`); here
//! `--vs` only fails, naming the command to run instead.

#[path = "common/bench_json.rs"]
mod bench_json;

use bench_json::{check_figures, expect_refused, num, run_json};

const WAYBILL: &str = env!("CARGO_BIN_EXE_waybill");

/// `waybill bench ARGS`, parsed.
fn bench_json(args: &[&str]) -> anyhow::Result<serde_json::Value> {
    run_json(WAYBILL, &[&["bench"], args].concat())
}

#[test]
fn own_node_sync_flush_reports_every_figure() -> anyhow::Result<()> {
    let v = bench_json(&["--duration", "2", "--json", "--producers", "2", "--inflight", "8"])?;
    check_figures(&v, true)?;
    assert_eq!(v["flush"], "sync");
    assert_eq!(v["own_node"], true);
    assert_eq!(v["failed"], 0);
    // No consumers: end-to-end latency was not measured.
    assert!(v["e2e_p99_ms"].is_null(), "{v}");
    // Sync flush: the disk probe and the run's share of its bandwidth.
    assert!(num(&v["probe"], "mb_per_sec")? > 0.0, "{v}");
    assert!(num(&v, "probe_ratio")? > 0.0, "{v}");
    assert!(v.get("peer").is_none() && v.get("ratio").is_none(), "{v}");
    Ok(())
}

#[test]
fn consumers_measure_end_to_end_latency() -> anyhow::Result<()> {
    let v = bench_json(&[
        "--duration",
        "2",
        "--json",
        "--producers",
        "2",
        "--inflight",
        "8",
        "--consumers",
        "2",
        "--flush",
        "async",
        // Also exercises the own node without a tracer.
        "--trace-db",
        "none",
    ])?;
    check_figures(&v, false)?;
    assert!(num(&v, "e2e_p99_ms")? > 0.0, "{v}");
    assert!(num(&v, "consumed")? >= num(&v, "msgs")?, "{v}");
    // Async flush: no probe.
    assert!(v["probe"].is_null(), "{v}");
    Ok(())
}

#[test]
fn versus_points_to_the_bench_crate() -> anyhow::Result<()> {
    for args in [
        &["bench", "--vs", "nats://127.0.0.1:4222", "--json"][..],
        &["bench", "--vs", "nats://127.0.0.1:4222", "--peer-sync", "always"][..],
    ] {
        let stderr = expect_refused(WAYBILL, args)?;
        assert!(
            stderr.contains("cargo run --release -p waybill-bench -- --vs nats://127.0.0.1:4222"),
            "{args:?}: {stderr}"
        );
    }
    Ok(())
}

#[test]
fn bad_input_fails_with_a_message() -> anyhow::Result<()> {
    for args in [
        &["--producers", "0"][..],
        &["--vs", "http://127.0.0.1:4222"][..],
        &["--consumers", "1", "--size", "4"][..],
        &["--broker", "127.0.0.1:1", "--duration", "1", "--probe-secs", "0"][..],
        &["--trace-db", "not-a-url", "--duration", "1"][..],
    ] {
        expect_refused(WAYBILL, &[&["bench"], args].concat())?;
    }
    Ok(())
}
