//! Wall-clock time, in one place: milliseconds since the Unix epoch (what
//! records, traces and the API carry) and its RFC 3339 form. Every layer may
//! use it; it uses no other module of the crate.
//!
//! [`Clock`] is "now" for the broker's timers (retry due times, the pulls
//! that wait for them, transaction check-backs): the system clock in
//! production, or tokio's clock from a fixed start so that tests under
//! `tokio::time::pause()` move it with `advance` instead of sleeping. The
//! tokio clock's sleeps and its `now` then agree, which the system clock
//! and a paused runtime would not.

use chrono::{SecondsFormat, TimeZone, Utc};

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// Where "now" comes from for the broker's timers; cheap to copy.
#[derive(Debug, Clone, Copy, Default)]
pub struct Clock {
    source: Source,
}

#[derive(Debug, Clone, Copy, Default)]
enum Source {
    /// The wall clock (chrono's `Utc::now`).
    #[default]
    System,
    /// `start_micros` plus the tokio time elapsed since `start`: pausing
    /// and advancing tokio's clock moves this one.
    Tokio {
        start: tokio::time::Instant,
        start_micros: i64,
    },
}

impl Clock {
    /// The wall clock (the default).
    pub fn system() -> Self {
        Clock { source: Source::System }
    }

    /// A clock that reads `start_ms` now and then moves with tokio's clock
    /// (`tokio::time::Instant`): under a paused runtime it stands still
    /// until `tokio::time::advance` (or auto-advance) moves it.
    pub fn tokio_from(start_ms: i64) -> Self {
        Clock {
            source: Source::Tokio {
                start: tokio::time::Instant::now(),
                start_micros: start_ms.saturating_mul(1000),
            },
        }
    }

    /// Microseconds since the Unix epoch, now.
    pub fn now_micros(&self) -> i64 {
        match self.source {
            Source::System => Utc::now().timestamp_micros(),
            Source::Tokio { start, start_micros } => {
                let elapsed = i64::try_from(start.elapsed().as_micros()).unwrap_or(i64::MAX);
                start_micros.saturating_add(elapsed)
            }
        }
    }

    /// Milliseconds since the Unix epoch, now (rounded down).
    pub fn now_ms(&self) -> i64 {
        match self.source {
            Source::System => now_ms(),
            Source::Tokio { .. } => self.now_micros().div_euclid(1000),
        }
    }

    /// Milliseconds since the Unix epoch, rounded up: a due time computed
    /// from it is never early.
    pub fn now_ceil_ms(&self) -> i64 {
        (self.now_micros() + 999) / 1000
    }
}

/// `ms` as RFC 3339 UTC with milliseconds (`2026-11-30T22:14:28.123Z`);
/// empty for a time chrono cannot represent.
pub fn rfc3339(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// A length of time for people, to about two significant units: `850ms`,
/// `42s`, `1m 30s`, `4h 46m`, `7d` (each unit rounded to the nearest).
pub fn span(ms: u64) -> String {
    const S: u64 = 1_000;
    const M: u64 = 60 * S;
    const H: u64 = 60 * M;
    const D: u64 = 24 * H;
    let two = |total: u64, per: u64, big: &str, small: &str| match (total / per, total % per) {
        (b, 0) => format!("{b}{big}"),
        (b, s) => format!("{b}{big} {s}{small}"),
    };
    if ms < S {
        format!("{ms}ms")
    } else if ms < M - S / 2 {
        format!("{}s", ms.saturating_add(S / 2) / S)
    } else if ms < H - S / 2 {
        two(ms.saturating_add(S / 2) / S, 60, "m", "s")
    } else if ms < D - M / 2 {
        two(ms.saturating_add(M / 2) / M, 60, "h", "m")
    } else {
        two(ms.saturating_add(H / 2) / H, 24, "d", "h")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_read_as_two_units_at_most() {
        let cases = [
            (0, "0ms"),
            (999, "999ms"),
            (1_000, "1s"),
            (59_400, "59s"),
            (59_700, "1m"),
            (90_000, "1m 30s"),
            (3_599_000, "59m 59s"),
            (3_599_600, "1h"),
            (3_600_000, "1h"),
            (17_140_000, "4h 46m"),
            (86_399_000, "1d"),
            (7 * 86_400_000 + 3_600_000, "7d 1h"),
        ];
        for (ms, want) in cases {
            assert_eq!(span(ms), want, "{ms} ms");
        }
        assert!(span(u64::MAX).ends_with(['d', 'h']));
    }

    #[test]
    fn formats_milliseconds_in_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_796_082_177_750), "2026-11-30T23:42:57.750Z");
        assert_eq!(rfc3339(i64::MAX), "");
    }

    #[tokio::test(start_paused = true)]
    async fn the_tokio_clock_moves_only_with_tokio_time() {
        let clock = Clock::tokio_from(1_000);
        assert_eq!((clock.now_ms(), clock.now_ceil_ms()), (1_000, 1_000));
        tokio::time::advance(std::time::Duration::from_micros(2_500)).await;
        assert_eq!(clock.now_micros(), 1_002_500);
        assert_eq!((clock.now_ms(), clock.now_ceil_ms()), (1_002, 1_003));
    }
}
