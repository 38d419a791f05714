//! `waybill-bench` (the workspace's bench crate) as users run it: the same
//! workload against its own Waybill node and NATS JetStream, JSON out.
//!
//! Contract: `--vs nats://ADDR --json` prints exactly one JSON object: the
//! figures of `waybill bench` for Waybill, plus `peer` (the same figures for
//! NATS, `target` "nats") and `ratio` (Waybill msgs/s ÷ NATS msgs/s). The
//! test uses the NATS server (JetStream on) every dev machine and CI runs
//! on 127.0.0.1:4222; the `--peer-sync always` path of NATS (pip install)
//! runs in the sweep test. `--vs redis://ADDR` does the same against Redis
//! streams with `appendfsync always`: the server at ADDR when it is set up
//! so, else (or with `--peer-sync always`) a private redis-server; with
//! `--peer-sync default`, ADDR as configured (the report names its
//! `appendfsync`).
//! `--sweep` prints the performance table as one JSON object. Every row
//! carries the server's CPU per message when the process is the bench's.
//! Bad input fails with a message and a non-zero exit.

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

/// `ratio` is Waybill msgs/s ÷ the peer's, within rounding.
fn check_ratio(v: &serde_json::Value, ratio: &str, peer: &serde_json::Value) -> anyhow::Result<()> {
    let got = num(v, ratio)?;
    let waybill = if v["waybill"].is_object() { &v["waybill"] } else { v };
    let expected = num(waybill, "msgs_per_sec")? / num(peer, "msgs_per_sec")?;
    anyhow::ensure!(
        (got - expected).abs() <= 0.01 * expected.max(1.0),
        "{ratio} {got} vs {expected}"
    );
    Ok(())
}

#[test]
fn versus_redis_always_runs_a_private_server_that_fsyncs_each_write() -> anyhow::Result<()> {
    let v = run_json(
        BENCH,
        &[
            "--vs",
            "redis://127.0.0.1:6379",
            "--peer-sync",
            "always",
            "--producers",
            "2",
            "--inflight",
            "4",
            "--duration",
            "2",
            "--json",
            "--probe-secs",
            "1",
        ],
    )?;
    check_figures(&v, true)?;
    let peer = &v["peer"];
    check_figures(peer, false)?;
    assert_eq!(peer["target"], "redis");
    assert_eq!(peer["sync"], "always");
    assert_eq!(peer["failed"], 0);
    let server = peer["server"].as_str().unwrap_or_default();
    assert!(server.contains("appendfsync always"), "{server}");
    assert!(!server.contains(":6379"), "the machine's Redis was used: {server}");
    // Both servers are the bench's own processes: their CPU is measured.
    assert!(num(&v, "cpu_us_per_msg")? > 0.0, "{v}");
    assert!(num(peer, "cpu_us_per_msg")? > 0.0, "{peer}");
    check_ratio(&v, "ratio", peer)
}

/// A one-second run against the machine's Redis with `extra` flags; its peer.
fn versus_local_redis(extra: &[&str]) -> anyhow::Result<serde_json::Value> {
    let mut args = vec![
        "--vs",
        "redis://127.0.0.1:6379",
        "--duration",
        "1",
        "--json",
        "--probe-secs",
        "0",
    ];
    args.extend_from_slice(extra);
    let v = run_json(BENCH, &args)?;
    let peer = v["peer"].clone();
    check_figures(&peer, false)?;
    Ok(peer)
}

#[test]
fn versus_redis_as_configured_names_its_appendfsync() -> anyhow::Result<()> {
    let peer = &versus_local_redis(&["--peer-sync", "default"])?;
    assert_eq!(peer["sync"], "default");
    let server = peer["server"].as_str().unwrap_or_default();
    assert!(
        server.contains("127.0.0.1:6379") && server.contains("appendfsync "),
        "{server}"
    );
    // Not the bench's process: no CPU figure rather than a guessed one.
    assert!(peer["cpu_us_per_msg"].is_null(), "{peer}");
    Ok(())
}

#[test]
fn versus_redis_without_peer_sync_compares_with_appendfsync_always() -> anyhow::Result<()> {
    // The machine's Redis keeps nothing on disk: the bench says so and
    // runs its own always-fsync server instead of calling it durable.
    let peer = &versus_local_redis(&[])?;
    assert_eq!(peer["sync"], "always");
    let server = peer["server"].as_str().unwrap_or_default();
    assert!(
        server.contains("appendfsync always") && server.contains("a private server: redis://127.0.0.1:6379 has"),
        "{server}"
    );
    assert!(num(peer, "cpu_us_per_msg")? > 0.0, "{peer}");
    Ok(())
}

#[test]
fn sweep_measures_every_row_beside_both_peers_in_one_run() -> anyhow::Result<()> {
    let v = run_json(
        BENCH,
        &[
            "--sweep",
            "--duration",
            "0.5",
            "--probe-secs",
            "1",
            "--sweep-pg",
            "postgres://postgres@127.0.0.1:5432/test",
            "--json",
        ],
    )?;
    let raw = &v["raw_fsync_loop"];
    anyhow::ensure!(num(raw, "fsyncs_per_sec")? > 0.0, "no raw loop: {v}");
    anyhow::ensure!(num(&v["probe"], "mb_per_sec")? > 0.0, "no probe: {v}");
    let rows = v["rows"].as_array().cloned().unwrap_or_default();
    let inflight: Vec<u64> = rows
        .iter()
        .map(|r| r["producers"].as_u64().unwrap_or(0) * r["inflight"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(inflight, [1, 32, 256]);
    for r in &rows {
        check_figures(&r["waybill"], true)?;
        assert!(num(&r["waybill"], "cpu_us_per_msg")? > 0.0, "{r}");
        for peer in ["redis", "nats"] {
            check_figures(&r[peer], false)?;
            assert_eq!(r[peer]["failed"], 0, "{r}");
            assert!(num(&r[peer], "cpu_us_per_msg")? > 0.0, "{r}");
            check_ratio(r, &format!("ratio_{peer}"), &r[peer])?;
        }
    }
    let extra = v["extra"].as_array().cloned().unwrap_or_default();
    let labels: Vec<&str> = extra.iter().filter_map(|r| r["label"].as_str()).collect();
    assert_eq!(
        labels,
        [
            "256, tracing off",
            "256, traced in PostgreSQL",
            "256, async flush",
            "4 x 64, one node",
            "4 x 64, sync replication",
            "4 x 64, Raft"
        ]
    );
    for r in &extra {
        assert_eq!(r["waybill"]["failed"], 0, "{r}");
        anyhow::ensure!(num(&r["waybill"], "msgs_per_sec")? > 0.0, "{r}");
    }
    let raft = extra[5]["compared"].as_str().unwrap_or_default();
    assert!(raft.starts_with("/ one node: "), "{raft}");
    Ok(())
}

#[test]
fn bad_input_fails_with_a_message() -> anyhow::Result<()> {
    for args in [
        &["--vs", "http://127.0.0.1:4222"][..],
        &["--vs", "nats://127.0.0.1:4222", "--producers", "0"][..],
        &["--peer-sync", "always"][..],
        &["--vs", "redis://127.0.0.1:6379", "--consumers", "1"][..],
        &["--sweep", "--vs", "nats://127.0.0.1:4222"][..],
        &["--sweep", "--broker", "127.0.0.1:1"][..],
        &["--sweep-pg", "postgres://x"][..],
    ] {
        expect_refused(BENCH, args)?;
    }
    Ok(())
}
