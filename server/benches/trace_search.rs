//! Search by key over 1,000,000 traced messages (issue budget: p99 < 50 ms).
//!
//! Fills a fresh SQLite trace store with 1,000,000 message rows (100,000
//! distinct keys, 10 messages each, plus the key index rows) through the
//! real schema and migrations, then times `trace::search::run` for random
//! keys: criterion's estimate plus a p50/p99 over 2,000 lookups, printed
//! and written to `target/criterion/waybill-trace-search.json`.
//! Run: `cargo bench -p waybill --bench trace_search`.

use std::time::{Duration, Instant};

use criterion::Criterion;
use sqlx::AssertSqlSafe;
use waybill::trace::{db, search};

const MESSAGES: usize = 1_000_000;
const KEYS: usize = 100_000;
const ROWS_PER_INSERT: usize = 500;

async fn fill(pool: &sqlx::AnyPool) -> Result<(), Box<dyn std::error::Error>> {
    let mut tx = pool.begin().await?;
    let mut i = 0usize;
    while i < MESSAGES {
        let n = ROWS_PER_INSERT.min(MESSAGES - i);
        let sql = format!(
            "INSERT INTO trace_messages (id, node, topic, msg_key, tags, queue_id, queue_offset, pos, end_pos, born_at, \
             stored_at, acked_at, producer, send_mode, flush_mode, send_status, traceparent) VALUES {}",
            db::values(db::Backend::Sqlite, n, 17)
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for j in i..i + n {
            let key = format!("key-{}", j % KEYS);
            q = q
                .bind(format!("{:04X}{:08X}{:016X}", 1, 1, j * 1100))
                .bind(1i64)
                .bind("orders")
                .bind(key)
                .bind(None::<String>)
                .bind((j % 4) as i64)
                .bind((j / 4) as i64)
                .bind((j * 1100) as i64)
                .bind((j * 1100 + 1100) as i64)
                .bind(1_700_000_000_000i64 + j as i64)
                .bind(1_700_000_000_000i64 + j as i64)
                .bind(1_700_000_000_001i64 + j as i64)
                .bind(None::<String>)
                .bind("sync")
                .bind("sync")
                .bind("SEND_OK")
                .bind(None::<String>);
        }
        q.execute(&mut *tx).await?;
        let sql = format!(
            "INSERT INTO trace_keys (msg_key, id, stored_at) VALUES {}",
            db::values(db::Backend::Sqlite, n, 3)
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for j in i..i + n {
            q = q
                .bind(format!("key-{}", j % KEYS))
                .bind(format!("{:04X}{:08X}{:016X}", 1, 1, j * 1100))
                .bind(1_700_000_000_000i64 + j as i64);
        }
        q.execute(&mut *tx).await?;
        i += n;
    }
    tx.commit().await?;
    Ok(())
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
    let url = format!("sqlite://{}", dir.path().join("trace.db").display());
    let pool = match rt.block_on(async {
        let pool = db::connect(&url).await?;
        let started = Instant::now();
        fill(&pool)
            .await
            .map_err(|e| waybill::trace::TraceError::Url(e.to_string()))?;
        eprintln!("filled {MESSAGES} messages in {:?}", started.elapsed());
        Ok::<_, waybill::trace::TraceError>(pool)
    }) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("setup failed: {e}");
            return;
        }
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
    // Our own percentile figures.
    let mut lat = Vec::with_capacity(2000);
    for _ in 0..2000 {
        let q = query(next_key());
        let t = Instant::now();
        let hits = rt.block_on(search::run(&pool, &q)).map(|(h, _)| h.len()).unwrap_or(0);
        lat.push(t.elapsed());
        assert_eq!(hits, 10, "every key has 10 messages");
    }
    lat.sort();
    let p = |q: f64| lat[((lat.len() - 1) as f64 * q) as usize];
    let (p50, p99) = (p(0.5), p(0.99));
    println!("search by key over {MESSAGES} messages: p50 {p50:?}, p99 {p99:?} (budget p99 < 50 ms)");
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/criterion");
    let _ = std::fs::create_dir_all(&out);
    let _ = std::fs::write(
        out.join("waybill-trace-search.json"),
        format!(
            "{{\"messages\":{MESSAGES},\"p50_ms\":{:.3},\"p99_ms\":{:.3}}}\n",
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3
        ),
    );
    let mut g = c.benchmark_group("trace_search");
    g.sample_size(50).measurement_time(Duration::from_secs(5));
    g.bench_function("by_key_1M", |b| {
        b.iter(|| {
            rt.block_on(search::run(&pool, &query(next_key())))
                .map(|(h, _)| h.len())
        })
    });
    g.finish();
    c.final_summary();
}
