//! `--auth-token` on the broker port, with the real `waybill` binary.
//!
//! Contract: with a token set, the first frame of every broker-port
//! connection must be `Auth` carrying it. Any other first frame, or a wrong
//! token, gets one `Unauthorized` error answer and the connection closes —
//! without the broker reading that frame's payload. The SDK and the CLI
//! (`--auth-token` or `WAYBILL_AUTH_TOKEN`) present it and work as before;
//! members of a replication group (FOLLOW, STATUS) and of a Raft group
//! (its RPCs) present the token they share and keep replicating.

#[path = "common/mod.rs"]
mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{free_addr, log_bytes, Node};
use waybill_client::protocol::{ErrorCode, Request, Response};
use waybill_client::wire::{self, Header, HEADER_LEN, MAX_FRAME};
use waybill_client::{ClientError, Message, Producer, ProducerOptions, SendStatus};

const TOKEN: &str = "s3cr/t token";

/// Sends `frames` on a fresh connection, closes its sending side and reads
/// until the broker closes; returns the decoded answers.
fn exchange(addr: &str, frames: &[Vec<u8>]) -> anyhow::Result<Vec<Response>> {
    Ok(exchange_ids(addr, frames)?.into_iter().map(|(_, r)| r).collect())
}

/// [`exchange`] with each answer's request id.
fn exchange_ids(addr: &str, frames: &[Vec<u8>]) -> anyhow::Result<Vec<(u64, Response)>> {
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    // The broker may close before it read everything: fine.
    let _ = s.write_all(&frames.concat());
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let mut out = Vec::new();
    let mut at = 0;
    while buf.len() >= at + HEADER_LEN {
        let mut h = [0u8; HEADER_LEN];
        h.copy_from_slice(&buf[at..at + HEADER_LEN]);
        let h = Header::parse(&h)?;
        let payload = buf
            .get(at + HEADER_LEN..at + HEADER_LEN + h.len)
            .ok_or_else(|| anyhow::anyhow!("truncated answer"))?;
        out.push((h.request_id, Response::decode(h.kind, payload)?));
        at += HEADER_LEN + h.len;
    }
    Ok(out)
}

fn request(req: &Request, id: u64) -> Vec<u8> {
    let (kind, payload) = req.encode();
    wire::frame(kind, id, &payload)
}

fn produce(body: &str) -> Request {
    Request::Produce {
        topic: "orders".into(),
        oneway: false,
        messages: vec![Message {
            body: body.as_bytes().to_vec(),
            ..Message::default()
        }],
    }
}

fn unauthorized(answers: &[Response]) -> bool {
    matches!(answers, [Response::Error { code: ErrorCode::Unauthorized, message }] if message.contains("--auth-token"))
}

#[test]
fn given_a_token_frames_without_it_are_refused_with_unauthorized_and_the_connection_closes() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let node = Node::start(&tmp.path().join("node"), &["--auth-token", TOKEN])?;
    let b = node.broker.as_str();

    let answers = exchange(b, &[request(&produce("no token"), 1)])?;
    assert!(unauthorized(&answers), "{answers:?}");

    let wrong = Request::Auth { token: "guess".into() };
    let answers = exchange(b, &[request(&wrong, 1), request(&produce("wrong token"), 2)])?;
    assert!(unauthorized(&answers), "a wrong token, then nothing more: {answers:?}");

    // A huge frame announced before the token: refused on its header.
    let mut huge = wire::frame(1, 3, b"");
    huge[12..16].copy_from_slice(&(MAX_FRAME as u32).to_le_bytes());
    let answers = exchange(b, &[huge])?;
    assert!(unauthorized(&answers), "{answers:?}");

    // Replication and Raft frames need the token too.
    let answers = exchange(b, &[wire::frame(100, 4, b"")])?;
    assert!(unauthorized(&answers), "STATUS without a token: {answers:?}");

    let right = Request::Auth { token: TOKEN.into() };
    let mut got = exchange_ids(b, &[request(&right, 1), request(&produce("with token"), 2)])?;
    got.sort_by_key(|(id, _)| *id);
    anyhow::ensure!(got.len() == 2, "two answers expected: {got:?}");
    assert_eq!(got[0], (1, Response::Ok));
    assert!(
        matches!(&got[1].1, Response::Produced(r) if r.len() == 1 && r[0].status == SendStatus::SendOk),
        "{got:?}"
    );
    Ok(())
}

fn waybill(args: &[&str], token_env: Option<&str>) -> anyhow::Result<Output> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_waybill"));
    cmd.args(args).env_remove("WAYBILL_AUTH_TOKEN");
    if let Some(t) = token_env {
        cmd.env("WAYBILL_AUTH_TOKEN", t);
    }
    Ok(cmd.output()?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_token_the_sdk_and_the_cli_present_it_and_produce_and_consume() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let node = Node::start(&tmp.path().join("node"), &["--auth-token", TOKEN])?;
    let b = node.broker.clone();

    let mut opts = ProducerOptions::new(b.clone());
    opts.auth_token = Some(TOKEN.into());
    let producer = Producer::new(opts)?;
    let r = producer.send("orders", Message::default()).await?;
    assert_eq!(r.status, SendStatus::SendOk);

    let mut opts = ProducerOptions::new(b.clone());
    opts.auth_token = Some("wrong".into());
    let e = Producer::new(opts)?.send("orders", Message::default()).await.err();
    assert!(
        matches!(
            &e,
            Some(ClientError::Broker {
                code: ErrorCode::Unauthorized,
                ..
            })
        ),
        "a wrong token is one clear, final error: {e:?}"
    );

    let with_flag = [
        "produce",
        "--broker",
        &b,
        "--topic",
        "orders",
        "--body",
        "cli",
        "--auth-token",
        TOKEN,
    ];
    let out = tokio::task::block_in_place(|| waybill(&with_flag, None))?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = tokio::task::block_in_place(|| waybill(&with_flag[..7], Some(TOKEN)))?;
    assert!(
        out.status.success(),
        "token from the env: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = tokio::task::block_in_place(|| waybill(&with_flag[..7], None))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("Unauthorized"),
        "no token: {stderr}"
    );

    let consume = [
        "consume",
        "--broker",
        &b,
        "--topic",
        "orders",
        "--group",
        "g",
        "--count",
        "3",
        "--idle-exit-ms",
        "10000",
    ];
    let out = tokio::task::block_in_place(|| waybill(&consume, Some(TOKEN)))?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines = String::from_utf8_lossy(&out.stdout).lines().count();
    assert_eq!(lines, 3, "the SDK's message and the two CLI ones");
    Ok(())
}

/// Starts members `1..=n` of a group with `args` on fixed loopback addresses.
fn group(root: &Path, n: u16, args: &[&str]) -> anyhow::Result<Vec<Node>> {
    let addrs: Vec<(String, String)> = (0..n)
        .map(|_| Ok((free_addr()?, free_addr()?)))
        .collect::<anyhow::Result<_>>()?;
    let mut nodes = Vec::new();
    for id in 1..=n {
        let mut a: Vec<String> = vec!["--node-id".into(), id.to_string()];
        for (peer, (_, broker)) in (1..=n).zip(&addrs).filter(|(p, _)| *p != id) {
            a.extend(["--peer".to_string(), format!("{peer}={broker}")]);
        }
        a.extend(args.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        let (http, broker) = &addrs[usize::from(id) - 1];
        nodes.push(Node::start_at(&root.join(format!("node{id}")), http, broker, &refs)?);
    }
    Ok(nodes)
}

/// Sends until one send is `SEND_OK` (the group needs a moment to form);
/// the producer tries every member.
async fn send_until_ok(nodes: &[Node], body: &str) -> anyhow::Result<String> {
    let mut opts = ProducerOptions::new(nodes[0].broker.clone());
    opts.brokers = nodes.iter().map(|n| n.broker.clone()).collect();
    opts.auth_token = Some(TOKEN.into());
    let producer = Producer::new(opts)?;
    let start = Instant::now();
    loop {
        let r = producer
            .send(
                "replicated",
                Message {
                    body: body.as_bytes().to_vec(),
                    ..Message::default()
                },
            )
            .await;
        match r {
            Ok(r) if r.status == SendStatus::SendOk => return Ok(r.id),
            other if start.elapsed() > Duration::from_secs(60) => anyhow::bail!("no SEND_OK in 60 s: {other:?}"),
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

#[tokio::test]
async fn given_a_token_a_sync_replication_pair_still_replicates() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let nodes = group(tmp.path(), 2, &["--replication", "sync", "--auth-token", TOKEN])?;
    // Sync replication: SEND_OK only once the replica (which followed with
    // the token) has the message.
    for i in 0..20 {
        send_until_ok(&nodes, &format!("m{i}")).await?;
    }
    let start = Instant::now();
    loop {
        let (a, b) = (log_bytes(&nodes[0].data_dir)?, log_bytes(&nodes[1].data_dir)?);
        if !a.is_empty() && a == b {
            break;
        }
        anyhow::ensure!(start.elapsed() < Duration::from_secs(20), "logs differ");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The cluster view asks the peer (STATUS) with the token.
    let view: serde_json::Value = reqwest::Client::new()
        .get(format!("{}/api/v1/cluster", nodes[0].http))
        .bearer_auth(TOKEN)
        .send()
        .await?
        .json()
        .await?;
    let alive = view["nodes"]
        .as_array()
        .map_or(0, |n| n.iter().filter(|n| n["alive"] == true).count());
    assert_eq!(alive, 2, "{view}");
    Ok(())
}

#[tokio::test]
async fn given_a_token_a_raft_group_still_elects_and_commits() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let nodes = group(tmp.path(), 3, &["--replication", "raft", "--auth-token", TOKEN])?;
    // Raft: SEND_OK means a majority (the leader and a follower reached by
    // its RPCs, with the token) has the entry.
    for i in 0..5 {
        send_until_ok(&nodes, &format!("r{i}")).await?;
    }
    Ok(())
}
