//! TLS (`--tls-cert`/`--tls-key`) with the real `waybill` binary.
//!
//! Contract: with TLS on, the broker port and the HTTP listener speak TLS
//! only. The CLI (`--tls-ca`) and the client crate (`TlsClient`) produce
//! and consume over it, byte for byte; the API answers over HTTPS. A
//! plain-text client — the client crate without TLS, a raw frame, a plain
//! HTTP request — is refused (an error or a closed connection, never an
//! answer, never a stored message), a client trusting another CA is
//! refused too, and the node goes on serving TLS clients after each. The
//! members of a group reach each other over TLS with the same certificate.
//!
//! Certificates come from the `openssl` command: a test CA, and a node
//! certificate for `localhost` and `127.0.0.1` signed by it, written as a
//! chain file (leaf, then CA) so a node's links trust it by default.

#[path = "common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{free_addr, Node};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use waybill_client::protocol::Request;
use waybill_client::wire::{self, Header, HEADER_LEN};
use waybill_client::{
    ConsumeResult, ConsumerOptions, Message, Producer, ProducerOptions, PushConsumer, SendStatus, TlsClient,
};

/// The files `openssl` made.
struct Certs {
    /// The CA clients trust (`--tls-ca`).
    ca: PathBuf,
    /// The node's chain (leaf, then the CA) and key.
    chain: PathBuf,
    key: PathBuf,
    /// A CA that signed nothing of the node's.
    other_ca: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("openssl").current_dir(dir).args(args).output()?;
    anyhow::ensure!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

fn ca(dir: &Path, name: &str) -> anyhow::Result<()> {
    let (key, pem) = (format!("{name}.key"), format!("{name}.pem"));
    let subject = format!("/CN=waybill test {name}");
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &pem,
            "-days",
            "2",
            "-subj",
            &subject,
        ],
    )
}

fn certs(dir: &Path) -> anyhow::Result<Certs> {
    ca(dir, "ca")?;
    ca(dir, "other-ca")?;
    std::fs::write(
        dir.join("node.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )?;
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "node.key",
            "-out",
            "node.csr",
            "-subj",
            "/CN=localhost",
        ],
    )?;
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "node.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "node.pem",
            "-days",
            "2",
            "-extfile",
            "node.ext",
        ],
    )?;
    let chain = [std::fs::read(dir.join("node.pem"))?, std::fs::read(dir.join("ca.pem"))?].concat();
    std::fs::write(dir.join("chain.pem"), chain)?;
    Ok(Certs {
        ca: dir.join("ca.pem"),
        chain: dir.join("chain.pem"),
        key: dir.join("node.key"),
        other_ca: dir.join("other-ca.pem"),
    })
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap_or_default()
}

fn tls_args(c: &Certs) -> Vec<String> {
    vec![
        "--tls-cert".into(),
        path(&c.chain).into(),
        "--tls-key".into(),
        path(&c.key).into(),
    ]
}

fn waybill(args: &[&str]) -> anyhow::Result<Output> {
    Ok(Command::new(env!("CARGO_BIN_EXE_waybill"))
        .args(args)
        .env_remove("WAYBILL_TLS_CA")
        .env_remove("WAYBILL_AUTH_TOKEN")
        .output()?)
}

/// One HTTP/1.1 request over TLS (trusting `ca`); the status and body.
async fn https(addr: &str, ca: &Path, method: &str, target: &str) -> anyhow::Result<(u16, String)> {
    let tls = TlsClient::from_ca_file(ca)?;
    let mut s = waybill_client::tls::connect(addr, Some(&tls)).await?;
    let req = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    // A peer that closes without close_notify ends the read with an error
    // after the whole answer: what was read is the answer.
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no HTTP answer: {text:?}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// Writes `bytes` on a plain TCP connection to `addr` and reads what comes
/// back until the node closes (or 10 s pass).
fn plain_exchange(addr: &str, bytes: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let _ = s.write_all(bytes);
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    Ok(buf)
}

fn body_of(n: usize) -> Vec<u8> {
    // Not UTF-8 on purpose: bytes must come back as they went.
    let mut b = format!("sdk-{n}-").into_bytes();
    b.extend((0..=255u8).cycle().skip(n).take(64 + n * 13));
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_tls_the_cli_and_the_client_produce_and_consume_and_plain_text_is_refused() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let c = certs(tmp.path())?;
    let args = tls_args(&c);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let node = Node::start(&tmp.path().join("node"), &refs)?;
    let (b, http) = (node.broker.clone(), node.http.trim_start_matches("http://").to_string());
    let ca = path(&c.ca).to_string();

    // --- the CLI produces 20 messages over TLS and consumes them back.
    let out = tokio::task::block_in_place(|| {
        waybill(&[
            "produce",
            "--broker",
            &b,
            "--tls-ca",
            &ca,
            "--topic",
            "cli",
            "--key",
            "k-{n}",
            "--body",
            "tls-{n}-ünï",
            "--count",
            "20",
        ])
    })?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut acked = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let v: serde_json::Value = serde_json::from_str(line)?;
        assert_eq!(v["status"], "SEND_OK", "{line}");
        // The body of message n is `tls-{n}-ünï`, its key `k-{n}`.
        let n = v["key"].as_str().and_then(|k| k.strip_prefix("k-")).unwrap_or("?");
        acked.insert(v["id"].as_str().unwrap_or_default().to_string(), format!("tls-{n}-ünï"));
    }
    assert_eq!(acked.len(), 20, "one line per acked message");
    let out = tokio::task::block_in_place(|| {
        waybill(&[
            "consume",
            "--broker",
            &b,
            "--tls-ca",
            &ca,
            "--topic",
            "cli",
            "--group",
            "g",
            "--count",
            "20",
            "--idle-exit-ms",
            "15000",
        ])
    })?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut consumed = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let v: serde_json::Value = serde_json::from_str(line)?;
        let id = v["id"].as_str().unwrap_or_default().to_string();
        consumed.insert(id, v["body"].as_str().unwrap_or_default().to_string());
    }
    assert_eq!(consumed, acked, "every acked id consumed with its body");

    // --- the client crate does the same in-process, with binary bodies.
    let tls = TlsClient::from_ca_file(&c.ca)?;
    let mut opts = ProducerOptions::new(b.clone());
    opts.tls = Some(tls.clone());
    let producer = Producer::new(opts)?;
    let mut sent = BTreeMap::new();
    for n in 0..20 {
        let m = Message {
            key: Some(format!("sdk-{n}")),
            body: body_of(n),
            ..Message::default()
        };
        let r = producer.send("sdk", m).await?;
        assert_eq!(r.status, SendStatus::SendOk);
        sent.insert(r.id, body_of(n));
    }
    let got: Arc<Mutex<BTreeMap<String, Vec<u8>>>> = Arc::default();
    let mut copts = ConsumerOptions::new(b.clone(), "sdk-group", "sdk");
    copts.tls = Some(tls.clone());
    let consumer = {
        let got = got.clone();
        PushConsumer::start(copts, move |d| {
            let got = got.clone();
            async move {
                if let Ok(mut g) = got.lock() {
                    g.insert(d.id.clone(), d.message.body.clone());
                }
                ConsumeResult::Success
            }
        })
        .await?
    };
    let start = Instant::now();
    while got.lock().map(|g| g.len()).unwrap_or(0) < sent.len() && start.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    consumer.shutdown().await;
    assert_eq!(
        *got.lock().map_err(|_| anyhow::anyhow!("poisoned"))?,
        sent,
        "byte-identical"
    );

    // --- the API over HTTPS, raw and through the CLI.
    let (status, _) = https(&http, &c.ca, "GET", "/healthz").await?;
    assert_eq!(status, 200);
    let some_id = sent.keys().next().cloned().unwrap_or_default();
    let (status, body) = https(&http, &c.ca, "GET", &format!("/api/v1/messages/{some_id}")).await?;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&some_id), "{body}");
    let out = tokio::task::block_in_place(|| waybill(&["topic", "list", "--http", &http, "--tls-ca", &ca]))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("cli") && stdout.contains("sdk"), "{stdout}");
    let out = tokio::task::block_in_place(|| waybill(&["trace", &some_id, "--http", &http, "--tls-ca", &ca]))?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // --- plain text is refused, on both ports, by every kind of client.
    let mut opts = ProducerOptions::new(b.clone());
    opts.retry_times_when_send_failed = 0;
    opts.send_timeout = Duration::from_secs(5);
    let plain = Producer::new(opts)?.send("plain", Message::default()).await;
    assert!(plain.is_err(), "the client crate without TLS: {plain:?}");
    let (kind, payload) = Request::Produce {
        topic: "plain".into(),
        oneway: false,
        messages: vec![Message::default()],
    }
    .encode();
    let answer = tokio::task::block_in_place(|| plain_exchange(&b, &wire::frame(kind, 1, &payload)))?;
    let framed = answer.len() >= HEADER_LEN && {
        let mut h = [0u8; HEADER_LEN];
        h.copy_from_slice(&answer[..HEADER_LEN]);
        Header::parse(&h).is_ok()
    };
    assert!(!framed, "a raw frame got a framed answer: {answer:?}");
    let answer = tokio::task::block_in_place(|| {
        plain_exchange(&http, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    })?;
    assert!(
        !answer.starts_with(b"HTTP/"),
        "plain HTTP was answered: {}",
        String::from_utf8_lossy(&answer)
    );
    let out = tokio::task::block_in_place(|| waybill(&["produce", "--broker", &b, "--topic", "plain", "--body", "x"]))?;
    assert!(!out.status.success(), "the CLI without --tls-ca");
    let other = path(&c.other_ca).to_string();
    let out = tokio::task::block_in_place(|| {
        waybill(&[
            "produce",
            "--broker",
            &b,
            "--tls-ca",
            &other,
            "--topic",
            "plain",
            "--body",
            "x",
            "--retries",
            "0",
        ])
    })?;
    assert!(!out.status.success(), "the CLI trusting another CA");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("certificate"),
        "says why: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = tokio::task::block_in_place(|| waybill(&["topic", "list", "--http", &http, "--tls-ca", &other]))?;
    assert!(!out.status.success(), "HTTPS trusting another CA");

    // --- none of it was served, and TLS clients still are.
    let (status, _) = https(&http, &c.ca, "GET", "/api/v1/topics/plain").await?;
    assert_eq!(status, 404, "nothing reached the topic");
    let r = producer.send("sdk", Message::default()).await?;
    assert_eq!(r.status, SendStatus::SendOk);
    let (status, _) = https(&http, &c.ca, "GET", "/healthz").await?;
    assert_eq!(status, 200);
    Ok(())
}

#[test]
fn a_half_or_unreadable_tls_setting_stops_the_start_naming_it() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let c = certs(tmp.path())?;
    let dir = tmp.path().join("node");
    let data = path(&dir);
    let start = |extra: &[&str]| -> anyhow::Result<Output> {
        let mut args = vec![
            "serve",
            "--data-dir",
            data,
            "--http-addr",
            "127.0.0.1:0",
            "--broker-addr",
            "127.0.0.1:0",
        ];
        args.extend(extra);
        waybill(&args)
    };
    let out = start(&["--tls-cert", path(&c.chain)])?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("tls_key"), "{err}");
    let out = start(&["--tls-cert", path(&c.chain), "--tls-key", "/nonexistent/key.pem"])?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("/nonexistent/key.pem"), "{err}");
    let out = start(&["--tls-cert", path(&c.key), "--tls-key", path(&c.key)])?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains(path(&c.key)) && err.contains("no certificate"),
        "{err}"
    );
    Ok(())
}

/// Starts members `1..=n` of a group with TLS and `args`.
fn group(root: &Path, c: &Certs, n: u16, args: &[&str]) -> anyhow::Result<Vec<Node>> {
    let addrs: Vec<(String, String)> = (0..n)
        .map(|_| Ok((free_addr()?, free_addr()?)))
        .collect::<anyhow::Result<_>>()?;
    let mut nodes = Vec::new();
    for id in 1..=n {
        let mut a: Vec<String> = vec!["--node-id".into(), id.to_string()];
        for (peer, (_, broker)) in (1..=n).zip(&addrs).filter(|(p, _)| *p != id) {
            a.extend(["--peer".to_string(), format!("{peer}={broker}")]);
        }
        a.extend(tls_args(c));
        a.extend(args.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        let (http, broker) = &addrs[usize::from(id) - 1];
        nodes.push(Node::start_at(&root.join(format!("node{id}")), http, broker, &refs)?);
    }
    Ok(nodes)
}

/// Sends until `count` sends were `SEND_OK` (the group needs a moment to
/// form); the producer tries every member.
async fn send_ok(nodes: &[Node], c: &Certs, count: usize) -> anyhow::Result<()> {
    let mut opts = ProducerOptions::new(nodes[0].broker.clone());
    opts.brokers = nodes.iter().map(|n| n.broker.clone()).collect();
    opts.tls = Some(TlsClient::from_ca_file(&c.ca)?);
    let producer = Producer::new(opts)?;
    let start = Instant::now();
    let mut ok = 0;
    while ok < count {
        let m = Message {
            body: format!("m{ok}").into_bytes(),
            ..Message::default()
        };
        match producer.send("replicated", m).await {
            Ok(r) if r.status == SendStatus::SendOk => ok += 1,
            other if start.elapsed() > Duration::from_secs(60) => anyhow::bail!("no SEND_OK in 60 s: {other:?}"),
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    Ok(())
}

#[tokio::test]
async fn given_tls_a_raft_group_elects_and_commits_over_tls_links() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let c = certs(tmp.path())?;
    // No --tls-ca: the links trust the node's own chain file.
    let nodes = group(tmp.path(), &c, 3, &["--replication", "raft"])?;
    // SEND_OK in Raft: a majority (the leader and a follower its RPCs
    // reached over TLS) has the entry.
    send_ok(&nodes, &c, 5).await
}

#[tokio::test]
async fn given_tls_a_sync_replication_pair_replicates_and_sees_its_peer() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let c = certs(tmp.path())?;
    let nodes = group(tmp.path(), &c, 2, &["--replication", "sync", "--tls-ca", path(&c.ca)])?;
    // Sync replication: SEND_OK only once the replica (following over TLS)
    // has the message.
    send_ok(&nodes, &c, 10).await?;
    // The cluster view asks the peer (STATUS) over TLS.
    let http = nodes[0].http.trim_start_matches("http://");
    let (status, body) = https(http, &c.ca, "GET", "/api/v1/cluster").await?;
    assert_eq!(status, 200, "{body}");
    let view: serde_json::Value = serde_json::from_str(&body)?;
    let alive = view["nodes"]
        .as_array()
        .map_or(0, |n| n.iter().filter(|n| n["alive"] == true).count());
    assert_eq!(alive, 2, "{view}");
    Ok(())
}
