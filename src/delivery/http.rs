//! The HTTP target: the portal import API of docs/portal-api.md, with idempotency keys,
//! preconditions, bounded concurrency, a rate limit and retries for transient failures only.

use std::sync::Arc;

use backon::Retryable;
use bytes::Bytes;
use futures::future::BoxFuture;
use governor::DefaultDirectRateLimiter;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::header::{CONTENT_TYPE, ETAG, IF_MATCH, IF_NONE_MATCH, RETRY_AFTER};
use reqwest::{Method, StatusCode, Url};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Semaphore;

use super::{Action, DeliverError, Delivered, Rebased, Target};
use crate::codec::Format;
use crate::domain::ItemKey;
use crate::retry::{RetryPolicy, describe, excerpt, parse_retry_after};

/// Bytes of an item key that are sent as they are in the URL path segment; all others are encoded.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~').remove(b'@');

/// A resolved HTTP target.
#[derive(Debug, Clone)]
pub struct HttpTarget {
    /// The target's id, part of every item's URL.
    pub id: String,
    /// Base URL of the import API, e.g. `https://portal.example/import/v1/`.
    pub base: Url,
    pub client: reqwest::Client,
    pub token: SecretString,
    pub retry: RetryPolicy,
    pub limiter: Arc<DefaultDirectRateLimiter>,
    /// At most this many requests to this target at once.
    pub concurrency: Arc<Semaphore>,
}

/// Settings to build an [`HttpTarget`] from.
#[derive(Debug, Clone)]
pub struct HttpTargetSettings {
    /// The target's id.
    pub id: String,
    pub base: Url,
    pub token: SecretString,
    pub retry: RetryPolicy,
    pub concurrency: usize,
    pub requests_per_second: u32,
    pub connect_timeout: std::time::Duration,
    pub request_timeout: std::time::Duration,
}

/// What the portal holds for an item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub version: String,
    pub sha256: String,
}

enum Failure {
    Transient { message: String, retry_after: Option<std::time::Duration> },
    Final(DeliverError),
}

impl HttpTarget {
    pub fn new(settings: HttpTargetSettings) -> Result<Self, String> {
        let client = crate::retry::client(settings.connect_timeout, settings.request_timeout)?;
        let mut base = settings.base;
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        Ok(Self {
            id: settings.id,
            base,
            client,
            token: settings.token,
            retry: settings.retry,
            limiter: crate::retry::rate_limiter(settings.requests_per_second),
            concurrency: Arc::new(Semaphore::new(settings.concurrency.max(1))),
        })
    }

    /// `<base>targets/<target>/items/<percent-encoded key>`
    pub fn item_url(&self, key: &ItemKey) -> Url {
        let path = format!(
            "targets/{}/items/{}",
            utf8_percent_encode(&self.id, SEGMENT),
            utf8_percent_encode(key.as_str(), SEGMENT)
        );
        self.base.join(&path).expect("a relative path joins")
    }

    /// Stores a document (create with `If-None-Match: *`, or replace what `known_version` names).
    pub async fn put(
        &self,
        key: &ItemKey,
        body: Bytes,
        format: Format,
        idempotency_key: &str,
        known_version: Option<&str>,
    ) -> Result<Delivered, DeliverError> {
        let url = self.item_url(key);
        let content_type = match format {
            Format::Json => "application/json",
            Format::Xml => "application/xml",
        };
        let response = self
            .send(Method::PUT, &url, |request| {
                let request = request
                    .header(CONTENT_TYPE, content_type)
                    .header("Idempotency-Key", idempotency_key)
                    .body(body.clone());
                match known_version {
                    Some(version) => request.header(IF_MATCH, quote(version)),
                    None => request.header(IF_NONE_MATCH, "*"),
                }
            })
            .await?;
        let version =
            etag(&response.0).ok_or_else(|| DeliverError::Transient("the portal answered without an ETag".into()))?;
        Ok(Delivered { location: url.to_string(), version: Some(version) })
    }

    /// Withdraws a document; a portal that holds nothing (404) counts as done.
    pub async fn delete(
        &self,
        key: &ItemKey,
        idempotency_key: &str,
        known_version: Option<&str>,
    ) -> Result<Delivered, DeliverError> {
        let url = self.item_url(key);
        let result = self
            .send(Method::DELETE, &url, |request| {
                let request = request.header("Idempotency-Key", idempotency_key);
                match known_version {
                    Some(version) => request.header(IF_MATCH, quote(version)),
                    None => request,
                }
            })
            .await;
        match result {
            Ok(_) | Err(DeliverError::Permanent { status: 404, .. }) => {
                Ok(Delivered { location: url.to_string(), version: None })
            }
            Err(e) => Err(e),
        }
    }

    /// What the portal holds for the item, if anything.
    pub async fn get(&self, key: &ItemKey) -> Result<Option<Stored>, DeliverError> {
        let url = self.item_url(key);
        match self.send(Method::GET, &url, |request| request).await {
            Ok((headers, _)) => {
                let version = etag(&headers)
                    .ok_or_else(|| DeliverError::Transient("the portal answered without an ETag".into()))?;
                let sha256 =
                    headers.get("X-Content-SHA256").and_then(|v| v.to_str().ok()).map(str::to_owned).ok_or_else(
                        || DeliverError::Transient("the portal answered without X-Content-SHA256".into()),
                    )?;
                Ok(Some(Stored { version, sha256 }))
            }
            Err(DeliverError::Permanent { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// One request with retries for transient failures; success is any 2xx.
    async fn send(
        &self,
        method: Method,
        url: &Url,
        build: impl Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> Result<(reqwest::header::HeaderMap, Bytes), DeliverError> {
        let _permit = self.concurrency.acquire().await.expect("the semaphore is never closed");
        let policy = self.retry;
        let attempt = || async {
            self.limiter.until_ready().await;
            let request =
                build(self.client.request(method.clone(), url.clone()).bearer_auth(self.token.expose_secret()));
            let transient = |e: reqwest::Error| Failure::Transient { message: describe(e), retry_after: None };
            let response = request.send().await.map_err(transient)?;
            let status = response.status();
            let headers = response.headers().clone();
            let body = response.bytes().await.map_err(transient)?;
            if status.is_success() {
                return Ok((headers, body));
            }
            if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
                let retry_after = headers.get(RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(parse_retry_after);
                return Err(Failure::Transient {
                    message: format!("HTTP {}: {}", status.as_u16(), excerpt(&body)),
                    retry_after,
                });
            }
            if status == StatusCode::PRECONDITION_FAILED {
                return Err(Failure::Final(DeliverError::Conflict(excerpt(&body))));
            }
            Err(Failure::Final(DeliverError::Permanent { status: status.as_u16(), excerpt: excerpt(&body) }))
        };
        attempt
            .retry(policy.backoff())
            .when(|f: &Failure| matches!(f, Failure::Transient { .. }))
            .adjust(move |f, delay| {
                let retry_after = match f {
                    Failure::Transient { retry_after, .. } => *retry_after,
                    Failure::Final(_) => None,
                };
                policy.delay(retry_after, delay)
            })
            .notify(|f, delay| {
                if let Failure::Transient { message, .. } = f {
                    tracing::debug!(url = %url, ?delay, "retrying: {message}");
                }
            })
            .await
            .map_err(|f| match f {
                Failure::Transient { message, .. } => DeliverError::Transient(message),
                Failure::Final(e) => e,
            })
    }
}

impl Target for HttpTarget {
    fn kind(&self) -> &'static str {
        "http"
    }

    fn fingerprint(&self) -> String {
        format!("http:{}", self.base)
    }

    fn intent_body(&self, action: &Action) -> Vec<u8> {
        match action {
            Action::Put { body, .. } => body.to_vec(),
            Action::Delete => Vec::new(),
        }
    }

    fn deliver<'a>(
        &'a self,
        key: &'a ItemKey,
        action: &'a Action,
        known_version: Option<&'a str>,
        idempotency: &'a str,
    ) -> BoxFuture<'a, Result<Delivered, DeliverError>> {
        Box::pin(async move {
            match action {
                Action::Put { body, format, .. } => {
                    self.put(key, body.clone(), *format, idempotency, known_version).await
                }
                Action::Delete => self.delete(key, idempotency, known_version).await,
            }
        })
    }

    fn probe<'a>(
        &'a self,
        key: &'a ItemKey,
        action: &'a Action,
    ) -> BoxFuture<'a, Result<Option<Delivered>, DeliverError>> {
        Box::pin(async move {
            let stored = self.get(key).await?;
            Ok(match (action, stored) {
                (Action::Put { output_hash, .. }, Some(stored)) if &stored.sha256 == output_hash => {
                    Some(Delivered { location: self.item_url(key).to_string(), version: Some(stored.version) })
                }
                (Action::Delete, None) => Some(Delivered { location: self.item_url(key).to_string(), version: None }),
                _ => None,
            })
        })
    }

    /// Asks the portal what it holds, so that neither a forced delivery nor a withdrawal fails on a
    /// stale precondition: a portal that lost its copy gets it created again; a copy that is our
    /// last document (under any version) is built on; anything else is an editor's copy, which only
    /// `resolve` may overwrite (a forced delivery keeps our version and gets its 412; a withdrawal is
    /// not sent).
    fn rebase<'a>(
        &'a self,
        key: &'a ItemKey,
        action: &'a Action,
        known_version: Option<String>,
        delivered: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Rebased, DeliverError>> {
        Box::pin(async move {
            let stored = self.get(key).await?;
            let ours = stored.as_ref().is_some_and(|s| {
                known_version.as_deref() == Some(s.version.as_str()) || delivered == Some(s.sha256.as_str())
            });
            Ok(match (action, stored) {
                (Action::Put { .. }, None) => Rebased::Base(None),
                (Action::Delete, None) => Rebased::AlreadyGone(self.item_url(key).to_string()),
                (_, Some(stored)) if ours => Rebased::Base(Some(stored.version)),
                (Action::Put { .. }, Some(_)) => Rebased::Base(known_version),
                (Action::Delete, Some(stored)) => {
                    return Err(DeliverError::Conflict(format!(
                        "the portal holds a copy (version {}) that is not the document we delivered; \
                         the withdrawal is not sent",
                        stored.version
                    )));
                }
            })
        })
    }

    fn current_version<'a>(&'a self, key: &'a ItemKey) -> BoxFuture<'a, Result<Option<String>, DeliverError>> {
        Box::pin(async move { Ok(self.get(key).await?.map(|stored| stored.version)) })
    }
}

fn quote(version: &str) -> String {
    format!("\"{version}\"")
}

fn etag(headers: &reqwest::header::HeaderMap) -> Option<String> {
    let raw = headers.get(ETAG)?.to_str().ok()?;
    Some(raw.trim().trim_start_matches("W/").trim_matches('"').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item_urls_keep_the_key_in_one_segment() {
        let target = HttpTarget::new(HttpTargetSettings {
            id: "portal-xml".into(),
            base: Url::parse("https://portal.example/import/v1").unwrap(),
            token: SecretString::from("t"),
            retry: RetryPolicy { max_retries: 0, base_delay: Default::default(), max_delay: Default::default() },
            concurrency: 1,
            requests_per_second: 1,
            connect_timeout: std::time::Duration::from_secs(1),
            request_timeout: std::time::Duration::from_secs(1),
        })
        .unwrap();
        let url = target.item_url(&ItemKey::new("aachen-forms", "S05000101@1.0"));
        assert_eq!(
            url.as_str(),
            "https://portal.example/import/v1/targets/portal-xml/items/aachen-forms%2FS05000101@1.0"
        );
        let hostile = target.item_url(&ItemKey::new("x", "../../etc?a=b#c"));
        assert_eq!(hostile.path(), "/import/v1/targets/portal-xml/items/x%2F..%2F..%2Fetc%3Fa%3Db%23c");
        assert!(hostile.query().is_none() && hostile.fragment().is_none());
    }
}
