//! The inbox: idempotent consumption (the seed article's "消费幂等").
//!
//! Delivery is at least once: a consumer that dies before committing, a
//! rebalance, or a DLQ replay delivers a message again. The inbox records
//! each handled message's **dedupe key** (the message key by default; the
//! id when it has none; or a caller's function) and acknowledges a message
//! whose key it has seen without running the handler, as
//! [`ConsumeResult::Duplicate`] — which the broker traces as a `consume`
//! stage with outcome `duplicate`.
//!
//! Backends and what each guarantees:
//! - **SQL** (SQLite, PostgreSQL; the `waybill_inbox` table): the key is
//!   inserted in a transaction. With [`Inbox::handle_in_tx`] the handler's
//!   business writes go in **the same transaction**, so the effect and the
//!   key commit together: exactly one effect per key, whatever crashes.
//!   With [`Inbox::handle`] the effect is outside it (an HTTP call, a
//!   command): a crash after the effect and before the commit repeats it.
//!   On SQLite the key's transaction holds the database's write lock while
//!   the handler runs, so handlers of one inbox run one at a time (others
//!   wait up to the 5 s busy timeout, then are handed back): keep them
//!   short, or use PostgreSQL, which locks only the key's row.
//! - **Redis** (`SET NX` with an expiry): the key is claimed as
//!   `processing` before the handler runs and becomes `done` after it
//!   succeeded. A message whose key is `processing` (another member has it,
//!   or one died with it less than `processing_ttl` ago) is handed back for
//!   a later retry, never run twice at once; a member that dies after the
//!   effect and before `done` leaves the effect to be repeated once the
//!   claim expires.
//!
//! Invariants: a backend that cannot be reached means the handler is not
//! run and the message is handed back (`RECONSUME_LATER`), never
//! acknowledged as handled. Keys are remembered for `window` (0 = forever):
//! a redelivery after that is handled again, so the window must cover the
//! group's retries and any replay of its dead letters — the broker shows
//! the window beside the retry schedule and flags replays beyond it.

#[cfg(feature = "redis")]
mod redis_store;
mod sql_store;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::consumer::{ConsumeResult, ConsumerOptions};
use crate::protocol::{Dedupe, Delivered};
use crate::sql::{Backend, SqlError};

pub use sql_store::{claim_in, InboxConn};

/// The inbox table's name.
pub const TABLE: &str = "waybill_inbox";

/// The table's DDL per backend (also in `migrations/inbox/`).
pub fn ddl(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => include_str!("../../../migrations/inbox/sqlite/0001_inbox.sql"),
        Backend::Postgres => include_str!("../../../migrations/inbox/postgres/0001_inbox.sql"),
    }
}

/// Why the inbox could not start or answer.
#[derive(Debug, thiserror::Error)]
pub enum InboxError {
    #[error(transparent)]
    Sql(#[from] SqlError),
    #[error("redis at {url}: {message}")]
    Redis { url: String, message: String },
    #[error("{0:?} is not a dedupe backend: use sqlite://PATH, postgres://… or redis://HOST:PORT")]
    Url(String),
    #[error("{0}")]
    Unsupported(String),
}

/// Whether a key was new.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// First time (or first time within the window): handle it.
    First,
    /// Handled before: how that is known ("first handled as … at …").
    Duplicate(String),
    /// Redis only: another member holds the key right now.
    Busy(String),
}

/// The dedupe key of a delivered message.
pub type KeyFn = Arc<dyn Fn(&Delivered) -> String + Send + Sync>;

/// A future a [`Inbox::handle_in_tx`] handler returns: its business writes
/// on the transaction's connection.
pub type TxFuture<'t, E> = Pin<Box<dyn Future<Output = Result<(), E>> + Send + 't>>;

enum Store {
    Sql {
        pool: sqlx::AnyPool,
        backend: Backend,
    },
    #[cfg(feature = "redis")]
    Redis(redis_store::RedisStore),
}

/// An inbox for one consumer group.
#[derive(Clone)]
pub struct Inbox {
    group: String,
    window: Duration,
    key: KeyFn,
    store: Arc<Store>,
}

/// The default dedupe key: the message key, or its id when it has none.
pub fn default_key(d: &Delivered) -> String {
    match &d.message.key {
        Some(k) if !k.is_empty() => k.clone(),
        _ => d.id.clone(),
    }
}

/// How long keys are remembered unless [`Inbox::with_window`] says
/// otherwise: a day, which covers RocketMQ's whole retry schedule
/// (about 4 h 46 min over 16 retries).
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(24 * 3600);

impl Inbox {
    /// Opens the backend `url` names for `group`: SQL URLs create the
    /// `waybill_inbox` table when missing and check its shape (a wrong
    /// column is an error naming it); a Redis URL must answer a PING.
    pub async fn connect(url: &str, group: &str) -> Result<Inbox, InboxError> {
        let store = if url.starts_with("redis://") || url.starts_with("rediss://") {
            Self::redis_store(url).await?
        } else {
            Backend::of(url).map_err(|_| InboxError::Url(url.chars().take(200).collect()))?;
            let (pool, backend) = crate::sql::connect(url, 8).await?;
            sql_store::install_and_check(&pool, backend).await?;
            Store::Sql { pool, backend }
        };
        Ok(Inbox {
            group: group.to_string(),
            window: DEFAULT_WINDOW,
            key: Arc::new(default_key),
            store: Arc::new(store),
        })
    }

    #[cfg(feature = "redis")]
    async fn redis_store(url: &str) -> Result<Store, InboxError> {
        Ok(Store::Redis(redis_store::RedisStore::connect(url).await?))
    }

    #[cfg(not(feature = "redis"))]
    async fn redis_store(url: &str) -> Result<Store, InboxError> {
        Err(InboxError::Unsupported(format!(
            "{url}: this build of waybill-client has no Redis support (feature \"redis\")"
        )))
    }

    /// Keys are remembered this long; zero = forever.
    pub fn with_window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// The dedupe key of a message (default: [`default_key`]).
    pub fn with_key(mut self, key: impl Fn(&Delivered) -> String + Send + Sync + 'static) -> Self {
        self.key = Arc::new(key);
        self
    }

    /// Redis: how long a `processing` claim outlives a member that died
    /// holding it (default 30 s).
    pub fn with_processing_ttl(self, ttl: Duration) -> Self {
        #[cfg(feature = "redis")]
        if let Store::Redis(r) = &*self.store {
            r.set_processing_ttl(ttl);
        }
        #[cfg(not(feature = "redis"))]
        let _ = ttl;
        self
    }

    pub fn group(&self) -> &str {
        &self.group
    }

    pub fn window(&self) -> Duration {
        self.window
    }

    /// `sqlite`, `postgres` or `redis`.
    pub fn backend(&self) -> &'static str {
        match &*self.store {
            Store::Sql { backend, .. } => backend.name(),
            #[cfg(feature = "redis")]
            Store::Redis(_) => "redis",
        }
    }

    /// What the consumer declares on its heartbeats.
    pub fn dedupe(&self) -> Dedupe {
        Dedupe {
            backend: self.backend().to_string(),
            window_ms: self.window.as_millis() as u64,
        }
    }

    /// `opts` with this inbox declared (the broker then shows the group as
    /// idempotent and its timelines drop the redelivery risk).
    pub fn declare(&self, mut opts: ConsumerOptions) -> ConsumerOptions {
        opts.dedupe = Some(self.dedupe());
        opts
    }

    pub fn key_of(&self, d: &Delivered) -> String {
        (self.key)(d)
    }

    /// The SQL pool, for a caller that wants its own transactions with
    /// [`claim_in`].
    pub fn pool(&self) -> Option<&sqlx::AnyPool> {
        match &*self.store {
            Store::Sql { pool, .. } => Some(pool),
            #[cfg(feature = "redis")]
            Store::Redis(_) => None,
        }
    }

    /// Runs `handler` unless `d`'s key was handled within the window. The
    /// key is recorded when the handler returns `Success`; the handler's
    /// effect is not in the key's transaction (see the module notes).
    pub async fn handle<F, Fut>(&self, d: Delivered, handler: F) -> ConsumeResult
    where
        F: FnOnce(Delivered) -> Fut,
        Fut: Future<Output = ConsumeResult>,
    {
        let key = self.key_of(&d);
        match &*self.store {
            Store::Sql { pool, .. } => {
                let tx = match self.claim_tx(pool, &key, &d.id).await {
                    Ok(tx) => tx,
                    Err(answer) => return answer,
                };
                let result = handler(d).await;
                if result != ConsumeResult::Success {
                    return result;
                }
                match tx.commit().await {
                    Ok(()) => ConsumeResult::Success,
                    Err(e) => ConsumeResult::reconsume_later(format!(
                        "handled, but the dedupe key {key:?} could not be recorded: {e}"
                    )),
                }
            }
            #[cfg(feature = "redis")]
            Store::Redis(r) => r.handle(&self.group, &key, d, self.window, handler).await,
        }
    }

    /// SQL only: records the key and runs `handler`'s business writes in
    /// one transaction, committed only when the handler returns `Ok`: the
    /// effect happens exactly once per key. `Err(e)` rolls both back and
    /// hands the message back with `e` as the reason.
    pub async fn handle_in_tx<F, E>(&self, d: Delivered, handler: F) -> ConsumeResult
    where
        F: for<'t> FnOnce(&'t mut sqlx::AnyConnection, &'t Delivered) -> TxFuture<'t, E>,
        E: std::fmt::Display,
    {
        let Store::Sql { pool, .. } = &*self.store else {
            return ConsumeResult::reconsume_later(
                "handle_in_tx needs a SQL inbox (sqlite:// or postgres://); use handle with Redis",
            );
        };
        let key = self.key_of(&d);
        let mut tx = match self.claim_tx(pool, &key, &d.id).await {
            Ok(tx) => tx,
            Err(answer) => return answer,
        };
        if let Err(e) = handler(&mut tx, &d).await {
            return ConsumeResult::reconsume_later(format!("handler failed (rolled back): {e}"));
        }
        match tx.commit().await {
            Ok(()) => ConsumeResult::Success,
            Err(e) => ConsumeResult::reconsume_later(format!("could not commit the handler's transaction: {e}")),
        }
    }

    /// Begins a transaction holding `key`'s claim when the key is new;
    /// otherwise the answer to give (duplicate, or backend unavailable).
    async fn claim_tx(
        &self,
        pool: &sqlx::AnyPool,
        key: &str,
        id: &str,
    ) -> Result<sqlx::Transaction<'static, sqlx::Any>, ConsumeResult> {
        let mut tx = pool.begin().await.map_err(|e| unavailable(&e))?;
        match claim_in(&mut *tx, &self.group, key, id, self.window).await {
            Ok(Claim::First) => Ok(tx),
            Ok(other) => Err(claim_result(other)),
            Err(e) => Err(unavailable(&e)),
        }
    }

    /// Deletes SQL keys older than the window (Redis keys expire by
    /// themselves). Returns how many went.
    pub async fn purge(&self) -> Result<u64, InboxError> {
        match &*self.store {
            Store::Sql { pool, .. } if !self.window.is_zero() => {
                Ok(sql_store::purge(pool, &self.group, self.window).await?)
            }
            _ => Ok(0),
        }
    }
}

/// The backend failed before the handler ran: hand the message back.
fn unavailable(e: &dyn std::fmt::Display) -> ConsumeResult {
    ConsumeResult::reconsume_later(format!("dedupe backend unavailable, handler not run: {e}"))
}

fn claim_result(c: Claim) -> ConsumeResult {
    match c {
        Claim::First => ConsumeResult::Success,
        Claim::Duplicate(first) => ConsumeResult::Duplicate(first),
        Claim::Busy(why) => ConsumeResult::reconsume_later(why),
    }
}
