//! Reads a Server-Sent Events answer under an idle timeout and a deadline, keeping every event.

use std::time::{Duration, Instant};

use eventsource_stream::Eventsource;
use futures::StreamExt;

use super::check::excerpt;
use super::client::{ApiTimeouts, error_chain, header_text};

/// How long to wait for anything after `[DONE]` before calling the stream finished.
const AFTER_DONE_GRACE: Duration = Duration::from_secs(2);
/// Events kept at most; a stream past this is cut and reported as broken.
const MAX_EVENTS: usize = 100_000;

/// One event as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The event type (`message` unless the server named one).
    pub event: String,
    /// The data, multi-line data joined with `\n`.
    pub data: String,
    /// Time since the request was sent.
    pub at: Duration,
}

/// How a stream ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEnd {
    /// The server closed the body.
    Closed,
    /// `[DONE]` came and nothing followed within a short grace, though the body stayed open.
    OpenAfterDone,
    /// Nothing arrived for the idle timeout.
    Idle(Duration),
    /// The overall deadline passed.
    Deadline(Duration),
    /// The connection broke or the framing was unreadable.
    Broken(String),
}

/// A streamed exchange as the endpoint answered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamCapture {
    /// `POST /v1/completions (stream)`, ...
    pub request_line: String,
    /// The status code.
    pub status: u16,
    /// The `Content-Type` header, if any.
    pub content_type: Option<String>,
    /// The events, in order.
    pub events: Vec<SseEvent>,
    /// How it ended.
    pub end: StreamEnd,
    /// The raw body when the status was not 200 (not read as events).
    pub error_body: Option<String>,
}

impl StreamCapture {
    /// Describes the last event received, for timeout messages.
    pub fn last_seen(&self) -> String {
        match self.events.last() {
            None => "no event at all".to_string(),
            Some(e) => format!(
                "{} events, the last at {:.1}s: {}",
                self.events.len(),
                e.at.as_secs_f64(),
                excerpt(&e.data, 160)
            ),
        }
    }
}

/// Reads `response` to its end, or until `timeouts` cut it off.
pub async fn read(
    request_line: String,
    response: reqwest::Response,
    timeouts: ApiTimeouts,
) -> StreamCapture {
    let started = Instant::now();
    let status = response.status().as_u16();
    let content_type = header_text(response.headers(), reqwest::header::CONTENT_TYPE);
    let mut capture = StreamCapture {
        request_line,
        status,
        content_type,
        events: Vec::new(),
        end: StreamEnd::Closed,
        error_body: None,
    };
    if status != 200 {
        let body = tokio::time::timeout(timeouts.stream_idle, response.text()).await;
        capture.error_body = Some(match body {
            Ok(Ok(text)) => text,
            Ok(Err(e)) => format!("<unreadable body: {}>", error_chain(&e)),
            Err(_) => "<body not received>".to_string(),
        });
        return capture;
    }
    // A stream whose lines end in a lone CR leaves its last event pending in the parser,
    // which waits to see whether an LF follows: end the body with one so it is dispatched.
    let body =
        response
            .bytes_stream()
            .chain(futures::stream::iter([Ok(bytes::Bytes::from_static(
                b"\n",
            ))]));
    let mut events = body.eventsource();
    loop {
        let elapsed = started.elapsed();
        let remaining = timeouts.stream_deadline.saturating_sub(elapsed);
        let done_seen = capture.events.last().is_some_and(|e| e.data == "[DONE]");
        let idle = if done_seen {
            AFTER_DONE_GRACE
        } else {
            timeouts.stream_idle
        };
        match tokio::time::timeout(idle.min(remaining), events.next()).await {
            Err(_) if done_seen && remaining > idle => {
                capture.end = StreamEnd::OpenAfterDone;
                break;
            }
            Err(_) if remaining <= idle => {
                capture.end = StreamEnd::Deadline(timeouts.stream_deadline);
                break;
            }
            Err(_) => {
                capture.end = StreamEnd::Idle(timeouts.stream_idle);
                break;
            }
            Ok(None) => {
                capture.end = StreamEnd::Closed;
                break;
            }
            Ok(Some(Err(e))) => {
                capture.end = StreamEnd::Broken(error_chain(&e));
                break;
            }
            Ok(Some(Ok(event))) => {
                capture.events.push(SseEvent {
                    event: event.event,
                    data: event.data,
                    at: started.elapsed(),
                });
                if capture.events.len() >= MAX_EVENTS {
                    capture.end = StreamEnd::Broken(format!("more than {MAX_EVENTS} events"));
                    break;
                }
            }
        }
    }
    capture
}
