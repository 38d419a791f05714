//! `waybill topic list|show|create|delete`: topics through the HTTP API.
//!
//! Tables for people, `--json` for scripts (the API's answer as is). An
//! unknown topic, a refused delete (groups still lag) or a bad name ends
//! with the node's sentence and a non-zero exit. Who acted is `$USER`
//! (`cli` without it), recorded in the node's audit log.

use clap::{Args, Subcommand};
use serde_json::{json, Value};

#[derive(Debug, Args)]
pub struct TopicArgs {
    /// HTTP address of a node.
    #[arg(long, global = true, default_value = "127.0.0.1:8080")]
    pub http: String,
    #[command(flatten)]
    pub tls: super::tls::TlsArgs,
    /// Print the raw JSON answer.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: TopicCommand,
}

#[derive(Debug, Subcommand)]
pub enum TopicCommand {
    /// Lists the user topics with their message counts.
    List,
    /// Shows one topic: its queues and each consumer group's lag.
    Show {
        /// The topic.
        topic: String,
    },
    /// Creates a topic.
    Create {
        /// The topic: ASCII letters, digits, '_' and '-', at most 127.
        topic: String,
        /// Queues, 1 to 64 (the node's default when absent).
        #[arg(long)]
        queues: Option<u32>,
    },
    /// Deletes a topic (refused while a consumer group has unconsumed messages on it).
    Delete {
        /// The topic.
        topic: String,
        /// Delete even though consumer groups have unconsumed messages on it.
        #[arg(long)]
        force: bool,
    },
}

/// A stored time (ms) for a table cell.
fn at(v: &Value) -> String {
    v.as_i64().map_or_else(|| "-".to_string(), waybill::time::rfc3339)
}

fn print_list(v: &Value) {
    let empty = Vec::new();
    let topics = v["topics"].as_array().unwrap_or(&empty);
    outln!(
        "{:<32} {:>6} {:>10} {:>12} {:>9} {:>9} {:<24} groups",
        "topic",
        "queues",
        "messages",
        "bytes",
        "in/s",
        "out/s",
        "last message"
    );
    for t in topics {
        let groups: Vec<&str> = t["groups"]
            .as_array()
            .map(|g| g.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        outln!(
            "{:<32} {:>6} {:>10} {:>12} {:>9.1} {:>9.1} {:<24} {}",
            t["topic"].as_str().unwrap_or(""),
            t["queues"],
            t["messages"],
            t["bytes"],
            t["produce_per_sec"].as_f64().unwrap_or(0.0),
            t["consume_per_sec"].as_f64().unwrap_or(0.0),
            at(&t["last_ms"]),
            groups.join(","),
        );
    }
    outln!("{} topic(s)", topics.len());
}

fn print_one(v: &Value) {
    outln!(
        "topic {}: {} queue(s), {} message(s), {} byte(s), first {}, last {}",
        v["topic"].as_str().unwrap_or(""),
        v["queues"],
        v["messages"],
        v["bytes"],
        at(&v["first_ms"]),
        at(&v["last_ms"]),
    );
    let empty = Vec::new();
    outln!(
        "{:>6} {:>10} {:>12} {:>12}",
        "queue",
        "messages",
        "first offset",
        "next offset"
    );
    for q in v["per_queue"].as_array().unwrap_or(&empty) {
        outln!(
            "{:>6} {:>10} {:>12} {:>12}",
            q["queue"],
            q["messages"],
            q["first_offset"],
            q["next_offset"]
        );
    }
    for g in v["lag"].as_array().unwrap_or(&empty) {
        outln!("group {}: lag {}", g["group"].as_str().unwrap_or(""), g["lag"]);
    }
}

pub async fn run(args: TopicArgs) -> anyhow::Result<()> {
    let (client, base) = super::tls::api(&args.http, &args.tls).await?;
    let user = std::env::var("USER").unwrap_or_else(|_| "cli".into());
    let v = match &args.command {
        TopicCommand::List => super::json_answer(client.get(format!("{base}/api/v1/topics")).send().await?).await?,
        TopicCommand::Show { topic } => {
            super::json_answer(client.get(format!("{base}/api/v1/topics/{topic}")).send().await?).await?
        }
        TopicCommand::Create { topic, queues } => {
            let mut body = json!({ "topic": topic });
            if let Some(q) = queues {
                body["queues"] = json!(q);
            }
            super::json_answer(
                client
                    .post(format!("{base}/api/v1/topics"))
                    .header("x-waybill-user", &user)
                    .json(&body)
                    .send()
                    .await?,
            )
            .await?
        }
        TopicCommand::Delete { topic, force } => {
            super::json_answer(
                client
                    .delete(format!("{base}/api/v1/topics/{topic}"))
                    .query(&[("force", force.to_string())])
                    .header("x-waybill-user", &user)
                    .send()
                    .await?,
            )
            .await?
        }
    };
    if args.json {
        outln!("{v}");
        return Ok(());
    }
    match &args.command {
        TopicCommand::List => print_list(&v),
        TopicCommand::Show { .. } => print_one(&v),
        TopicCommand::Create { topic, .. } => outln!("created topic {topic} with {} queue(s)", v["queues"]),
        TopicCommand::Delete { topic, force } => {
            outln!("deleted topic {topic}{}", if *force { " (forced)" } else { "" })
        }
    }
    Ok(())
}
