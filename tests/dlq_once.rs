//! Dead letters are replayed at most once, against the real binary over
//! HTTP, with the SDK as producer and consumers.
//!
//! Contracts under test:
//! - Two bulk replays of the same dead letters sent at the same time replay
//!   every letter exactly once between them; a consumer that succeeds then
//!   handles each key exactly once (counted per key).
//! - Replaying a replayed letter answers 409 naming the earlier replay
//!   (its copy's id and who); with `force=true` a second copy is made and
//!   recorded as forced, with who.
//! - The replay state survives a restart (it is read back from the log).

#[path = "common/mod.rs"]
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{dead_letters, Node};
use serde_json::Value;
use waybill_client::{ConsumeResult, ConsumerOptions, Message, Producer, ProducerOptions, PushConsumer};

const LETTERS: usize = 500;

fn consumer_options(node: &Node, group: &str, topic: &str) -> ConsumerOptions {
    let mut o = ConsumerOptions::new(node.broker.clone(), group, topic);
    o.heartbeat_interval = Duration::from_millis(100);
    o.pull_wait = Duration::from_millis(200);
    o
}

async fn eventually(
    limit: Duration,
    what: &str,
    mut check: impl AsyncFnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let start = Instant::now();
    while !check().await? {
        anyhow::ensure!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Sends `n` keyed messages and lets a failing consumer dead-letter them
/// all (`--max-reconsume-times 0`: the first failure dead-letters).
async fn dead_letter_all(node: &Node, group: &str, n: usize) -> anyhow::Result<()> {
    let producer = Producer::new(ProducerOptions::new(node.broker.clone()))?;
    let messages: Vec<Message> = (0..n)
        .map(|i| Message {
            key: Some(format!("order-{i}")),
            body: format!("body {i}").into_bytes(),
            ..Message::default()
        })
        .collect();
    for chunk in messages.chunks(100) {
        producer.send_batch("orders", chunk.to_vec()).await?;
    }
    let failing = PushConsumer::start(consumer_options(node, group, "orders"), |_d| async {
        ConsumeResult::ReconsumeLater
    })
    .await?;
    eventually(Duration::from_secs(60), "every message in the DLQ", async || {
        Ok(dead_letters(node, group).await?.len() >= n)
    })
    .await?;
    failing.shutdown().await;
    Ok(())
}

/// Runs a succeeding consumer until `keys` distinct keys were handled (and
/// a second more, for any duplicate to show); returns handlings per key and
/// the replayed copies in the log (read while the consumer is a member, so
/// the group's queues are known).
async fn consume_counting(node: &Node, group: &str, keys: usize) -> anyhow::Result<(BTreeMap<String, usize>, u64)> {
    let counts: Arc<Mutex<BTreeMap<String, usize>>> = Arc::default();
    let seen = counts.clone();
    let consumer = PushConsumer::start(consumer_options(node, group, "orders"), move |d| {
        let seen = seen.clone();
        async move {
            if let Ok(mut c) = seen.lock() {
                *c.entry(d.message.key.clone().unwrap_or_default()).or_default() += 1;
            }
            ConsumeResult::Success
        }
    })
    .await?;
    eventually(Duration::from_secs(60), "every key handled", async || {
        Ok(counts.lock().map(|c| c.len()).unwrap_or(0) >= keys)
    })
    .await?;
    // Anything delivered twice would arrive within a few pulls.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let copies = replay_copies(node, group).await?;
    consumer.shutdown().await;
    let counts = counts.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.clone();
    Ok((counts, copies))
}

#[tokio::test]
async fn given_two_concurrent_bulk_replays_each_letter_is_replayed_once_and_each_key_consumed_once(
) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let node = Node::start(
        &tmp.path().join("node"),
        &["--retry-delays", "10ms", "--max-reconsume-times", "0"],
    )?;
    dead_letter_all(&node, "billing", LETTERS).await?;
    let letters = dead_letters(&node, "billing").await?;
    assert_eq!(letters.len(), LETTERS);

    println!("--- two bulk replays of the same {LETTERS} letters at once");
    let client = reqwest::Client::new();
    let bulk = |who: &'static str| {
        let client = client.clone();
        let url = format!("{}/api/v1/dlq/replay?group=billing&rate=100000", node.http);
        async move {
            let resp = client.post(url).header("X-Waybill-User", who).send().await?;
            anyhow::ensure!(resp.status().is_success(), "bulk replay by {who}: {}", resp.status());
            Ok::<Value, anyhow::Error>(resp.json().await?)
        }
    };
    let (a, b) = tokio::join!(bulk("alice"), bulk("bob"));
    let (a, b) = (a?, b?);
    let mut replayed: BTreeMap<String, usize> = BTreeMap::new();
    for r in a["replayed"]
        .as_array()
        .into_iter()
        .chain(b["replayed"].as_array())
        .flatten()
    {
        let of = r["replay_of"].as_str().unwrap_or_default().to_string();
        *replayed.entry(of).or_default() += 1;
    }
    assert_eq!(replayed.len(), LETTERS, "every letter replayed");
    let twice: Vec<_> = replayed.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "replayed more than once: {twice:?}");
    let states = dead_letters(&node, "billing").await?;
    assert!(
        states
            .iter()
            .all(|d| d["state"] == "replayed" && d["replays"].as_array().map(Vec::len) == Some(1)),
        "each letter shows exactly one replay"
    );

    println!("--- a consumer that succeeds handles each key once");
    let (counts, copies) = consume_counting(&node, "billing", LETTERS).await?;
    assert_eq!(copies, LETTERS as u64, "copies in the log");
    let after: Vec<Value> = dead_letters(&node, "billing")
        .await?
        .iter()
        .map(|d| d["after_replay"].clone())
        .collect();
    assert!(
        after.iter().all(|a| a == "consumed"),
        "each letter's copy consumed: {after:?}"
    );
    let keys: BTreeSet<String> = (0..LETTERS).map(|i| format!("order-{i}")).collect();
    assert_eq!(counts.keys().cloned().collect::<BTreeSet<_>>(), keys);
    let dup: Vec<_> = counts.iter().filter(|(_, n)| **n != 1).collect();
    assert!(dup.is_empty(), "handled more than once: {dup:?}");
    Ok(())
}

/// `POST /api/v1/dlq/{letter}/replay?force=…` as `who`: status and answer.
async fn replay_as(node: &Node, letter: &str, force: bool, who: &str) -> anyhow::Result<(u16, Value)> {
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1/dlq/{letter}/replay?force={force}", node.http))
        .header("X-Waybill-User", who)
        .send()
        .await?;
    let status = resp.status().as_u16();
    Ok((status, resp.json().await?))
}

#[tokio::test]
async fn given_a_replayed_letter_a_second_replay_is_refused_unless_forced() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("node");
    let args = ["--retry-delays", "10ms", "--max-reconsume-times", "0"];
    let mut node = Node::start(&dir, &args)?;
    dead_letter_all(&node, "billing", 1).await?;
    let letter = dead_letters(&node, "billing").await?[0]["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let replay = |force: bool, who: &'static str| replay_as(&node, &letter, force, who);
    let (status, first) = replay(false, "alice").await?;
    assert_eq!(status, 200, "{first}");
    let first_copy = first["id"].as_str().unwrap_or_default().to_string();
    assert_eq!(first["forced"], false);

    let (status, again) = replay(false, "bob").await?;
    assert_eq!(status, 409, "{again}");
    let why = again["error"].as_str().unwrap_or_default();
    assert!(
        why.contains(&first_copy) && why.contains("alice"),
        "names the earlier replay: {why}"
    );

    println!("--- the refusal holds after a restart");
    node.sigkill()?;
    drop(node);
    let node = Node::start(&dir, &args)?;
    let replay = |force: bool, who: &'static str| replay_as(&node, &letter, force, who);
    let (status, again) = replay(false, "bob").await?;
    assert_eq!(status, 409, "{again}");

    let (status, forced) = replay(true, "carol").await?;
    assert_eq!(status, 200, "{forced}");
    assert_eq!(forced["forced"], true);
    assert_ne!(forced["id"], first["id"], "a second copy");
    let listed = dead_letters(&node, "billing").await?;
    let replays = listed[0]["replays"].as_array().cloned().unwrap_or_default();
    assert_eq!(replays.len(), 2, "{replays:?}");
    assert_eq!(replays[0]["by"], "alice");
    assert_eq!(replays[1]["by"], "carol");
    assert_eq!(replays[1]["forced"], true);
    Ok(())
}

async fn post_json(url: String, body: Value) -> anyhow::Result<(u16, Value)> {
    let resp = reqwest::Client::new()
        .post(url)
        .header("X-Waybill-User", "ops")
        .json(&body)
        .send()
        .await?;
    let status = resp.status().as_u16();
    Ok((status, resp.json().await?))
}

/// Copies in the group's replay queue (the log, not the replay records).
async fn replay_copies(node: &Node, group: &str) -> anyhow::Result<u64> {
    let v: Value = reqwest::get(format!("{}/api/v1/consumers", node.http))
        .await?
        .json()
        .await?;
    let g = v["groups"]
        .as_array()
        .and_then(|gs| gs.iter().find(|g| g["group"] == group).cloned())
        .ok_or_else(|| anyhow::anyhow!("no group {group} in {v}"))?;
    Ok(g["queues"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|q| q["delay"] == "replays")
        .map(|q| q["end"].as_u64().unwrap_or(0))
        .sum())
}

#[tokio::test]
async fn given_a_redrive_job_killed_midway_when_restarted_should_resume_and_replay_each_letter_once(
) -> anyhow::Result<()> {
    const JOB_LETTERS: usize = 2000;
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("node");
    let args = ["--retry-delays", "10ms", "--max-reconsume-times", "0"];
    let mut node = Node::start(&dir, &args)?;
    dead_letter_all(&node, "billing", JOB_LETTERS).await?;

    println!("--- a job over {JOB_LETTERS} letters at 500/s; a second job is refused while it runs");
    let jobs = format!("{}/api/v1/dlq/jobs", node.http);
    let (status, job) = post_json(
        jobs.clone(),
        serde_json::json!({"group": "billing", "rate_per_sec": 500}),
    )
    .await?;
    assert_eq!(status, 201, "{job}");
    let id = job["id"].as_str().unwrap_or_default().to_string();
    assert_eq!(job["matched"], JOB_LETTERS);
    let (status, second) = post_json(jobs.clone(), serde_json::json!({"group": "billing"})).await?;
    assert_eq!(status, 409, "{second}");
    assert!(second["error"].as_str().unwrap_or_default().contains(&id), "{second}");

    let mut before_kill = 0;
    eventually(Duration::from_secs(30), "some letters replayed", async || {
        let v: Value = reqwest::get(format!("{jobs}/{id}")).await?.json().await?;
        before_kill = v["replayed"].as_u64().unwrap_or(0);
        Ok(before_kill >= 300)
    })
    .await?;
    println!("--- SIGKILL the node mid-job ({before_kill} of {JOB_LETTERS} replayed)");
    node.sigkill()?;
    assert!(
        before_kill < JOB_LETTERS as u64,
        "the job must still be running when killed"
    );
    drop(node);
    let node = Node::start(&dir, &args)?;
    let jobs = format!("{}/api/v1/dlq/jobs", node.http);
    // The resumed job's speed is the disk's (each replay is stored), and
    // this disk's fsync latency swings; so wait as long as the job moves,
    // and fail when it stops moving, not on a wall-clock budget.
    let (mut last, mut moved_at) = (u64::MAX, Instant::now());
    let view = loop {
        let view: Value = reqwest::get(format!("{jobs}/{id}")).await?.json().await?;
        if view["state"] == "completed" {
            break view;
        }
        let replayed = view["replayed"].as_u64().unwrap_or(0);
        if replayed != last {
            (last, moved_at) = (replayed, Instant::now());
        }
        anyhow::ensure!(
            moved_at.elapsed() < Duration::from_secs(30),
            "the resumed job made no progress for 30 s: {view}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(view["matched"], JOB_LETTERS);
    assert_eq!(
        view["replayed"], JOB_LETTERS,
        "nobody else replayed: {}",
        view["skipped"]
    );
    assert_eq!(view["pending"], 0);
    assert_eq!(view["letters_detail"].as_array().map(Vec::len), Some(JOB_LETTERS));

    println!("--- each letter replayed exactly once in total");
    let letters = dead_letters(&node, "billing").await?;
    assert_eq!(letters.len(), JOB_LETTERS);
    let not_once: Vec<_> = letters
        .iter()
        .filter(|d| d["replays"].as_array().map(Vec::len) != Some(1))
        .map(|d| d["id"].clone())
        .collect();
    assert!(not_once.is_empty(), "letters not replayed exactly once: {not_once:?}");
    let (counts, copies) = consume_counting(&node, "billing", JOB_LETTERS).await?;
    assert_eq!(counts.len(), JOB_LETTERS);
    let dup: Vec<_> = counts.iter().filter(|(_, n)| **n != 1).collect();
    assert!(dup.is_empty(), "handled more than once: {dup:?}");
    assert_eq!(copies, JOB_LETTERS as u64, "copies in the log");
    let listed: Value = reqwest::get(format!("{jobs}?group=billing")).await?.json().await?;
    assert_eq!(listed["jobs"][0]["id"], id.as_str());
    Ok(())
}

#[tokio::test]
async fn given_bad_job_requests_should_answer_4xx_json_and_replay_nothing() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let node = Node::start(
        &tmp.path().join("node"),
        &["--retry-delays", "10ms", "--max-reconsume-times", "0"],
    )?;
    dead_letter_all(&node, "billing", 3).await?;
    let jobs = format!("{}/api/v1/dlq/jobs", node.http);
    let cases = [
        (serde_json::json!({"group": "nobody"}), 404),
        (serde_json::json!({"group": "billing", "rate_per_sec": -5}), 400),
        (serde_json::json!({"group": "billing", "rate_per_sec": 0}), 400),
        (
            serde_json::json!({"group": "billing", "filter": {"from": "yesterday"}}),
            400,
        ),
        (
            serde_json::json!({"group": "billing", "filter": {"from": 10, "to": 5}}),
            400,
        ),
        (
            serde_json::json!({"group": "billing", "filter": {"colour": "red"}}),
            400,
        ),
        (serde_json::json!({"group": "bad group!"}), 400),
    ];
    for (body, want) in cases {
        let (status, v) = post_json(jobs.clone(), body.clone()).await?;
        assert!(
            status == want || (want == 400 && status == 422),
            "{body} → {status} {v}, wanted {want}"
        );
        assert!(v["error"].is_string(), "{body} → {v}");
    }
    for path in ["/no-such-job", "/no-such-job/cancel"] {
        let resp = if path.ends_with("cancel") {
            reqwest::Client::new().post(format!("{jobs}{path}")).send().await?
        } else {
            reqwest::get(format!("{jobs}{path}")).await?
        };
        assert_eq!(resp.status().as_u16(), 404, "{path}");
        let v: Value = resp.json().await?;
        assert!(v["error"].is_string(), "{path} → {v}");
    }
    // A dry run matches and replays nothing; a reason filter selects.
    let (status, dry) = post_json(
        jobs.clone(),
        serde_json::json!({"group": "billing", "dry_run": true, "filter": {"reason": "RECONSUME_LATER"}}),
    )
    .await?;
    assert_eq!(status, 200, "{dry}");
    assert_eq!(dry["matched"], 3);
    let (_, none) = post_json(
        jobs.clone(),
        serde_json::json!({"group": "billing", "dry_run": true, "filter": {"reason": "no such reason"}}),
    )
    .await?;
    assert_eq!(none["matched"], 0);
    let letters = dead_letters(&node, "billing").await?;
    assert!(letters.iter().all(|d| d["state"] == "dead"), "nothing replayed");
    let (handled, copies) = consume_counting(&node, "billing", 0).await?;
    assert!(handled.is_empty(), "{handled:?}");
    assert_eq!(copies, 0, "no copy in the log");
    Ok(())
}

#[tokio::test]
async fn given_dead_letters_the_cli_runs_a_job_to_the_end_and_lists_it() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let node = Node::start(
        &tmp.path().join("node"),
        &["--retry-delays", "10ms", "--max-reconsume-times", "0"],
    )?;
    dead_letter_all(&node, "billing", 5).await?;
    let waybill = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_waybill"))
            .args(args)
            .args(["--http", node.http.as_str()])
            .stdin(std::process::Stdio::null())
            .output()
    };
    let out = waybill(&[
        "dlq", "replay", "--group", "billing", "--all", "--key", "order-3", "--rate", "1000",
    ])?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let job: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(job["state"], "completed", "{job}");
    assert_eq!(
        (job["matched"].as_u64(), job["replayed"].as_u64()),
        (Some(1), Some(1)),
        "{job}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("1/1 replayed"),
        "a progress line"
    );

    let out = waybill(&["dlq", "replay", "--group", "billing", "--all", "--rate", "1000"])?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let job: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(job["replayed"], 4, "the one replayed before is not taken again: {job}");

    let listed = waybill(&["dlq", "jobs", "--group", "billing", "--json"])?;
    assert!(listed.status.success());
    let v: Value = serde_json::from_slice(&listed.stdout)?;
    assert_eq!(v["jobs"].as_array().map(Vec::len), Some(2), "{v}");

    // A replayed letter again, by id: refused, with the reason, non-zero.
    let letter = dead_letters(&node, "billing").await?[0]["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let again = waybill(&["dlq", "replay", "--group", "billing", "--id", &letter])?;
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already replayed"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    Ok(())
}

#[tokio::test]
async fn given_a_discarded_letter_it_is_never_replayed_and_its_timeline_says_who_and_why() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("node");
    let args = ["--retry-delays", "10ms", "--max-reconsume-times", "0"];
    let mut node = Node::start(&dir, &args)?;
    dead_letter_all(&node, "billing", 2).await?;
    let letters = dead_letters(&node, "billing").await?;
    let (first, second) = (
        letters[0]["id"].as_str().unwrap_or_default().to_string(),
        letters[1]["id"].as_str().unwrap_or_default().to_string(),
    );
    let origin = letters[0]["origin_id"].as_str().unwrap_or_default().to_string();
    let discard = |id: String, body: Value| post_json(format!("{}/api/v1/dlq/{id}/discard", node.http), body);

    let (status, v) = discard(first.clone(), serde_json::json!({"reason": ""})).await?;
    assert_eq!(status, 400, "a reason is required: {v}");
    let (status, v) = discard(
        "0001000000010000000000FFFFFF".into(),
        serde_json::json!({"reason": "x"}),
    )
    .await?;
    assert_eq!(status, 404, "{v}");
    let (status, v) = discard(
        first.clone(),
        serde_json::json!({"reason": "poison: fixed by hand in billing"}),
    )
    .await?;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["by"], "ops");

    // The other one is replayed; it cannot be discarded after that.
    let replay = reqwest::Client::new()
        .post(format!("{}/api/v1/dlq/{second}/replay", node.http))
        .send()
        .await?;
    assert_eq!(replay.status().as_u16(), 200);
    let (status, v) = discard(second.clone(), serde_json::json!({"reason": "too late"})).await?;
    assert_eq!(status, 409, "{v}");

    let tl = common::timeline_until(&node, &origin, |v| {
        v["stages"]
            .as_array()
            .is_some_and(|s| s.iter().any(|st| st["outcome"] == "discarded"))
    })
    .await?;
    let text = tl.to_string();
    assert!(
        text.contains("discarded by ops: poison: fixed by hand in billing"),
        "{text}"
    );

    println!("--- after a restart: still discarded, and refused even with force");
    node.sigkill()?;
    drop(node);
    let node = Node::start(&dir, &args)?;
    let letters = dead_letters(&node, "billing").await?;
    let state_of = |id: &str| letters.iter().find(|d| d["id"] == id).map(|d| d["state"].clone());
    assert_eq!(state_of(&first), Some(Value::from("discarded")));
    assert_eq!(state_of(&second), Some(Value::from("replayed")));
    for force in [false, true] {
        let resp = reqwest::Client::new()
            .post(format!("{}/api/v1/dlq/{first}/replay?force={force}", node.http))
            .send()
            .await?;
        assert_eq!(resp.status().as_u16(), 409);
        let v: Value = resp.json().await?;
        assert!(v["error"].as_str().unwrap_or_default().contains("discarded"), "{v}");
    }
    let (_, job) = post_json(
        format!("{}/api/v1/dlq/jobs", node.http),
        serde_json::json!({"group": "billing", "dry_run": true}),
    )
    .await?;
    assert_eq!(job["matched"], 0, "a job takes no discarded letter: {job}");
    Ok(())
}

#[tokio::test]
async fn given_many_dead_letters_pages_and_exports_cover_each_exactly_once() -> anyhow::Result<()> {
    const N: usize = 25;
    let tmp = tempfile::tempdir()?;
    let node = Node::start(
        &tmp.path().join("node"),
        &["--retry-delays", "10ms", "--max-reconsume-times", "0"],
    )?;
    dead_letter_all(&node, "billing", N).await?;
    let all: Vec<String> = dead_letters(&node, "billing")
        .await?
        .iter()
        .map(|d| d["id"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(all.len(), N);
    let base = format!("{}/api/v1/dlq?group=billing&limit=10", node.http);
    for (order, expected) in [("oldest", all.clone()), ("newest", all.iter().rev().cloned().collect())] {
        let mut seen = Vec::new();
        let mut cursor: Option<u64> = None;
        let mut pages = 0;
        loop {
            let url = match cursor {
                Some(c) => format!("{base}&order={order}&cursor={c}"),
                None => format!("{base}&order={order}"),
            };
            let page: Value = reqwest::get(url).await?.json().await?;
            assert_eq!(page["total"], N);
            let rows = page["messages"].as_array().cloned().unwrap_or_default();
            assert!(rows.len() <= 10);
            seen.extend(rows.iter().map(|d| d["id"].as_str().unwrap_or_default().to_string()));
            pages += 1;
            match page["next_cursor"].as_u64() {
                Some(c) => cursor = Some(c),
                None => break,
            }
            anyhow::ensure!(pages < 10, "paging does not end");
        }
        assert_eq!(pages, 3, "{order}");
        assert_eq!(seen, expected, "{order}: every letter once, in order");
    }
    // Every row of a page gets its first failure time (from the trace).
    eventually(Duration::from_secs(15), "first failure times", async || {
        let page: Value = reqwest::get(format!("{base}&order=newest")).await?.json().await?;
        Ok(page["messages"]
            .as_array()
            .is_some_and(|r| r.iter().all(|d| d["first_failure_at"].is_string())))
    })
    .await?;

    let export = |q: &str| {
        let url = format!("{}/api/v1/dlq/export?group=billing{q}", node.http);
        async move {
            let resp = reqwest::get(url).await?;
            let status = resp.status().as_u16();
            let kind = resp
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            Ok::<_, anyhow::Error>((status, kind, resp.text().await?))
        }
    };
    let (status, kind, text) = export("").await?;
    assert_eq!((status, kind.as_str()), (200, "application/x-ndjson"));
    let ids: Vec<String> = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).map(|v| v["id"].as_str().unwrap_or_default().to_string()))
        .collect::<Result<_, _>>()?;
    assert_eq!(ids, all, "JSON lines: every letter once");
    let (status, kind, text) = export("&format=csv&key=order-7").await?;
    assert_eq!(status, 200);
    assert!(kind.starts_with("text/csv"), "{kind}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "header and the one letter with key order-7: {text}");
    assert!(
        lines[0].starts_with("id,origin_id,") && lines[1].contains("order-7"),
        "{text}"
    );

    for bad in ["&format=xml"] {
        let (status, _, text) = export(bad).await?;
        assert_eq!(status, 400, "{bad}: {text}");
    }
    for bad in ["&order=sideways", "&limit=0", "&cursor=-1"] {
        let resp = reqwest::get(format!("{base}{bad}")).await?;
        assert_eq!(resp.status().as_u16(), 400, "{bad}");
    }
    Ok(())
}

/// What a consumer saw of a message: key, body, the `region` property.
type Received = (Option<String>, Vec<u8>, Option<String>);

#[tokio::test]
async fn given_an_edited_replay_the_copy_carries_the_edit_and_the_letter_stays_as_evidence() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let node = Node::start(
        &tmp.path().join("node"),
        &["--retry-delays", "10ms", "--max-reconsume-times", "0"],
    )?;
    dead_letter_all(&node, "billing", 2).await?;
    let letters = dead_letters(&node, "billing").await?;
    let (letter, other) = (
        letters[0]["id"].as_str().unwrap_or_default().to_string(),
        letters[1]["id"].as_str().unwrap_or_default().to_string(),
    );
    let origin = letters[0]["origin_id"].as_str().unwrap_or_default().to_string();
    let before = (letters[0]["body"].clone(), letters[0]["key"].clone());
    let replay = |id: &str, body: Value| post_json(format!("{}/api/v1/dlq/{id}/replay", node.http), body);

    for bad in [
        serde_json::json!({"edit": {"properties": {"REPLAY_OF": "x"}}}),
        serde_json::json!({"edit": {"colour": "red"}}),
        serde_json::json!({"edits": {}}),
    ] {
        let (status, v) = replay(&other, bad.clone()).await?;
        assert_eq!(status, 400, "{bad} → {v}");
    }
    let (status, v) = replay(
        &letter,
        serde_json::json!({"edit": {"body": "fixed body", "key": "order-0-fixed", "properties": {"region": "eu"}}}),
    )
    .await?;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["edited"], serde_json::json!(["body", "key", "property region"]));

    println!("--- the group gets the edited copy");
    let got: Arc<Mutex<Vec<Received>>> = Arc::default();
    let seen = got.clone();
    let consumer = PushConsumer::start(consumer_options(&node, "billing", "orders"), move |d| {
        let seen = seen.clone();
        async move {
            if let Ok(mut g) = seen.lock() {
                g.push((
                    d.message.key.clone(),
                    d.message.body.clone(),
                    d.message.properties.get("region").cloned(),
                ));
            }
            ConsumeResult::Success
        }
    })
    .await?;
    eventually(Duration::from_secs(15), "the edited copy", async || {
        Ok(got.lock().map(|g| !g.is_empty()).unwrap_or(false))
    })
    .await?;
    consumer.shutdown().await;
    let got = got.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.clone();
    assert_eq!(
        got,
        vec![(
            Some("order-0-fixed".to_string()),
            b"fixed body".to_vec(),
            Some("eu".to_string())
        )],
        "only the edited copy (the other letter was never replayed)"
    );

    println!("--- the letter is unchanged evidence; the record and the timeline say who edited what");
    let letters = dead_letters(&node, "billing").await?;
    let l = letters
        .iter()
        .find(|d| d["id"] == letter.as_str())
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        (l["body"].clone(), l["key"].clone()),
        before,
        "the letter is unchanged: {l}"
    );
    assert_eq!(l["state"], "replayed");
    assert_eq!(
        l["replays"][0]["edited"],
        serde_json::json!(["body", "key", "property region"])
    );
    assert_eq!(l["replays"][0]["by"], "ops");
    let o = letters
        .iter()
        .find(|d| d["id"] == other.as_str())
        .cloned()
        .unwrap_or_default();
    assert_eq!(o["state"], "dead", "a refused edit replays nothing");
    let tl = common::timeline_until(&node, &origin, |v| {
        v["stages"]
            .as_array()
            .is_some_and(|s| s.iter().any(|st| st["stage"] == "replay"))
    })
    .await?;
    assert!(
        tl.to_string().contains("ops edited body, key, property region first"),
        "{}",
        tl["stages"]
    );
    Ok(())
}
