//! GitHub's way of writing times: ISO 8601 in UTC, whole seconds, `2021-08-05T10:34:58Z`.

use builtiful_core::Timestamp;

/// `time` as GitHub writes it in REST responses and webhook payloads.
pub fn iso8601(time: Timestamp) -> String {
    crate::clock::rfc3339(time)
}

/// `time` plus `secs` seconds.
pub fn plus_secs(time: Timestamp, secs: u64) -> Timestamp {
    Timestamp {
        secs_since_epoch: time.secs_since_epoch.saturating_add(secs),
        nanos_since_epoch: time.nanos_since_epoch,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_utc_seconds() {
        assert_eq!(
            iso8601(Timestamp::from_secs(1_628_159_698)),
            "2021-08-05T10:34:58Z"
        );
        assert_eq!(iso8601(Timestamp::from_secs(0)), "1970-01-01T00:00:00Z");
        assert_eq!(
            iso8601(Timestamp::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
    }
}
