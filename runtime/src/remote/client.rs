//! The buyer side of a remote negotiation: a blocking HTTP client with bounded waits and
//! bodies, and the classification of every outcome into an answer the session records.

use std::io::Read as _;
use std::time::Duration;

use serde_json::Value;

use crate::remote::host::{QuoteResponse, ReceiptResponse};
use crate::remote::{REMOTE_BODY_BYTES_MAX, REMOTE_CONNECT_TIMEOUT_MS, REMOTE_FORMAT};

/// Why a request to a remote provider got no usable body.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum RemoteFault {
    /// No connection (refused, no route, DNS): `provider.unreachable`.
    #[error("cannot connect: {0}")]
    Unreachable(String),
    /// No complete answer within the wait: `provider.timeout`.
    #[error("no answer within {0} ms")]
    Timeout(u32),
    /// The provider says it is unavailable (`503`): `provider.unreachable`.
    #[error("the provider is unavailable (HTTP {0})")]
    Unavailable(u16),
    /// Any other error status: `provider.invalid_answer` (`HTTP_STATUS`).
    #[error("HTTP {status}: {message}")]
    Status { status: u16, message: String },
    /// A body over [`REMOTE_BODY_BYTES_MAX`]: `provider.invalid_answer` (`BODY_TOO_LARGE`).
    #[error("the answer is larger than {REMOTE_BODY_BYTES_MAX} bytes")]
    TooLarge,
    /// Not the expected JSON: `provider.invalid_answer` (`MALFORMED`).
    #[error("the answer is malformed: {0}")]
    Malformed(String),
}

impl RemoteFault {
    /// The `provider.invalid_answer` reason code of a fault that is one.
    pub fn invalid_reason(&self) -> Option<&'static str> {
        match self {
            Self::Status { .. } => Some("HTTP_STATUS"),
            Self::TooLarge => Some("BODY_TOO_LARGE"),
            Self::Malformed(_) => Some("MALFORMED"),
            Self::Unreachable(_) | Self::Timeout(_) | Self::Unavailable(_) => None,
        }
    }
}

/// A client for remote providers. Connections are kept alive between requests.
#[derive(Debug)]
pub struct RemoteClient {
    http: reqwest::blocking::Client,
}

impl RemoteClient {
    pub fn new() -> Result<Self, String> {
        let http = reqwest::blocking::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_millis(REMOTE_CONNECT_TIMEOUT_MS))
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(4)
            .user_agent(concat!("pactum/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self { http })
    }

    /// Posts a JSON body and returns the JSON answer, waiting at most `wait_ms` in all.
    pub fn post_json(&self, url: &str, body: &Value, wait_ms: u32) -> Result<Value, RemoteFault> {
        let bytes = serde_json::to_vec(body).map_err(|e| RemoteFault::Malformed(e.to_string()))?;
        let response = self
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(bytes)
            .timeout(Duration::from_millis(u64::from(wait_ms)))
            .send()
            .map_err(|e| classify(&e, wait_ms))?;
        let status = response.status().as_u16();
        if response.content_length().is_some_and(|n| n > REMOTE_BODY_BYTES_MAX as u64) {
            return Err(RemoteFault::TooLarge);
        }
        let mut body = Vec::new();
        response
            .take(REMOTE_BODY_BYTES_MAX as u64 + 1)
            .read_to_end(&mut body)
            .map_err(|e| classify_read(&e, wait_ms))?;
        if body.len() > REMOTE_BODY_BYTES_MAX {
            return Err(RemoteFault::TooLarge);
        }
        if status == 503 {
            return Err(RemoteFault::Unavailable(status));
        }
        if status != 200 {
            let message = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v.pointer("/error/message").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(200).collect());
            return Err(RemoteFault::Status { status, message });
        }
        let text = std::str::from_utf8(&body).map_err(|_| RemoteFault::Malformed("not UTF-8".into()))?;
        pactum_transcripts::canonical::parse_strict(text).map_err(|e| RemoteFault::Malformed(e.to_string()))
    }

    /// Asks for a quote; the answer is checked for shape only (the caller checks the message
    /// and its seal).
    pub fn quote(&self, endpoint: &str, request: &Value, wait_ms: u32) -> Result<QuoteResponse, RemoteFault> {
        let url = format!("{endpoint}{}", crate::remote::path::QUOTE);
        let answer = self.post_json(&url, request, wait_ms)?;
        let response: QuoteResponse =
            serde_json::from_value(answer).map_err(|e| RemoteFault::Malformed(e.to_string()))?;
        if response.format != REMOTE_FORMAT {
            return Err(RemoteFault::Malformed(format!("format {:?} is not {REMOTE_FORMAT}", response.format)));
        }
        Ok(response)
    }

    /// Asks for a receipt signature.
    pub fn receipt(&self, endpoint: &str, request: &Value, wait_ms: u32) -> Result<ReceiptResponse, RemoteFault> {
        let url = format!("{endpoint}{}", crate::remote::path::RECEIPT);
        let answer = self.post_json(&url, request, wait_ms)?;
        let response: ReceiptResponse =
            serde_json::from_value(answer).map_err(|e| RemoteFault::Malformed(e.to_string()))?;
        if response.format != REMOTE_FORMAT {
            return Err(RemoteFault::Malformed(format!("format {:?} is not {REMOTE_FORMAT}", response.format)));
        }
        Ok(response)
    }
}

fn classify(error: &reqwest::Error, wait_ms: u32) -> RemoteFault {
    if error.is_timeout() {
        RemoteFault::Timeout(wait_ms)
    } else if error.is_connect() {
        RemoteFault::Unreachable(root_cause(error))
    } else if error.is_body() || error.is_decode() {
        RemoteFault::Malformed(root_cause(error))
    } else {
        // A connection closed before a response, or bytes that are not HTTP.
        RemoteFault::Malformed(root_cause(error))
    }
}

fn classify_read(error: &std::io::Error, wait_ms: u32) -> RemoteFault {
    let timed_out = matches!(error.kind(), std::io::ErrorKind::TimedOut)
        || std::error::Error::source(error)
            .and_then(|s| s.downcast_ref::<reqwest::Error>())
            .is_some_and(reqwest::Error::is_timeout)
        || error.to_string().contains("timed out");
    if timed_out { RemoteFault::Timeout(wait_ms) } else { RemoteFault::Malformed(error.to_string()) }
}

/// The innermost cause of an error, which names what happened (refused, reset, ...).
fn root_cause(error: &dyn std::error::Error) -> String {
    let mut cause = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}
