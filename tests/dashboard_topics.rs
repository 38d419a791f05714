//! The topics pages in headless Chromium, on a laptop (1366×900) and a
//! phone (390×844): after a known workload `/topics` lists the three
//! topics with their exact message counts; a topic created from the form
//! is listed; a message sent from `/produce` answers SEND_OK with its id,
//! whose link opens the timeline at the stored step; and `/topics`,
//! `/topics/{t}` and `/produce` never scroll sideways on the phone.

#[path = "common/browser.rs"]
mod browser;
mod common;

use browser::{ui_built, Browser};
use common::Node;
use serde_json::json;

/// Sends `n` keyed messages to `topic` over HTTP.
async fn produce(node: &Node, topic: &str, n: usize) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    for i in 0..n {
        let r: serde_json::Value = http
            .post(format!("{}/api/v1/topics/{topic}/messages", node.http))
            .json(&json!({ "key": format!("{topic}-{i}"), "body": format!("{topic} {i}") }))
            .send()
            .await?
            .json()
            .await?;
        anyhow::ensure!(r["status"] == "SEND_OK", "{r}");
    }
    Ok(())
}

/// Sets form fields by CSS selector (as input/change events, so the page's
/// signals see them).
async fn fill(b: &Browser, fields: &[(&str, &str)]) -> anyhow::Result<()> {
    for (css, value) in fields {
        b.c()
            .execute(
                "const i = document.querySelector(arguments[0]); i.value = arguments[1]; \
                 i.dispatchEvent(new Event('input', {bubbles: true})); \
                 i.dispatchEvent(new Event('change', {bubbles: true})); return true",
                vec![json!(css), json!(value)],
            )
            .await?;
    }
    Ok(())
}

async fn submit(b: &Browser, form: &str) -> anyhow::Result<()> {
    // The form's own submit (a click can land on the sticky header).
    b.c()
        .execute(
            "document.querySelector(arguments[0]).requestSubmit(); return true",
            vec![json!(form)],
        )
        .await?;
    Ok(())
}

/// `{topic: messages}` as the /topics table shows them.
const COUNTS: &str = "return Object.fromEntries([...document.querySelectorAll('table.topics tbody tr')]
    .map(r => [r.dataset.topic, r.querySelector('td.messages').innerText.trim()]))";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_known_workload_the_topics_pages_count_create_produce_and_fit_a_phone() -> anyhow::Result<()> {
    ui_built()?;
    let tmp = tempfile::tempdir()?;
    let node = Node::start(&tmp.path().join("node"), &[])?;
    produce(&node, "alpha", 30).await?;
    produce(&node, "beta", 20).await?;
    produce(&node, "gamma", 10).await?;

    let b = Browser::start().await?;
    for (round, (w, h, made)) in [(1366, 900, "made-wide"), (390, 844, "made-phone")]
        .into_iter()
        .enumerate()
    {
        b.viewport(w, h).await?;
        b.open(&format!("{}/topics", node.http)).await?;
        b.wait(
            "the topic table",
            "return document.querySelectorAll('table.topics tbody tr').length >= 3",
        )
        .await?;
        let counts = b.wait_value("the counts", COUNTS).await?;
        // Each round sends one more message to gamma from the produce page.
        let gamma = (10 + round).to_string();
        for (t, n) in [("alpha", "30"), ("beta", "20"), ("gamma", gamma.as_str())] {
            assert_eq!(counts[t], n, "{w}px: {counts}");
        }

        // Create from the form: listed with its queues.
        fill(
            &b,
            &[
                ("form.create-topic input[name=topic]", made),
                ("form.create-topic input[name=queues]", "3"),
            ],
        )
        .await?;
        submit(&b, "form.create-topic").await?;
        let queues = b
            .wait_value(
                "the created topic listed",
                &format!("return document.querySelector('tr[data-topic=\"{made}\"] td.queues')?.innerText"),
            )
            .await?;
        assert_eq!(queues, json!("3"), "{w}px");
        if w == 390 {
            b.assert_no_horizontal_scroll("/topics at 390px").await?;
        }

        // One topic: header, queues, the newest page of its messages.
        b.open(&format!("{}/topics/alpha", node.http)).await?;
        b.wait(
            "the message browser",
            "return document.querySelectorAll('table.browse tbody tr').length === 20",
        )
        .await?;
        b.wait(
            "the queue table",
            "return document.querySelectorAll('table.queues tbody tr').length === 4",
        )
        .await?;
        let first_key = b
            .wait_value(
                "the newest row",
                "return document.querySelector('table.browse tbody tr td.key')?.innerText",
            )
            .await?;
        assert_eq!(first_key, json!("alpha-29"), "newest first");
        assert!(
            b.c()
                .execute("return document.querySelector('section.topic-charts') !== null", vec![])
                .await?
                == json!(true)
        );
        if w == 390 {
            b.assert_no_horizontal_scroll("/topics/alpha at 390px").await?;
        }

        // Produce: SEND_OK with the id, whose link opens the timeline.
        b.open(&format!("{}/produce", node.http)).await?;
        b.wait(
            "the topic choices",
            "return [...document.querySelectorAll('select[name=topic] option')].some(o => o.value === 'gamma')",
        )
        .await?;
        fill(
            &b,
            &[
                ("select[name=topic]", "gamma"),
                ("input[name=key]", "from-the-page"),
                ("textarea[name=properties]", "region=eu"),
                ("textarea[name=body]", "{\"hello\": 1}"),
            ],
        )
        .await?;
        b.c()
            .execute(
                "const c = document.querySelector('input[name=json]'); c.checked = true; \
                 c.dispatchEvent(new Event('change', {bubbles: true})); return true",
                vec![],
            )
            .await?;
        submit(&b, "form.produce").await?;
        let status = b
            .wait_value(
                "the send result",
                "return document.querySelector('.send-result [data-status]')?.innerText",
            )
            .await?;
        assert_eq!(status, json!("SEND_OK"), "{w}px");
        if w == 390 {
            b.assert_no_horizontal_scroll("/produce at 390px").await?;
        }
        b.click("a.sent-id").await?;
        b.wait(
            "the timeline at the stored step",
            "return document.querySelector('ol.path li[data-stage=store].done') !== null",
        )
        .await?;
        let facts = b
            .wait_value(
                "the timeline header",
                "return document.querySelector('p.facts-line')?.innerText",
            )
            .await?;
        assert!(
            facts
                .as_str()
                .is_some_and(|f| f.contains("gamma") && f.contains("from-the-page")),
            "{facts}"
        );
    }
    // Both sends landed in gamma.
    let v = common::get_json(format!("{}/api/v1/topics/gamma", node.http)).await?;
    assert_eq!(v["messages"], 12);
    Ok(())
}
