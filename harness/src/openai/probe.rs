//! The API checks as named probes: each sends its requests once, then is judged against a profile.

use super::check::{Checks, Rule};
use super::client::{Answer, Endpoint, HttpCapture};
use super::compare::{self, Generated};
use super::request::{ApiKind, GenerationRequest, Prompt};
use super::sse::StreamCapture;
use super::validate;
use crate::profile::{Profile, ProfileChoice};

/// A model name no deployment serves.
pub const UNKNOWN_MODEL: &str = "dynamo-conformance/no-such-model";
/// The guide's `max_tokens`.
pub const GUIDE_MAX_TOKENS: u64 = 300;
/// A bound small enough that every engine hits it.
pub const SMALL_MAX_TOKENS: u64 = 5;
/// `max_tokens` of the answers to the prompt beyond ASCII.
pub const NON_ASCII_MAX_TOKENS: u64 = 48;
/// `max_tokens` of the stop-sequence probe's baselines.
pub const STOP_BASELINE_TOKENS: u64 = 32;

/// One named group of API checks. The conformance cases and `api` run the same probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiProbe {
    /// `GET /health` of the frontend.
    FrontendHealth,
    /// `GET /v1/models` lists the model, well formed.
    ModelsListsModel,
    /// The guide's non-streamed completion.
    Completion,
    /// The guide's streamed completion.
    CompletionStream,
    /// A non-streamed chat completion.
    Chat,
    /// A streamed chat completion.
    ChatStream,
    /// Streamed completion and chat asking for `stream_options.include_usage`.
    StreamUsage,
    /// A small `max_tokens`, streamed and not, is never exceeded.
    MaxTokensBound,
    /// An unknown model is rejected with a 4xx.
    UnknownModelRejected,
    /// Malformed requests are rejected with a 4xx.
    MalformedRequestRejected,
    /// `max_tokens: 1`, streamed and not: exactly one token, `length`.
    MaxTokensOne,
    /// `n: 3`, streamed and not: three choices indexed 0..2, or a 4xx.
    ChoicesN,
    /// Invalid `max_tokens` values (zero, negative, a string, above any context), streamed and
    /// not: each a 4xx with an error body, never a 5xx, a 200 or silence.
    InvalidParametersRejected,
    /// A chat without `max_tokens`, streamed and not: answered, and `length` only at the
    /// context `/v1/models` declares.
    NoMaxTokens,
    /// A prompt beyond ASCII, completion and chat, streamed and not: the streamed text invents
    /// no U+FFFD its unstreamed twin lacks.
    NonAsciiText,
    /// A stop sequence taken from a greedy baseline answer, streamed and not.
    StopSequence,
}

impl ApiProbe {
    /// Every probe, in the order the guide's promises come.
    pub const ALL: [ApiProbe; 10] = [
        ApiProbe::FrontendHealth,
        ApiProbe::ModelsListsModel,
        ApiProbe::Completion,
        ApiProbe::CompletionStream,
        ApiProbe::Chat,
        ApiProbe::ChatStream,
        ApiProbe::StreamUsage,
        ApiProbe::MaxTokensBound,
        ApiProbe::UnknownModelRejected,
        ApiProbe::MalformedRequestRejected,
    ];

    /// The edge probes, after [`ApiProbe::ALL`]: parameters clients send that the guide does
    /// not. Invalid values come last: a release may wedge on one (Dynamo 0.4.1's mocker panics
    /// on `max_tokens: 0`, seen here).
    pub const EDGES: [ApiProbe; 6] = [
        ApiProbe::MaxTokensOne,
        ApiProbe::ChoicesN,
        ApiProbe::StopSequence,
        ApiProbe::NonAsciiText,
        ApiProbe::NoMaxTokens,
        ApiProbe::InvalidParametersRejected,
    ];

    /// Its case's name, `guide::api::<name>`: the case `run` reports it under and recorded
    /// findings name.
    pub fn case(self) -> String {
        format!("guide::api::{}", self.name())
    }

    /// The probe's name, the last part of its case name.
    pub fn name(self) -> &'static str {
        match self {
            ApiProbe::FrontendHealth => "frontend_health",
            ApiProbe::ModelsListsModel => "models_lists_model",
            ApiProbe::Completion => "completion",
            ApiProbe::CompletionStream => "completion_stream",
            ApiProbe::Chat => "chat",
            ApiProbe::ChatStream => "chat_stream",
            ApiProbe::StreamUsage => "stream_usage",
            ApiProbe::MaxTokensBound => "max_tokens_bound",
            ApiProbe::UnknownModelRejected => "unknown_model_rejected",
            ApiProbe::MalformedRequestRejected => "malformed_request_rejected",
            ApiProbe::MaxTokensOne => "max_tokens_one",
            ApiProbe::ChoicesN => "n_choices",
            ApiProbe::InvalidParametersRejected => "invalid_parameters_rejected",
            ApiProbe::NoMaxTokens => "no_max_tokens",
            ApiProbe::NonAsciiText => "non_ascii_text",
            ApiProbe::StopSequence => "stop_sequence",
        }
    }

    fn requests(self, model: &str) -> Vec<Expectation> {
        use ApiKind::{Chat, Completions};
        let generation =
            |kind, max| Expectation::Generation(GenerationRequest::new(kind, model, max));
        let streamed = |kind, max| {
            Expectation::Generation(GenerationRequest::new(kind, model, max).streamed())
        };
        match self {
            ApiProbe::FrontendHealth => vec![Expectation::FrontendHealth],
            ApiProbe::ModelsListsModel => vec![Expectation::Models],
            ApiProbe::Completion => vec![generation(Completions, GUIDE_MAX_TOKENS)],
            ApiProbe::CompletionStream => vec![streamed(Completions, GUIDE_MAX_TOKENS)],
            ApiProbe::Chat => vec![generation(Chat, 64)],
            ApiProbe::ChatStream => vec![streamed(Chat, 64)],
            ApiProbe::StreamUsage => [Completions, Chat]
                .into_iter()
                .map(|kind| {
                    Expectation::Generation(GenerationRequest::new(kind, model, 32).with_usage())
                })
                .collect(),
            ApiProbe::MaxTokensBound => vec![
                generation(Completions, SMALL_MAX_TOKENS),
                streamed(Completions, SMALL_MAX_TOKENS),
                generation(Chat, SMALL_MAX_TOKENS),
            ],
            ApiProbe::UnknownModelRejected => Expectation::twins(&[
                (Malformed::UnknownModel, ApiKind::Completions),
                (Malformed::UnknownModel, ApiKind::Chat),
            ]),
            ApiProbe::MalformedRequestRejected => Expectation::twins(&[
                (Malformed::InvalidJson, ApiKind::Completions),
                (Malformed::MissingPrompt, ApiKind::Completions),
                (Malformed::MissingMessages, ApiKind::Chat),
            ]),
            ApiProbe::MaxTokensOne => vec![
                generation(Completions, 1),
                generation(Chat, 1),
                streamed(Chat, 1),
            ],
            ApiProbe::ChoicesN => [false, true]
                .into_iter()
                .map(|stream| {
                    let request = GenerationRequest::new(Chat, model, SMALL_MAX_TOKENS).choices(3);
                    Expectation::Generation(if stream { request.streamed() } else { request })
                })
                .collect(),
            ApiProbe::InvalidParametersRejected => Expectation::twins(&[
                (Malformed::NegativeMaxTokens, ApiKind::Chat),
                (Malformed::StringMaxTokens, ApiKind::Chat),
                (Malformed::AboveContextMaxTokens, ApiKind::Chat),
                (Malformed::ZeroMaxTokens, ApiKind::Chat),
            ]),
            ApiProbe::NoMaxTokens => vec![
                Expectation::Models,
                Expectation::Generation(GenerationRequest::new(Chat, model, 0).unbounded()),
                Expectation::Generation(
                    GenerationRequest::new(Chat, model, 0)
                        .unbounded()
                        .streamed(),
                ),
            ],
            ApiProbe::NonAsciiText => [Completions, Chat]
                .into_iter()
                .flat_map(|kind| {
                    let request = GenerationRequest::new(kind, model, NON_ASCII_MAX_TOKENS)
                        .prompt(Prompt::NonAscii);
                    [
                        Expectation::Generation(request.clone()),
                        Expectation::Generation(request.streamed()),
                    ]
                })
                .collect(),
            ApiProbe::StopSequence => {
                let baseline = GenerationRequest::new(Chat, model, STOP_BASELINE_TOKENS).greedy();
                vec![
                    Expectation::Generation(baseline.clone()),
                    Expectation::Generation(baseline),
                ]
            }
        }
    }

    /// Sends the probe's requests and records the answers.
    pub async fn observe(self, endpoint: &Endpoint, model: &str) -> Observation {
        self.observe_withholding(endpoint, model, &[], "").await
    }

    /// As [`ApiProbe::observe`], but the requests `withheld` names are not sent: each is
    /// recorded unanswered, `why` given.
    pub async fn observe_withholding(
        self,
        endpoint: &Endpoint,
        model: &str,
        withheld: &[Withheld],
        why: &str,
    ) -> Observation {
        let unsent = || Captured::Http(Answer::Unanswered(format!("{NOT_SENT}{why}")));
        let mut exchanges = Vec::new();
        for expectation in self.requests(model) {
            let captured = match &expectation {
                Expectation::Generation(request)
                    if request.max_tokens.is_none() && withheld.contains(&Withheld::Unbounded) =>
                {
                    unsent()
                }
                Expectation::Rejected(malformed, _, _)
                    if withheld.contains(&Withheld::Rejection(*malformed)) =>
                {
                    unsent()
                }
                _ => expectation.send(endpoint, model).await,
            };
            exchanges.push(Exchange {
                expectation,
                captured,
            });
        }
        if self == ApiProbe::StopSequence {
            // The stop sequence comes from what the baselines answered.
            let texts: Vec<String> = exchanges
                .iter()
                .filter_map(|e| match &e.captured {
                    Captured::Http(Answer::Answered(c)) => {
                        Generated::from_response(c, ApiKind::Chat).map(|g| g.text)
                    }
                    _ => None,
                })
                .collect();
            if let [a, b] = texts.as_slice()
                && let Some(stop) = compare::choose_stop(a, b)
            {
                let stopped = GenerationRequest::new(ApiKind::Chat, model, STOP_BASELINE_TOKENS)
                    .greedy()
                    .stop_at(&stop);
                for request in [stopped.clone(), stopped.streamed()] {
                    let expectation = Expectation::Generation(request);
                    let captured = if withheld.contains(&Withheld::StopSequence) {
                        unsent()
                    } else {
                        expectation.send(endpoint, model).await
                    };
                    exchanges.push(Exchange {
                        expectation,
                        captured,
                    });
                }
            }
        }
        Observation {
            probe: self,
            exchanges,
        }
    }
}

/// How a withheld request's missing answer begins ([`ApiProbe::observe_withholding`]).
const NOT_SENT: &str = "not sent: ";

/// A request a probe can be told not to send, because it breaks a release's graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Withheld {
    /// One rejection probe, streamed and not.
    Rejection(Malformed),
    /// The stop-sequence probe's stopped requests (its baselines are still sent).
    StopSequence,
    /// The generations without `max_tokens` (the no-max-tokens probe's).
    Unbounded,
}

/// A request built to be rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// A well-formed request for a model nobody serves.
    UnknownModel,
    /// A body that is not JSON.
    InvalidJson,
    /// A completion without `prompt`.
    MissingPrompt,
    /// A chat completion without `messages`.
    MissingMessages,
    /// `max_tokens: 0`.
    ZeroMaxTokens,
    /// `max_tokens: -1`.
    NegativeMaxTokens,
    /// `max_tokens: "ten"`.
    StringMaxTokens,
    /// `max_tokens` 10^9, above any model's context (1.6.1's frontend caps it at 1048576).
    AboveContextMaxTokens,
}

impl Malformed {
    /// The request body sent for this malformation, as text (it need not be JSON).
    pub fn body(self, model: &str, kind: ApiKind, stream: bool) -> String {
        match self {
            Malformed::UnknownModel => {
                let request = GenerationRequest::new(kind, UNKNOWN_MODEL, SMALL_MAX_TOKENS);
                let request = if stream { request.streamed() } else { request };
                request.body().to_string()
            }
            Malformed::InvalidJson => {
                format!(r#"{{"model": "{model}", "stream": {stream}, "prompt": "#)
            }
            Malformed::MissingPrompt | Malformed::MissingMessages => serde_json::json!({
                "model": model, "max_tokens": SMALL_MAX_TOKENS, "stream": stream
            })
            .to_string(),
            Malformed::ZeroMaxTokens
            | Malformed::NegativeMaxTokens
            | Malformed::StringMaxTokens
            | Malformed::AboveContextMaxTokens => {
                let mut body = GenerationRequest::new(kind, model, SMALL_MAX_TOKENS).body();
                body["stream"] = serde_json::json!(stream);
                body["max_tokens"] = match self {
                    Malformed::ZeroMaxTokens => serde_json::json!(0),
                    Malformed::NegativeMaxTokens => serde_json::json!(-1),
                    Malformed::StringMaxTokens => serde_json::json!("ten"),
                    _ => serde_json::json!(1_000_000_000u64),
                };
                body.to_string()
            }
        }
    }

    /// The error body `profile` promises for this rejection.
    fn shape(self, profile: &Profile) -> crate::profile::ErrorBody {
        match self {
            Malformed::UnknownModel => profile.unknown_model_error,
            Malformed::InvalidJson => profile.invalid_json_error,
            _ => profile.malformed_error,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Malformed::UnknownModel => "unknown model",
            Malformed::InvalidJson => "invalid JSON",
            Malformed::MissingPrompt => "no prompt",
            Malformed::MissingMessages => "no messages",
            Malformed::ZeroMaxTokens => "max_tokens 0",
            Malformed::NegativeMaxTokens => "max_tokens -1",
            Malformed::StringMaxTokens => "max_tokens \"ten\"",
            Malformed::AboveContextMaxTokens => "max_tokens 10^9",
        }
    }
}

/// What a request promises about its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expectation {
    /// The frontend's `/health`.
    FrontendHealth,
    /// `/v1/models`.
    Models,
    /// A completion or chat request, streamed or not.
    Generation(GenerationRequest),
    /// A request that must be rejected; `true` when sent with `"stream": true`.
    Rejected(Malformed, ApiKind, bool),
    /// A worker system port's `/health` or `/live`.
    Worker(Rule),
    /// A worker system port's `/health` or `/live` asked while a generation streamed; `Err`
    /// says why no generation was in flight when it was answered.
    WorkerInFlight(Rule, Result<(), String>),
}

/// An answer as captured, streamed or not.
#[derive(Debug, Clone, PartialEq)]
pub enum Captured {
    /// A whole response.
    Http(Answer<HttpCapture>),
    /// A Server-Sent Events response.
    Stream(Answer<StreamCapture>),
}

impl Expectation {
    /// Each rejection unstreamed, then its streamed twin: what a release rejects unstreamed it
    /// must reject streamed too, before the stream starts.
    fn twins(cases: &[(Malformed, ApiKind)]) -> Vec<Expectation> {
        cases
            .iter()
            .flat_map(|&(m, k)| {
                [
                    Expectation::Rejected(m, k, false),
                    Expectation::Rejected(m, k, true),
                ]
            })
            .collect()
    }

    async fn send(&self, endpoint: &Endpoint, model: &str) -> Captured {
        match self {
            Expectation::FrontendHealth => Captured::Http(endpoint.get("/health").await),
            Expectation::Models => Captured::Http(endpoint.get("/v1/models").await),
            Expectation::Generation(request) if request.stream => Captured::Stream(
                endpoint
                    .post_stream(request.kind.path(), &request.body())
                    .await,
            ),
            Expectation::Generation(request) => Captured::Http(
                endpoint
                    .post_json(request.kind.path(), &request.body())
                    .await,
            ),
            Expectation::Rejected(malformed, kind, false) => {
                let mut answer = endpoint
                    .post_raw(kind.path(), &malformed.body(model, *kind, false))
                    .await;
                if let Answer::Answered(capture) = &mut answer {
                    capture.request_line =
                        format!("{} ({})", capture.request_line, malformed.label());
                }
                Captured::Http(answer)
            }
            Expectation::Rejected(malformed, kind, true) => {
                let mut answer = endpoint
                    .post_raw_stream(kind.path(), malformed.body(model, *kind, true))
                    .await;
                if let Answer::Answered(capture) = &mut answer {
                    capture.request_line =
                        format!("{} ({})", capture.request_line, malformed.label());
                }
                Captured::Stream(answer)
            }
            Expectation::Worker(rule) | Expectation::WorkerInFlight(rule, _) => {
                Captured::Http(endpoint.get(worker_path(*rule)).await)
            }
        }
    }

    /// The rule a missing answer breaks, and the request it was for.
    fn first_rule(&self) -> (Rule, String) {
        match self {
            Expectation::FrontendHealth => (Rule::HealthStatus, "GET /health".into()),
            Expectation::Models => (Rule::ModelsStatus, "GET /v1/models".into()),
            Expectation::Generation(r) if r.stream => (
                Rule::StreamStatus,
                format!("POST {} (stream)", r.kind.path()),
            ),
            Expectation::Generation(r) => (Rule::ResponseStatus, format!("POST {}", r.kind.path())),
            Expectation::Rejected(m, kind, stream) => (
                Rule::ErrorStatus,
                format!(
                    "POST {}{} ({})",
                    kind.path(),
                    if *stream { " (stream)" } else { "" },
                    m.label()
                ),
            ),
            Expectation::Worker(rule) => (*rule, format!("GET {}", worker_path(*rule))),
            Expectation::WorkerInFlight(rule, _) => {
                (*rule, format!("GET {} {IN_FLIGHT}", worker_path(*rule)))
            }
        }
    }
}

/// How the subject of a worker check asked during a generation reads.
const IN_FLIGHT: &str = "(while a generation streams)";

fn worker_path(rule: Rule) -> &'static str {
    if rule == Rule::WorkerLive {
        "/live"
    } else {
        "/health"
    }
}

/// One request and what came back.
#[derive(Debug, Clone, PartialEq)]
pub struct Exchange {
    /// What the answer must satisfy.
    pub expectation: Expectation,
    /// The answer.
    pub captured: Captured,
}

/// Everything a probe saw, to be judged against one or more profiles.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// The probe that made these exchanges.
    pub probe: ApiProbe,
    /// Its exchanges, in order.
    pub exchanges: Vec<Exchange>,
}

impl Observation {
    /// Judges every exchange against `profile`.
    pub fn judge(&self, model: &str, profile: &Profile) -> Checks {
        judge_exchanges(&self.exchanges, model, profile)
    }
}

/// Judges exchanges against `profile`.
pub fn judge_exchanges(exchanges: &[Exchange], model: &str, profile: &Profile) -> Checks {
    let mut checks = Checks::default();
    for exchange in exchanges {
        match (&exchange.expectation, &exchange.captured) {
            (
                expectation,
                Captured::Http(Answer::Unanswered(reason))
                | Captured::Stream(Answer::Unanswered(reason)),
            ) => {
                let (mut rule, subject) = expectation.first_rule();
                // A withheld unbounded request is charged to the rule it tests; one that went
                // unanswered (a dead frontend) keeps its status rule.
                if reason.starts_with(NOT_SENT)
                    && matches!(expectation, Expectation::Generation(r) if r.max_tokens.is_none())
                {
                    rule = Rule::MaxTokensOptional;
                }
                checks.fail(rule, &subject, "an HTTP answer", format!("none: {reason}"));
            }
            (Expectation::FrontendHealth, Captured::Http(Answer::Answered(c))) => {
                validate::frontend_health(c, profile, &mut checks)
            }
            (Expectation::Generation(request), Captured::Http(Answer::Answered(c)))
                if request.max_tokens.is_none() && c.status != 200 =>
            {
                compare::max_tokens_required(
                    &c.request_line,
                    c.status,
                    &c.body,
                    profile,
                    &mut checks,
                )
            }
            (Expectation::Generation(request), Captured::Stream(Answer::Answered(c)))
                if request.max_tokens.is_none() && c.status != 200 =>
            {
                let body = c.error_body.as_deref().unwrap_or("");
                compare::max_tokens_required(&c.request_line, c.status, body, profile, &mut checks)
            }
            (Expectation::Models, Captured::Http(Answer::Answered(c))) => {
                validate::models(c, model, profile, &mut checks)
            }
            (Expectation::Generation(request), Captured::Http(Answer::Answered(c)))
                if request.n > 1 && (400..500).contains(&c.status) =>
            {
                validate::n_rejected(&c.request_line, c.status, &c.body, &mut checks)
            }
            (Expectation::Generation(request), Captured::Stream(Answer::Answered(c)))
                if request.n > 1 && (400..500).contains(&c.status) =>
            {
                let body = c.error_body.as_deref().unwrap_or("");
                validate::n_rejected(&c.request_line, c.status, body, &mut checks)
            }
            (Expectation::Generation(request), Captured::Http(Answer::Answered(c))) => {
                validate::response(c, request, profile, &mut checks)
            }
            (Expectation::Generation(request), Captured::Stream(Answer::Answered(c))) => {
                validate::stream(c, request, profile, &mut checks)
            }
            (Expectation::Rejected(malformed, _, _), Captured::Http(Answer::Answered(c))) => {
                validate::rejected(c, malformed.shape(profile), profile, &mut checks)
            }
            (
                Expectation::Rejected(malformed, kind, true),
                Captured::Stream(Answer::Answered(c)),
            ) => {
                let unstreamed =
                    exchanges
                        .iter()
                        .find_map(|e| match (&e.expectation, &e.captured) {
                            (
                                Expectation::Rejected(m, k, false),
                                Captured::Http(Answer::Answered(twin)),
                            ) if m == malformed && k == kind => Some(twin.status),
                            _ => None,
                        });
                validate::rejected_stream(
                    c,
                    unstreamed,
                    malformed.shape(profile),
                    profile,
                    &mut checks,
                )
            }
            (Expectation::Worker(rule), Captured::Http(Answer::Answered(c))) => {
                validate::worker_probe(c, *rule, &mut checks)
            }
            (Expectation::WorkerInFlight(rule, Err(why)), Captured::Http(Answer::Answered(c))) => {
                checks.fail(
                    *rule,
                    &format!("{} {IN_FLIGHT}", c.request_line),
                    "a generation in flight while the worker answered",
                    why.clone(),
                )
            }
            (Expectation::WorkerInFlight(rule, Ok(())), Captured::Http(Answer::Answered(c))) => {
                let mut c = c.clone();
                c.request_line = format!("{} {IN_FLIGHT}", c.request_line);
                validate::worker_probe(&c, *rule, &mut checks)
            }
            (expectation, Captured::Stream(Answer::Answered(c))) => {
                let (rule, subject) = expectation.first_rule();
                checks.fail(
                    rule,
                    &subject,
                    "a whole response",
                    format!("an event stream ({:?})", c.content_type),
                );
            }
        }
    }
    cross_checks(exchanges, model, profile, &mut checks);
    checks
}

/// What an exchange generated, when it was a generation answered 200.
fn generated(exchange: &Exchange) -> Option<(&GenerationRequest, Generated, String)> {
    let Expectation::Generation(request) = &exchange.expectation else {
        return None;
    };
    match &exchange.captured {
        Captured::Http(Answer::Answered(c)) => {
            Generated::from_response(c, request.kind).map(|g| (request, g, c.request_line.clone()))
        }
        Captured::Stream(Answer::Answered(c)) => {
            Generated::from_stream(c, request.kind).map(|g| (request, g, c.request_line.clone()))
        }
        _ => None,
    }
}

/// The rules that compare a probe's exchanges with each other: a stream with its unstreamed
/// twin, a stopped answer with its baselines, an unbounded answer with the declared context.
fn cross_checks(exchanges: &[Exchange], model: &str, profile: &Profile, checks: &mut Checks) {
    let context = exchanges
        .iter()
        .find_map(|e| match (&e.expectation, &e.captured) {
            (Expectation::Models, Captured::Http(Answer::Answered(c))) => {
                compare::declared_context(c, model)
            }
            _ => None,
        });
    let answers: Vec<_> = exchanges.iter().filter_map(generated).collect();
    let unstreamed = |wanted: &GenerationRequest| {
        answers.iter().find(|(r, _, _)| {
            !r.stream && r.kind == wanted.kind && r.prompt == wanted.prompt && r.stop.is_none()
        })
    };
    for (request, answer, subject) in &answers {
        if request.max_tokens.is_none() {
            compare::length_at_context(subject, answer, context, profile, checks);
        }
        if let Some(stop) = &request.stop {
            let baselines: Vec<&Generated> = answers
                .iter()
                .filter(|(r, _, _)| r.greedy && r.stop.is_none() && !r.stream)
                .map(|(_, g, _)| g)
                .collect();
            if let [a, b] = baselines.as_slice() {
                compare::stop_sequence(subject, request, answer, [a, b], checks);
            } else {
                checks.fail(
                    Rule::StopSequence,
                    subject,
                    "two baseline answers to compare with",
                    format!("{} (stop {stop:?})", baselines.len()),
                );
            }
        }
    }
    for exchange in exchanges {
        if let (Expectation::Generation(request), Captured::Stream(Answer::Answered(c))) =
            (&exchange.expectation, &exchange.captured)
            && c.status == 200
        {
            let streamed = Generated::from_stream(c, request.kind);
            let twin = unstreamed(request).map(|(_, g, _)| g);
            compare::stream_utf8(c, streamed.as_ref(), twin, checks);
        }
    }
}

/// Everything `api` sends to an endpoint, in its order: [`ApiProbe::ALL`], then each worker's
/// system port ([`observe_worker`]; each request line names the worker), then the edge probes
/// ([`ApiProbe::EDGES`], which may wedge a release). Returns the probes' observations and the
/// workers' exchanges, for [`judge`].
pub async fn observe_endpoint(
    frontend: &Endpoint,
    workers: &[Endpoint],
    model: &str,
) -> (Vec<Observation>, Vec<Exchange>) {
    let mut observations = Vec::new();
    for probe in ApiProbe::ALL {
        observations.push(probe.observe(frontend, model).await);
    }
    let worker_exchanges = observe_workers(workers, frontend, model).await;
    for probe in ApiProbe::EDGES {
        observations.push(probe.observe(frontend, model).await);
    }
    (observations, worker_exchanges)
}

/// [`observe_worker`] for each of `workers` in turn, each request line naming its worker
/// (`GET /health (http://127.0.0.1:9090)`).
pub async fn observe_workers(
    workers: &[Endpoint],
    frontend: &Endpoint,
    model: &str,
) -> Vec<Exchange> {
    let mut all = Vec::new();
    for worker in workers {
        let mut exchanges = observe_worker(worker, frontend, model).await;
        for exchange in &mut exchanges {
            if let Captured::Http(Answer::Answered(c)) = &mut exchange.captured {
                c.request_line = format!("{} ({})", c.request_line, worker.base());
            }
        }
        all.extend(exchanges);
    }
    all
}

/// Checks a worker's system port, `/health` ready and `/live`: idle, then again while a
/// streamed chat of [`GUIDE_MAX_TOKENS`] runs through `frontend` (a liveness probe that fails
/// under load restarts the pod on a real cluster).
pub async fn observe_worker(system: &Endpoint, frontend: &Endpoint, model: &str) -> Vec<Exchange> {
    let rules = [Rule::WorkerHealth, Rule::WorkerLive];
    let mut exchanges = Vec::new();
    for rule in rules {
        let expectation = Expectation::Worker(rule);
        let captured = expectation.send(system, "").await;
        exchanges.push(Exchange {
            expectation,
            captured,
        });
    }
    let generation = GenerationRequest::new(ApiKind::Chat, model, GUIDE_MAX_TOKENS).streamed();
    let asked = async {
        let mut answers = Vec::new();
        for rule in rules {
            answers.push(system.get(worker_path(rule)).await);
        }
        answers
    };
    let (answers, in_flight) = frontend
        .during_stream(generation.kind.path(), &generation.body(), asked)
        .await;
    for (rule, answer) in rules.into_iter().zip(answers) {
        exchanges.push(Exchange {
            expectation: Expectation::WorkerInFlight(rule, in_flight.clone()),
            captured: Captured::Http(answer),
        });
    }
    exchanges
}

/// The verdict of a whole API run under a profile choice.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiVerdict {
    /// The profile the checks below were judged against.
    pub profile: &'static Profile,
    /// True when `profile` was satisfied (under `auto`: the endpoint matched it).
    pub matched: bool,
    /// Under `auto`, the older profiles the answers also satisfied, newest first: the answers do
    /// not tell those releases apart from `profile` (0.9's and 1.x's differ in no answer a
    /// lenient reading checks, for one).
    pub also_matched: Vec<&'static Profile>,
    /// Every check, in probe order.
    pub checks: Checks,
}

/// Judges observations, and the workers' exchanges from [`observe_worker`], against the
/// profiles `choice` allows (under `auto` newest first); the first profile with no violation
/// wins, otherwise the one with fewest.
pub fn judge(
    observations: &[Observation],
    workers: &[Exchange],
    model: &str,
    choice: ProfileChoice,
) -> ApiVerdict {
    let mut verdicts: Vec<ApiVerdict> = choice
        .candidates()
        .into_iter()
        .map(|profile| {
            let mut checks = Checks::default();
            for observation in observations {
                checks.extend(observation.judge(model, profile));
            }
            checks.extend(judge_exchanges(workers, model, profile));
            ApiVerdict {
                profile,
                matched: checks.all_passed(),
                also_matched: Vec::new(),
                checks,
            }
        })
        .collect();
    let matched: Vec<&'static Profile> = verdicts
        .iter()
        .filter(|v| v.matched)
        .map(|v| v.profile)
        .collect();
    let best = verdicts
        .iter()
        .position(|v| v.matched)
        .or_else(|| (0..verdicts.len()).min_by_key(|i| verdicts[*i].checks.violations().count()))
        .expect("a profile choice has at least one candidate");
    let mut verdict = verdicts.swap_remove(best);
    verdict.also_matched = matched.into_iter().skip(1).collect();
    verdict
}
