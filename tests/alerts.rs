//! Alerts fire and resolve, reach a webhook, and show in the API and metrics.

#[path = "common/mod.rs"]
mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::routing::post;
use axum::{Json, Router};
use common::Node;
use serde_json::Value;
use waybill_client::{ConsumeResult, ConsumerOptions, Message, Producer, ProducerOptions, PushConsumer};

type Hooks = Arc<Mutex<Vec<Value>>>;

/// A real HTTP endpoint that records every alert POSTed to it.
async fn webhook() -> anyhow::Result<(String, Hooks)> {
    let got: Hooks = Arc::default();
    let sink = got.clone();
    let app = Router::new().route(
        "/hook",
        post(move |Json(v): Json<Value>| {
            let sink = sink.clone();
            async move {
                if let Ok(mut g) = sink.lock() {
                    g.push(v);
                }
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((format!("http://{addr}/hook"), got))
}

async fn wait_for(hooks: &Hooks, what: &str, pred: impl Fn(&Value) -> bool) -> anyhow::Result<Value> {
    let start = Instant::now();
    loop {
        if let Some(v) = hooks.lock().ok().and_then(|h| h.iter().find(|v| pred(v)).cloned()) {
            return Ok(v);
        }
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(15),
            "no {what} alert; got {:?}",
            hooks.lock().map(|h| h.clone())
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_dead_letter_the_dlq_inflow_alert_fires_to_the_webhook_api_and_metrics() -> anyhow::Result<()> {
    let (url, hooks) = webhook().await?;
    let tmp = tempfile::tempdir()?;
    let node = Node::start(
        &tmp.path().join("node"),
        &[
            "--alert-webhook",
            &url,
            "--retry-delays",
            "10ms",
            "--max-reconsume-times",
            "0",
        ],
    )?;
    let producer = Producer::new(ProducerOptions::new(node.broker.clone()))?;
    producer
        .send(
            "alerting",
            Message {
                key: Some("poison".into()),
                body: b"x".to_vec(),
                ..Message::default()
            },
        )
        .await?;
    let mut opts = ConsumerOptions::new(node.broker.clone(), "fragile", "alerting");
    opts.heartbeat_interval = Duration::from_millis(100);
    let consumer = PushConsumer::start(opts, |_| async { ConsumeResult::ReconsumeLater }).await?;
    let fired = wait_for(&hooks, "dlq_inflow", |v| {
        v["alert"] == "dlq_inflow" && v["state"] == "firing"
    })
    .await?;
    consumer.shutdown().await;
    println!("webhook got {fired}");
    assert_eq!(fired["labels"]["group"], "fragile");
    assert!(fired["value"].as_f64().unwrap_or(0.0) >= 1.0);
    let api: Value = reqwest::get(format!("{}/api/v1/alerts", node.http))
        .await?
        .json()
        .await?;
    assert!(
        api["alerts"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x["alert"] == "dlq_inflow")),
        "{api}"
    );
    let metrics = reqwest::get(format!("{}/metrics", node.http)).await?.text().await?;
    assert!(
        metrics.contains("waybill_alert_firing{alert=\"dlq_inflow\",group=\"fragile\"} 1"),
        "{metrics}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_async_flush_data_at_risk_too_long_the_alert_fires_then_resolves_after_the_fsync() -> anyhow::Result<()> {
    let (url, hooks) = webhook().await?;
    let tmp = tempfile::tempdir()?;
    let node = Node::start(
        &tmp.path().join("node"),
        &[
            "--alert-webhook",
            &url,
            "--flush",
            "async",
            "--flush-interval-ms",
            "2500",
            "--alert-unflushed-ms",
            "300",
        ],
    )?;
    let producer = Producer::new(ProducerOptions::new(node.broker.clone()))?;
    producer
        .send(
            "risky",
            Message {
                body: vec![b'r'; 4096],
                ..Message::default()
            },
        )
        .await?;
    let fired = wait_for(&hooks, "unflushed_age firing", |v| {
        v["alert"] == "unflushed_age" && v["state"] == "firing"
    })
    .await?;
    println!("fired: {fired}");
    assert!(fired["summary"].as_str().unwrap_or("").contains("not fsynced"));
    let resolved = wait_for(&hooks, "unflushed_age resolved", |v| {
        v["alert"] == "unflushed_age" && v["state"] == "resolved"
    })
    .await?;
    println!("resolved: {resolved}");
    Ok(())
}
