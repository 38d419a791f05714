//! `Producer`: sync, async (callback) and oneway sends with retries.
//!
//! RocketMQ semantics: a sync send that fails with a connection error, a
//! timeout or an "unavailable" answer is retried up to
//! `retry_times_when_send_failed` more times (default 2: three tries),
//! each time on the next broker in the list when there is more than one.
//! A send that *reached* the broker and came back with a non-`SEND_OK`
//! status is not retried: the message is stored, and a retry would store a
//! second copy. Only `SendOk` counts as success; the caller decides.
//!
//! Natural batching: concurrent `send`s on one producer are queued and a
//! batcher task packs whatever is waiting (same topic, up to
//! [`MAX_BATCH_MESSAGES`] / [`MAX_BATCH_BYTES`]) into one produce request,
//! with at most [`MAX_REQUESTS_IN_FLIGHT`] requests outstanding. Nothing
//! waits for a batch to fill (no linger): a lone send goes out at once,
//! and under load every request carries what queued up meanwhile, so the
//! per-request cost (syscalls, frames, the broker's fsync wait) is shared.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, Mutex, OnceCell, Semaphore};

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
    /// RocketMQ's producer group: transactions are checked back with any
    /// producer of the group. Needed for `send_in_transaction`.
    pub group: Option<String>,
    /// The broker's `--auth-token`, presented on every connection.
    pub auth_token: Option<String>,
    /// TLS to the brokers (`--tls-cert` on the broker); none: plain TCP.
    pub tls: Option<crate::TlsClient>,
}

impl ProducerOptions {
    pub fn new(broker: impl Into<String>) -> Self {
        ProducerOptions {
            brokers: vec![broker.into()],
            producer_id: None,
            retry_times_when_send_failed: 2,
            send_timeout: Duration::from_secs(3),
            group: None,
            auth_token: None,
            tls: None,
        }
    }
}

/// Most messages one batched request carries.
pub const MAX_BATCH_MESSAGES: usize = 512;
/// Most body bytes one batched request carries (well under the frame limit).
pub const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// Batched requests outstanding at once per producer.
pub const MAX_REQUESTS_IN_FLIGHT: usize = 4;

/// One queued sync send waiting for the batcher.
struct Queued {
    topic: String,
    message: Message,
    reply: oneshot::Sender<Result<SendResult, ClientError>>,
}

pub struct Producer {
    pub(crate) inner: Arc<Inner>,
    /// The batcher's queue, created with the batcher on first send (that
    /// needs a running runtime, which `new` does not).
    queue: OnceCell<mpsc::Sender<Queued>>,
}

pub(crate) struct Inner {
    pub(crate) opts: ProducerOptions,
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
            inner: Arc::new(Inner {
                opts,
                conns,
                preferred: AtomicUsize::new(0),
            }),
            queue: OnceCell::new(),
        })
    }

    /// Sync send: waits for the broker's result, retrying failed tries.
    /// Concurrent calls share requests (see the module doc).
    pub async fn send(&self, topic: &str, message: Message) -> Result<SendResult, ClientError> {
        let queue = self
            .queue
            .get_or_init(|| async {
                let (tx, rx) = mpsc::channel(MAX_BATCH_MESSAGES * MAX_REQUESTS_IN_FLIGHT);
                tokio::spawn(batcher(self.inner.clone(), rx));
                tx
            })
            .await;
        let (reply, result) = oneshot::channel();
        let queued = Queued {
            topic: topic.to_string(),
            message: self.inner.stamp(message),
            reply,
        };
        if queue.send(queued).await.is_err() {
            return Err(ClientError::Unexpected("producer batcher stopped".into()));
        }
        result
            .await
            .unwrap_or_else(|_| Err(ClientError::Unexpected("producer batcher dropped a send".into())))
    }

    /// Sends several messages in one request (one round trip); each gets its
    /// own result. Retries as [`Producer::send`] does.
    pub async fn send_batch(&self, topic: &str, messages: Vec<Message>) -> Result<Vec<SendResult>, ClientError> {
        let messages = messages.into_iter().map(|m| self.inner.stamp(m)).collect();
        self.inner.send_batch(topic, messages).await
    }

    /// Async send: returns at once; `callback` gets the result (RocketMQ's
    /// SendCallback). Needs a running tokio runtime.
    pub fn send_async<F>(self: &Arc<Self>, topic: &str, mut message: Message, callback: F)
    where
        F: FnOnce(Result<SendResult, ClientError>) + Send + 'static,
    {
        message
            .properties
            .insert(crate::protocol::PROP_SEND_MODE.into(), "async".into());
        let me = self.clone();
        let topic = topic.to_string();
        tokio::spawn(async move {
            callback(me.send(&topic, message).await);
        });
    }

    /// Oneway send: writes the request and returns; the broker sends no
    /// result, so nobody learns whether it was stored (a loss point).
    pub async fn send_oneway(&self, topic: &str, message: Message) -> Result<(), ClientError> {
        let inner = &self.inner;
        let req = Request::Produce {
            topic: topic.to_string(),
            oneway: true,
            messages: vec![inner.stamp(message)],
        };
        let i = inner.preferred.load(Ordering::Relaxed) % inner.opts.brokers.len();
        inner.connection(i).await?.send_only(&req).await
    }
}

/// Packs queued sends into batched requests until the producer is dropped.
async fn batcher(inner: Arc<Inner>, mut rx: mpsc::Receiver<Queued>) {
    let permits = Arc::new(Semaphore::new(MAX_REQUESTS_IN_FLIGHT));
    let mut carry: Option<Queued> = None;
    loop {
        // Take a request slot first: while all slots are busy, sends queue
        // up and the next request carries them together.
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let first = match carry.take() {
            Some(q) => q,
            None => match rx.recv().await {
                Some(q) => q,
                None => return,
            },
        };
        let topic = first.topic.clone();
        let mut bytes = first.message.body.len();
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH_MESSAGES && bytes < MAX_BATCH_BYTES {
            match rx.try_recv() {
                Ok(q) if q.topic == topic => {
                    bytes += q.message.body.len();
                    batch.push(q);
                }
                Ok(q) => {
                    // Another topic starts the next request.
                    carry = Some(q);
                    break;
                }
                Err(_) => break,
            }
        }
        let inner = inner.clone();
        tokio::spawn(async move {
            let (messages, replies): (Vec<Message>, Vec<_>) = batch.into_iter().map(|q| (q.message, q.reply)).unzip();
            match inner.send_batch(&topic, messages).await {
                Ok(results) if results.len() == replies.len() => {
                    for (reply, r) in replies.into_iter().zip(results) {
                        let _ = reply.send(Ok(r));
                    }
                }
                Ok(results) => {
                    let e =
                        ClientError::Unexpected(format!("{} results for {} messages", results.len(), replies.len()));
                    for reply in replies {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
                Err(e) => {
                    for reply in replies {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
            }
            drop(permit);
        });
    }
}

impl Inner {
    pub(crate) async fn connection(&self, i: usize) -> Result<Arc<Connection>, ClientError> {
        let mut slot = self.conns[i].lock().await;
        if let Some(c) = slot.as_ref() {
            if !c.is_closed() {
                return Ok(c.clone());
            }
        }
        let c = Connection::connect_with(
            &self.opts.brokers[i],
            self.opts.auth_token.as_deref(),
            self.opts.tls.as_ref(),
        )
        .await?;
        *slot = Some(c.clone());
        Ok(c)
    }

    pub(crate) fn stamp(&self, mut m: Message) -> Message {
        if m.born_ms == 0 {
            m.born_ms = now_ms();
        }
        if m.producer.is_none() {
            m.producer.clone_from(&self.opts.producer_id);
        }
        // Every message starts (or continues) a W3C trace.
        m.properties
            .entry(crate::tracecontext::PROP_TRACEPARENT.to_string())
            .or_insert_with(crate::tracecontext::new_traceparent);
        m
    }

    /// One produce request for already-stamped messages, with retries.
    async fn send_batch(&self, topic: &str, messages: Vec<Message>) -> Result<Vec<SendResult>, ClientError> {
        let req = Request::Produce {
            topic: topic.to_string(),
            oneway: false,
            messages,
        };
        match self.call(&req).await? {
            (Response::Produced(results), attempt, i) => Ok(self.results(results, attempt, i)),
            (other, _, _) => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    pub(crate) fn results(&self, results: Vec<crate::protocol::Produced>, attempt: u32, i: usize) -> Vec<SendResult> {
        results
            .into_iter()
            .map(|p| SendResult {
                status: p.status,
                id: p.id,
                queue_id: p.queue_id,
                queue_offset: p.queue_offset,
                attempt,
                broker: self.opts.brokers[i].clone(),
            })
            .collect()
    }

    /// Sends `req`, retrying failed tries (see the module doc); returns the
    /// answer, which try got it and from which broker.
    pub(crate) async fn call(&self, req: &Request) -> Result<(Response, u32, usize), ClientError> {
        let tries = self.opts.retry_times_when_send_failed + 1;
        let n = self.opts.brokers.len();
        let mut last = None;
        for attempt in 1..=tries {
            let i = self.preferred.load(Ordering::Relaxed) % n;
            let retry;
            let req = if attempt > 1 {
                retry = with_attempt(req, attempt);
                &retry
            } else {
                req
            };
            let outcome = match self.connection(i).await {
                Ok(conn) => conn.call(req, self.opts.send_timeout).await,
                Err(e) => Err(e),
            };
            match outcome {
                Ok(resp) => return Ok((resp, attempt, i)),
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
}

/// `req` for try `attempt`: its messages say which try they came in (the
/// trace shows it; a retried send may have been stored by an earlier try).
fn with_attempt(req: &Request, attempt: u32) -> Request {
    let mut req = req.clone();
    let stamp = |m: &mut Message| {
        m.properties
            .insert(crate::protocol::PROP_SEND_ATTEMPT.to_string(), attempt.to_string());
    };
    match &mut req {
        Request::Produce { messages, .. } => messages.iter_mut().for_each(stamp),
        Request::ProduceHalf { message, .. } => stamp(message),
        _ => {}
    }
    req
}
