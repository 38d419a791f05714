//! Raft mode with real processes on loopback, killed with SIGKILL.
//!
//! Contracts:
//! - `SEND_OK` means a majority had the entry: after the leader is killed
//!   and a new one elected (automatically), every acknowledged message is on
//!   the new leader, byte-identical; the killed node, restarted, catches up
//!   and ends with a commit log byte-identical to the leader's.
//! - A minority down: writes go on. A majority down: writes fail with a
//!   clear status (never `SEND_OK`); when the nodes come back nothing
//!   acknowledged is lost and writes succeed again.

#[path = "common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{body_for, free_addr, log_bytes, Node};
use serde_json::{json, Value};

const PRODUCERS: usize = 8;

struct Group {
    /// `(id, http, broker, dir)`.
    members: Vec<(u16, String, String, PathBuf)>,
    args: Vec<String>,
}

impl Group {
    fn new(root: &Path, n: u16, args: &[&str]) -> anyhow::Result<Group> {
        let mut members = Vec::new();
        for id in 1..=n {
            members.push((id, free_addr()?, free_addr()?, root.join(format!("node{id}"))));
        }
        Ok(Group {
            members,
            args: args.iter().map(|s| s.to_string()).collect(),
        })
    }

    fn start(&self, id: u16) -> anyhow::Result<Node> {
        let (_, http, broker, dir) = &self.members[usize::from(id) - 1];
        let mut args: Vec<String> = vec![
            "--node-id".into(),
            id.to_string(),
            "--replication".into(),
            "raft".into(),
        ];
        for (pid, _, pbroker, _) in self.members.iter().filter(|m| m.0 != id) {
            args.push("--peer".into());
            args.push(format!("{pid}={pbroker}"));
        }
        args.extend(self.args.iter().cloned());
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        Node::start_at(dir, http, broker, &refs)
    }

    fn dir(&self, id: u16) -> &Path {
        &self.members[usize::from(id) - 1].3
    }
}

async fn view(node: &Node) -> anyhow::Result<Value> {
    Ok(reqwest::get(format!("{}/api/v1/cluster", node.http))
        .await?
        .json()
        .await?)
}

/// The id of the leader `node` sees, once there is one.
async fn leader(node: &Node) -> anyhow::Result<u16> {
    for _ in 0..200 {
        if let Ok(v) = view(node).await {
            let lead = v["nodes"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|n| n["role"] == "leader" && n["alive"] == true)
                .and_then(|n| n["id"].as_u64());
            if let Some(id) = lead {
                return Ok(u16::try_from(id)?);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("no leader elected: {}", view(node).await?)
}

async fn send(client: &reqwest::Client, node: &Node, body: &str) -> anyhow::Result<(u16, Value)> {
    let r = client
        .post(format!("{}/api/v1/topics/raft/messages", node.http))
        .json(&json!({"body": body}))
        .send()
        .await?;
    let status = r.status().as_u16();
    Ok((status, r.json().await?))
}

type Acked = Arc<Mutex<Vec<(String, String)>>>;

fn producers(node: &Node, acked: &Acked, stop: &Arc<AtomicBool>, tag: usize) -> Vec<tokio::task::JoinHandle<()>> {
    let client = reqwest::Client::new();
    (0..PRODUCERS)
        .map(|p| {
            let (client, acked, stop) = (client.clone(), acked.clone(), stop.clone());
            let url = format!("{}/api/v1/topics/raft/messages", node.http);
            tokio::spawn(async move {
                for seq in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let body = body_for(tag * 100 + p, seq);
                    let Ok(resp) = client.post(&url).json(&json!({"body": body})).send().await else {
                        return;
                    };
                    let Ok(v) = resp.json::<Value>().await else { return };
                    if v["status"] == "SEND_OK" {
                        if let Ok(mut a) = acked.lock() {
                            a.push((v["id"].as_str().unwrap_or_default().to_string(), body));
                        }
                    }
                }
            })
        })
        .collect()
}

fn count(acked: &Acked) -> usize {
    acked.lock().map(|a| a.len()).unwrap_or(0)
}

async fn wait_count(acked: &Acked, n: usize) -> anyhow::Result<()> {
    for _ in 0..6000 {
        if count(acked) >= n {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    anyhow::bail!("only {} acknowledged", count(acked))
}

async fn missing_on(node: &Node, acked: &[(String, String)]) -> anyhow::Result<Vec<String>> {
    let client = reqwest::Client::new();
    let mut missing = Vec::new();
    for (id, body) in acked {
        let resp = client.get(format!("{}/api/v1/messages/{id}", node.http)).send().await?;
        if resp.status() == 200 {
            let v: Value = resp.json().await?;
            assert_eq!(v["body"].as_str(), Some(body.as_str()), "message {id} changed");
        } else {
            missing.push(id.clone());
        }
    }
    Ok(missing)
}

/// Waits until every member's commit log equals the first one's.
async fn converge(nodes: &[(&Node, &Path)]) -> anyhow::Result<usize> {
    for _ in 0..300 {
        let mut ends = Vec::new();
        for (n, _) in nodes {
            let v = view(n).await?;
            ends.push(
                v["nodes"]
                    .as_array()
                    .and_then(|a| a.iter().find(|x| x["self"] == true).map(|x| x["log_end"].clone())),
            );
        }
        if ends.iter().all(|e| e.is_some() && *e == ends[0]) {
            let first = log_bytes(nodes[0].1)?;
            let mut same = true;
            for (_, dir) in &nodes[1..] {
                same &= log_bytes(dir)? == first;
            }
            if same {
                return Ok(first.len());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("commit logs did not converge")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_raft_when_leader_is_killed_should_elect_a_new_leader_and_keep_every_acknowledged_message(
) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let group = Group::new(tmp.path(), 3, &["--segment-bytes", "262144"])?;
    let mut nodes: Vec<Option<Node>> = vec![Some(group.start(1)?), Some(group.start(2)?), Some(group.start(3)?)];
    let first = nodes[0].as_ref().ok_or_else(|| anyhow::anyhow!("node 1"))?;
    let lead = leader(first).await?;
    println!("leader: node {lead}");

    let acked: Acked = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = {
        let l = nodes[usize::from(lead) - 1]
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("leader"))?;
        producers(l, &acked, &stop, 0)
    };
    wait_count(&acked, 800).await?;
    println!("--- SIGKILL the leader mid-stream");
    if let Some(n) = nodes[usize::from(lead) - 1].as_mut() {
        n.sigkill()?;
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await?;
    }
    let before = count(&acked);

    let survivor = nodes
        .iter()
        .enumerate()
        .find(|(i, _)| *i != usize::from(lead) - 1)
        .and_then(|(_, n)| n.as_ref())
        .ok_or_else(|| anyhow::anyhow!("no survivor"))?;
    let new_lead = leader(survivor).await?;
    assert_ne!(new_lead, lead, "a new leader must be elected");
    println!("new leader elected: node {new_lead}");
    let nl = nodes[usize::from(new_lead) - 1]
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("new leader"))?;
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = producers(nl, &acked, &stop, 1);
    wait_count(&acked, before + 300).await?;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await?;
    }
    let all = acked.lock().map(|a| a.clone()).unwrap_or_default();
    let missing = missing_on(nl, &all).await?;
    println!(
        "raft: acknowledged {} ({before} before the failover), present on the new leader {}",
        all.len(),
        all.len() - missing.len()
    );
    assert!(missing.is_empty(), "acknowledged but missing: {missing:?}");

    println!("--- the killed leader restarts and catches up");
    nodes[usize::from(lead) - 1] = Some(group.start(lead)?);
    let live: Vec<(&Node, &Path)> = nodes
        .iter()
        .enumerate()
        .filter_map(|(i, n)| n.as_ref().map(|n| (n, group.dir(u16::try_from(i + 1).unwrap_or(0)))))
        .collect();
    let bytes = converge(&live).await?;
    println!("all three commit logs byte-identical ({bytes} bytes)");
    let back = nodes[usize::from(lead) - 1]
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("restarted"))?;
    assert!(missing_on(back, &all).await?.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_raft_when_minority_then_majority_is_down_should_write_then_refuse_then_recover() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let group = Group::new(tmp.path(), 3, &["--replica-timeout-ms", "1500"])?;
    let mut nodes = vec![group.start(1)?, group.start(2)?, group.start(3)?];
    let lead = leader(&nodes[0]).await?;
    let li = usize::from(lead) - 1;
    let followers: Vec<usize> = (0..3).filter(|i| *i != li).collect();
    let client = reqwest::Client::new();
    let promote = client
        .post(format!("{}/api/v1/cluster/promote", nodes[followers[0]].http))
        .send()
        .await?;
    assert_eq!(promote.status(), 409, "raft elects; operators do not promote");
    let mut acked = Vec::new();
    for i in 0..20 {
        let body = format!("all up {i}");
        let (_, v) = send(&client, &nodes[li], &body).await?;
        assert_eq!(v["status"], "SEND_OK", "{v}");
        acked.push((v["id"].as_str().unwrap_or_default().to_string(), body));
    }

    println!("--- one follower down: a majority remains");
    nodes[followers[0]].sigkill()?;
    for i in 0..20 {
        let body = format!("minority down {i}");
        let (_, v) = send(&client, &nodes[li], &body).await?;
        assert_eq!(v["status"], "SEND_OK", "{v}");
        acked.push((v["id"].as_str().unwrap_or_default().to_string(), body));
    }

    println!("--- both followers down: no majority");
    nodes[followers[1]].sigkill()?;
    let mut refused = Vec::new();
    for i in 0..3 {
        let (code, v) = send(&client, &nodes[li], &format!("majority down {i}")).await?;
        assert_ne!(v["status"], "SEND_OK", "no majority can have it: {v}");
        refused.push(format!(
            "{code} {}",
            v["status"].as_str().or(v["error"].as_str()).unwrap_or("?")
        ));
    }
    println!("answers without a majority: {refused:?}");
    assert!(refused
        .iter()
        .all(|r| r.contains("FLUSH_SLAVE_TIMEOUT") || r.starts_with("503")));

    println!("--- the followers come back");
    nodes[followers[0]] = group.start(u16::try_from(followers[0] + 1)?)?;
    nodes[followers[1]] = group.start(u16::try_from(followers[1] + 1)?)?;
    let now_lead = leader(&nodes[followers[0]]).await?;
    let nl = usize::from(now_lead) - 1;
    let mut ok = false;
    for i in 0..50 {
        let body = format!("recovered {i}");
        let (_, v) = send(&client, &nodes[nl], &body).await?;
        if v["status"] == "SEND_OK" {
            acked.push((v["id"].as_str().unwrap_or_default().to_string(), body));
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "writes must succeed again once a majority is back");
    for n in &nodes {
        let missing = missing_on(n, &acked).await;
        // Followers may still be applying: retry briefly.
        let mut missing = missing?;
        for _ in 0..50 {
            if missing.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            missing = missing_on(n, &acked).await?;
        }
        assert!(
            missing.is_empty(),
            "acknowledged but missing on {}: {missing:?}",
            n.http
        );
    }
    println!(
        "acknowledged {} messages, all present on all three members",
        acked.len()
    );
    Ok(())
}
