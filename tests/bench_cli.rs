//! `waybill bench` as users run it: the real binary, its own node, JSON out.
//!
//! Contract: `--json` prints exactly one JSON object on stdout with
//! `msgs_per_sec`, `mb_per_sec`, `p50_ms`, `p99_ms`, `fsyncs_per_sec`,
//! `msgs_per_fsync`, `e2e_p99_ms` (plus `peer` and `ratio` with `--vs`);
//! numbers are sane (something was sent, p99 ≥ p50, a sync-flush fsync
//! covers at least one message). Bad input fails with a message and a
//! non-zero exit. The NATS test uses the NATS server every dev machine and
//! CI runs on 127.0.0.1:4222; the `--peer-sync always` path (pip install)
//! is exercised by hand only.

use std::process::{Command, Output};

use serde_json::Value;

const KEYS: [&str; 7] = [
    "msgs_per_sec",
    "mb_per_sec",
    "p50_ms",
    "p99_ms",
    "fsyncs_per_sec",
    "msgs_per_fsync",
    "e2e_p99_ms",
];

fn bench(args: &[&str]) -> anyhow::Result<Output> {
    Ok(Command::new(env!("CARGO_BIN_EXE_waybill"))
        .arg("bench")
        .args(args)
        .output()?)
}

/// Runs the bench and parses its single JSON object.
fn bench_json(args: &[&str]) -> anyhow::Result<Value> {
    let out = bench(args)?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    anyhow::ensure!(
        out.status.success(),
        "bench failed ({}):\nstdout: {stdout}\nstderr: {stderr}",
        out.status
    );
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.trim().is_empty()).collect();
    anyhow::ensure!(lines.len() == 1, "expected one JSON line, got: {stdout}");
    let v: Value = serde_json::from_str(lines[0])?;
    anyhow::ensure!(v.is_object(), "not an object: {v}");
    println!("{v:#}");
    Ok(v)
}

fn num(v: &Value, key: &str) -> anyhow::Result<f64> {
    v[key]
        .as_f64()
        .ok_or_else(|| anyhow::anyhow!("{key} is not a number in {v}"))
}

/// Every key present; the send-side figures sane.
fn check_figures(v: &Value, sync_fsyncs: bool) -> anyhow::Result<()> {
    for k in KEYS {
        anyhow::ensure!(v.get(k).is_some(), "missing {k} in {v}");
    }
    anyhow::ensure!(num(v, "msgs_per_sec")? > 0.0, "nothing sent: {v}");
    anyhow::ensure!(num(v, "mb_per_sec")? > 0.0, "no bandwidth: {v}");
    let (p50, p99) = (num(v, "p50_ms")?, num(v, "p99_ms")?);
    anyhow::ensure!(p50 > 0.0 && p99 >= p50, "p50 {p50} / p99 {p99}");
    if sync_fsyncs {
        anyhow::ensure!(num(v, "fsyncs_per_sec")? > 0.0, "no fsyncs: {v}");
        anyhow::ensure!(num(v, "msgs_per_fsync")? >= 1.0, "an fsync covered < 1 message: {v}");
    }
    Ok(())
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
fn versus_nats_adds_peer_and_ratio() -> anyhow::Result<()> {
    let v = bench_json(&[
        "--vs",
        "nats://127.0.0.1:4222",
        "--duration",
        "2",
        "--json",
        "--probe-secs",
        "1",
    ])?;
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
        &["--producers", "0"][..],
        &["--vs", "http://127.0.0.1:4222"][..],
        &["--consumers", "1", "--size", "4"][..],
        &["--broker", "127.0.0.1:1", "--duration", "1", "--probe-secs", "0"][..],
        &["--trace-db", "not-a-url", "--duration", "1"][..],
    ] {
        let out = bench(args)?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr.contains("error"), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?} printed a result");
    }
    Ok(())
}
