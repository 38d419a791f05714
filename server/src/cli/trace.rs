//! `waybill trace ID` / `waybill trace --key K`: a message's timeline in the
//! terminal, from the HTTP API.

use anyhow::{bail, Context};
use clap::Args;
use serde_json::Value;

#[derive(Debug, Args)]
pub struct TraceArgs {
    /// Message id.
    pub id: Option<String>,
    /// Every message with this key (newest first).
    #[arg(long, conflicts_with = "id")]
    pub key: Option<String>,
    /// HTTP address of a node.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub http: String,
    #[command(flatten)]
    pub tls: super::tls::TlsArgs,
    /// Print the raw JSON.
    #[arg(long)]
    pub json: bool,
}

async fn get(client: &reqwest::Client, url: String) -> anyhow::Result<Value> {
    let resp = client
        .get(&url)
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    super::json_answer(resp).await
}

fn print_timeline(v: &Value) {
    let s = |k: &str| v[k].as_str().unwrap_or("-").to_string();
    outln!(
        "message {}  topic {}  key {}  status {}",
        s("id"),
        s("topic"),
        s("key"),
        s("status")
    );
    if let Some(stages) = v["stages"].as_array() {
        for st in stages {
            let f = |k: &str| st[k].as_str().unwrap_or("").to_string();
            let group = st["group"].as_str().map(|g| format!(" [{g}]")).unwrap_or_default();
            outln!(
                "  {:<24} {:<9} {:<11} node {:<4} {}{}",
                f("at"),
                f("stage"),
                f("outcome"),
                st["node"].as_str().unwrap_or("-"),
                f("detail"),
                group
            );
        }
    }
    if let Some(groups) = v["groups"].as_array() {
        for g in groups {
            outln!(
                "  group {}: {} ({} deliveries)",
                g["group"].as_str().unwrap_or(""),
                g["status"].as_str().unwrap_or(""),
                g["attempts"]
            );
        }
    }
    if let Some(lps) = v["loss_points"].as_array() {
        for lp in lps {
            outln!(
                "  ! {} at {}: {}",
                lp["kind"].as_str().unwrap_or(""),
                lp["stage"].as_str().unwrap_or(""),
                lp["reason"].as_str().unwrap_or("")
            );
        }
    }
    if v["traced"] == false {
        outln!("  (no trace yet: stages shown are what the stored record proves)");
    }
}

pub async fn run(args: TraceArgs) -> anyhow::Result<()> {
    let (client, base) = super::tls::api(&args.http, &args.tls).await?;
    let ids: Vec<String> = match (&args.id, &args.key) {
        (Some(id), _) => vec![id.clone()],
        (None, Some(key)) => {
            let v = get(&client, format!("{base}/api/v1/messages?key={}", urlencode(key))).await?;
            let ids: Vec<String> = v["messages"]
                .as_array()
                .map(|a| a.iter().filter_map(|m| m["id"].as_str().map(str::to_string)).collect())
                .unwrap_or_default();
            if ids.is_empty() {
                bail!("no message with key {key:?}");
            }
            ids
        }
        (None, None) => bail!("give a message id or --key KEY"),
    };
    for id in ids {
        let v = get(&client, format!("{base}/api/v1/messages/{id}")).await?;
        if args.json {
            outln!("{v}");
        } else {
            print_timeline(&v);
        }
    }
    Ok(())
}

/// Percent-encodes a query value.
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
