//! Retry policy shared by HTTP sources and targets: exponential backoff with full jitter, honouring Retry-After.

use std::time::Duration;

use backon::ExponentialBuilder;

/// How transient failures (connect errors, timeouts, 429, 5xx) are retried.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub max_retries: usize,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl RetryPolicy {
    /// The exponential envelope; [`RetryPolicy::delay`] draws the actual wait within it.
    pub fn backoff(&self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(self.base_delay)
            .with_max_delay(self.max_delay)
            .with_max_times(self.max_retries)
    }

    /// The wait before the next attempt: the server's `Retry-After` (capped at the maximum delay)
    /// if it sent one, else full jitter — anywhere between zero and the exponential envelope.
    pub fn delay(&self, retry_after: Option<Duration>, envelope: Option<Duration>) -> Option<Duration> {
        match retry_after {
            Some(wait) => envelope.map(|_| wait.min(self.max_delay)),
            None => envelope.map(|d| d.mul_f64(fastrand::f64())),
        }
    }
}

/// The HTTP client of a source or target: its timeouts and the bridge's user agent.
pub fn client(connect_timeout: Duration, request_timeout: Duration) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .timeout(request_timeout)
        .user_agent(concat!("portal-bridge/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

/// A rate limiter of `per_second` requests (at least one).
pub fn rate_limiter(per_second: u32) -> std::sync::Arc<governor::DefaultDirectRateLimiter> {
    let rate = std::num::NonZeroU32::new(per_second.max(1)).expect("at least 1");
    std::sync::Arc::new(governor::RateLimiter::direct(governor::Quota::per_second(rate)))
}

/// `Retry-After` as seconds or an HTTP date.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    if let Ok(seconds) = value.trim().parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = httpdate::parse_http_date(value.trim()).ok()?;
    Some(when.duration_since(std::time::SystemTime::now()).unwrap_or_default())
}

/// A reqwest error without its URL (which could carry credentials in a query string), with its causes.
pub fn describe(error: reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "cannot connect"
    } else if error.is_body() || error.is_decode() {
        "the response body broke off"
    } else {
        "request failed"
    };
    let error = error.without_url();
    let mut message = format!("{kind}: {error}");
    let mut source = std::error::Error::source(&error);
    while let Some(inner) = source {
        message.push_str(&format!(": {inner}"));
        source = inner.source();
    }
    message
}

/// The first 200 characters of a response body, on one line.
pub fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(200) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_accepts_seconds_and_dates() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn delays_are_jittered_within_the_envelope_or_follow_retry_after() {
        let policy =
            RetryPolicy { max_retries: 3, base_delay: Duration::from_millis(100), max_delay: Duration::from_secs(2) };
        for _ in 0..100 {
            let d = policy.delay(None, Some(Duration::from_millis(800))).unwrap();
            assert!(d <= Duration::from_millis(800));
        }
        assert_eq!(
            policy.delay(Some(Duration::from_secs(1)), Some(Duration::from_millis(5))),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            policy.delay(Some(Duration::from_secs(60)), Some(Duration::from_millis(5))),
            Some(Duration::from_secs(2))
        );
        assert_eq!(policy.delay(Some(Duration::from_secs(1)), None), None, "no retries left");
    }

    #[test]
    fn excerpts_are_short_and_on_one_line() {
        assert_eq!(excerpt(b"{\n \"error\": \"nope\"\n}"), r#"{ "error": "nope" }"#);
        assert_eq!(excerpt("x ".repeat(300).as_bytes()).chars().count(), 201);
    }
}
