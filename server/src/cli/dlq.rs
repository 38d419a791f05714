//! `waybill dlq list|replay`: dead letters through the HTTP API.

use anyhow::bail;
use clap::{Args, Subcommand};

#[derive(Debug, Args)]
pub struct DlqArgs {
    /// HTTP address of a node.
    #[arg(long, global = true, default_value = "127.0.0.1:8080")]
    pub http: String,
    #[command(subcommand)]
    pub command: DlqCommand,
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// Lists a group's dead letters.
    List {
        #[arg(long)]
        group: String,
        /// Print the raw JSON answer.
        #[arg(long)]
        json: bool,
    },
    /// Replays dead letters to their group.
    Replay {
        #[arg(long)]
        group: String,
        /// One dead letter by id.
        #[arg(long, conflicts_with = "all")]
        id: Option<String>,
        /// Every dead letter of the group (not yet replayed, not quarantined).
        #[arg(long)]
        all: bool,
        /// Only those with this key (with --all).
        #[arg(long)]
        key: Option<String>,
        /// List what would be replayed, change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Replays per second (with --all).
        #[arg(long)]
        rate: Option<u32>,
        /// Replay even a quarantined letter (with --id).
        #[arg(long)]
        force: bool,
    },
}

/// `GET /api/v1/dlq?group=G`.
async fn list(client: &reqwest::Client, base: &str, group: &str) -> anyhow::Result<serde_json::Value> {
    super::json_answer(
        client
            .get(format!("{base}/api/v1/dlq"))
            .query(&[("group", group)])
            .send()
            .await?,
    )
    .await
}

pub async fn run(args: DlqArgs) -> anyhow::Result<()> {
    let client = super::http_client()?;
    let base = super::http_base(&args.http);
    let user = std::env::var("USER").unwrap_or_else(|_| "cli".into());
    match args.command {
        DlqCommand::List { group, json } => {
            let v = list(&client, &base, &group).await?;
            if json {
                println!("{v}");
                return Ok(());
            }
            let empty = Vec::new();
            let rows = v["messages"].as_array().unwrap_or(&empty);
            println!(
                "{:<30} {:<30} {:<12} {:>7} {:<20} reason",
                "dead letter id", "original id", "state", "retries", "key"
            );
            for m in rows {
                println!(
                    "{:<30} {:<30} {:<12} {:>7} {:<20} {}",
                    m["id"].as_str().unwrap_or(""),
                    m["origin_id"].as_str().unwrap_or(""),
                    m["state"].as_str().unwrap_or(""),
                    m["reconsume_times"],
                    m["key"].as_str().unwrap_or("-"),
                    m["reason"].as_str().unwrap_or(""),
                );
            }
            println!("{} dead letter(s) in group {group}", rows.len());
        }
        DlqCommand::Replay {
            group,
            id,
            all,
            key,
            dry_run,
            rate,
            force,
        } => {
            let v = match (id, all) {
                (Some(id), _) => {
                    if dry_run {
                        let list = list(&client, &base, &group).await?;
                        let empty = Vec::new();
                        let found = list["messages"]
                            .as_array()
                            .unwrap_or(&empty)
                            .iter()
                            .find(|m| m["id"] == id.as_str())
                            .cloned();
                        match found {
                            Some(m) => serde_json::json!({"dry_run": true, "would_replay": [m]}),
                            None => bail!("no dead letter {id} in group {group}"),
                        }
                    } else {
                        super::json_answer(
                            client
                                .post(format!("{base}/api/v1/dlq/{id}/replay"))
                                .query(&[("force", force.to_string())])
                                .header("x-waybill-user", &user)
                                .send()
                                .await?,
                        )
                        .await?
                    }
                }
                (None, true) => {
                    let mut q = vec![("group", group.clone()), ("dry_run", dry_run.to_string())];
                    if let Some(k) = key {
                        q.push(("key", k));
                    }
                    if let Some(r) = rate {
                        q.push(("rate", r.to_string()));
                    }
                    super::json_answer(
                        client
                            .post(format!("{base}/api/v1/dlq/replay"))
                            .query(&q)
                            .header("x-waybill-user", &user)
                            .send()
                            .await?,
                    )
                    .await?
                }
                (None, false) => bail!("give --id ID or --all"),
            };
            println!("{v}");
        }
    }
    Ok(())
}
