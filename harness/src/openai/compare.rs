//! Rules judged across exchanges: a stream against its unstreamed twin, a stopped answer against its baseline, a `length` finish against the context.

use serde_json::Value;

use super::check::{Checks, Rule, excerpt};
use super::client::HttpCapture;
use super::request::{ApiKind, GenerationRequest};
use super::sse::StreamCapture;
use super::validate::choice_text;
use crate::profile::Profile;

/// The replacement character a decoder puts where bytes are not a character.
const REPLACEMENT: char = '\u{FFFD}';

/// What one generation answered, streamed or not: the first choice's text, its finish reason
/// and the completion tokens reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generated {
    /// The first choice's text (streamed: its deltas joined).
    pub text: String,
    /// The first choice's `finish_reason`, if one came.
    pub finish_reason: Option<String>,
    /// `usage.prompt_tokens`, if reported.
    pub prompt_tokens: Option<u64>,
    /// `usage.completion_tokens`, if reported.
    pub completion_tokens: Option<u64>,
    /// Chunks that carried text for the first choice (streamed; 0 otherwise): the token count
    /// when no usage was reported.
    pub text_chunks: u64,
}

fn tokens(usage: Option<&Value>, key: &str) -> Option<u64> {
    usage?.get(key)?.as_u64()
}

impl Generated {
    /// Reads a 200 JSON answer; `None` for anything else.
    pub fn from_response(capture: &HttpCapture, kind: ApiKind) -> Option<Generated> {
        if capture.status != 200 {
            return None;
        }
        let body = capture.json()?;
        let choice = body.get("choices")?.as_array()?.first()?;
        Some(Generated {
            text: choice_text(choice, kind, false)
                .unwrap_or_default()
                .to_string(),
            finish_reason: choice
                .get("finish_reason")
                .and_then(Value::as_str)
                .map(str::to_string),
            prompt_tokens: tokens(body.get("usage"), "prompt_tokens"),
            completion_tokens: tokens(body.get("usage"), "completion_tokens"),
            text_chunks: 0,
        })
    }

    /// Assembles a 200 stream's first choice; the last usage seen counts (a final usage chunk or
    /// a running count). `None` when no chunk carried a choice.
    pub fn from_stream(capture: &StreamCapture, kind: ApiKind) -> Option<Generated> {
        if capture.status != 200 {
            return None;
        }
        let mut generated = Generated {
            text: String::new(),
            finish_reason: None,
            prompt_tokens: None,
            completion_tokens: None,
            text_chunks: 0,
        };
        let mut any = false;
        for event in &capture.events {
            let Ok(chunk) = serde_json::from_str::<Value>(&event.data) else {
                continue;
            };
            if let Some(usage) = chunk.get("usage").filter(|u| u.is_object()) {
                generated.prompt_tokens = tokens(Some(usage), "prompt_tokens");
                generated.completion_tokens = tokens(Some(usage), "completion_tokens");
            }
            let choices = chunk.get("choices").and_then(Value::as_array);
            for choice in choices.into_iter().flatten() {
                if choice.get("index").and_then(Value::as_u64).unwrap_or(0) != 0 {
                    continue;
                }
                any = true;
                let text = choice_text(choice, kind, true).unwrap_or_default();
                generated.text_chunks += u64::from(!text.is_empty());
                generated.text.push_str(text);
                if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
                    generated.finish_reason = Some(reason.to_string());
                }
            }
        }
        any.then_some(generated)
    }
}

/// The context limit `/v1/models` declares for `model`, in tokens: vLLM's `max_model_len`,
/// `context_length`, or Dynamo 1.x's `context_window` (1.6.1 sends 0, read as undeclared).
pub fn declared_context(models: &HttpCapture, model: &str) -> Option<u64> {
    let body = models.json()?;
    let entry = body
        .get("data")?
        .as_array()?
        .iter()
        .find(|e| e.get("id").and_then(Value::as_str) == Some(model))?;
    ["max_model_len", "context_length", "context_window"]
        .iter()
        .filter_map(|k| entry.get(*k).and_then(Value::as_u64))
        .find(|&n| n > 0)
}

/// A generation sent without `max_tokens` and answered other than 200: a 4xx passes only where
/// the profile declares that its engine requires the parameter.
pub fn max_tokens_required(
    subject: &str,
    status: u16,
    body: &str,
    profile: &Profile,
    checks: &mut Checks,
) {
    match profile.engine_requires_max_tokens {
        Some(source) if (400..500).contains(&status) => checks.pass_noting(
            Rule::MaxTokensOptional,
            subject,
            format!("rejected {status}: the profile declares it ({source})"),
        ),
        _ => checks.fail(
            Rule::MaxTokensOptional,
            subject,
            format!(
                "200 (max_tokens is optional){}",
                if profile.engine_requires_max_tokens.is_some() {
                    ", or a 4xx"
                } else {
                    ""
                }
            ),
            format!("{status} {}", excerpt(body, 160)),
        ),
    }
}

/// A 200 answer to a generation without `max_tokens`: a `length` finish only at the context.
pub fn length_at_context(
    subject: &str,
    generated: &Generated,
    context: Option<u64>,
    profile: &Profile,
    checks: &mut Checks,
) {
    checks.pass(Rule::MaxTokensOptional, subject);
    if generated.finish_reason.as_deref() != Some("length") {
        checks.pass(Rule::LengthAtContext, subject);
        return;
    }
    let (used, counted) = match generated.completion_tokens {
        Some(completion) => (generated.prompt_tokens.unwrap_or(0) + completion, "tokens"),
        None => (generated.text_chunks, "text chunks, no usage reported"),
    };
    match context {
        None => checks.fail(
            Rule::LengthAtContext,
            subject,
            "a context limit declared by /v1/models (max_model_len, context_length or \
             context_window) to end at, with no max_tokens asked",
            format!("finish_reason \"length\" after {used} {counted} and no limit declared"),
        ),
        Some(context) => {
            checks.expect(
                Rule::LengthAtContext,
                subject,
                used >= context.saturating_sub(profile.length_shortfall),
                format!(
                    "finish_reason \"length\" only at the context limit ({context} tokens, prompt \
                 and completion), no max_tokens asked"
                ),
                || format!("\"length\" after {used} {counted}"),
            );
        }
    }
}

/// A stream's text against its unstreamed twin's: no bytes that are not UTF-8, and no U+FFFD
/// the twin does not have.
pub fn stream_utf8(
    capture: &StreamCapture,
    streamed: Option<&Generated>,
    twin: Option<&Generated>,
    checks: &mut Checks,
) {
    let subject = &capture.request_line;
    if let Some(at) = capture.invalid_utf8_at {
        checks.fail(
            Rule::StreamUtf8,
            subject,
            "a body of UTF-8 text",
            format!("bytes that are not UTF-8 at byte {at}"),
        );
        return;
    }
    let (Some(streamed), Some(twin)) = (streamed, twin) else {
        checks.pass(Rule::StreamUtf8, subject);
        return;
    };
    let invented = streamed.text.contains(REPLACEMENT) && !twin.text.contains(REPLACEMENT);
    checks.expect(
        Rule::StreamUtf8,
        subject,
        !invented,
        "no U+FFFD in the streamed text where the unstreamed answer has none",
        || {
            let chars: Vec<char> = streamed.text.chars().collect();
            let at = chars.iter().position(|&c| c == REPLACEMENT).unwrap_or(0);
            let around: String = chars[at.saturating_sub(12)..].iter().take(40).collect();
            format!(
                "U+FFFD in {around:?}; unstreamed: {}",
                excerpt(&twin.text, 60)
            )
        },
    );
}

/// Picks a stop sequence from two greedy baselines. Deterministic (equal) baselines give a
/// word from the middle of the text whose first occurrence is not at its start; otherwise the
/// most frequent character both contain, so a sampling engine still meets it often. `None`
/// when the baselines have no text in common.
pub fn choose_stop(a: &str, b: &str) -> Option<String> {
    if a == b {
        let words: Vec<&str> = a.split_whitespace().collect();
        return words
            .iter()
            .skip(words.len() / 2)
            .chain(words.iter())
            .find(|w| a.find(**w).is_some_and(|at| at > 0))
            .map(|w| (*w).to_string());
    }
    let mut counts = std::collections::BTreeMap::<char, usize>::new();
    for c in a.chars().filter(|c| !c.is_whitespace() && b.contains(*c)) {
        *counts.entry(c).or_default() += 1;
    }
    counts
        .into_iter()
        .max_by_key(|&(c, n)| (n, std::cmp::Reverse(c)))
        .map(|(c, _)| c.to_string())
}

/// A stopped answer against the greedy baselines it was chosen from.
pub fn stop_sequence(
    subject: &str,
    request: &GenerationRequest,
    stopped: &Generated,
    baselines: [&Generated; 2],
    checks: &mut Checks,
) {
    let Some(stop) = request.stop.as_deref() else {
        return;
    };
    let excluded = !stopped.text.contains(stop);
    if !checks.expect(
        Rule::StopSequence,
        subject,
        excluded,
        format!("text without the stop sequence {stop:?}"),
        || format!("{stop:?} in {}", excerpt(&stopped.text, 120)),
    ) {
        return;
    }
    let [a, b] = baselines;
    if a.text != b.text {
        // Without determinism only the exclusion and a consistent finish can be judged.
        let finish_ok = matches!(stopped.finish_reason.as_deref(), Some("stop" | "length"));
        checks.expect(
            Rule::StopSequence,
            subject,
            finish_ok,
            "finish_reason \"stop\" (or \"length\" where the sequence never came)",
            || format!("finish_reason {:?}", stopped.finish_reason),
        );
        if finish_ok {
            checks.pass_noting(
                Rule::StopSequence,
                subject,
                "the engine is not deterministic under temperature 0 and a seed (two baselines \
                 differed), so the prefix of the baseline is not judged",
            );
        }
        return;
    }
    let Some(at) = a.text.find(stop) else {
        return;
    };
    let expected = a.text[..at].trim_end();
    checks.expect(
        Rule::StopSequence,
        subject,
        stopped.text.trim_end() == expected,
        format!("the baseline up to {stop:?}: {}", excerpt(expected, 120)),
        || excerpt(&stopped.text, 120),
    );
    checks.expect(
        Rule::StopSequence,
        subject,
        stopped.finish_reason.as_deref() == Some("stop"),
        "finish_reason \"stop\"",
        || format!("finish_reason {:?}", stopped.finish_reason),
    );
    if let (Some(fewer), Some(baseline)) = (stopped.completion_tokens, a.completion_tokens) {
        checks.expect(
            Rule::StopSequence,
            subject,
            fewer < baseline,
            format!("fewer completion_tokens than the baseline's {baseline}"),
            || format!("completion_tokens {fewer}"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deterministic_baseline_gives_a_word_from_its_middle() {
        let text = " w0 w1 w2 w3 w4 w5";
        assert_eq!(choose_stop(text, text).as_deref(), Some("w3"));
        assert_eq!(choose_stop("one", "one"), None, "no word after the start");
    }

    #[test]
    fn differing_baselines_give_their_most_common_shared_character() {
        assert_eq!(choose_stop("abca", "xa").as_deref(), Some("a"));
        assert_eq!(choose_stop("abc", "xyz"), None);
    }

    fn answer(text: &str, finish: &str, completion: u64) -> Generated {
        Generated {
            text: text.into(),
            finish_reason: Some(finish.into()),
            prompt_tokens: Some(3),
            completion_tokens: Some(completion),
            text_chunks: 0,
        }
    }

    fn stopped_at(stop: &str) -> GenerationRequest {
        GenerationRequest::new(ApiKind::Chat, "m", 32)
            .greedy()
            .stop_at(stop)
    }

    #[test]
    fn a_deterministic_stop_must_end_right_before_the_sequence() {
        let base = answer(" w0 w1 w2 w3", "length", 4);
        let mut checks = Checks::default();
        let good = answer(" w0 w1 ", "stop", 3);
        stop_sequence("s", &stopped_at("w2"), &good, [&base, &base], &mut checks);
        assert!(checks.all_passed(), "{checks:?}");
        let mut checks = Checks::default();
        let early = answer(" w0", "stop", 1);
        stop_sequence("s", &stopped_at("w2"), &early, [&base, &base], &mut checks);
        assert_eq!(checks.violated_rules(), vec![Rule::StopSequence]);
    }

    #[test]
    fn a_sampling_engine_is_judged_on_exclusion_and_finish_only() {
        let (a, b) = (answer("abc", "length", 3), answer("xyz", "length", 3));
        let mut checks = Checks::default();
        let stopped = answer("", "stop", 1);
        stop_sequence("s", &stopped_at("e"), &stopped, [&a, &b], &mut checks);
        assert!(checks.all_passed(), "{checks:?}");
        assert!(checks.iter().any(|c| c.note.is_some()));
        let mut checks = Checks::default();
        let ignored = answer("the end", "length", 3);
        stop_sequence("s", &stopped_at("e"), &ignored, [&a, &b], &mut checks);
        assert_eq!(checks.violated_rules(), vec![Rule::StopSequence]);
    }

    #[test]
    fn length_without_max_tokens_passes_only_at_the_context() {
        let profile = &crate::profile::Profile::V1;
        let mut checks = Checks::default();
        length_at_context(
            "s",
            &answer("x", "length", 4093),
            Some(4096),
            profile,
            &mut checks,
        );
        assert!(checks.all_passed(), "{checks:?}");
        for context in [Some(4096), None] {
            let mut checks = Checks::default();
            length_at_context(
                "s",
                &answer("x", "length", 16),
                context,
                profile,
                &mut checks,
            );
            assert_eq!(checks.violated_rules(), vec![Rule::LengthAtContext]);
        }
    }

    #[test]
    fn only_declared_positive_contexts_count() {
        let models = |entry: &str| HttpCapture {
            request_line: "GET /v1/models".into(),
            status: 200,
            content_type: Some("application/json".into()),
            body: format!(r#"{{"object":"list","data":[{entry}]}}"#),
        };
        assert_eq!(
            declared_context(&models(r#"{"id":"m","max_model_len":4096}"#), "m"),
            Some(4096)
        );
        assert_eq!(
            declared_context(&models(r#"{"id":"m","context_window":0}"#), "m"),
            None
        );
        assert_eq!(
            declared_context(&models(r#"{"id":"x","max_model_len":4096}"#), "m"),
            None
        );
    }
}
