//! The consumer-group operations panel on `/consumers`, in headless
//! Chromium at 1366×900 and 390×844: a stopped group is reset to the end
//! through a preview (each queue's from → to, as the API's dry run says)
//! and a confirm, after which the API shows lag 0; with a live member the
//! page shows the server's refusal sentence word for word, with the force
//! option; the members table names the member and its host; nothing
//! scrolls sideways on a phone.

#[path = "common/browser.rs"]
mod browser;
mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use browser::{ui_built, Browser};
use common::{get_json, wait_until, Node};
use serde_json::{json, Value};
use waybill_client::{ConsumeResult, ConsumerOptions, Message, Producer, ProducerOptions, PushConsumer};

const GROUP: &str = "billing";
const PANEL: &str = "section.group-ops[data-group=\"billing\"]";

async fn consumer(node: &Node, id: &str, seen: Arc<AtomicUsize>) -> anyhow::Result<PushConsumer> {
    let mut o = ConsumerOptions::new(node.broker.clone(), GROUP, "orders");
    o.client_id = id.to_string();
    o.heartbeat_interval = Duration::from_millis(100);
    o.pull_wait = Duration::from_millis(200);
    Ok(PushConsumer::start(o, move |_| {
        let seen = seen.clone();
        async move {
            seen.fetch_add(1, Ordering::SeqCst);
            ConsumeResult::Success
        }
    })
    .await?)
}

async fn group(node: &Node) -> anyhow::Result<Value> {
    let v = get_json(format!("{}/api/v1/consumers", node.http)).await?;
    v["groups"]
        .as_array()
        .and_then(|gs| gs.iter().find(|g| g["group"] == GROUP).cloned())
        .ok_or_else(|| anyhow::anyhow!("no group {GROUP}: {v}"))
}

/// Clicks `css` inside the billing panel (through the page, so a sticky
/// header cannot take the click).
async fn click_in_panel(b: &Browser, css: &str) -> anyhow::Result<()> {
    b.c()
        .execute(
            "document.querySelector(arguments[0] + ' ' + arguments[1]).click(); return true",
            vec![json!(PANEL), json!(css)],
        )
        .await?;
    Ok(())
}

async fn produce(producer: &Producer, from: usize, to: usize) -> anyhow::Result<()> {
    for i in from..to {
        let m = Message {
            key: Some(format!("k{i}")),
            body: format!("m{i}").into_bytes(),
            ..Message::default()
        };
        producer.send("orders", m).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_group_is_reset_to_the_end_through_a_preview_and_a_live_one_shows_the_refusal() -> anyhow::Result<()>
{
    ui_built()?;
    let tmp = tempfile::tempdir()?;
    let node = Node::start(&tmp.path().join("node"), &[])?;
    let producer = Producer::new(ProducerOptions::new(node.broker.clone()))?;
    produce(&producer, 0, 8).await?;
    let seen = Arc::new(AtomicUsize::new(0));
    let c = consumer(&node, "first", seen.clone()).await?;
    wait_until("the first 8 consumed", Duration::from_secs(20), || async {
        // The group appears with the member's first heartbeat: until then
        // it is not done yet, not a failure.
        let lag_zero = group(&node).await.is_ok_and(|g| g["lag"] == 0);
        Ok(lag_zero && seen.load(Ordering::SeqCst) == 8)
    })
    .await?;
    c.shutdown().await;
    // The group is stopped and 6 behind.
    produce(&producer, 8, 14).await?;
    let g = group(&node).await?;
    assert_eq!(g["lag"], 6, "{g}");
    let want: Vec<String> = g["queues"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|q| q["kind"] == "topic")
        .map(|q| format!("{} {} → {}", q["queue_id"], q["committed"], q["end"]))
        .collect();

    let b = Browser::start().await?;
    b.viewport(1366, 900).await?;
    b.open(&format!("{}/consumers", node.http)).await?;
    b.wait(
        "the operations panel",
        &format!("return document.querySelector('{PANEL} button.preview') !== null"),
    )
    .await?;
    click_in_panel(&b, "button.preview").await?;
    let rows = b
        .wait_value(
            "the preview",
            &format!(
                "const rows = [...document.querySelectorAll('{PANEL} table.preview tbody tr')]; \
                 return rows.length ? rows.map(r => [...r.cells].map(c => c.innerText.trim()).join(' ')) : null"
            ),
        )
        .await?;
    let got: Vec<String> = serde_json::from_value(rows)?;
    assert_eq!(got, want, "the preview shows each queue's from → to");
    assert_eq!(group(&node).await?["lag"], 6, "a preview changes nothing");
    click_in_panel(&b, "button.confirm").await?;
    let result = b
        .wait_value(
            "the reset's result",
            &format!("return document.querySelector('{PANEL} p.ops-result')?.innerText"),
        )
        .await?;
    assert!(result.as_str().is_some_and(|r| r.starts_with("Reset done")), "{result}");
    assert_eq!(group(&node).await?["lag"], 0, "the API shows lag 0 after the reset");
    b.assert_no_horizontal_scroll("/consumers at 1366").await?;

    // A live member: the page shows the server's own refusal sentence.
    let c = consumer(&node, "live-one", seen.clone()).await?;
    wait_until("the member is live", Duration::from_secs(20), || async {
        Ok(group(&node).await?["member_details"]
            .as_array()
            .is_some_and(|m| m.len() == 1))
    })
    .await?;
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1/consumers/{GROUP}/offsets", node.http))
        .json(&json!({"to": "end", "dry_run": true}))
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 409);
    let sentence = resp.json::<Value>().await?["error"].as_str().unwrap_or("").to_string();
    assert!(sentence.contains("live-one"), "{sentence}");

    for (w, h) in [(1366, 900), (390, 844)] {
        b.viewport(w, h).await?;
        b.open(&format!("{}/consumers", node.http)).await?;
        b.wait(
            "the members table",
            "return [...document.querySelectorAll('table.members td')].some(td => td.innerText === 'live-one')",
        )
        .await?;
        let host = b
            .wait_value(
                "the member's host",
                "return document.querySelector('table.members tbody tr td:nth-child(2)')?.innerText",
            )
            .await?;
        assert!(host.as_str().is_some_and(|h| h.starts_with("127.0.0.1:")), "{host}");
        click_in_panel(&b, "button.preview").await?;
        let shown = b
            .wait_value(
                "the refusal",
                &format!("return document.querySelector('{PANEL} p.refusal')?.innerText"),
            )
            .await?;
        assert_eq!(
            shown.as_str(),
            Some(sentence.as_str()),
            "the server's sentence, as it is"
        );
        b.wait(
            "the force option",
            &format!("return document.querySelector('{PANEL} input[name=force]') !== null"),
        )
        .await?;
        b.assert_no_horizontal_scroll(&format!("/consumers at {w}")).await?;
    }
    let errors = b.console_errors().await?;
    assert!(errors.is_empty(), "console errors: {errors:?}");
    c.shutdown().await;
    Ok(())
}
