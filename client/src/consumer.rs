//! `PushConsumer`: a member of a consumer group with a message handler.
//!
//! The broker balances the topic's queues (and the group's retry queues)
//! across live members and answers each heartbeat with this member's share.
//! For every assigned queue a task pulls batches (long polling), runs the
//! handler on each message in queue order, and then commits the offset past
//! the batch. A message whose handler returns `ReconsumeLater`, panics, or
//! runs past `handler_timeout` is sent back to the broker, which schedules
//! it on the group's retry queue (or dead-letters it); only after the broker
//! accepted it does the offset move past it. So offsets advance only past
//! messages that were handled or safely handed back: at-least-once.
//!
//! `auto_commit` commits each message's offset *before* running the handler
//! (what users of Kafka's auto commit ask for): a crash or a failing handler
//! then loses the message. The broker records that the group runs this way.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::connection::{ClientError, Connection};
use crate::protocol::{Dedupe, Delivered, Request, Response};

/// What a handler decides for a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsumeResult {
    /// RocketMQ's CONSUME_SUCCESS.
    Success,
    /// RocketMQ's RECONSUME_LATER: retry after the next delay level.
    ReconsumeLater,
    /// RECONSUME_LATER with why: the text is kept on the retry and the
    /// dead letter, shown in the DLQ list and the timeline, and can be
    /// filtered on (at most [`MAX_REASON`] bytes are kept).
    ReconsumeLaterWith(String),
    /// Already handled (an inbox found its dedupe key): acknowledged
    /// without running the handler again. The text says how the first
    /// handling is known ("first handled as … at …"); the broker traces it
    /// as a `consume` stage with outcome `duplicate`.
    Duplicate(String),
}

impl ConsumeResult {
    /// RECONSUME_LATER because of `why` (an error's text, say).
    pub fn reconsume_later(why: impl std::fmt::Display) -> ConsumeResult {
        ConsumeResult::ReconsumeLaterWith(why.to_string())
    }
}

/// Longest failure reason sent to the broker (bytes); longer ones keep
/// their end, where errors usually say what went wrong last.
pub const MAX_REASON: usize = 1024;

/// `text` cut to at most `max` bytes on a character boundary, keeping the
/// end (with `…` in front when cut).
pub fn tail(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &text[start..])
}

#[derive(Debug, Clone)]
pub struct ConsumerOptions {
    pub broker: String,
    pub group: String,
    pub topic: String,
    /// Unique per member; defaults to host-pid-random.
    pub client_id: String,
    pub auto_commit: bool,
    /// Messages per pull.
    pub batch: u32,
    /// How long a pull waits on the broker when the queue is empty.
    pub pull_wait: Duration,
    /// Heartbeat period; the broker drops a member silent for its
    /// `client_timeout`, and rebalances.
    pub heartbeat_interval: Duration,
    /// RocketMQ's consumeTimeout: a handler running longer counts as failed.
    pub handler_timeout: Duration,
    /// Timeout of one request to the broker (pulls add `pull_wait`).
    pub request_timeout: Duration,
    /// The broker's `--auth-token`, presented on every connection.
    pub auth_token: Option<String>,
    /// TLS to the broker (`--tls-cert` on the broker); none: plain TCP.
    pub tls: Option<crate::TlsClient>,
    /// How often handled offsets are committed: zero (the default) commits
    /// after every batch; RocketMQ's push consumer persists every 5 s, which
    /// redelivers up to 5 s of handled messages after a crash.
    pub commit_interval: Duration,
    /// Set by an inbox ([`crate::inbox`]): the member handles idempotently,
    /// which the broker shows on the group and its timelines.
    pub dedupe: Option<Dedupe>,
}

impl ConsumerOptions {
    pub fn new(broker: impl Into<String>, group: impl Into<String>, topic: impl Into<String>) -> Self {
        ConsumerOptions {
            broker: broker.into(),
            group: group.into(),
            topic: topic.into(),
            client_id: default_client_id(),
            auto_commit: false,
            batch: 32,
            pull_wait: Duration::from_millis(1000),
            heartbeat_interval: Duration::from_millis(1000),
            handler_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(5),
            auth_token: None,
            tls: None,
            commit_interval: Duration::ZERO,
            dedupe: None,
        }
    }
}

fn default_client_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("consumer-{}-{nanos:x}", std::process::id())
}

type Handler = Arc<dyn Fn(Delivered) -> std::pin::Pin<Box<dyn Future<Output = ConsumeResult> + Send>> + Send + Sync>;

/// A running consumer; stop it with [`PushConsumer::shutdown`].
pub struct PushConsumer {
    stop: watch::Sender<bool>,
    main: JoinHandle<()>,
}

struct Shared {
    opts: ConsumerOptions,
    handler: Handler,
    conn: tokio::sync::Mutex<Option<Arc<Connection>>>,
}

impl Shared {
    async fn conn(&self) -> Result<Arc<Connection>, ClientError> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref() {
            if !c.is_closed() {
                return Ok(c.clone());
            }
        }
        let c = Connection::connect_with(
            &self.opts.broker,
            self.opts.auth_token.as_deref(),
            self.opts.tls.as_ref(),
        )
        .await?;
        *slot = Some(c.clone());
        Ok(c)
    }

    async fn call(&self, req: &Request, extra: Duration) -> Result<Response, ClientError> {
        self.conn().await?.call(req, self.opts.request_timeout + extra).await
    }
}

/// Pause after a failed request before trying again.
const BACKOFF: Duration = Duration::from_millis(200);

impl PushConsumer {
    /// Joins the group and starts consuming with `handler`.
    pub async fn start<H, Fut>(opts: ConsumerOptions, handler: H) -> Result<PushConsumer, ClientError>
    where
        H: Fn(Delivered) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ConsumeResult> + Send + 'static,
    {
        let handler: Handler = Arc::new(move |d| Box::pin(handler(d)));
        let shared = Arc::new(Shared {
            opts,
            handler,
            conn: tokio::sync::Mutex::new(None),
        });
        // Fail fast when the broker is unreachable.
        shared.conn().await?;
        let (stop, stop_rx) = watch::channel(false);
        let main = tokio::spawn(run(shared, stop_rx));
        Ok(PushConsumer { stop, main })
    }

    /// Stops pulling, lets in-flight handlers finish and commit, leaves the
    /// group (so its queues move to other members at once).
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.main.await;
    }
}

async fn run(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut tasks: HashMap<(String, u32), (watch::Sender<bool>, JoinHandle<()>)> = HashMap::new();
    let o = &shared.opts;
    loop {
        let hb = Request::Heartbeat {
            group: o.group.clone(),
            client_id: o.client_id.clone(),
            topic: o.topic.clone(),
            auto_commit: o.auto_commit,
            dedupe: o.dedupe.clone(),
        };
        match shared.call(&hb, Duration::ZERO).await {
            Ok(Response::Assignment(queues)) => {
                let wanted: std::collections::HashSet<(String, u32)> = queues.into_iter().collect();
                let gone: Vec<_> = tasks.keys().filter(|k| !wanted.contains(*k)).cloned().collect();
                for k in gone {
                    if let Some((s, h)) = tasks.remove(&k) {
                        let _ = s.send(true);
                        let _ = h.await;
                    }
                }
                for k in wanted {
                    if let std::collections::hash_map::Entry::Vacant(slot) = tasks.entry(k) {
                        let (s, r) = watch::channel(false);
                        let (topic, queue) = slot.key().clone();
                        let h = tokio::spawn(consume_queue(shared.clone(), topic, queue, r));
                        slot.insert((s, h));
                    }
                }
            }
            Ok(other) => tracing::warn!(?other, "unexpected heartbeat answer"),
            Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(o.heartbeat_interval) => {}
            _ = stop.changed() => break,
        }
    }
    for (_, (s, h)) in tasks.drain() {
        let _ = s.send(true);
        let _ = h.await;
    }
    let leave = Request::Leave {
        group: o.group.clone(),
        client_id: o.client_id.clone(),
    };
    let _ = shared.call(&leave, Duration::ZERO).await;
}

async fn consume_queue(shared: Arc<Shared>, topic: String, queue_id: u32, mut stop: watch::Receiver<bool>) {
    let o = &shared.opts;
    let mut offset = loop {
        let q = Request::QueryOffset {
            group: o.group.clone(),
            topic: topic.clone(),
            queue_id,
        };
        match shared.call(&q, Duration::ZERO).await {
            Ok(Response::Offset(v)) => break v.unwrap_or(0),
            Ok(other) => tracing::warn!(?other, "unexpected offset answer"),
            Err(e) => tracing::warn!(error = %e, "offset query failed"),
        }
        if *stop.borrow() {
            return;
        }
        tokio::time::sleep(BACKOFF).await;
    };
    // Handled since the last commit: `(offset, ms)` and duplicates; the
    // commit goes out after each batch, or once `commit_interval` passed.
    let mut pending = Pending::default();
    let mut last_commit = tokio::time::Instant::now();
    while !*stop.borrow() {
        let pull = Request::Pull {
            group: o.group.clone(),
            topic: topic.clone(),
            queue_id,
            offset,
            max: o.batch,
            wait_ms: o.pull_wait.as_millis() as u32,
        };
        let resp = tokio::select! {
            r = shared.call(&pull, o.pull_wait) => r,
            _ = stop.changed() => break,
        };
        let (messages, next) = match resp {
            Ok(Response::Messages { messages, next_offset }) => (messages, next_offset),
            Ok(other) => {
                tracing::warn!(?other, "unexpected pull answer");
                tokio::time::sleep(BACKOFF).await;
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, %topic, queue_id, "pull failed");
                tokio::time::sleep(BACKOFF).await;
                continue;
            }
        };
        for d in messages {
            if o.auto_commit {
                commit(&shared, &topic, queue_id, d.queue_offset + 1, Pending::default()).await;
            }
            let record_id = d.record_id.clone();
            let queue_offset = d.queue_offset;
            let started = std::time::Instant::now();
            let outcome = handle(&shared, d).await;
            let ms = u32::try_from(started.elapsed().as_millis()).unwrap_or(u32::MAX);
            match outcome {
                Ok(None) => pending.handled.push((queue_offset, ms)),
                Ok(Some(first)) => pending.duplicates.push((queue_offset, first)),
                Err(reason) => send_back(&shared, &record_id, &format!("{reason} (after {ms} ms)")).await,
            }
        }
        pending.offset = next;
        if next != offset && !o.auto_commit {
            pending.due = true;
        }
        offset = next;
        if pending.due && last_commit.elapsed() >= o.commit_interval {
            commit(&shared, &topic, queue_id, offset, std::mem::take(&mut pending)).await;
            last_commit = tokio::time::Instant::now();
        }
    }
    // Stopping (shutdown or the queue moved away): what was handled is
    // committed, so the next owner does not redeliver it.
    if pending.due {
        commit(&shared, &topic, queue_id, offset, pending).await;
    }
}

/// What a queue's task handled since its last commit.
#[derive(Default)]
struct Pending {
    offset: u64,
    /// The offset moved since the last commit.
    due: bool,
    handled: Vec<(u64, u32)>,
    duplicates: Vec<(u64, String)>,
}

/// Runs the handler in its own task so a panic is caught, with a timeout.
/// `Ok(None)`: handled; `Ok(Some(first))`: a duplicate the handler (an
/// inbox) acknowledged without handling again.
async fn handle(shared: &Shared, d: Delivered) -> Result<Option<String>, String> {
    let fut = (shared.handler)(d);
    let task = tokio::spawn(fut);
    match tokio::time::timeout(shared.opts.handler_timeout, task).await {
        Ok(Ok(ConsumeResult::Success)) => Ok(None),
        Ok(Ok(ConsumeResult::Duplicate(first))) => Ok(Some(tail(first.trim(), MAX_REASON))),
        Ok(Ok(ConsumeResult::ReconsumeLater)) => Err("handler returned RECONSUME_LATER".into()),
        Ok(Ok(ConsumeResult::ReconsumeLaterWith(why))) => Err(format!(
            "handler returned RECONSUME_LATER: {}",
            tail(why.trim(), MAX_REASON)
        )),
        Ok(Err(e)) if e.is_panic() => {
            let payload = e.into_panic();
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned());
            Err(match msg {
                Some(m) => format!("handler panicked: {}", tail(&m, MAX_REASON)),
                None => "handler panicked".into(),
            })
        }
        Ok(Err(e)) => Err(format!("handler task failed: {e}")),
        Err(_) => Err(format!("handler timed out after {:?}", shared.opts.handler_timeout)),
    }
}

/// Hands a failed message back; retried until the broker accepts, because
/// the offset must not pass a message that is neither handled nor scheduled.
async fn send_back(shared: &Shared, record_id: &str, reason: &str) {
    let req = Request::SendBack {
        group: shared.opts.group.clone(),
        record_id: record_id.to_string(),
        reason: reason.to_string(),
    };
    loop {
        match shared.call(&req, Duration::ZERO).await {
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(error = %e, record_id, "send back failed; retrying");
                tokio::time::sleep(BACKOFF).await;
            }
        }
    }
}

/// Commits `offset`; `done` says which messages the handler finished and
/// in how many milliseconds, and which were duplicates (the trace shows it
/// per message).
async fn commit(shared: &Shared, topic: &str, queue_id: u32, offset: u64, done: Pending) {
    let req = Request::Commit {
        group: shared.opts.group.clone(),
        topic: topic.to_string(),
        queue_id,
        offset,
        handled: done.handled,
        duplicates: done.duplicates,
    };
    if let Err(e) = shared.call(&req, Duration::ZERO).await {
        // Not fatal: the messages are redelivered (at-least-once).
        tracing::warn!(error = %e, topic, queue_id, offset, "commit failed");
    }
}
