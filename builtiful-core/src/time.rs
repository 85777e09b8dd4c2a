//! The wire form of a point in time.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// A point in time as the API sends it: `{"secs_since_epoch": u64, "nanos_since_epoch": u32}`.
///
/// This is exactly what serde makes of [`SystemTime`], kept as its own type so that the wire
/// format is explicit, documented in the OpenAPI schema, and cannot drift if std changes.
/// Times before the Unix epoch cannot be represented and clamp to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Timestamp {
    /// Whole seconds since 1970-01-01T00:00:00Z.
    pub secs_since_epoch: u64,
    /// Nanoseconds past `secs_since_epoch`, below 1,000,000,000.
    pub nanos_since_epoch: u32,
}

impl Timestamp {
    /// The current time.
    pub fn now() -> Self {
        SystemTime::now().into()
    }

    /// The time `secs` seconds (and no nanoseconds) after the epoch.
    pub const fn from_secs(secs: u64) -> Self {
        Self {
            secs_since_epoch: secs,
            nanos_since_epoch: 0,
        }
    }

    /// This time as a [`SystemTime`].
    pub fn to_system_time(self) -> SystemTime {
        UNIX_EPOCH + Duration::new(self.secs_since_epoch, self.nanos_since_epoch)
    }

    /// Microseconds since the epoch, saturating: the resolution the server stores.
    pub fn as_micros(self) -> i64 {
        let micros = u128::from(self.secs_since_epoch) * 1_000_000
            + u128::from(self.nanos_since_epoch / 1_000);
        i64::try_from(micros).unwrap_or(i64::MAX)
    }

    /// The time `micros` microseconds after the epoch (negative values clamp to the epoch).
    pub fn from_micros(micros: i64) -> Self {
        let micros = u64::try_from(micros).unwrap_or(0);
        Self {
            secs_since_epoch: micros / 1_000_000,
            // The remainder is below 1,000,000, so the product fits in a u32.
            nanos_since_epoch: u32::try_from((micros % 1_000_000) * 1_000).unwrap_or(0),
        }
    }

    /// Whole seconds from `earlier` to `self`, zero if `earlier` is later.
    pub fn whole_secs_since(self, earlier: Timestamp) -> u64 {
        self.to_system_time()
            .duration_since(earlier.to_system_time())
            .map_or(0, |d| d.as_secs())
    }
}

impl From<SystemTime> for Timestamp {
    fn from(time: SystemTime) -> Self {
        let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
        Self {
            secs_since_epoch: since.as_secs(),
            nanos_since_epoch: since.subsec_nanos(),
        }
    }
}

impl From<Timestamp> for SystemTime {
    fn from(time: Timestamp) -> Self {
        time.to_system_time()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_like_std_system_time() {
        let time = UNIX_EPOCH + Duration::new(1_730_738_711, 782_944_000);
        assert_eq!(
            serde_json::to_value(Timestamp::from(time)).unwrap(),
            serde_json::to_value(time).unwrap()
        );
    }

    #[test]
    fn micros_round_trip_at_server_resolution() {
        let time = Timestamp {
            secs_since_epoch: 1_730_738_711,
            nanos_since_epoch: 782_944_000,
        };
        assert_eq!(Timestamp::from_micros(time.as_micros()), time);
        assert_eq!(Timestamp::from_micros(-5), Timestamp::from_secs(0));
    }

    #[test]
    fn whole_seconds_between_times() {
        let start = Timestamp::from_secs(100);
        let end = Timestamp {
            secs_since_epoch: 352,
            nanos_since_epoch: 900_000_000,
        };
        assert_eq!(end.whole_secs_since(start), 252);
        assert_eq!(start.whole_secs_since(end), 0);
    }
}
