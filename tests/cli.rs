//! The `waybill produce` / `consume` / `dlq` commands as scripts use them.

#[path = "common/mod.rs"]
mod common;

use std::process::{Command, Output, Stdio};

use common::Node;
use serde_json::Value;

fn waybill(args: &[&str]) -> anyhow::Result<Output> {
    Ok(Command::new(env!("CARGO_BIN_EXE_waybill"))
        .args(args)
        .stdin(Stdio::null())
        .output()?)
}

fn json_lines(out: &Output) -> anyhow::Result<Vec<Value>> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).map_err(anyhow::Error::from))
        .collect()
}

#[test]
fn given_each_send_mode_produce_prints_one_result_per_acknowledged_message_and_consume_sees_them_all(
) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let node = Node::start(
        &tmp.path().join("node"),
        &["--retry-delays", "10ms", "--max-reconsume-times", "1"],
    )?;
    let b = node.broker.as_str();

    let sync = waybill(&[
        "produce", "--broker", b, "--topic", "cli", "--key", "k-sync", "--body", "s", "--count", "3",
    ])?;
    assert!(sync.status.success(), "{}", String::from_utf8_lossy(&sync.stderr));
    let lines = json_lines(&sync)?;
    assert_eq!(lines.len(), 3);
    assert!(lines
        .iter()
        .all(|l| l["status"] == "SEND_OK" && l["key"] == "k-sync" && l["id"].is_string()));

    let asynced = waybill(&[
        "produce",
        "--broker",
        b,
        "--topic",
        "cli",
        "--key",
        "k-async",
        "--size",
        "100",
        "--mode",
        "async",
        "--count",
        "4",
        "--concurrency",
        "4",
    ])?;
    assert!(asynced.status.success());
    assert_eq!(json_lines(&asynced)?.len(), 4);

    let oneway = waybill(&[
        "produce", "--broker", b, "--topic", "cli", "--key", "k-oneway", "--body", "o", "--mode", "oneway",
    ])?;
    assert!(oneway.status.success());
    assert!(json_lines(&oneway)?.is_empty(), "oneway has no result to print");

    // A failing handler for one key; the environment carries the message.
    let seen = tmp.path().join("seen.txt");
    let exec = format!(
        "echo \"$WAYBILL_TOPIC $WAYBILL_MSG_KEY $WAYBILL_RECONSUME_TIMES $(cat)\" >> {}; test \"$WAYBILL_MSG_KEY\" != k-oneway",
        seen.display()
    );
    let consumed = waybill(&[
        "consume",
        "--broker",
        b,
        "--topic",
        "cli",
        "--group",
        "cli-g",
        "--exec",
        &exec,
        "--idle-exit-ms",
        "1500",
        "--heartbeat-ms",
        "100",
    ])?;
    assert!(
        consumed.status.success(),
        "{}",
        String::from_utf8_lossy(&consumed.stderr)
    );
    let text = std::fs::read_to_string(&seen)?;
    let rows: Vec<&str> = text.lines().collect();
    println!("{text}");
    assert_eq!(rows.iter().filter(|r| r.starts_with("cli k-sync 0 s")).count(), 3);
    assert_eq!(rows.iter().filter(|r| r.starts_with("cli k-async 0 ")).count(), 4);
    // The oneway message failed twice (reconsume 0 and 1) and was dead-lettered.
    assert!(rows.contains(&"cli k-oneway 0 o") && rows.contains(&"cli k-oneway 1 o"));

    let list = waybill(&["dlq", "list", "--group", "cli-g", "--http", &node.http, "--json"])?;
    assert!(list.status.success());
    let v: Value = serde_json::from_slice(&list.stdout)?;
    assert_eq!(v["messages"].as_array().map(Vec::len), Some(1));
    let dlq_id = v["messages"][0]["id"].as_str().unwrap_or_default().to_string();
    // The table counts attempts as the dashboard does: the first delivery
    // and its retries (reconsume_times + 1), two here.
    let table = waybill(&["dlq", "list", "--group", "cli-g", "--http", &node.http])?;
    let table = String::from_utf8_lossy(&table.stdout).to_string();
    assert!(table.lines().next().is_some_and(|h| h.contains("attempts")), "{table}");
    let row = table.lines().find(|l| l.starts_with(&dlq_id)).unwrap_or_default();
    assert_eq!(
        v["messages"][0]["reconsume_times"]
            .as_u64()
            .map(|r| (r + 1).to_string()),
        row.split_whitespace().nth(3).map(str::to_string),
        "{table}"
    );

    let dry = waybill(&[
        "dlq",
        "replay",
        "--group",
        "cli-g",
        "--all",
        "--dry-run",
        "--http",
        &node.http,
    ])?;
    let dry: Value = serde_json::from_slice(&dry.stdout)?;
    assert_eq!(dry["matched"], 1);
    assert_eq!(dry["replayed"].as_array().map(Vec::len), Some(0));

    let one = waybill(&[
        "dlq", "replay", "--group", "cli-g", "--id", &dlq_id, "--http", &node.http,
    ])?;
    assert!(one.status.success(), "{}", String::from_utf8_lossy(&one.stderr));
    let one: Value = serde_json::from_slice(&one.stdout)?;
    assert_eq!(one["replay_of"].as_str(), Some(dlq_id.as_str()));

    // The terminal timeline of a consumed message, by id and by key.
    let first_id = lines[0]["id"].as_str().unwrap_or_default().to_string();
    let start = std::time::Instant::now();
    loop {
        let t = waybill(&["trace", &first_id, "--http", &node.http])?;
        assert!(t.status.success(), "{}", String::from_utf8_lossy(&t.stderr));
        let text = String::from_utf8_lossy(&t.stdout).to_string();
        if text.contains("consume") {
            assert!(
                text.contains(&format!("message {first_id}")) && text.contains("store"),
                "{text}"
            );
            break;
        }
        anyhow::ensure!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "no consume stage: {text}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let by_key = waybill(&["trace", "--key", "k-sync", "--http", &node.http, "--json"])?;
    assert_eq!(json_lines(&by_key)?.len(), 3, "three messages carry key k-sync");
    let missing = waybill(&["trace", "--key", "nobody", "--http", &node.http])?;
    assert!(!missing.status.success());

    // Without --exec, consume prints each message as a JSON line.
    let printed = waybill(&[
        "consume", "--broker", b, "--topic", "cli", "--group", "printer", "--count", "8",
    ])?;
    assert!(printed.status.success());
    let msgs = json_lines(&printed)?;
    assert_eq!(msgs.len(), 8);
    assert!(msgs.iter().any(|m| m["body"] == "o"));
    Ok(())
}

#[test]
fn given_bad_arguments_commands_fail_with_a_message_and_a_nonzero_exit() -> anyhow::Result<()> {
    let no_topic = waybill(&["produce", "--body", "x"])?;
    assert!(!no_topic.status.success());
    assert!(String::from_utf8_lossy(&no_topic.stderr).contains("--topic"));

    let unreachable = waybill(&[
        "produce",
        "--broker",
        "127.0.0.1:1",
        "--topic",
        "t",
        "--body",
        "x",
        "--retries",
        "0",
    ])?;
    assert!(!unreachable.status.success());
    assert!(String::from_utf8_lossy(&unreachable.stderr).contains("waybill"));

    let zero = waybill(&[
        "produce",
        "--broker",
        "127.0.0.1:1",
        "--topic",
        "t",
        "--body",
        "x",
        "--concurrency",
        "0",
    ])?;
    assert!(!zero.status.success());

    let bad_delays = waybill(&[
        "serve",
        "--retry-delays",
        "5 parsecs",
        "--data-dir",
        "/nonexistent/never",
    ])?;
    assert!(!bad_delays.status.success());
    assert!(String::from_utf8_lossy(&bad_delays.stderr).contains("retry_delays"));
    Ok(())
}

#[test]
fn given_a_port_in_use_serve_says_so_once_and_exits_nonzero() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let node = Node::start(&tmp.path().join("node"), &[])?;
    let http = node.http.trim_start_matches("http://").to_string();
    let other = tmp.path().join("other");
    let out = waybill(&[
        "serve",
        "--data-dir",
        other.to_str().unwrap_or_default(),
        "--http-addr",
        &http,
        "--broker-addr",
        "127.0.0.1:0",
    ])?;
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.starts_with("waybill: error: cannot listen on"), "{stderr}");
    assert_eq!(last.matches("in use").count(), 1, "said once: {last}");
    Ok(())
}

#[test]
fn given_numbered_keys_lines_a_mistyped_group_and_a_closed_pipe_the_cli_says_what_happened() -> anyhow::Result<()> {
    use std::io::{BufRead, Write};
    let tmp = tempfile::tempdir()?;
    let node = Node::start(&tmp.path().join("node"), &[])?;
    let b = node.broker.as_str();

    // `{n}` numbers the keys (and bodies): 10k keys are one process, not 10k.
    let numbered = waybill(&[
        "produce",
        "--broker",
        b,
        "--topic",
        "cli",
        "--key",
        "order-{n}",
        "--body",
        "b{n}",
        "--count",
        "3",
    ])?;
    assert!(
        numbered.status.success(),
        "{}",
        String::from_utf8_lossy(&numbered.stderr)
    );
    let keys: Vec<Value> = json_lines(&numbered)?.iter().map(|l| l["key"].clone()).collect();
    assert_eq!(keys, ["order-0", "order-1", "order-2"].map(Value::from).to_vec());

    // --lines: one message per line of stdin.
    let mut child = Command::new(env!("CARGO_BIN_EXE_waybill"))
        .args([
            "produce", "--broker", b, "--topic", "cli", "--key", "line-{n}", "--lines",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdin"))?
        .write_all(b"first\nsecond\nthird\n")?;
    let lines = child.wait_with_output()?;
    assert!(lines.status.success(), "{}", String::from_utf8_lossy(&lines.stderr));
    let sent = json_lines(&lines)?;
    assert_eq!(sent.len(), 3);
    let second = sent[1]["id"].as_str().unwrap_or_default().to_string();
    let rt = tokio::runtime::Runtime::new()?;
    let msg = rt.block_on(common::get_json(format!("{}/api/v1/messages/{second}", node.http)))?;
    assert_eq!(msg["key"], "line-1", "{msg}");
    assert_eq!(msg["body"], "second", "{msg}");

    // A mistyped group is an error naming the groups there are, not "0 dead letters".
    let typo = waybill(&["dlq", "list", "--http", &node.http, "--group", "typo"])?;
    let stderr = String::from_utf8_lossy(&typo.stderr);
    assert!(!typo.status.success());
    assert!(stderr.contains("no consumer group \"typo\""), "{stderr}");

    // A reader that goes away (`| head -1`) ends the command quietly, no panic.
    let mut child = Command::new(env!("CARGO_BIN_EXE_waybill"))
        .args([
            "produce", "--broker", b, "--topic", "cli", "--key", "k{n}", "--body", "x", "--count", "3000",
        ])
        .args(["--concurrency", "64"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut first = String::new();
    std::io::BufReader::new(child.stdout.take().ok_or_else(|| anyhow::anyhow!("no stdout"))?).read_line(&mut first)?;
    assert!(first.contains("SEND_OK"), "{first}");
    let out = child.wait_with_output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(141), "{stderr}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_an_open_live_feed_sigint_ends_it_and_the_node_exits_without_forcing() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let data = tmp.path().join("node");
    let mut node = Node::start(&data, &[])?;
    // A dashboard tab: an event stream that never ends by itself.
    let mut resp = reqwest::get(format!("{}/api/v1/events", node.http)).await?;
    assert!(resp.status().is_success());
    // The first stats event arrives within a second.
    let first = tokio::time::timeout(std::time::Duration::from_secs(30), resp.chunk()).await??;
    assert!(first.is_some());
    node.signal("INT")?;
    // The stream ends because the node ended it, well before any grace.
    let ended = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while let Ok(Some(_)) = resp.chunk().await {}
    })
    .await;
    assert!(ended.is_ok(), "the live feed stayed open after SIGINT");
    let status = node.child.wait()?;
    assert!(status.success(), "{status}");
    let log = std::fs::read_to_string(data.with_extension("log"))?;
    assert!(log.contains("shutting down"), "{log}");
    assert!(!log.contains("did not finish in time"), "shutdown was forced:\n{log}");
    Ok(())
}

#[test]
fn given_dedupe_consume_runs_the_handler_once_per_key_and_says_how_many_it_suppressed() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let node = Node::start(&tmp.path().join("node"), &[])?;
    let b = node.broker.as_str();
    // Two messages with key "a" (a producer retry, say) and one with "b".
    for (key, body) in [("a", "first"), ("a", "again"), ("b", "other")] {
        let out = waybill(&["produce", "--broker", b, "--topic", "dd", "--key", key, "--body", body])?;
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let db = format!("sqlite://{}", tmp.path().join("inbox.db").display());
    let consume = |group: &str| {
        waybill(&[
            "consume",
            "--broker",
            b,
            "--topic",
            "dd",
            "--group",
            group,
            "--dedupe",
            &db,
            "--count",
            "3",
            "--idle-exit-ms",
            "5000",
        ])
    };
    let out = consume("dd-readers")?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut bodies: Vec<String> = json_lines(&out)?
        .iter()
        .map(|v| v["body"].as_str().unwrap_or_default().to_string())
        .collect();
    // Keys go to their own queues, consumed in parallel: order across keys is free.
    bodies.sort();
    assert_eq!(
        bodies,
        vec!["first".to_string(), "other".to_string()],
        "handler ran once per key"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("3 consumed, 1 of them duplicates"), "{stderr}");
    // A backend URL that is not one is refused before consuming.
    let out = waybill(&[
        "consume",
        "--broker",
        b,
        "--topic",
        "dd",
        "--group",
        "g2",
        "--dedupe",
        "mysql://x",
    ])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("not a dedupe backend"),
        "{stderr}"
    );
    Ok(())
}
