//! `waybill dlq list|replay|jobs`: dead letters through the HTTP API.
//!
//! `replay --all` runs a redrive job (`POST /api/v1/dlq/jobs`) and follows
//! it with a progress bar on stderr until it ends; the job's final state is
//! printed as JSON on stdout, and a job that failed or was cancelled exits
//! non-zero.

use std::io::Write;
use std::time::Duration;

use anyhow::bail;
use clap::{Args, Subcommand};
use serde_json::{json, Value};

/// How often a running job's progress is read.
const POLL: Duration = Duration::from_millis(200);

#[derive(Debug, Args)]
pub struct DlqArgs {
    /// HTTP address of a node.
    #[arg(long, global = true, default_value = "127.0.0.1:8080")]
    pub http: String,
    #[command(flatten)]
    pub tls: super::tls::TlsArgs,
    #[command(subcommand)]
    pub command: DlqCommand,
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// Lists a group's dead letters.
    List {
        /// Consumer group whose dead letters to list (an unknown group is an error).
        #[arg(long)]
        group: String,
        /// Print the raw JSON answer.
        #[arg(long)]
        json: bool,
    },
    /// Replays dead letters to their group.
    Replay {
        /// Consumer group the dead letters go back to.
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
        /// Only those whose failure reason contains this text (with --all).
        #[arg(long)]
        reason: Option<String>,
        /// Only those dead-lettered at or after this time (RFC 3339 or ms).
        #[arg(long)]
        from: Option<String>,
        /// Only those dead-lettered at or before this time (RFC 3339 or ms).
        #[arg(long)]
        to: Option<String>,
        /// List what would be replayed, change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Replays per second (with --all).
        #[arg(long)]
        rate: Option<u32>,
        /// Replay even a quarantined or already replayed letter (with --id).
        #[arg(long)]
        force: bool,
    },
    /// Discards a dead letter: kept as evidence, never replayed.
    Discard {
        #[arg(long)]
        id: String,
        /// Why (recorded, shown on the timeline).
        #[arg(long)]
        reason: String,
    },
    /// Lists redrive jobs, newest first.
    Jobs {
        #[arg(long)]
        group: Option<String>,
        /// Print the raw JSON answer.
        #[arg(long)]
        json: bool,
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

/// Fails, naming the groups there are, when `group` is not a consumer
/// group of this node: an empty list for a mistyped name would read as
/// "no dead letters".
async fn known_group(client: &reqwest::Client, base: &str, group: &str) -> anyhow::Result<()> {
    let v = super::json_answer(client.get(format!("{base}/api/v1/consumers")).send().await?).await?;
    let mut names: Vec<&str> = v["groups"]
        .as_array()
        .map(|g| g.iter().filter_map(|g| g["group"].as_str()).collect())
        .unwrap_or_default();
    names.sort_unstable();
    names.dedup();
    if names.contains(&group) {
        return Ok(());
    }
    if names.is_empty() {
        bail!("no consumer group {group:?} on this node (it has none yet)");
    }
    bail!(
        "no consumer group {group:?} on this node (groups: {})",
        names.join(", ")
    );
}

pub async fn run(args: DlqArgs) -> anyhow::Result<()> {
    let (client, base) = super::tls::api(&args.http, &args.tls).await?;
    let user = std::env::var("USER").unwrap_or_else(|_| "cli".into());
    match args.command {
        DlqCommand::List { group, json } => {
            let v = list(&client, &base, &group).await?;
            if v["messages"].as_array().is_none_or(|m| m.is_empty()) {
                known_group(&client, &base, &group).await?;
            }
            if json {
                outln!("{v}");
                return Ok(());
            }
            let empty = Vec::new();
            let rows = v["messages"].as_array().unwrap_or(&empty);
            outln!(
                "{:<30} {:<30} {:<12} {:>7} {:<20} reason",
                "dead letter id",
                "original id",
                "state",
                "attempts",
                "key"
            );
            for m in rows {
                outln!(
                    "{:<30} {:<30} {:<12} {:>7} {:<20} {}",
                    m["id"].as_str().unwrap_or(""),
                    m["origin_id"].as_str().unwrap_or(""),
                    m["state"].as_str().unwrap_or(""),
                    // Failed deliveries, as the dashboard counts them: the
                    // first one plus its retries (reconsume_times).
                    m["reconsume_times"].as_u64().map_or(0, |r| r + 1),
                    m["key"].as_str().unwrap_or("-"),
                    m["reason"].as_str().unwrap_or(""),
                );
            }
            outln!("{} dead letter(s) in group {group}", rows.len());
        }
        DlqCommand::Replay {
            group,
            id,
            all,
            key,
            reason,
            from,
            to,
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
                    let mut body = json!({
                        "group": group,
                        "dry_run": dry_run,
                        "filter": {"key": key, "reason": reason, "from": from, "to": to},
                    });
                    if let Some(r) = rate {
                        body["rate_per_sec"] = json!(r);
                    }
                    let started = super::json_answer(
                        client
                            .post(format!("{base}/api/v1/dlq/jobs"))
                            .json(&body)
                            .header("x-waybill-user", &user)
                            .send()
                            .await?,
                    )
                    .await?;
                    if dry_run {
                        started
                    } else {
                        follow(&client, &base, &started).await?
                    }
                }
                (None, false) => bail!("give --id ID or --all"),
            };
            outln!("{v}");
            if let Some(state) = v["state"].as_str().filter(|s| *s != "completed") {
                bail!("redrive job {} {state}: {}", v["id"], v["why"].as_str().unwrap_or(""));
            }
        }
        DlqCommand::Discard { id, reason } => {
            let v = super::json_answer(
                client
                    .post(format!("{base}/api/v1/dlq/{id}/discard"))
                    .json(&json!({ "reason": reason }))
                    .header("x-waybill-user", &user)
                    .send()
                    .await?,
            )
            .await?;
            outln!("{v}");
        }
        DlqCommand::Jobs { group, json } => {
            let mut req = client.get(format!("{base}/api/v1/dlq/jobs"));
            if let Some(g) = &group {
                req = req.query(&[("group", g)]);
            }
            let v = super::json_answer(req.send().await?).await?;
            if json {
                outln!("{v}");
                return Ok(());
            }
            let empty = Vec::new();
            let jobs = v["jobs"].as_array().unwrap_or(&empty);
            outln!(
                "{:<24} {:<16} {:<10} {:>8} {:>8} {:>8} {:>10} by",
                "job",
                "group",
                "state",
                "matched",
                "replayed",
                "consumed",
                "dead again"
            );
            for j in jobs {
                outln!(
                    "{:<24} {:<16} {:<10} {:>8} {:>8} {:>8} {:>10} {}",
                    j["id"].as_str().unwrap_or(""),
                    j["group"].as_str().unwrap_or(""),
                    j["state"].as_str().unwrap_or(""),
                    j["matched"],
                    j["replayed"],
                    j["consumed"],
                    j["dead_again"],
                    j["by"].as_str().unwrap_or(""),
                );
            }
            outln!("{} job(s)", jobs.len());
        }
    }
    Ok(())
}

/// Follows a started job until it ends, with a progress bar on stderr;
/// returns its last view.
async fn follow(client: &reqwest::Client, base: &str, started: &Value) -> anyhow::Result<Value> {
    let Some(id) = started["id"].as_str() else {
        bail!("the node answered no job id: {started}");
    };
    let mut err = std::io::stderr();
    loop {
        let v = super::json_answer(client.get(format!("{base}/api/v1/dlq/jobs/{id}")).send().await?).await?;
        let (done, total) = (v["replayed"].as_u64().unwrap_or(0), v["matched"].as_u64().unwrap_or(0));
        let width = 30u64;
        let filled = (done * width).checked_div(total).unwrap_or(width) as usize;
        let _ = write!(
            err,
            "\r[{}{}] {done}/{total} replayed, {} consumed, {} dead again ",
            "#".repeat(filled),
            ".".repeat(width as usize - filled.min(width as usize)),
            v["consumed"],
            v["dead_again"],
        );
        let _ = err.flush();
        if v["state"] != "running" {
            let _ = writeln!(err);
            let mut v = v;
            // The per-letter list is for the API and dashboard.
            if let Some(o) = v.as_object_mut() {
                o.remove("letters_detail");
            }
            return Ok(v);
        }
        tokio::time::sleep(POLL).await;
    }
}
