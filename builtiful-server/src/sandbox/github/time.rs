//! GitHub's way of writing times: ISO 8601 in UTC, whole seconds, `2021-08-05T10:34:58Z`.

use builtiful_core::Timestamp;

/// `time` as GitHub writes it in REST responses and webhook payloads.
pub fn iso8601(time: Timestamp) -> String {
    let secs = time.secs_since_epoch;
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
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
