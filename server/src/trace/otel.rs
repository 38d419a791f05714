//! OpenTelemetry export: each message's stages as spans over OTLP/HTTP.
//!
//! A message's W3C `traceparent` (stamped by the producer, or by the broker
//! when missing) names its trace. Spans, with the real stage times:
//! - `produce` (born → acknowledged), child of the producer's span;
//! - `store` (stored → acknowledged, fsync included in sync flush), child of
//!   `produce`;
//! - `deliver` (pulled by a group → committed or handed back), child of the
//!   producer's span, one per group and delivery;
//! - `consume` (same interval, the handler's run), child of `deliver`, only
//!   when the group committed past it (a hand-back ends `deliver` with an
//!   error status instead).
//!
//! Spans go through the SDK's batch processor (its own thread, bounded
//! queue that drops when full) to `--otlp-endpoint` + `/v1/traces`, as JSON.
//! Nothing here runs unless an endpoint is configured.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{
    Span, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId, TraceState, Tracer,
    TracerProvider,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;

/// Export delay of the batch processor: short, so a trace shows up in
/// seconds.
const EXPORT_DELAY: Duration = Duration::from_millis(500);
/// Pending deliveries remembered per queue while waiting for a commit.
const MAX_PENDING: usize = 10_000;

/// Why the exporter could not start.
#[derive(Debug, thiserror::Error)]
#[error("OTLP exporter: {0}")]
pub struct OtelError(String);

/// A delivery waiting for its group's commit.
struct Pending {
    offset: u64,
    parent: SpanContext,
    at_ms: i64,
    message_id: String,
}

pub struct Otel {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    // std Mutex: push/drain only, never held across an await.
    pending: Mutex<HashMap<(String, String, u32), VecDeque<Pending>>>,
}

fn time(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)
}

/// The remote parent a `traceparent` names.
fn parent_of(traceparent: &str) -> Option<SpanContext> {
    let (trace, span) = waybill_client::tracecontext::parse(traceparent)?;
    Some(SpanContext::new(
        TraceId::from_hex(trace).ok()?,
        SpanId::from_hex(span).ok()?,
        TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    ))
}

impl Otel {
    /// Starts exporting to `endpoint` (base URL; `/v1/traces` is appended).
    pub fn new(endpoint: &str) -> Result<Otel, OtelError> {
        let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpJson)
            .with_endpoint(url)
            .build()
            .map_err(|e| OtelError(e.to_string()))?;
        let processor = BatchSpanProcessor::builder(exporter)
            .with_batch_config(BatchConfigBuilder::default().with_scheduled_delay(EXPORT_DELAY).build())
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_resource(Resource::builder().with_service_name("waybill").build())
            .build();
        let tracer = provider.tracer("waybill");
        Ok(Otel {
            provider,
            tracer,
            pending: Mutex::new(HashMap::new()),
        })
    }

    /// `produce` and `store` spans of an acknowledged message.
    pub fn stored(&self, id: &str, topic: &str, traceparent: &str, born_ms: i64, stored_ms: i64, acked_ms: i64) {
        let Some(parent) = parent_of(traceparent) else {
            return;
        };
        let attrs = vec![
            KeyValue::new("messaging.system", "waybill"),
            KeyValue::new("messaging.message.id", id.to_string()),
            KeyValue::new("messaging.destination.name", topic.to_string()),
        ];
        let cx = Context::new().with_remote_span_context(parent);
        let mut produce = self
            .tracer
            .span_builder("produce")
            .with_kind(SpanKind::Producer)
            .with_start_time(time(born_ms))
            .with_attributes(attrs.clone())
            .start_with_context(&self.tracer, &cx);
        let produce_cx = Context::new().with_remote_span_context(produce.span_context().clone());
        let mut store = self
            .tracer
            .span_builder("store")
            .with_kind(SpanKind::Internal)
            .with_start_time(time(stored_ms.max(born_ms)))
            .with_attributes(attrs)
            .start_with_context(&self.tracer, &produce_cx);
        store.end_with_timestamp(time(acked_ms));
        produce.end_with_timestamp(time(acked_ms));
    }

    /// A pull handed the delivered record `d` to `group`.
    pub fn delivered(&self, group: &str, d: &waybill_client::Delivered, at_ms: i64) {
        let Some(traceparent) = d.message.properties.get(waybill_client::tracecontext::PROP_TRACEPARENT) else {
            return;
        };
        let (queue_topic, queue_id, offset, message_id) = (&d.queue_topic, d.queue_id, d.queue_offset, &d.id);
        let Some(parent) = parent_of(traceparent) else {
            return;
        };
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let q = pending
            .entry((group.to_string(), queue_topic.to_string(), queue_id))
            .or_default();
        if q.len() >= MAX_PENDING {
            q.pop_front();
        }
        q.push_back(Pending {
            offset,
            parent,
            at_ms,
            message_id: message_id.to_string(),
        });
    }

    /// The group committed `offset`: deliveries below it were consumed.
    pub fn committed(&self, group: &str, queue_topic: &str, queue_id: u32, offset: u64, at_ms: i64) {
        let done: Vec<Pending> = {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            let Some(q) = pending.get_mut(&(group.to_string(), queue_topic.to_string(), queue_id)) else {
                return;
            };
            let mut done = Vec::new();
            while q.front().is_some_and(|p| p.offset < offset) {
                if let Some(p) = q.pop_front() {
                    done.push(p);
                }
            }
            done
        };
        for p in done {
            self.end_delivery(group, p, at_ms, None);
        }
    }

    /// The group handed the record at `offset` back (retry or dead letter).
    pub fn failed(&self, group: &str, queue_topic: &str, queue_id: u32, offset: u64, reason: &str, at_ms: i64) {
        let found = {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            pending
                .get_mut(&(group.to_string(), queue_topic.to_string(), queue_id))
                .and_then(|q| q.iter().position(|p| p.offset == offset).and_then(|i| q.remove(i)))
        };
        if let Some(p) = found {
            self.end_delivery(group, p, at_ms, Some(reason));
        }
    }

    fn end_delivery(&self, group: &str, p: Pending, end_ms: i64, failure: Option<&str>) {
        let attrs = vec![
            KeyValue::new("messaging.system", "waybill"),
            KeyValue::new("messaging.message.id", p.message_id.clone()),
            KeyValue::new("messaging.consumer.group.name", group.to_string()),
        ];
        let cx = Context::new().with_remote_span_context(p.parent);
        let mut deliver = self
            .tracer
            .span_builder("deliver")
            .with_kind(SpanKind::Consumer)
            .with_start_time(time(p.at_ms))
            .with_attributes(attrs.clone())
            .start_with_context(&self.tracer, &cx);
        match failure {
            Some(reason) => deliver.set_status(Status::error(reason.to_string())),
            None => {
                let deliver_cx = Context::new().with_remote_span_context(deliver.span_context().clone());
                let mut consume = self
                    .tracer
                    .span_builder("consume")
                    .with_kind(SpanKind::Internal)
                    .with_start_time(time(p.at_ms))
                    .with_attributes(attrs)
                    .start_with_context(&self.tracer, &deliver_cx);
                consume.end_with_timestamp(time(end_ms.max(p.at_ms)));
            }
        }
        deliver.end_with_timestamp(time(end_ms.max(p.at_ms)));
    }

    /// Exports what is buffered and stops the exporter thread.
    pub fn shutdown(&self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "OTLP exporter shutdown");
        }
    }
}
