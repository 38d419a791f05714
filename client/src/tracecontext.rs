//! W3C Trace Context for messages: the `traceparent` property.
//!
//! `00-<32 hex trace id>-<16 hex parent span id>-<2 hex flags>`. A producer
//! stamps one on every message that has none; the broker creates one for
//! messages that arrive without a valid one (HTTP, other clients). Every
//! stage of the message's path belongs to that trace.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

/// Property name (the W3C header name).
pub const PROP_TRACEPARENT: &str = "traceparent";

static SEQ: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static RNG: Cell<u64> = const { Cell::new(0) };
}

/// 64 pseudo-random bits: xorshift64* seeded per thread from the clock,
/// the process id and a global counter (ids must be unique, not secret).
fn next_u64() -> u64 {
    RNG.with(|r| {
        let mut x = r.get();
        if x == 0 {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1);
            x = nanos ^ (u64::from(std::process::id()) << 32) ^ SEQ.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
            x |= 1;
        }
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        r.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    })
}

/// A fresh `traceparent` (sampled).
pub fn new_traceparent() -> String {
    let (a, b, s) = (next_u64(), next_u64(), next_u64());
    format!("00-{a:016x}{b:016x}-{:016x}-01", s | 1)
}

/// The trace id and parent span id of a valid `traceparent`.
pub fn parse(tp: &str) -> Option<(&str, &str)> {
    let mut parts = tp.split('-');
    let (version, trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let valid = version == "00"
        && parts.next().is_none()
        && hex(trace, 32)
        && hex(span, 16)
        && hex(flags, 2)
        && trace.bytes().any(|b| b != b'0')
        && span.bytes().any(|b| b != b'0');
    valid.then_some((trace, span))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_values_parse_and_differ() {
        let a = new_traceparent();
        let b = new_traceparent();
        assert!(parse(&a).is_some(), "{a}");
        assert_ne!(parse(&a).map(|p| p.0), parse(&b).map(|p| p.0));
        assert!(parse("00-00000000000000000000000000000000-0000000000000001-01").is_none());
        assert!(parse("01-abc-def-01").is_none());
        assert!(parse("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01").is_none());
        assert!(parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").is_some());
    }
}
