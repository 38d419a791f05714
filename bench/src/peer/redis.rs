//! The Redis peer (`waybill-bench --vs redis://ADDR`): the same workload as
//! XADD to a stream, in the same run.
//!
//! Invariants:
//! - The stream is the bench's own: a fresh, temp-named key, deleted
//!   afterwards whether the run succeeded or not. Nothing else on the
//!   server is touched (its configuration is only read).
//! - Same shape as the Waybill run: `producers` connections (one
//!   multiplexed connection each), each with `inflight` slots that send
//!   `XADD key * b BODY` and wait for the reply. Concurrent slots of one
//!   connection are pipelined on it, as Waybill's are on its producer's.
//!   With `--batch B`, B XADDs go as one pipeline and count when every
//!   reply is in. One warm-up XADD per connection happens before the clock
//!   starts.
//! - What a reply means depends on the server: with `appendonly yes` and
//!   `appendfsync always` Redis writes and fsyncs the AOF before it answers
//!   (the counterpart of a sync-flush `SEND_OK`); the run's `server` names
//!   the setting it read with `CONFIG GET`, so a report never calls a
//!   page-cache ack durable (and `--vs redis://` without `--peer-sync`
//!   never compares with one: see `peer::Target::prepare`).
//! - Consumers are not driven on Redis (`--consumers` runs Waybill's only).

use anyhow::Context;
use redis::aio::MultiplexedConnection;

use waybill::bench::load::{drive, stamped, template, Load};

use super::PeerRun;

/// How the server at `url` acknowledges writes: `always` (AOF fsynced
/// before each reply), or what it does instead.
pub async fn sync_mode(url: &str) -> anyhow::Result<String> {
    let mut conn = connect(url).await?;
    let get = |name: &'static str| redis::cmd("CONFIG").arg("GET").arg(name).clone();
    let aof: Vec<String> = get("appendonly")
        .query_async(&mut conn)
        .await
        .context("CONFIG GET appendonly")?;
    let fsync: Vec<String> = get("appendfsync")
        .query_async(&mut conn)
        .await
        .context("CONFIG GET appendfsync")?;
    let on = aof.get(1).is_some_and(|v| v == "yes");
    Ok(match (on, fsync.get(1).map(String::as_str)) {
        (true, Some(mode)) => mode.to_string(),
        _ => "no-aof".to_string(),
    })
}

async fn connect(url: &str) -> anyhow::Result<MultiplexedConnection> {
    let client = redis::Client::open(url).with_context(|| format!("bad Redis URL {url}"))?;
    client
        .get_multiplexed_async_connection()
        .await
        .with_context(|| format!("cannot connect to Redis at {url}"))
}

/// Runs `load` against the Redis at `url`; the run's `server` names the URL,
/// the server's version and its `appendfsync`.
pub async fn run(url: &str, load: &Load, pid: Option<u32>) -> anyhow::Result<PeerRun> {
    let mut admin = connect(url).await?;
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut admin)
        .await
        .context("INFO server")?;
    let version = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .unwrap_or("?")
        .trim()
        .to_string();
    let sync = sync_mode(url).await?;
    let key = format!("waybill-bench-{}", waybill::bench::unique_suffix());
    let outcome = run_on_key(url, &key, load, pid).await;
    let del: redis::RedisResult<i64> = redis::cmd("DEL").arg(&key).query_async(&mut admin).await;
    if let Err(e) = del {
        tracing::warn!(key = %key, error = %e, "cannot delete the bench stream");
    }
    let (load, cpu_us_per_msg) = outcome?;
    Ok(PeerRun {
        load,
        server: format!("{url} (redis {version}, appendfsync {sync})"),
        e2e: None,
        cpu_us_per_msg,
    })
}

async fn run_on_key(
    url: &str,
    key: &str,
    load: &Load,
    pid: Option<u32>,
) -> anyhow::Result<(waybill::bench::load::LoadResult, Option<f64>)> {
    let mut senders = Vec::with_capacity(load.producers);
    for _ in 0..load.producers {
        let conn = connect(url).await?;
        xadd(conn.clone(), key.to_string(), vec![stamped(&template(load.size))])
            .await
            .map_err(anyhow::Error::msg)
            .context("warm-up XADD failed")?;
        senders.push((conn, key.to_string()));
    }
    let meter = waybill::bench::cpu::Meter::start(pid);
    let result = drive(load, senders, |(conn, key), bodies| xadd(conn, key, bodies)).await;
    let cpu = meter.per_msg(result.acked);
    Ok((result, cpu))
}

/// XADDs `bodies` (one pipeline) and waits for every reply.
async fn xadd(mut conn: MultiplexedConnection, key: String, bodies: Vec<Vec<u8>>) -> Result<(), String> {
    let mut pipe = redis::pipe();
    for body in bodies {
        pipe.cmd("XADD").arg(&key).arg("*").arg("b").arg(body);
    }
    let ids: Vec<String> = pipe
        .query_async(&mut conn)
        .await
        .map_err(|e| format!("XADD failed: {e}"))?;
    if ids.is_empty() {
        return Err("XADD answered no id".into());
    }
    Ok(())
}
