//! Wall-clock time, in one place: milliseconds since the Unix epoch (what
//! records, traces and the API carry) and its RFC 3339 form. Every layer may
//! use it; it uses no other module of the crate.

use chrono::{SecondsFormat, TimeZone, Utc};

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// `ms` as RFC 3339 UTC with milliseconds (`2026-11-30T22:14:28.123Z`);
/// empty for a time chrono cannot represent.
pub fn rfc3339(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_milliseconds_in_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_796_082_177_750), "2026-11-30T23:42:57.750Z");
        assert_eq!(rfc3339(i64::MAX), "");
    }
}
