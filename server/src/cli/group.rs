//! `waybill group list|reset|skip|delete`: consumer-group operations
//! through the HTTP API (`/api/v1/consumers…`).
//!
//! `list` prints each group with its lag and live members (host, last
//! heartbeat, owned queues); `reset`, `skip` and `delete` print the API's
//! JSON answer on stdout. Every action is refused by the server while the
//! group has live members unless `--force`, and recorded in the audit log
//! under `$USER` (or `cli`). An unknown group or topic, bad input or a
//! refusal ends the command non-zero with the server's sentence.

use anyhow::bail;
use clap::{Args, Subcommand};
use serde_json::{json, Value};

#[derive(Debug, Args)]
pub struct GroupArgs {
    /// HTTP address of a node.
    #[arg(long, global = true, default_value = "127.0.0.1:8080")]
    pub http: String,
    #[command(flatten)]
    pub tls: super::tls::TlsArgs,
    #[command(subcommand)]
    pub command: GroupCommand,
}

#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// Lists consumer groups: topic, lag, live members and what they own.
    List {
        /// Print the raw JSON answer.
        #[arg(long)]
        json: bool,
    },
    /// Resets a group's committed offsets on a topic (all queues, or one).
    Reset {
        /// The consumer group.
        group: String,
        /// The topic whose offsets move (default: the one the group consumes).
        #[arg(long)]
        topic: Option<String>,
        /// To the first message stored at or after this time (RFC 3339 or epoch ms).
        #[arg(long, conflicts_with_all = ["to_end", "to_offset"])]
        to_time: Option<String>,
        /// To the end: nothing now in the queues is redelivered.
        #[arg(long, conflicts_with = "to_offset")]
        to_end: bool,
        /// To this queue offset (past a queue's end is refused).
        #[arg(long)]
        to_offset: Option<u64>,
        /// Only this queue of the topic (default: all of them).
        #[arg(long)]
        queue: Option<u32>,
        /// Reset even while the group has live members (they continue from the new position).
        #[arg(long)]
        force: bool,
        /// Print each queue's move (from → to) and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Skips one message: the group's next message on a queue is committed past, never delivered.
    Skip {
        /// The consumer group.
        group: String,
        /// The topic (default: the one the group consumes).
        #[arg(long)]
        topic: Option<String>,
        /// The queue of the message.
        #[arg(long)]
        queue: u32,
        /// The message's queue offset (must be the group's committed offset on that queue).
        #[arg(long)]
        offset: u64,
        /// Skip even while the group has live members.
        #[arg(long)]
        force: bool,
    },
    /// Deletes an idle group: its committed offsets and membership are forgotten.
    Delete {
        /// The consumer group.
        group: String,
        /// Delete even while the group has live members (they rejoin at their next heartbeat).
        #[arg(long)]
        force: bool,
    },
}

pub async fn run(args: GroupArgs) -> anyhow::Result<()> {
    let (client, base) = super::tls::api(&args.http, &args.tls).await?;
    let user = std::env::var("USER").unwrap_or_else(|_| "cli".into());
    let v = match args.command {
        GroupCommand::List { json } => {
            let v = super::json_answer(client.get(format!("{base}/api/v1/consumers")).send().await?).await?;
            if json {
                outln!("{v}");
            } else {
                print_list(&v);
            }
            return Ok(());
        }
        GroupCommand::Reset {
            group,
            topic,
            to_time,
            to_end,
            to_offset,
            queue,
            force,
            dry_run,
        } => {
            let mut body = json!({ "force": force, "dry_run": dry_run });
            match (to_time, to_end, to_offset) {
                (Some(t), _, _) => {
                    body["to"] = json!("time");
                    body["at"] = json!(t);
                }
                (None, true, _) => body["to"] = json!("end"),
                (None, false, Some(o)) => {
                    body["to"] = json!("offset");
                    body["offset"] = json!(o);
                }
                (None, false, None) => bail!("say where to: --to-time, --to-end or --to-offset"),
            }
            if let Some(t) = topic {
                body["topic"] = json!(t);
            }
            if let Some(q) = queue {
                body["queue"] = json!(q);
            }
            let url = format!("{base}/api/v1/consumers/{}/offsets", path_segment(&group)?);
            let req = client.post(url).header("x-waybill-user", &user).json(&body);
            super::json_answer(req.send().await?).await?
        }
        GroupCommand::Skip {
            group,
            topic,
            queue,
            offset,
            force,
        } => {
            let mut body = json!({ "queue": queue, "offset": offset, "force": force });
            if let Some(t) = topic {
                body["topic"] = json!(t);
            }
            let url = format!("{base}/api/v1/consumers/{}/skip", path_segment(&group)?);
            let req = client.post(url).header("x-waybill-user", &user).json(&body);
            super::json_answer(req.send().await?).await?
        }
        GroupCommand::Delete { group, force } => {
            let url = format!("{base}/api/v1/consumers/{}", path_segment(&group)?);
            let req = client
                .delete(url)
                .query(&[("force", force.to_string())])
                .header("x-waybill-user", &user);
            super::json_answer(req.send().await?).await?
        }
    };
    outln!("{v}");
    Ok(())
}

/// A group name as a URL path segment: group names are letters, digits,
/// `_` and `-` (the broker's rule), so anything else is refused here.
fn path_segment(group: &str) -> anyhow::Result<&str> {
    if group.is_empty()
        || !group
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        bail!("bad group name {group:?}: use letters, digits, '_' and '-'");
    }
    Ok(group)
}

/// One block per group: lag and members.
fn print_list(v: &Value) {
    let empty = Vec::new();
    let groups = v["groups"].as_array().unwrap_or(&empty);
    for g in groups {
        outln!(
            "{}  topic {}  lag {}  retrying {}  members {}",
            g["group"].as_str().unwrap_or(""),
            g["topic"].as_str().unwrap_or("-"),
            g["lag"],
            g["retrying"],
            g["members"].as_array().map_or(0, Vec::len),
        );
        for m in g["member_details"].as_array().unwrap_or(&empty) {
            let queues: Vec<String> = m["queues"]
                .as_array()
                .unwrap_or(&empty)
                .iter()
                .map(|q| format!("{}:{}", q["topic"].as_str().unwrap_or(""), q["queue_id"]))
                .collect();
            let beat = m["last_heartbeat_ms"]
                .as_i64()
                .map_or_else(|| "-".to_string(), waybill::time::rfc3339);
            outln!(
                "  {}  {}  heartbeat {}  queues {}",
                m["id"].as_str().unwrap_or(""),
                m["host"].as_str().unwrap_or(""),
                beat,
                queues.join(" ")
            );
        }
    }
    outln!("{} group(s)", groups.len());
}
