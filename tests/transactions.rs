//! Transactional messages against a real `waybill serve` process: commit,
//! rollback, check-back (answered, exhausted) and a half that survives a
//! SIGKILL; each checked from the consumer's side and in the timeline.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{get_json, timeline_until, Node};
use serde_json::Value;
use waybill_client::protocol::Request;
use waybill_client::{
    ClientError, ConsumeResult, ConsumerOptions, Message, Producer, ProducerOptions, PushConsumer, SendStatus,
    TransactionState,
};

fn producer(node: &Node) -> anyhow::Result<Producer> {
    let mut o = ProducerOptions::new(node.broker.clone());
    o.group = Some("payments".into());
    Ok(Producer::new(o)?)
}

fn message(body: &str) -> Message {
    Message {
        key: Some(format!("key-{body}")),
        body: body.as_bytes().to_vec(),
        ..Message::default()
    }
}

/// A consumer that collects the bodies it receives.
async fn collector(node: &Node, topic: &str) -> anyhow::Result<(PushConsumer, Arc<Mutex<Vec<String>>>)> {
    let got = Arc::new(Mutex::new(Vec::new()));
    let mut o = ConsumerOptions::new(node.broker.clone(), "ledger", topic);
    o.heartbeat_interval = Duration::from_millis(100);
    o.pull_wait = Duration::from_millis(200);
    let sink = got.clone();
    let c = PushConsumer::start(o, move |m| {
        let sink = sink.clone();
        async move {
            if let Ok(mut v) = sink.lock() {
                v.push(String::from_utf8_lossy(&m.message.body).into_owned());
            }
            ConsumeResult::Success
        }
    })
    .await?;
    Ok((c, got))
}

async fn wait_for(got: &Arc<Mutex<Vec<String>>>, body: &str) -> anyhow::Result<()> {
    let start = Instant::now();
    while !got.lock().map(|v| v.iter().any(|b| b == body)).unwrap_or(false) {
        anyhow::ensure!(start.elapsed() < Duration::from_secs(15), "{body} never consumed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

fn stages(v: &Value) -> Vec<(String, String)> {
    v["stages"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| {
                    (
                        s["stage"].as_str().unwrap_or("").to_string(),
                        s["outcome"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn names(v: &Value) -> Vec<String> {
    stages(v).into_iter().map(|(s, _)| s).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_commit_and_rollback_consumers_see_only_the_committed_message_and_timelines_say_why() -> anyhow::Result<()>
{
    let tmp = tempfile::tempdir()?;
    let node = Node::start(&tmp.path().join("node"), &[])?;
    let p = producer(&node)?;
    let (consumer, got) = collector(&node, "payments").await?;

    let rolled = p
        .send_in_transaction("payments", message("refused"), |half| async move {
            assert_eq!(half.status, SendStatus::SendOk);
            TransactionState::Rollback
        })
        .await?;
    assert_eq!(rolled.state, TransactionState::Rollback);
    assert!(rolled.committed.is_none());
    let done = p
        .send_in_transaction("payments", message("paid"), |_| async { TransactionState::Commit })
        .await?;
    let committed = done
        .committed
        .clone()
        .ok_or_else(|| anyhow::anyhow!("no committed copy"))?;
    assert_eq!(committed.status, SendStatus::SendOk);
    assert_ne!(committed.id, done.half.id, "the copy is its own record");

    wait_for(&got, "paid").await?;
    // The rolled-back half was stored before the committed one: had it
    // leaked, it would have been delivered first.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        *got.lock().map_err(|_| anyhow::anyhow!("poisoned"))?,
        vec!["paid".to_string()]
    );

    // The half's id opens the whole path: prepare, commit, then the copy's
    // delivery and consumption.
    let v = timeline_until(&node, &done.half.id, |v| v["status"] == "consumed").await?;
    let n = names(&v);
    let at = |s: &str| n.iter().position(|x| x == s).unwrap_or(usize::MAX);
    assert!(at("produce") < at("tx_prepare"), "{n:?}");
    assert!(at("tx_prepare") < at("tx_commit"), "{n:?}");
    assert!(at("tx_commit") < at("deliver"), "{n:?}");
    assert!(at("deliver") < at("consume"), "{n:?}");
    assert_eq!(v["committed_as"], committed.id.as_str());
    // The copy, as the consumer knows it, carries the transaction's steps.
    let copy = timeline_until(&node, &committed.id, |v| v["status"] == "consumed").await?;
    assert!(names(&copy).contains(&"tx_commit".to_string()), "{copy}");

    let v = timeline_until(&node, &rolled.half.id, |v| v["status"] == "rolled_back").await?;
    assert!(stages(&v).contains(&("tx_rollback".to_string(), "rolled_back".to_string())));
    assert!(!names(&v).contains(&"deliver".to_string()));
    // Search by key finds the rolled-back half under its topic, and the
    // committed message once (as its copy).
    let hits = get_json(format!("{}/api/v1/messages?key=key-refused", node.http)).await?;
    assert_eq!(hits["messages"][0]["status"], "rolled_back", "{hits}");
    assert_eq!(hits["messages"][0]["topic"], "payments");
    let hits = get_json(format!("{}/api/v1/messages?key=key-paid", node.http)).await?;
    let ids: Vec<&str> = hits["messages"]
        .as_array()
        .map(|a| a.iter().filter_map(|m| m["id"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(ids, vec![committed.id.as_str()]);
    consumer.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_an_unknown_outcome_the_broker_checks_back_and_rolls_back_when_nobody_answers() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let node = Node::start(
        &tmp.path().join("node"),
        &["--tx-check-timeout-ms", "300", "--tx-max-checks", "2"],
    )?;
    let p = producer(&node)?;
    let (consumer, got) = collector(&node, "payments").await?;

    // Nobody answers checks yet: two checks, then the broker rolls back.
    let orphan = p
        .send_in_transaction("payments", message("orphan"), |_| async { TransactionState::Unknown })
        .await?;
    assert!(orphan.committed.is_none());
    let v = timeline_until(&node, &orphan.half.id, |v| v["status"] == "rolled_back").await?;
    let checks = stages(&v)
        .iter()
        .filter(|(s, o)| s == "tx_check" && o == "asked")
        .count();
    assert_eq!(checks, 2, "{v}");
    let risk = v["loss_points"]
        .as_array()
        .and_then(|a| a.iter().find(|l| l["stage"] == "tx_check"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(risk["kind"], "risk", "{v}");

    // With a checker that looks the outcome up, the next one commits.
    let checked = Arc::new(Mutex::new(Vec::new()));
    let seen = checked.clone();
    let _checker = p.start_transaction_checker(move |c| {
        let seen = seen.clone();
        async move {
            if let Ok(mut v) = seen.lock() {
                v.push((c.id.clone(), c.topic.clone()));
            }
            TransactionState::Commit
        }
    })?;
    let late = p
        .send_in_transaction("payments", message("late"), |_| async { TransactionState::Unknown })
        .await?;
    wait_for(&got, "late").await?;
    assert_eq!(
        checked.lock().map(|v| v.clone()).unwrap_or_default(),
        vec![(late.half.id.clone(), "payments".to_string())]
    );
    let v = timeline_until(&node, &late.half.id, |v| v["status"] == "consumed").await?;
    assert!(stages(&v).contains(&("tx_commit".to_string(), "ok".to_string())), "{v}");
    assert!(!got.lock().map(|v| v.contains(&"orphan".to_string())).unwrap_or(true));
    consumer.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_killed_broker_an_open_transaction_is_checked_back_after_restart() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("node");
    let args = ["--tx-check-timeout-ms", "300"];
    let mut node = Node::start(&dir, &args)?;
    let half = {
        let p = producer(&node)?;
        p.send_in_transaction("payments", message("survivor"), |_| async { TransactionState::Unknown })
            .await?
            .half
    };
    assert_eq!(half.status, SendStatus::SendOk);
    // The trace writes in batches: let it have the prepare, then kill.
    timeline_until(&node, &half.id, |v| v["status"] == "half").await?;
    node.sigkill()?;
    drop(node);

    let node = Node::start(&dir, &args)?;
    let p = producer(&node)?;
    let _checker = p.start_transaction_checker(|_| async { TransactionState::Commit })?;
    let (consumer, got) = collector(&node, "payments").await?;
    wait_for(&got, "survivor").await?;
    let v = timeline_until(&node, &half.id, |v| v["status"] == "consumed").await?;
    assert!(v["committed_as"].is_string(), "{v}");
    // Ended once: a second commit is refused, not delivered twice.
    let conn = waybill_client::Connection::connect(&node.broker).await?;
    let again = conn
        .call(
            &Request::EndTransaction {
                producer_group: "payments".into(),
                id: half.id.clone(),
                state: TransactionState::Commit,
                from_check: false,
            },
            Duration::from_secs(5),
        )
        .await;
    match again {
        Err(ClientError::Broker { message, .. }) => assert!(message.contains("already ended"), "{message}"),
        other => anyhow::bail!("a second commit was not refused: {other:?}"),
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        *got.lock().map_err(|_| anyhow::anyhow!("poisoned"))?,
        vec!["survivor".to_string()]
    );
    consumer.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_the_cli_a_transaction_commits_or_rolls_back_and_says_which() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let node = Node::start(&tmp.path().join("node"), &[])?;
    let run = |outcome: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_waybill"))
            .args(["produce", "--broker", &node.broker, "--topic", "cli-tx", "--body", "b"])
            .args(["--transaction", outcome, "--key", outcome])
            .stdin(std::process::Stdio::null())
            .output()
    };
    let commit = run("commit")?;
    assert!(commit.status.success(), "{}", String::from_utf8_lossy(&commit.stderr));
    let line: Value = serde_json::from_slice(&commit.stdout)?;
    assert_eq!(line["status"], "SEND_OK");
    assert_eq!(line["transaction"], "COMMIT_MESSAGE");
    assert!(line["committed_id"].is_string(), "{line}");
    let rollback = run("rollback")?;
    assert!(rollback.status.success());
    let line: Value = serde_json::from_slice(&rollback.stdout)?;
    assert_eq!(line["transaction"], "ROLLBACK_MESSAGE");
    assert!(line["committed_id"].is_null());
    let id = line["id"].as_str().unwrap_or_default().to_string();
    timeline_until(&node, &id, |v| v["status"] == "rolled_back").await?;
    Ok(())
}
