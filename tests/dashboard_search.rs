//! The dashboard's search says what it covered, in headless Chromium: a
//! page of 100 of 120 matches says "so far" with how far back it looked and
//! "Load more" appends the rest until it says "every match"; the tag field
//! searches by tag; a malformed id is named beside its field and not sent;
//! with the node gone the error is a sentence, not a wasm stack trace. The
//! paging runs at 390 × 844 (no horizontal scroll) and at 1366 × 900.

#[path = "common/browser.rs"]
mod browser;
mod common;

use std::process::Command;

use browser::{ui_built, Browser};
use common::Node;

/// Types `fields` into the search form (as input events, so the page's
/// signals see them) and submits it.
async fn search(b: &Browser, fields: &[(&str, &str)]) -> anyhow::Result<()> {
    for (name, value) in fields {
        b.c()
            .execute(
                "const i = document.querySelector(`input[name=${arguments[0]}]`); i.value = arguments[1]; \
                 i.dispatchEvent(new Event('input', {bubbles: true})); return true",
                vec![serde_json::json!(name), serde_json::json!(value)],
            )
            .await?;
    }
    // The form's own submit (a click can land on the sticky header).
    b.c()
        .execute(
            "document.querySelector('form.search').requestSubmit(); return true",
            vec![],
        )
        .await?;
    Ok(())
}

const ROWS: &str = "return document.querySelectorAll('table.results tbody tr').length";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_more_matches_than_a_page_search_says_so_loads_more_and_names_bad_input() -> anyhow::Result<()> {
    ui_built()?;
    let tmp = tempfile::tempdir()?;
    let mut node = Node::start(&tmp.path().join("node"), &[])?;
    let out = Command::new(env!("CARGO_BIN_EXE_waybill"))
        .args([
            "produce",
            "--broker",
            &node.broker,
            "--topic",
            "orders",
            "--key",
            "order-{n}",
        ])
        .args(["--body", "paid {n}", "--tag", "paid", "--count", "120"])
        .output()?;
    anyhow::ensure!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = Command::new(env!("CARGO_BIN_EXE_waybill"))
        .args([
            "produce",
            "--broker",
            &node.broker,
            "--topic",
            "orders",
            "--key",
            "refund-1",
            "--body",
            "r",
        ])
        .args(["--tag", "refund"])
        .output()?;
    anyhow::ensure!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let b = Browser::start().await?;
    // On a phone first: the same paging, and no horizontal scroll.
    b.viewport(390, 844).await?;
    b.open(&format!("{}/messages?tag=paid", node.http)).await?;
    b.wait("a full first page on a phone", &format!("{ROWS} === 100"))
        .await?;
    b.click("button.more").await?;
    b.wait("the rest appended on a phone", &format!("{ROWS} === 120"))
        .await?;
    b.wait(
        "the search complete on a phone",
        "return document.querySelector('p.coverage')?.innerText.includes('every match')",
    )
    .await?;
    b.screenshot("search-complete-390").await?;
    b.assert_no_horizontal_scroll("search at 390x844").await?;

    b.viewport(1366, 900).await?;
    b.open(&format!("{}/messages?tag=paid", node.http)).await?;
    b.wait("a full first page", &format!("{ROWS} === 100")).await?;
    let coverage = b
        .wait_value(
            "the coverage line",
            "return document.querySelector('p.coverage')?.innerText",
        )
        .await?;
    let coverage = coverage.as_str().unwrap_or_default();
    assert!(
        coverage.contains("100 message(s) so far")
            && coverage.contains("scanned back to")
            && coverage.contains("Load more"),
        "{coverage}"
    );
    b.click("button.more").await?;
    b.wait("the rest appended", &format!("{ROWS} === 120")).await?;
    let coverage = b
        .wait_value(
            "the search complete",
            "const t = document.querySelector('p.coverage')?.innerText; return t && t.includes('every match') ? t : null",
        )
        .await?;
    assert!(
        coverage.as_str().is_some_and(|t| t.contains("120 message(s)")),
        "{coverage}"
    );
    let tags_ok = b
        .c()
        .execute(
            "return [...document.querySelectorAll('table.results tbody tr')].every(r => r.innerText.includes('order-'))",
            vec![],
        )
        .await?;
    assert_eq!(tags_ok, serde_json::json!(true), "tag=paid lists no refund");
    b.screenshot("search-complete").await?;

    // A malformed id: named beside the field, the URL does not change.
    let before = b.c().current_url().await?;
    search(&b, &[("id", "zzz")]).await?;
    let why = b
        .wait_value(
            "the id's error",
            "return document.querySelector('label .field-error')?.innerText",
        )
        .await?;
    assert!(why.as_str().is_some_and(|t| t.contains("not a message id")), "{why}");
    assert_eq!(b.c().current_url().await?, before, "a bad id was sent");

    // The message viewer: tags, queue/offset, born and stored times in the
    // header; a JSON body pretty-printed.
    let out = Command::new(env!("CARGO_BIN_EXE_waybill"))
        .args([
            "produce",
            "--broker",
            &node.broker,
            "--topic",
            "orders",
            "--key",
            "order-json",
        ])
        .args(["--tag", "paid", "--body", r#"{"order":7,"items":[1,2]}"#])
        .output()?;
    anyhow::ensure!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let sent: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let id = sent["id"].as_str().unwrap_or_default();
    b.open(&format!("{}/messages/{id}", node.http)).await?;
    let facts = b
        .wait_value("the header", "return document.querySelector('p.facts-line')?.innerText")
        .await?;
    // The line lays its parts out as boxes: compare words, not layout.
    let facts = facts
        .as_str()
        .unwrap_or_default()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    for want in ["tags paid", "queue ", "offset ", "born ", "stored "] {
        assert!(facts.contains(want), "{want:?} missing from {facts:?}");
    }
    let body = b
        .wait_value(
            "the JSON body",
            "return document.querySelector('pre.body[data-json]')?.innerText",
        )
        .await?;
    assert!(body.as_str().is_some_and(|t| t.contains("\n  \"items\": [")), "{body}");
    b.open(&format!("{}/messages?key=order-7", node.http)).await?;

    // The node goes away: the next search fails in a sentence.
    node.sigkill()?;
    search(&b, &[("id", ""), ("key", "order-7")]).await?;
    let err = b
        .wait_value("the error", "return document.querySelector('main p.error')?.innerText")
        .await?;
    let err = err.as_str().unwrap_or_default();
    assert!(err.contains("the node did not answer"), "{err}");
    assert!(!err.contains("wasm-function") && !err.contains("JsValue"), "{err}");
    Ok(())
}
