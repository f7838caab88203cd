//! What a request to the import API must get past: admission (injected faults, latency, the
//! bearer token), the precondition it carries and its idempotency key.

use std::time::Duration;

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;

use crate::response::{Refusal, error};
use crate::state::{SimState, Stored};

/// Counts the request, injects 429/503, waits the latency and checks the bearer token.
pub(crate) async fn admit(state: &SimState, headers: &HeaderMap) -> Result<(), Response> {
    let (latency, fault) = {
        let mut data = state.shared.data.lock().await;
        data.stats.requests += 1;
        let number = data.stats.requests;
        // One draw per request whatever the settings, so the pattern depends on the seed only.
        let unlucky = data.rng.f64() < data.faults.fail_rate;
        let every = u64::from(data.faults.throttle_every);
        let fault = if every > 0 && number % every == 0 {
            data.stats.faults.throttled += 1;
            let mut response = error(StatusCode::TOO_MANY_REQUESTS, "portal-sim: throttled");
            response.headers_mut().insert(header::RETRY_AFTER, data.faults.retry_after_secs.into());
            Some(response)
        } else if unlucky {
            data.stats.faults.unavailable += 1;
            Some(error(StatusCode::SERVICE_UNAVAILABLE, "portal-sim: injected failure"))
        } else {
            None
        };
        (Duration::from_millis(data.faults.latency_ms), fault)
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if let Some(response) = fault {
        return Err(response);
    }
    let authorized = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .is_some_and(|(scheme, token)| scheme.eq_ignore_ascii_case("bearer") && token.trim() == state.shared.token);
    if !authorized {
        state.shared.data.lock().await.stats.unauthorized += 1;
        return Err(error(StatusCode::UNAUTHORIZED, "missing or invalid bearer token"));
    }
    Ok(())
}

fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Result<Option<&'h str>, String> {
    match headers.get(name) {
        None => Ok(None),
        Some(value) => value.to_str().map(|v| Some(v.trim())).map_err(|_| format!("{name} is not visible ASCII")),
    }
}

/// The condition a write carries.
pub(crate) enum Precondition {
    /// `If-None-Match: *`: only if the portal holds nothing.
    Absent,
    /// `If-Match`: only if the portal holds one of these versions (`None` = `*`, any).
    Matches(Option<Vec<String>>),
}

impl Precondition {
    pub(crate) fn parse(headers: &HeaderMap, allow_create: bool) -> Result<Precondition, Refusal> {
        let bad = |m: String| Refusal::new(StatusCode::BAD_REQUEST, m);
        let if_match = header_str(headers, "if-match").map_err(bad)?;
        let if_none_match = header_str(headers, "if-none-match").map_err(bad)?;
        match (if_match, if_none_match) {
            (Some(_), Some(_)) => Err(bad("send exactly one of If-Match and If-None-Match".to_owned())),
            (None, None) => Err(Refusal::new(
                StatusCode::PRECONDITION_REQUIRED,
                if allow_create {
                    "PUT needs If-None-Match: * or If-Match: \"<version>\""
                } else {
                    "DELETE needs If-Match: \"<version>\""
                },
            )),
            (None, Some(value)) if allow_create && value == "*" => Ok(Precondition::Absent),
            (None, Some(_)) => Err(bad(if allow_create {
                "If-None-Match must be *".to_owned()
            } else {
                "DELETE takes If-Match, not If-None-Match".to_owned()
            })),
            (Some("*"), None) => Ok(Precondition::Matches(None)),
            (Some(value), None) => {
                let tags = value
                    .split(',')
                    .map(|tag| {
                        let tag = tag.trim();
                        let tag = tag.strip_prefix("W/").unwrap_or(tag);
                        tag.strip_prefix('"').and_then(|t| t.strip_suffix('"')).map(str::to_owned)
                    })
                    .collect::<Option<Vec<_>>>();
                match tags {
                    Some(tags) => Ok(Precondition::Matches(Some(tags))),
                    None => Err(bad(format!("If-Match must hold quoted versions, not {value}"))),
                }
            }
        }
    }

    /// `Err(message)` if the precondition fails for what the portal holds now.
    pub(crate) fn check(&self, current: Option<&Stored>) -> Result<(), String> {
        match (self, current) {
            (Precondition::Absent, None) => Ok(()),
            (Precondition::Absent, Some(stored)) => Err(format!("the portal already holds version {}", stored.version)),
            (Precondition::Matches(_), None) => Err("the portal holds nothing".to_owned()),
            (Precondition::Matches(None), Some(_)) => Ok(()),
            (Precondition::Matches(Some(tags)), Some(stored)) => {
                if tags.contains(&stored.version) {
                    Ok(())
                } else {
                    Err(format!("the portal holds version {}, not {}", stored.version, tags.join(", ")))
                }
            }
        }
    }
}

pub(crate) fn idempotency_key(headers: &HeaderMap) -> Result<String, Refusal> {
    match header_str(headers, "idempotency-key") {
        Ok(Some(key)) if !key.is_empty() => Ok(key.to_owned()),
        Ok(_) => Err(Refusal::new(StatusCode::BAD_REQUEST, "Idempotency-Key is required on PUT and DELETE")),
        Err(message) => Err(Refusal::new(StatusCode::BAD_REQUEST, message)),
    }
}
