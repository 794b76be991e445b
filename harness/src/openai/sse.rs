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
/// Bytes of the raw body kept for the framing check (4 MiB); the rest is read but not kept.
const MAX_RAW: usize = 4 << 20;

/// The fields an SSE parser acts on (WHATWG HTML, "Server-sent events", interpreting an event stream).
pub const KNOWN_FIELDS: [&str; 4] = ["data", "event", "id", "retry"];

/// One event block as it stood on the wire, before any parser dropped or joined anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFrame {
    /// The block's fields in order, `(name, value)`; comment lines are left out.
    pub fields: Vec<(String, String)>,
    /// The 1-based line the block starts on.
    pub line: usize,
}

impl RawFrame {
    /// The value of the block's last `event` field, if it has one.
    pub fn event(&self) -> Option<&str> {
        self.fields
            .iter()
            .rev()
            .find(|(n, _)| n == "event")
            .map(|(_, v)| v.as_str())
    }

    /// True when the block carries a `data` field (only such blocks are dispatched as events).
    pub fn has_data(&self) -> bool {
        self.fields.iter().any(|(n, _)| n == "data")
    }

    /// The block's data lines joined with `\n`, as a parser would deliver them.
    pub fn data(&self) -> String {
        self.fields
            .iter()
            .filter(|(n, _)| n == "data")
            .map(|(_, v)| v.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Splits a raw event-stream body into its blocks, lines ending in CRLF, LF or CR.
/// A block whose lines are all comments yields nothing; a last block without its blank line is kept.
pub fn frames(raw: &str) -> Vec<RawFrame> {
    let mut frames = Vec::new();
    let mut current = RawFrame {
        fields: Vec::new(),
        line: 1,
    };
    let normalized = raw.replace("\r\n", "\n").replace('\r', "\n");
    for (i, line) in normalized.split('\n').enumerate() {
        if line.is_empty() {
            if !current.fields.is_empty() {
                frames.push(std::mem::replace(
                    &mut current,
                    RawFrame {
                        fields: Vec::new(),
                        line: i + 2,
                    },
                ));
            } else {
                current.line = i + 2;
            }
            continue;
        }
        if line.starts_with(':') {
            continue;
        }
        let (name, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        current.fields.push((name.to_string(), value.to_string()));
    }
    if !current.fields.is_empty() {
        frames.push(current);
    }
    frames
}

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
    /// The body as received when the status was 200 (the first 4 MiB), for the framing check;
    /// bytes that are not UTF-8 are read as U+FFFD.
    pub raw: String,
    /// The byte offset of the first sequence in the body that is not UTF-8, if any.
    pub invalid_utf8_at: Option<usize>,
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
        raw: String::new(),
        invalid_utf8_at: None,
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
    let raw = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let tee = raw.clone();
    let body = response
        .bytes_stream()
        .inspect(move |chunk| {
            if let Ok(bytes) = chunk {
                let mut kept = tee.lock().expect("raw body lock");
                let room = MAX_RAW.saturating_sub(kept.len());
                kept.extend_from_slice(&bytes[..bytes.len().min(room)]);
            }
        })
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
    let raw = raw.lock().expect("raw body lock");
    capture.invalid_utf8_at = invalid_utf8_at(&raw);
    capture.raw = String::from_utf8_lossy(&raw).into_owned();
    capture
}

/// The offset of the first byte sequence that is not UTF-8; a character cut by the end of the
/// kept bytes does not count.
pub fn invalid_utf8_at(bytes: &[u8]) -> Option<usize> {
    match std::str::from_utf8(bytes) {
        Err(e) if e.error_len().is_some() => Some(e.valid_up_to()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bytes_that_are_not_utf8_count_as_invalid() {
        let word = "Grüße".as_bytes();
        assert_eq!(invalid_utf8_at(word), None);
        assert_eq!(
            invalid_utf8_at(&word[..3]),
            None,
            "cut by the end of what was kept"
        );
        assert_eq!(invalid_utf8_at(&[b'a', 0xC3, b'b']), Some(1));
    }

    #[test]
    fn blocks_keep_what_parsers_drop() {
        let raw = "event: error\r\n: unspecified error\r\n\r\ndata: {}\rfoo: bar\r\r: only a comment\n\ndata: [DONE]";
        let blocks = frames(raw);
        assert_eq!(blocks.len(), 3, "{blocks:?}");
        assert_eq!(blocks[0].event(), Some("error"));
        assert!(!blocks[0].has_data());
        assert_eq!(blocks[1].fields[1], ("foo".to_string(), "bar".to_string()));
        assert_eq!(blocks[1].line, 4);
        assert_eq!(blocks[2].data(), "[DONE]");
    }
}
