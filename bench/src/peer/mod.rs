//! The peers `waybill-bench` compares Waybill with, one module per target:
//! [`nats`] (NATS JetStream, `--vs nats://ADDR`), with [`nats_server`] for
//! `--peer-sync always` (a private nats-server that fsyncs every write),
//! and [`redis`] (Redis streams, `--vs redis://ADDR`), with
//! [`redis_server`] for `--peer-sync always` (a private redis-server with
//! `appendfsync always`).
//!
//! Shape of a peer: a [`Target`] variant parsed from the `--vs` URL's scheme;
//! [`Target::prepare`] does what must happen before any measurement
//! (installing a server) and yields a [`Prepared`] peer; [`Prepared::run`]
//! drives the same workload ([`waybill::bench::load`]) and returns a
//! [`PeerRun`]; [`PeerRun::report`] turns it into the report's `peer`.

pub mod nats;
pub mod nats_server;
pub mod redis;
pub mod redis_server;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::bail;
use clap::{Args, ValueEnum};
use waybill::bench::load::{E2e, Load, LoadResult};
use waybill::bench::probe::Probe;
use waybill::bench::report::{Figures, Peer};

/// How the peer syncs its writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PeerSync {
    /// The server at `--vs` as configured (JetStream default: fsync every 2 min; Redis: whatever its appendfsync says). NATS's default.
    Default,
    /// A private server that fsyncs every write, `--vs`'s address unused: nats-server 2.15.1 with `sync_interval: always` (installed from PyPI), or redis-server with `appendfsync always`. Redis's default, except that a server at `--vs` already on `appendfsync always` is used as it is.
    Always,
}

/// The peer flags of `waybill-bench`.
#[derive(Debug, Args)]
pub struct PeerArgs {
    /// Run the same workload against NATS JetStream (nats://127.0.0.1:4222) or Redis streams (redis://127.0.0.1:6379).
    #[arg(long, value_name = "nats://ADDR|redis://ADDR")]
    pub vs: Option<String>,
    /// `always`: compare with a server that fsyncs every write; `default`: the server at --vs as configured.
    #[arg(long, value_enum, requires = "vs")]
    pub peer_sync: Option<PeerSync>,
    /// Venv for `--peer-sync always` [default: target/nats-venv beside the binary's profile dir].
    #[arg(long)]
    pub nats_venv: Option<PathBuf>,
    /// redis-server for `--vs redis://… --peer-sync always` [default: the one on PATH].
    #[arg(long)]
    pub redis_server: Option<PathBuf>,
}

/// A peer named by `--vs`.
#[derive(Debug, Clone)]
pub enum Target {
    /// NATS JetStream at this URL.
    Nats { url: String },
    /// Redis (streams, XADD) at this URL.
    Redis { url: String },
}

impl Target {
    /// The target of `--vs`, refused unless its scheme names a known peer.
    pub fn parse(vs: &str) -> anyhow::Result<Target> {
        if vs.starts_with("nats://") {
            return Ok(Target::Nats { url: vs.to_string() });
        }
        if vs.starts_with("redis://") {
            return Ok(Target::Redis { url: vs.to_string() });
        }
        bail!("--vs takes a NATS or Redis URL, nats://HOST:PORT or redis://HOST:PORT (got {vs:?})")
    }

    /// Everything the peer needs before measuring starts (so that, e.g.,
    /// pip never competes with a run).
    pub async fn prepare(self, args: &PeerArgs) -> anyhow::Result<Prepared> {
        // Redis is compared with `appendfsync always` unless told otherwise:
        // the server at `--vs` when it is configured so, else a private one.
        let sync = match (&self, args.peer_sync) {
            (_, Some(s)) => s,
            (Target::Redis { .. }, None) => PeerSync::Always,
            (Target::Nats { .. }, None) => PeerSync::Default,
        };
        // Why the comparison does not use `--vs`'s server, when it does not.
        let mut note = None;
        let local_bin = match (&self, sync) {
            (Target::Nats { .. }, PeerSync::Always) => {
                let venv = args.nats_venv.clone().unwrap_or_else(nats_server::default_venv);
                Some(nats_server::ensure_binary(&venv).await?)
            }
            (Target::Redis { url }, PeerSync::Always) => {
                if args.peer_sync.is_none() {
                    let given = redis::sync_mode(url).await?;
                    if given == "always" {
                        None
                    } else {
                        note = Some(format!("a private server: {url} has appendfsync {given}"));
                        Some(redis_server::find_binary(args.redis_server.as_deref())?)
                    }
                } else {
                    Some(redis_server::find_binary(args.redis_server.as_deref())?)
                }
            }
            (_, PeerSync::Default) => None,
        };
        Ok(Prepared {
            target: self,
            sync,
            local_bin,
            note,
        })
    }
}

/// A peer ready to run.
pub struct Prepared {
    target: Target,
    sync: PeerSync,
    /// `--peer-sync always`: the private server's executable.
    local_bin: Option<PathBuf>,
    /// Said beside the server in the report (see `Target::prepare`).
    note: Option<String>,
}

impl Prepared {
    /// The peer's name in the report (`target`) and on progress lines.
    pub fn name(&self) -> &'static str {
        match self.target {
            Target::Nats { .. } => "nats",
            Target::Redis { .. } => "redis",
        }
    }

    /// Whether every acknowledged write was fsynced (then the disk probe
    /// is its baseline too).
    pub fn fsyncs_each_write(&self) -> bool {
        self.sync == PeerSync::Always
    }

    /// What the report's failure line calls the peer's sends.
    pub fn sends(&self) -> &'static str {
        match self.target {
            Target::Nats { .. } => "NATS publishes",
            Target::Redis { .. } => "Redis XADDs",
        }
    }

    /// Runs `load` (and `consumers` consumers) against the peer.
    pub async fn run(&self, load: &Load, consumers: usize) -> anyhow::Result<PeerRun> {
        match &self.target {
            Target::Nats { url } => {
                let local = match &self.local_bin {
                    Some(bin) => Some(nats_server::LocalNats::start(bin).await?),
                    None => None,
                };
                let url = local.as_ref().map_or(url.as_str(), |l| l.url.as_str());
                let r = nats::run(url, load, consumers, local.as_ref().and_then(|l| l.pid())).await;
                if let Some(l) = local {
                    l.stop().await;
                }
                r
            }
            Target::Redis { url } => {
                let local = match &self.local_bin {
                    Some(bin) => Some(redis_server::LocalRedis::start(bin).await?),
                    None => None,
                };
                let url = local.as_ref().map_or(url.as_str(), |l| l.url.as_str());
                let r = redis::run(url, load, local.as_ref().and_then(|l| l.pid()))
                    .await
                    .map(|mut r| {
                        if let Some(note) = &self.note {
                            r.server = format!("{} ({note})", r.server);
                        }
                        r
                    });
                if let Some(l) = local {
                    l.stop().await;
                }
                r
            }
        }
    }
}

/// What a peer run measured.
pub struct PeerRun {
    pub load: LoadResult,
    /// Which server answered: its URL and version.
    pub server: String,
    pub e2e: Option<Arc<E2e>>,
    /// The server's CPU per acknowledged message (µs), when its process is
    /// the bench's own.
    pub cpu_us_per_msg: Option<f64>,
}

impl PeerRun {
    /// The report's `peer`: figures of `size`-byte messages, beside the
    /// disk `probe` only when the peer fsyncs each write.
    pub fn report(&self, peer: &Prepared, size: usize, probe: Option<Probe>) -> Peer {
        let probe = probe.filter(|_| peer.fsyncs_each_write());
        let mut figures = Figures::from_run(&self.load, size, self.e2e.as_deref(), None, probe);
        figures.server = Some(self.server.clone());
        figures.cpu_us_per_msg = self.cpu_us_per_msg;
        Peer {
            target: peer.name(),
            sync: if peer.fsyncs_each_write() { "always" } else { "default" },
            figures,
        }
    }
}
