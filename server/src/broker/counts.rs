//! Produce answers counted per topic and status, for `/metrics`
//! (`waybill_topic_messages_produced_total`). One short lock per produce
//! request, no allocation once a topic is known; everything else in the
//! metrics is derived at scrape time.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::{Broker, SendResult};

#[derive(Default)]
pub struct Produced {
    // std Mutex: one short update per request, never held across an await.
    by_topic: Mutex<BTreeMap<String, BTreeMap<&'static str, u64>>>,
}

impl Produced {
    /// Counts one request's results.
    pub fn add(&self, topic: &str, results: &[SendResult]) {
        let mut counts = self.by_topic.lock().unwrap_or_else(|p| p.into_inner());
        if !counts.contains_key(topic) {
            counts.insert(topic.to_string(), BTreeMap::new());
        }
        if let Some(by_status) = counts.get_mut(topic) {
            for r in results {
                *by_status.entry(r.status.name()).or_default() += 1;
            }
        }
    }

    /// `((topic, status), messages)` since start.
    pub fn snapshot(&self) -> Vec<((String, &'static str), u64)> {
        let counts = self.by_topic.lock().unwrap_or_else(|p| p.into_inner());
        counts
            .iter()
            .flat_map(|(t, by)| by.iter().map(move |(s, n)| ((t.clone(), *s), *n)))
            .collect()
    }
}

impl Broker {
    /// Messages stored by produce requests, by topic and the status the
    /// producer was answered.
    pub fn produced(&self) -> Vec<((String, &'static str), u64)> {
        self.produced.snapshot()
    }
}
