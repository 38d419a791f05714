//! OpenTelemetry: one message's spans reach a real OTLP/HTTP endpoint,
//! share its trace id and nest in order.

#[path = "common/mod.rs"]
mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::routing::post;
use axum::Router;
use common::Node;
use serde_json::Value;
use waybill_client::{ConsumeResult, ConsumerOptions, Message, Producer, ProducerOptions, PushConsumer};

/// A span as the OTLP JSON encoding gives it.
#[derive(Debug, Clone)]
struct Span {
    name: String,
    trace_id: String,
    span_id: String,
    parent: String,
    start: u64,
    end: u64,
}

fn nanos(v: &Value) -> u64 {
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or(0)
}

fn spans_of(bodies: &[Value]) -> Vec<Span> {
    let mut out = Vec::new();
    for b in bodies {
        for rs in b["resourceSpans"].as_array().into_iter().flatten() {
            for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                for s in ss["spans"].as_array().into_iter().flatten() {
                    out.push(Span {
                        name: s["name"].as_str().unwrap_or("").to_string(),
                        trace_id: s["traceId"].as_str().unwrap_or("").to_lowercase(),
                        span_id: s["spanId"].as_str().unwrap_or("").to_lowercase(),
                        parent: s["parentSpanId"].as_str().unwrap_or("").to_lowercase(),
                        start: nanos(&s["startTimeUnixNano"]),
                        end: nanos(&s["endTimeUnixNano"]),
                    });
                }
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_an_otlp_endpoint_a_messages_spans_share_its_trace_and_nest_in_order() -> anyhow::Result<()> {
    // The collector: a real OTLP/HTTP endpoint that keeps every JSON body.
    let bodies: Arc<Mutex<Vec<Value>>> = Arc::default();
    let sink = bodies.clone();
    let app = Router::new().route(
        "/v1/traces",
        post(move |body: Bytes| {
            let sink = sink.clone();
            async move {
                if let (Ok(v), Ok(mut s)) = (serde_json::from_slice::<Value>(&body), sink.lock()) {
                    s.push(v);
                }
                "{}"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let collector = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    let tmp = tempfile::tempdir()?;
    let node = Node::start(&tmp.path().join("node"), &["--otlp-endpoint", &collector])?;
    let producer = Producer::new(ProducerOptions::new(node.broker.clone()))?;
    let sent = producer
        .send(
            "spans",
            Message {
                key: Some("otel".into()),
                body: b"span me".to_vec(),
                ..Message::default()
            },
        )
        .await?;
    let mut opts = ConsumerOptions::new(node.broker.clone(), "watchers", "spans");
    opts.heartbeat_interval = Duration::from_millis(100);
    let consumer = PushConsumer::start(opts, |_| async { ConsumeResult::Success }).await?;

    let msg: Value = reqwest::get(format!("{}/api/v1/messages/{}", node.http, sent.id))
        .await?
        .json()
        .await?;
    let traceparent = msg["properties"]["traceparent"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let trace_id = traceparent.split('-').nth(1).unwrap_or_default().to_string();
    let producer_span = traceparent.split('-').nth(2).unwrap_or_default().to_string();
    assert_eq!(trace_id.len(), 32, "{msg}");

    let start = Instant::now();
    let spans = loop {
        let all = spans_of(&bodies.lock().map(|b| b.clone()).unwrap_or_default());
        let mine: Vec<Span> = all.into_iter().filter(|s| s.trace_id == trace_id).collect();
        let names: Vec<&str> = mine.iter().map(|s| s.name.as_str()).collect();
        if ["produce", "store", "deliver", "consume"]
            .iter()
            .all(|n| names.contains(n))
        {
            break mine;
        }
        anyhow::ensure!(start.elapsed() < Duration::from_secs(20), "spans so far: {names:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    consumer.shutdown().await;
    let get = |n: &str| spans.iter().find(|s| s.name == n).cloned();
    let (Some(produce), Some(store), Some(deliver), Some(consume)) =
        (get("produce"), get("store"), get("deliver"), get("consume"))
    else {
        anyhow::bail!("missing spans: {spans:?}");
    };
    println!("{spans:#?}");
    // Nesting: produce under the producer's span, store under produce,
    // deliver under the producer's span, consume under deliver.
    assert_eq!(produce.parent, producer_span);
    assert_eq!(store.parent, produce.span_id);
    assert_eq!(deliver.parent, producer_span);
    assert_eq!(consume.parent, deliver.span_id);
    // Order: produce starts first, store within produce, delivery after the ack.
    assert!(produce.start <= store.start && store.end <= produce.end);
    assert!(produce.end <= deliver.start, "delivered after acknowledged");
    assert!(deliver.start <= consume.start && consume.end <= deliver.end);
    Ok(())
}
