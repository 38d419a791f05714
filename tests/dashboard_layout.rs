//! The dashboard on a phone and on a laptop, in headless Chromium, and the
//! dashboard while its node is away:
//! - every page, with real data in it (long hyphenated keys, retries, a
//!   dead letter, a consumer group), fits 390 × 844 and 1366 × 900 with no
//!   horizontal scroll (the document is no wider than the viewport);
//! - on a laptop, keys are never broken mid-word;
//! - the node stopped → the page says so in a sentence (no wasm stack
//!   trace); the node back → the sentence goes and the data comes back
//!   without a page reload.

#[path = "common/browser.rs"]
mod browser;
mod common;

use std::process::Command;
use std::time::Duration;

use browser::{ui_built, Browser};
use common::Node;

/// A key long enough, with hyphens, to show how keys wrap.
const KEY: &str = "customer-4711-order-2026-12-01-express-delivery";
const SIZES: [(u32, u32); 2] = [(1366, 900), (390, 844)];

fn waybill(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_waybill")).args(args).output()?;
    anyhow::ensure!(
        out.status.success(),
        "waybill {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Messages on two topics, a group whose handler fails (retries, then a
/// dead letter) and one that consumes; returns one message id.
fn workload(node: &Node) -> anyhow::Result<String> {
    let sent = waybill(&[
        "produce",
        "--broker",
        &node.broker,
        "--topic",
        "orders",
        "--key",
        KEY,
        "--tag",
        "paid",
        "--body",
        r#"{"order":4711,"items":[{"sku":"A-1","qty":2}]}"#,
    ])?;
    let sent: serde_json::Value = serde_json::from_str(sent.trim())?;
    let id = sent["id"].as_str().unwrap_or_default().to_string();
    waybill(&[
        "produce",
        "--broker",
        &node.broker,
        "--topic",
        "orders",
        "--key",
        "order-{n}",
        "--body",
        "b {n}",
        "--count",
        "20",
    ])?;
    waybill(&[
        "produce",
        "--broker",
        &node.broker,
        "--topic",
        "payments",
        "--key",
        "pay-{n}",
        "--body",
        "p {n}",
        "--count",
        "5",
    ])?;
    waybill(&[
        "consume",
        "--broker",
        &node.broker,
        "--topic",
        "payments",
        "--group",
        "ledger",
        "--count",
        "5",
    ])?;
    // `false` fails every delivery: one retry, then the dead-letter queue.
    waybill(&[
        "consume",
        "--broker",
        &node.broker,
        "--topic",
        "orders",
        "--group",
        "billing-service",
        "--exec",
        "false",
        "--idle-exit-ms",
        "2500",
    ])?;
    Ok(id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_fits_a_phone_and_a_laptop() -> anyhow::Result<()> {
    ui_built()?;
    let tmp = tempfile::tempdir()?;
    let node = Node::start(
        &tmp.path().join("node"),
        &["--retry-delays", "10ms", "--max-reconsume-times", "1"],
    )?;
    let id = workload(&node)?;
    common::wait_until("a dead letter of billing-service", Duration::from_secs(30), || async {
        Ok(!common::dead_letters(&node, "billing-service").await?.is_empty())
    })
    .await?;

    let pages = [
        ("overview", "/".to_string(), None),
        ("search", format!("/messages?key={KEY}"), Some("table.results tbody tr")),
        ("timeline", format!("/messages/{id}"), Some("ol.path")),
        (
            "dlq",
            "/dlq?group=billing-service".to_string(),
            Some("table.dlq tbody tr"),
        ),
        ("consumers", "/consumers".to_string(), Some("section.group")),
        ("cluster", "/cluster".to_string(), None),
        ("matrix", "/matrix".to_string(), None),
        ("topics", "/topics".to_string(), Some("table.topics tbody tr")),
        ("topic", "/topics/orders".to_string(), None),
        ("produce", "/produce".to_string(), Some("form.produce")),
    ];
    let b = Browser::start().await?;
    for (w, h) in SIZES {
        b.viewport(w, h).await?;
        for (name, path, ready) in &pages {
            b.open(&format!("{}{path}", node.http)).await?;
            if let Some(css) = ready {
                b.wait(
                    &format!("{name}: {css}"),
                    &format!("return document.querySelector('{css}') !== null"),
                )
                .await?;
            }
            b.wait(
                "the page loaded",
                "return document.querySelector('main .loading') === null",
            )
            .await?;
            b.screenshot(&format!("layout-{name}-{w}")).await?;
            b.assert_no_horizontal_scroll(&format!("{name} at {w}x{h}")).await?;
        }
        if w >= 1000 {
            // On a laptop the key sits on one line in the search results.
            b.open(&format!("{}/messages?key={KEY}", node.http)).await?;
            let lines = b
                .wait_value(
                    "the key in the results",
                    &format!(
                        "const e = [...document.querySelectorAll('table.results td')].find(td => td.innerText.trim() === '{KEY}'); \
                         if (!e) return null; const r = document.createRange(); r.selectNodeContents(e); \
                         return String(new Set([...r.getClientRects()].map(x => Math.round(x.top))).size)"
                    ),
                )
                .await?;
            assert_eq!(lines, serde_json::json!("1"), "the key wraps at {w}px");
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_down_is_a_sentence_and_node_back_refreshes_without_a_reload() -> anyhow::Result<()> {
    ui_built()?;
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("node");
    let mut node = Node::start(&dir, &[])?;
    let http_addr = node.http.trim_start_matches("http://").to_string();
    let broker = node.broker.clone();
    waybill(&[
        "produce",
        "--broker",
        &broker,
        "--topic",
        "orders",
        "--key",
        "order-{n}",
        "--body",
        "b {n}",
        "--count",
        "3",
    ])?;
    let b = Browser::start().await?;
    for (round, (w, h)) in SIZES.into_iter().enumerate() {
        b.viewport(w, h).await?;
        b.open(&format!("{}/messages?topic=orders", node.http)).await?;
        b.wait("the live feed", "return document.querySelector('.live.on') !== null")
            .await?;
        let rows = 3 + round;
        b.wait(
            "the messages",
            &format!("return document.querySelectorAll('table.results tbody tr').length === {rows}"),
        )
        .await?;
        b.mark_page().await?;

        node.sigkill()?;
        let said = b
            .wait_value(
                "the node-down banner",
                "return document.querySelector('.node-down')?.innerText",
            )
            .await?;
        let said = said.as_str().unwrap_or_default();
        assert!(said.contains("not answering"), "{said}");
        // Asking while it is away: a sentence, never a stack trace.
        b.c()
            .execute(
                "const i = document.querySelector('input[name=key]'); i.value = 'order-1'; \
                 i.dispatchEvent(new Event('input', {bubbles: true})); \
                 document.querySelector('form.search').requestSubmit(); return true",
                vec![],
            )
            .await?;
        let error = b
            .wait_value(
                "the search's error",
                "return document.querySelector('main .error')?.innerText",
            )
            .await?;
        let error = error.as_str().unwrap_or_default();
        assert!(
            !error.contains("wasm-function") && !error.contains("JsValue") && error.contains("did not answer"),
            "{error}"
        );
        b.screenshot(&format!("node-down-{w}")).await?;
        b.assert_no_horizontal_scroll(&format!("node down at {w}px")).await?;

        // Back on the same addresses, with one more message: the banner
        // and the error go, the answer comes, all without a reload.
        node = Node::start_at(&dir, &http_addr, &broker, &[])?;
        waybill(&[
            "produce", "--broker", &broker, "--topic", "orders", "--key", "order-1", "--body", "again",
        ])?;
        b.wait(
            "the banner gone",
            "return document.querySelector('.node-down') === null",
        )
        .await?;
        b.wait(
            "the error gone",
            "return document.querySelector('main .error') === null",
        )
        .await?;
        // order-1 itself and one "again" per round so far.
        b.wait(
            "every order-1 message",
            &format!(
                "return document.querySelectorAll('table.results tbody tr').length === {}",
                2 + round
            ),
        )
        .await?;
        b.assert_same_page().await?;
        b.screenshot(&format!("node-back-{w}")).await?;
    }
    Ok(())
}
