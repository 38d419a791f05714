//! The broker's observers behind its one [`Events`] sink: the tracer, the
//! OpenTelemetry exporter, the dashboard's live feed and the alerts.
//!
//! `server.rs` builds a [`Subscribers`] before the broker and hands it over
//! as the broker's sink; the broker calls it and knows none of these types.
//! What each one gets is what the broker used to hand it directly:
//! - the tracer: every event; its verdict (`Queued`/`Shed`) on a produce
//!   request is the sink's verdict. Without a tracer, nothing is owed and
//!   every request counts as queued.
//! - the live feed: a summary of every event the tracer gets, sent only
//!   while someone listens (a slow listener misses events: broadcast lag,
//!   the broker never waits).
//! - OpenTelemetry: produce/store spans (from the traceparent the broker
//!   adds to each stored message when [`Interest::spans`] is set), deliver,
//!   commit and failure spans.
//! - alerts: dead-letterings, for the DLQ inflow rule.

use std::sync::Arc;

use serde_json::Value;
use tokio::sync::broadcast;
use waybill_client::Delivered;

use super::alerts::Alerts;
use super::otel::Otel;
use super::Tracer;
use crate::broker::event::{Recorded, Stored, TraceEvent};
use crate::broker::{Events, Interest};
use crate::model::MessageId;

/// Live events buffered per listener before it lags.
const LIVE_CAPACITY: usize = 1024;

/// Who listens to the broker.
pub struct Subscribers {
    tracer: Option<Arc<Tracer>>,
    otel: Option<Arc<Otel>>,
    alerts: Option<Arc<Alerts>>,
    /// Live feed for the dashboard (`/api/v1/events`); see the module doc.
    live: broadcast::Sender<Value>,
}

impl Subscribers {
    pub fn new(tracer: Option<Arc<Tracer>>, otel: Option<Arc<Otel>>, alerts: Option<Arc<Alerts>>) -> Subscribers {
        Subscribers {
            tracer,
            otel,
            alerts,
            live: broadcast::channel(LIVE_CAPACITY).0,
        }
    }

    /// Just a tracer (tests, benchmarks).
    pub fn tracing(tracer: Arc<Tracer>) -> Arc<Subscribers> {
        Arc::new(Subscribers::new(Some(tracer), None, None))
    }

    pub fn tracer(&self) -> Option<&Arc<Tracer>> {
        self.tracer.as_ref()
    }

    pub fn otel(&self) -> Option<&Arc<Otel>> {
        self.otel.as_ref()
    }

    pub fn alerts(&self) -> Option<&Arc<Alerts>> {
        self.alerts.as_ref()
    }

    /// The live feed, to subscribe to.
    pub fn live(&self) -> &broadcast::Sender<Value> {
        &self.live
    }

    /// Sends a summary of `ev` to live listeners, if any.
    fn publish(&self, ev: &TraceEvent) {
        if self.live.receiver_count() > 0 {
            for v in super::live::summaries(ev) {
                let _ = self.live.send(v);
            }
        }
    }
}

impl Events for Subscribers {
    fn interest(&self) -> Interest {
        Interest {
            trace: self.tracer.is_some(),
            spans: self.otel.is_some(),
        }
    }

    fn stored(&self, ev: Box<Stored>) -> Recorded {
        if let Some(o) = &self.otel {
            for m in &ev.messages {
                if let Some(tp) = &m.traceparent {
                    let id = MessageId {
                        node: m.node,
                        epoch: m.epoch,
                        pos: m.pos,
                    };
                    o.stored(&id.to_string(), &ev.topic, tp, m.born_ms, m.stored_ms, ev.acked_ms);
                }
            }
        }
        match &self.tracer {
            Some(t) => {
                let ev = TraceEvent::Stored(ev);
                self.publish(&ev);
                t.record(ev)
            }
            None => Recorded::Queued,
        }
    }

    fn event(&self, ev: TraceEvent) {
        if let (
            Some(o),
            TraceEvent::Committed {
                group,
                topic,
                queue_id,
                offset,
                at_ms,
                ..
            },
        ) = (&self.otel, &ev)
        {
            o.committed(group, topic, *queue_id, *offset, *at_ms);
        }
        if let Some(t) = &self.tracer {
            self.publish(&ev);
            // Shedding is counted by the tracer; only produce requests
            // change what the broker does about it.
            let _ = t.record(ev);
        }
    }

    fn delivered(&self, group: &str, out: &[Delivered], at_ms: i64) {
        if let Some(o) = &self.otel {
            for d in out {
                o.delivered(group, d, at_ms);
            }
        }
    }

    fn failed(&self, group: &str, topic: &str, queue_id: u32, offset: u64, reason: &str, at_ms: i64) {
        if let Some(o) = &self.otel {
            o.failed(group, topic, queue_id, offset, reason, at_ms);
        }
    }

    fn dead_lettered(&self, group: &str, at_ms: i64) {
        if let Some(a) = &self.alerts {
            a.note_dead_letter(group, at_ms);
        }
    }

    fn replica_acked(&self, replica: u16, pos: u64) {
        if let Some(t) = &self.tracer {
            t.note_replicated(replica, pos);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::event::StoredMsg;

    fn request() -> Box<Stored> {
        Box::new(Stored {
            topic: "t".into(),
            messages: vec![StoredMsg {
                node: 1,
                epoch: 1,
                pos: 0,
                end: 80,
                queue_id: 0,
                queue_offset: 0,
                born_ms: 1,
                stored_ms: 2,
                key: None,
                send_mode: "sync",
                attempt: 1,
                traceparent: None,
            }],
            acked_ms: 3,
            flush_mode: "async",
            send_status: "SEND_OK",
            replication: "none",
        })
    }

    #[test]
    fn without_a_tracer_nothing_is_owed_and_nothing_is_built() {
        let s = Subscribers::new(None, None, None);
        assert_eq!(s.interest(), Interest::default());
        assert_eq!(s.stored(request()), Recorded::Queued);
    }

    #[test]
    fn alerts_hear_of_dead_letters() {
        let alerts = Alerts::new(crate::trace::alerts::AlertRules::default(), None);
        let s = Subscribers::new(None, None, Some(alerts.clone()));
        let now = crate::time::now_ms();
        s.dead_lettered("billing", now);
        s.dead_lettered("billing", now);
        assert_eq!(alerts.dlq_inflow(), vec![("billing".to_string(), 2)]);
    }
}
