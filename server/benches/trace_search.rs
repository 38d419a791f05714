//! Search over 1,000,000 traced messages (issue budget: key search p99 < 50 ms).
//!
//! Stores 1,000,000 messages (100,000 distinct keys, 10 messages each,
//! 100-byte bodies) through the real broker into a real store in a temp dir
//! (async flush, so filling is quick), traced into a fresh SQLite trace
//! store through the real tracer, then times the search as the API runs it:
//! `trace::search::run` for a random key, plus the timeline of every hit
//! (the status a search page shows). Prints p50/p99 over 2,000 lookups of
//! key search and of a newest-first topic page (the run walk), writes them
//! to `target/criterion/waybill-trace-search.json`, and gives criterion's
//! estimate. Run: `cargo bench -p waybill --bench trace_search`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::Criterion;
use waybill::broker::{Broker, BrokerOptions, Outgoing, Wiring};
use waybill::storage::{Flush, Store, StoreOptions};
use waybill::trace::sink::Subscribers;
use waybill::trace::{search, timeline, Tracer};

const MESSAGES: usize = 1_000_000;
const KEYS: usize = 100_000;
const PER_SEND: usize = 1_000;

type Setup = (Arc<Store>, Arc<Tracer>, Arc<Broker>);

async fn fill(dir: &std::path::Path) -> Result<Setup, Box<dyn std::error::Error>> {
    let opts = StoreOptions::new(
        dir.join("data"),
        Flush::Async {
            interval: Duration::from_millis(200),
        },
    );
    let store = Arc::new(Store::open(Arc::new(waybill::storage::fs::RealFs), opts)?);
    let url = format!("sqlite://{}", dir.join("trace.db").display());
    let tracer = Tracer::start(&url, store.clone()).await?;
    let broker = Arc::new(Broker::wired(
        store.clone(),
        BrokerOptions::default(),
        Wiring::events(Subscribers::tracing(tracer.clone())),
    )?);
    let mut i = 0usize;
    while i < MESSAGES {
        let batch = (i..(i + PER_SEND).min(MESSAGES))
            .map(|j| Outgoing {
                topic: "orders".into(),
                key: Some(format!("key-{}", j % KEYS)),
                body: vec![b'x'; 100],
                ..Outgoing::default()
            })
            .collect();
        broker.send_batch("orders", batch).await?;
        i += PER_SEND;
        // Stay within the tracer's queue: it sheds rather than waits.
        if i.is_multiple_of(50_000) && !tracer.flush(Duration::from_secs(60)).await {
            return Err("tracer did not catch up".into());
        }
    }
    if !tracer.flush(Duration::from_secs(60)).await || tracer.shed_count() != 0 {
        return Err("tracer shed events while filling".into());
    }
    Ok((store, tracer, broker))
}

/// One search as the API answers it: the hits and each hit's timeline.
async fn answer(store: &Store, tracer: &Tracer, q: &search::Query) -> usize {
    let Ok(pool) = tracer.pool() else {
        return 0;
    };
    let Ok((hits, _)) = search::run(pool, store, q).await else {
        return 0;
    };
    for h in &hits {
        let _ = timeline::load(pool, store, &h.id).await;
    }
    hits.len()
}

fn percentiles(mut lat: Vec<Duration>) -> (Duration, Duration) {
    lat.sort();
    let p = |q: f64| lat[((lat.len() - 1) as f64 * q) as usize];
    (p(0.5), p(0.99))
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let Ok(rt) = tokio::runtime::Builder::new_multi_thread().enable_all().build() else {
        eprintln!("cannot start runtime");
        return;
    };
    let Ok(dir) = tempfile::tempdir() else {
        eprintln!("cannot create a temp dir");
        return;
    };
    let (store, tracer, _broker) = match rt.block_on(async {
        let started = Instant::now();
        let setup = fill(dir.path()).await.map_err(|e| e.to_string())?;
        eprintln!("stored and traced {MESSAGES} messages in {:?}", started.elapsed());
        Ok::<_, String>(setup)
    }) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("setup failed: {e}");
            return;
        }
    };
    let Ok(pool) = tracer.pool().cloned() else {
        eprintln!("trace store not connected");
        return;
    };
    let query = |k: usize| search::Query {
        key: Some(format!("key-{k}")),
        limit: 50,
        ..search::Query::default()
    };
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next_key = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % KEYS as u64) as usize
    };
    // Our own percentile figures: key search, then a topic page.
    let mut lat = Vec::with_capacity(2000);
    let mut bare = Vec::with_capacity(2000);
    for _ in 0..2000 {
        let q = query(next_key());
        let t = Instant::now();
        let hits = rt.block_on(search::run(&pool, &store, &q)).map_or(0, |(h, _)| h.len());
        bare.push(t.elapsed());
        assert_eq!(hits, 10, "every key has 10 messages");
        let t = Instant::now();
        let hits = rt.block_on(answer(&store, &tracer, &q));
        lat.push(t.elapsed());
        assert_eq!(hits, 10, "every key has 10 messages");
    }
    let (p50, p99) = percentiles(lat);
    let (bare_p50, bare_p99) = percentiles(bare);
    let page = search::Query {
        topic: Some("orders".into()),
        limit: 50,
        ..search::Query::default()
    };
    let mut lat = Vec::with_capacity(200);
    for _ in 0..200 {
        let t = Instant::now();
        let hits = rt.block_on(answer(&store, &tracer, &page));
        lat.push(t.elapsed());
        assert_eq!(hits, 50, "a full first page");
    }
    let (topic_p50, topic_p99) = percentiles(lat);
    println!("search by key over {MESSAGES} messages, hits only: p50 {bare_p50:?}, p99 {bare_p99:?}");
    println!(
        "search by key over {MESSAGES} messages, with each hit's status: p50 {p50:?}, p99 {p99:?} (budget p99 < 50 ms)"
    );
    println!("newest topic page of 50 over {MESSAGES} messages: p50 {topic_p50:?}, p99 {topic_p99:?}");
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/criterion");
    let _ = std::fs::create_dir_all(&out);
    let _ = std::fs::write(
        out.join("waybill-trace-search.json"),
        format!(
            "{{\"messages\":{MESSAGES},\"p50_ms\":{:.3},\"p99_ms\":{:.3},\"topic_page_p50_ms\":{:.3},\
             \"topic_page_p99_ms\":{:.3},\"hits_only_p50_ms\":{:.3},\"hits_only_p99_ms\":{:.3}}}\n",
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3,
            topic_p50.as_secs_f64() * 1e3,
            topic_p99.as_secs_f64() * 1e3,
            bare_p50.as_secs_f64() * 1e3,
            bare_p99.as_secs_f64() * 1e3
        ),
    );
    let mut g = c.benchmark_group("trace_search");
    g.sample_size(50).measurement_time(Duration::from_secs(5));
    g.bench_function("by_key_1M", |b| {
        b.iter(|| rt.block_on(answer(&store, &tracer, &query(next_key()))))
    });
    g.finish();
    c.final_summary();
}
