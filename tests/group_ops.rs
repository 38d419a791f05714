//! Consumer-group operations against the real binary, with SDK consumers.
//!
//! Contracts under test:
//! - A reset to a time makes the next consumption start, on every queue,
//!   at the first message stored at or after it: a restarted consumer gets
//!   exactly the messages stored since (batches 2 and 3), each queue from
//!   that offset. A dry run answers the same moves and changes nothing.
//! - With a live member a reset (and a delete) is refused with 409 naming
//!   it; forced, the live member goes on from the new position (the
//!   fence: its next pull is served from there, its old commits dropped).
//! - A reset to the end redelivers nothing; a skip drops exactly the one
//!   message; a deleted idle group is gone from `/consumers`, also after a
//!   restart. Each action is audited with who asked; bad input is a 400
//!   with a JSON sentence, unknown group or topic a 404.
//! - `/consumers` shows each live member's address, last heartbeat and
//!   owned queues.

#[path = "common/mod.rs"]
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{get_json, wait_until, Node};
use serde_json::{json, Value};
use waybill_client::{ConsumeResult, ConsumerOptions, Message, Producer, ProducerOptions, PushConsumer, SendStatus};

const TOPIC: &str = "orders";
const GROUP: &str = "billing";
const PER_BATCH: usize = 12;
const LIMIT: Duration = Duration::from_secs(20);

/// One delivery as the handler saw it.
#[derive(Debug, Clone)]
struct Got {
    queue: u32,
    offset: u64,
    body: String,
    stored_ms: i64,
}

type Log = Arc<Mutex<Vec<Got>>>;

fn lock(log: &Log) -> std::sync::MutexGuard<'_, Vec<Got>> {
    log.lock().unwrap_or_else(|p| p.into_inner())
}

/// A member of `GROUP` recording what it gets (topic queues only).
async fn consumer(node: &Node, id: &str, log: Log) -> anyhow::Result<PushConsumer> {
    let mut o = ConsumerOptions::new(node.broker.clone(), GROUP, TOPIC);
    o.client_id = id.to_string();
    o.heartbeat_interval = Duration::from_millis(100);
    o.pull_wait = Duration::from_millis(200);
    Ok(PushConsumer::start(o, move |d| {
        let log = log.clone();
        async move {
            lock(&log).push(Got {
                queue: d.queue_id,
                offset: d.queue_offset,
                body: String::from_utf8_lossy(&d.message.body).into_owned(),
                stored_ms: d.stored_ms,
            });
            ConsumeResult::Success
        }
    })
    .await?)
}

async fn send(producer: &Producer, key: &str, body: &str) -> anyhow::Result<waybill_client::SendResult> {
    let m = Message {
        key: Some(key.to_string()),
        body: body.as_bytes().to_vec(),
        ..Message::default()
    };
    let r = producer.send(TOPIC, m).await?;
    anyhow::ensure!(r.status == SendStatus::SendOk, "send: {r:?}");
    Ok(r)
}

/// `POST` (or `DELETE` when `body` is `None`) as user alice; status and JSON.
async fn call(method: reqwest::Method, url: String, body: Option<Value>) -> anyhow::Result<(u16, Value)> {
    let mut req = reqwest::Client::new()
        .request(method, url)
        .header("x-waybill-user", "alice");
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    Ok((status, resp.json().await?))
}

async fn reset(node: &Node, group: &str, body: Value) -> anyhow::Result<(u16, Value)> {
    let url = format!("{}/api/v1/consumers/{group}/offsets", node.http);
    call(reqwest::Method::POST, url, Some(body)).await
}

async fn group_view(node: &Node) -> anyhow::Result<Option<Value>> {
    let v = get_json(format!("{}/api/v1/consumers", node.http)).await?;
    Ok(v["groups"]
        .as_array()
        .and_then(|gs| gs.iter().find(|g| g["group"] == GROUP).cloned()))
}

/// Waits until the group's lag on the topic is 0 and no member is live
/// (when `idle`), or just lag 0.
async fn caught_up(node: &Node) -> anyhow::Result<()> {
    let r = wait_until("the group to catch up", LIMIT, || async {
        Ok(group_view(node).await?.is_some_and(|g| g["lag"] == 0))
    })
    .await;
    if r.is_err() {
        eprintln!("not caught up: {:?}", group_view(node).await?);
    }
    r
}

/// Waits until `log` holds `n` deliveries.
async fn delivered(log: &Log, n: usize) -> anyhow::Result<()> {
    wait_until(&format!("{n} deliveries"), LIMIT, || async { Ok(lock(log).len() >= n) }).await
}

/// Per queue, the moves a reset to `at_ms` must make from the first
/// consumption's deliveries: the first offset stored at or after it.
fn expected_moves(first: &[Got], ends: &BTreeMap<u32, u64>, at_ms: i64) -> BTreeMap<u32, u64> {
    ends.iter()
        .map(|(&q, &end)| {
            let to = first
                .iter()
                .filter(|g| g.queue == q && g.stored_ms >= at_ms)
                .map(|g| g.offset)
                .min()
                .unwrap_or(end);
            (q, to)
        })
        .collect()
}

/// The `{queue: to}` map of a reset answer.
fn moves_of(answer: &Value) -> BTreeMap<u32, u64> {
    answer["queues"]
        .as_array()
        .map(|qs| {
            qs.iter()
                .filter_map(|m| Some((m["queue"].as_u64()? as u32, m["to"].as_u64()?)))
                .collect()
        })
        .unwrap_or_default()
}

/// First delivered offset per queue, and the set of bodies, of `got`.
fn starts_and_bodies(got: &[Got]) -> (BTreeMap<u32, u64>, BTreeSet<String>) {
    let mut starts = BTreeMap::new();
    for g in got {
        starts.entry(g.queue).or_insert(g.offset);
    }
    (starts, got.iter().map(|g| g.body.clone()).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_to_a_time_restarts_consumption_at_the_first_message_stored_at_or_after_it_and_live_members_need_force(
) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let node = Node::start(&tmp.path().join("node"), &[])?;
    let producer = Producer::new(ProducerOptions::new(node.broker.clone()))?;
    let mut batches: Vec<Vec<String>> = Vec::new();
    for b in 1..=3 {
        let mut bodies = Vec::new();
        for i in 0..PER_BATCH {
            let body = format!("batch{b}-{i}");
            send(&producer, &format!("k{b}-{i}"), &body).await?;
            bodies.push(body);
        }
        batches.push(bodies);
        // Stored times of consecutive batches differ (ms clock).
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let total = 3 * PER_BATCH;

    // The group consumes everything once and stops.
    let first: Log = Arc::default();
    let c1 = consumer(&node, "first", first.clone()).await?;
    delivered(&first, total).await?;
    c1.shutdown().await;
    caught_up(&node).await?;
    let first = lock(&first).clone();
    assert_eq!(first.len(), total, "each message once");
    let g = group_view(&node).await?.ok_or_else(|| anyhow::anyhow!("no group"))?;
    let ends: BTreeMap<u32, u64> = g["queues"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|q| q["kind"] == "topic")
        .filter_map(|q| Some((q["queue_id"].as_u64()? as u32, q["end"].as_u64()?)))
        .collect();
    assert_eq!(ends.len(), 4, "four queues: {g}");
    let stored_of = |body: &str| first.iter().find(|g| g.body == body).map(|g| g.stored_ms);
    let at_ms = batches[1]
        .iter()
        .filter_map(|b| stored_of(b))
        .min()
        .ok_or_else(|| anyhow::anyhow!("batch 2 not seen"))?;
    let batch1_last = batches[0].iter().filter_map(|b| stored_of(b)).max().unwrap_or(i64::MAX);
    assert!(batch1_last < at_ms, "batch 1 stored before batch 2");
    let want = expected_moves(&first, &ends, at_ms);
    let later: BTreeSet<String> = batches[1].iter().chain(&batches[2]).cloned().collect();

    // Bad input: a sentence, nothing changed.
    for (body, why) in [
        (json!({"to": "sideways"}), "unknown target"),
        (json!({"to": "time"}), "time without at"),
        (json!({"to": "time", "at": "yesterday"}), "unparsable time"),
        (json!({"to": "offset"}), "offset without offset"),
        (json!({"to": "offset", "offset": 1_000_000}), "past the end"),
        (json!({"to": "end", "queue": 99}), "no such queue"),
        (json!({"to": "end", "topic": "no/such"}), "bad topic name"),
    ] {
        let (code, v) = reset(&node, GROUP, body).await?;
        assert_eq!(code, 400, "{why}: {v}");
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{why}: {v}");
    }
    let (code, v) = reset(&node, "nobody", json!({"to": "end", "topic": TOPIC})).await?;
    assert_eq!((code, v["error"].is_string()), (404, true), "unknown group: {v}");
    let (code, v) = reset(&node, GROUP, json!({"to": "end", "topic": "ghost"})).await?;
    assert_eq!((code, v["error"].is_string()), (404, true), "unknown topic: {v}");
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1/consumers/{GROUP}/offsets", node.http))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 400);
    assert!(resp.json::<Value>().await?["error"].is_string());

    // Dry run: the same moves, nothing changed.
    let (code, dry) = reset(&node, GROUP, json!({"to": "time", "at": at_ms, "dry_run": true})).await?;
    assert_eq!(code, 200, "{dry}");
    assert_eq!(moves_of(&dry), want, "{dry}");
    assert_eq!(group_view(&node).await?.map(|g| g["lag"].clone()), Some(json!(0)));

    // The reset, by RFC 3339 time: from the end to the first at/after it.
    let at = chrono::DateTime::from_timestamp_millis(at_ms)
        .ok_or_else(|| anyhow::anyhow!("bad time"))?
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let (code, done) = reset(&node, GROUP, json!({"topic": TOPIC, "to": "time", "at": at})).await?;
    assert_eq!(code, 200, "{done}");
    assert_eq!(moves_of(&done), want);
    for m in done["queues"].as_array().into_iter().flatten() {
        let q = m["queue"].as_u64().unwrap_or(99) as u32;
        assert_eq!(m["from"].as_u64(), ends.get(&q).copied(), "from the end: {m}");
    }

    // A restarted consumer gets exactly batches 2 and 3, each queue from
    // the first message at or after the time.
    let second: Log = Arc::default();
    let c2 = consumer(&node, "second", second.clone()).await?;
    delivered(&second, 2 * PER_BATCH).await?;
    caught_up(&node).await?;
    let got = lock(&second).clone();
    assert_eq!(got.len(), 2 * PER_BATCH, "nothing else delivered: {got:?}");
    let (starts, bodies) = starts_and_bodies(&got);
    assert_eq!(bodies, later);
    let want_starts: BTreeMap<u32, u64> = want
        .iter()
        .filter(|(q, to)| ends.get(q).is_some_and(|end| **to < *end))
        .map(|(q, to)| (*q, *to))
        .collect();
    assert_eq!(
        starts, want_starts,
        "each queue starts at the first message at/after the time"
    );

    // The live member: shown with its address, heartbeat and queues.
    let g = group_view(&node).await?.ok_or_else(|| anyhow::anyhow!("no group"))?;
    let members = g["member_details"].as_array().cloned().unwrap_or_default();
    assert_eq!(members.len(), 1, "{g}");
    assert_eq!(members[0]["id"], "second");
    assert!(members[0]["host"].as_str().is_some_and(|h| h.starts_with("127.0.0.1:")));
    let now_ms = chrono::Utc::now().timestamp_millis();
    let beat = members[0]["last_heartbeat_ms"].as_i64().unwrap_or(0);
    assert!(
        beat > now_ms - 30_000 && beat <= now_ms + 1000,
        "recent heartbeat: {beat}"
    );
    let owned: BTreeSet<u64> = members[0]["queues"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|q| q["topic"] == TOPIC)
        .filter_map(|q| q["queue_id"].as_u64())
        .collect();
    assert_eq!(owned, BTreeSet::from([0, 1, 2, 3]), "the only member owns every queue");

    // Refused while it runs; forced, it goes on from the new position.
    let (code, v) = reset(&node, GROUP, json!({"to": "time", "time_ms": at_ms})).await?;
    assert_eq!(code, 409, "{v}");
    assert!(
        v["error"].as_str().is_some_and(|e| e.contains("second")),
        "names the member: {v}"
    );
    let (code, v) = reset(&node, GROUP, json!({"to": "time", "time_ms": at_ms, "force": true})).await?;
    assert_eq!(code, 200, "{v}");
    assert_eq!(moves_of(&v), want);
    delivered(&second, 4 * PER_BATCH).await?;
    caught_up(&node).await?;
    let again = lock(&second)[2 * PER_BATCH..].to_vec();
    assert_eq!(again.len(), 2 * PER_BATCH, "{again:?}");
    let (starts, bodies) = starts_and_bodies(&again);
    assert_eq!(bodies, later, "the live member redelivered exactly batches 2 and 3");
    assert_eq!(starts, want_starts);
    c2.shutdown().await;

    // To the end: nothing redelivered; the next message is the first one.
    let (code, v) = reset(&node, GROUP, json!({"to": "offset", "offset": 0, "queue": 0})).await?;
    assert_eq!(code, 200, "{v}");
    // SPEC's spelling: the offset as `at`.
    let (code, v) = reset(
        &node,
        GROUP,
        json!({"to": "offset", "at": 0, "queue": 0, "dry_run": true}),
    )
    .await?;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["queues"][0]["to"], 0, "{v}");
    let (code, v) = reset(&node, GROUP, json!({"to": "end"})).await?;
    assert_eq!(code, 200, "{v}");
    assert_eq!(moves_of(&v), ends);
    send(&producer, "after-end", "after-end").await?;
    let third: Log = Arc::default();
    let c3 = consumer(&node, "third", third.clone()).await?;
    delivered(&third, 1).await?;
    caught_up(&node).await?;
    let bodies: Vec<String> = lock(&third).iter().map(|g| g.body.clone()).collect();
    assert_eq!(bodies, ["after-end"], "nothing before the end redelivered");
    c3.shutdown().await;

    // Skip: that one message is never delivered.
    let skipped = send(&producer, "skip", "skip-me").await?;
    let (code, v) = call(
        reqwest::Method::POST,
        format!("{}/api/v1/consumers/{GROUP}/skip", node.http),
        Some(json!({"queue": skipped.queue_id, "offset": skipped.queue_offset + 1})),
    )
    .await?;
    assert_eq!(code, 400, "only the next message can be skipped: {v}");
    let (code, v) = call(
        reqwest::Method::POST,
        format!("{}/api/v1/consumers/{GROUP}/skip", node.http),
        Some(json!({"topic": TOPIC, "queue": skipped.queue_id, "offset": skipped.queue_offset})),
    )
    .await?;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["to"].as_u64(), Some(skipped.queue_offset + 1));
    send(&producer, "skip", "after-skip").await?;
    let fourth: Log = Arc::default();
    let c4 = consumer(&node, "fourth", fourth.clone()).await?;
    delivered(&fourth, 1).await?;
    caught_up(&node).await?;
    let bodies: Vec<String> = lock(&fourth).iter().map(|g| g.body.clone()).collect();
    assert_eq!(bodies, ["after-skip"], "the skipped message is not delivered");

    // Delete: refused while live, done when idle, gone after a restart.
    let delete_url = format!("{}/api/v1/consumers/{GROUP}", node.http);
    let (code, v) = call(reqwest::Method::DELETE, delete_url.clone(), None).await?;
    assert_eq!(code, 409, "{v}");
    assert!(v["error"].as_str().is_some_and(|e| e.contains("fourth")), "{v}");
    c4.shutdown().await;
    let (code, v) = call(reqwest::Method::DELETE, delete_url.clone(), None).await?;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["deleted"], true);
    assert!(group_view(&node).await?.is_none(), "gone from /consumers");

    let audit = get_json(format!("{}/api/v1/audit?target={GROUP}", node.http)).await?;
    let actions: Vec<(String, String)> = audit["entries"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            (
                e["action"].as_str().unwrap_or("").to_string(),
                e["by"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    // Newest first: delete, skip, reset ×4 (time, forced time, offset, end);
    // dry runs and refusals are not recorded.
    let want_actions: Vec<(String, String)> = [
        "group.delete",
        "group.skip",
        "group.reset",
        "group.reset",
        "group.reset",
        "group.reset",
    ]
    .iter()
    .map(|a| (a.to_string(), "alice".to_string()))
    .collect();
    assert_eq!(actions, want_actions, "{audit}");
    assert!(
        audit["entries"][4]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("forced past live members second")),
        "{audit}"
    );

    let mut node = node;
    node.sigkill()?;
    drop(node);
    let node = Node::start(&tmp.path().join("node"), &[])?;
    assert!(group_view(&node).await?.is_none(), "still gone after a restart");
    let (code, v) = call(
        reqwest::Method::DELETE,
        format!("{}/api/v1/consumers/{GROUP}", node.http),
        None,
    )
    .await?;
    assert_eq!(code, 404, "{v}");
    Ok(())
}

/// Runs `waybill ARGS` to the end; exit success, stdout, stderr.
fn waybill(args: &[&str]) -> anyhow::Result<(bool, String, String)> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_waybill"))
        .args(args)
        .env("USER", "bob")
        .stdin(std::process::Stdio::null())
        .output()?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// The group's lag on its topic, from the API.
async fn lag(node: &Node) -> anyhow::Result<u64> {
    group_view(node)
        .await?
        .and_then(|g| g["lag"].as_u64())
        .ok_or_else(|| anyhow::anyhow!("no group"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_group_cli_lists_resets_skips_and_deletes_and_fails_on_an_unknown_group() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let node = Node::start(&tmp.path().join("node"), &[])?;
    let http = node.http.clone();
    let producer = Producer::new(ProducerOptions::new(node.broker.clone()))?;
    const N: usize = 10;
    for i in 0..N {
        send(&producer, &format!("k{i}"), &format!("m{i}")).await?;
    }
    let seen: Log = Arc::default();
    let c = consumer(&node, "cli-1", seen.clone()).await?;
    delivered(&seen, N).await?;
    caught_up(&node).await?;

    let (ok, out, err) = waybill(&["group", "list", "--http", &http])?;
    assert!(ok, "{err}");
    assert!(out.contains(GROUP) && out.contains("lag 0"), "{out}");
    assert!(
        out.contains("cli-1") && out.contains("127.0.0.1:"),
        "members with host: {out}"
    );

    // Refused with the live member, named.
    let (ok, _, err) = waybill(&["group", "reset", GROUP, "--http", &http, "--to-offset", "0"])?;
    assert!(!ok);
    assert!(err.contains("cli-1") && err.contains("409"), "{err}");
    c.shutdown().await;

    let (ok, out, err) = waybill(&[
        "group",
        "reset",
        GROUP,
        "--http",
        &http,
        "--to-offset",
        "0",
        "--dry-run",
    ])?;
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(out.trim())?;
    assert_eq!(v["dry_run"], true);
    assert!(
        v["queues"]
            .as_array()
            .is_some_and(|q| q.len() == 4 && q.iter().all(|m| m["to"] == 0)),
        "{v}"
    );
    assert_eq!(lag(&node).await?, 0, "a dry run changes nothing");

    let (ok, _, err) = waybill(&[
        "group",
        "reset",
        GROUP,
        "--http",
        &http,
        "--topic",
        TOPIC,
        "--to-offset",
        "0",
    ])?;
    assert!(ok, "{err}");
    assert_eq!(lag(&node).await?, N as u64, "everything is to be consumed again");
    let (ok, _, err) = waybill(&["group", "reset", GROUP, "--http", &http, "--to-end", "--queue", "0"])?;
    assert!(ok, "{err}");
    let (ok, _, err) = waybill(&[
        "group",
        "reset",
        GROUP,
        "--http",
        &http,
        "--to-time",
        "2100-01-01T00:00:00Z",
    ])?;
    assert!(ok, "{err}");
    assert_eq!(lag(&node).await?, 0, "a time after the last message is the end");

    for (args, why) in [
        (vec!["group", "reset", "nobody", "--to-end"], "unknown group"),
        (vec!["group", "reset", GROUP], "no target"),
        (
            vec!["group", "reset", GROUP, "--to-end", "--to-offset", "1"],
            "two targets",
        ),
        (vec!["group", "reset", GROUP, "--to-time", "soon"], "bad time"),
        (vec!["group", "delete", "nobody"], "unknown group"),
    ] {
        let mut args = args.clone();
        args.extend(["--http", &http]);
        let (ok, _, err) = waybill(&args)?;
        assert!(!ok, "{why} must fail");
        assert!(!err.trim().is_empty(), "{why}: says why");
    }
    let (_, _, err) = waybill(&["group", "reset", "nobody", "--to-end", "--http", &http])?;
    assert!(err.contains("no consumer group"), "{err}");

    // Skip one message, then delete the idle group.
    let r = send(&producer, "skipped", "skipped").await?;
    let (q, o) = (r.queue_id.to_string(), r.queue_offset.to_string());
    let (ok, out, err) = waybill(&["group", "skip", GROUP, "--http", &http, "--queue", &q, "--offset", &o])?;
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(out.trim())?;
    assert_eq!(v["to"].as_u64(), Some(r.queue_offset + 1));
    assert_eq!(lag(&node).await?, 0, "the one message is skipped");
    let (ok, out, err) = waybill(&["group", "delete", GROUP, "--http", &http])?;
    assert!(ok, "{err}");
    assert!(out.contains("\"deleted\":true"), "{out}");
    assert!(group_view(&node).await?.is_none());
    let audit = get_json(format!("{http}/api/v1/audit?target={GROUP}")).await?;
    let by: BTreeSet<&str> = audit["entries"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["by"].as_str())
        .collect();
    assert_eq!(by, BTreeSet::from(["bob"]), "{audit}");
    assert_eq!(
        audit["entries"].as_array().map(Vec::len),
        Some(5),
        "3 resets, a skip, a delete: {audit}"
    );

    for sub in ["list", "reset", "skip", "delete"] {
        let (ok, out, _) = waybill(&["group", sub, "--help"])?;
        assert!(ok);
        for line in out.lines().filter(|l| l.trim_start().starts_with("--")) {
            let l = line.trim();
            let described = l.split("  ").filter(|p| !p.trim().is_empty()).count() > 1;
            assert!(described || l.starts_with("--help"), "{sub}: flag without help: {l}");
        }
    }
    Ok(())
}
