//! Client requests on the broker port: each decoded [`Request`] becomes a
//! broker call and its [`Response`]. Errors are answered with the one
//! `BrokerError` → wire code table (`BrokerError::answer`).

use std::time::Duration;

use waybill_client::protocol::{Produced, Request, Response};

use crate::broker::transaction::Ended;
use crate::broker::{topic, Broker, BrokerError, Outgoing, SendResult};

/// Longest long-poll a client may ask for.
const MAX_PULL_WAIT: Duration = Duration::from_secs(30);

fn error(e: BrokerError) -> Response {
    Response::Error {
        code: e.answer().wire,
        message: e.to_string(),
    }
}

/// Answers one request from the client at `peer`.
pub(super) async fn handle(broker: &Broker, req: Request, peer: std::net::SocketAddr) -> Response {
    match req {
        Request::Produce {
            topic,
            messages,
            oneway,
        } => {
            let msgs = messages
                .into_iter()
                .map(|m| {
                    let mode = if oneway {
                        "oneway"
                    } else if m
                        .properties
                        .get(waybill_client::protocol::PROP_SEND_MODE)
                        .map(String::as_str)
                        == Some("async")
                    {
                        "async"
                    } else {
                        "sync"
                    };
                    outgoing(&topic, m, mode)
                })
                .collect();
            match broker.send_batch(&topic, msgs).await {
                Ok(results) => Response::Produced(results.into_iter().map(produced).collect()),
                Err(e) => error(e),
            }
        }
        Request::Heartbeat {
            group,
            client_id,
            topic,
            auto_commit,
            dedupe,
        } => {
            if let Err(e) = topic::validate_group(&group).and_then(|_| topic::validate(&topic)) {
                return error(e.into());
            }
            let queues = broker.group_queues(&group, &topic);
            Response::Assignment(broker.groups().heartbeat(
                &group,
                &client_id,
                &peer.to_string(),
                &topic,
                auto_commit,
                dedupe,
                &queues,
            ))
        }
        Request::Leave { group, client_id } => {
            broker.groups().leave(&group, &client_id);
            Response::Ok
        }
        Request::Pull {
            group,
            topic,
            queue_id,
            offset,
            max,
            wait_ms,
        } => {
            let wait = Duration::from_millis(u64::from(wait_ms)).min(MAX_PULL_WAIT);
            match broker.pull(&group, &topic, queue_id, offset, max as usize, wait).await {
                Ok((messages, next_offset)) => Response::Messages { messages, next_offset },
                Err(e) => error(e),
            }
        }
        Request::Commit {
            group,
            topic,
            queue_id,
            offset,
            handled,
            duplicates,
        } => match broker.commit(&group, &topic, queue_id, offset, handled, duplicates) {
            Ok(()) => Response::Ok,
            Err(e) => error(e),
        },
        Request::QueryOffset { group, topic, queue_id } => {
            Response::Offset(broker.groups().offset(&group, &topic, queue_id))
        }
        Request::SendBack {
            group,
            record_id,
            reason,
        } => match broker.send_back(&group, &record_id, &reason).await {
            Ok(_) => Response::Ok,
            Err(e) => error(e),
        },
        Request::ProduceHalf {
            topic,
            producer_group,
            message: m,
        } => {
            let msg = outgoing(&topic, m, "sync");
            match broker.send_half(&topic, &producer_group, msg).await {
                Ok(r) => Response::Produced(vec![produced(r)]),
                Err(e) => error(e),
            }
        }
        Request::EndTransaction {
            producer_group,
            id,
            state,
            from_check,
        } => match broker.end_transaction(&producer_group, &id, state, from_check).await {
            Ok(Ended::Committed(r)) => Response::Produced(vec![produced(r)]),
            Ok(Ended::RolledBack | Ended::StillOpen) => Response::Ok,
            Err(e) => error(e),
        },
        Request::PollChecks {
            producer_group,
            wait_ms,
        } => {
            let wait = Duration::from_millis(u64::from(wait_ms)).min(MAX_PULL_WAIT);
            Response::Checks(broker.poll_checks(&producer_group, wait).await)
        }
        // Answered in the reader loop before requests are spawned.
        Request::Auth { .. } => Response::Ok,
    }
}

/// A message from the wire as the broker stores it.
fn outgoing(topic: &str, m: waybill_client::Message, send_mode: &'static str) -> Outgoing {
    Outgoing {
        send_mode: Some(send_mode),
        topic: topic.to_string(),
        key: m.key,
        tags: m.tags,
        producer: m.producer,
        properties: m.properties,
        body: m.body,
        born_ms: (m.born_ms != 0).then_some(m.born_ms),
    }
}

fn produced(r: SendResult) -> Produced {
    Produced {
        status: r.status,
        id: r.id.to_string(),
        queue_id: r.queue_id,
        queue_offset: r.queue_offset,
    }
}
