//! The OpenAI-compatible API of a Dynamo frontend: client, stream reader, validators and probes.

pub mod check;
pub mod client;
pub mod compare;
pub mod probe;
pub mod request;
pub mod served;
pub mod sse;
pub mod validate;

pub use check::{Check, Checks, Rule, Violation};
pub use client::{Answer, ApiTimeouts, Endpoint, HttpCapture};
pub use probe::{ApiProbe, ApiVerdict, Observation, judge};
pub use request::{ApiKind, GenerationRequest};
pub use sse::{SseEvent, StreamCapture, StreamEnd};

/// Errors that stop an API run before any rule can be judged.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OpenAiError {
    /// The URL cannot be used.
    #[error("invalid URL '{url}': {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
    /// Nothing answered HTTP at the URL.
    #[error(
        "no HTTP answer from {url}: {reason} (is the frontend running, and the port-forward open?)"
    )]
    Unreachable {
        /// The endpoint's base URL.
        url: String,
        /// What the connection attempt ran into.
        reason: String,
    },
    /// The endpoint answers but does not serve the model.
    #[error("model '{model}' is not served at {url}; it serves: {}", served_list(.served))]
    ModelNotServed {
        /// The model asked for.
        model: String,
        /// The endpoint's base URL.
        url: String,
        /// What `/v1/models` lists.
        served: Vec<String>,
    },
}

fn served_list(served: &[String]) -> String {
    if served.is_empty() {
        "nothing (the model list is empty)".to_string()
    } else {
        served.join(", ")
    }
}
