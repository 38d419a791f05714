//! Shared by the bench tests (`bench_cli.rs` runs `waybill bench`,
//! `bench_versus.rs` runs `waybill-bench`): run a bench binary, parse its
//! single JSON object, and check the figures every run reports.

#![allow(dead_code)]

use std::process::{Command, Output};

use serde_json::Value;

/// The figures every report carries (and its `peer`, when there is one).
pub const KEYS: [&str; 7] = [
    "msgs_per_sec",
    "mb_per_sec",
    "p50_ms",
    "p99_ms",
    "fsyncs_per_sec",
    "msgs_per_fsync",
    "e2e_p99_ms",
];

/// Runs `exe` with `args` (e.g. `["bench", …]`) and collects its output.
pub fn run(exe: &str, args: &[&str]) -> anyhow::Result<Output> {
    Ok(Command::new(exe).args(args).output()?)
}

/// Runs the bench and parses its single JSON object.
pub fn run_json(exe: &str, args: &[&str]) -> anyhow::Result<Value> {
    let out = run(exe, args)?;
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

pub fn num(v: &Value, key: &str) -> anyhow::Result<f64> {
    v[key]
        .as_f64()
        .ok_or_else(|| anyhow::anyhow!("{key} is not a number in {v}"))
}

/// Every key present; the send-side figures sane.
pub fn check_figures(v: &Value, sync_fsyncs: bool) -> anyhow::Result<()> {
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

/// A bad invocation: non-zero exit, an error on stderr, nothing on stdout.
/// Returns stderr.
pub fn expect_refused(exe: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = run(exe, args)?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{args:?} succeeded");
    assert!(stderr.contains("error"), "{args:?}: {stderr}");
    assert!(out.stdout.is_empty(), "{args:?} printed a result");
    Ok(stderr)
}
