//! The inbox's Redis side: one key per `(group, dedupe key)`.
//!
//! `SET k "processing|TOKEN" NX PX processing_ttl` claims it before the
//! handler runs; success turns it into `done|MESSAGE_ID|HANDLED_AT_MS`
//! with the window as its expiry (none for a zero window); failure deletes
//! it only if it still holds this claim's token (a Lua compare-and-delete,
//! so a claim that expired and was taken by another member is left alone).
//!
//! Every command has a deadline ([`COMMAND_TIMEOUT`]): a Redis that hangs
//! is a Redis that is down, and the message is handed back rather than
//! the consumer stalling with it.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redis::aio::ConnectionManager;

use super::sql_store::first_handled;
use super::{unavailable, ConsumeResult, InboxError};
use crate::protocol::Delivered;
use crate::sql::now_ms;

/// Longest wait for one Redis command.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

pub(super) struct RedisStore {
    conn: ConnectionManager,
    /// Milliseconds a `processing` claim lives (see `with_processing_ttl`).
    processing_ttl_ms: AtomicU64,
}

const RELEASE: &str =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";

impl RedisStore {
    pub(super) async fn connect(url: &str) -> Result<RedisStore, InboxError> {
        let err = |e: &dyn std::fmt::Display| InboxError::Redis {
            url: crate::sql::redact(url),
            message: e.to_string(),
        };
        let client = redis::Client::open(url).map_err(|e| err(&e))?;
        let cfg = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(COMMAND_TIMEOUT)
            .set_response_timeout(COMMAND_TIMEOUT)
            .set_number_of_retries(1);
        let mut conn = tokio::time::timeout(COMMAND_TIMEOUT * 2, ConnectionManager::new_with_config(client, cfg))
            .await
            .map_err(|_| err(&"no answer in time"))?
            .map_err(|e| err(&e))?;
        let _: String = tokio::time::timeout(COMMAND_TIMEOUT, redis::cmd("PING").query_async(&mut conn))
            .await
            .map_err(|_| err(&"no answer to PING in time"))?
            .map_err(|e| err(&e))?;
        Ok(RedisStore {
            conn,
            processing_ttl_ms: AtomicU64::new(30_000),
        })
    }

    pub(super) fn set_processing_ttl(&self, ttl: Duration) {
        self.processing_ttl_ms
            .store((ttl.as_millis() as u64).max(1), Ordering::Relaxed);
    }

    async fn run<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, String> {
        let mut conn = self.conn.clone();
        match tokio::time::timeout(COMMAND_TIMEOUT, cmd.query_async(&mut conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(format!("redis: {e}")),
            Err(_) => Err(format!("redis: no answer in {COMMAND_TIMEOUT:?}")),
        }
    }

    pub(super) async fn handle<F, Fut>(
        &self,
        group: &str,
        key: &str,
        d: Delivered,
        window: Duration,
        handler: F,
    ) -> ConsumeResult
    where
        F: FnOnce(Delivered) -> Fut,
        Fut: Future<Output = ConsumeResult>,
    {
        let rkey = format!("waybill:inbox:{group}:{key}");
        let token = format!("processing|{}|{:x}", d.id, rand_token());
        let ttl = self.processing_ttl_ms.load(Ordering::Relaxed);
        let claimed: Result<Option<String>, String> = self
            .run(redis::cmd("SET").arg(&rkey).arg(&token).arg("NX").arg("PX").arg(ttl))
            .await;
        match claimed {
            Err(e) => return unavailable(&e),
            Ok(Some(_)) => {}
            Ok(None) => {
                let held: Result<Option<String>, String> = self.run(redis::cmd("GET").arg(&rkey)).await;
                return match held {
                    Err(e) => unavailable(&e),
                    Ok(Some(v)) if v.starts_with("done|") => {
                        let mut parts = v.splitn(3, '|').skip(1);
                        let id = parts.next().unwrap_or("?").to_string();
                        let at = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
                        ConsumeResult::Duplicate(first_handled(&id, at, key))
                    }
                    Ok(Some(_)) => ConsumeResult::reconsume_later(format!(
                        "dedupe key {key:?} is being handled by another member (or one that died with it less than \
                         {ttl} ms ago): handed back for later"
                    )),
                    // Expired between SET and GET: try again later.
                    Ok(None) => ConsumeResult::reconsume_later(format!("dedupe key {key:?} changed hands; retrying")),
                };
            }
        }
        let id = d.id.clone();
        let result = handler(d).await;
        if result == ConsumeResult::Success {
            let done = format!("done|{id}|{}", now_ms());
            let mut set = redis::cmd("SET");
            set.arg(&rkey).arg(done);
            if !window.is_zero() {
                set.arg("PX").arg(window.as_millis() as u64);
            }
            if let Err(e) = self.run::<()>(&set).await {
                // The effect happened; the offset may move. Only a later
                // redelivery (after the claim expires) would repeat it.
                tracing::warn!(error = %e, key, "handled, but the inbox could not mark the key done");
            }
        } else {
            let release = redis::Script::new(RELEASE);
            let mut conn = self.conn.clone();
            let r = tokio::time::timeout(
                COMMAND_TIMEOUT,
                release.key(&rkey).arg(&token).invoke_async::<i64>(&mut conn),
            )
            .await;
            if !matches!(r, Ok(Ok(_))) {
                tracing::warn!(key, "could not release the inbox claim; it expires by itself");
            }
        }
        result
    }
}

/// A token unique enough to tell this claim from another member's.
fn rand_token() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(SEQ.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}
