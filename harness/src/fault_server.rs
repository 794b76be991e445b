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
}

impl Behaviour {
    /// A conforming server of `flavor`.
    pub fn conforming(flavor: Flavor) -> Self {
        Behaviour {
            flavor,
            framing: Framing::Lf,
            fault: None,
        }
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

/// A running fault server; stops when dropped.
#[derive(Debug)]
pub struct FaultServer {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl FaultServer {
    /// Starts a server on a free loopback port.
    pub async fn start(behaviour: Behaviour) -> std::io::Result<FaultServer> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let app = Router::new()
            .route("/health", get(health))
            .route("/v1/models", get(models))
            .route("/v1/completions", post(completions))
            .route("/v1/chat/completions", post(chat))
            .with_state(behaviour);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(FaultServer { addr, task })
    }

    /// The base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for FaultServer {
    fn drop(&mut self) {
        self.task.abort();
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
        Flavor::V1 => "model",
    };
    let mut entry = json!({"id": SERVED_MODEL, "object": object, "created": 1_756_908_946u64, "owned_by": "nvidia"});
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

async fn completions(State(b): State<Behaviour>, body: Bytes) -> Response {
    generate(b, Kind::Completions, &body)
}

async fn chat(State(b): State<Behaviour>, body: Bytes) -> Response {
    generate(b, Kind::Chat, &body)
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
    let body = match b.flavor {
        Flavor::V0_4 if status == StatusCode::BAD_REQUEST => {
            return (status, message.to_string()).into_response();
        }
        Flavor::V0_4 => json!({"error": message}),
        Flavor::V1 => {
            json!({"message": message, "type": "invalid_request_error", "code": status.as_u16()})
        }
    };
    (status, axum::Json(body)).into_response()
}

fn generate(b: Behaviour, kind: Kind, raw: &[u8]) -> Response {
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
    let prompt_words = match kind {
        Kind::Completions => request
            .get("prompt")
            .and_then(Value::as_str)
            .map(|p| p.split_whitespace().count()),
        Kind::Chat => request.get("messages").and_then(Value::as_array).map(|m| {
            m.iter()
                .filter_map(|msg| msg.get("content").and_then(Value::as_str))
                .map(|c| c.split_whitespace().count())
                .sum()
        }),
    };
    let Some(prompt_tokens) = prompt_words else {
        return error(b, StatusCode::BAD_REQUEST, "missing prompt or messages");
    };
    if model != SERVED_MODEL && !b.has(Fault::AcceptsUnknownModel) {
        return error(
            b,
            StatusCode::NOT_FOUND,
            &format!("Model not found: {model}"),
        );
    }
    let max_tokens = request
        .get("max_tokens")
        .and_then(Value::as_u64)
        .unwrap_or(16)
        .min(1000) as usize;
    let produced = if b.has(Fault::ExceedsMaxTokens) {
        max_tokens + 5
    } else {
        max_tokens
    };
    let tokens: Vec<String> = (0..produced).map(|i| format!(" w{i}")).collect();
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
    };
    if stream {
        reply.stream(include_usage)
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

    fn choice(&self, text: &str, finish: Option<&str>, streamed: bool) -> Value {
        match (self.kind, streamed) {
            (Kind::Completions, _) => {
                json!({"index": 0, "text": text, "logprobs": null, "finish_reason": finish})
            }
            (Kind::Chat, false) => {
                json!({"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish})
            }
            (Kind::Chat, true) => {
                json!({"index": 0, "delta": {"content": text}, "finish_reason": finish})
            }
        }
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
        let finish = (!self.b.has(Fault::NoFinishReason)).then_some("length");
        let object = match self.kind {
            Kind::Completions => "text_completion",
            Kind::Chat => "chat.completion",
        };
        let mut body = self.envelope("cmpl-fault-0001", object);
        body.insert("choices".into(), json!([self.choice(&text, finish, false)]));
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

    fn stream(self, include_usage: bool) -> Response {
        let b = self.b;
        let object = match (self.kind, b.has(Fault::WrongChunkObject)) {
            (Kind::Completions, false) => "text_completion",
            (Kind::Completions, true) => "text_completion.chunk",
            (Kind::Chat, false) => "chat.completion.chunk",
            (Kind::Chat, true) => "chat.completion",
        };
        let running_usage = match b.flavor {
            Flavor::V0_4 => !b.has(Fault::MisplacedStreamUsage),
            Flavor::V1 => b.has(Fault::MisplacedStreamUsage),
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
            let finish = (last || b.has(Fault::FinishReasonEveryChunk)).then_some("length");
            let text = if b.has(Fault::EmptyText) {
                ""
            } else {
                token.as_str()
            };
            let mut chunk = self.envelope(id, object);
            chunk.insert("choices".into(), json!([self.choice(text, finish, true)]));
            chunk.insert(
                "usage".into(),
                if running_usage {
                    self.usage(i as u64 + 1)
                } else {
                    Value::Null
                },
            );
            events.push((None, Value::Object(chunk).to_string()));
            if i == 0 && b.has(Fault::InvalidJsonEvent) {
                events.push((None, "{not json".into()));
            }
            if i == 0 && b.has(Fault::ErrorEvent) {
                events.push((Some("error"), r#"{"message":"engine hiccup"}"#.into()));
            }
        }
        if include_usage && b.flavor == Flavor::V1 {
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
        let pieces = frame(&events, b.framing);
        let delay = if b.framing == Framing::Split {
            Duration::from_millis(3)
        } else {
            Duration::ZERO
        };
        let body = futures::stream::iter(pieces)
            .then(move |piece| async move {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                Ok::<Bytes, std::io::Error>(Bytes::from(piece))
            })
            .chain(futures::stream::once(async move {
                if stall {
                    futures::future::pending::<()>().await;
                }
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
            stream_idle: Duration::from_millis(500),
            ..ApiTimeouts::default()
        };
        let endpoint = Endpoint::new(&server.url(), timeouts).unwrap();
        let mut observations = Vec::new();
        for probe in ApiProbe::ALL {
            observations.push(probe.observe(&endpoint, SERVED_MODEL).await);
        }
        judge(&observations, SERVED_MODEL, choice)
    }

    #[rstest]
    #[tokio::test]
    async fn conforming_variations_are_accepted(
        #[values(Flavor::V0_4, Flavor::V1)] flavor: Flavor,
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
        let failures: Vec<String> = verdict
            .checks
            .violations()
            .map(ToString::to_string)
            .collect();
        assert!(verdict.matched, "{failures:#?}");
        let expected = match flavor {
            Flavor::V0_4 => &Profile::V0_4,
            Flavor::V1 => &Profile::V1,
        };
        assert_eq!(verdict.profile, expected);
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
    #[tokio::test]
    async fn each_fault_is_caught_under_its_rule(
        #[case] fault: Fault,
        #[case] rule: Rule,
        #[values(Flavor::V0_4, Flavor::V1)] flavor: Flavor,
    ) {
        let verdict = verdict(
            Behaviour::conforming(flavor).with_fault(fault),
            ProfileChoice::Auto,
        )
        .await;
        assert!(!verdict.matched, "{fault:?} went unnoticed");
        assert!(
            verdict.checks.violated_rules().contains(&rule),
            "{fault:?}: {:?}",
            verdict.checks.violated_rules()
        );
    }
}
