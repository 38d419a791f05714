//! The dashboard's `/matrix` end to end: a real `waybill matrix` run kept
//! in a node's data dir, shown by that node's dashboard in headless
//! Chromium; a lost message's link opens its timeline.
//!
//! The run uses members broken on purpose (they acknowledge sync-flush
//! sends before any fsync, the hidden switch the checker's own test uses),
//! so the power cut surely loses acknowledged messages to link to. The
//! lost message's timeline shows no delivery made after its queue offset
//! was reused by the next boot.

#[path = "common/browser.rs"]
mod browser;
mod common;

use std::process::Command;

use browser::{ui_built, Browser};
use common::Node;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_finished_matrix_run_the_page_shows_its_table_and_a_lost_message_opens_its_timeline(
) -> anyhow::Result<()> {
    ui_built()?;
    let tmp = tempfile::tempdir()?;
    let data = tmp.path().join("node");
    let node = Node::start(&data, &[])?;
    let out = Command::new(env!("CARGO_BIN_EXE_waybill"))
        .args([
            "matrix",
            "--quick",
            "--modes",
            "sync/none",
            "--faults",
            "kill,power-loss",
        ])
        .arg("--unsafe-ack-before-fsync")
        .arg("--data-dir")
        .arg(&data)
        .output()?;
    assert!(!out.status.success(), "the broken members must fail the run");
    let run: Value = reqwest::get(format!("{}/api/v1/matrix", node.http))
        .await?
        .json()
        .await?;
    let cut = run["rows"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["fault"] == "power-loss"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(cut["verdict"], "fail", "{cut}");
    let lost_id = cut["lost_messages"][0]["id"].as_str().unwrap_or_default().to_string();
    assert_eq!(lost_id.len(), 28, "{cut}");

    let b = Browser::start().await?;
    b.open(&format!("{}/matrix", node.http)).await?;
    b.wait(
        "the run's table",
        "return document.querySelector('[data-run=\"sync/none/power-loss\"]') !== null",
    )
    .await?;
    let text = b
        .c()
        .execute("return document.querySelector('main').innerText", vec![])
        .await?;
    let text = text.as_str().unwrap_or_default().to_string();
    for want in [
        "promise broken",
        "kill",
        "power-loss",
        "acknowledged message(s) lost",
        &lost_id,
    ] {
        assert!(text.contains(want), "/matrix lacks {want:?}:\n{text}");
    }
    assert_eq!(b.console_errors().await?, Vec::<String>::new());
    b.screenshot("matrix-run").await?;

    b.click(&format!("a[href=\"/matrix/messages/{lost_id}\"]")).await?;
    b.wait(
        "the lost message's timeline",
        "return document.querySelector('ol.path') !== null && document.querySelector('[data-testid=lost-run]') !== null",
    )
    .await?;
    let page = b
        .c()
        .execute("return document.querySelector('main').innerText", vec![])
        .await?;
    let page = page.as_str().unwrap_or_default().to_string();
    assert!(page.contains(&lost_id), "{page}");
    assert!(page.contains("power-loss"), "{page}");
    assert!(page.contains("the audit named it lost at"), "{page}");
    // The checker read the log back as group matrix-check after the restart,
    // at offsets the lost messages had given up: not deliveries of this one.
    assert!(!page.contains("matrix-check"), "{page}");
    let lost_step = b
        .c()
        .execute("return document.querySelectorAll('ol.path .step.lost').length", vec![])
        .await?;
    assert_eq!(lost_step, json!(1), "the loss is drawn on its step:\n{page}");
    b.screenshot("matrix-lost-message").await?;
    Ok(())
}
