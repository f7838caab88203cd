//! Retry policy shared by HTTP sources and targets: exponential backoff with full jitter, honouring Retry-After.

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use bytes::Bytes;
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};

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

/// The result of one attempt, before retry classification.
#[derive(Debug)]
pub enum Attempt {
    /// Worth another try: connect errors, timeouts, a body that broke off, 429 and 5xx.
    Transient { message: String, retry_after: Option<Duration> },
    /// Any other answer that is not a success.
    Permanent { status: u16, excerpt: String },
    /// The body is larger than the limit (not read further).
    TooLarge(u64),
}

/// A response whose body was read within the limit.
#[derive(Debug)]
pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Sends `request` and reads the body, at most `max_body` bytes, classifying the outcome:
/// success and 304 are a [`Response`], everything else an [`Attempt`] error.
pub async fn send(request: reqwest::RequestBuilder, max_body: u64) -> Result<Response, Attempt> {
    let transient = |e: reqwest::Error| Attempt::Transient { message: describe(e), retry_after: None };
    let mut response = request.send().await.map_err(transient)?;
    let status = response.status();
    let headers = response.headers().clone();
    if let Some(length) = response.content_length()
        && length > max_body
    {
        return Err(Attempt::TooLarge(max_body));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(transient)? {
        if (body.len() + chunk.len()) as u64 > max_body {
            return Err(Attempt::TooLarge(max_body));
        }
        body.extend_from_slice(&chunk);
    }
    if status.is_success() || status == StatusCode::NOT_MODIFIED {
        return Ok(Response { status, headers, body: Bytes::from(body) });
    }
    if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
        let retry_after = headers.get(RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(parse_retry_after);
        return Err(Attempt::Transient { message: format!("HTTP {}", status.as_u16()), retry_after });
    }
    Err(Attempt::Permanent { status: status.as_u16(), excerpt: excerpt(&body) })
}

/// Runs `attempt` until it succeeds, fails for good or `policy` allows no more retries (transient
/// failures only, waiting per [`RetryPolicy::delay`]); returns the result and the number of attempts.
/// `shown` names the request in the log (never with credentials).
pub async fn retried<F, Fut>(policy: RetryPolicy, shown: &str, mut attempt: F) -> (Result<Response, Attempt>, usize)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Response, Attempt>>,
{
    let mut attempts = 0;
    let result = (|| {
        attempts += 1;
        attempt()
    })
    .retry(policy.backoff())
    .when(|e: &Attempt| matches!(e, Attempt::Transient { .. }))
    .adjust(move |e, delay| {
        let retry_after = match e {
            Attempt::Transient { retry_after, .. } => *retry_after,
            _ => None,
        };
        policy.delay(retry_after, delay)
    })
    .notify(|e, delay| tracing::warn!(url = %shown, ?delay, "retrying: {e:?}"))
    .await;
    (result, attempts)
}

/// Why a request failed for good, after its retries: the error both HTTP clients (sources and
/// XRepository) report.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("{url}: {message} (gave up after {attempts} attempt(s))")]
    Transient { url: String, message: String, attempts: usize },
    #[error("{url}: HTTP {status}: {excerpt}")]
    Permanent { url: String, status: u16, excerpt: String },
    #[error("{url}: the response is larger than {limit} bytes ({setting})")]
    TooLarge { url: String, limit: u64, setting: &'static str },
}

impl Failure {
    /// The last attempt's failure at `url` after `attempts` attempts; `setting` names the body limit.
    pub fn of(attempt: Attempt, url: &str, attempts: usize, setting: &'static str) -> Self {
        let url = url.to_owned();
        match attempt {
            Attempt::Transient { message, .. } => Failure::Transient { url, message, attempts },
            Attempt::Permanent { status, excerpt } => Failure::Permanent { url, status, excerpt },
            Attempt::TooLarge(limit) => Failure::TooLarge { url, limit, setting },
        }
    }
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
