//! `Producer`: sync, async (callback) and oneway sends with retries.
//!
//! RocketMQ semantics: a sync send that fails with a connection error, a
//! timeout or an "unavailable" answer is retried up to
//! `retry_times_when_send_failed` more times (default 2: three tries),
//! each time on the next broker in the list when there is more than one.
//! A send that *reached* the broker and came back with a non-`SEND_OK`
//! status is not retried: the message is stored, and a retry would store a
//! second copy. Only `SendOk` counts as success; the caller decides.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;

use crate::connection::{ClientError, Connection};
use crate::protocol::{Message, Request, Response};
use crate::SendStatus;

/// What a send returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendResult {
    pub status: SendStatus,
    pub id: String,
    pub queue_id: u32,
    pub queue_offset: u64,
    /// Which try succeeded (1 = first) and on which broker.
    pub attempt: u32,
    pub broker: String,
}

#[derive(Debug, Clone)]
pub struct ProducerOptions {
    /// Broker addresses (`host:port`), tried in order, rotating on failure.
    pub brokers: Vec<String>,
    /// Producer id recorded with each message.
    pub producer_id: Option<String>,
    /// RocketMQ's retryTimesWhenSendFailed (default 2, i.e. 3 tries).
    pub retry_times_when_send_failed: u32,
    /// RocketMQ's sendMsgTimeout (default 3 s).
    pub send_timeout: Duration,
}

impl ProducerOptions {
    pub fn new(broker: impl Into<String>) -> Self {
        ProducerOptions {
            brokers: vec![broker.into()],
            producer_id: None,
            retry_times_when_send_failed: 2,
            send_timeout: Duration::from_secs(3),
        }
    }
}

pub struct Producer {
    opts: ProducerOptions,
    // tokio Mutex: held across the connect await so concurrent senders do
    // not open one connection each.
    conns: Vec<Mutex<Option<Arc<Connection>>>>,
    /// Broker to try first; moves on after a failure.
    preferred: AtomicUsize,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Producer {
    /// Creates a producer; connections open on first use.
    pub fn new(opts: ProducerOptions) -> Result<Producer, ClientError> {
        if opts.brokers.is_empty() {
            return Err(ClientError::Connect {
                addr: String::new(),
                message: "no broker address given".into(),
            });
        }
        let conns = opts.brokers.iter().map(|_| Mutex::new(None)).collect();
        Ok(Producer {
            opts,
            conns,
            preferred: AtomicUsize::new(0),
        })
    }

    async fn connection(&self, i: usize) -> Result<Arc<Connection>, ClientError> {
        let mut slot = self.conns[i].lock().await;
        if let Some(c) = slot.as_ref() {
            if !c.is_closed() {
                return Ok(c.clone());
            }
        }
        let c = Connection::connect(&self.opts.brokers[i]).await?;
        *slot = Some(c.clone());
        Ok(c)
    }

    fn stamp(&self, mut m: Message) -> Message {
        if m.born_ms == 0 {
            m.born_ms = now_ms();
        }
        if m.producer.is_none() {
            m.producer.clone_from(&self.opts.producer_id);
        }
        m
    }

    /// Sync send: waits for the broker's result, retrying failed tries.
    pub async fn send(&self, topic: &str, message: Message) -> Result<SendResult, ClientError> {
        let mut results = self.send_batch(topic, vec![message]).await?;
        results
            .pop()
            .ok_or_else(|| ClientError::Unexpected("empty produce result".into()))
    }

    /// Sends several messages in one request (one round trip); each gets its
    /// own result. Retries as [`Producer::send`] does.
    pub async fn send_batch(&self, topic: &str, messages: Vec<Message>) -> Result<Vec<SendResult>, ClientError> {
        let messages: Vec<Message> = messages.into_iter().map(|m| self.stamp(m)).collect();
        let req = Request::Produce {
            topic: topic.to_string(),
            oneway: false,
            messages,
        };
        let tries = self.opts.retry_times_when_send_failed + 1;
        let n = self.opts.brokers.len();
        let mut last = None;
        for attempt in 1..=tries {
            let i = self.preferred.load(Ordering::Relaxed) % n;
            let outcome = match self.connection(i).await {
                Ok(conn) => conn.call(&req, self.opts.send_timeout).await,
                Err(e) => Err(e),
            };
            match outcome {
                Ok(Response::Produced(results)) => {
                    return Ok(results
                        .into_iter()
                        .map(|p| SendResult {
                            status: p.status,
                            id: p.id,
                            queue_id: p.queue_id,
                            queue_offset: p.queue_offset,
                            attempt,
                            broker: self.opts.brokers[i].clone(),
                        })
                        .collect())
                }
                Ok(other) => return Err(ClientError::Unexpected(format!("{other:?}"))),
                Err(e) if e.is_retriable() => {
                    tracing::warn!(attempt, broker = %self.opts.brokers[i], error = %e, "send failed; retrying");
                    // Try the next broker where one exists.
                    let _ = self
                        .preferred
                        .compare_exchange(i, (i + 1) % n, Ordering::Relaxed, Ordering::Relaxed);
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| ClientError::Unexpected("no attempt made".into())))
    }

    /// Async send: returns at once; `callback` gets the result (RocketMQ's
    /// SendCallback). Needs a running tokio runtime.
    pub fn send_async<F>(self: &Arc<Self>, topic: &str, message: Message, callback: F)
    where
        F: FnOnce(Result<SendResult, ClientError>) + Send + 'static,
    {
        let me = self.clone();
        let topic = topic.to_string();
        tokio::spawn(async move {
            callback(me.send(&topic, message).await);
        });
    }

    /// Oneway send: writes the request and returns; the broker sends no
    /// result, so nobody learns whether it was stored (a loss point).
    pub async fn send_oneway(&self, topic: &str, message: Message) -> Result<(), ClientError> {
        let req = Request::Produce {
            topic: topic.to_string(),
            oneway: true,
            messages: vec![self.stamp(message)],
        };
        let i = self.preferred.load(Ordering::Relaxed) % self.opts.brokers.len();
        self.connection(i).await?.send_only(&req).await
    }
}
