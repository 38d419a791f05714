//! The dashboard end to end: the real `waybill` binary serving the built
//! Leptos UI (`frontend/dist`, `cargo run -p xtask -- dashboard`), driven by
//! headless Chromium through chromedriver (WebDriver, `fantoccini`).
//!
//! Contract checked: a key search lists the messages and opens a timeline
//! with timed stages; a poison message reaches the DLQ, is listed, replayed
//! from the page with a confirmation, leaves the DLQ and is consumed —
//! seen without reloading (the live feed drives the page); every route
//! renders its empty state on a fresh node with no browser console error.
//! Each page's screenshot lands in `<target>/screenshots/`.
//!
//! Needs `/usr/bin/chromium` and `/usr/bin/chromedriver` (Debian packages
//! `chromium`, `chromium-driver`; `./scripts/test.sh` installs them).

#![allow(clippy::unwrap_used)]

#[path = "common/browser.rs"]
mod browser;
mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use browser::{ui_built, Browser, UI_TIMEOUT};
use common::Node;
use fantoccini::Locator;
use serde_json::{json, Value};

async fn produce(node: &Node, topic: &str, key: &str, body: &str) -> anyhow::Result<String> {
    let v: Value = reqwest::Client::new()
        .post(format!("{}/api/v1/topics/{topic}/messages", node.http))
        .json(&json!({"key": key, "body": body}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(v["id"].as_str().context("no id")?.to_string())
}

async fn get_json(url: &str) -> anyhow::Result<Value> {
    Ok(reqwest::get(url).await?.json().await?)
}

/// `waybill consume … --exec CMD`: fails (`false`) or succeeds (`true`).
struct Consumer(Child);

impl Consumer {
    fn start(node: &Node, group: &str, exec: &str) -> anyhow::Result<Consumer> {
        let child = Command::new(env!("CARGO_BIN_EXE_waybill"))
            .args([
                "consume",
                "--broker",
                &node.broker,
                "--topic",
                "orders",
                "--group",
                group,
            ])
            .args(["--exec", exec])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        Ok(Consumer(child))
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_messages_with_a_key_when_searching_by_key_should_list_them_and_open_a_timed_timeline(
) -> anyhow::Result<()> {
    ui_built()?;
    let tmp = tempfile::tempdir()?;
    let node = Node::start(&tmp.path().join("node"), &[])?;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(produce(&node, "orders", "order-42", &format!("hello {i}")).await?);
    }
    produce(&node, "orders", "order-7", "someone else").await?;

    let b = Browser::start().await?;
    b.open(&format!("{}/messages?key=order-42", node.http)).await?;
    b.wait(
        "three result rows",
        "return document.querySelectorAll('table.results tbody tr').length === 3",
    )
    .await?;
    let prefilled = b
        .c()
        .execute("return document.querySelector('input[name=key]').value", vec![])
        .await?;
    assert_eq!(prefilled, json!("order-42"), "?key= pre-fills the form");
    b.screenshot("messages-search").await?;

    b.click("table.results tbody tr td.id a").await?;
    b.wait(
        "the timeline",
        "return document.querySelector('ol.path li[data-stage=store] .when')?.innerText",
    )
    .await?;
    let url = b.c().current_url().await?;
    let shown = url.path().trim_start_matches("/messages/").to_string();
    assert!(ids.contains(&shown), "opened {shown}, one of {ids:?}");
    for stage in ["produce", "store", "flush"] {
        let when = b
            .wait_value(
                &format!("a time on {stage}"),
                &format!("return document.querySelector('ol.path li[data-stage={stage}] .when')?.innerText"),
            )
            .await?;
        assert!(
            when.as_str().is_some_and(|t| t.contains(':')),
            "{stage} shows a time: {when}"
        );
    }
    b.screenshot("message-timeline").await?;
    // Phone width: the path turns into a column, nothing overflows.
    b.c().set_window_size(390, 844).await?;
    let overflow = b
        .c()
        .execute(
            "return document.documentElement.scrollWidth > window.innerWidth + 1",
            vec![],
        )
        .await?;
    assert_eq!(overflow, json!(false), "the timeline overflows a phone screen");
    b.screenshot("message-timeline-phone").await?;
    b.c().set_window_size(1280, 1000).await?;
    // A deep link survives a reload.
    b.c().refresh().await?;
    b.wait(
        "the timeline after reload",
        "return document.querySelector('ol.path li[data-stage=store] .when')?.innerText",
    )
    .await?;
    assert_eq!(b.console_errors().await?, Vec::<String>::new());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_poison_message_when_replayed_from_the_dlq_page_should_leave_the_dlq_and_be_consumed_live(
) -> anyhow::Result<()> {
    ui_built()?;
    let tmp = tempfile::tempdir()?;
    let node = Node::start(
        &tmp.path().join("node"),
        &["--retry-delays", "10ms,10ms", "--max-reconsume-times", "1"],
    )?;
    let poison = produce(&node, "orders", "poison-9", "this handler always fails").await?;

    // A failing handler: every attempt fails, the message is dead-lettered.
    let failing = Consumer::start(&node, "billing", "false")?;
    let dlq_url = format!("{}/api/v1/dlq?group=billing", node.http);
    let deadline = Instant::now() + UI_TIMEOUT;
    while get_json(&dlq_url).await?["messages"]
        .as_array()
        .is_none_or(|m| m.is_empty())
    {
        anyhow::ensure!(Instant::now() < deadline, "the poison message never reached the DLQ");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(failing);
    // Messages after the fault: waiting for the fixed handler (lag).
    produce(&node, "orders", "order-1", "fine").await?;
    produce(&node, "orders", "order-2", "fine too").await?;

    let b = Browser::start().await?;
    // Every page with data, for the record (README screenshots).
    b.open(&format!("{}/", node.http)).await?;
    b.wait("the overview numbers", "return document.querySelector('.card .big')?.innerText !== '–' && document.querySelectorAll('main .loading').length === 0").await?;
    b.wait("the dead-letter count", "return [...document.querySelectorAll('.card')].some(c => c.innerText.toLowerCase().includes('dead letters') && c.querySelector('.big').innerText === '1')").await?;
    b.screenshot("overview").await?;
    b.open(&format!("{}/messages/{poison}", node.http)).await?;
    b.wait(
        "the DLQ move on the timeline",
        "return document.querySelector('tr[data-stage=dlq]')",
    )
    .await?;
    b.screenshot("timeline-dead").await?;
    b.open(&format!("{}/consumers", node.http)).await?;
    b.wait("the group", "return document.querySelector('section.group')")
        .await?;
    b.screenshot("consumers").await?;
    b.open(&format!("{}/cluster", node.http)).await?;
    b.wait("the members", "return document.querySelector('main table')")
        .await?;
    b.screenshot("cluster").await?;

    b.open(&format!("{}/dlq?group=billing", node.http)).await?;
    let row = format!("table.dlq tbody tr[data-origin=\"{poison}\"]");
    b.wait(
        "the dead letter",
        &format!("return document.querySelector(`{row} button.replay`)"),
    )
    .await?;
    let listed = b
        .c()
        .execute(&format!("return document.querySelector(`{row}`).innerText"), vec![])
        .await?;
    assert!(
        listed
            .as_str()
            .is_some_and(|t| t.contains(&poison) && t.contains("poison-9")),
        "the row names the message: {listed}"
    );
    b.screenshot("dlq").await?;

    // The handler is fixed: replay from the page, confirm, watch.
    let _fixed = Consumer::start(&node, "billing", "true")?;
    b.mark_page().await?;
    b.click(&format!("{row} button.replay")).await?;
    b.c().accept_alert().await?;
    b.wait(
        "the row to leave the DLQ",
        "return document.querySelector('table.dlq') === null && document.querySelector('main .empty')",
    )
    .await?;
    b.wait(
        "the replay's outcome",
        "return document.querySelector('.replays [data-outcome=consumed]')",
    )
    .await?;
    b.screenshot("dlq-replayed").await?;
    b.assert_same_page().await?;

    // Into the timeline without a reload: the replay and the consumption.
    b.click(".replays a").await?;
    b.wait(
        "the replay on the timeline",
        "return document.querySelector('tr[data-stage=replay]')",
    )
    .await?;
    b.wait(
        "the consumption on the timeline",
        "return document.querySelector('ol.path li[data-stage=consume].done')",
    )
    .await?;
    b.assert_same_page().await?;
    b.screenshot("timeline-replayed").await?;
    // Every message of the run, with the statuses they ended in.
    b.open(&format!("{}/messages", node.http)).await?;
    b.wait(
        "the consumed messages",
        "return document.querySelectorAll('table.results .st-ok').length >= 3",
    )
    .await?;
    b.screenshot("messages-all").await?;
    let api = get_json(&format!("{}/api/v1/messages/{poison}", node.http)).await?;
    assert_eq!(api["groups"][0]["status"], json!("consumed"), "{api}");
    assert_eq!(b.console_errors().await?, Vec::<String>::new());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_fresh_node_each_page_should_render_its_empty_state_without_console_errors() -> anyhow::Result<()> {
    ui_built()?;
    let tmp = tempfile::tempdir()?;
    let node = Node::start(&tmp.path().join("node"), &[])?;

    // Deep links are the UI; unknown API paths stay JSON 404s.
    let deep = reqwest::get(format!("{}/messages/whatever", node.http)).await?;
    assert_eq!(deep.status(), 200);
    assert!(deep.text().await?.contains("waybill_dashboard.js"));
    let api = reqwest::get(format!("{}/api/v1/nope", node.http)).await?;
    assert_eq!(api.status(), 404);
    assert!(api.json::<Value>().await?["error"].is_string());

    let b = Browser::start().await?;
    let pages = [
        ("/", "empty-overview"),
        ("/messages", "empty-messages"),
        ("/messages/0001000000010000000000000000", "empty-timeline"),
        ("/dlq", "empty-dlq"),
        ("/consumers", "empty-consumers"),
        ("/cluster", "empty-cluster"),
        ("/matrix", "empty-matrix"),
    ];
    for (path, shot) in pages {
        b.open(&format!("{}{path}", node.http)).await?;
        b.wait(
            &format!("{path} to finish loading"),
            "return document.querySelectorAll('main .loading').length === 0 && (document.querySelector('main .empty') || document.querySelector('main table'))",
        )
        .await?;
        let errors = b
            .c()
            .execute(
                "return [...document.querySelectorAll('main .error')].map(e => e.innerText)",
                vec![],
            )
            .await?;
        assert_eq!(errors, json!([]), "{path} shows an error");
        assert_eq!(
            b.console_errors().await?,
            Vec::<String>::new(),
            "console errors on {path}"
        );
        b.screenshot(shot).await?;
    }
    // The empty search suggests a command that works against this node.
    b.open(&format!("{}/messages?key=none-such", node.http)).await?;
    let hint = b
        .wait_value(
            "the empty search's hint",
            "const e = document.querySelector('main .empty code'); return e && e.innerText",
        )
        .await?;
    let hint = hint.as_str().unwrap_or_default();
    assert!(
        hint.contains(&format!("{}/api/v1/topics/orders/messages", node.http)),
        "{hint}"
    );
    assert!(hint.contains("content-type: application/json"), "{hint}");
    // No stale "off" text about transactional messages, which exist.
    b.open(&format!("{}/consumers", node.http)).await?;
    let tx = b
        .wait_value(
            "the half-message panel",
            "const e = document.querySelector('#tx-h'); return e && e.parentElement.innerText",
        )
        .await?;
    assert!(
        tx.as_str()
            .unwrap_or_default()
            .contains("Transactional (half) messages are on"),
        "{tx}"
    );
    // Keyboard: the first Tab lands on the skip link, Enter moves focus to main.
    b.open(&format!("{}/", node.http)).await?;
    let skip = b
        .c()
        .execute(
            "document.querySelector('.skip').focus(); return document.activeElement.innerText",
            vec![],
        )
        .await?;
    assert_eq!(skip, json!("Skip to content"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_an_auth_token_the_dashboard_asks_for_it_once_and_then_searches_and_streams() -> anyhow::Result<()> {
    ui_built()?;
    let tmp = tempfile::tempdir()?;
    let node = Node::start(&tmp.path().join("node"), &["--auth-token", "s3cr/t token"])?;
    let id: String = {
        let v: Value = reqwest::Client::new()
            .post(format!("{}/api/v1/topics/orders/messages", node.http))
            .bearer_auth("s3cr/t token")
            .json(&json!({"key": "order-9", "body": "locked"}))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        v["id"].as_str().context("no id")?.to_string()
    };

    let b = Browser::start().await?;
    b.open(&format!("{}/messages?key=order-9", node.http)).await?;
    b.wait(
        "the token prompt",
        "return document.querySelector('form.token input#token') !== null",
    )
    .await?;
    b.screenshot("token-prompt").await?;
    b.c()
        .find(Locator::Css("form.token input#token"))
        .await?
        .send_keys("s3cr/t token")
        .await?;
    b.click("form.token button[type=submit]").await?;
    b.wait(
        "the search result after the token",
        &format!(
            "return [...document.querySelectorAll('table.results td.id')].some(td => td.innerText.includes('{id}'))"
        ),
    )
    .await?;
    // The live feed carries the token too: it connects.
    b.wait("the live feed", "return document.querySelector('.live.on') !== null")
        .await?;
    let prompt = b
        .c()
        .execute("return document.querySelector('form.token') === null", vec![])
        .await?;
    assert_eq!(prompt, json!(true), "no prompt once the token works");
    Ok(())
}

/// The DLQ page's redrive: filter by reason, replay all matching as a job,
/// watch it reach 100 % and each letter become `consumed` without a
/// reload; a second click on the start button starts no second job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_dead_letters_a_redrive_job_from_the_dlq_page_reaches_100_percent_and_each_letter_is_consumed(
) -> anyhow::Result<()> {
    ui_built()?;
    let tmp = tempfile::tempdir()?;
    let node = Node::start(
        &tmp.path().join("node"),
        &["--retry-delays", "10ms", "--max-reconsume-times", "0"],
    )?;
    for i in 1..=4 {
        produce(&node, "orders", &format!("pay-{i}"), "pay order").await?;
    }
    for i in 1..=2 {
        produce(&node, "orders", &format!("ship-{i}"), "ship order").await?;
    }
    // Two kinds of failure, told apart by the script's stderr.
    let failing = Consumer::start(
        &node,
        "billing",
        "read -r b; case \"$b\" in ship*) echo 'label printer offline' >&2;; *) echo 'card declined' >&2;; esac; exit 1",
    )?;
    let dlq_url = format!("{}/api/v1/dlq?group=billing", node.http);
    let deadline = Instant::now() + UI_TIMEOUT;
    while get_json(&dlq_url).await?["messages"].as_array().map_or(0, Vec::len) < 6 {
        anyhow::ensure!(Instant::now() < deadline, "the messages never reached the DLQ");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(failing);
    let _fixed = Consumer::start(&node, "billing", "true")?;

    let b = Browser::start().await?;
    b.open(&format!("{}/dlq?group=billing", node.http)).await?;
    b.wait(
        "the dead letters",
        "return document.querySelectorAll('table.dlq tbody tr').length === 6",
    )
    .await?;
    b.c()
        .find(Locator::Css("input[name=reason]"))
        .await?
        .send_keys("card declined")
        .await?;
    b.mark_page().await?;
    b.click("button.start-job").await?;
    b.c().accept_alert().await?;
    // A second click: the button is disabled while the job runs (and the
    // node would refuse a second running job anyway).
    let _ = b.click("button.start-job").await;
    let _ = b.c().accept_alert().await;
    b.wait(
        "the job at 100 % with every letter consumed",
        "const rows = [...document.querySelectorAll('table.job-letters tbody tr')]; \
         return document.querySelector('section.job[data-pct=\"100\"]') && rows.length === 4 \
           && rows.every(r => r.dataset.outcome === 'consumed')",
    )
    .await?;
    b.screenshot("dlq-job").await?;
    b.assert_same_page().await?;

    let jobs = get_json(&format!("{}/api/v1/dlq/jobs?group=billing", node.http)).await?;
    let jobs = jobs["jobs"].as_array().cloned().unwrap_or_default();
    assert_eq!(jobs.len(), 1, "one job however often the button is clicked: {jobs:?}");
    assert_eq!(jobs[0]["matched"], 4, "only the letters whose reason matched");
    let letters = get_json(&dlq_url).await?;
    let still_dead: Vec<&str> = letters["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|d| d["state"] == "dead")
        .filter_map(|d| d["key"].as_str())
        .collect();
    assert_eq!(still_dead.len(), 2, "{still_dead:?}");
    assert!(still_dead.iter().all(|k| k.starts_with("ship-")), "{still_dead:?}");
    assert_eq!(b.console_errors().await?, Vec::<String>::new());
    Ok(())
}

/// A dead message's timeline shows the DLQ step in red with Replay right
/// there; the DLQ page previews bodies, replays an edited copy and
/// discards with a reason (the browser's prompts answered), all without a
/// reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_dead_letters_the_timeline_replays_in_place_and_the_dlq_page_edits_and_discards() -> anyhow::Result<()> {
    ui_built()?;
    let tmp = tempfile::tempdir()?;
    let node = Node::start(
        &tmp.path().join("node"),
        &["--retry-delays", "10ms", "--max-reconsume-times", "0"],
    )?;
    let here = produce(&node, "orders", "here-1", "replay me from the timeline").await?;
    produce(&node, "orders", "edit-1", "{\"amount\": \"ten\"}").await?;
    produce(&node, "orders", "drop-1", "a duplicate, fixed by hand").await?;
    let failing = Consumer::start(&node, "billing", "false")?;
    let dlq_url = format!("{}/api/v1/dlq?group=billing", node.http);
    let deadline = Instant::now() + UI_TIMEOUT;
    while get_json(&dlq_url).await?["messages"].as_array().map_or(0, Vec::len) < 3 {
        anyhow::ensure!(Instant::now() < deadline, "the messages never reached the DLQ");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(failing);

    let b = Browser::start().await?;
    b.open(&format!("{}/messages/{here}", node.http)).await?;
    b.wait(
        "the red dead-letter step",
        "return document.querySelector('ol.path li.step.lost[data-stage=dlq] button.replay-here')",
    )
    .await?;
    b.screenshot("timeline-dead-step").await?;
    b.mark_page().await?;
    b.click("ol.path li[data-stage=dlq] button.replay-here").await?;
    b.c().accept_alert().await?;
    b.wait(
        "the replay said in a sentence",
        "return document.querySelector('ol.path li[data-stage=dlq] .notice.ok')?.innerText.startsWith('Replayed to billing as')",
    )
    .await?;
    b.assert_same_page().await?;

    b.open(&format!("{}/dlq?group=billing", node.http)).await?;
    b.wait(
        "the two letters left, with body previews",
        "const r = [...document.querySelectorAll('table.dlq tbody tr')]; \
         return r.length === 2 && r.some(t => t.querySelector('td.body-preview')?.innerText.includes('amount'))",
    )
    .await?;
    b.mark_page().await?;
    // Edit & replay: the prompt shows the body; a fixed one goes instead.
    b.click("table.dlq tbody tr:has(td.body-preview[title*=amount]) button.edit-replay")
        .await?;
    b.c().send_alert_text("{\"amount\": 10}").await?;
    b.c().accept_alert().await?;
    b.wait(
        "the edited replay",
        "return document.querySelector('.notice.ok')?.innerText.startsWith('Replayed an edited copy')",
    )
    .await?;
    // Discard with a reason.
    b.click("table.dlq tbody tr:has(td.body-preview[title*=duplicate]) button.discard")
        .await?;
    b.c().send_alert_text("duplicate of order 7, fixed by hand").await?;
    b.c().accept_alert().await?;
    b.wait(
        "the DLQ emptied",
        "return document.querySelector('table.dlq') === null && document.querySelector('main .empty')",
    )
    .await?;
    b.assert_same_page().await?;
    b.screenshot("dlq-edited-discarded").await?;

    let letters = get_json(&dlq_url).await?;
    let by_key = |k: &str| {
        letters["messages"]
            .as_array()
            .and_then(|m| m.iter().find(|d| d["key"] == k).cloned())
            .unwrap_or_default()
    };
    assert_eq!(by_key("here-1")["state"], "replayed");
    let edited = by_key("edit-1");
    assert_eq!(edited["state"], "replayed");
    assert_eq!(
        edited["body"], "{\"amount\": \"ten\"}",
        "the letter itself is unchanged"
    );
    assert_eq!(edited["replays"][0]["edited"], json!(["body"]));
    assert_eq!(by_key("drop-1")["state"], "discarded");
    assert_eq!(b.console_errors().await?, Vec::<String>::new());
    Ok(())
}
