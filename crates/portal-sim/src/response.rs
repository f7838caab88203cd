//! The simulator's answers: JSON errors, refusals, ETags, and successes (remembered for replays)
//! rendered whole or with the connection dropped.

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::config::SimError;

pub(crate) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": message.into() }))).into_response()
}

/// A refused request: the status and the message of its JSON error body.
pub(crate) struct Refusal {
    status: StatusCode,
    message: String,
}

impl Refusal {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Refusal {
        Refusal { status, message: message.into() }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        error(self.status, self.message)
    }
}

pub(crate) fn etag(version: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).expect("versions are plain ASCII")
}

pub(crate) fn store_failure(e: SimError) -> Response {
    tracing::error!(error = %e, "portal-sim: mirror file");
    error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}
/// A (remembered) success: status, ETag and JSON body.
#[derive(Clone)]
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) version: Option<String>,
    pub(crate) body: Option<serde_json::Value>,
}

impl Answer {
    pub(crate) fn render(&self, replayed: bool) -> Response {
        let mut response = match &self.body {
            Some(body) => (self.status, axum::Json(body.clone())).into_response(),
            None => self.status.into_response(),
        };
        if let Some(version) = &self.version {
            response.headers_mut().insert(header::ETAG, etag(version));
        }
        if replayed {
            response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
        }
        response
    }

    /// The headers of the answer, then a body that fails at once: hyper drops the connection
    /// before anything (not even the status line) has been flushed. A `204` becomes `200` here,
    /// because hyper never polls the body of a `204` (and would send it intact).
    pub(crate) fn broken(&self) -> Response {
        let mut response = self.render(false);
        if response.status() == StatusCode::NO_CONTENT {
            *response.status_mut() = StatusCode::OK;
        }
        *response.body_mut() = Body::from_stream(futures::stream::once(async {
            Err::<Bytes, _>(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "portal-sim: injected connection reset",
            ))
        }));
        response
    }
}
