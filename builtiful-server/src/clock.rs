//! The server's clock, behind a trait so tests can move time (session expiry, link expiry).

use std::fmt::Debug;
use std::sync::atomic::{AtomicI64, Ordering};

use builtiful_core::Timestamp;

/// Tells the time.
pub trait Clock: Send + Sync + Debug + 'static {
    /// Now.
    fn now(&self) -> Timestamp;
}

/// A time as RFC 3339 in UTC with whole seconds (`2021-08-05T10:34:58Z`), the way GitHub
/// writes times and the way people read them in tables.
pub fn rfc3339(time: Timestamp) -> String {
    let secs = i64::try_from(time.secs_since_epoch).unwrap_or(i64::MAX);
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| "9999-12-31T23:59:59Z".to_owned())
}

/// The real time.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// The real time shifted by an offset that tests advance.
#[derive(Debug, Default)]
pub struct ShiftedClock {
    offset_micros: AtomicI64,
}

impl ShiftedClock {
    /// Moves the clock forward.
    pub fn advance(&self, by: std::time::Duration) {
        let micros = i64::try_from(by.as_micros()).unwrap_or(i64::MAX);
        self.offset_micros.fetch_add(micros, Ordering::SeqCst);
    }
}

impl Clock for ShiftedClock {
    fn now(&self) -> Timestamp {
        let offset = self.offset_micros.load(Ordering::SeqCst);
        Timestamp::from_micros(Timestamp::now().as_micros().saturating_add(offset))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_whole_seconds_in_utc() {
        assert_eq!(
            rfc3339(Timestamp::from_secs(1_730_738_711)),
            "2024-11-04T16:45:11Z"
        );
        assert_eq!(rfc3339(Timestamp::from_secs(0)), "1970-01-01T00:00:00Z");
        let with_nanos = Timestamp {
            secs_since_epoch: 1,
            nanos_since_epoch: 5,
        };
        assert_eq!(rfc3339(with_nanos), "1970-01-01T00:00:01Z");
    }
}
