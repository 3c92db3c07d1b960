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

/// A time given on the command line: RFC 3339 (`2026-11-20T12:00:00Z`) or Unix milliseconds.
pub fn parse_time(text: &str, flag: &str) -> Result<u64, crate::failure::Failure> {
    use crate::failure::Failure;
    if let Ok(ms) = text.parse::<u64>() {
        return Ok(ms);
    }
    let timestamp: jiff::Timestamp = text.parse().map_err(|_| {
        Failure::new("USAGE", format!("{flag} {text:?}: expected RFC 3339 (2026-11-20T12:00:00Z) or Unix milliseconds"))
    })?;
    u64::try_from(timestamp.as_millisecond())
        .map_err(|_| Failure::new("USAGE", format!("{flag} {text:?}: before 1970")))
}
