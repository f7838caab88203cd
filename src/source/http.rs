//! The HTTP source: pages of JSON from an upstream API (e.g. the NRW ZuFi API), fetched with
//! conditional GET, retries with backoff for transient failures only, a rate limit, timeouts and
//! a body size limit. Secrets never appear in logs or errors.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use governor::DefaultDirectRateLimiter;
use reqwest::header::{ETAG, HeaderMap, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED, LINK};
use reqwest::{StatusCode, Url};
use secrecy::{ExposeSecret, SecretString};

pub use crate::retry::RetryPolicy;
use crate::retry::{Attempt, Response, retried, send};
use crate::store::StoreError;
use crate::store::http_cache::CachedPage;

/// How the pages of a source follow each other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pagination {
    /// One request.
    None,
    /// A page number in a query parameter, from `first` until a page holds no records
    /// (or fewer than `size`, when a page size is sent).
    Page { param: String, first: u64, size: Option<(String, u64)> },
    /// The `Link: <…>; rel="next"` response header.
    Link,
}

/// Credentials sent with every request.
#[derive(Debug, Clone)]
pub enum Auth {
    Bearer(SecretString),
    Basic { username: String, password: SecretString },
}

/// A resolved HTTP source.
#[derive(Debug, Clone)]
pub struct HttpSource {
    pub url: Url,
    pub pagination: Pagination,
    pub max_pages: usize,
    pub client: reqwest::Client,
    pub auth: Option<Auth>,
    pub retry: RetryPolicy,
    pub limiter: Arc<DefaultDirectRateLimiter>,
    pub max_body_bytes: u64,
    /// Bound on the whole fetch of the source (all pages, retries included).
    pub fetch_timeout: Duration,
}

/// Settings to build an [`HttpSource`] from.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub url: Url,
    pub pagination: Pagination,
    pub max_pages: usize,
    pub auth: Option<Auth>,
    pub retry: RetryPolicy,
    pub requests_per_second: u32,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub fetch_timeout: Duration,
    pub max_body_bytes: u64,
}

impl HttpSource {
    pub fn new(settings: HttpSettings) -> Result<Self, String> {
        let client = crate::retry::client(settings.connect_timeout, settings.request_timeout)?;
        Ok(Self {
            url: settings.url,
            pagination: settings.pagination,
            max_pages: settings.max_pages,
            client,
            auth: settings.auth,
            retry: settings.retry,
            limiter: crate::retry::rate_limiter(settings.requests_per_second),
            max_body_bytes: settings.max_body_bytes,
            fetch_timeout: settings.fetch_timeout,
        })
    }
}

/// One fetched page.
#[derive(Debug, Clone)]
pub struct Page {
    pub url: String,
    pub body: Bytes,
    /// The server answered 304: `body` is the stored body of the last fetch.
    pub not_modified: bool,
}

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(transparent)]
    Request(#[from] crate::retry::Failure),
    #[error("{url}: {message}")]
    Invalid { url: String, message: String },
    #[error("the fetch took longer than {0:?} (source fetch timeout)")]
    Timeout(Duration),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Fetches every page of the source. Validators and bodies are kept in the store, so that a 304
/// reuses the last body; with `record_cache = false` (dry runs) the store is only read.
pub async fn fetch(
    source_id: &str,
    http: &HttpSource,
    context: &super::ListContext<'_>,
) -> Result<Vec<Page>, FetchError> {
    match tokio::time::timeout(http.fetch_timeout, fetch_pages(source_id, http, context)).await {
        Ok(result) => result,
        Err(_) => Err(FetchError::Timeout(http.fetch_timeout)),
    }
}

async fn fetch_pages(
    source_id: &str,
    http: &HttpSource,
    context: &super::ListContext<'_>,
) -> Result<Vec<Page>, FetchError> {
    let super::ListContext { store, now, record_cache, metrics, .. } = context;
    let (store, now, record_cache) = (*store, now.as_str(), *record_cache);
    let timed = |seconds: f64| {
        if let Some(metrics) = metrics {
            metrics.observe_upstream(source_id, seconds);
        }
    };
    let mut pages = Vec::new();
    let mut next = Some(first_url(http));
    while let Some(url) = next.take() {
        if pages.len() >= http.max_pages {
            return Err(FetchError::Invalid {
                url: url.to_string(),
                message: format!("more than {} pages (max_pages)", http.max_pages),
            });
        }
        let shown = url.to_string();
        let cached = store.cached_page(source_id, &shown).await?;
        let response = get(http, &url, cached.as_ref(), &timed).await?;
        let page = if response.status == StatusCode::NOT_MODIFIED {
            let Some(cached) = cached else {
                return Err(FetchError::Invalid {
                    url: shown,
                    message: "304 Not Modified without a conditional request".into(),
                });
            };
            tracing::debug!(source = source_id, url = %shown, "not modified");
            Page { url: shown, body: Bytes::from(cached.body), not_modified: true }
        } else {
            let header = |name| response.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
            let entry =
                CachedPage { etag: header(ETAG), last_modified: header(LAST_MODIFIED), body: response.body.to_vec() };
            if record_cache && (entry.etag.is_some() || entry.last_modified.is_some()) {
                store.store_page(source_id, &shown, &entry, now).await?;
            }
            Page { url: shown, body: response.body.clone(), not_modified: false }
        };
        next = next_url(http, &url, &response.headers, &page.body, pages.len())?;
        pages.push(page);
    }
    Ok(pages)
}

fn first_url(http: &HttpSource) -> Url {
    match &http.pagination {
        Pagination::Page { param, first, size } => with_page(&http.url, param, *first, size.as_ref()),
        _ => http.url.clone(),
    }
}

fn with_page(base: &Url, param: &str, page: u64, size: Option<&(String, u64)>) -> Url {
    let mut url = base.clone();
    let kept: Vec<(String, String)> = base
        .query_pairs()
        .filter(|(k, _)| k != param && size.is_none_or(|(s, _)| k != s))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    {
        let mut query = url.query_pairs_mut();
        query.clear();
        for (k, v) in &kept {
            query.append_pair(k, v);
        }
        query.append_pair(param, &page.to_string());
        if let Some((name, value)) = size {
            query.append_pair(name, &value.to_string());
        }
    }
    url
}

fn next_url(
    http: &HttpSource,
    current: &Url,
    headers: &HeaderMap,
    body: &[u8],
    index: usize,
) -> Result<Option<Url>, FetchError> {
    match &http.pagination {
        Pagination::None => Ok(None),
        Pagination::Link => {
            let Some(link) = headers.get(LINK).and_then(|v| v.to_str().ok()) else {
                return Ok(None);
            };
            match next_link(link) {
                None => Ok(None),
                Some(target) => current.join(target).map(Some).map_err(|e| FetchError::Invalid {
                    url: current.to_string(),
                    message: format!("bad next link `{target}`: {e}"),
                }),
            }
        }
        Pagination::Page { param, first, size } => {
            let records = serde_json::from_slice::<serde_json::Value>(body)
                .ok()
                .and_then(|v| v.as_array().map(Vec::len))
                .unwrap_or(0);
            let full = size.as_ref().is_none_or(|(_, size)| records as u64 >= *size);
            Ok((records > 0 && full).then(|| with_page(&http.url, param, first + index as u64 + 1, size.as_ref())))
        }
    }
}

/// The target of the `rel="next"` entry of a Link header (RFC 8288).
pub fn next_link(header: &str) -> Option<&str> {
    header.split(',').find_map(|part| {
        let mut pieces = part.split(';');
        let target = pieces.next()?.trim().strip_prefix('<')?.strip_suffix('>')?;
        let is_next = pieces.any(|p| {
            let p = p.trim();
            p.strip_prefix("rel=")
                .is_some_and(|rel| rel.trim_matches('"').split_whitespace().any(|r| r.eq_ignore_ascii_case("next")))
        });
        is_next.then_some(target)
    })
}

/// One GET with conditional headers, retried for transient failures with exponential backoff and
/// full jitter, honouring `Retry-After`.
async fn get(
    http: &HttpSource,
    url: &Url,
    cached: Option<&CachedPage>,
    timed: &(dyn Fn(f64) + Sync),
) -> Result<Response, FetchError> {
    let shown = url.to_string();
    let (result, attempts) = retried(http.retry, &shown, || async {
        let started = std::time::Instant::now();
        let answer = attempt(http, url, cached).await;
        timed(started.elapsed().as_secs_f64());
        answer
    })
    .await;
    result.map_err(|e| crate::retry::Failure::of(e, &shown, attempts, "max_body_bytes").into())
}

async fn attempt(http: &HttpSource, url: &Url, cached: Option<&CachedPage>) -> Result<Response, Attempt> {
    http.limiter.until_ready().await;
    let mut request = http.client.get(url.clone()).header(reqwest::header::ACCEPT, "application/json");
    if let Some(cached) = cached {
        if let Some(etag) = &cached.etag {
            request = request.header(IF_NONE_MATCH, etag);
        }
        if let Some(modified) = &cached.last_modified {
            request = request.header(IF_MODIFIED_SINCE, modified);
        }
    }
    request = match &http.auth {
        None => request,
        Some(Auth::Bearer(token)) => request.bearer_auth(token.expose_secret()),
        Some(Auth::Basic { username, password }) => request.basic_auth(username, Some(password.expose_secret())),
    };
    send(request, http.max_body_bytes).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_links_are_found_among_others() {
        let header = r#"<https://x/a?page=1>; rel="prev", <https://x/a?page=3>; rel="next""#;
        assert_eq!(next_link(header), Some("https://x/a?page=3"));
        assert_eq!(next_link(r#"</p2>; rel="next last""#), Some("/p2"));
        assert_eq!(next_link(r#"<https://x/a?page=1>; rel="prev""#), None);
    }

    #[test]
    fn page_urls_replace_their_parameter() {
        let base = Url::parse("https://api.example/x?regionalSchluessel=05&page=9").unwrap();
        let url = with_page(&base, "page", 2, Some(&("size".into(), 50)));
        assert_eq!(url.as_str(), "https://api.example/x?regionalSchluessel=05&page=2&size=50");
    }
}
