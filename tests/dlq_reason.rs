//! Why a message failed travels with it, against the real binary: the text
//! a Rust handler gives (or its panic message), and an `--exec` script's
//! exit code and stderr, appear in the DLQ list, the message's timeline and
//! `waybill dlq list`, and a reason filter selects exactly the letters
//! whose reason matches.

#[path = "common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{dead_letters, timeline_until, Node};
use serde_json::Value;
use waybill_client::{ConsumeResult, ConsumerOptions, Message, Producer, ProducerOptions, PushConsumer};

async fn until_dead(node: &Node, group: &str, n: usize) -> anyhow::Result<Vec<Value>> {
    let start = Instant::now();
    loop {
        let letters = dead_letters(node, group).await?;
        if letters.len() >= n {
            return Ok(letters);
        }
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(30),
            "only {} dead letters",
            letters.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn reason_of<'a>(letters: &'a [Value], key: &str) -> &'a str {
    letters
        .iter()
        .find(|d| d["key"] == key)
        .and_then(|d| d["reason"].as_str())
        .unwrap_or_default()
}

#[tokio::test]
async fn given_failing_handlers_their_reasons_show_in_the_dlq_the_timeline_and_the_cli() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let node = Node::start(
        &tmp.path().join("node"),
        &["--retry-delays", "10ms", "--max-reconsume-times", "0"],
    )?;
    let producer = Producer::new(ProducerOptions::new(node.broker.clone()))?;
    let mut ids = std::collections::BTreeMap::new();
    for key in ["a", "b", "c", "ok"] {
        let m = Message {
            key: Some(key.into()),
            body: format!("order {key}").into_bytes(),
            ..Message::default()
        };
        ids.insert(key, producer.send("orders", m).await?.id);
    }
    for key in ["f1", "f2"] {
        let m = Message {
            key: Some(key.into()),
            body: b"file".to_vec(),
            ..Message::default()
        };
        producer.send("files", m).await?;
    }

    println!("--- a Rust handler: an error's text, and a panic's message");
    let mut opts = ConsumerOptions::new(node.broker.clone(), "billing", "orders");
    opts.heartbeat_interval = Duration::from_millis(100);
    opts.pull_wait = Duration::from_millis(200);
    let consumer = PushConsumer::start(opts, |d| async move {
        match d.message.key.as_deref() {
            Some("c") => panic!("boom on c"),
            Some("ok") => ConsumeResult::Success,
            k => ConsumeResult::reconsume_later(format!("card declined for {}", k.unwrap_or("?"))),
        }
    })
    .await?;
    let letters = until_dead(&node, "billing", 3).await?;
    consumer.shutdown().await;
    assert!(reason_of(&letters, "a").contains("card declined for a"), "{letters:?}");
    assert!(reason_of(&letters, "b").contains("card declined for b"), "{letters:?}");
    assert!(
        reason_of(&letters, "c").contains("handler panicked: boom on c"),
        "{letters:?}"
    );
    assert_eq!(letters.len(), 3, "the message that succeeded is not a dead letter");
    let v: Value = reqwest::get(format!("{}/api/v1/dlq?group=billing", node.http))
        .await?
        .json()
        .await?;
    let counted: Vec<(String, u64)> = v["reasons"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            (
                r["reason"].as_str().unwrap_or_default().to_string(),
                r["letters"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        counted.len(),
        3,
        "one row per distinct reason, timing left out: {counted:?}"
    );
    assert!(
        counted.iter().all(|(r, n)| *n == 1 && !r.contains(" ms)")),
        "{counted:?}"
    );

    println!("--- an --exec script: its exit code and stderr");
    let exec = std::process::Command::new(env!("CARGO_BIN_EXE_waybill"))
        .args([
            "consume",
            "--broker",
            &node.broker,
            "--topic",
            "files",
            "--group",
            "scripts",
        ])
        .args([
            "--exec",
            "echo 'disk quota exceeded' >&2; exit 3",
            "--idle-exit-ms",
            "1500",
        ])
        .stdin(std::process::Stdio::null())
        .output()?;
    assert!(exec.status.success(), "{}", String::from_utf8_lossy(&exec.stderr));
    let scripts = until_dead(&node, "scripts", 2).await?;
    for key in ["f1", "f2"] {
        let r = reason_of(&scripts, key);
        assert!(
            r.contains("--exec exited with code 3: disk quota exceeded"),
            "{key}: {r}"
        );
    }

    println!("--- the timeline says why");
    let a = ids["a"].clone();
    let tl = timeline_until(&node, &a, |v| {
        v["stages"]
            .as_array()
            .is_some_and(|s| s.iter().any(|st| st["stage"] == "dlq"))
    })
    .await?;
    let dlq_stage = tl["stages"]
        .as_array()
        .and_then(|s| s.iter().find(|st| st["stage"] == "dlq"))
        .cloned()
        .unwrap_or_default();
    assert!(
        dlq_stage["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("card declined for a"),
        "{dlq_stage}"
    );

    println!("--- waybill dlq list shows it");
    let list = std::process::Command::new(env!("CARGO_BIN_EXE_waybill"))
        .args(["dlq", "list", "--group", "scripts", "--http", &node.http])
        .output()?;
    assert!(list.status.success());
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(text.contains("exited with code 3: disk quota exceeded"), "{text}");

    println!("--- a reason filter selects exactly the matching letters");
    let (status, dry): (u16, Value) = {
        let resp = reqwest::Client::new()
            .post(format!("{}/api/v1/dlq/jobs", node.http))
            .json(&serde_json::json!({"group": "billing", "dry_run": true, "filter": {"reason": "card declined"}}))
            .send()
            .await?;
        (resp.status().as_u16(), resp.json().await?)
    };
    assert_eq!(status, 200, "{dry}");
    let mut keys: Vec<&str> = dry["would_replay"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d["key"].as_str())
        .collect();
    keys.sort();
    assert_eq!(keys, ["a", "b"]);
    Ok(())
}
