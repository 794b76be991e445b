//! The generation requests the suite sends, and what each promises about its answer.

use serde_json::{Value, json};

/// The prompt of the guide's own example.
pub const GUIDE_PROMPT: &str = "What is opennebula?";

/// A prompt beyond ASCII: two- and three-byte letters, CJK and an emoji (four bytes in UTF-8).
pub const NON_ASCII_PROMPT: &str =
    "Übersetze «Grüße aus Köln» ins Japanische: 日本語で挨拶してください 🙂";

/// Which prompt a request carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prompt {
    /// [`GUIDE_PROMPT`].
    Guide,
    /// [`NON_ASCII_PROMPT`].
    NonAscii,
}

impl Prompt {
    /// The prompt's text.
    pub fn text(self) -> &'static str {
        match self {
            Prompt::Guide => GUIDE_PROMPT,
            Prompt::NonAscii => NON_ASCII_PROMPT,
        }
    }
}

/// The sampling asked for a baseline the stop-sequence probe compares against: greedy, seeded.
pub const BASELINE_SEED: u64 = 7;

/// The two generation APIs of an OpenAI-compatible frontend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiKind {
    /// `POST /v1/completions`.
    Completions,
    /// `POST /v1/chat/completions`.
    Chat,
}

impl ApiKind {
    /// The request path.
    pub fn path(self) -> &'static str {
        match self {
            ApiKind::Completions => "/v1/completions",
            ApiKind::Chat => "/v1/chat/completions",
        }
    }

    /// The `object` of a whole (non-streamed) response.
    pub fn response_object(self) -> &'static str {
        match self {
            ApiKind::Completions => "text_completion",
            ApiKind::Chat => "chat.completion",
        }
    }

    /// The `object` of a streamed chunk.
    pub fn chunk_object(self) -> &'static str {
        match self {
            ApiKind::Completions => "text_completion",
            ApiKind::Chat => "chat.completion.chunk",
        }
    }
}

/// A completion or chat request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenerationRequest {
    /// Which API.
    pub kind: ApiKind,
    /// The model asked for.
    pub model: String,
    /// The `max_tokens` bound; `None` sends none (the engine's own limit applies).
    pub max_tokens: Option<u64>,
    /// Whether to stream.
    pub stream: bool,
    /// Whether to ask for `stream_options.include_usage`.
    pub include_usage: bool,
    /// How many choices to ask for (`n`; sent only above 1).
    pub n: u64,
    /// The prompt.
    pub prompt: Prompt,
    /// A stop sequence (`stop: [..]`), if any.
    pub stop: Option<String>,
    /// Whether to ask for greedy, seeded sampling (`temperature: 0`, `seed`: [`BASELINE_SEED`]).
    pub greedy: bool,
}

impl GenerationRequest {
    /// A non-streamed request.
    pub fn new(kind: ApiKind, model: &str, max_tokens: u64) -> Self {
        GenerationRequest {
            kind,
            model: model.to_string(),
            max_tokens: Some(max_tokens),
            stream: false,
            include_usage: false,
            n: 1,
            prompt: Prompt::Guide,
            stop: None,
            greedy: false,
        }
    }

    /// The same request without `max_tokens`.
    #[must_use]
    pub fn unbounded(mut self) -> Self {
        self.max_tokens = None;
        self
    }

    /// The same request with another prompt.
    #[must_use]
    pub fn prompt(mut self, prompt: Prompt) -> Self {
        self.prompt = prompt;
        self
    }

    /// The same request, greedy and seeded.
    #[must_use]
    pub fn greedy(mut self) -> Self {
        self.greedy = true;
        self
    }

    /// The same request, stopping at `stop`.
    #[must_use]
    pub fn stop_at(mut self, stop: &str) -> Self {
        self.stop = Some(stop.to_string());
        self
    }

    /// The same request, asking for `n` choices.
    #[must_use]
    pub fn choices(mut self, n: u64) -> Self {
        self.n = n;
        self
    }

    /// The same request, streamed.
    #[must_use]
    pub fn streamed(mut self) -> Self {
        self.stream = true;
        self
    }

    /// The same request, streamed, asking for a final usage chunk.
    #[must_use]
    pub fn with_usage(mut self) -> Self {
        self.stream = true;
        self.include_usage = true;
        self
    }

    /// The JSON body.
    pub fn body(&self) -> Value {
        let mut body = match self.kind {
            ApiKind::Completions => json!({ "model": self.model, "prompt": self.prompt.text() }),
            ApiKind::Chat => json!({
                "model": self.model,
                "messages": [{ "role": "user", "content": self.prompt.text() }],
            }),
        };
        if let Some(max_tokens) = self.max_tokens {
            body["max_tokens"] = json!(max_tokens);
        }
        body["stream"] = json!(self.stream);
        if self.include_usage {
            body["stream_options"] = json!({ "include_usage": true });
        }
        if self.n > 1 {
            body["n"] = json!(self.n);
        }
        if let Some(stop) = &self.stop {
            body["stop"] = json!([stop]);
        }
        if self.greedy {
            body["temperature"] = json!(0);
            body["seed"] = json!(BASELINE_SEED);
        }
        body
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guide_request_is_what_the_guide_sends() {
        let body = GenerationRequest::new(ApiKind::Completions, "Qwen/Qwen3-0.6B", 300).body();
        assert_eq!(
            body,
            json!({"model": "Qwen/Qwen3-0.6B", "prompt": "What is opennebula?", "stream": false, "max_tokens": 300})
        );
    }

    #[test]
    fn usage_requests_stream_and_ask_for_usage() {
        let body = GenerationRequest::new(ApiKind::Chat, "m", 5)
            .with_usage()
            .body();
        assert_eq!(body["stream"], json!(true));
        assert_eq!(body["stream_options"]["include_usage"], json!(true));
        assert_eq!(body["messages"][0]["role"], json!("user"));
    }

    #[test]
    fn an_unbounded_greedy_stopped_request_says_so() {
        let body = GenerationRequest::new(ApiKind::Chat, "m", 5)
            .unbounded()
            .greedy()
            .stop_at("lazy")
            .prompt(Prompt::NonAscii)
            .body();
        assert_eq!(body.get("max_tokens"), None);
        assert_eq!(body["stop"], json!(["lazy"]));
        assert_eq!(body["temperature"], json!(0));
        assert_eq!(body["messages"][0]["content"], json!(NON_ASCII_PROMPT));
    }
}
