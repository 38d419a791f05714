//! Topics over HTTP and the `waybill topic` command: exact counts after a
//! known workload, create (with its queue count, durable), delete (refused
//! while a group lags, hidden after, durable), and browsing newest first.

#[path = "common/mod.rs"]
mod common;

use std::collections::BTreeSet;
use std::process::{Command, Output, Stdio};

use common::{get_json, Node};
use serde_json::{json, Value};

fn waybill(args: &[&str]) -> anyhow::Result<Output> {
    Ok(Command::new(env!("CARGO_BIN_EXE_waybill"))
        .args(args)
        .stdin(Stdio::null())
        .output()?)
}

/// Sends `n` messages to `topic` over HTTP, keyed `{topic}-{i}` when
/// `keyed`; returns their ids in send order.
async fn produce(node: &Node, topic: &str, n: usize, keyed: bool) -> anyhow::Result<Vec<String>> {
    let http = reqwest::Client::new();
    let mut ids = Vec::new();
    for i in 0..n {
        let mut body = json!({ "body": format!("{topic} message {i}") });
        if keyed {
            body["key"] = json!(format!("{topic}-{i}"));
        }
        let r: Value = http
            .post(format!("{}/api/v1/topics/{topic}/messages", node.http))
            .json(&body)
            .send()
            .await?
            .json()
            .await?;
        anyhow::ensure!(r["status"] == "SEND_OK", "send failed: {r}");
        ids.push(r["id"].as_str().unwrap_or_default().to_string());
    }
    Ok(ids)
}

/// `(status, body)` of a request.
async fn call(req: reqwest::RequestBuilder) -> anyhow::Result<(u16, Value)> {
    let r = req.send().await?;
    let status = r.status().as_u16();
    Ok((status, r.json().await?))
}

async fn create(node: &Node, body: Value) -> anyhow::Result<(u16, Value)> {
    call(
        reqwest::Client::new()
            .post(format!("{}/api/v1/topics", node.http))
            .header("x-waybill-user", "alice")
            .json(&body),
    )
    .await
}

async fn delete(node: &Node, topic: &str, force: bool) -> anyhow::Result<(u16, Value)> {
    let q = if force { "?force=true" } else { "" };
    call(
        reqwest::Client::new()
            .delete(format!("{}/api/v1/topics/{topic}{q}", node.http))
            .header("x-waybill-user", "bob"),
    )
    .await
}

/// `(topic, messages, queues)` of each listed topic, in list order.
async fn listed(node: &Node) -> anyhow::Result<Vec<(String, u64, u64)>> {
    let v = get_json(format!("{}/api/v1/topics", node.http)).await?;
    Ok(v["topics"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|t| {
            (
                t["topic"].as_str().unwrap_or_default().to_string(),
                t["messages"].as_u64().unwrap_or(u64::MAX),
                t["queues"].as_u64().unwrap_or(u64::MAX),
            )
        })
        .collect())
}

/// Every page of a topic's browse (`limit` per page), concatenated.
async fn browse_all(node: &Node, topic: &str, extra: &str, limit: usize) -> anyhow::Result<(Vec<Value>, usize)> {
    let (mut all, mut pages, mut before) = (Vec::new(), 0, None::<u64>);
    loop {
        let b = before.map(|b| format!("&before={b}")).unwrap_or_default();
        let v = get_json(format!(
            "{}/api/v1/topics/{topic}/messages?limit={limit}{extra}{b}",
            node.http
        ))
        .await?;
        let page = v["messages"].as_array().cloned().unwrap_or_default();
        anyhow::ensure!(page.len() <= limit, "page longer than its limit: {v}");
        pages += 1;
        all.extend(page);
        match v["next_before"].as_u64() {
            Some(b) => before = Some(b),
            None => return Ok((all, pages)),
        }
        anyhow::ensure!(pages < 100, "paging never ends");
    }
}

#[tokio::test]
async fn given_a_known_workload_topics_are_counted_browsed_created_and_deleted_exactly() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("node");
    let mut node = Node::start(&dir, &[])?;
    let alpha = produce(&node, "alpha", 30, true).await?;
    produce(&node, "beta", 20, true).await?;
    produce(&node, "gamma", 10, true).await?;

    // The list: user topics only, by name, exact counts.
    let v = get_json(format!("{}/api/v1/topics", node.http)).await?;
    assert_eq!(
        listed(&node).await?,
        vec![("alpha".into(), 30, 4), ("beta".into(), 20, 4), ("gamma".into(), 10, 4)]
    );
    let a = &v["topics"][0];
    assert!(
        a["bytes"].as_u64().unwrap_or(0) > 30 * "alpha message 0".len() as u64,
        "{a}"
    );
    assert!(
        a["first_ms"].as_i64() <= a["last_ms"].as_i64() && a["first_ms"].is_i64(),
        "{a}"
    );
    assert!(a["produce_per_sec"].is_number() && a["consume_rate"].is_number(), "{a}");

    // One topic: its queues add up; an unknown one is a JSON 404.
    let one = get_json(format!("{}/api/v1/topics/alpha", node.http)).await?;
    let per_queue = one["per_queue"].as_array().cloned().unwrap_or_default();
    assert_eq!(per_queue.len(), 4);
    assert_eq!(per_queue.iter().filter_map(|q| q["messages"].as_u64()).sum::<u64>(), 30);
    let (code, err) = call(reqwest::Client::new().get(format!("{}/api/v1/topics/nope", node.http))).await?;
    assert_eq!((code, err["error"].is_string()), (404, true), "{err}");

    // Browse: newest first over pages of 7, every message exactly once.
    let (all, pages) = browse_all(&node, "alpha", "", 7).await?;
    assert_eq!(pages, 5);
    let seen: Vec<String> = all
        .iter()
        .map(|m| m["id"].as_str().unwrap_or_default().to_string())
        .collect();
    let newest_first: Vec<String> = alpha.iter().rev().cloned().collect();
    assert_eq!(seen, newest_first, "pages are the sends, newest first, each once");
    assert_eq!(all[0]["key"], "alpha-29");
    assert_eq!(all[0]["body_preview"], "alpha message 29");
    // One queue: only its messages, as many as the topic says it holds.
    let q1 = per_queue[1]["messages"].as_u64().unwrap_or(0) as usize;
    let (only, _) = browse_all(&node, "alpha", "&queue=1", 3).await?;
    assert_eq!(only.len(), q1);
    assert!(only.iter().all(|m| m["queue"] == 1));
    for bad in ["limit=201", "limit=0", "queue=x", "before=-1"] {
        let (code, err) =
            call(reqwest::Client::new().get(format!("{}/api/v1/topics/alpha/messages?{bad}", node.http))).await?;
        assert_eq!((code, err["error"].is_string()), (400, true), "{bad}: {err}");
    }
    // A well-formed queue number the topic does not have: no such queue.
    let (code, err) =
        call(reqwest::Client::new().get(format!("{}/api/v1/topics/alpha/messages?queue=4", node.http))).await?;
    assert_eq!((code, err["error"].is_string()), (404, true), "queue=4: {err}");

    // Create: listed with its queues, which producers then use.
    let (code, made) = create(&node, json!({"topic": "fresh", "queues": 8})).await?;
    assert_eq!(code, 201, "{made}");
    assert_eq!((made["queues"].as_u64(), made["messages"].as_u64()), (Some(8), Some(0)));
    let (code, err) = create(&node, json!({"topic": "fresh", "queues": 2})).await?;
    assert_eq!(code, 409, "{err}");
    assert!(err["error"].as_str().unwrap_or_default().contains("already exists"));
    for bad in [
        json!({"topic": "bad name", "queues": 1}),
        json!({"topic": "%SYS%", "queues": 1}),
        json!({"topic": "", "queues": 1}),
        json!({"topic": "q0", "queues": 0}),
        json!({"topic": "q65", "queues": 65}),
        json!({"queues": 2}),
    ] {
        let (code, err) = create(&node, bad.clone()).await?;
        assert_eq!((code, err["error"].is_string()), (400, true), "{bad}: {err}");
    }
    produce(&node, "fresh", 16, false).await?;
    let f = get_json(format!("{}/api/v1/topics/fresh", node.http)).await?;
    let counts: Vec<u64> = f["per_queue"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|q| q["messages"].as_u64())
        .collect();
    assert_eq!(counts, vec![2; 8], "16 unkeyed sends spread over the 8 queues");

    // Delete: refused while a group has unconsumed messages, naming it.
    let consumed = waybill(&[
        "consume",
        "--broker",
        &node.broker,
        "--topic",
        "beta",
        "--group",
        "slow",
        "--count",
        "3",
    ])?;
    assert!(
        consumed.status.success(),
        "{}",
        String::from_utf8_lossy(&consumed.stderr)
    );
    // Sent after the group's member left: unconsumed whatever it fetched.
    produce(&node, "beta", 5, false).await?;
    let before = get_json(format!("{}/api/v1/topics/beta", node.http)).await?;
    let (code, err) = delete(&node, "beta", false).await?;
    assert_eq!(code, 409, "{err}; beta was {before}");
    assert!(err["error"].as_str().unwrap_or_default().contains("slow"), "{err}");
    let (code, gone) = delete(&node, "beta", true).await?;
    assert_eq!(code, 200, "{gone}");
    let names = |l: Vec<(String, u64, u64)>| l.into_iter().map(|t| t.0).collect::<Vec<_>>();
    assert_eq!(names(listed(&node).await?), ["alpha", "fresh", "gamma"]);
    let (code, _) = call(reqwest::Client::new().get(format!("{}/api/v1/topics/beta", node.http))).await?;
    assert_eq!(code, 404);
    let (code, refused) = call(
        reqwest::Client::new()
            .post(format!("{}/api/v1/topics/beta/messages", node.http))
            .json(&json!({"body": "late"})),
    )
    .await?;
    assert_eq!(code, 404, "a deleted topic takes no messages: {refused}");
    let (code, _) = delete(&node, "beta", true).await?;
    assert_eq!(code, 404, "deleting twice");

    // Audited, with who did it.
    let audit = get_json(format!("{}/api/v1/audit", node.http)).await?;
    let actions: BTreeSet<(String, String, String)> = audit["entries"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or_default().to_string();
            (s("action"), s("target"), s("by"))
        })
        .collect();
    let expected: BTreeSet<(String, String, String)> = [
        ("topic.create".into(), "fresh".into(), "alice".into()),
        ("topic.delete".into(), "beta".into(), "bob".into()),
    ]
    .into();
    assert_eq!(actions, expected);

    // After a restart: the created topic keeps its queues, the deleted one
    // stays gone.
    node.sigkill()?;
    let node = Node::start(&dir, &[])?;
    assert_eq!(
        listed(&node).await?,
        vec![
            ("alpha".into(), 30, 4),
            ("fresh".into(), 16, 8),
            ("gamma".into(), 10, 4)
        ]
    );
    let (code, _) = call(reqwest::Client::new().get(format!("{}/api/v1/topics/beta", node.http))).await?;
    assert_eq!(code, 404);

    // Created again: it starts empty; the old messages stay hidden.
    let (code, again) = create(&node, json!({"topic": "beta", "queues": 2})).await?;
    assert_eq!(code, 201, "{again}");
    assert_eq!(again["messages"], 0);
    let (old, _) = browse_all(&node, "beta", "", 50).await?;
    assert!(old.is_empty(), "{old:?}");
    let new = produce(&node, "beta", 3, true).await?;
    let (seen, _) = browse_all(&node, "beta", "", 50).await?;
    let seen: Vec<&str> = seen.iter().filter_map(|m| m["id"].as_str()).collect();
    assert_eq!(seen, new.iter().rev().map(String::as_str).collect::<Vec<_>>());
    Ok(())
}

#[tokio::test]
async fn given_a_node_the_topic_command_lists_shows_creates_and_deletes_and_fails_on_unknown_topics(
) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let node = Node::start(&tmp.path().join("node"), &[])?;
    let h = node.http.as_str();
    produce(&node, "orders", 12, true).await?;

    let made = waybill(&["topic", "create", "audit-log", "--queues", "3", "--http", h])?;
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    assert!(String::from_utf8_lossy(&made.stdout).contains("created topic audit-log with 3 queue(s)"));
    let again = waybill(&["topic", "create", "audit-log", "--http", h])?;
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));

    let list = waybill(&["topic", "list", "--json", "--http", h])?;
    assert!(list.status.success());
    let v: Value = serde_json::from_slice(&list.stdout)?;
    let rows: Vec<(String, u64, u64)> = v["topics"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|t| {
            (
                t["topic"].as_str().unwrap_or_default().to_string(),
                t["messages"].as_u64().unwrap_or(u64::MAX),
                t["queues"].as_u64().unwrap_or(u64::MAX),
            )
        })
        .collect();
    assert_eq!(rows, vec![("audit-log".into(), 0, 3), ("orders".into(), 12, 4)]);
    let table = waybill(&["topic", "list", "--http", h])?;
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains("2 topic(s)") && text.contains("orders"), "{text}");

    let show = waybill(&["topic", "show", "orders", "--json", "--http", h])?;
    assert!(show.status.success());
    let one: Value = serde_json::from_slice(&show.stdout)?;
    assert_eq!(one["messages"], 12);
    assert_eq!(one["per_queue"].as_array().map(Vec::len), Some(4));

    for args in [
        vec!["topic", "show", "nope", "--http", h],
        vec!["topic", "delete", "nope", "--http", h],
    ] {
        let out = waybill(&args)?;
        assert!(!out.status.success(), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("no topic nope"),
            "{args:?}"
        );
    }
    let bad = waybill(&["topic", "create", "a b", "--http", h])?;
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("may only contain"));

    let deleted = waybill(&["topic", "delete", "orders", "--http", h])?;
    assert!(deleted.status.success(), "{}", String::from_utf8_lossy(&deleted.stderr));
    let list = waybill(&["topic", "list", "--json", "--http", h])?;
    let v: Value = serde_json::from_slice(&list.stdout)?;
    assert_eq!(v["topics"].as_array().map(Vec::len), Some(1));
    assert_eq!(v["topics"][0]["topic"], "audit-log");
    Ok(())
}
