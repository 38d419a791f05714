//! `waybill cluster status|promote`: the replication group over the HTTP API.

use clap::{Args, Subcommand};

#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// HTTP address of a node (for promote: the replica to promote).
    #[arg(long, global = true, default_value = "127.0.0.1:8080")]
    pub http: String,
    #[command(flatten)]
    pub tls: super::tls::TlsArgs,
    #[command(subcommand)]
    pub command: ClusterCommand,
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Members, roles, positions and replication lag.
    Status {
        /// Print the raw JSON answer.
        #[arg(long)]
        json: bool,
    },
    /// Makes the node at --http the primary (operator failover).
    Promote,
}

pub async fn run(args: ClusterArgs) -> anyhow::Result<()> {
    let (client, base) = super::tls::api(&args.http, &args.tls).await?;
    match args.command {
        ClusterCommand::Status { json } => {
            let v = super::json_answer(client.get(format!("{base}/api/v1/cluster")).send().await?).await?;
            if json {
                outln!("{v}");
                return Ok(());
            }
            outln!(
                "replication {}  flush {}  term {}",
                v["replication"].as_str().unwrap_or("?"),
                v["flush"].as_str().unwrap_or("?"),
                v["term"]
            );
            outln!(
                "{:>4}  {:<8}  {:<5}  {:<21}  {:>14}  {:>14}  {:>14}  {:>10}",
                "id",
                "role",
                "alive",
                "broker",
                "log_end",
                "flushed",
                "replicated",
                "lag"
            );
            for n in v["nodes"].as_array().into_iter().flatten() {
                outln!(
                    "{:>4}  {:<8}  {:<5}  {:<21}  {:>14}  {:>14}  {:>14}  {:>10}",
                    n["id"].to_string(),
                    n["role"].as_str().unwrap_or("?"),
                    n["alive"].to_string(),
                    n["broker_addr"].as_str().unwrap_or(""),
                    n["log_end"].to_string(),
                    n["flushed"].to_string(),
                    n["replicated"].to_string(),
                    n["lag"].to_string()
                );
            }
        }
        ClusterCommand::Promote => {
            let v = super::json_answer(client.post(format!("{base}/api/v1/cluster/promote")).send().await?).await?;
            outln!("{v}");
        }
    }
    Ok(())
}
