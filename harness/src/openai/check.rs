//! Named conformance rules and the pass/fail record of each check made against them.

use std::fmt;

/// A rule of the OpenAI-compatible API as Dynamo promises it. Each has a stable id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rule {
    /// The frontend's `/health` answers 200.
    HealthStatus,
    /// The frontend's `/health` body says it is healthy.
    HealthBody,
    /// A worker's system `/health` answers 200 `ready`.
    WorkerHealth,
    /// A worker's system `/live` answers 200.
    WorkerLive,
    /// `GET /v1/models` answers 200.
    ModelsStatus,
    /// `GET /v1/models` is `application/json`.
    ModelsContentType,
    /// `GET /v1/models` is `{"object": "list", "data": [...]}`.
    ModelsList,
    /// Every model entry has an id, the release's `object`, `created` and `owned_by`.
    ModelsEntry,
    /// The configured model is listed.
    ModelsListsModel,
    /// A non-streamed completion answers 200.
    ResponseStatus,
    /// A non-streamed completion is `application/json`.
    ResponseContentType,
    /// A non-streamed completion body is a JSON object.
    ResponseJson,
    /// The response has a non-empty string `id`.
    ResponseId,
    /// The response `object` names its kind.
    ResponseObject,
    /// The response echoes the requested model.
    ResponseModel,
    /// The response has a positive integer `created`.
    ResponseCreated,
    /// The response has a non-empty `choices` array indexed from 0.
    ResponseChoices,
    /// Every choice has a `finish_reason` from the allowed set.
    ResponseFinishReason,
    /// `n` choices asked: `n` come, indexed 0..n-1, each ending with a `finish_reason` (streamed
    /// and not), unless the endpoint rejects `n` with a 4xx.
    ChoicesN,
    /// The generated text (or assistant message) is not empty.
    ResponseText,
    /// A chat without `max_tokens` is answered 200 (OpenAI: the parameter is optional), or a 4xx
    /// where the profile declares that its engine requires it; never a 5xx.
    MaxTokensOptional,
    /// With no `max_tokens` asked, `finish_reason: "length"` comes only at the model's context
    /// limit (`/v1/models`: `max_model_len`, `context_length` or `context_window`).
    LengthAtContext,
    /// A stop sequence ends the answer before it: the text excludes it, is a prefix of the same
    /// greedy request's answer without it (when the engine is deterministic), has fewer
    /// completion tokens, and finishes `stop`.
    StopSequence,
    /// The response carries integer `usage` counts.
    UsagePresent,
    /// `prompt_tokens + completion_tokens == total_tokens`.
    UsageArithmetic,
    /// `completion_tokens` never exceeds `max_tokens`.
    UsageMaxTokens,
    /// A `length` finish means `max_tokens` were produced (less the release's known shortfall).
    UsageLengthFinish,
    /// A streamed completion answers 200.
    StreamStatus,
    /// A streamed completion is `text/event-stream`.
    StreamContentType,
    /// The stream ends: no stall past the idle timeout or the deadline, no broken connection.
    StreamTerminated,
    /// No `event: error` arrives.
    StreamErrorEvent,
    /// Every data event but the last is a JSON object.
    StreamEventJson,
    /// Exactly one `[DONE]`, and it is the last event.
    StreamDone,
    /// Every event on the wire is one an SSE parser delivers: no field but `data`, `event`,
    /// `id` and `retry`, no event without data (parsers drop it unseen), nothing after `[DONE]`.
    StreamFraming,
    /// One non-empty `id` throughout the stream.
    StreamId,
    /// Every chunk's `object` names a chunk of its kind.
    StreamObject,
    /// Every chunk echoes the requested model.
    StreamModel,
    /// Only the last choice chunk carries a `finish_reason`, from the allowed set.
    StreamFinishReason,
    /// The assembled text is not empty.
    StreamText,
    /// Usage is reported the way the release promises.
    StreamUsage,
    /// The stream produces no more than `max_tokens` tokens.
    StreamMaxTokens,
    /// The body is valid UTF-8 and the streamed text carries no U+FFFD replacement character the
    /// unstreamed answer to the same prompt does not (a multi-byte character split across chunks).
    StreamUtf8,
    /// A bad request gets a 4xx status, never 200 or 5xx.
    ErrorStatus,
    /// A rejected request gets an error body of the release's shape.
    ErrorBody,
    /// The prefill worker served the requests (disaggregation is real).
    DisaggPrefillServed,
}

impl Rule {
    /// The rule's stable id, as printed in verdicts.
    pub fn id(self) -> &'static str {
        match self {
            Rule::HealthStatus => "health.status",
            Rule::HealthBody => "health.body",
            Rule::WorkerHealth => "worker.health",
            Rule::WorkerLive => "worker.live",
            Rule::ModelsStatus => "models.status",
            Rule::ModelsContentType => "models.content_type",
            Rule::ModelsList => "models.list",
            Rule::ModelsEntry => "models.entry",
            Rule::ModelsListsModel => "models.lists_model",
            Rule::ResponseStatus => "response.status",
            Rule::ResponseContentType => "response.content_type",
            Rule::ResponseJson => "response.json",
            Rule::ResponseId => "response.id",
            Rule::ResponseObject => "response.object",
            Rule::ResponseModel => "response.model",
            Rule::ResponseCreated => "response.created",
            Rule::ResponseChoices => "response.choices",
            Rule::ResponseFinishReason => "response.finish_reason",
            Rule::ChoicesN => "choices.n",
            Rule::ResponseText => "response.text",
            Rule::MaxTokensOptional => "request.max_tokens_optional",
            Rule::LengthAtContext => "usage.length_at_context",
            Rule::StopSequence => "stop.sequence",
            Rule::UsagePresent => "usage.present",
            Rule::UsageArithmetic => "usage.arithmetic",
            Rule::UsageMaxTokens => "usage.max_tokens",
            Rule::UsageLengthFinish => "usage.length_finish",
            Rule::StreamStatus => "stream.status",
            Rule::StreamContentType => "stream.content_type",
            Rule::StreamTerminated => "stream.terminated",
            Rule::StreamErrorEvent => "stream.error_event",
            Rule::StreamEventJson => "stream.event_json",
            Rule::StreamDone => "stream.done",
            Rule::StreamFraming => "stream.framing",
            Rule::StreamId => "stream.id",
            Rule::StreamObject => "stream.object",
            Rule::StreamModel => "stream.model",
            Rule::StreamFinishReason => "stream.finish_reason",
            Rule::StreamText => "stream.text",
            Rule::StreamUsage => "stream.usage",
            Rule::StreamMaxTokens => "stream.max_tokens",
            Rule::StreamUtf8 => "stream.utf8",
            Rule::ErrorStatus => "error.status",
            Rule::ErrorBody => "error.body",
            Rule::DisaggPrefillServed => "disagg.prefill_served",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

/// A failed check: the rule, what was expected and what was observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// What the rule demands here.
    pub expected: String,
    /// What the endpoint did instead.
    pub observed: String,
}

/// One rule checked against one exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// The rule checked.
    pub rule: Rule,
    /// The exchange it was checked on, e.g. `POST /v1/completions (stream)`.
    pub subject: String,
    /// `None` when the rule held.
    pub violation: Option<Violation>,
    /// What a reader should know about a held rule (e.g. which of the known error shapes was seen).
    pub note: Option<String>,
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.violation, &self.note) {
            (None, Some(note)) => {
                write!(f, "PASS  {:<24} {} ({note})", self.rule.id(), self.subject)
            }
            (None, None) => write!(f, "PASS  {:<24} {}", self.rule.id(), self.subject),
            (Some(v), _) => write!(
                f,
                "FAIL  {:<24} {}: expected {}, observed {}",
                self.rule.id(),
                self.subject,
                v.expected,
                v.observed
            ),
        }
    }
}

/// The checks made so far, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checks {
    items: Vec<Check>,
}

impl Checks {
    /// Records that `rule` held on `subject`.
    pub fn pass(&mut self, rule: Rule, subject: &str) {
        self.items.push(Check {
            rule,
            subject: subject.to_string(),
            violation: None,
            note: None,
        });
    }

    /// Records that `rule` held on `subject`, with a note for the reader.
    pub fn pass_noting(&mut self, rule: Rule, subject: &str, note: impl Into<String>) {
        self.items.push(Check {
            rule,
            subject: subject.to_string(),
            violation: None,
            note: Some(note.into()),
        });
    }

    /// Records that `rule` was violated on `subject`.
    pub fn fail(
        &mut self,
        rule: Rule,
        subject: &str,
        expected: impl Into<String>,
        observed: impl Into<String>,
    ) {
        self.items.push(Check {
            rule,
            subject: subject.to_string(),
            violation: Some(Violation {
                expected: expected.into(),
                observed: observed.into(),
            }),
            note: None,
        });
    }

    /// Records `rule` as held when `ok`, violated otherwise; returns `ok`.
    pub fn expect(
        &mut self,
        rule: Rule,
        subject: &str,
        ok: bool,
        expected: impl Into<String>,
        observed: impl FnOnce() -> String,
    ) -> bool {
        if ok {
            self.pass(rule, subject);
        } else {
            self.fail(rule, subject, expected, observed());
        }
        ok
    }

    /// Appends every check of `other`.
    pub fn extend(&mut self, other: Checks) {
        self.items.extend(other.items);
    }

    /// Every check, in the order made.
    pub fn iter(&self) -> impl Iterator<Item = &Check> {
        self.items.iter()
    }

    /// The failed checks.
    pub fn violations(&self) -> impl Iterator<Item = &Check> {
        self.items.iter().filter(|c| c.violation.is_some())
    }

    /// The ids of the violated rules, each once, sorted.
    pub fn violated_rules(&self) -> Vec<Rule> {
        let mut rules: Vec<Rule> = self.violations().map(|c| c.rule).collect();
        rules.sort();
        rules.dedup();
        rules
    }

    /// True when no check failed.
    pub fn all_passed(&self) -> bool {
        self.violations().next().is_none()
    }

    /// How many checks were made.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True when no check was made.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// Shortens `text` to at most `max` characters for a message, marking the cut.
pub fn excerpt(text: &str, max: usize) -> String {
    let flat = text.replace(['\r', '\n'], " ");
    if flat.chars().count() <= max {
        flat
    } else {
        let cut: String = flat.chars().take(max).collect();
        format!("{cut}…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expect_records_the_outcome_and_returns_it() {
        let mut checks = Checks::default();
        assert!(checks.expect(Rule::ResponseId, "x", true, "id", || unreachable!()));
        assert!(!checks.expect(Rule::ResponseModel, "x", false, "m", || "n".into()));
        assert_eq!(checks.len(), 2);
        assert_eq!(checks.violated_rules(), vec![Rule::ResponseModel]);
        assert!(!checks.all_passed());
    }

    #[test]
    fn a_failed_check_prints_rule_expected_and_observed() {
        let mut checks = Checks::default();
        checks.fail(
            Rule::StreamDone,
            "POST /v1/completions (stream)",
            "one [DONE]",
            "none",
        );
        let line = checks.iter().next().unwrap().to_string();
        assert!(line.starts_with("FAIL  stream.done"), "{line}");
        assert!(
            line.ends_with("expected one [DONE], observed none"),
            "{line}"
        );
    }

    #[test]
    fn excerpts_are_flattened_and_cut() {
        assert_eq!(excerpt("a\r\nb", 10), "a  b");
        assert_eq!(excerpt("abcdef", 3), "abc…");
    }
}
