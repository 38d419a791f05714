//! Who may do what, limits, and where settings come from — against the real
//! `waybill` binary.
//!
//! Contract:
//! - with tokens configured, every `/api` route of the OpenAPI document
//!   answers 401 without a token and 403 to a `viewer` on a write, each
//!   with an `{"error"}` body; a viewer reads;
//! - a write is recorded under its token's name (the audit list and the
//!   message's timeline), whatever `x-waybill-user` the caller claims;
//! - topics need `admin`; the broker port refuses a viewer's token;
//! - a message over a limit and a token over its rate get a clear error
//!   and count in `waybill_refused_total{reason}`;
//! - an unknown setting and a bad value stop the start, naming the key and
//!   where it came from; an environment variable beats the file, a flag the
//!   variable, and `--print-config` shows each value's source; a
//!   non-loopback bind without a token is refused unless `--insecure`.

#[path = "common/mod.rs"]
mod common;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::Node;
use serde_json::Value;
use waybill_client::protocol::ErrorCode;
use waybill_client::{ClientError, ConsumeResult, ConsumerOptions, Message, Producer, ProducerOptions, PushConsumer};

const ROOT: &str = "root-token-0123456789";
const VIEWER: &str = "viewer-token-0123456789";
const OPERATOR: &str = "operator-token-0123456789";
const ADMIN: &str = "admin-token-0123456789";

fn config(extra: &str) -> String {
    format!(
        "auth_token = \"{ROOT}\"\nretry_delays = \"10ms\"\nmax_reconsume_times = 0\n{extra}\n\
         [[token]]\nname = \"grafana\"\ntoken = \"{VIEWER}\"\nrole = \"viewer\"\n\
         [[token]]\nname = \"ci-bot\"\ntoken = \"{OPERATOR}\"\nrole = \"operator\"\n\
         [[token]]\nname = \"ops-admin\"\ntoken = \"{ADMIN}\"\nrole = \"admin\"\n"
    )
}

fn start(dir: &std::path::Path, extra_config: &str, flags: &[&str]) -> anyhow::Result<Node> {
    std::fs::create_dir_all(dir)?;
    let file = dir.with_extension("toml");
    std::fs::write(&file, config(extra_config))?;
    let file = file.to_string_lossy().to_string();
    let mut args = vec!["--config", file.as_str()];
    args.extend_from_slice(flags);
    Node::start(dir, &args)
}

fn producer(node: &Node, token: &str) -> anyhow::Result<Producer> {
    let mut opts = ProducerOptions::new(node.broker.clone());
    opts.auth_token = Some(token.into());
    Ok(Producer::new(opts)?)
}

/// `(status, body as JSON or Null)`.
async fn call(req: reqwest::RequestBuilder) -> anyhow::Result<(u16, Value)> {
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    let text = resp.text().await?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_named_tokens_every_api_route_needs_one_and_each_role_does_only_its_part() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let node = start(&tmp.path().join("node"), "", &[])?;
    let http = reqwest::Client::new();
    let api = |p: &str| format!("{}{p}", node.http);

    println!("--- an operator's producer and a failing consumer make a dead letter");
    let p = producer(&node, OPERATOR)?;
    let sent = p
        .send(
            "orders",
            Message {
                key: Some("order-1".into()),
                body: b"pay".to_vec(),
                ..Message::default()
            },
        )
        .await?;
    let mut opts = ConsumerOptions::new(node.broker.clone(), "billing", "orders");
    opts.auth_token = Some(OPERATOR.into());
    opts.heartbeat_interval = Duration::from_millis(100);
    opts.pull_wait = Duration::from_millis(200);
    let consumer = PushConsumer::start(opts, |_| async { ConsumeResult::reconsume_later("card declined") }).await?;
    let started = Instant::now();
    let letter = loop {
        let (code, v) = call(http.get(api("/api/v1/dlq?group=billing")).bearer_auth(VIEWER)).await?;
        anyhow::ensure!(code == 200, "viewer reads the DLQ: {code} {v}");
        if let Some(d) = v["messages"].as_array().and_then(|a| a.first()).cloned() {
            break d;
        }
        anyhow::ensure!(started.elapsed() < Duration::from_secs(30), "no dead letter");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    consumer.shutdown().await;
    let dlq_id = letter["id"].as_str().unwrap_or_default().to_string();

    println!("--- every route of the document: 401 without a token, 403 for a viewer's write");
    let (code, doc) = call(http.get(api("/api/openapi.json")).bearer_auth(VIEWER)).await?;
    anyhow::ensure!(code == 200, "the document: {code}");
    let (code, _) = call(http.get(api("/api/openapi.json"))).await?;
    assert_eq!(code, 401, "the document itself needs a token");
    let paths = doc["paths"].as_object().cloned().unwrap_or_default();
    anyhow::ensure!(paths.len() >= 20, "the document lists the routes: {}", paths.len());
    let mut checked = 0;
    for (path, ops) in &paths {
        let url = api(&format!("/api/v1{}", path.trim_start_matches("/api/v1")))
            .replace("{topic}", "orders")
            .replace("{group}", "billing")
            .replace("{id}", &dlq_id)
            .replace("{job}", "job-1");
        for method in ops
            .as_object()
            .map(|o| o.keys().cloned().collect::<Vec<_>>())
            .unwrap_or_default()
        {
            let m = match method.as_str() {
                "get" => reqwest::Method::GET,
                "post" => reqwest::Method::POST,
                "delete" => reqwest::Method::DELETE,
                "put" => reqwest::Method::PUT,
                "patch" => reqwest::Method::PATCH,
                _ => continue,
            };
            let (code, body) = call(http.request(m.clone(), &url).json(&serde_json::json!({}))).await?;
            assert_eq!(code, 401, "{method} {path} without a token: {body}");
            assert!(body["error"].is_string(), "{method} {path}: {body}");
            let (code, body) = call(http.request(m.clone(), &url).bearer_auth("not-a-token-at-all")).await?;
            assert_eq!(code, 401, "{method} {path} with a wrong token: {body}");
            if m == reqwest::Method::GET {
                if path.ends_with("/events") {
                    let resp = http.get(&url).bearer_auth(VIEWER).send().await?;
                    assert_eq!(resp.status().as_u16(), 200, "the live feed opens for a viewer");
                } else {
                    let (code, body) = call(http.get(&url).bearer_auth(VIEWER)).await?;
                    assert!(code != 401 && code != 403, "{path}: a viewer reads: {code} {body}");
                }
            } else {
                let (code, body) = call(http.request(m, &url).bearer_auth(VIEWER).json(&serde_json::json!({}))).await?;
                assert_eq!(code, 403, "{method} {path} as a viewer: {body}");
                assert!(
                    body["error"]
                        .as_str()
                        .is_some_and(|e| e.contains("grafana") && e.contains("viewer")),
                    "{body}"
                );
            }
            checked += 1;
        }
    }
    println!("checked {checked} operations");
    anyhow::ensure!(checked >= 25, "only {checked} operations");
    let (code, _) = call(http.get(api("/healthz"))).await?;
    assert_eq!(code, 200, "probes stay open");

    println!("--- an operator's replay is recorded under its token's name, not the claimed one");
    let (code, r) = call(
        http.post(api(&format!("/api/v1/dlq/{dlq_id}/replay")))
            .bearer_auth(OPERATOR)
            .header("x-waybill-user", "mallory"),
    )
    .await?;
    assert_eq!(code, 200, "{r}");
    assert_eq!(r["by"], "ci-bot", "{r}");
    let (_, audit) = call(http.get(api("/api/v1/audit?target=billing")).bearer_auth(VIEWER)).await?;
    let entries = audit["entries"].as_array().cloned().unwrap_or_default();
    assert!(
        entries
            .iter()
            .any(|e| e["action"] == "dlq.replay" && e["by"] == "ci-bot"),
        "{audit}"
    );
    assert!(!audit.to_string().contains("mallory"), "{audit}");
    let started = Instant::now();
    loop {
        let (_, t) = call(
            http.get(api(&format!("/api/v1/messages/{}", sent.id)))
                .bearer_auth(VIEWER),
        )
        .await?;
        if t.to_string().contains("by ci-bot") {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(15),
            "the timeline never named ci-bot: {t}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    println!("--- topics need an admin");
    let body = serde_json::json!({"topic": "invoices", "queues": 2});
    let (code, v) = call(http.post(api("/api/v1/topics")).bearer_auth(OPERATOR).json(&body)).await?;
    assert_eq!(code, 403, "{v}");
    let (code, v) = call(http.post(api("/api/v1/topics")).bearer_auth(ADMIN).json(&body)).await?;
    assert_eq!(code, 201, "{v}");
    let (_, audit) = call(http.get(api("/api/v1/audit?target=invoices")).bearer_auth(ADMIN)).await?;
    assert!(
        audit["entries"].as_array().is_some_and(|a| a
            .iter()
            .any(|e| e["action"] == "topic.create" && e["by"] == "ops-admin")),
        "{audit}"
    );

    println!("--- the broker port: a viewer's token is refused, an operator's works");
    let e = producer(&node, VIEWER)?.send("orders", Message::default()).await.err();
    assert!(
        matches!(&e, Some(ClientError::Broker { code: ErrorCode::Unauthorized, message }) if message.contains("viewer")),
        "{e:?}"
    );
    assert!(p.send("orders", Message::default()).await.is_ok());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_limits_each_refusal_is_a_clear_error_and_a_metric() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let node = start(
        &tmp.path().join("node"),
        "max_message_bytes = 1024\nrate_limit_per_token = 5\nrate_limit_per_connection = 20\n",
        &[],
    )?;
    let http = reqwest::Client::new();
    let send = |body: Value| {
        http.post(format!("{}/api/v1/topics/orders/messages", node.http))
            .bearer_auth(ROOT)
            .json(&body)
    };
    let (code, v) = call(send(serde_json::json!({"key": "k", "body": "x".repeat(2000)}))).await?;
    assert_eq!(code, 413, "{v}");
    assert!(
        v["error"].as_str().is_some_and(|e| e.contains("max_message_bytes")),
        "{v}"
    );
    let (code, v) = call(send(serde_json::json!({"key": "a\nb", "body": "x"}))).await?;
    assert_eq!(code, 400, "{v}");
    assert!(
        v["error"].as_str().is_some_and(|e| e.contains("control character")),
        "{v}"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;

    println!("--- a token over its rate: 429 with a sentence");
    let mut refused = 0;
    for _ in 0..20 {
        let (code, v) = call(http.get(format!("{}/api/v1/topics", node.http)).bearer_auth(ROOT)).await?;
        if code == 429 {
            assert!(v["error"].as_str().is_some_and(|e| e.contains("rate limit")), "{v}");
            refused += 1;
        } else {
            assert_eq!(code, 200, "{v}");
        }
    }
    assert!(refused >= 10, "20 calls at once against 5/s: {refused} refused");

    println!("--- the broker port: a connection over its rate gets 'rate limit', the rest is stored");
    let p = producer(&node, OPERATOR)?;
    // One request at a time (concurrent sends may share a frame).
    let mut results = Vec::new();
    for i in 0..40 {
        let m = Message {
            key: Some(format!("k{i}")),
            body: b"x".to_vec(),
            ..Message::default()
        };
        results.push(p.send("orders", m).await);
    }
    let limited = results
        .iter()
        .filter(|r| matches!(r, Err(e) if e.to_string().contains("rate limit")))
        .count();
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert!(limited > 0 && ok > 0, "ok {ok}, rate-limited {limited}: {results:?}");
    assert_eq!(
        ok + limited,
        40,
        "every send is stored or refused for its rate: {results:?}"
    );

    let metrics = reqwest::get(format!("{}/metrics", node.http)).await?.text().await?;
    let count = |reason: &str| -> u64 {
        let series = format!("waybill_refused_total{{reason=\"{reason}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(series.as_str()))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    };
    assert_eq!(count("message_size"), 1, "{metrics}");
    assert_eq!(count("key"), 1);
    assert!(count("rate") >= refused as u64 + limited as u64, "{metrics}");
    Ok(())
}

fn serve(args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<Output> {
    let mut c = Command::new(env!("CARGO_BIN_EXE_waybill"));
    c.arg("serve").args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    Ok(c.output()?)
}

#[test]
fn given_a_config_file_env_and_flags_the_start_names_bad_keys_and_print_config_shows_sources() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let file = |name: &str, text: &str| -> anyhow::Result<String> {
        let p = tmp.path().join(name);
        std::fs::write(&p, text)?;
        Ok(p.to_string_lossy().to_string())
    };
    let data = tmp.path().join("data").to_string_lossy().to_string();

    let typo = file("typo.toml", "flush_intervall_ms = 200\n")?;
    let out = serve(&["--config", &typo, "--data-dir", &data], &[])?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("unknown setting flush_intervall_ms"), "{err}");

    let zero = file("zero.toml", "flush_interval_ms = 0\n")?;
    let out = serve(&["--config", &zero, "--data-dir", &data], &[])?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("flush_interval_ms") && err.contains("zero.toml"), "{err}");

    let typed = file("typed.toml", "queues_per_topic = \"many\"\n")?;
    let out = serve(&["--config", &typed, "--data-dir", &data], &[])?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("queues_per_topic") && err.contains("typed.toml"), "{err}");

    let out = serve(&["--data-dir", &data], &[("WAYBILL_SEGMENT_BYTES", "big")])?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("segment_bytes") && err.contains("WAYBILL_SEGMENT_BYTES"),
        "{err}"
    );
    assert!(!std::path::Path::new(&data).exists(), "a refused start touches nothing");

    let good = file(
        "good.toml",
        "flush = \"async\"\nflush_interval_ms = 200\nqueues_per_topic = 8\nauth_token = \"file-secret-value\"\n",
    )?;
    let out = serve(
        &["--config", &good, "--print-config", "--queues-per-topic", "6"],
        &[("WAYBILL_FLUSH_INTERVAL_MS", "300"), ("WAYBILL_QUEUES_PER_TOPIC", "7")],
    )?;
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        shown.contains("flush_interval_ms = 300  # environment variable WAYBILL_FLUSH_INTERVAL_MS"),
        "{shown}"
    );
    assert!(shown.contains("flush = \"async\"  # config file"), "{shown}");
    assert!(
        shown.contains("queues_per_topic = 6  # flag --queues-per-topic"),
        "{shown}"
    );
    assert!(shown.contains("node_id = 1  # default"), "{shown}");
    assert!(!shown.contains("file-secret-value"), "secrets are not printed: {shown}");
    let reread = file("printed.toml", &shown)?;
    let out = serve(&["--config", &reread, "--print-config"], &[])?;
    assert!(
        out.status.success(),
        "the printout is a valid config file: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = serve(&["--http-addr", "0.0.0.0:0", "--print-config"], &[])?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("http_addr") && err.contains("--insecure"), "{err}");
    let out = serve(&["--broker-addr", "0.0.0.0:0", "--print-config", "--insecure"], &[])?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = serve(
        &["--broker-addr", "0.0.0.0:0", "--print-config"],
        &[("WAYBILL_AUTH_TOKEN", "x")],
    )?;
    assert!(
        out.status.success(),
        "a token allows it: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}
