//! The dashboard's charts and "Stored" card, in headless Chromium:
//! - the overview's produce chart follows the live feed, on a laptop and on
//!   a phone (390 × 844): its newest value
//!   becomes non-zero while messages are sent, without a reload;
//! - the "Stored" card says exactly how many user messages were sent after
//!   retries, a dead letter and its replay put more records in the log;
//! - `/consumers` draws each group's lag; at 390 px neither `/` nor
//!   `/consumers` scrolls sideways.

#[path = "common/browser.rs"]
mod browser;
mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use browser::{ui_built, Browser};
use common::{get_json, wait_until, Node};
use waybill_client::{ConsumeResult, ConsumerOptions, Message, Producer, ProducerOptions, PushConsumer};

/// The newest value of the overview's produce line (`data-last`'s first
/// word), when the chart has one.
const PRODUCE_LAST: &str = "const s = document.querySelector('svg[data-series~=produce]'); \
     return s ? s.getAttribute('data-last').split(' ')[0] : null";

fn message(key: String) -> Message {
    Message {
        body: format!("body of {key}").into_bytes(),
        key: Some(key),
        ..Message::default()
    }
}

/// Sends batches of ten in the background until the open overview's produce
/// chart shows a non-zero newest value; returns that value.
async fn send_until_charted(b: &Browser, producer: &Arc<Producer>, sent: &Arc<AtomicUsize>) -> anyhow::Result<String> {
    b.wait(
        "the produce chart",
        "return document.querySelector('svg[data-series~=produce]') !== null",
    )
    .await?;
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let (p, sent, stop) = (producer.clone(), sent.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let from = sent.load(Ordering::SeqCst);
                let batch = (from..from + 10).map(|i| message(format!("m-{i}"))).collect();
                let ok = p.send_batch("orders", batch).await?.len();
                sent.fetch_add(ok, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            anyhow::Ok(())
        })
    };
    let last = b
        .wait_value(
            "a non-zero produce rate on the chart",
            &format!("{{ const v = (() => {{ {PRODUCE_LAST} }})(); return v && Number(v) > 0 ? v : null }}"),
        )
        .await;
    stop.store(true, Ordering::SeqCst);
    sender.await??;
    Ok(last?.as_str().unwrap_or_default().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn charts_follow_the_feed_and_stored_counts_user_messages_once() -> anyhow::Result<()> {
    ui_built()?;
    let tmp = tempfile::tempdir()?;
    let node = Node::start(
        &tmp.path().join("node"),
        &["--retry-delays", "10ms", "--max-reconsume-times", "1"],
    )?;
    let node = &node;
    let b = Browser::start().await?;
    b.viewport(1366, 900).await?;
    b.open(&format!("{}/", node.http)).await?;
    b.wait(
        "the produce chart",
        "return document.querySelector('svg[data-series~=produce]') !== null",
    )
    .await?;
    b.mark_page().await?;

    let producer = Arc::new(Producer::new(ProducerOptions::new(node.broker.clone()))?);
    let sent = Arc::new(AtomicUsize::new(0));
    let last = send_until_charted(&b, &producer, &sent).await?;
    b.assert_same_page().await?;
    println!("produce chart's newest value: {last}");

    // One message that fails until the handler is fixed (a dead letter,
    // then replayed); every tenth fails once (a retry).
    let poison = producer.send("orders", message("poison".into())).await?;
    let total = sent.load(Ordering::SeqCst) + 1;
    let (handled, broken) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(true)));
    let consumer = {
        let (h, br) = (handled.clone(), broken.clone());
        let mut o = ConsumerOptions::new(node.broker.clone(), "billing", "orders");
        o.heartbeat_interval = Duration::from_millis(100);
        o.pull_wait = Duration::from_millis(200);
        PushConsumer::start(o, move |d| {
            let (h, br) = (h.clone(), br.clone());
            async move {
                let key = d.message.key.clone().unwrap_or_default();
                let tenth = key.ends_with('0') && d.reconsume_times == 0;
                if tenth || (key == "poison" && br.load(Ordering::SeqCst)) {
                    return ConsumeResult::ReconsumeLater;
                }
                h.fetch_add(1, Ordering::SeqCst);
                ConsumeResult::Success
            }
        })
        .await?
    };
    let handled_now = &*handled;
    wait_until(
        "all but the poison handled, one dead letter",
        Duration::from_secs(60),
        || async move {
            let dlq = common::dead_letters(node, "billing").await?;
            Ok(handled_now.load(Ordering::SeqCst) >= total - 1 && dlq.len() == 1)
        },
    )
    .await?;
    broken.store(false, Ordering::SeqCst);
    let dlq = common::dead_letters(node, "billing").await?;
    assert_eq!(dlq[0]["origin_id"].as_str(), Some(poison.id.as_str()));
    let id = dlq[0]["id"].as_str().unwrap_or_default().to_string();
    let r = reqwest::Client::new()
        .post(format!("{}/api/v1/dlq/{id}/replay", node.http))
        .send()
        .await?;
    anyhow::ensure!(r.status().is_success(), "replay: {}", r.text().await?);
    wait_until("the replay handled", Duration::from_secs(30), || async move {
        Ok(handled_now.load(Ordering::SeqCst) >= total)
    })
    .await?;

    let want = total.to_string();
    let shown = b
        .wait_value(
            "the Stored card to count every user message once",
            &format!(
                "const t = document.querySelector('[data-card=stored] .big')?.innerText; return t === '{want}' ? t : null"
            ),
        )
        .await?;
    assert_eq!(shown, want);
    let node_view = get_json(format!("{}/api/v1/node", node.http)).await?;
    assert_eq!(node_view["user_messages_stored"], total as u64, "{node_view}");
    b.assert_same_page().await?;

    // The group's lag chart, then both pages at phone width.
    b.open(&format!("{}/consumers", node.http)).await?;
    b.wait(
        "the lag chart of billing",
        "return document.querySelector('svg[data-series~=lag]') !== null",
    )
    .await?;
    consumer.shutdown().await;
    b.viewport(390, 844).await?;
    for page in ["/", "/consumers"] {
        b.open(&format!("{}{page}", node.http)).await?;
        b.wait("a chart", "return document.querySelector('svg.chart') !== null")
            .await?;
        b.assert_no_horizontal_scroll(page).await?;
    }
    // On a phone too, the overview's produce chart follows the sends.
    b.open(&format!("{}/", node.http)).await?;
    b.mark_page().await?;
    let last = send_until_charted(&b, &producer, &sent).await?;
    b.assert_same_page().await?;
    println!("produce chart's newest value at 390 px: {last}");
    let errors = b.console_errors().await?;
    assert!(errors.is_empty(), "console errors: {errors:?}");
    Ok(())
}
