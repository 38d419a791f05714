//! The matrix's fixed workload: producers at full speed with sync sends of
//! unique bodies, and one consumer group committing after handling.
//!
//! Every send is remembered with what its producer was told — `SEND_OK`
//! with an id, another status (stored, durability not promised), or an
//! error (timed out, connection lost: unknown) — and when, so the checker
//! can compare with what the logs hold. A body is a pure function of
//! (run tag, producer, sequence), so any stored body can be recomputed and
//! compared byte for byte: a changed or forged one cannot pass as ours.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use waybill_client::{ConsumeResult, ConsumerOptions, Message, Producer, ProducerOptions, PushConsumer, SendStatus};

use super::MatrixError;

/// The topic every run writes.
pub const TOPIC: &str = "matrix";
/// The consumer group that handles and commits.
pub const GROUP: &str = "matrix-consumer";
/// Pause after a failed send, so a dead node is not hammered in a loop.
const ERROR_BACKOFF: Duration = Duration::from_millis(20);

/// What a producer was told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Acked {
        id: String,
    },
    /// Stored, but the status promised less than `SEND_OK`.
    Refused {
        status: String,
    },
    /// No answer, or an error: stored or not, nobody knows.
    Unknown {
        error: String,
    },
}

#[derive(Debug, Clone)]
pub struct Sent {
    pub producer: u32,
    pub seq: u64,
    pub outcome: Outcome,
    /// When the answer came, ms since the workload started.
    pub at_ms: u64,
    pub latency_us: u32,
}

/// `(producer, seq)` → deliveries to the group.
pub type Deliveries = Arc<Mutex<HashMap<(u32, u64), u32>>>;

/// The body of send `seq` of `producer` in run `tag`, `size` bytes or more.
pub fn body(tag: &str, producer: u32, seq: u64, size: usize) -> Vec<u8> {
    let mut b = format!("{tag}|{producer}|{seq}|").into_bytes();
    let mut x = (u64::from(producer) << 40) ^ seq.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    while b.len() < size {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        b.push(b'a' + (x % 26) as u8);
    }
    b
}

/// `(producer, seq)` of a body this run sent, only when every byte is the
/// one [`body`] makes.
pub fn parse(tag: &str, size: usize, b: &[u8]) -> Option<(u32, u64)> {
    let text = std::str::from_utf8(b.get(..b.len().min(64))?).ok()?;
    let mut parts = text.splitn(4, '|');
    if parts.next()? != tag {
        return None;
    }
    let p: u32 = parts.next()?.parse().ok()?;
    let seq: u64 = parts.next()?.parse().ok()?;
    (body(tag, p, seq, size) == b).then_some((p, seq))
}

pub struct Workload {
    tag: String,
    size: usize,
    stop: Arc<AtomicBool>,
    producers: Vec<JoinHandle<Vec<Sent>>>,
    consumer: Option<PushConsumer>,
    pub deliveries: Deliveries,
    pub started: Instant,
}

impl Workload {
    /// Starts `producers` × `inflight` senders over `brokers` (writer
    /// first) and the consumer on `consume_at`.
    pub async fn start(
        tag: &str,
        brokers: Vec<String>,
        consume_at: &str,
        producers: u32,
        inflight: usize,
        size: usize,
    ) -> Result<Workload, MatrixError> {
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let mut tasks = Vec::new();
        for p in 0..producers {
            let mut opts = ProducerOptions::new(brokers[0].clone());
            opts.brokers = brokers.clone();
            opts.send_timeout = Duration::from_secs(2);
            opts.producer_id = Some(format!("matrix-{p}"));
            let producer = Arc::new(Producer::new(opts).map_err(|source| MatrixError::Client {
                what: "cannot create a producer".into(),
                source,
            })?);
            let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
            let mut slots = Vec::new();
            for _ in 0..inflight {
                let (producer, next, stop, tag) = (producer.clone(), next.clone(), stop.clone(), tag.to_string());
                slots.push(tokio::spawn(async move {
                    let mut sent = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let seq = next.fetch_add(1, Ordering::Relaxed);
                        let message = Message {
                            key: Some(format!("p{p}-{seq}")),
                            tags: None,
                            producer: None,
                            properties: Default::default(),
                            body: body(&tag, p, seq, size),
                            born_ms: 0,
                        };
                        let t0 = Instant::now();
                        let r = producer.send(TOPIC, message).await;
                        let outcome = match r {
                            Ok(r) if r.status == SendStatus::SendOk => Outcome::Acked { id: r.id },
                            Ok(r) => Outcome::Refused {
                                status: r.status.name().to_string(),
                            },
                            Err(e) => Outcome::Unknown { error: e.to_string() },
                        };
                        let failed = !matches!(outcome, Outcome::Acked { .. });
                        sent.push(Sent {
                            producer: p,
                            seq,
                            outcome,
                            at_ms: started.elapsed().as_millis() as u64,
                            latency_us: t0.elapsed().as_micros().min(u128::from(u32::MAX)) as u32,
                        });
                        if failed {
                            tokio::time::sleep(ERROR_BACKOFF).await;
                        }
                    }
                    sent
                }));
            }
            tasks.push(tokio::spawn(async move {
                let mut all = Vec::new();
                for s in slots {
                    all.extend(s.await.unwrap_or_default());
                }
                all
            }));
        }
        let mut w = Workload {
            tag: tag.to_string(),
            size,
            stop,
            producers: tasks,
            consumer: None,
            deliveries: Arc::default(),
            started,
        };
        w.consume_at(consume_at).await;
        Ok(w)
    }

    /// (Re)starts the consumer on `broker` (after a failover); a broker
    /// that does not answer leaves the group without a consumer until the
    /// next call.
    pub async fn consume_at(&mut self, broker: &str) {
        if let Some(c) = self.consumer.take() {
            // A consumer whose broker died may wait on a dead connection:
            // bounded, it is replaced either way.
            let _ = tokio::time::timeout(Duration::from_secs(3), c.shutdown()).await;
        }
        let mut opts = ConsumerOptions::new(broker, GROUP, TOPIC);
        opts.pull_wait = Duration::from_millis(200);
        opts.request_timeout = Duration::from_secs(2);
        let (tag, size, seen) = (self.tag.clone(), self.size, self.deliveries.clone());
        let handler = move |d: waybill_client::Delivered| {
            let key = parse(&tag, size, &d.message.body);
            if let (Some(k), Ok(mut seen)) = (key, seen.lock()) {
                *seen.entry(k).or_insert(0) += 1;
            }
            async { ConsumeResult::Success }
        };
        self.consumer = PushConsumer::start(opts, handler).await.ok();
    }

    /// Stops the producers and returns every send's outcome.
    pub async fn stop_producing(&mut self) -> Vec<Sent> {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        for t in self.producers.drain(..) {
            all.extend(t.await.unwrap_or_default());
        }
        all
    }

    /// Distinct messages the group has handled so far.
    pub fn consumed(&self) -> usize {
        self.deliveries.lock().map(|d| d.len()).unwrap_or(0)
    }

    /// Stops the consumer (offsets of handled messages committed).
    pub async fn stop_consuming(&mut self) {
        if let Some(c) = self.consumer.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), c.shutdown()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_parses_back_only_when_every_byte_is_ours() {
        let b = body("run7", 3, 42, 200);
        assert_eq!(b.len(), 200);
        assert_eq!(parse("run7", 200, &b), Some((3, 42)));
        assert_eq!(parse("run8", 200, &b), None);
        let mut changed = b.clone();
        changed[150] ^= 1;
        assert_eq!(parse("run7", 200, &changed), None);
        assert_eq!(parse("run7", 200, b"run7|3|42|"), None);
    }
}
