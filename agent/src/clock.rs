//! The system clock, injected into the runtime at the edge.

use pactum_transcripts::Clock;

#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    }
}

/// RFC 3339 (UTC, milliseconds) for a Unix timestamp in milliseconds.
pub fn format_ms(at_ms: u64) -> String {
    i64::try_from(at_ms)
        .ok()
        .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
        .map_or_else(|| format!("{at_ms} ms"), |ts| format!("{ts:.3}"))
}

/// The system clock's time now, in Unix milliseconds.
pub fn now_ms() -> u64 {
    SystemClock.now_ms()
}
