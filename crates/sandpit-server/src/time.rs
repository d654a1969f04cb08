//! Wall-clock helpers: the store keeps Unix milliseconds (cheap to compare and sort in SQL) and the API shows
//! RFC 3339; the conversion is `humantime`'s, as in the agent.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Formats Unix milliseconds as RFC 3339 in UTC with millisecond precision, e.g. `2026-11-23T15:29:16.123Z`
/// (with `humantime`, the formatter the agent uses too; instants before 1970 show as the epoch).
pub fn rfc3339(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_millis(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::rfc3339;

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(1_795_447_756_123), "2026-11-23T15:29:16.123Z");
    }
}
