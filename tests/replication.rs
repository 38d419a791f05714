//! Primary/replica replication with real processes on loopback.
//!
//! Contracts:
//! - sync replication: `SEND_OK` means a replica had the message, so after
//!   the primary is SIGKILLed and a replica promoted, every acknowledged
//!   message is on the new primary, byte-identical.
//! - async replication: the primary acknowledges before a replica has the
//!   message; what the new primary never got is reported (ids), and when
//!   the former primary rejoins it cuts them and its tracer marks exactly
//!   those `lost` at the `replicate` stage. It then ends byte-identical to
//!   the new primary.
//! - A sync primary whose replica is frozen or dead answers
//!   `FLUSH_SLAVE_TIMEOUT` / `SLAVE_NOT_AVAILABLE`, never a false `SEND_OK`;
//!   a replica restarted with a stale log catches up byte-identically.

#[path = "common/mod.rs"]
mod common;

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{body_for, free_addr, log_bytes, Node};
use serde_json::{json, Value};

const PRODUCERS: usize = 16;

/// One member's fixed addresses and data dir.
struct Member {
    id: u16,
    http: String,
    broker: String,
    dir: std::path::PathBuf,
}

struct Group {
    members: Vec<Member>,
    args: Vec<String>,
    /// `(node, peer) → address` the node uses for that peer (a proxy).
    via: BTreeMap<(u16, u16), String>,
}

impl Group {
    fn new(root: &Path, n: u16, args: &[&str]) -> anyhow::Result<Group> {
        let mut members = Vec::new();
        for id in 1..=n {
            members.push(Member {
                id,
                http: free_addr()?,
                broker: free_addr()?,
                dir: root.join(format!("node{id}")),
            });
        }
        Ok(Group {
            members,
            args: args.iter().map(|s| s.to_string()).collect(),
            via: BTreeMap::new(),
        })
    }

    fn start(&self, id: u16) -> anyhow::Result<Node> {
        let me = &self.members[usize::from(id) - 1];
        let mut args: Vec<String> = vec!["--node-id".into(), id.to_string()];
        for m in self.members.iter().filter(|m| m.id != id) {
            args.push("--peer".into());
            let addr = self.via.get(&(id, m.id)).unwrap_or(&m.broker);
            args.push(format!("{}={}", m.id, addr));
        }
        args.extend(self.args.iter().cloned());
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        Node::start_at(&me.dir, &me.http, &me.broker, &refs)
    }
}

async fn cluster_view(node: &Node) -> anyhow::Result<Value> {
    Ok(reqwest::get(format!("{}/api/v1/cluster", node.http))
        .await?
        .json()
        .await?)
}

/// Waits until `primary` sees `n` live replicas that confirmed its whole log.
async fn wait_in_sync(primary: &Node, n: usize) -> anyhow::Result<Value> {
    for _ in 0..300 {
        let v = cluster_view(primary).await?;
        let nodes = v["nodes"].as_array().cloned().unwrap_or_default();
        let end = nodes
            .iter()
            .find(|x| x["role"] == "primary")
            .map(|x| x["log_end"].clone());
        let synced = nodes
            .iter()
            .filter(|x| x["role"] == "replica" && x["alive"] == true && Some(x["log_end"].clone()) == end)
            .count();
        if synced == n {
            return Ok(v);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("replicas did not catch up: {}", cluster_view(primary).await?)
}

async fn send(client: &reqwest::Client, node: &Node, body: &str) -> anyhow::Result<Value> {
    Ok(client
        .post(format!("{}/api/v1/topics/rep/messages", node.http))
        .json(&json!({"key": "rep", "body": body}))
        .send()
        .await?
        .json()
        .await?)
}

/// A TCP proxy the test can freeze: while paused it forwards nothing (what
/// it reads stays with it), and dropping it drops every byte it holds —
/// a replica cut off from its primary by the network.
struct Proxy {
    addr: String,
    paused: Arc<AtomicBool>,
    tasks: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Proxy {
    async fn start(target: String) -> anyhow::Result<Proxy> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        let paused = Arc::new(AtomicBool::new(false));
        let tasks: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let accept = {
            let (paused, tasks) = (paused.clone(), tasks.clone());
            tokio::spawn(async move {
                while let Ok((inbound, _)) = listener.accept().await {
                    let Ok(outbound) = tokio::net::TcpStream::connect(&target).await else {
                        continue;
                    };
                    let (ri, wi) = inbound.into_split();
                    let (ro, wo) = outbound.into_split();
                    let a = tokio::spawn(pump(ri, wo, paused.clone()));
                    let b = tokio::spawn(pump(ro, wi, paused.clone()));
                    if let Ok(mut t) = tasks.lock() {
                        t.push(a);
                        t.push(b);
                    }
                }
            })
        };
        if let Ok(mut t) = tasks.lock() {
            t.push(accept);
        }
        Ok(Proxy { addr, paused, tasks })
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Ok(t) = self.tasks.lock() {
            for task in t.iter() {
                task.abort();
            }
        }
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    paused: Arc<AtomicBool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        while paused.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // Read during a pause: held, never forwarded.
        while paused.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

type Acked = Arc<Mutex<Vec<(String, String)>>>;

/// Producers at full speed against `node` until `stop`; collects SEND_OKs.
fn producers(node: &Node, acked: &Acked, stop: &Arc<AtomicBool>, tag: usize) -> Vec<tokio::task::JoinHandle<usize>> {
    let client = reqwest::Client::new();
    (0..PRODUCERS)
        .map(|p| {
            let (client, acked, stop) = (client.clone(), acked.clone(), stop.clone());
            let url = format!("{}/api/v1/topics/rep/messages", node.http);
            tokio::spawn(async move {
                let mut sent = 0;
                for seq in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let body = body_for(tag * 100 + p, seq);
                    sent += 1;
                    let Ok(resp) = client.post(&url).json(&json!({"body": body})).send().await else {
                        break;
                    };
                    let Ok(v) = resp.json::<Value>().await else { break };
                    if v["status"] == "SEND_OK" {
                        let id = v["id"].as_str().unwrap_or_default().to_string();
                        if let Ok(mut a) = acked.lock() {
                            a.push((id, body));
                        }
                    }
                }
                sent
            })
        })
        .collect()
}

fn acked_len(acked: &Acked) -> usize {
    acked.lock().map(|a| a.len()).unwrap_or(0)
}

async fn wait_acked(acked: &Acked, n: usize) -> anyhow::Result<()> {
    for _ in 0..6000 {
        if acked_len(acked) >= n {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    anyhow::bail!("only {} acknowledged", acked_len(acked))
}

/// Which acknowledged messages `node` serves (byte-identical) and which not.
async fn present_on(node: &Node, acked: &[(String, String)]) -> anyhow::Result<(usize, Vec<String>)> {
    let client = reqwest::Client::new();
    let mut present = 0;
    let mut missing = Vec::new();
    for (id, body) in acked {
        let resp = client.get(format!("{}/api/v1/messages/{id}", node.http)).send().await?;
        if resp.status() == 200 {
            let v: Value = resp.json().await?;
            assert_eq!(v["body"].as_str(), Some(body.as_str()), "message {id} changed");
            present += 1;
        } else {
            assert_eq!(resp.status(), 404, "unexpected answer for {id}");
            missing.push(id.clone());
        }
    }
    Ok((present, missing))
}

/// Waits until both members' logs have the same length, then compares.
async fn assert_identical_logs(a: (&Node, &Path), b: (&Node, &Path)) -> anyhow::Result<usize> {
    for _ in 0..300 {
        let (va, vb) = (cluster_view(a.0).await?, cluster_view(b.0).await?);
        let end = |v: &Value| {
            v["nodes"]
                .as_array()
                .and_then(|n| n.iter().find(|x| x["self"] == true).map(|x| x["log_end"].clone()))
        };
        if end(&va).is_some() && end(&va) == end(&vb) {
            let (la, lb) = (log_bytes(a.1)?, log_bytes(b.1)?);
            if la.len() == lb.len() {
                assert!(la == lb, "logs differ");
                return Ok(la.len());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("logs did not converge")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_sync_replication_when_primary_is_killed_and_replica_promoted_should_keep_every_acknowledged_message(
) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let group = Group::new(tmp.path(), 3, &["--replication", "sync", "--segment-bytes", "262144"])?;
    let mut n1 = group.start(1)?;
    let n2 = group.start(2)?;
    let n3 = group.start(3)?;
    wait_in_sync(&n1, 2).await?;

    let acked: Acked = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = producers(&n1, &acked, &stop, 0);
    wait_acked(&acked, 1500).await?;
    println!("--- SIGKILL the primary mid-stream");
    n1.sigkill()?;
    stop.store(true, Ordering::Relaxed);
    let mut sent = 0;
    for t in tasks {
        sent += t.await?;
    }
    let before = acked_len(&acked);

    // Promote the replica holding the most log (the other would be refused).
    let view = cluster_view(&n2).await?;
    let best = view["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|n| n["alive"] == true)
        .max_by_key(|n| n["log_end"].as_u64())
        .and_then(|n| n["id"].as_u64())
        .ok_or_else(|| anyhow::anyhow!("no live replica: {view}"))?;
    let (new_primary, other) = if best == 2 { (&n2, &n3) } else { (&n3, &n2) };
    let other_dir = if best == 2 {
        &group.members[2].dir
    } else {
        &group.members[1].dir
    };
    let new_dir = &group.members[usize::try_from(best)? - 1].dir;
    let client = reqwest::Client::new();
    let p: Value = client
        .post(format!("{}/api/v1/cluster/promote", new_primary.http))
        .send()
        .await?
        .json()
        .await?;
    println!("promoted node {best}: {p}");
    assert_eq!(p["role"], "primary", "{p}");

    // Keep producing on the new primary; the other replica follows it.
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = producers(new_primary, &acked, &stop, 1);
    wait_acked(&acked, before + 300).await?;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        sent += t.await?;
    }
    let acked = acked.lock().map(|a| a.clone()).unwrap_or_default();
    let (present, missing) = present_on(new_primary, &acked).await?;
    println!(
        "sync replication: sent {sent}, acknowledged {} ({before} before the failover), present on the new primary {present}",
        acked.len()
    );
    assert!(
        missing.is_empty(),
        "acknowledged but missing after failover: {missing:?}"
    );
    assert_eq!(present, acked.len());
    let bytes = assert_identical_logs((new_primary, new_dir), (other, other_dir)).await?;
    println!("the remaining replica is byte-identical to the new primary ({bytes} bytes)");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_async_replication_when_primary_is_lost_should_report_and_trace_exactly_the_lost_messages(
) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let mut group = Group::new(tmp.path(), 2, &["--replication", "async", "--flush", "async"])?;
    // The replica reaches the primary through a proxy the test can freeze.
    let proxy = Proxy::start(group.members[0].broker.clone()).await?;
    group.via.insert((2, 1), proxy.addr.clone());
    let mut n1 = group.start(1)?;
    let n2 = group.start(2)?;
    wait_in_sync(&n1, 1).await?;

    let acked: Acked = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = producers(&n1, &acked, &stop, 0);
    wait_acked(&acked, 1000).await?;
    // The network to the replica stalls; the primary keeps acknowledging:
    // async replication's window of loss.
    proxy.paused.store(true, Ordering::Relaxed);
    let paused_at = acked_len(&acked);
    wait_acked(&acked, paused_at + 300).await?;
    stop.store(true, Ordering::Relaxed);
    let mut sent = 0;
    for t in tasks {
        sent += t.await?;
    }
    // Let the tracer write what it was told (the audit can only name what
    // the trace holds; a crash inside its batch window is a separate gap).
    tokio::time::sleep(Duration::from_millis(1000)).await;
    println!("--- SIGKILL the primary while the link to its replica is down");
    n1.sigkill()?;
    drop(proxy);
    let acked = acked.lock().map(|a| a.clone()).unwrap_or_default();

    let client = reqwest::Client::new();
    let p: Value = client
        .post(format!("{}/api/v1/cluster/promote", n2.http))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(p["role"], "primary", "{p}");
    let (present, lost) = present_on(&n2, &acked).await?;
    println!(
        "async replication: sent {sent}, acknowledged {}, present on the new primary {present}, lost {}",
        acked.len(),
        lost.len()
    );
    println!("acknowledged but lost: {lost:?}");
    assert!(
        lost.len() >= 300 - PRODUCERS,
        "what was acknowledged during the stall cannot be there"
    );
    assert_eq!(present + lost.len(), acked.len());
    // The new primary takes writes (its replica is down: async acks anyway).
    let v = send(&client, &n2, "after failover").await?;
    assert_eq!(v["status"], "SEND_OK", "{v}");

    println!("--- the former primary rejoins as a replica");
    drop(n1);
    let n1 = group.start(1)?;
    let v = cluster_view(&n1).await?;
    let me = v["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|x| x["self"] == true)
        .cloned();
    assert_eq!(me.map(|m| m["role"].clone()), Some(json!("replica")), "{v}");
    // Its tracer marks exactly the cut messages lost at `replicate` (once
    // its start-up audit, which runs in the background, is done).
    common::audit_done(&n1).await?;
    let lost_set: HashSet<&String> = lost.iter().collect();
    let mut marked = 0;
    for (id, _) in &acked {
        let t: Value = client
            .get(format!("{}/api/v1/messages/{id}", n1.http))
            .send()
            .await?
            .json()
            .await?;
        let is_lost = t["status"] == "lost";
        assert_eq!(is_lost, lost_set.contains(id), "{id}: {t}");
        if is_lost {
            let lp = t["loss_points"].as_array().cloned().unwrap_or_default();
            assert!(
                lp.iter().any(|l| l["stage"] == "replicate" && l["kind"] == "lost"),
                "{id} must be lost at replicate: {t}"
            );
            marked += 1;
        }
    }
    println!("former primary's tracer marked {marked} messages lost at replicate");
    assert_eq!(marked, lost.len());
    let bytes = assert_identical_logs((&n2, &group.members[1].dir), (&n1, &group.members[0].dir)).await?;
    println!("the former primary cut its log and is byte-identical to the new primary ({bytes} bytes)");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_sync_replication_when_replica_is_cut_off_should_never_answer_send_ok() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let group = Group::new(tmp.path(), 2, &["--replication", "sync", "--replica-timeout-ms", "300"])?;
    let n1 = group.start(1)?;
    let mut n2 = group.start(2)?;
    wait_in_sync(&n1, 1).await?;
    let client = reqwest::Client::new();
    let mut statuses: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let v = send(&client, &n1, "replica up").await?;
    assert_eq!(v["status"], "SEND_OK", "{v}");

    // Frozen replica: connected but silent.
    n2.signal("STOP")?;
    for i in 0..3 {
        let v = send(&client, &n1, &format!("frozen {i}")).await?;
        statuses
            .entry("frozen")
            .or_default()
            .push(v["status"].as_str().unwrap_or("?").into());
    }
    n2.signal("CONT")?;
    assert_eq!(statuses["frozen"], vec!["FLUSH_SLAVE_TIMEOUT"; 3]);
    let v = send(&client, &n1, "thawed").await?;
    assert_eq!(v["status"], "SEND_OK", "{v}");

    // Dead replica: the primary notices the closed connection.
    n2.sigkill()?;
    let mut seen = Vec::new();
    for i in 0..50 {
        let v = send(&client, &n1, &format!("dead {i}")).await?;
        let s = v["status"].as_str().unwrap_or("?").to_string();
        assert_ne!(s, "SEND_OK", "no replica has it: {v}");
        seen.push(s.clone());
        if s == "SLAVE_NOT_AVAILABLE" {
            break;
        }
    }
    println!(
        "statuses with the replica frozen: {:?}; dead: {seen:?}",
        statuses["frozen"]
    );
    assert_eq!(seen.last().map(String::as_str), Some("SLAVE_NOT_AVAILABLE"));
    // More writes land on the primary alone while the replica is down.
    for i in 0..200 {
        send(&client, &n1, &format!("while down {i}")).await?;
    }

    println!("--- the stale replica restarts and catches up");
    drop(n2);
    let n2 = group.start(2)?;
    wait_in_sync(&n1, 1).await?;
    let v = send(&client, &n1, "replica back").await?;
    assert_eq!(v["status"], "SEND_OK", "{v}");
    let bytes = assert_identical_logs((&n1, &group.members[0].dir), (&n2, &group.members[1].dir)).await?;
    println!("restarted replica is byte-identical to the primary ({bytes} bytes)");
    // A replica refuses writes and says where the primary is.
    let r = client
        .post(format!("{}/api/v1/topics/rep/messages", n2.http))
        .json(&json!({"body": "x"}))
        .send()
        .await?;
    assert_eq!(r.status(), 503);
    let e: Value = r.json().await?;
    assert!(e["error"].as_str().unwrap_or("").contains("primary is node 1"), "{e}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_stalled_replica_when_the_primary_keeps_writing_should_fire_and_resolve_replica_lag(
) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let mut group = Group::new(
        tmp.path(),
        2,
        &["--replication", "async", "--alert-replica-lag", "20000"],
    )?;
    let proxy = Proxy::start(group.members[0].broker.clone()).await?;
    group.via.insert((2, 1), proxy.addr.clone());
    let n1 = group.start(1)?;
    let _n2 = group.start(2)?;
    wait_in_sync(&n1, 1).await?;
    let client = reqwest::Client::new();
    let alerts = |c: reqwest::Client, http: String| async move {
        let v: Value = c.get(format!("{http}/api/v1/alerts")).send().await?.json().await?;
        let lag: Vec<Value> = v["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["alert"] == "replica_lag")
            .cloned()
            .collect();
        anyhow::Ok(lag)
    };
    assert!(alerts(client.clone(), n1.http.clone()).await?.is_empty());

    proxy.paused.store(true, Ordering::Relaxed);
    for i in 0..40 {
        let v = send(&client, &n1, &"x".repeat(1000 + i)).await?;
        assert_eq!(v["status"], "SEND_OK", "{v}");
    }
    let mut fired = Vec::new();
    for _ in 0..50 {
        fired = alerts(client.clone(), n1.http.clone()).await?;
        if !fired.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("with the replica stalled: {fired:?}");
    assert_eq!(fired.len(), 1, "replica_lag must fire");
    assert_eq!(fired[0]["labels"]["replica"], "2");
    assert!(fired[0]["value"].as_f64().unwrap_or(0.0) >= 40_000.0);
    let metrics = client.get(format!("{}/metrics", n1.http)).send().await?.text().await?;
    assert!(
        metrics.contains("waybill_alert_firing{alert=\"replica_lag\",replica=\"2\"} 1"),
        "the alert is exported for Alertmanager"
    );
    assert!(
        metrics.contains("waybill_replica_lag_bytes{replica=\"2\"}"),
        "lag gauge exported"
    );

    proxy.paused.store(false, Ordering::Relaxed);
    let mut resolved = false;
    for _ in 0..50 {
        if alerts(client.clone(), n1.http.clone()).await?.is_empty() {
            resolved = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(resolved, "replica_lag must resolve once the replica caught up");
    Ok(())
}
