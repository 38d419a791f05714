//! The API matches its document: schemathesis (a property-based API tester
//! from PyPI) reads `GET /api/openapi.json` from the real binary and sends
//! every operation valid and invalid input; it must find no 5xx and no
//! conformance failure (undocumented status, wrong content type, a body
//! off its schema, valid input refused, invalid input accepted, a call
//! without the token let through).
//!
//! Rules that span fields (`from` before `to`, an offset inside its queue)
//! cannot be written in OpenAPI 3.0; `tests/schemathesis.toml` lets those
//! few operations answer such input with a 400.
//!
//! The node runs with `--auth-token` (the document declares bearer
//! security on `/api`), with a little data seeded first: messages on a
//! topic, a consumer group and a dead letter. The run is bounded (a fixed
//! seed, a fixed number of examples per operation) to stay under three
//! minutes on a two-core CI machine. `scripts/test.sh` installs the pinned
//! schemathesis into a venv and names it in `WAYBILL_SCHEMATHESIS`; without
//! it this test fails and says how to install it.
//!
//! A second test checks the document itself without schemathesis: every
//! route the router serves is documented, and every `/api` operation lists
//! the error answers every `/api` call can get.

#[path = "common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{wait_until, Node};
use serde_json::{json, Value};

/// The version `scripts/test.sh` installs (kept in step with it).
const PINNED: &str = "4.32.5";
/// Where `scripts/test.sh` puts its venv when `WAYBILL_SCHEMATHESIS` is unset.
const DEFAULT_VENV_ST: &str = "/var/cache/waybill/venv/bin/st";
const TOKEN: &str = "schemathesis-token";
/// Test cases per operation and phase: enough to reach every parameter's
/// edge cases, few enough for the three-minute budget.
const MAX_EXAMPLES: &str = "15";
/// Per-operation settings: the few rules OpenAPI 3.0 cannot state.
const CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/schemathesis.toml");
/// Fixed so that a failure found in CI reproduces locally.
const SEED: &str = "20261202";
/// The whole run, node start to verdict, on a two-core machine.
const BUDGET: Duration = Duration::from_secs(180);

/// The schemathesis command: `WAYBILL_SCHEMATHESIS`, the default venv, or
/// `st` on the PATH.
fn schemathesis() -> Result<PathBuf, String> {
    let candidates: Vec<PathBuf> = std::env::var_os("WAYBILL_SCHEMATHESIS")
        .map(PathBuf::from)
        .into_iter()
        .chain([PathBuf::from(DEFAULT_VENV_ST)])
        .chain(
            std::env::var_os("PATH")
                .map(|p| std::env::split_paths(&p).map(|d| d.join("st")).collect::<Vec<_>>())
                .unwrap_or_default(),
        )
        .collect();
    for c in &candidates {
        let ok = Command::new(c)
            .arg("--version")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .output()
            .is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains("version"));
        if ok {
            return Ok(c.clone());
        }
    }
    Err(format!(
        "schemathesis is not installed (looked at $WAYBILL_SCHEMATHESIS, {DEFAULT_VENV_ST} and `st` on the PATH). \
         Install it with `./scripts/test.sh` (it does so before the tests), or by hand: \
         `python3 -m venv /var/cache/waybill/venv && /var/cache/waybill/venv/bin/pip install schemathesis=={PINNED}`"
    ))
}

/// A few messages, an empty topic, a consumer group and a dead letter, so
/// that list and detail operations answer with data, not only empties.
async fn seed(node: &Node) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    for i in 0..5 {
        let r = http
            .post(format!("{}/api/v1/topics/orders/messages", node.http))
            .bearer_auth(TOKEN)
            .json(&json!({"key": format!("order-{i}"), "body": format!("order {i}"), "tags": "seed"}))
            .send()
            .await?;
        anyhow::ensure!(r.status().is_success(), "seed send: {}", r.text().await?);
    }
    let r = http
        .post(format!("{}/api/v1/topics", node.http))
        .bearer_auth(TOKEN)
        .json(&json!({"topic": "payments", "queues": 2}))
        .send()
        .await?;
    anyhow::ensure!(r.status().is_success(), "seed topic: {}", r.text().await?);
    // A consumer whose handler always fails: with no retries allowed, each
    // message it takes becomes a dead letter of group `billing`.
    let out = Command::new(env!("CARGO_BIN_EXE_waybill"))
        .args([
            "consume",
            "--broker",
            &node.broker,
            "--topic",
            "orders",
            "--group",
            "billing",
        ])
        .args(["--exec", "exit 1", "--idle-exit-ms", "1000"])
        .env("WAYBILL_AUTH_TOKEN", TOKEN)
        .stdin(Stdio::null())
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "seed consume: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (http, url) = (&http, &format!("{}/api/v1/dlq?group=billing", node.http));
    wait_until(
        "a dead letter of group billing",
        Duration::from_secs(30),
        move || async move {
            let v: Value = http.get(url).bearer_auth(TOKEN).send().await?.json().await?;
            Ok(v["messages"].as_array().is_some_and(|m| !m.is_empty()))
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn schemathesis_over_the_whole_document_finds_no_server_error_and_no_conformance_failure() -> anyhow::Result<()> {
    let st = schemathesis().map_err(anyhow::Error::msg)?;
    let started = Instant::now();
    let tmp = tempfile::tempdir()?;
    let node = Node::start(
        &tmp.path().join("node"),
        &[
            "--auth-token",
            TOKEN,
            "--retry-delays",
            "10ms",
            "--max-reconsume-times",
            "0",
        ],
    )?;
    println!("--- seed data on {}", node.http);
    seed(&node).await?;

    println!("--- schemathesis {} over {}/api/openapi.json", st.display(), node.http);
    let run = || {
        tokio::task::block_in_place(|| {
            Command::new(&st)
                .arg("--config-file")
                .arg(CONFIG)
                .arg("run")
                .arg(format!("{}/api/openapi.json", node.http))
                .args(["--checks", "all", "--max-examples", MAX_EXAMPLES, "--seed", SEED])
                .args(["--generation-database", "none", "--no-color", "--workers", "2"])
                .args(["--request-timeout", "10"])
                .args(["--header", &format!("Authorization: Bearer {TOKEN}")])
                // The live feed is a stream that never ends by design: a
                // tester waiting for its body would only time out. It is
                // checked below instead.
                .args(["--exclude-path", "/api/v1/events"])
                .current_dir(tmp.path())
                .stdin(Stdio::null())
                .output()
        })
    };
    let text = |out: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    let mut out = run()?;
    let mut report = text(&out);
    // CPython 3.11's parser sometimes raises this inside hypothesis while
    // it describes a strategy's filter (seen once in a full run, then not
    // on the same seed): the tester crashed, it found nothing about the
    // API. One more run; a second crash, or any real finding, fails.
    if !out.status.success() && report.contains("SystemError: AST constructor recursion depth mismatch") {
        println!("{report}\n--- schemathesis itself crashed (a CPython parser error, not a finding): once more");
        out = run()?;
        report = text(&out);
    }
    let elapsed = started.elapsed();
    println!("{report}");
    println!("--- schemathesis finished in {elapsed:.1?}");
    assert!(
        out.status.success(),
        "schemathesis found failures (exit {:?}); its report is above",
        out.status.code()
    );
    assert!(elapsed < BUDGET, "the run took {elapsed:?}, over the {BUDGET:?} budget");

    println!("--- the live feed: an event stream with the token, a JSON 401 without");
    let http = reqwest::Client::new();
    let events = format!("{}/api/v1/events", node.http);
    let r = http.get(&events).bearer_auth(TOKEN).send().await?;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers().get("content-type").and_then(|v| v.to_str().ok()),
        Some("text/event-stream")
    );
    drop(r);
    let r = http.get(&events).send().await?;
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await?;
    assert!(v["error"].is_string(), "{v}");
    Ok(())
}

/// The document as the binary serves it.
fn document() -> anyhow::Result<Value> {
    Ok(serde_json::from_str(include_str!("../server/src/api/openapi.json"))?)
}

/// `(path, method)` of every route in the router, read from its source:
/// `.route("/x", get(a).post(b))` under `/api/v1`, and the top-level ones.
fn routes() -> Vec<(String, String)> {
    let src = include_str!("../server/src/api/mod.rs");
    let mut out = Vec::new();
    for line in src.lines().map(str::trim) {
        let Some(rest) = line
            .strip_prefix(".route(\"")
            .or_else(|| line.strip_prefix("Router::new().route(\""))
        else {
            continue;
        };
        let Some((path, handlers)) = rest.split_once('"') else {
            continue;
        };
        let full = if path.starts_with("/api/") || path == "/healthz" || path == "/metrics" {
            path.to_string()
        } else {
            format!("/api/v1{path}")
        };
        for method in ["get", "post", "delete", "put", "patch"] {
            if handlers.contains(&format!("{method}(")) {
                out.push((full.clone(), method.to_string()));
            }
        }
    }
    out
}

#[test]
fn every_route_is_documented_with_the_errors_every_api_call_can_get() -> anyhow::Result<()> {
    let doc = document()?;
    let routes = routes();
    assert!(
        routes.len() >= 30,
        "the route list parsed from mod.rs looks short: {routes:?}"
    );
    for (path, method) in &routes {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} is served but not documented"
        );
    }
    let error = json!({"$ref": "#/components/schemas/Error"});
    assert_eq!(
        doc["security"],
        json!([{"bearer": []}]),
        "bearer security applies globally"
    );
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    let responses = &doc["components"]["responses"];
    let paths = doc["paths"].as_object().map(|p| p.iter()).into_iter().flatten();
    for (path, ops) in paths {
        for (method, op) in ops.as_object().into_iter().flatten() {
            assert!(
                routes.iter().any(|(p, m)| p == path && m == method),
                "{method} {path} is documented but not served"
            );
            let r = &op["responses"];
            let answers = |code: &str| r[code].is_object();
            if !path.starts_with("/api") {
                assert_eq!(op["security"], json!([]), "{method} {path} is open to probes");
                continue;
            }
            let write = method != "get";
            let body = op.get("requestBody").is_some();
            for (code, needed) in [
                ("401", true),
                ("429", true),
                ("403", write),
                ("413", body),
                ("5XX", true),
            ] {
                assert!(!needed || answers(code), "{method} {path} does not document {code}");
            }
            // Every error answer is `{"error": string}`, inline or shared.
            for (code, answer) in r.as_object().into_iter().flatten() {
                if code.starts_with('2') {
                    continue;
                }
                let answer = match answer["$ref"].as_str() {
                    Some(name) => &responses[name.trim_start_matches("#/components/responses/")],
                    None => answer,
                };
                assert_eq!(
                    answer["content"]["application/json"]["schema"], error,
                    "{method} {path} {code} is not an {{\"error\"}} answer"
                );
            }
        }
    }
    Ok(())
}
