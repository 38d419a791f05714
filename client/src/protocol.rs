//! The client protocol's requests and responses, and their payload codecs.
//!
//! Requests carry a `request_id` (in the frame header); the broker answers
//! each with a response frame of the same id, in any order, so a connection
//! pipelines many requests. A oneway produce gets no answer at all.
//!
//! Property names (`PROP_*`, RocketMQ's where one exists) live in
//! [`crate::properties`] and are re-exported here.
//!
//! A broker started with a token wants [`Request::Auth`] as the first frame
//! of every connection; anything else first gets an
//! [`ErrorCode::Unauthorized`] error and the connection is closed.

use std::collections::BTreeMap;

pub use crate::properties::*;
pub use crate::transaction::TransactionState;
use crate::wire::{Reader, WireError, Writer};
use crate::SendStatus;

pub use values::{Dedupe, Delivered, Message, Produced, TransactionCheck};

/// What a client asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Produce {
        topic: String,
        /// No response is sent (RocketMQ's oneway).
        oneway: bool,
        messages: Vec<Message>,
    },
    /// Joins or stays in a consumer group; answered with the assignment.
    Heartbeat {
        group: String,
        client_id: String,
        topic: String,
        auto_commit: bool,
        /// The member handles through an inbox (idempotent consumer).
        dedupe: Option<Dedupe>,
    },
    /// Leaves a group at once (no timeout wait).
    Leave { group: String, client_id: String },
    /// Reads from one queue; waits up to `wait_ms` when nothing is there.
    Pull {
        group: String,
        topic: String,
        queue_id: u32,
        offset: u64,
        max: u32,
        wait_ms: u32,
    },
    Commit {
        group: String,
        topic: String,
        queue_id: u32,
        offset: u64,
        /// Messages the handler finished with `Success` since the last
        /// commit: `(queue offset, handler milliseconds)`, for the trace.
        handled: Vec<(u64, u32)>,
        /// Messages the inbox acknowledged without running the handler:
        /// `(queue offset, how the first handling is known)`.
        duplicates: Vec<(u64, String)>,
    },
    QueryOffset {
        group: String,
        topic: String,
        queue_id: u32,
    },
    /// The handler failed: schedule a retry (or dead-letter) for the
    /// delivered record `record_id`.
    SendBack {
        group: String,
        record_id: String,
        reason: String,
    },
    /// Stores a half message: durable, invisible to consumers until its
    /// transaction commits. Answered with `Produced` (the half's id).
    ProduceHalf {
        topic: String,
        producer_group: String,
        message: Message,
    },
    /// Ends a transaction. `from_check` when answering a check-back.
    /// Answered with `Produced` (the committed message) or `Ok`.
    EndTransaction {
        producer_group: String,
        id: String,
        state: TransactionState,
        from_check: bool,
    },
    /// Waits up to `wait_ms` for check-backs addressed to a producer group.
    PollChecks { producer_group: String, wait_ms: u32 },
    /// Presents the broker's `--auth-token`; answered with `Ok`, or with
    /// `Unauthorized` and a closed connection. A broker without a token
    /// answers `Ok` to any.
    Auth { token: String },
}

/// What the broker answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    Produced(Vec<Produced>),
    Assignment(Vec<(String, u32)>),
    Messages { messages: Vec<Delivered>, next_offset: u64 },
    Offset(Option<u64>),
    Ok,
    Error { code: ErrorCode, message: String },
    Checks(Vec<TransactionCheck>),
}

/// Error classes a client can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The request was wrong; retrying it unchanged will fail again.
    BadRequest = 1,
    /// The broker cannot serve now (storage failed, shutting down): try
    /// another broker.
    Unavailable = 2,
    NotFound = 3,
    Internal = 4,
    /// The broker wants its token first ([`Request::Auth`]) or the token
    /// was wrong; the broker closes the connection.
    Unauthorized = 5,
}

impl ErrorCode {
    fn from_u8(v: u8) -> Result<Self, WireError> {
        Ok(match v {
            1 => ErrorCode::BadRequest,
            2 => ErrorCode::Unavailable,
            3 => ErrorCode::NotFound,
            4 => ErrorCode::Internal,
            5 => ErrorCode::Unauthorized,
            _ => return Err(WireError::Payload("unknown error code")),
        })
    }
}

// Frame kinds. Requests below 64, responses from 64.
const K_PRODUCE: u8 = 1;
const K_HEARTBEAT: u8 = 2;
const K_LEAVE: u8 = 3;
const K_PULL: u8 = 4;
const K_COMMIT: u8 = 5;
const K_QUERY_OFFSET: u8 = 6;
const K_SEND_BACK: u8 = 7;
const K_PRODUCE_HALF: u8 = 8;
const K_END_TRANSACTION: u8 = 9;
const K_POLL_CHECKS: u8 = 10;
/// Public: the broker routes it before anything else (and reads no other
/// payload from a connection that has not sent it, when a token is set).
pub const K_AUTH: u8 = 11;
const K_PRODUCED: u8 = 64;
const K_ASSIGNMENT: u8 = 65;
const K_MESSAGES: u8 = 66;
const K_OFFSET: u8 = 67;
const K_OK: u8 = 68;
const K_ERROR: u8 = 69;
const K_CHECKS: u8 = 70;

fn put_message(w: &mut Writer, m: &Message) {
    w.opt_str(m.key.as_deref())
        .opt_str(m.tags.as_deref())
        .opt_str(m.producer.as_deref())
        .u32(m.properties.len() as u32);
    for (k, v) in &m.properties {
        w.str(k).str(v);
    }
    w.bytes(&m.body).i64(m.born_ms);
}

fn get_message(r: &mut Reader<'_>) -> Result<Message, WireError> {
    let key = r.opt_str()?;
    let tags = r.opt_str()?;
    let producer = r.opt_str()?;
    let n = r.count(8)?;
    let mut properties = BTreeMap::new();
    for _ in 0..n {
        let k = r.str()?;
        let v = r.str()?;
        // Canonical form only: keys strictly increasing (what a BTreeMap
        // encodes), so one message has exactly one encoding.
        if properties.last_key_value().is_some_and(|(last, _)| *last >= k) {
            return Err(WireError::Payload("property keys not sorted and unique"));
        }
        properties.insert(k, v);
    }
    Ok(Message {
        key,
        tags,
        producer,
        properties,
        body: r.bytes()?,
        born_ms: r.i64()?,
    })
}

fn status_code(s: SendStatus) -> u8 {
    match s {
        SendStatus::SendOk => 0,
        SendStatus::FlushDiskTimeout => 1,
        SendStatus::FlushSlaveTimeout => 2,
        SendStatus::SlaveNotAvailable => 3,
    }
}

fn status_from(v: u8) -> Result<SendStatus, WireError> {
    Ok(match v {
        0 => SendStatus::SendOk,
        1 => SendStatus::FlushDiskTimeout,
        2 => SendStatus::FlushSlaveTimeout,
        3 => SendStatus::SlaveNotAvailable,
        _ => return Err(WireError::Payload("unknown send status")),
    })
}

impl Request {
    /// Frame kind and payload.
    pub fn encode(&self) -> (u8, Vec<u8>) {
        let mut w = Writer::default();
        let kind = match self {
            Request::Produce {
                topic,
                oneway,
                messages,
            } => {
                w.str(topic).u8(u8::from(*oneway)).u32(messages.len() as u32);
                for m in messages {
                    put_message(&mut w, m);
                }
                K_PRODUCE
            }
            Request::Heartbeat {
                group,
                client_id,
                topic,
                auto_commit,
                dedupe,
            } => {
                w.str(group).str(client_id).str(topic).u8(u8::from(*auto_commit));
                match dedupe {
                    None => w.u8(0),
                    Some(d) => w.u8(1).str(&d.backend).u64(d.window_ms),
                };
                K_HEARTBEAT
            }
            Request::Leave { group, client_id } => {
                w.str(group).str(client_id);
                K_LEAVE
            }
            Request::Pull {
                group,
                topic,
                queue_id,
                offset,
                max,
                wait_ms,
            } => {
                w.str(group)
                    .str(topic)
                    .u32(*queue_id)
                    .u64(*offset)
                    .u32(*max)
                    .u32(*wait_ms);
                K_PULL
            }
            Request::Commit {
                group,
                topic,
                queue_id,
                offset,
                handled,
                duplicates,
            } => {
                w.str(group)
                    .str(topic)
                    .u32(*queue_id)
                    .u64(*offset)
                    .u32(handled.len() as u32);
                for (o, ms) in handled {
                    w.u64(*o).u32(*ms);
                }
                w.u32(duplicates.len() as u32);
                for (o, first) in duplicates {
                    w.u64(*o).str(first);
                }
                K_COMMIT
            }
            Request::QueryOffset { group, topic, queue_id } => {
                w.str(group).str(topic).u32(*queue_id);
                K_QUERY_OFFSET
            }
            Request::SendBack {
                group,
                record_id,
                reason,
            } => {
                w.str(group).str(record_id).str(reason);
                K_SEND_BACK
            }
            Request::ProduceHalf {
                topic,
                producer_group,
                message,
            } => {
                w.str(topic).str(producer_group);
                put_message(&mut w, message);
                K_PRODUCE_HALF
            }
            Request::EndTransaction {
                producer_group,
                id,
                state,
                from_check,
            } => {
                w.str(producer_group).str(id).u8(state.code()).u8(u8::from(*from_check));
                K_END_TRANSACTION
            }
            Request::PollChecks {
                producer_group,
                wait_ms,
            } => {
                w.str(producer_group).u32(*wait_ms);
                K_POLL_CHECKS
            }
            Request::Auth { token } => {
                w.str(token);
                K_AUTH
            }
        };
        (kind, w.buf)
    }

    /// Decodes a request payload of frame kind `kind`.
    pub fn decode(kind: u8, payload: &[u8]) -> Result<Request, WireError> {
        let mut r = Reader::new(payload);
        let req = match kind {
            K_PRODUCE => {
                let topic = r.str()?;
                let oneway = r.bool()?;
                let n = r.count(19)?;
                let mut messages = Vec::with_capacity(n);
                for _ in 0..n {
                    messages.push(get_message(&mut r)?);
                }
                Request::Produce {
                    topic,
                    oneway,
                    messages,
                }
            }
            K_HEARTBEAT => Request::Heartbeat {
                group: r.str()?,
                client_id: r.str()?,
                topic: r.str()?,
                auto_commit: r.bool()?,
                dedupe: match r.bool()? {
                    false => None,
                    true => Some(Dedupe {
                        backend: r.str()?,
                        window_ms: r.u64()?,
                    }),
                },
            },
            K_LEAVE => Request::Leave {
                group: r.str()?,
                client_id: r.str()?,
            },
            K_PULL => Request::Pull {
                group: r.str()?,
                topic: r.str()?,
                queue_id: r.u32()?,
                offset: r.u64()?,
                max: r.u32()?,
                wait_ms: r.u32()?,
            },
            K_COMMIT => {
                let (group, topic, queue_id, offset) = (r.str()?, r.str()?, r.u32()?, r.u64()?);
                let n = r.count(12)?;
                let mut handled = Vec::with_capacity(n);
                for _ in 0..n {
                    handled.push((r.u64()?, r.u32()?));
                }
                // 8-byte offset + 4-byte string length at least.
                let n = r.count(12)?;
                let mut duplicates = Vec::with_capacity(n);
                for _ in 0..n {
                    duplicates.push((r.u64()?, r.str()?));
                }
                Request::Commit {
                    group,
                    topic,
                    queue_id,
                    offset,
                    handled,
                    duplicates,
                }
            }
            K_QUERY_OFFSET => Request::QueryOffset {
                group: r.str()?,
                topic: r.str()?,
                queue_id: r.u32()?,
            },
            K_SEND_BACK => Request::SendBack {
                group: r.str()?,
                record_id: r.str()?,
                reason: r.str()?,
            },
            K_PRODUCE_HALF => Request::ProduceHalf {
                topic: r.str()?,
                producer_group: r.str()?,
                message: get_message(&mut r)?,
            },
            K_END_TRANSACTION => Request::EndTransaction {
                producer_group: r.str()?,
                id: r.str()?,
                state: TransactionState::from_code(r.u8()?)?,
                from_check: r.bool()?,
            },
            K_POLL_CHECKS => Request::PollChecks {
                producer_group: r.str()?,
                wait_ms: r.u32()?,
            },
            K_AUTH => Request::Auth { token: r.str()? },
            other => return Err(WireError::Kind(other)),
        };
        r.finish()?;
        Ok(req)
    }
}

impl Response {
    pub fn encode(&self) -> (u8, Vec<u8>) {
        let mut w = Writer::default();
        let kind = match self {
            Response::Produced(results) => {
                w.u32(results.len() as u32);
                for p in results {
                    w.u8(status_code(p.status))
                        .str(&p.id)
                        .u32(p.queue_id)
                        .u64(p.queue_offset);
                }
                K_PRODUCED
            }
            Response::Assignment(queues) => {
                w.u32(queues.len() as u32);
                for (t, q) in queues {
                    w.str(t).u32(*q);
                }
                K_ASSIGNMENT
            }
            Response::Messages { messages, next_offset } => {
                w.u64(*next_offset).u32(messages.len() as u32);
                for d in messages {
                    w.str(&d.id)
                        .str(&d.record_id)
                        .str(&d.topic)
                        .str(&d.queue_topic)
                        .u32(d.queue_id)
                        .u64(d.queue_offset)
                        .u32(d.reconsume_times)
                        .i64(d.stored_ms);
                    put_message(&mut w, &d.message);
                }
                K_MESSAGES
            }
            Response::Offset(o) => {
                match o {
                    Some(v) => w.u8(1).u64(*v),
                    None => w.u8(0),
                };
                K_OFFSET
            }
            Response::Ok => K_OK,
            Response::Error { code, message } => {
                w.u8(*code as u8).str(message);
                K_ERROR
            }
            Response::Checks(checks) => {
                w.u32(checks.len() as u32);
                for c in checks {
                    w.str(&c.id).str(&c.topic).u32(c.check_times);
                    put_message(&mut w, &c.message);
                }
                K_CHECKS
            }
        };
        (kind, w.buf)
    }

    pub fn decode(kind: u8, payload: &[u8]) -> Result<Response, WireError> {
        let mut r = Reader::new(payload);
        let resp = match kind {
            K_PRODUCED => {
                let n = r.count(17)?;
                let mut out = Vec::with_capacity(n);
                for _ in 0..n {
                    out.push(Produced {
                        status: status_from(r.u8()?)?,
                        id: r.str()?,
                        queue_id: r.u32()?,
                        queue_offset: r.u64()?,
                    });
                }
                Response::Produced(out)
            }
            K_ASSIGNMENT => {
                let n = r.count(8)?;
                let mut out = Vec::with_capacity(n);
                for _ in 0..n {
                    out.push((r.str()?, r.u32()?));
                }
                Response::Assignment(out)
            }
            K_MESSAGES => {
                let next_offset = r.u64()?;
                let n = r.count(59)?;
                let mut messages = Vec::with_capacity(n);
                for _ in 0..n {
                    messages.push(Delivered {
                        id: r.str()?,
                        record_id: r.str()?,
                        topic: r.str()?,
                        queue_topic: r.str()?,
                        queue_id: r.u32()?,
                        queue_offset: r.u64()?,
                        reconsume_times: r.u32()?,
                        stored_ms: r.i64()?,
                        message: get_message(&mut r)?,
                    });
                }
                Response::Messages { messages, next_offset }
            }
            K_OFFSET => Response::Offset(if r.bool()? { Some(r.u64()?) } else { None }),
            K_OK => Response::Ok,
            K_ERROR => Response::Error {
                code: ErrorCode::from_u8(r.u8()?)?,
                message: r.str()?,
            },
            K_CHECKS => {
                let n = r.count(31)?;
                let mut checks = Vec::with_capacity(n);
                for _ in 0..n {
                    checks.push(TransactionCheck {
                        id: r.str()?,
                        topic: r.str()?,
                        check_times: r.u32()?,
                        message: get_message(&mut r)?,
                    });
                }
                Response::Checks(checks)
            }
            other => return Err(WireError::Kind(other)),
        };
        r.finish()?;
        Ok(resp)
    }
}

#[cfg(test)]
mod tests;
mod values;
