//! Replays in memory: which dead letters were replayed (and discarded),
//! and the claims that keep a letter from being replayed twice.
//!
//! Restored on start from `%REPLAYS%` records, from the replayed copies
//! themselves (each carries `REPLAY_OF`), and from `%DLQ_DISCARDS%`. A
//! replay or a discard *claims* its letter first ([`Replays::claim`]):
//! however requests arrive, one letter is replayed once or discarded,
//! unless a replay is forced over an earlier one.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use waybill_client::protocol::{
    PROP_REPLAY_BY, PROP_REPLAY_EDITED, PROP_REPLAY_FORCED, PROP_REPLAY_JOB, PROP_REPLAY_OF,
};

/// One replay, as recorded.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReplayRecord {
    pub dlq_id: String,
    pub new_id: String,
    pub group: String,
    pub by: String,
    pub at_ms: i64,
    /// Forced over an earlier replay (or a quarantine).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forced: bool,
    /// The redrive job that made it, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// What was edited on the copy (`body`, `key`, `property NAME`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub edited: Vec<String>,
}

/// Replays by dead-letter id, and the letters being replayed right now.
///
/// Restored on start from `%REPLAYS%` records and from the replayed copies
/// themselves (each carries `REPLAY_OF`), whichever a crash left: the copy
/// is appended first, so a replay that reached the log is always found.
/// A replay *claims* its letter first ([`Replays::claim`]): two requests
/// for one letter, however they arrive, cannot both replay it.
#[derive(Default)]
pub struct Replays {
    // std Mutex: map and set updates only, never held across an await.
    inner: Mutex<ReplayState>,
}

#[derive(Default)]
struct ReplayState {
    by_dlq_id: HashMap<String, Vec<ReplayRecord>>,
    /// Letters discarded (never replayed after, even with force).
    discarded: HashMap<String, super::discard::Discard>,
    /// Letters a replay is in progress for (claimed, not yet recorded).
    claimed: HashSet<String>,
}

/// Why a letter cannot be claimed.
#[derive(Debug, Clone)]
pub enum Refusal {
    /// Another request is replaying it now.
    InProgress,
    /// Discarded: it stays evidence and is never replayed.
    Discarded(super::discard::Discard),
    /// Replayed before (newest last); `force` replays it again.
    Replayed(Vec<ReplayRecord>),
}

/// A letter claimed for replay: released when dropped, recorded by
/// [`Claim::done`].
pub struct Claim<'a> {
    replays: &'a Replays,
    dlq_id: String,
}

impl Claim<'_> {
    /// Records the replay and releases the claim in one step.
    pub fn done(self, record: ReplayRecord) {
        let mut st = self.replays.lock();
        st.claimed.remove(&self.dlq_id);
        add(&mut st, record);
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.replays.lock().claimed.remove(&self.dlq_id);
    }
}

fn add(st: &mut ReplayState, r: ReplayRecord) {
    let list = st.by_dlq_id.entry(r.dlq_id.clone()).or_default();
    // Found twice (its copy and its %REPLAYS% record): keep the record,
    // which has the time the replay was acknowledged.
    match list.iter_mut().find(|e| e.new_id == r.new_id) {
        Some(e) => *e = r,
        None => list.push(r),
    }
}

impl Replays {
    fn lock(&self) -> std::sync::MutexGuard<'_, ReplayState> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Loads one `%REPLAYS%` record body; false if it is not one.
    pub fn load(&self, body: &[u8]) -> bool {
        match serde_json::from_slice::<ReplayRecord>(body) {
            Ok(r) => {
                add(&mut self.lock(), r);
                true
            }
            Err(_) => false,
        }
    }

    /// Loads a replayed copy found in a group's replay queue (id `new_id`);
    /// false if it is not one. A `%REPLAYS%` record for it, loaded before
    /// or after, takes its place.
    pub fn load_copy(&self, group: &str, new_id: &str, m: &crate::storage::StoredMessage) -> bool {
        let Some(dlq_id) = m.properties.get(PROP_REPLAY_OF) else {
            return false;
        };
        let mut st = self.lock();
        let known = st
            .by_dlq_id
            .get(dlq_id)
            .is_some_and(|l| l.iter().any(|e| e.new_id == new_id));
        if !known {
            add(
                &mut st,
                ReplayRecord {
                    dlq_id: dlq_id.clone(),
                    new_id: new_id.to_string(),
                    group: group.to_string(),
                    by: m.properties.get(PROP_REPLAY_BY).cloned().unwrap_or_default(),
                    at_ms: m.stored_ms,
                    forced: m.properties.get(PROP_REPLAY_FORCED).is_some_and(|f| f == "true"),
                    job: m.properties.get(PROP_REPLAY_JOB).cloned(),
                    edited: m
                        .properties
                        .get(PROP_REPLAY_EDITED)
                        .map(|e| e.split(',').map(str::to_string).collect())
                        .unwrap_or_default(),
                },
            );
        }
        true
    }

    /// Claims `dlq_id` for a replay: refused while another replay of it is
    /// in progress, and (unless `force`) once it was replayed.
    pub fn claim(&self, dlq_id: &str, force: bool) -> Result<Claim<'_>, Refusal> {
        let mut st = self.lock();
        if st.claimed.contains(dlq_id) {
            return Err(Refusal::InProgress);
        }
        if let Some(d) = st.discarded.get(dlq_id) {
            return Err(Refusal::Discarded(d.clone()));
        }
        match st.by_dlq_id.get(dlq_id) {
            Some(earlier) if !earlier.is_empty() && !force => return Err(Refusal::Replayed(earlier.clone())),
            _ => {}
        }
        st.claimed.insert(dlq_id.to_string());
        Ok(Claim {
            replays: self,
            dlq_id: dlq_id.to_string(),
        })
    }

    /// Records a discard (restored or new); the letter's claim, if held by
    /// the discard itself, is released by its [`Claim`].
    pub(crate) fn discard(&self, d: super::discard::Discard) {
        self.lock().discarded.insert(d.dlq_id.clone(), d);
    }

    /// Loads one `%DLQ_DISCARDS%` record body; false if it is not one.
    pub fn load_discard(&self, body: &[u8]) -> bool {
        match serde_json::from_slice::<super::discard::Discard>(body) {
            Ok(d) => {
                self.discard(d);
                true
            }
            Err(_) => false,
        }
    }

    pub(crate) fn discarded(&self, dlq_id: &str) -> Option<super::discard::Discard> {
        self.lock().discarded.get(dlq_id).cloned()
    }

    pub(crate) fn of(&self, dlq_id: &str) -> Vec<ReplayRecord> {
        self.lock().by_dlq_id.get(dlq_id).cloned().unwrap_or_default()
    }
}
