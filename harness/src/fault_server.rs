//! A misbehaving OpenAI-compatible server of the project's own: conforming by default, breaking one rule on demand.
//!
//! It exists to prove the validators: every [`Fault`] must be caught under its rule, and every
//! conforming [`Framing`] variation must be accepted. It is not a stand-in for Dynamo.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt;
use serde_json::{Value, json};

/// Which release's conventions the server follows when it is not misbehaving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// Dynamo 0.4.x: running usage in every chunk, `{"error": ...}` bodies, entries of object `object`.
    V0_4,
    /// Dynamo 1.x: OpenAI's usage chunk, flat error bodies, entries of object `model`.
    V1,
    /// OpenAI's own contract: as 1.x, with errors in the `{"error": {...}}` envelope.
    OpenAi,
}

/// A conforming quirk some servers have; each must still be accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quirk {
    /// The final `choices: []` usage chunk comes though `include_usage` was not asked
    /// (Dynamo's and vLLM's force-include-usage server option).
    UsageChunkUnasked,
    /// Malformed requests get `{"error": "..."}` where the flavor sends plain text.
    ErrorStringForMalformed,
}

/// How Server-Sent Events are framed on the wire; all of these conform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `\n` line endings, one write per event.
    Lf,
    /// `\r\n` line endings.
    CrLf,
    /// `\r` line endings.
    Cr,
    /// `\n` endings with `: keep-alive` comments between events.
    Comments,
    /// Every event split into several writes, cut mid-line.
    Split,
}

/// One protocol violation the server can commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// `/health` answers 503.
    Unhealthy,
    /// `/v1/models` says `"object": "catalog"`.
    ModelsNotAList,
    /// A model entry lacks `owned_by`.
    ModelEntryIncomplete,
    /// Non-streamed responses are `text/plain`.
    WrongContentType,
    /// Responses and chunks carry no `id`.
    MissingId,
    /// Responses and chunks name another model.
    ModelNotEchoed,
    /// Non-streamed choices have `finish_reason: null`.
    NoFinishReason,
    /// The generated text is empty.
    EmptyText,
    /// `total_tokens` is off by one.
    UsageDoesNotAddUp,
    /// More tokens than `max_tokens` are produced.
    ExceedsMaxTokens,
    /// Streams are `application/json`.
    StreamWrongContentType,
    /// Streams never send `[DONE]`.
    NoDone,
    /// A chunk follows `[DONE]`.
    DataAfterDone,
    /// One event is not JSON.
    InvalidJsonEvent,
    /// The chunk id changes mid-stream.
    ChangingId,
    /// Chunks say `"object": "text_completion.chunk"` / `"chat.completion"`.
    WrongChunkObject,
    /// Every chunk carries a finish_reason.
    FinishReasonEveryChunk,
    /// The stream stalls after two chunks, the connection left open.
    Stall,
    /// An `event: error` arrives mid-stream.
    ErrorEvent,
    /// Usage arrives in chunks of the wrong place for the flavor.
    MisplacedStreamUsage,
    /// An unknown model is served with 200.
    AcceptsUnknownModel,
    /// Malformed requests get 500.
    ServerErrorOnMalformed,
    /// Error bodies are empty.
    PlainTextErrors,
    /// A stream's only block is `event: error` and a comment, then the body ends (no data).
    ErrorEventWithoutData,
    /// Rejections asked with `"stream": true` are answered 200 with one data event carrying
    /// `{"error": {...}}`, then `[DONE]`.
    StreamedRejectionsAccepted,
    /// Streamed choices leave the `finish_reason` key out instead of sending `null`.
    OmitsFinishReasonKey,
    /// A block with a field parsers ignore (`foo: bar`) between events.
    UnknownField,
    /// `max_tokens: 0` is answered 500 (a client error taken for a server one).
    ServerErrorOnZeroMaxTokens,
    /// `n: 3` is answered with one choice.
    IgnoresN,
    /// A chat without `max_tokens` ends `length` after 16 tokens, far from the declared context.
    LengthWithoutLimit,
    /// Streamed text carries U+FFFD where a multi-byte character was (a character split across
    /// chunks and decoded piecewise); the unstreamed answer is clean.
    ReplacementCharInStream,
    /// `stop` is ignored.
    IgnoresStop,
    /// The system port's `/live` answers 503 while a generation is in flight.
    LiveFailsWhileGenerating,
}

/// What the server does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Behaviour {
    /// The conventions followed.
    pub flavor: Flavor,
    /// How events are framed.
    pub framing: Framing,
    /// The one violation committed, if any.
    pub fault: Option<Fault>,
    /// A conforming quirk, if any.
    pub quirk: Option<Quirk>,
}

impl Behaviour {
    /// A conforming server of `flavor`.
    pub fn conforming(flavor: Flavor) -> Self {
        Behaviour {
            flavor,
            framing: Framing::Lf,
            fault: None,
            quirk: None,
        }
    }

    /// The same server, with `quirk`.
    #[must_use]
    pub fn with_quirk(mut self, quirk: Quirk) -> Self {
        self.quirk = Some(quirk);
        self
    }

    /// The same server, committing `fault`.
    #[must_use]
    pub fn with_fault(mut self, fault: Fault) -> Self {
        self.fault = Some(fault);
        self
    }

    /// The same server, framing events as `framing`.
    #[must_use]
    pub fn with_framing(mut self, framing: Framing) -> Self {
        self.framing = framing;
        self
    }

    fn has(&self, fault: Fault) -> bool {
        self.fault == Some(fault)
    }
}

/// The model the server serves.
pub const SERVED_MODEL: &str = "Qwen/Qwen3-0.6B";
/// The largest `max_tokens` the server accepts (Dynamo 1.6.1's frontend cap).
const MAX_CONTEXT: u64 = 1_048_576;
/// The context `/v1/models` declares (`max_model_len`, as vLLM names it).
pub const DECLARED_CONTEXT: u64 = 4096;
/// Tokens generated when no `max_tokens` is asked, ending `stop`.
const UNBOUNDED_TOKENS: u64 = 12;
/// The pause before each of the first [`PACED_EVENTS`] events of a long generation, so it is
/// in flight for a while (about 100 ms) as a real engine's would be.
const EVENT_PACE: Duration = Duration::from_millis(3);
/// How many events of a long generation are paced.
const PACED_EVENTS: usize = 32;
/// Tokens from which a generation counts as long.
const LONG_GENERATION: usize = 256;

/// Generations in flight, shared by the API and system ports.
type InFlight = std::sync::Arc<std::sync::atomic::AtomicUsize>;

/// A running fault server, an API port and a worker's system port; stops when dropped.
#[derive(Debug)]
pub struct FaultServer {
    addr: SocketAddr,
    system_addr: SocketAddr,
    tasks: [tokio::task::JoinHandle<()>; 2],
}

impl FaultServer {
    /// Starts a server on two free loopback ports.
    pub async fn start(behaviour: Behaviour) -> std::io::Result<FaultServer> {
        let in_flight = InFlight::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let app = Router::new()
            .route("/health", get(health))
            .route("/v1/models", get(models))
            .route("/v1/completions", post(completions))
            .route("/v1/chat/completions", post(chat))
            .layer(axum::Extension(in_flight.clone()))
            .with_state(behaviour);
        let system_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let system_addr = system_listener.local_addr()?;
        let system = Router::new()
            .route("/health", get(worker_health))
            .route("/live", get(worker_live))
            .layer(axum::Extension(in_flight))
            .with_state(behaviour);
        let tasks = [
            tokio::spawn(async move {
                let _ = axum::serve(listener, app).await;
            }),
            tokio::spawn(async move {
                let _ = axum::serve(system_listener, system).await;
            }),
        ];
        Ok(FaultServer {
            addr,
            system_addr,
            tasks,
        })
    }

    /// The base URL of the OpenAI API.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The base URL of the worker's system port (`/health`, `/live`).
    pub fn system_url(&self) -> String {
        format!("http://{}", self.system_addr)
    }
}

impl Drop for FaultServer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

async fn worker_health() -> Response {
    axum::Json(json!({"status": "ready", "endpoints": {"generate": "ready"}})).into_response()
}

async fn worker_live(
    State(b): State<Behaviour>,
    axum::Extension(in_flight): axum::Extension<InFlight>,
) -> Response {
    let busy = in_flight.load(std::sync::atomic::Ordering::SeqCst) > 0;
    if busy && b.has(Fault::LiveFailsWhileGenerating) {
        return (StatusCode::SERVICE_UNAVAILABLE, "busy generating").into_response();
    }
    axum::Json(json!({"status": "live"})).into_response()
}

/// Counts a generation in flight until dropped.
struct Generating(InFlight);

impl Generating {
    fn start(in_flight: &InFlight) -> Self {
        in_flight.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Generating(in_flight.clone())
    }
}

impl Drop for Generating {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

async fn health(State(b): State<Behaviour>) -> Response {
    if b.has(Fault::Unhealthy) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"status": "unhealthy"})),
        )
            .into_response();
    }
    axum::Json(json!({"status": "healthy", "endpoints": ["dyn://dynamo.backend.generate"]}))
        .into_response()
}

async fn models(State(b): State<Behaviour>) -> Response {
    let object = match b.flavor {
        Flavor::V0_4 => "object",
        Flavor::V1 | Flavor::OpenAi => "model",
    };
    let mut entry = json!({"id": SERVED_MODEL, "object": object, "created": 1_756_908_946u64,
                           "owned_by": "nvidia", "max_model_len": DECLARED_CONTEXT});
    if b.has(Fault::ModelEntryIncomplete) {
        entry.as_object_mut().expect("an object").remove("owned_by");
    }
    let list = if b.has(Fault::ModelsNotAList) {
        "catalog"
    } else {
        "list"
    };
    axum::Json(json!({"object": list, "data": [entry]})).into_response()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Completions,
    Chat,
}

async fn completions(
    State(b): State<Behaviour>,
    axum::Extension(in_flight): axum::Extension<InFlight>,
    body: Bytes,
) -> Response {
    let _generating = Generating::start(&in_flight);
    generate(b, Kind::Completions, &body, &in_flight)
}

async fn chat(
    State(b): State<Behaviour>,
    axum::Extension(in_flight): axum::Extension<InFlight>,
    body: Bytes,
) -> Response {
    let _generating = Generating::start(&in_flight);
    generate(b, Kind::Chat, &body, &in_flight)
}

fn error(b: Behaviour, status: StatusCode, message: &str) -> Response {
    let status = if b.has(Fault::ServerErrorOnMalformed) && status == StatusCode::BAD_REQUEST {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        status
    };
    if b.has(Fault::PlainTextErrors) {
        return (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            String::new(),
        )
            .into_response();
    }
    let string_for_malformed = b.quirk == Some(Quirk::ErrorStringForMalformed);
    let body = match b.flavor {
        Flavor::V0_4 if status == StatusCode::BAD_REQUEST && !string_for_malformed => {
            return (status, message.to_string()).into_response();
        }
        Flavor::V0_4 => json!({"error": message}),
        Flavor::V1 => {
            json!({"message": message, "type": "invalid_request_error", "code": status.as_u16()})
        }
        Flavor::OpenAi => json!({"error": {"message": message, "type": "invalid_request_error",
                                           "param": null, "code": null}}),
    };
    (status, axum::Json(body)).into_response()
}

fn generate(b: Behaviour, kind: Kind, raw: &[u8], in_flight: &InFlight) -> Response {
    let response = generate_or_reject(b, kind, raw, in_flight);
    let asked_stream = String::from_utf8_lossy(raw).contains(r#""stream": true"#)
        || String::from_utf8_lossy(raw).contains(r#""stream":true"#);
    if b.has(Fault::StreamedRejectionsAccepted)
        && asked_stream
        && response.status().is_client_error()
    {
        let frame = r#"data: {"error":{"message":"Internal server error","type":"internal_server_error","code":500}}"#;
        return (
            [(header::CONTENT_TYPE, "text/event-stream")],
            format!("{frame}\n\ndata: [DONE]\n\n"),
        )
            .into_response();
    }
    response
}

fn generate_or_reject(b: Behaviour, kind: Kind, raw: &[u8], in_flight: &InFlight) -> Response {
    let Ok(Value::Object(request)) = serde_json::from_slice::<Value>(raw) else {
        return error(
            b,
            StatusCode::BAD_REQUEST,
            "request body is not a JSON object",
        );
    };
    let model = request
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let prompt = match kind {
        Kind::Completions => request
            .get("prompt")
            .and_then(Value::as_str)
            .map(str::to_string),
        Kind::Chat => request.get("messages").and_then(Value::as_array).map(|m| {
            m.iter()
                .filter_map(|msg| msg.get("content").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join(" ")
        }),
    };
    let Some(prompt) = prompt else {
        return error(b, StatusCode::BAD_REQUEST, "missing prompt or messages");
    };
    let prompt_tokens = prompt.split_whitespace().count();
    if model != SERVED_MODEL && !b.has(Fault::AcceptsUnknownModel) {
        return error(
            b,
            StatusCode::NOT_FOUND,
            &format!("Model not found: {model}"),
        );
    }
    let max_tokens = match request.get("max_tokens") {
        None if b.has(Fault::LengthWithoutLimit) => 16,
        None => UNBOUNDED_TOKENS,
        Some(value) => match value.as_u64() {
            Some(0) if b.has(Fault::ServerErrorOnZeroMaxTokens) => {
                return error(b, StatusCode::INTERNAL_SERVER_ERROR, "engine failure");
            }
            Some(n) if (1..=MAX_CONTEXT).contains(&n) => n.min(1000),
            _ => {
                return error(
                    b,
                    StatusCode::BAD_REQUEST,
                    &format!("max_tokens must be an integer in 1..={MAX_CONTEXT}, got {value}"),
                );
            }
        },
    } as usize;
    let n = match request.get("n").and_then(Value::as_u64) {
        Some(n) if !b.has(Fault::IgnoresN) => n.clamp(1, 8),
        _ => 1,
    };
    let produced = if b.has(Fault::ExceedsMaxTokens) {
        max_tokens + 5
    } else {
        max_tokens
    };
    // Prompts beyond ASCII are echoed word by word, so the answer carries their characters.
    let echo: Vec<&str> = prompt.split_whitespace().collect();
    let tokens: Vec<String> = (0..produced)
        .map(|i| match echo.get(i % echo.len().max(1)) {
            Some(word) if !prompt.is_ascii() => format!(" {word}"),
            _ => format!(" w{i}"),
        })
        .collect();
    let mut finish = if request.get("max_tokens").is_none() && !b.has(Fault::LengthWithoutLimit) {
        "stop"
    } else {
        "length"
    };
    let stop = request
        .get("stop")
        .and_then(|s| s.get(0).or(Some(s)))
        .and_then(Value::as_str)
        .filter(|_| !b.has(Fault::IgnoresStop));
    let tokens = match stop.and_then(|stop| tokens.concat().find(stop)) {
        Some(at) => {
            finish = "stop";
            let mut kept = Vec::new();
            let mut start = 0;
            for token in tokens {
                if start >= at {
                    break;
                }
                let end = (start + token.len()).min(at);
                kept.push(token[..end - start].to_string());
                start += token.len();
            }
            kept
        }
        None => tokens,
    };
    let stream = request
        .get("stream")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let include_usage = request
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let reply = Reply {
        b,
        kind,
        model,
        prompt_tokens: prompt_tokens as u64,
        tokens,
        n,
        finish,
    };
    if stream {
        reply.stream(include_usage, Generating::start(in_flight))
    } else {
        reply.whole()
    }
}

struct Reply {
    b: Behaviour,
    kind: Kind,
    model: String,
    prompt_tokens: u64,
    tokens: Vec<String>,
    n: u64,
    finish: &'static str,
}

impl Reply {
    fn echoed_model(&self) -> String {
        if self.b.has(Fault::ModelNotEchoed) {
            "someone/else".into()
        } else {
            self.model.clone()
        }
    }

    fn usage(&self, completion: u64) -> Value {
        let off = u64::from(self.b.has(Fault::UsageDoesNotAddUp));
        json!({"prompt_tokens": self.prompt_tokens, "completion_tokens": completion,
               "total_tokens": self.prompt_tokens + completion + off})
    }

    fn choice(&self, index: u64, text: &str, finish: Option<&str>, streamed: bool) -> Value {
        let mut choice = match (self.kind, streamed) {
            (Kind::Completions, _) => {
                json!({"index": index, "text": text, "logprobs": null, "finish_reason": finish})
            }
            (Kind::Chat, false) => {
                json!({"index": index, "message": {"role": "assistant", "content": text}, "finish_reason": finish})
            }
            (Kind::Chat, true) => {
                json!({"index": index, "delta": {"content": text}, "finish_reason": finish})
            }
        };
        if streamed && finish.is_none() && self.b.has(Fault::OmitsFinishReasonKey) {
            choice
                .as_object_mut()
                .expect("a choice is an object")
                .remove("finish_reason");
        }
        choice
    }

    fn envelope(&self, id: &str, object: &str) -> serde_json::Map<String, Value> {
        let mut map = serde_json::Map::new();
        if !self.b.has(Fault::MissingId) {
            map.insert("id".into(), json!(id));
        }
        map.insert("object".into(), json!(object));
        map.insert("created".into(), json!(1_755_169_608u64));
        map.insert("model".into(), json!(self.echoed_model()));
        map
    }

    fn whole(self) -> Response {
        let text = if self.b.has(Fault::EmptyText) {
            String::new()
        } else {
            self.tokens.concat()
        };
        let finish = (!self.b.has(Fault::NoFinishReason)).then_some(self.finish);
        let object = match self.kind {
            Kind::Completions => "text_completion",
            Kind::Chat => "chat.completion",
        };
        let mut body = self.envelope("cmpl-fault-0001", object);
        let choices: Vec<Value> = (0..self.n)
            .map(|i| self.choice(i, &text, finish, false))
            .collect();
        body.insert("choices".into(), Value::Array(choices));
        body.insert("usage".into(), self.usage(self.tokens.len() as u64));
        let content_type = if self.b.has(Fault::WrongContentType) {
            "text/plain"
        } else {
            "application/json"
        };
        (
            [(header::CONTENT_TYPE, content_type)],
            Value::Object(body).to_string(),
        )
            .into_response()
    }

    fn stream(self, include_usage: bool, generating: Generating) -> Response {
        let b = self.b;
        let object = match (self.kind, b.has(Fault::WrongChunkObject)) {
            (Kind::Completions, false) => "text_completion",
            (Kind::Completions, true) => "text_completion.chunk",
            (Kind::Chat, false) => "chat.completion.chunk",
            (Kind::Chat, true) => "chat.completion",
        };
        let running_usage = match b.flavor {
            Flavor::V0_4 => !b.has(Fault::MisplacedStreamUsage),
            Flavor::V1 | Flavor::OpenAi => b.has(Fault::MisplacedStreamUsage),
        };
        let mut events: Vec<(Option<&str>, String)> = Vec::new();
        let count = self.tokens.len();
        for (i, token) in self.tokens.iter().enumerate() {
            let id = if b.has(Fault::ChangingId) && i > 0 {
                "cmpl-other"
            } else {
                "cmpl-fault-0002"
            };
            let last = i + 1 == count;
            let finish = (last || b.has(Fault::FinishReasonEveryChunk)).then_some(self.finish);
            let replaced;
            let text = if b.has(Fault::EmptyText) {
                ""
            } else if b.has(Fault::ReplacementCharInStream) && !token.is_ascii() {
                replaced = token.replacen(|c: char| !c.is_ascii(), "\u{FFFD}", 1);
                &replaced
            } else {
                token.as_str()
            };
            for index in 0..self.n {
                let mut chunk = self.envelope(id, object);
                chunk.insert(
                    "choices".into(),
                    json!([self.choice(index, text, finish, true)]),
                );
                chunk.insert(
                    "usage".into(),
                    if running_usage {
                        self.usage(i as u64 + 1)
                    } else {
                        Value::Null
                    },
                );
                events.push((None, Value::Object(chunk).to_string()));
            }
            if i == 0 && b.has(Fault::InvalidJsonEvent) {
                events.push((None, "{not json".into()));
            }
            if i == 0 && b.has(Fault::ErrorEvent) {
                events.push((Some("error"), r#"{"message":"engine hiccup"}"#.into()));
            }
        }
        let usage_chunk = include_usage || b.quirk == Some(Quirk::UsageChunkUnasked);
        if usage_chunk && b.flavor != Flavor::V0_4 {
            let mut chunk = self.envelope("cmpl-fault-0002", object);
            chunk.insert("choices".into(), json!([]));
            chunk.insert("usage".into(), self.usage(count as u64));
            events.push((None, Value::Object(chunk).to_string()));
        }
        if !b.has(Fault::NoDone) {
            events.push((None, "[DONE]".into()));
        }
        if b.has(Fault::DataAfterDone) {
            events.push((None, events[0].1.clone()));
        }
        let stall = b.has(Fault::Stall);
        if stall {
            events.truncate(2);
        }
        let mut pieces = frame(&events, b.framing);
        if b.has(Fault::ErrorEventWithoutData) {
            pieces = vec!["event: error\n: unspecified error\n\n".to_string()];
        }
        if b.has(Fault::UnknownField) {
            pieces.insert(1, "foo: bar\n".to_string());
        }
        let delay = if b.framing == Framing::Split {
            Duration::from_millis(3)
        } else if count >= LONG_GENERATION {
            EVENT_PACE
        } else {
            Duration::ZERO
        };
        let body = futures::stream::iter(pieces.into_iter().enumerate())
            .then(move |(i, piece)| async move {
                if !delay.is_zero() && (i < PACED_EVENTS || b.framing == Framing::Split) {
                    tokio::time::sleep(delay).await;
                }
                Ok::<Bytes, std::io::Error>(Bytes::from(piece))
            })
            .chain(futures::stream::once(async move {
                if stall {
                    futures::future::pending::<()>().await;
                }
                drop(generating);
                Ok(Bytes::new())
            }));
        let content_type = if b.has(Fault::StreamWrongContentType) {
            "application/json"
        } else {
            "text/event-stream"
        };
        (
            [
                (header::CONTENT_TYPE, content_type),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            Body::from_stream(body),
        )
            .into_response()
    }
}

/// Frames events as `framing` asks, returning the pieces to write one by one.
fn frame(events: &[(Option<&str>, String)], framing: Framing) -> Vec<String> {
    let eol = match framing {
        Framing::CrLf => "\r\n",
        Framing::Cr => "\r",
        _ => "\n",
    };
    let mut pieces = Vec::new();
    for (name, data) in events {
        let mut text = String::new();
        if framing == Framing::Comments {
            text.push_str(&format!(": keep-alive{eol}"));
        }
        if let Some(name) = name {
            text.push_str(&format!("event: {name}{eol}"));
        }
        text.push_str(&format!("data: {data}{eol}{eol}"));
        if framing == Framing::Split {
            let chars: Vec<char> = text.chars().collect();
            let third = chars.len().div_ceil(3).max(1);
            pieces.extend(chars.chunks(third).map(|c| c.iter().collect::<String>()));
        } else {
            pieces.push(text);
        }
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openai::{ApiProbe, ApiTimeouts, Endpoint, Rule, judge};
    use crate::profile::{Profile, ProfileChoice};
    use rstest::rstest;

    async fn verdict(behaviour: Behaviour, choice: ProfileChoice) -> crate::openai::ApiVerdict {
        let server = FaultServer::start(behaviour).await.unwrap();
        let timeouts = ApiTimeouts {
            // Generous beside a stall's verdict: a 2-core runner may be busy with kept clusters.
            stream_idle: Duration::from_secs(2),
            ..ApiTimeouts::default()
        };
        let endpoint = Endpoint::new(&server.url(), timeouts).unwrap();
        let mut observations = Vec::new();
        for probe in ApiProbe::ALL.into_iter().chain(ApiProbe::EDGES) {
            observations.push(probe.observe(&endpoint, SERVED_MODEL).await);
        }
        let system = Endpoint::new(&server.system_url(), timeouts).unwrap();
        let workers = crate::openai::probe::observe_worker(&system, &endpoint, SERVED_MODEL).await;
        judge(&observations, &workers, SERVED_MODEL, choice)
    }

    /// Fails listing every violated check unless `verdict` matched its profile.
    fn assert_matched(verdict: &crate::openai::ApiVerdict) {
        let failures: Vec<String> = verdict
            .checks
            .violations()
            .map(ToString::to_string)
            .collect();
        assert!(verdict.matched, "{failures:#?}");
    }

    #[rstest]
    #[tokio::test]
    async fn conforming_variations_are_accepted(
        #[values(Flavor::V0_4, Flavor::V1, Flavor::OpenAi)] flavor: Flavor,
        #[values(
            Framing::Lf,
            Framing::CrLf,
            Framing::Cr,
            Framing::Comments,
            Framing::Split
        )]
        framing: Framing,
    ) {
        let verdict = verdict(
            Behaviour::conforming(flavor).with_framing(framing),
            ProfileChoice::Auto,
        )
        .await;
        assert_matched(&verdict);
        let expected = match flavor {
            Flavor::V0_4 => Profile::V0_4.name,
            Flavor::V1 | Flavor::OpenAi => Profile::V1.name,
        };
        assert_eq!(verdict.profile.name, expected);
    }

    #[rstest]
    #[case::usage_chunk_unasked(
        Flavor::V1,
        Quirk::UsageChunkUnasked,
        "a final usage chunk came though include_usage was not asked"
    )]
    #[case::error_string_under_0_4(
        Flavor::V0_4,
        Quirk::ErrorStringForMalformed,
        r#"saw {"error": "<message>"}"#
    )]
    #[tokio::test]
    async fn conforming_quirks_pass_with_a_note(
        #[case] flavor: Flavor,
        #[case] quirk: Quirk,
        #[case] note: &str,
    ) {
        let verdict = verdict(
            Behaviour::conforming(flavor).with_quirk(quirk),
            ProfileChoice::Auto,
        )
        .await;
        assert_matched(&verdict);
        assert!(
            verdict
                .checks
                .iter()
                .any(|c| c.note.as_deref().is_some_and(|n| n.contains(note))),
            "no check notes {note:?}"
        );
    }

    #[rstest]
    #[case::flat_errors_of_1x(Flavor::V1, &["error.body"])]
    #[case::errors_and_entries_of_0_4(Flavor::V0_4, &["models.entry", "stream.usage", "error.body"])]
    #[case::openai_itself(Flavor::OpenAi, &[])]
    #[tokio::test]
    async fn the_strict_openai_profile_names_what_sdks_trip_on(
        #[case] flavor: Flavor,
        #[case] violated: &[&str],
    ) {
        let verdict = verdict(
            Behaviour::conforming(flavor),
            ProfileChoice::Exactly(&Profile::OPENAI),
        )
        .await;
        let ids: Vec<&str> = verdict
            .checks
            .violated_rules()
            .into_iter()
            .map(Rule::id)
            .collect();
        assert_eq!(ids, violated);
    }

    #[rstest]
    #[tokio::test]
    async fn an_omitted_finish_reason_key_fails_only_where_no_profile_declares_it(
        #[values(Flavor::V0_4, Flavor::V1)] flavor: Flavor,
    ) {
        let faulty = Behaviour::conforming(flavor).with_fault(Fault::OmitsFinishReasonKey);
        // Both releases seen here omit it, and their profiles say so.
        assert!(verdict(faulty, ProfileChoice::Auto).await.matched);
        let strict = verdict(faulty, ProfileChoice::Exactly(&Profile::OPENAI)).await;
        assert!(
            strict
                .checks
                .violated_rules()
                .contains(&Rule::StreamFinishReason),
            "{:?}",
            strict.checks.violated_rules()
        );
    }

    #[tokio::test]
    async fn a_stall_ends_the_streams_that_follow_within_one_idle_timeout() {
        let started = std::time::Instant::now();
        let verdict = verdict(
            Behaviour::conforming(Flavor::V1).with_fault(Fault::Stall),
            ProfileChoice::Auto,
        )
        .await;
        let elapsed = started.elapsed();
        let not_run = verdict
            .checks
            .violations()
            .filter(|c| {
                c.violation
                    .as_ref()
                    .is_some_and(|v| v.observed.contains("not run: an earlier stream"))
            })
            .count();
        assert!(not_run >= 4, "{not_run} streams reported as not run");
        // One idle timeout (2 s here) plus the unstalled exchanges, never one per stream.
        assert!(elapsed < Duration::from_millis(4000), "took {elapsed:?}");
    }

    #[rstest]
    #[case(Fault::Unhealthy, Rule::HealthStatus)]
    #[case(Fault::ModelsNotAList, Rule::ModelsList)]
    #[case(Fault::ModelEntryIncomplete, Rule::ModelsEntry)]
    #[case(Fault::WrongContentType, Rule::ResponseContentType)]
    #[case(Fault::MissingId, Rule::ResponseId)]
    #[case(Fault::ModelNotEchoed, Rule::ResponseModel)]
    #[case(Fault::NoFinishReason, Rule::ResponseFinishReason)]
    #[case(Fault::EmptyText, Rule::ResponseText)]
    #[case(Fault::UsageDoesNotAddUp, Rule::UsageArithmetic)]
    #[case(Fault::ExceedsMaxTokens, Rule::UsageMaxTokens)]
    #[case(Fault::StreamWrongContentType, Rule::StreamContentType)]
    #[case(Fault::NoDone, Rule::StreamDone)]
    #[case(Fault::DataAfterDone, Rule::StreamDone)]
    #[case(Fault::InvalidJsonEvent, Rule::StreamEventJson)]
    #[case(Fault::ChangingId, Rule::StreamId)]
    #[case(Fault::WrongChunkObject, Rule::StreamObject)]
    #[case(Fault::FinishReasonEveryChunk, Rule::StreamFinishReason)]
    #[case(Fault::Stall, Rule::StreamTerminated)]
    #[case(Fault::ErrorEvent, Rule::StreamErrorEvent)]
    #[case(Fault::MisplacedStreamUsage, Rule::StreamUsage)]
    #[case(Fault::AcceptsUnknownModel, Rule::ErrorStatus)]
    #[case(Fault::ServerErrorOnMalformed, Rule::ErrorStatus)]
    #[case(Fault::PlainTextErrors, Rule::ErrorBody)]
    #[case(Fault::ErrorEventWithoutData, Rule::StreamErrorEvent)]
    #[case(Fault::ErrorEventWithoutData, Rule::StreamFraming)]
    #[case(Fault::StreamedRejectionsAccepted, Rule::ErrorStatus)]
    #[case(Fault::UnknownField, Rule::StreamFraming)]
    #[case(Fault::DataAfterDone, Rule::StreamFraming)]
    #[case(Fault::ServerErrorOnZeroMaxTokens, Rule::ErrorStatus)]
    #[case(Fault::IgnoresN, Rule::ChoicesN)]
    #[case(Fault::LengthWithoutLimit, Rule::LengthAtContext)]
    #[case(Fault::ReplacementCharInStream, Rule::StreamUtf8)]
    #[case(Fault::IgnoresStop, Rule::StopSequence)]
    #[case(Fault::LiveFailsWhileGenerating, Rule::WorkerLive)]
    #[tokio::test]
    async fn each_fault_is_caught_under_its_rule(
        #[case] fault: Fault,
        #[case] rule: Rule,
        #[values(Flavor::V0_4, Flavor::V1)] flavor: Flavor,
    ) {
        let faulty = Behaviour::conforming(flavor).with_fault(fault);
        let verdict = verdict(faulty, ProfileChoice::Auto).await;
        assert!(!verdict.matched, "{fault:?} went unnoticed");
        // Under auto the closest release may be another one; under its own the rule is named.
        let own = match flavor {
            Flavor::V0_4 => &Profile::V0_4,
            _ => &Profile::V1,
        };
        let verdict = self::verdict(faulty, ProfileChoice::Exactly(own)).await;
        assert!(
            verdict.checks.violated_rules().contains(&rule),
            "{fault:?}: {:?}",
            verdict.checks.violated_rules()
        );
    }
}
