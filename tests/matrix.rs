//! The reliability matrix end to end: the real `waybill matrix` command
//! starts real groups of `waybill serve` processes, injects faults and
//! checks the outcome.
//!
//! Contract checked:
//! - the quick matrix (what CI runs) exits 0 and its report says why: zero
//!   acknowledged messages lost wherever a promise is made; losses only in
//!   async rows, each attributed to `flush` or `replicate` and found by the
//!   audit; nothing unexpected served; no false loss; the async power-cut
//!   row had acknowledged data at risk when the power went (exercised);
//! - the checker can fail: with members broken on purpose (they
//!   acknowledge sync-flush sends before any fsync) the sync-flush
//!   power-loss row fails, names the lost messages and the command exits
//!   non-zero.

use std::process::Command;

use serde_json::Value;

fn matrix(args: &[&str]) -> anyhow::Result<(std::process::Output, Value)> {
    let tmp = tempfile::tempdir()?;
    let json = tmp.path().join("matrix.json");
    let out = Command::new(env!("CARGO_BIN_EXE_waybill"))
        .arg("matrix")
        .args(args)
        .arg("--json")
        .arg(&json)
        .arg("--data-dir")
        .arg(tmp.path().join("data"))
        .output()?;
    let report: Value = match std::fs::read(&json) {
        Ok(b) => serde_json::from_slice(&b)?,
        Err(e) => anyhow::bail!(
            "no report written ({e}); stdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    };
    // The run is also kept for the dashboard.
    anyhow::ensure!(tmp.path().join("data/matrix/last.json").is_file());
    Ok((out, report))
}

fn cell<'a>(report: &'a Value, flush: &str, repl: &str, fault: &str) -> &'a Value {
    report["rows"]
        .as_array()
        .and_then(|rows| {
            rows.iter()
                .find(|c| c["flush"] == flush && c["replication"] == repl && c["fault"] == fault)
        })
        .unwrap_or(&Value::Null)
}

fn n(v: &Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or(0)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

#[test]
fn the_quick_matrix_keeps_every_promise_and_finds_every_loss() -> anyhow::Result<()> {
    let (out, report) = matrix(&["--quick"])?;
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    println!("{table}\n{}", String::from_utf8_lossy(&out.stderr));
    let rows = report["rows"].as_array().cloned().unwrap_or_default();
    assert!(rows.len() >= 9, "{report}");
    for c in &rows {
        let what = format!("{}/{} {}: {c}", c["flush"], c["replication"], c["fault"]);
        let verdict = c["verdict"].as_str().unwrap_or("");
        if verdict == "skipped" {
            assert!(
                !is_root() && c["fault"] == "disk-full",
                "only a tmpfs without root may skip: {what}"
            );
            continue;
        }
        assert!(n(c, "acked") > 0, "the workload ran: {what}");
        // The names SPEC section 6 promises scripts.
        for key in [
            "flush",
            "replication",
            "fault",
            "msgs_per_sec",
            "p99_ms",
            "acked",
            "lost",
            "duplicated",
            "unexpected",
            "unknown",
            "in_flight_at_fault",
            "lost_ids",
        ] {
            assert!(c.get(key).is_some(), "no {key}: {what}");
        }
        assert_eq!(
            c["lost_ids"].as_array().map_or(0, Vec::len) as u64,
            n(c, "lost"),
            "{what}"
        );
        assert_eq!(n(c, "unexpected"), 0, "nothing unexpected: {what}");
        assert_eq!(n(c, "silent"), 0, "every loss found by the audit: {what}");
        assert_eq!(n(c, "false_loss"), 0, "no false loss: {what}");
        assert_eq!(n(c, "audit_named") + n(c, "audit_windowed"), n(c, "lost"), "{what}");
        let promised = c["promise"]
            .as_str()
            .unwrap_or("")
            .starts_with("nothing acknowledged lost");
        if promised {
            assert_eq!(n(c, "lost"), 0, "promise broken: {what}");
        }
        for (stage, _) in c["loss_stages"].as_object().cloned().unwrap_or_default() {
            assert!(stage == "flush" || stage == "replicate", "loss at {stage}: {what}");
        }
        assert!(verdict == "pass" || verdict == "not exercised", "{what}");
    }
    // The async power cut had acknowledged, unsynced data when the power
    // went: a pass there is not a pass by default.
    let async_cut = cell(&report, "async", "none", "power-loss");
    assert!(async_cut["in_flight_at_fault"].as_u64().unwrap_or(0) > 0, "{async_cut}");
    assert_eq!(async_cut["verdict"], "pass", "{async_cut}");
    assert!(out.status.success(), "{table}");
    assert_eq!(report["passed"], true);
    assert!(table.contains("every promise held"), "{table}");
    Ok(())
}

#[test]
fn a_node_that_acknowledges_before_the_fsync_fails_the_sync_power_loss_row() -> anyhow::Result<()> {
    let (out, report) = matrix(&[
        "--quick",
        "--modes",
        "sync/none",
        "--faults",
        "power-loss",
        "--unsafe-ack-before-fsync",
    ])?;
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "a broken node must fail the matrix");
    assert!(stderr.contains("run(s) failed: sync/none power-loss"), "{stderr}");
    let c = cell(&report, "sync", "none", "power-loss");
    assert_eq!(c["verdict"], "fail", "{c}");
    assert!(n(c, "lost") > 0, "{c}");
    assert!(c["reasons"].to_string().contains("acknowledged message(s) lost"), "{c}");
    // Each lost message is listed with how the audit found it.
    let first = &c["lost_messages"][0];
    assert!(first["id"].as_str().is_some_and(|id| id.len() == 28), "{c}");
    assert_eq!(report["passed"], false);
    Ok(())
}
