//! The HTTP clients the configuration names, each built from its settings and secret with every
//! problem reported: a source's (`url`, `[source.http]`), a target's (`[target.http]`) and the
//! XRepository's (`[codelists.xrepository]`).

use std::path::Path;

use toml::Spanned;

use super::error::Report;
use super::secret::read_secret;
use super::{RawConfig, RawHttp, RawSource, RawTarget};

/// Builds an HTTP target from `[target.http]`, reporting every problem.
pub(super) fn resolve_target_http(
    id: &str,
    raw: &RawTarget,
    root: &Path,
    report: &mut Report<'_>,
) -> Option<crate::delivery::http::HttpTarget> {
    use crate::delivery::http::{HttpTarget, HttpTargetSettings};
    use std::time::Duration;
    let Some(spanned) = &raw.http else {
        report.at(&raw.delivery, format!("target `{id}`: delivery = \"http\" needs a [target.http] table with a url"));
        return None;
    };
    let http = spanned.get_ref();
    let base = match reqwest::Url::parse(&http.url) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => url,
        _ => {
            report.at(spanned, format!("target `{id}`: url `{}` is not an http(s) URL", http.url));
            return None;
        }
    };
    let token = match read_secret(&http.token_env, &http.token_file, root, "token") {
        Ok(token) => token,
        Err(e) => {
            report.at(spanned, format!("target `{id}`: {e}"));
            return None;
        }
    };
    let settings = HttpTargetSettings {
        id: id.to_owned(),
        base,
        token,
        retry: crate::retry::RetryPolicy {
            max_retries: http.max_retries,
            base_delay: Duration::from_millis(http.retry_base_ms),
            max_delay: Duration::from_millis(http.retry_max_ms),
        },
        concurrency: http.concurrency,
        requests_per_second: http.requests_per_second,
        connect_timeout: Duration::from_secs(http.connect_timeout_secs),
        request_timeout: Duration::from_secs(http.request_timeout_secs),
    };
    HttpTarget::new(settings).map_err(|e| report.at(spanned, format!("target `{id}`: {e}"))).ok()
}

/// Builds an HTTP source from `url` and `[source.http]`, reporting every problem.
pub(super) fn resolve_http(
    id: &str,
    raw: &RawSource,
    root: &Path,
    report: &mut Report<'_>,
) -> Option<crate::source::http::HttpSource> {
    use crate::source::http::{Auth, HttpSettings, HttpSource, Pagination, RetryPolicy};
    use std::time::Duration;

    let Some(url_text) = &raw.url else {
        report.at(&raw.kind, format!("source `{id}`: kind = \"http\" needs a `url`"));
        return None;
    };
    let url = match reqwest::Url::parse(url_text.get_ref()) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => url,
        Ok(_) => {
            report.at(url_text, format!("source `{id}`: url must be http:// or https://"));
            return None;
        }
        Err(e) => {
            report.at(url_text, format!("source `{id}`: url: {e}"));
            return None;
        }
    };
    // Problems of the HTTP settings are reported at `[source.http]`, or at `url` without one.
    let anchor = Spanned::new(raw.http.as_ref().map_or(url_text.span(), |h| h.span()), ());
    let default_http = toml::from_str::<RawHttp>("").expect("every HTTP setting has a default");
    let http = raw.http.as_ref().map_or(&default_http, |h| h.get_ref());
    let at = |report: &mut Report<'_>, message: String| report.at(&anchor, message);
    let pagination = match http.pagination.as_str() {
        "none" => Pagination::None,
        "link" => Pagination::Link,
        "page" => Pagination::Page {
            param: http.page_param.clone(),
            first: http.first_page,
            size: http.page_size_param.clone().zip(http.page_size),
        },
        other => {
            at(report, format!("source `{id}`: pagination `{other}` (expected none, page or link)"));
            return None;
        }
    };
    let secret = |report: &mut Report<'_>, env: &Option<String>, file: &Option<String>, what: &str| {
        read_secret(env, file, root, what).map_err(|e| at(report, format!("source `{id}`: {e}"))).ok()
    };
    let auth = match &http.auth {
        None => None,
        Some(auth) => match auth.kind.as_str() {
            "bearer" => Some(Auth::Bearer(secret(report, &auth.token_env, &auth.token_file, "token")?)),
            "basic" => {
                let Some(username) = auth.username.clone() else {
                    at(report, format!("source `{id}`: basic auth needs a username"));
                    return None;
                };
                Some(Auth::Basic {
                    username,
                    password: secret(report, &auth.password_env, &auth.password_file, "password")?,
                })
            }
            other => {
                at(report, format!("source `{id}`: auth kind `{other}` (expected bearer or basic)"));
                return None;
            }
        },
    };
    let settings = HttpSettings {
        url,
        pagination,
        max_pages: http.max_pages,
        auth,
        retry: RetryPolicy {
            max_retries: http.max_retries,
            base_delay: Duration::from_millis(http.retry_base_ms),
            max_delay: Duration::from_millis(http.retry_max_ms),
        },
        requests_per_second: http.requests_per_second,
        connect_timeout: Duration::from_secs(http.connect_timeout_secs),
        request_timeout: Duration::from_secs(http.request_timeout_secs),
        fetch_timeout: Duration::from_secs(http.fetch_timeout_secs),
        max_body_bytes: http.max_body_bytes,
    };
    match HttpSource::new(settings) {
        Ok(source) => Some(source),
        Err(e) => {
            at(report, format!("source `{id}`: {e}"));
            None
        }
    }
}

/// The client of `[codelists.xrepository]`, if there is one and its settings hold.
pub(super) fn resolve_xrepository(raw: &RawConfig, report: &mut Report<'_>) -> Option<crate::xrepository::XRepository> {
    raw.codelists.xrepository.as_ref().and_then(|spanned| {
        let xr = spanned.get_ref();
        let url = match reqwest::Url::parse(&xr.url) {
            Ok(url) if matches!(url.scheme(), "http" | "https") => url,
            _ => {
                report.at(spanned, format!("codelists.xrepository: url `{}` is not an http(s) URL", xr.url));
                return None;
            }
        };
        if xr.timeout_secs == 0 {
            report.at(spanned, "codelists.xrepository: timeout_secs must be at least 1");
            return None;
        }
        let settings = crate::xrepository::Settings {
            url,
            timeout: std::time::Duration::from_secs(xr.timeout_secs),
            retry: crate::retry::RetryPolicy {
                max_retries: xr.retries,
                base_delay: std::time::Duration::from_millis(xr.retry_base_ms),
                max_delay: std::time::Duration::from_millis(xr.retry_max_ms),
            },
            max_bytes: raw.limits.max_codelist_bytes,
            limits: raw.limits.codec(),
        };
        crate::xrepository::XRepository::new(settings)
            .map_err(|e| report.at(spanned, format!("codelists.xrepository: {e}")))
            .ok()
    })
}
