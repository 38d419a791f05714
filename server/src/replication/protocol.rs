//! Replication frames between nodes, on the broker port.
//!
//! They use the client protocol's frame layer (header, length cap, CRC32C)
//! with kinds from 100 up, which the client protocol never uses, so one
//! listener serves both (`crate::port` routes them by kind). Control messages (status, follow) are JSON — small
//! and rare; log data and acknowledgements are binary:
//! - `LOG`: `at u64 | frames` — whole commit-log frames, byte-identical to
//!   the primary's, starting at log position `at`.
//! - `ACK`: `written u64 | durable u64` — the replica's log end, and how far
//!   it is durable under its own flush mode (what sync replication waits for).

use serde::{Deserialize, Serialize};

use crate::storage::WriterRun;

pub const K_STATUS: u8 = 100;
pub const K_STATUS_REPLY: u8 = 101;
pub const K_FOLLOW: u8 = 102;
pub const K_FOLLOWING: u8 = 103;
pub const K_REFUSED: u8 = 104;
pub const K_LOG: u8 = 105;
pub const K_ACK: u8 = 106;

/// Largest chunk of log sent in one `LOG` frame.
pub const LOG_CHUNK: usize = 1 << 20;

/// Whether a frame kind belongs to replication.
pub fn is_replication(kind: u8) -> bool {
    (K_STATUS..=K_ACK).contains(&kind)
}

/// What a node says about itself (`STATUS` reply, cluster view).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeStatus {
    pub id: u16,
    pub role: String,
    pub term: u64,
    pub primary: Option<u16>,
    pub broker_addr: String,
    pub http_addr: String,
    pub log_end: u64,
    pub flushed: u64,
    /// Primary: highest position a replica confirmed; replica: how far it
    /// has confirmed to its primary.
    pub replicated: u64,
}

/// A replica asks to follow: who it is, what it has.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Follow {
    pub replica: u16,
    pub term: u64,
    pub broker_addr: String,
    pub http_addr: String,
    pub end: u64,
    /// Writer history of its log: `(start, node, epoch)`.
    pub runs: Vec<(u64, u16, u32)>,
    pub flush: String,
}

/// The primary accepts: the replica's log agrees with its own up to
/// `from`; when `from` is below the replica's end, the replica must cut
/// its log there before following.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Following {
    pub primary: u16,
    pub term: u64,
    pub from: u64,
    /// What this primary's log holds of the follower's own writing (when
    /// it was primary once): where that data ends, and its newest boot
    /// epoch. A follower whose data dir was lost learns from it which of
    /// its old acknowledgements the group kept, and never reuses an epoch.
    #[serde(default)]
    pub yours: Option<Yours>,
}

/// See [`Following::yours`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Yours {
    pub end: u64,
    pub epoch: u32,
}

/// Where the data `node` wrote ends in a log with writer history `runs`
/// (sorted by start) and end `log_end`, and `node`'s newest epoch there.
pub fn yours(runs: &[(u64, u16, u32)], log_end: u64, node: u16) -> Option<Yours> {
    let mut out: Option<Yours> = None;
    for (i, (_, n, epoch)) in runs.iter().enumerate() {
        if *n != node {
            continue;
        }
        let end = runs.get(i + 1).map_or(log_end, |next| next.0);
        out = Some(Yours {
            end: out.map_or(end, |o| o.end.max(end)),
            epoch: out.map_or(*epoch, |o| o.epoch.max(*epoch)),
        });
    }
    out
}

/// Not a primary (or a stale one): where to look instead.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Refused {
    pub term: u64,
    pub primary: Option<u16>,
    pub reason: String,
}

pub fn runs_to_wire(runs: &[WriterRun]) -> Vec<(u64, u16, u32)> {
    runs.iter().map(|r| (r.start, r.node, r.epoch)).collect()
}

/// The position up to which two logs agree, from their writer histories
/// and ends. A writer writes each position once, so the same run starting
/// at the same position holds the same bytes on both, up to the shorter of
/// the two copies; the first run that differs ends the agreement.
pub fn agreed_prefix(a: &[(u64, u16, u32)], a_end: u64, b: &[(u64, u16, u32)], b_end: u64) -> u64 {
    let mut agreed = 0;
    for i in 0..a.len().min(b.len()) {
        if a[i] != b[i] {
            break;
        }
        let ea = a.get(i + 1).map_or(a_end, |r| r.0);
        let eb = b.get(i + 1).map_or(b_end, |r| r.0);
        agreed = ea.min(eb);
        if ea != eb {
            break;
        }
    }
    agreed
}

pub fn encode_log(at: u64, frames: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(8 + frames.len());
    p.extend_from_slice(&at.to_le_bytes());
    p.extend_from_slice(frames);
    p
}

pub fn decode_log(p: &[u8]) -> Option<(u64, &[u8])> {
    let at = u64::from_le_bytes(p.get(..8)?.try_into().ok()?);
    Some((at, &p[8..]))
}

pub fn encode_ack(written: u64, durable: u64) -> Vec<u8> {
    let mut p = Vec::with_capacity(16);
    p.extend_from_slice(&written.to_le_bytes());
    p.extend_from_slice(&durable.to_le_bytes());
    p
}

pub fn decode_ack(p: &[u8]) -> Option<(u64, u64)> {
    if p.len() != 16 {
        return None;
    }
    let w = u64::from_le_bytes(p[..8].try_into().ok()?);
    let d = u64::from_le_bytes(p[8..].try_into().ok()?);
    Some((w, d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agreement_of_histories() {
        let p = [(0, 1, 1), (800, 2, 1)];
        // Behind inside the shared run: follow from its end.
        assert_eq!(agreed_prefix(&[(0, 1, 1)], 500, &p, 1000), 500);
        // Ahead inside the shared run: cut back to where the new writer began.
        assert_eq!(agreed_prefix(&[(0, 1, 1)], 900, &p, 1000), 800);
        // Same history: everything agrees.
        assert_eq!(agreed_prefix(&p, 1000, &p, 1000), 1000);
        // A run the other never saw (a restart of the old primary).
        assert_eq!(agreed_prefix(&[(0, 1, 1), (700, 1, 2)], 750, &p, 1000), 700);
        // Nothing in common.
        assert_eq!(agreed_prefix(&[(0, 3, 1)], 10, &p, 1000), 0);
        assert_eq!(agreed_prefix(&[], 0, &p, 1000), 0);
    }

    #[test]
    fn what_a_log_holds_of_a_followers_own_writing() {
        let runs = [(0, 1, 1), (800, 2, 1), (900, 1, 2), (950, 3, 1)];
        assert_eq!(yours(&runs, 1000, 1), Some(Yours { end: 950, epoch: 2 }));
        assert_eq!(yours(&runs, 1000, 3), Some(Yours { end: 1000, epoch: 1 }));
        assert_eq!(yours(&runs, 1000, 4), None);
    }

    #[test]
    fn frames_round_trip() {
        assert_eq!(decode_log(&encode_log(7, b"abc")), Some((7, &b"abc"[..])));
        assert_eq!(decode_ack(&encode_ack(9, 4)), Some((9, 4)));
        assert_eq!(decode_ack(b"short"), None);
        assert_eq!(decode_log(b"short"), None);
    }
}
