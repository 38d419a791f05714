//! Transactional sends (RocketMQ's `TransactionMQProducer`).
//!
//! [`Producer::send_in_transaction`] stores a half message (invisible to
//! consumers), runs the caller's local transaction with its result, and
//! ends the transaction as the local transaction decided. Ending is best
//! effort, as in RocketMQ: if the end is lost, or the local transaction
//! answers [`TransactionState::Unknown`], the broker later asks the
//! producer group through [`Producer::start_transaction_checker`] (the
//! `TransactionListener::checkLocalTransaction` of RocketMQ), and rolls the
//! half back after its check limit.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::connection::ClientError;
use crate::producer::{Producer, SendResult};
use crate::protocol::{Message, Request, Response, TransactionCheck};
use crate::wire::WireError;
use crate::SendStatus;

/// What a producer's local transaction decided (RocketMQ's
/// `LocalTransactionState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransactionState {
    /// `COMMIT_MESSAGE`: deliver the half message.
    Commit,
    /// `ROLLBACK_MESSAGE`: drop it; consumers never see it.
    Rollback,
    /// `UNKNOW`: not decided yet; the broker checks back later.
    Unknown,
}

impl TransactionState {
    pub fn name(self) -> &'static str {
        match self {
            TransactionState::Commit => "COMMIT_MESSAGE",
            TransactionState::Rollback => "ROLLBACK_MESSAGE",
            TransactionState::Unknown => "UNKNOW",
        }
    }

    pub(crate) fn code(self) -> u8 {
        match self {
            TransactionState::Commit => 0,
            TransactionState::Rollback => 1,
            TransactionState::Unknown => 2,
        }
    }

    pub(crate) fn from_code(v: u8) -> Result<Self, WireError> {
        Ok(match v {
            0 => TransactionState::Commit,
            1 => TransactionState::Rollback,
            2 => TransactionState::Unknown,
            _ => return Err(WireError::Payload("unknown transaction state")),
        })
    }
}

/// How long one check poll waits at the broker.
const POLL_WAIT_MS: u32 = 1000;

/// What [`Producer::send_in_transaction`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionSendResult {
    /// The half message's result; its id names the transaction.
    pub half: SendResult,
    /// What the local transaction decided (`Rollback` without running it
    /// when the half was not stored with `SEND_OK`).
    pub state: TransactionState,
    /// The message as committed to its topic; `None` unless committed now
    /// (an undecided or unacknowledged end is settled by a check-back).
    pub committed: Option<SendResult>,
}

/// Runs check-backs until dropped.
pub struct TransactionChecker {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for TransactionChecker {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Producer {
    fn group(&self) -> Result<String, ClientError> {
        self.inner
            .opts
            .group
            .clone()
            .ok_or_else(|| ClientError::Unexpected("transactions need ProducerOptions::group".into()))
    }

    /// Sends `message` as a transaction: half message, then `local`
    /// (given the half's result), then commit or rollback as it decides.
    pub async fn send_in_transaction<F, Fut>(
        &self,
        topic: &str,
        message: Message,
        local: F,
    ) -> Result<TransactionSendResult, ClientError>
    where
        F: FnOnce(SendResult) -> Fut,
        Fut: Future<Output = TransactionState>,
    {
        let group = self.group()?;
        let req = Request::ProduceHalf {
            topic: topic.to_string(),
            producer_group: group.clone(),
            message: self.inner.stamp(message),
        };
        let half = match self.inner.call(&req).await? {
            (Response::Produced(r), attempt, i) => self
                .inner
                .results(r, attempt, i)
                .pop()
                .ok_or_else(|| ClientError::Unexpected("no result for the half message".into()))?,
            (other, _, _) => return Err(ClientError::Unexpected(format!("{other:?}"))),
        };
        let state = if half.status == SendStatus::SendOk {
            local(half.clone()).await
        } else {
            TransactionState::Rollback
        };
        let end = Request::EndTransaction {
            producer_group: group,
            id: half.id.clone(),
            state,
            from_check: false,
        };
        let committed = match self.inner.call(&end).await {
            Ok((Response::Produced(r), attempt, i)) => self.inner.results(r, attempt, i).pop(),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(id = %half.id, error = %e, "ending the transaction failed; the broker will check back");
                None
            }
        };
        Ok(TransactionSendResult { half, state, committed })
    }

    /// Answers the broker's check-backs for this producer's group with
    /// `check` (one poller per broker) until the returned handle drops.
    pub fn start_transaction_checker<F, Fut>(&self, check: F) -> Result<TransactionChecker, ClientError>
    where
        F: Fn(TransactionCheck) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = TransactionState> + Send + 'static,
    {
        let group = self.group()?;
        let check = Arc::new(check);
        let tasks = (0..self.inner.opts.brokers.len())
            .map(|i| {
                let (inner, group, check) = (self.inner.clone(), group.clone(), check.clone());
                tokio::spawn(async move {
                    let poll = Request::PollChecks {
                        producer_group: group.clone(),
                        wait_ms: POLL_WAIT_MS,
                    };
                    let timeout = inner.opts.send_timeout + Duration::from_millis(u64::from(POLL_WAIT_MS));
                    loop {
                        let checks = match inner.connection(i).await {
                            Ok(conn) => conn.call(&poll, timeout).await,
                            Err(e) => Err(e),
                        };
                        let checks = match checks {
                            Ok(Response::Checks(c)) => c,
                            Ok(_) => Vec::new(),
                            Err(e) => {
                                tracing::debug!(error = %e, "transaction check poll failed");
                                tokio::time::sleep(Duration::from_millis(200)).await;
                                continue;
                            }
                        };
                        for c in checks {
                            let id = c.id.clone();
                            let state = check(c).await;
                            let end = Request::EndTransaction {
                                producer_group: group.clone(),
                                id: id.clone(),
                                state,
                                from_check: true,
                            };
                            let answer = match inner.connection(i).await {
                                Ok(conn) => conn.call(&end, inner.opts.send_timeout).await,
                                Err(e) => Err(e),
                            };
                            if let Err(e) = answer {
                                tracing::warn!(%id, error = %e, "answering a transaction check failed");
                            }
                        }
                    }
                })
            })
            .collect();
        Ok(TransactionChecker { tasks })
    }
}
