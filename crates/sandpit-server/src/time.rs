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

/// Parses an RFC 3339 time (`2026-12-04T10:00:00Z`, fractions allowed) as Unix milliseconds.
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let t = humantime::parse_rfc3339_weak(s).ok()?;
    let d = t.duration_since(UNIX_EPOCH).ok()?;
    i64::try_from(d.as_millis()).ok()
}

/// The wall clock the engine reads for deadlines (`expires_at`, timeouts, retries). Injectable so that
/// deadline tests move time by hand instead of sleeping real seconds.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
    /// Resolves when the clock is moved by hand ([`ManualClock::advance`]); the real clock never is.
    fn moved(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        Box::pin(std::future::pending())
    }
}

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        now_ms()
    }
}

/// A clock that only moves when told to (tests). It starts at the real time.
#[derive(Debug)]
pub struct ManualClock {
    ms: std::sync::atomic::AtomicI64,
    moved: tokio::sync::Notify,
}

impl Default for ManualClock {
    fn default() -> Self {
        Self {
            ms: std::sync::atomic::AtomicI64::new(now_ms()),
            moved: tokio::sync::Notify::new(),
        }
    }
}

impl ManualClock {
    /// Moves the clock forward and wakes whoever waits on it (the engine's deadline timer).
    pub fn advance(&self, by: Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.ms.fetch_add(ms, std::sync::atomic::Ordering::SeqCst);
        self.moved.notify_waiters();
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.ms.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn moved(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        Box::pin(self.moved.notified())
    }
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
