//! Properties the broker owns, refused on producer input.
//!
//! Contract: a producer cannot set the properties that steer the broker
//! (retry counter, delay, replay and transaction links, Raft placement,
//! `WAYBILL_*` internals; the list is `waybill_client::properties::RESERVED`).
//! Over HTTP such a send is a 400 whose `{"error"}` names the property; on
//! the wire it is a `BadRequest` answer naming it (plain and transactional
//! sends); the CLI fails with that message. Nothing is stored. The issue's
//! repro — `RECONSUME_TIME: 99` with `--max-reconsume-times 3`, which
//! dead-lettered the message on its first failure — is refused, and a
//! message that fails once is retried, not dead-lettered. The SDK's own
//! properties (`traceparent`, `WAYBILL_SEND_ATTEMPT`, …) still pass.

#[path = "common/mod.rs"]
mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{get_json, Node};
use serde_json::json;
use waybill_client::protocol::ErrorCode;
use waybill_client::{
    ClientError, ConsumeResult, ConsumerOptions, Message, Producer, ProducerOptions, PushConsumer, SendStatus,
    TransactionState,
};

fn with_property(name: &str, value: &str) -> Message {
    Message {
        key: Some("repro".into()),
        body: b"order".to_vec(),
        properties: [(name.to_string(), value.to_string())].into(),
        ..Message::default()
    }
}

fn refused_naming(e: Option<ClientError>, name: &str) -> bool {
    matches!(e, Some(ClientError::Broker { code: ErrorCode::BadRequest, message }) if message.contains(name))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_reserved_properties_producers_are_refused_over_http_wire_and_cli() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let node = Node::start(
        &tmp.path().join("node"),
        &["--retry-delays", "10ms,10ms,10ms", "--max-reconsume-times", "3"],
    )?;
    let http = reqwest::Client::new();
    let url = format!("{}/api/v1/topics/orders/messages", node.http);
    for name in [
        "RECONSUME_TIME",
        "ORIGIN_MESSAGE_ID",
        "DELAY_UNTIL_MS",
        "UNIQ_TRANSACTION_ID",
        "WAYBILL_X",
    ] {
        let r = http
            .post(&url)
            .json(&json!({"body": "order", "properties": {name: "99"}}))
            .send()
            .await?;
        let status = r.status().as_u16();
        let v: serde_json::Value = r.json().await?;
        assert_eq!(status, 400, "{name}: {v}");
        assert!(v["error"].as_str().is_some_and(|e| e.contains(name)), "{name}: {v}");
    }
    let ok = http
        .post(&url)
        .json(&json!({"body": "order", "properties": {"order_id": "7", "traceparent": "x"}}))
        .send()
        .await?;
    assert_eq!(ok.status().as_u16(), 200, "ordinary properties pass");

    let mut opts = ProducerOptions::new(node.broker.clone());
    opts.group = Some("tx-producers".into());
    let producer = Producer::new(opts)?;
    let e = producer
        .send("orders", with_property("RECONSUME_TIME", "99"))
        .await
        .err();
    assert!(refused_naming(e, "RECONSUME_TIME"));
    let e = producer
        .send_batch("orders", vec![Message::default(), with_property("REPLAY_OF", "x")])
        .await
        .err();
    assert!(
        refused_naming(e, "REPLAY_OF"),
        "one reserved property refuses the batch"
    );
    let tx = producer
        .send_in_transaction("orders", with_property("TRAN_MSG", "false"), |_| async {
            TransactionState::Commit
        })
        .await
        .err();
    assert!(refused_naming(tx, "TRAN_MSG"), "the half-message path checks too");

    let b = node.broker.clone();
    let args = [
        "produce",
        "--broker",
        &b,
        "--topic",
        "orders",
        "--body",
        "x",
        "--property",
        "RECONSUME_TIME=99",
    ];
    let out = tokio::task::block_in_place(|| {
        std::process::Command::new(env!("CARGO_BIN_EXE_waybill"))
            .args(args)
            .output()
    })?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("RECONSUME_TIME"), "{stderr}");

    // The repro: the refused message never exists. One that fails once is
    // retried (its counter the broker's, from 0), then consumed; the DLQ
    // stays empty.
    let sent = producer.send("orders", with_property("order_id", "8")).await?;
    assert_eq!(sent.status, SendStatus::SendOk);
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let seen = attempts.clone();
    let mut opts = ConsumerOptions::new(node.broker.clone(), "billing", "orders");
    opts.heartbeat_interval = Duration::from_millis(100);
    opts.pull_wait = Duration::from_millis(200);
    let consumer = PushConsumer::start(opts, move |d| {
        let seen = seen.clone();
        async move {
            let mut a = seen.lock().unwrap_or_else(|p| p.into_inner());
            let first = !a.iter().any(|(id, _, _)| *id == d.id);
            a.push((
                d.id.clone(),
                d.reconsume_times,
                d.message.properties.get("RECONSUME_TIME").cloned(),
            ));
            if first {
                ConsumeResult::ReconsumeLater
            } else {
                ConsumeResult::Success
            }
        }
    })
    .await?;
    let start = Instant::now();
    loop {
        let done = attempts
            .lock()
            .map(|a| a.iter().filter(|(id, _, _)| *id == sent.id).count() >= 2)
            .unwrap_or(false);
        if done {
            break;
        }
        anyhow::ensure!(start.elapsed() < Duration::from_secs(30), "no retry in 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    consumer.shutdown().await;
    let a = attempts.lock().map(|a| a.clone()).unwrap_or_default();
    let mine: Vec<_> = a.iter().filter(|(id, _, _)| *id == sent.id).collect();
    assert_eq!(mine[0].1, 0, "first delivery: {a:?}");
    assert_eq!(mine[1].1, 1, "retried once: {a:?}");
    assert!(a.iter().all(|(_, _, p)| p.as_deref() != Some("99")), "{a:?}");
    let dlq = get_json(format!("{}/api/v1/dlq?group=billing", node.http)).await?;
    assert_eq!(dlq["messages"].as_array().map(Vec::len), Some(0), "{dlq}");
    Ok(())
}
