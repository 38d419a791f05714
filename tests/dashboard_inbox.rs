//! The dashboard's `/consumers` for a group with an inbox, in headless
//! Chromium: a real `waybill consume --dedupe` run suppresses one duplicate
//! (two messages with one key); the page then shows the group idempotent
//! with its backend and window, the suppressed count in the group and in
//! the duplicates panel, and a plain group beside it as not idempotent.

#[path = "common/browser.rs"]
mod browser;
mod common;

use std::process::Command;

use browser::{ui_built, Browser};
use common::Node;

fn waybill(args: &[&str]) -> anyhow::Result<std::process::Output> {
    Ok(Command::new(env!("CARGO_BIN_EXE_waybill")).args(args).output()?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_an_inbox_group_the_consumers_page_shows_it_idempotent_with_its_suppressed_duplicates(
) -> anyhow::Result<()> {
    ui_built()?;
    let tmp = tempfile::tempdir()?;
    let node = Node::start(&tmp.path().join("node"), &[])?;
    let b = node.broker.as_str();
    for body in ["first", "again"] {
        let out = waybill(&[
            "produce", "--broker", b, "--topic", "parcels", "--key", "parcel-1", "--body", body,
        ])?;
        anyhow::ensure!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let db = format!("sqlite://{}", tmp.path().join("inbox.db").display());
    for (group, dedupe) in [("shipping", Some(db.as_str())), ("audit", None)] {
        let mut args = vec![
            "consume", "--broker", b, "--topic", "parcels", "--group", group, "--count", "2",
        ];
        args.extend(["--idle-exit-ms", "5000"]);
        if let Some(url) = dedupe {
            args.extend(["--dedupe", url, "--dedupe-window-ms", "3600000"]);
        }
        let out = waybill(&args)?;
        anyhow::ensure!(
            out.status.success(),
            "{group}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let br = Browser::start().await?;
    br.open(&format!("{}/consumers", node.http)).await?;
    let shipping = "[...document.querySelectorAll('section.group')].find(s => s.innerText.includes('shipping'))";
    let text = br
        .wait_value(
            "the shipping group's inbox",
            &format!("return {shipping}?.querySelector('p.inbox')?.innerText"),
        )
        .await?;
    let text = text.as_str().unwrap_or_default().to_string();
    assert!(text.contains("idempotent"), "{text}");
    assert!(text.contains("inbox on sqlite, keys kept 1h"), "{text}");
    assert!(text.contains("duplicates suppressed 1"), "{text}");
    let audit = br
        .wait_value(
            "the audit group's inbox line",
            "return [...document.querySelectorAll('section.group')].find(s => s.innerText.includes('audit'))?.querySelector('p.inbox')?.innerText",
        )
        .await?;
    assert!(audit.as_str().is_some_and(|t| t.contains("not idempotent")), "{audit}");
    let panel = br
        .wait_value(
            "the suppressed table",
            "return [...document.querySelectorAll('table.suppressed tbody tr')].map(r => r.innerText).join('|') || null",
        )
        .await?;
    assert!(
        panel
            .as_str()
            .is_some_and(|t| t.contains("shipping") && t.contains('1')),
        "{panel}"
    );
    br.screenshot("consumers-inbox").await?;
    assert_eq!(br.console_errors().await?, Vec::<String>::new());
    Ok(())
}
