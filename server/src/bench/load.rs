//! The closed-loop load driver every bench target runs under (Waybill in
//! [`super::own`], a peer in `waybill-bench`), and the figures it derives.
//!
//! Invariants:
//! - `producers` senders (one connection each) each keep exactly `inflight`
//!   sends outstanding: every slot is a task that sends, waits for the
//!   acknowledgement, records the latency and sends again, until the
//!   deadline. A send carries `batch` messages (default 1); its latency
//!   is every one of its messages' latency. No slot starts a send after the deadline; the run ends when
//!   the last outstanding send returns, and that is the elapsed time.
//! - Only acknowledged sends count as messages; a failed send is counted
//!   apart and stops its slot (a broken connection would otherwise spin).
//! - Every body carries its birth time (µs since the epoch, 8 bytes
//!   little-endian) at the front when it is at least 8 bytes long, so a
//!   consumer can measure end-to-end latency with the same clock.

use std::future::Future;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Shape of one workload.
#[derive(Debug, Clone)]
pub struct Load {
    pub producers: usize,
    pub inflight: usize,
    pub size: usize,
    /// Messages per send (one request, all acknowledged together).
    pub batch: usize,
    pub duration: Duration,
    /// Label of the progress line on stderr; `None` keeps stderr quiet.
    pub progress: Option<String>,
}

/// What one run of [`drive`] measured.
#[derive(Debug, Default)]
pub struct LoadResult {
    pub acked: u64,
    pub failed: u64,
    pub first_error: Option<String>,
    pub elapsed: Duration,
    /// Send → acknowledgement, µs, sorted.
    pub latencies_us: Vec<u32>,
}

impl LoadResult {
    pub fn msgs_per_sec(&self) -> f64 {
        self.acked as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn mb_per_sec(&self, size: usize) -> f64 {
        self.msgs_per_sec() * size as f64 / 1e6
    }

    /// `"N {what} failed (first: …)"` when any send failed, `what` naming
    /// them (`Waybill sends`, `NATS publishes`).
    pub fn failure(&self, what: &str) -> Option<String> {
        (self.failed > 0).then(|| {
            format!(
                "{} {what} failed (first: {})",
                self.failed,
                self.first_error.as_deref().unwrap_or("?")
            )
        })
    }
}

/// `p` (0..=1) of sorted µs samples, in ms; 0 without samples.
pub fn percentile_ms(sorted_us: &[u32], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let i = ((sorted_us.len() - 1) as f64 * p).round() as usize;
    f64::from(sorted_us[i.min(sorted_us.len() - 1)]) / 1000.0
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// The filler of every body of `size` bytes.
pub fn template(size: usize) -> Vec<u8> {
    (0..size).map(|i| b'a' + (i % 26) as u8).collect()
}

/// A copy of `template`, stamped with its birth time when it has room.
pub fn stamped(template: &[u8]) -> Vec<u8> {
    let mut b = template.to_vec();
    if let Some(head) = b.get_mut(..8) {
        head.copy_from_slice(&now_us().to_le_bytes());
    }
    b
}

/// End-to-end latencies seen by consumers: consume time − birth stamp.
#[derive(Debug, Default)]
pub struct E2e {
    consumed: AtomicU64,
    // std Mutex: one push per message, never held across an await.
    lat_us: Mutex<Vec<u32>>,
}

impl E2e {
    /// Records one consumed body (stamped by [`body`]).
    pub fn record(&self, body: &[u8]) {
        let Some(stamp) = body.get(..8).and_then(|s| <[u8; 8]>::try_from(s).ok()) else {
            return;
        };
        let born = u64::from_le_bytes(stamp);
        let lat = now_us().saturating_sub(born).min(u64::from(u32::MAX)) as u32;
        self.consumed.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut v) = self.lat_us.lock() {
            v.push(lat);
        }
    }

    pub fn consumed(&self) -> u64 {
        self.consumed.load(Ordering::Relaxed)
    }

    /// Sorted latencies so far (µs).
    pub fn sorted(&self) -> Vec<u32> {
        let mut v = self.lat_us.lock().map(|v| v.clone()).unwrap_or_default();
        v.sort_unstable();
        v
    }

    /// Waits until `target` messages were consumed, or nothing arrived for
    /// `idle`; returns whether all arrived.
    pub async fn wait_for(&self, target: u64, idle: Duration) -> bool {
        let mut last = (self.consumed(), Instant::now());
        loop {
            let n = self.consumed();
            if n >= target {
                return true;
            }
            if n != last.0 {
                last = (n, Instant::now());
            } else if last.1.elapsed() >= idle {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[derive(Default)]
struct Slot {
    acked: u64,
    failed: u64,
    error: Option<String>,
    lat: Vec<u32>,
}

/// Runs `load` through `senders` (one per producer; a sender is cloned to
/// each of its in-flight slots). `send` delivers one batch of bodies and
/// resolves when all are acknowledged, or with the reason they were not.
pub async fn drive<S, F, Fut>(load: &Load, senders: Vec<S>, send: F) -> LoadResult
where
    S: Clone + Send + Sync + 'static,
    F: Fn(S, Vec<Vec<u8>>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let counter = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + load.duration;
    let ticker = load
        .progress
        .clone()
        .map(|label| tokio::spawn(progress(label, counter.clone(), start, load.duration)));
    let mut tasks = Vec::with_capacity(senders.len() * load.inflight);
    for sender in senders {
        for _ in 0..load.inflight {
            let (sender, send, counter) = (sender.clone(), send.clone(), counter.clone());
            let (filler, batch) = (template(load.size), load.batch.max(1));
            tasks.push(tokio::spawn(async move {
                let mut slot = Slot::default();
                while Instant::now() < deadline {
                    let bodies = (0..batch).map(|_| stamped(&filler)).collect();
                    let t = Instant::now();
                    match send(sender.clone(), bodies).await {
                        Ok(()) => {
                            // One sample per send: equal weights keep the
                            // percentiles those of the messages.
                            slot.lat.push(t.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                            slot.acked += batch as u64;
                            counter.fetch_add(batch as u64, Ordering::Relaxed);
                        }
                        Err(e) => {
                            slot.failed += batch as u64;
                            slot.error = Some(e);
                            break;
                        }
                    }
                }
                slot
            }));
        }
    }
    let mut r = LoadResult::default();
    for t in tasks {
        match t.await {
            Ok(slot) => {
                r.acked += slot.acked;
                r.failed += slot.failed;
                if r.first_error.is_none() {
                    r.first_error = slot.error;
                }
                r.latencies_us.extend(slot.lat);
            }
            Err(e) => {
                r.failed += 1;
                r.first_error.get_or_insert_with(|| format!("send task failed: {e}"));
            }
        }
    }
    r.elapsed = start.elapsed();
    if let Some(t) = ticker {
        t.abort();
        if std::io::stderr().is_terminal() {
            eprintln!();
        }
    }
    r.latencies_us.sort_unstable();
    r
}

/// Prints `label: 3/10 s, 123456 msgs, 45678 msgs/s` on stderr every
/// second (rewriting one line on a terminal).
async fn progress(label: String, counter: Arc<AtomicU64>, start: Instant, duration: Duration) {
    let tty = std::io::stderr().is_terminal();
    let mut prev = (0u64, start);
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let n = counter.load(Ordering::Relaxed);
        let now = Instant::now();
        let rate = (n - prev.0) as f64 / now.duration_since(prev.1).as_secs_f64().max(1e-9);
        prev = (n, now);
        let line = format!(
            "{label}: {:>3}/{} s, {n} msgs, {rate:.0} msgs/s",
            start.elapsed().as_secs().min(duration.as_secs()),
            duration.as_secs()
        );
        let mut err = std::io::stderr().lock();
        let _ = if tty {
            write!(err, "\r{line}   ")
        } else {
            writeln!(err, "{line}")
        };
        let _ = err.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_the_rank() {
        let v: Vec<u32> = (1..=100).map(|i| i * 1000).collect();
        assert_eq!(percentile_ms(&v, 0.5), 51.0);
        assert_eq!(percentile_ms(&v, 0.99), 99.0);
        assert_eq!(percentile_ms(&[], 0.99), 0.0);
    }

    #[test]
    fn bodies_carry_their_birth_time() {
        let e = E2e::default();
        e.record(&stamped(&template(64)));
        e.record(&stamped(&template(4))); // too short to carry a stamp: not counted
        assert_eq!(e.consumed(), 1);
        assert!(e.sorted()[0] < 1_000_000);
    }
}
