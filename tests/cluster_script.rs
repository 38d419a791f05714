//! `scripts/cluster.sh` end to end: the compose topology as three local
//! `waybill serve` processes from docker/node*.toml, a produce through the
//! leader, the leader SIGKILLed, a new leader elected, and every
//! acknowledged id read back through it (the script's own oracle). Bounded:
//! the script gets two minutes, then SIGTERM (its trap stops the nodes).

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Start-up, election, 200 sends, failover and a consume take well under a
/// minute; the margin is for CI's two cores shared with other test binaries.
const LIMIT: Duration = Duration::from_secs(120);

#[test]
fn cluster_script_fails_a_leader_over_and_reads_every_acknowledged_message_back() -> anyhow::Result<()> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or_else(|| anyhow::anyhow!("no repository root"))?;
    let out_file = tempfile::NamedTempFile::new()?;
    let mut child = Command::new("bash")
        .arg(repo.join("scripts/cluster.sh"))
        .arg("200")
        .env("WAYBILL_BIN", env!("CARGO_BIN_EXE_waybill"))
        .stdin(Stdio::null())
        .stdout(out_file.reopen()?)
        .stderr(out_file.reopen()?)
        .spawn()?;
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break Some(s);
        }
        if started.elapsed() > LIMIT {
            // SIGTERM, not SIGKILL: the script's trap stops its nodes.
            Command::new("kill")
                .args(["-s", "TERM", &child.id().to_string()])
                .status()?;
            child.wait()?;
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut output = String::new();
    out_file.reopen()?.read_to_string(&mut output)?;
    println!("{output}");
    let status = status.ok_or_else(|| anyhow::anyhow!("cluster.sh took longer than {LIMIT:?}"))?;
    assert!(status.success(), "cluster.sh failed ({status})");
    assert!(output.contains("cluster: ok:"), "no success line");
    println!("cluster.sh took {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}
