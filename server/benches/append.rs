//! Append throughput and ack latency through the real storage path.
//!
//! Cases: 1 KiB messages sent through `Broker::send` (topic check, queue
//! choice, encode, positional write, and in sync mode the wait for the group
//! commit) by 1, 16, 64 and 256 concurrent writers, in sync and async flush
//! mode, on real files in a temp dir. The baseline appends 256 KiB blocks
//! (256 × 1 KiB) with `fdatasync` after each: the disk's fsync'd append
//! bandwidth for the batch size group commit reaches at 256 writers. It runs
//! before and after the cases, because this disk's fsync latency changes on
//! its own; only ratios within one run mean anything.
//!
//! Besides criterion's own report, a summary table (msgs/s, MB/s, p50/p99
//! ack latency, fsyncs/s, msgs per fsync, ratio to the baseline) is printed
//! and written to `target/criterion/waybill-append-summary.{md,json}`.
//! Run: `cargo bench -p waybill --bench append`.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use waybill::broker::{Broker, BrokerOptions, Outgoing, SendStatus};
use waybill::storage::fs::RealFs;
use waybill::storage::{Flush, Store, StoreOptions};

const MSG: usize = 1024;
const BLOCK: usize = 256 * MSG;
const WRITERS: [usize; 4] = [1, 16, 64, 256];

/// Totals of one case over every criterion sample.
#[derive(Default)]
struct Tally {
    msgs: u64,
    elapsed: Duration,
    latencies_us: Vec<u64>,
    fsyncs: u64,
    synced_msgs: u64,
}

struct Row {
    name: String,
    msgs_per_sec: f64,
    mb_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    fsyncs_per_sec: f64,
    msgs_per_fsync: f64,
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn bench_dir() -> PathBuf {
    let base = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    base.join("bench-data")
}

fn baseline(c: &mut Criterion, label: &str, rows: &mut Vec<Row>) {
    let dir = bench_dir();
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join(format!("baseline-{label}.dat"));
    let Ok(file) = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
    else {
        eprintln!("cannot create {}", path.display());
        return;
    };
    let block = vec![0xabu8; BLOCK];
    let tally = Arc::new(Mutex::new(Tally::default()));
    let mut g = c.benchmark_group("baseline");
    g.throughput(Throughput::Bytes(BLOCK as u64));
    g.sample_size(10).measurement_time(Duration::from_secs(3));
    let mut offset = 0u64;
    g.bench_function(format!("fdatasync_256KiB_{label}"), |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            let mut lat = Vec::with_capacity(iters as usize);
            for _ in 0..iters {
                let t = Instant::now();
                if file
                    .write_all_at(&block, offset)
                    .and_then(|_| file.sync_data())
                    .is_err()
                {
                    break;
                }
                offset += BLOCK as u64;
                lat.push(t.elapsed().as_micros() as u64);
            }
            let took = start.elapsed();
            if let Ok(mut t) = tally.lock() {
                t.msgs += iters * 256;
                t.elapsed += took;
                t.fsyncs += iters;
                t.synced_msgs += iters * 256;
                t.latencies_us.extend(lat);
            }
            took
        })
    });
    g.finish();
    let _ = std::fs::remove_file(&path);
    if let Ok(t) = tally.lock() {
        rows.push(row(format!("baseline 256KiB+fdatasync ({label})"), &t));
    };
}

fn row(name: String, t: &Tally) -> Row {
    let secs = t.elapsed.as_secs_f64().max(1e-9);
    let mut lat = t.latencies_us.clone();
    lat.sort_unstable();
    Row {
        name,
        msgs_per_sec: t.msgs as f64 / secs,
        mb_per_sec: t.msgs as f64 * MSG as f64 / secs / 1e6,
        p50_ms: percentile(&lat, 0.50),
        p99_ms: percentile(&lat, 0.99),
        fsyncs_per_sec: t.fsyncs as f64 / secs,
        msgs_per_fsync: if t.fsyncs == 0 {
            0.0
        } else {
            t.synced_msgs as f64 / t.fsyncs as f64
        },
    }
}

fn appends(c: &mut Criterion, rt: &tokio::runtime::Runtime, mode: &str, rows: &mut Vec<Row>) {
    let flush = match mode {
        "sync" => Flush::Sync,
        _ => Flush::Async {
            interval: Duration::from_millis(500),
        },
    };
    let mut g = c.benchmark_group(format!("append_1KiB_{mode}"));
    g.throughput(Throughput::Bytes(MSG as u64));
    g.sample_size(10).measurement_time(Duration::from_secs(3));
    for writers in WRITERS {
        let dir = bench_dir().join(format!("{mode}-{writers}"));
        let _ = std::fs::remove_dir_all(&dir);
        let store = match Store::open(Arc::new(RealFs), StoreOptions::new(&dir, flush)) {
            Ok(s) => Arc::new(s),
            Err(e) => {
                eprintln!("cannot open store in {}: {e}", dir.display());
                continue;
            }
        };
        let broker = match Broker::new(store.clone(), BrokerOptions::default()) {
            Ok(b) => Arc::new(b),
            Err(e) => {
                eprintln!("cannot start broker: {e}");
                continue;
            }
        };
        let tally = Arc::new(Mutex::new(Tally::default()));
        g.bench_function(format!("writers_{writers}"), |b| {
            b.iter_custom(|iters| {
                // Every call keeps all `writers` busy; the time is scaled to
                // the messages actually sent so criterion's per-iteration
                // figure stays honest when iters < writers.
                let per = iters.div_ceil(writers as u64).max(1);
                let before = store.stats();
                let start = Instant::now();
                let lat = rt.block_on(async {
                    let mut tasks = Vec::with_capacity(writers);
                    for w in 0..writers {
                        let broker = broker.clone();
                        tasks.push(tokio::spawn(async move {
                            let mut lat = Vec::with_capacity(per as usize);
                            let body = vec![b'a' + (w % 26) as u8; MSG];
                            for _ in 0..per {
                                let t = Instant::now();
                                let r = broker
                                    .send(Outgoing {
                                        topic: "bench".into(),
                                        body: body.clone(),
                                        ..Outgoing::default()
                                    })
                                    .await;
                                if !matches!(r, Ok(ref r) if r.status == SendStatus::SendOk) {
                                    eprintln!("send failed: {r:?}");
                                    break;
                                }
                                lat.push(t.elapsed().as_micros() as u64);
                            }
                            lat
                        }));
                    }
                    let mut all = Vec::new();
                    for t in tasks {
                        if let Ok(l) = t.await {
                            all.extend(l);
                        }
                    }
                    all
                });
                let took = start.elapsed();
                let after = store.stats();
                let sent = lat.len() as u64;
                if let Ok(mut t) = tally.lock() {
                    t.msgs += sent;
                    t.elapsed += took;
                    t.fsyncs += after.fsyncs - before.fsyncs;
                    t.synced_msgs += after.synced_msgs - before.synced_msgs;
                    t.latencies_us.extend(lat);
                }
                took.mul_f64(iters as f64 / sent.max(1) as f64)
            })
        });
        if let Ok(t) = tally.lock() {
            rows.push(row(format!("{mode} flush, {writers} writers"), &t));
        }
        store.close();
        drop(broker);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
    g.finish();
}

fn report(rows: &[Row]) {
    let bases: Vec<f64> = rows
        .iter()
        .filter(|r| r.name.starts_with("baseline"))
        .map(|r| r.mb_per_sec)
        .collect();
    let base = if bases.is_empty() {
        0.0
    } else {
        bases.iter().sum::<f64>() / bases.len() as f64
    };
    let mut md = String::from(
        "| case | msgs/s | MB/s | p50 ms | p99 ms | fsyncs/s | msgs/fsync | MB/s ÷ baseline |\n|---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let mut json = Vec::new();
    for r in rows {
        let ratio = if base > 0.0 { r.mb_per_sec / base } else { 0.0 };
        md.push_str(&format!(
            "| {} | {:.0} | {:.1} | {:.3} | {:.3} | {:.0} | {:.1} | {:.2} |\n",
            r.name, r.msgs_per_sec, r.mb_per_sec, r.p50_ms, r.p99_ms, r.fsyncs_per_sec, r.msgs_per_fsync, ratio
        ));
        json.push(serde_json::json!({
            "case": r.name, "msgs_per_sec": r.msgs_per_sec, "mb_per_sec": r.mb_per_sec,
            "p50_ms": r.p50_ms, "p99_ms": r.p99_ms, "fsyncs_per_sec": r.fsyncs_per_sec,
            "msgs_per_fsync": r.msgs_per_fsync, "ratio_to_baseline": ratio,
        }));
    }
    md.push_str(&format!("\nbaseline (mean of runs before and after): {base:.1} MB/s\n"));
    println!("\n{md}");
    let out = bench_dir().join("../criterion");
    let _ = std::fs::create_dir_all(&out);
    let _ = std::fs::write(out.join("waybill-append-summary.md"), &md);
    let _ = std::fs::write(
        out.join("waybill-append-summary.json"),
        serde_json::to_string_pretty(&json).unwrap_or_default(),
    );
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start runtime: {e}");
            return;
        }
    };
    let mut rows = Vec::new();
    baseline(&mut c, "before", &mut rows);
    appends(&mut c, &rt, "sync", &mut rows);
    appends(&mut c, &rt, "async", &mut rows);
    baseline(&mut c, "after", &mut rows);
    c.final_summary();
    report(&rows);
}
