//! A consumer killed mid-batch loses nothing: its uncommitted messages go
//! to the remaining member, its committed ones do not come back.
//!
//! Setup: one queue, consumers are real `waybill consume --exec` processes.
//! Consumer A pulls in batches of 4 and commits after each batch; its
//! handler hangs on the 10th message, so offsets 0..8 are committed and
//! 8, 9 are handled but not committed. A is SIGKILLed (with its handler
//! processes). Consumer B joins; once A's heartbeat times out B owns the
//! queue and must get exactly offsets 8..30.

#[path = "common/mod.rs"]
mod common;

use std::collections::HashSet;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::Node;
use waybill_client::{Message, Producer, ProducerOptions, SendStatus};

const MESSAGES: usize = 30;

/// Runs `waybill consume` in its own process group (so a SIGKILL of the
/// group takes its handler children too).
fn consumer(node: &Node, client_id: &str, exec: &str, extra: &[&str]) -> anyhow::Result<Child> {
    Ok(Command::new(env!("CARGO_BIN_EXE_waybill"))
        .args(["consume", "--broker", &node.broker, "--topic", "tasks", "--group", "g"])
        .args([
            "--batch",
            "4",
            "--heartbeat-ms",
            "200",
            "--client-id",
            client_id,
            "--exec",
            exec,
        ])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()?)
}

fn kill_group(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-s", "KILL", "--", &format!("-{}", child.id())])
        .status();
    let _ = child.wait();
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_consumer_sigkilled_mid_batch_should_redeliver_only_its_uncommitted_messages() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let node = Node::start(
        &tmp.path().join("node"),
        &["--queues-per-topic", "1", "--client-timeout-ms", "1500"],
    )?;
    let producer = Producer::new(ProducerOptions::new(node.broker.clone()))?;
    let mut ids = Vec::new();
    for i in 0..MESSAGES {
        let r = producer
            .send(
                "tasks",
                Message {
                    body: format!("task {i}").into_bytes(),
                    ..Message::default()
                },
            )
            .await?;
        assert_eq!((r.status, r.queue_offset), (SendStatus::SendOk, i as u64));
        ids.push(r.id);
    }

    let a_log = tmp.path().join("a.log");
    let b_log = tmp.path().join("b.log");
    let a_exec = format!(
        "echo \"$WAYBILL_MSG_ID\" >> {0}; if [ $(wc -l < {0}) -ge 10 ]; then sleep 600; fi",
        a_log.display()
    );
    // Ids chosen so the queue stays with A (member 2 of 2) until A times out.
    let mut a = consumer(&node, "z", &a_exec, &[])?;
    let start = Instant::now();
    while lines(&a_log).len() < 10 {
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(20),
            "consumer A never reached message 10"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let groups: serde_json::Value = reqwest::get(format!("{}/api/v1/consumers", node.http))
        .await?
        .json()
        .await?;
    let committed = groups["groups"][0]["offsets"]
        .as_array()
        .and_then(|o| o.iter().find(|e| e[0] == "tasks"))
        .and_then(|e| e[2].as_u64())
        .unwrap_or(0) as usize;
    println!(
        "--- SIGKILL consumer A: handled {}, committed offset {committed}",
        lines(&a_log).len()
    );
    kill_group(&mut a);
    assert_eq!(committed, 8, "two batches of 4 committed, the third in progress");

    let b_exec = format!("echo \"$WAYBILL_MSG_ID\" >> {}", b_log.display());
    let want = (MESSAGES - committed).to_string();
    let mut b = consumer(&node, "y", &b_exec, &["--count", &want])?;
    let start = Instant::now();
    let status = loop {
        if let Some(s) = b.try_wait()? {
            break s;
        }
        if start.elapsed() > Duration::from_secs(30) {
            kill_group(&mut b);
            anyhow::bail!("consumer B did not finish; it handled {:?}", lines(&b_log).len());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success());

    let a_seen = lines(&a_log);
    let b_seen = lines(&b_log);
    println!("A handled {}, B handled {}", a_seen.len(), b_seen.len());
    assert_eq!(a_seen, ids[..10].to_vec());
    assert_eq!(
        b_seen,
        ids[committed..].to_vec(),
        "B gets exactly the uncommitted tail, in order"
    );
    let b_set: HashSet<&String> = b_seen.iter().collect();
    assert!(
        ids[..committed].iter().all(|id| !b_set.contains(id)),
        "a committed message came back"
    );
    let redelivered: Vec<&String> = a_seen.iter().filter(|id| b_set.contains(id)).collect();
    assert_eq!(
        redelivered.len(),
        10 - committed,
        "handled-but-uncommitted messages are redelivered"
    );
    Ok(())
}
