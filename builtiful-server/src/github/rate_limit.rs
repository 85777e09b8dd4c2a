//! GitHub's rate limits: once GitHub says we are limited, no request goes out until the
//! limit resets. Hammering a limited API can get an App banned.

use std::sync::Mutex;

use builtiful_core::Timestamp;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;

use super::GitHubError;

/// The time before which no request may be sent.
#[derive(Debug, Default)]
pub struct RateLimit {
    until: Mutex<Option<Timestamp>>,
}

fn header<T: std::str::FromStr>(headers: &HeaderMap, name: &str) -> Option<T> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

impl RateLimit {
    /// `Err(RateLimited)` while limited.
    pub fn check(&self, now: Timestamp) -> Result<(), GitHubError> {
        let guard = self
            .until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match *guard {
            Some(until) if now < until => Err(GitHubError::RateLimited { until }),
            _ => Ok(()),
        }
    }

    /// Learns from a response: an exhausted budget (`x-ratelimit-remaining: 0`, until
    /// `x-ratelimit-reset`) or a secondary limit (`retry-after` seconds on a 403 or 429).
    /// Returns the time calls may resume when the response says we are limited.
    pub fn observe(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        now: Timestamp,
    ) -> Option<Timestamp> {
        let limited_status =
            status == StatusCode::FORBIDDEN || status == StatusCode::TOO_MANY_REQUESTS;
        let retry_after = header::<u64>(headers, "retry-after")
            .filter(|_| limited_status)
            .map(|secs| Timestamp::from_secs(now.secs_since_epoch + secs));
        let exhausted = header::<u64>(headers, "x-ratelimit-remaining") == Some(0);
        let reset = header::<u64>(headers, "x-ratelimit-reset")
            .filter(|_| exhausted)
            .map(Timestamp::from_secs)
            // Limited without a reset time: back off a minute rather than not at all.
            .or_else(|| {
                (exhausted && limited_status)
                    .then(|| Timestamp::from_secs(now.secs_since_epoch + 60))
            });
        let until = retry_after.max(reset)?;
        let mut guard = self
            .until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *guard = Some(guard.map_or(until, |current| current.max(until)));
        tracing::warn!(
            until = until.secs_since_epoch,
            "GitHub rate limit reached; pausing calls"
        );
        Some(until)
    }
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn exhausted_budget_blocks_until_reset() {
        let limit = RateLimit::default();
        let now = Timestamp::from_secs(1_000);
        limit.observe(
            StatusCode::OK,
            &headers(&[("x-ratelimit-remaining", "10")]),
            now,
        );
        assert!(limit.check(now).is_ok());
        let until = limit.observe(
            StatusCode::FORBIDDEN,
            &headers(&[
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset", "1500"),
            ]),
            now,
        );
        assert_eq!(until, Some(Timestamp::from_secs(1_500)));
        assert!(matches!(
            limit.check(Timestamp::from_secs(1_499)),
            Err(GitHubError::RateLimited { .. })
        ));
        assert!(limit.check(Timestamp::from_secs(1_500)).is_ok());
    }

    #[test]
    fn secondary_limits_use_retry_after() {
        let limit = RateLimit::default();
        let now = Timestamp::from_secs(1_000);
        let until = limit.observe(
            StatusCode::TOO_MANY_REQUESTS,
            &headers(&[("retry-after", "30")]),
            now,
        );
        assert_eq!(until, Some(Timestamp::from_secs(1_030)));
        assert!(limit.check(Timestamp::from_secs(1_029)).is_err());
        // retry-after on a success means nothing.
        let other = RateLimit::default();
        assert_eq!(
            other.observe(StatusCode::OK, &headers(&[("retry-after", "30")]), now),
            None
        );
    }
}
