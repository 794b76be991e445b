//! Validators: pure functions from a captured exchange to every rule it keeps or breaks.

use serde_json::{Map, Value};

use super::check::{Checks, Rule, excerpt};
use super::client::HttpCapture;
use super::request::{ApiKind, GenerationRequest};
use super::sse::{self, StreamCapture, StreamEnd};
use crate::profile::{ErrorBody, FrontendHealth, Profile, StreamUsage};

/// The `finish_reason` values OpenAI defines.
pub const FINISH_REASONS: [&str; 5] = [
    "stop",
    "length",
    "content_filter",
    "tool_calls",
    "function_call",
];

const SHOW: usize = 200;

/// Chunk numbers for a message: the first few, then how many in all.
fn numbers(list: &[usize]) -> String {
    let shown: Vec<String> = list.iter().take(5).map(ToString::to_string).collect();
    if list.len() > 5 {
        format!("{}, … ({} in all)", shown.join(", "), list.len())
    } else {
        shown.join(", ")
    }
}

fn type_of(value: Option<&Value>) -> String {
    match value {
        None => "absent".into(),
        Some(Value::Null) => "null".into(),
        Some(Value::String(s)) => format!("{:?}", excerpt(s, 80)),
        Some(other) => excerpt(&other.to_string(), 80),
    }
}

fn is_json(content_type: Option<&str>, wanted: &str) -> bool {
    content_type.is_some_and(|ct| {
        ct.split(';')
            .next()
            .is_some_and(|m| m.trim().eq_ignore_ascii_case(wanted))
    })
}

fn status_line(status: u16, body: &str) -> String {
    format!("{status} with body {}", excerpt(body, SHOW))
}

/// Checks a 200 status, then a JSON content type; false when the status failed.
fn ok_json(capture: &HttpCapture, status_rule: Rule, type_rule: Rule, checks: &mut Checks) -> bool {
    let subject = &capture.request_line;
    if !checks.expect(status_rule, subject, capture.status == 200, "200", || {
        status_line(capture.status, &capture.body)
    }) {
        return false;
    }
    checks.expect(
        type_rule,
        subject,
        is_json(capture.content_type.as_deref(), "application/json"),
        "Content-Type application/json",
        || type_of(capture.content_type.clone().map(Value::String).as_ref()),
    );
    true
}

/// `GET /health` of the frontend.
pub fn frontend_health(capture: &HttpCapture, profile: &Profile, checks: &mut Checks) {
    let subject = &capture.request_line;
    if !checks.expect(
        Rule::HealthStatus,
        subject,
        capture.status == 200,
        "200",
        || status_line(capture.status, &capture.body),
    ) {
        return;
    }
    match profile.frontend_health {
        FrontendHealth::StatusHealthy => {
            let status = capture.json().and_then(|j| j.get("status").cloned());
            checks.expect(
                Rule::HealthBody,
                subject,
                status.as_ref().and_then(Value::as_str) == Some("healthy"),
                r#"a JSON body with "status": "healthy""#,
                || excerpt(&capture.body, SHOW),
            );
        }
    }
}

/// `GET /health` or `GET /live` of a worker's system port.
pub fn worker_probe(capture: &HttpCapture, rule: Rule, checks: &mut Checks) {
    let subject = &capture.request_line;
    if !checks.expect(rule, subject, capture.status == 200, "200", || {
        status_line(capture.status, &capture.body)
    }) {
        return;
    }
    if rule == Rule::WorkerHealth {
        let status = capture.json().and_then(|j| j.get("status").cloned());
        checks.expect(
            rule,
            subject,
            status.as_ref().and_then(Value::as_str) == Some("ready"),
            r#"a JSON body with "status": "ready""#,
            || excerpt(&capture.body, SHOW),
        );
    }
}

/// `GET /v1/models`: well formed, and lists `model`.
pub fn models(capture: &HttpCapture, model: &str, profile: &Profile, checks: &mut Checks) {
    let subject = &capture.request_line;
    if !ok_json(capture, Rule::ModelsStatus, Rule::ModelsContentType, checks) {
        return;
    }
    let json = capture.json();
    let data = json.as_ref().and_then(|j| {
        (j.get("object").and_then(Value::as_str) == Some("list"))
            .then(|| j.get("data").and_then(Value::as_array))
            .flatten()
    });
    let Some(data) = data else {
        checks.fail(
            Rule::ModelsList,
            subject,
            r#"{"object": "list", "data": [...]}"#,
            excerpt(&capture.body, SHOW),
        );
        return;
    };
    checks.pass(Rule::ModelsList, subject);
    let malformed: Vec<String> = data
        .iter()
        .filter_map(|entry| model_entry_problem(entry, profile))
        .collect();
    checks.expect(
        Rule::ModelsEntry,
        subject,
        malformed.is_empty(),
        format!(
            r#"entries with a string id, "object": "{}", an integer created and a string owned_by"#,
            profile.model_entry_object
        ),
        || malformed.join("; "),
    );
    let ids: Vec<&str> = data
        .iter()
        .filter_map(|e| e.get("id").and_then(Value::as_str))
        .collect();
    checks.expect(
        Rule::ModelsListsModel,
        subject,
        ids.contains(&model),
        format!("{model:?} listed"),
        || format!("{ids:?}"),
    );
}

fn model_entry_problem(entry: &Value, profile: &Profile) -> Option<String> {
    let id = entry
        .get("id")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty());
    let name = id.unwrap_or("<no id>");
    let mut problems = Vec::new();
    if id.is_none() {
        problems.push(format!("id {}", type_of(entry.get("id"))));
    }
    if entry.get("object").and_then(Value::as_str) != Some(profile.model_entry_object) {
        problems.push(format!("object {}", type_of(entry.get("object"))));
    }
    if entry.get("created").and_then(Value::as_u64).is_none() {
        problems.push(format!("created {}", type_of(entry.get("created"))));
    }
    if entry.get("owned_by").and_then(Value::as_str).is_none() {
        problems.push(format!("owned_by {}", type_of(entry.get("owned_by"))));
    }
    (!problems.is_empty()).then(|| format!("{name}: {}", problems.join(", ")))
}

/// Integer usage counts, if the object has all three.
fn usage_counts(usage: Option<&Value>) -> Option<(u64, u64, u64)> {
    let usage = usage?.as_object()?;
    let count = |k: &str| usage.get(k).and_then(Value::as_u64);
    Some((
        count("prompt_tokens")?,
        count("completion_tokens")?,
        count("total_tokens")?,
    ))
}

/// The text a choice carries: `text` for completions, the delta's or message's `content` for chat.
pub(crate) fn choice_text(choice: &Value, kind: ApiKind, streamed: bool) -> Option<&str> {
    match kind {
        ApiKind::Completions => choice.get("text").and_then(Value::as_str),
        ApiKind::Chat => {
            let holder = if streamed { "delta" } else { "message" };
            choice.get(holder)?.get("content").and_then(Value::as_str)
        }
    }
}

/// A non-streamed `POST /v1/completions` or `/v1/chat/completions`.
pub fn response(
    capture: &HttpCapture,
    request: &GenerationRequest,
    profile: &Profile,
    checks: &mut Checks,
) {
    let subject = &capture.request_line;
    if !ok_json(
        capture,
        Rule::ResponseStatus,
        Rule::ResponseContentType,
        checks,
    ) {
        return;
    }
    let Some(Value::Object(body)) = capture.json() else {
        checks.fail(
            Rule::ResponseJson,
            subject,
            "a JSON object",
            excerpt(&capture.body, SHOW),
        );
        return;
    };
    checks.pass(Rule::ResponseJson, subject);
    envelope(
        &body,
        request,
        subject,
        request.kind.response_object(),
        checks,
    );

    let choices = body.get("choices").and_then(Value::as_array);
    let indexed = choices.is_some_and(|c| {
        !c.is_empty()
            && c.iter()
                .enumerate()
                .all(|(i, ch)| ch.get("index").and_then(Value::as_u64) == Some(i as u64))
    });
    if !checks.expect(
        Rule::ResponseChoices,
        subject,
        indexed,
        "a non-empty choices array indexed from 0",
        || type_of(body.get("choices")),
    ) {
        return;
    }
    let choices = choices.expect("checked above");
    if request.n > 1 {
        checks.expect(
            Rule::ChoicesN,
            subject,
            choices.len() as u64 == request.n,
            format!(
                "{} choices (n {}), indexed 0..{}",
                request.n,
                request.n,
                request.n - 1
            ),
            || format!("{} choice(s)", choices.len()),
        );
    }
    let reasons: Vec<Option<&str>> = choices
        .iter()
        .map(|c| c.get("finish_reason").and_then(Value::as_str))
        .collect();
    checks.expect(
        Rule::ResponseFinishReason,
        subject,
        reasons
            .iter()
            .all(|r| r.is_some_and(|r| FINISH_REASONS.contains(&r))),
        format!("finish_reason one of {FINISH_REASONS:?}"),
        || {
            choices
                .iter()
                .map(|c| type_of(c.get("finish_reason")))
                .collect::<Vec<_>>()
                .join(", ")
        },
    );
    let empty: Vec<String> = choices
        .iter()
        .filter(|c| {
            let role_ok = request.kind == ApiKind::Completions
                || c.get("message")
                    .and_then(|m| m.get("role"))
                    .and_then(Value::as_str)
                    == Some("assistant");
            // A stop sequence may come first: an empty answer is then what OpenAI specifies.
            let may_be_empty = request.stop.is_some()
                && c.get("finish_reason").and_then(Value::as_str) == Some("stop");
            !role_ok
                || (!may_be_empty && choice_text(c, request.kind, false).is_none_or(str::is_empty))
        })
        .map(|c| excerpt(&c.to_string(), 120))
        .collect();
    let what = match request.kind {
        ApiKind::Completions => "non-empty text in every choice",
        ApiKind::Chat => "an assistant message with non-empty content in every choice",
    };
    checks.expect(Rule::ResponseText, subject, empty.is_empty(), what, || {
        empty.join("; ")
    });

    let Some((prompt, completion, total)) = usage_counts(body.get("usage")) else {
        checks.fail(
            Rule::UsagePresent,
            subject,
            "usage with integer prompt_tokens, completion_tokens, total_tokens",
            type_of(body.get("usage")),
        );
        return;
    };
    checks.pass(Rule::UsagePresent, subject);
    usage_rules(
        (prompt, completion, total),
        reasons.contains(&Some("length")),
        request,
        profile,
        subject,
        checks,
    );
}

/// `id`, `object`, `model` and `created` of a response or chunk.
fn envelope(
    body: &Map<String, Value>,
    request: &GenerationRequest,
    subject: &str,
    object: &str,
    checks: &mut Checks,
) {
    checks.expect(
        Rule::ResponseId,
        subject,
        body.get("id")
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty()),
        "a non-empty string id",
        || type_of(body.get("id")),
    );
    checks.expect(
        Rule::ResponseObject,
        subject,
        body.get("object").and_then(Value::as_str) == Some(object),
        format!("object {object:?}"),
        || type_of(body.get("object")),
    );
    checks.expect(
        Rule::ResponseModel,
        subject,
        body.get("model").and_then(Value::as_str) == Some(request.model.as_str()),
        format!("model {:?}", request.model),
        || type_of(body.get("model")),
    );
    checks.expect(
        Rule::ResponseCreated,
        subject,
        body.get("created")
            .and_then(Value::as_u64)
            .is_some_and(|c| c > 0),
        "a positive integer created",
        || type_of(body.get("created")),
    );
}

fn usage_rules(
    (prompt, completion, total): (u64, u64, u64),
    length_finish: bool,
    request: &GenerationRequest,
    profile: &Profile,
    subject: &str,
    checks: &mut Checks,
) {
    checks.expect(
        Rule::UsageArithmetic,
        subject,
        prompt + completion == total,
        format!(
            "prompt_tokens + completion_tokens == total_tokens ({prompt} + {completion} = {})",
            prompt + completion
        ),
        || format!("total_tokens {total}"),
    );
    // Without max_tokens the bound is the context, judged by the probe that knows it.
    let Some(max_tokens) = request.max_tokens else {
        return;
    };
    checks.expect(
        Rule::UsageMaxTokens,
        subject,
        completion <= max_tokens,
        format!("completion_tokens <= max_tokens {max_tokens}"),
        || format!("completion_tokens {completion}"),
    );
    if length_finish {
        let floor = max_tokens.saturating_sub(profile.length_shortfall);
        checks.expect(
            Rule::UsageLengthFinish,
            subject,
            completion >= floor,
            format!(
                "finish_reason \"length\" after at least {floor} tokens (max_tokens {max_tokens}, profile {})",
                profile.name
            ),
            || format!("completion_tokens {completion}"),
        );
    }
}

/// A streamed `POST /v1/completions` or `/v1/chat/completions`.
pub fn stream(
    capture: &StreamCapture,
    request: &GenerationRequest,
    profile: &Profile,
    checks: &mut Checks,
) {
    let subject = &capture.request_line;
    if !checks.expect(
        Rule::StreamStatus,
        subject,
        capture.status == 200,
        "200",
        || status_line(capture.status, capture.error_body.as_deref().unwrap_or("")),
    ) {
        return;
    }
    checks.expect(
        Rule::StreamContentType,
        subject,
        is_json(capture.content_type.as_deref(), "text/event-stream"),
        "Content-Type text/event-stream",
        || type_of(capture.content_type.clone().map(Value::String).as_ref()),
    );
    match &capture.end {
        StreamEnd::Closed | StreamEnd::OpenAfterDone => {
            checks.pass(Rule::StreamTerminated, subject)
        }
        StreamEnd::Idle(idle) => checks.fail(
            Rule::StreamTerminated,
            subject,
            format!("an event at least every {idle:?}"),
            format!("silence for {idle:?} after {}", capture.last_seen()),
        ),
        StreamEnd::Deadline(deadline) => checks.fail(
            Rule::StreamTerminated,
            subject,
            format!("the stream complete within {deadline:?}"),
            format!("still open at the deadline after {}", capture.last_seen()),
        ),
        StreamEnd::Broken(reason) => checks.fail(
            Rule::StreamTerminated,
            subject,
            "a stream that ends cleanly",
            format!("{reason} after {}", capture.last_seen()),
        ),
    }
    error_events(capture, subject, checks);
    framing(capture, subject, checks);

    let done_at: Vec<usize> = capture
        .events
        .iter()
        .enumerate()
        .filter(|(_, e)| e.data.trim() == "[DONE]")
        .map(|(i, _)| i)
        .collect();
    let last = capture.events.len().checked_sub(1);
    checks.expect(
        Rule::StreamDone,
        subject,
        done_at.len() == 1 && done_at.first().copied() == last,
        "exactly one [DONE], as the last event",
        || match done_at.as_slice() {
            [] => format!("no [DONE] in {} events", capture.events.len()),
            [one] => format!("[DONE] at event {} of {}", one + 1, capture.events.len()),
            many => format!("{} [DONE] events", many.len()),
        },
    );

    let mut chunks: Vec<Map<String, Value>> = Vec::new();
    let mut unparsable: Vec<String> = Vec::new();
    for (i, event) in capture.events.iter().enumerate() {
        if event.data.trim() == "[DONE]" || event.event == "error" {
            continue;
        }
        match serde_json::from_str::<Value>(&event.data) {
            Ok(Value::Object(chunk)) if chunk.contains_key("error") => {}
            Ok(Value::Object(chunk)) => chunks.push(chunk),
            _ => unparsable.push(format!("event {}: {}", i + 1, excerpt(&event.data, 80))),
        }
    }
    checks.expect(
        Rule::StreamEventJson,
        subject,
        unparsable.is_empty() && !chunks.is_empty(),
        "every data event a JSON object, at least one",
        || {
            if unparsable.is_empty() {
                "no JSON event".to_string()
            } else {
                unparsable.join("; ")
            }
        },
    );
    if chunks.is_empty() {
        return;
    }
    chunk_envelopes(&chunks, request, subject, checks);

    let is_usage_only = |c: &Map<String, Value>| {
        c.get("choices")
            .and_then(Value::as_array)
            .is_some_and(Vec::is_empty)
    };
    let choice_chunks: Vec<&Map<String, Value>> =
        chunks.iter().filter(|c| !is_usage_only(c)).collect();
    let first_choices = |c: &Map<String, Value>| {
        c.get("choices")
            .and_then(Value::as_array)
            .and_then(|a| a.first())
            .cloned()
    };
    // Each choice (by index) ends once: its finish_reason is null until its own last chunk.
    let mut by_index: std::collections::BTreeMap<u64, Vec<(usize, Option<String>)>> =
        Default::default();
    for (i, chunk) in choice_chunks.iter().enumerate() {
        for choice in chunk
            .get("choices")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let index = choice.get("index").and_then(Value::as_u64).unwrap_or(0);
            let reason = choice
                .get("finish_reason")
                .and_then(Value::as_str)
                .map(str::to_string);
            by_index.entry(index).or_default().push((i + 1, reason));
        }
    }
    let omitted: Vec<usize> = choice_chunks
        .iter()
        .enumerate()
        .filter(|(_, c)| {
            c.get("choices")
                .and_then(Value::as_array)
                .is_some_and(|a| a.iter().any(|ch| ch.get("finish_reason").is_none()))
        })
        .map(|(i, _)| i + 1)
        .collect();
    let mut early: Vec<usize> = Vec::new();
    let mut last_reasons: Vec<Option<String>> = Vec::new();
    for reasons in by_index.values() {
        let (last, earlier) = reasons.split_last().expect("an index has a chunk");
        early.extend(earlier.iter().filter(|(_, r)| r.is_some()).map(|(n, _)| *n));
        last_reasons.push(last.1.clone());
    }
    early.sort_unstable();
    if last_reasons.is_empty() {
        last_reasons.push(None);
    }
    let last_reason = last_reasons[0].clone();
    let unfinished = last_reasons
        .iter()
        .find(|r| !r.as_deref().is_some_and(|r| FINISH_REASONS.contains(&r)))
        .cloned();
    let keys_kept = omitted.is_empty() || profile.may_omit_finish_reason;
    checks.expect(
        Rule::StreamFinishReason,
        subject,
        keys_kept && early.is_empty() && unfinished.is_none(),
        format!(
            "finish_reason {} until the last choice chunk, then one of {FINISH_REASONS:?} (profile {})",
            if profile.may_omit_finish_reason {
                "null or absent"
            } else {
                "present and null"
            },
            profile.name
        ),
        || {
            if !keys_kept {
                format!(
                    "the finish_reason key left out of choice chunk(s) {}",
                    numbers(&omitted)
                )
            } else if early.is_empty() {
                format!("last choice chunk's finish_reason {:?}", unfinished.flatten())
            } else {
                format!(
                    "finish_reason already set in choice chunk(s) {}",
                    numbers(&early)
                )
            }
        },
    );
    let text: String = choice_chunks
        .iter()
        .filter_map(|c| first_choices(c))
        .filter_map(|ch| choice_text(&ch, request.kind, true).map(str::to_string))
        .collect();
    checks.expect(
        Rule::StreamText,
        subject,
        !text.is_empty() || (request.stop.is_some() && last_reason.as_deref() == Some("stop")),
        "non-empty assembled text",
        || format!("empty text over {} choice chunks", choice_chunks.len()),
    );

    if request.n > 1 {
        streamed_choices(&choice_chunks, request, subject, checks);
    }
    let final_usage = stream_usage(&chunks, request, profile, subject, checks);
    let length_finish = last_reason.as_deref() == Some("length");
    // Tokens of the first choice: with n above 1 every index has its own chunks.
    let text_chunks = choice_chunks
        .iter()
        .filter_map(|c| first_choices(c))
        .filter(|ch| ch.get("index").and_then(Value::as_u64).unwrap_or(0) == 0)
        .filter(|ch| choice_text(ch, request.kind, true).is_some_and(|t| !t.is_empty()))
        .count() as u64;
    let Some(max_tokens) = request.max_tokens else {
        return;
    };
    match final_usage {
        Some((_, completion, _)) => {
            let floor = if length_finish {
                max_tokens.saturating_sub(profile.length_shortfall)
            } else {
                0
            };
            checks.expect(
                Rule::StreamMaxTokens,
                subject,
                completion <= max_tokens && completion >= floor,
                format!(
                    "completion_tokens <= max_tokens {max_tokens}{}",
                    if length_finish {
                        format!(" and >= {floor} for a length finish")
                    } else {
                        String::new()
                    }
                ),
                || format!("completion_tokens {completion}"),
            );
        }
        None => {
            checks.expect(
                Rule::StreamMaxTokens,
                subject,
                text_chunks <= max_tokens,
                format!("at most max_tokens {max_tokens} text chunks"),
                || format!("{text_chunks} text chunks"),
            );
        }
    }
}

/// The error events of a stream, from its raw framing (so an `event: error` with no data, which
/// parsers drop, is seen) and from data events whose JSON carries a top-level `error`.
pub fn stream_errors(capture: &StreamCapture) -> Vec<String> {
    let mut errors = Vec::new();
    let raw = sse::frames(&capture.raw);
    for frame in &raw {
        if frame.event() == Some("error") {
            errors.push(if frame.has_data() {
                format!(
                    "event: error at line {}: {}",
                    frame.line,
                    excerpt(&frame.data(), 120)
                )
            } else {
                format!("event: error at line {} (no data)", frame.line)
            });
        }
    }
    let data_events: Vec<String> = if raw.is_empty() {
        capture.events.iter().map(|e| e.data.clone()).collect()
    } else {
        raw.iter()
            .filter(|f| f.has_data() && f.event() != Some("error"))
            .map(|f| f.data())
            .collect()
    };
    for (i, data) in data_events.iter().enumerate() {
        if let Ok(Value::Object(json)) = serde_json::from_str::<Value>(data)
            && let Some(error) = json.get("error")
        {
            errors.push(format!(
                "data event {} carrying an error: {}",
                i + 1,
                excerpt(&error.to_string(), 120)
            ));
        }
    }
    if raw.is_empty() {
        errors.extend(
            capture
                .events
                .iter()
                .filter(|e| e.event == "error")
                .map(|e| format!("event: error: {}", excerpt(&e.data, 120))),
        );
    }
    errors
}

fn error_events(capture: &StreamCapture, subject: &str, checks: &mut Checks) {
    let errors = stream_errors(capture);
    checks.expect(
        Rule::StreamErrorEvent,
        subject,
        errors.is_empty(),
        "no error event (event: error, or a data event carrying an error)",
        || format!("an error event arrived: {}", errors.join("; ")),
    );
}

/// What is on the wire that an SSE parser would not deliver, or would deliver after `[DONE]`.
fn framing(capture: &StreamCapture, subject: &str, checks: &mut Checks) {
    let raw = sse::frames(&capture.raw);
    if raw.is_empty() {
        return;
    }
    let mut problems = Vec::new();
    let mut done_seen = false;
    for frame in &raw {
        if done_seen {
            problems.push(format!(
                "a block after [DONE] at line {}: {}",
                frame.line,
                excerpt(&frame.data(), 60)
            ));
        }
        for (name, _) in &frame.fields {
            if !sse::KNOWN_FIELDS.contains(&name.as_str()) {
                problems.push(format!(
                    "unknown field {name:?} at line {}, which parsers ignore",
                    frame.line
                ));
            }
        }
        if !frame.has_data() {
            problems.push(format!(
                "a block with no data at line {} ({}), which parsers drop unseen",
                frame.line,
                frame
                    .fields
                    .iter()
                    .map(|(n, v)| format!("{n}: {}", excerpt(v, 40)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        done_seen |= frame.data().trim() == "[DONE]";
    }
    checks.expect(
        Rule::StreamFraming,
        subject,
        problems.is_empty(),
        "every block on the wire an event parsers deliver: data, event, id or retry fields, nothing after [DONE]",
        || problems.iter().take(3).cloned().collect::<Vec<_>>().join("; "),
    );
}

/// `n` choices in a stream: every index 0..n-1 appears, and each ends with a `finish_reason`.
fn streamed_choices(
    chunks: &[&Map<String, Value>],
    request: &GenerationRequest,
    subject: &str,
    checks: &mut Checks,
) {
    let mut seen = std::collections::BTreeSet::new();
    let mut finished = std::collections::BTreeSet::new();
    for choice in chunks
        .iter()
        .filter_map(|c| c.get("choices").and_then(Value::as_array))
        .flatten()
    {
        if let Some(index) = choice.get("index").and_then(Value::as_u64) {
            seen.insert(index);
            if choice.get("finish_reason").is_some_and(|f| !f.is_null()) {
                finished.insert(index);
            }
        }
    }
    let wanted: std::collections::BTreeSet<u64> = (0..request.n).collect();
    checks.expect(
        Rule::ChoicesN,
        subject,
        seen == wanted && finished == wanted,
        format!(
            "choices indexed 0..{} (n {}), each ending with a finish_reason",
            request.n - 1,
            request.n
        ),
        || format!("indexes {seen:?}, finished {finished:?}"),
    );
}

/// Checks each chunk's `id`, `object` and `model`; one check per rule for the whole stream.
fn chunk_envelopes(
    chunks: &[Map<String, Value>],
    request: &GenerationRequest,
    subject: &str,
    checks: &mut Checks,
) {
    let ids: Vec<Option<&str>> = chunks
        .iter()
        .map(|c| c.get("id").and_then(Value::as_str))
        .collect();
    let first = ids[0];
    checks.expect(
        Rule::StreamId,
        subject,
        first.is_some_and(|id| !id.is_empty()) && ids.iter().all(|id| *id == first),
        "one non-empty id in every chunk",
        || {
            let mut distinct: Vec<String> = ids.iter().map(|id| format!("{id:?}")).collect();
            distinct.dedup();
            format!("ids {}", distinct.join(", "))
        },
    );
    let object = request.kind.chunk_object();
    let wrong_object: Vec<String> = chunks
        .iter()
        .filter(|c| c.get("object").and_then(Value::as_str) != Some(object))
        .map(|c| type_of(c.get("object")))
        .collect();
    checks.expect(
        Rule::StreamObject,
        subject,
        wrong_object.is_empty(),
        format!("object {object:?} in every chunk"),
        || {
            format!(
                "{} chunk(s) with object {}",
                wrong_object.len(),
                wrong_object[0]
            )
        },
    );
    let wrong_model: Vec<String> = chunks
        .iter()
        .filter(|c| c.get("model").and_then(Value::as_str) != Some(request.model.as_str()))
        .map(|c| type_of(c.get("model")))
        .collect();
    checks.expect(
        Rule::StreamModel,
        subject,
        wrong_model.is_empty(),
        format!("model {:?} in every chunk", request.model),
        || {
            format!(
                "{} chunk(s) with model {}",
                wrong_model.len(),
                wrong_model[0]
            )
        },
    );
}

fn reported(chunk: &Map<String, Value>) -> Option<&Value> {
    chunk.get("usage").filter(|u| !u.is_null())
}

/// Checks usage as the profile promises it; returns the final counts, if any were reported.
fn stream_usage(
    chunks: &[Map<String, Value>],
    request: &GenerationRequest,
    profile: &Profile,
    subject: &str,
    checks: &mut Checks,
) -> Option<(u64, u64, u64)> {
    let usage_only = |c: &Map<String, Value>| {
        c.get("choices")
            .and_then(Value::as_array)
            .is_some_and(Vec::is_empty)
    };
    match profile.stream_usage {
        StreamUsage::RunningInEveryChunk => {
            let mut problems = Vec::new();
            let mut previous = 0;
            let mut last = None;
            for (i, chunk) in chunks.iter().enumerate() {
                match usage_counts(reported(chunk)) {
                    None => problems.push(format!(
                        "chunk {} usage {}",
                        i + 1,
                        type_of(chunk.get("usage"))
                    )),
                    Some((p, c, t)) => {
                        if p + c != t {
                            problems.push(format!("chunk {}: {p} + {c} != {t}", i + 1));
                        }
                        if c < previous {
                            problems.push(format!(
                                "chunk {}: completion_tokens fell from {previous} to {c}",
                                i + 1
                            ));
                        }
                        previous = c;
                        last = Some((p, c, t));
                    }
                }
            }
            checks.expect(
                Rule::StreamUsage,
                subject,
                problems.is_empty(),
                format!(
                    "a running usage in every chunk, adding up and never falling (profile {})",
                    profile.name
                ),
                || {
                    problems
                        .iter()
                        .take(3)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join("; ")
                },
            );
            last
        }
        StreamUsage::FinalChunkWhenAsked => {
            let (tail, body) = chunks.split_last().expect("at least one chunk");
            let early: Vec<usize> = body
                .iter()
                .enumerate()
                .filter(|(_, c)| reported(c).is_some() || usage_only(c))
                .map(|(i, _)| i + 1)
                .collect();
            if request.include_usage {
                let final_counts = usage_only(tail)
                    .then(|| usage_counts(reported(tail)))
                    .flatten();
                let adds_up = final_counts.is_some_and(|(p, c, t)| p + c == t);
                checks.expect(
                    Rule::StreamUsage,
                    subject,
                    early.is_empty() && adds_up,
                    format!(
                        "usage null in every choice chunk, then one final chunk with choices [] and usage adding up (profile {})",
                        profile.name
                    ),
                    || {
                        if early.is_empty() {
                            format!("last chunk: {}", excerpt(&Value::Object(tail.clone()).to_string(), 160))
                        } else {
                            format!("usage or an empty choices array already in chunk(s) {}", numbers(&early))
                        }
                    },
                );
                final_counts
            } else {
                let with_usage: Vec<usize> = chunks
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| reported(c).is_some())
                    .map(|(i, _)| i + 1)
                    .collect();
                let final_only = with_usage == [chunks.len()] && usage_only(tail);
                if final_only {
                    checks.pass_noting(
                        Rule::StreamUsage,
                        subject,
                        "a final usage chunk came though include_usage was not asked: a server option in Dynamo and vLLM",
                    );
                    return usage_counts(reported(tail));
                }
                checks.expect(
                    Rule::StreamUsage,
                    subject,
                    with_usage.is_empty(),
                    format!(
                        "no usage when stream_options.include_usage is not asked, or only in one final chunk with choices [] (profile {})",
                        profile.name
                    ),
                    || format!("usage in chunk(s) {}", numbers(&with_usage)),
                );
                None
            }
        }
    }
}

/// A request the endpoint must reject: a 4xx with an error body of the shape `shape`.
pub fn rejected(capture: &HttpCapture, shape: ErrorBody, profile: &Profile, checks: &mut Checks) {
    rejection(
        &capture.request_line,
        capture.status,
        &capture.body,
        shape,
        profile,
        checks,
    );
}

/// The streamed twin of a rejected request: rejected before any stream starts, with the status
/// its unstreamed twin got (`unstreamed`, when that was a 4xx), and an error body of `shape`.
pub fn rejected_stream(
    capture: &StreamCapture,
    unstreamed: Option<u16>,
    shape: ErrorBody,
    profile: &Profile,
    checks: &mut Checks,
) {
    let subject = &capture.request_line;
    if capture.status == 200 {
        let errors = stream_errors(capture);
        let what = if errors.is_empty() {
            format!(
                "200 and a stream of {} events: {}",
                capture.events.len(),
                capture.last_seen()
            )
        } else {
            format!(
                "200 and a stream whose error event came instead: {}",
                errors.join("; ")
            )
        };
        checks.fail(
            Rule::ErrorStatus,
            subject,
            "a 4xx before the stream starts, as unstreamed",
            what,
        );
        return;
    }
    let body = capture.error_body.as_deref().unwrap_or("");
    if let Some(twin) = unstreamed.filter(|s| (400..500).contains(s))
        && twin != capture.status
    {
        checks.fail(
            Rule::ErrorStatus,
            subject,
            format!("{twin}, the status the same request got unstreamed"),
            status_line(capture.status, body),
        );
        return;
    }
    rejection(subject, capture.status, body, shape, profile, checks);
}

/// `n` above 1 answered with a 4xx: the release says it does not support `n`, which OpenAI's
/// contract allows; it holds when the answer carries a known error body.
pub fn n_rejected(subject: &str, status: u16, body: &str, checks: &mut Checks) {
    match error_shape(body) {
        Some(shape) => checks.pass_noting(
            Rule::ChoicesN,
            subject,
            format!("n > 1 rejected with {status} and {}", shape_name(shape)),
        ),
        None => checks.fail(
            Rule::ChoicesN,
            subject,
            "n choices, or a 4xx with an error body saying n is unsupported",
            status_line(status, body),
        ),
    }
}

/// Which known error shape `body` has, if any.
pub fn error_shape(body: &str) -> Option<ErrorBody> {
    let text = |v: Option<&Value>| v.and_then(Value::as_str).is_some_and(|s| !s.is_empty());
    match serde_json::from_str::<Value>(body) {
        Ok(Value::Object(json)) => match json.get("error") {
            Some(Value::Object(inner)) if text(inner.get("message")) => {
                Some(ErrorBody::OpenAiEnvelope)
            }
            Some(Value::String(s)) if !s.is_empty() => Some(ErrorBody::ErrorString),
            _ if text(json.get("message")) => Some(ErrorBody::FlatMessage),
            _ => None,
        },
        Ok(_) => None,
        Err(_) => (!body.trim().is_empty()).then_some(ErrorBody::PlainText),
    }
}

fn shape_name(shape: ErrorBody) -> &'static str {
    match shape {
        ErrorBody::OpenAiEnvelope => r#"OpenAI's {"error": {"message", "type", "param", "code"}}"#,
        ErrorBody::AnyKnown => "any known error body",
        ErrorBody::ErrorString => r#"{"error": "<message>"}"#,
        ErrorBody::FlatMessage => r#"{"message": "<message>", "type": ..., "code": ...}"#,
        ErrorBody::PlainText => "a plain-text message",
    }
}

/// The envelope's fields beyond the message, as OpenAI's contract lists them.
fn envelope_gaps(body: &str) -> Vec<&'static str> {
    let json: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let inner = json.get("error");
    let mut gaps = Vec::new();
    if inner
        .and_then(|e| e.get("type"))
        .and_then(Value::as_str)
        .is_none()
    {
        gaps.push("a string type");
    }
    for key in ["param", "code"] {
        if inner.and_then(|e| e.get(key)).is_none() {
            gaps.push(if key == "param" {
                "a param key"
            } else {
                "a code key"
            });
        }
    }
    gaps
}

fn rejection(
    subject: &str,
    status: u16,
    body: &str,
    shape: ErrorBody,
    profile: &Profile,
    checks: &mut Checks,
) {
    if !checks.expect(
        Rule::ErrorStatus,
        subject,
        (400..500).contains(&status),
        "a 4xx status",
        || status_line(status, body),
    ) {
        return;
    }
    let seen = error_shape(body);
    let expected = format!(
        "an error body {} (profile {})",
        shape_name(shape),
        profile.name
    );
    match (shape, seen) {
        (ErrorBody::AnyKnown, Some(seen)) => checks.pass_noting(
            Rule::ErrorBody,
            subject,
            format!("saw {}", shape_name(seen)),
        ),
        (ErrorBody::OpenAiEnvelope, Some(ErrorBody::OpenAiEnvelope)) => {
            let gaps = envelope_gaps(body);
            checks.expect(Rule::ErrorBody, subject, gaps.is_empty(), expected, || {
                format!(
                    "an envelope without {}: {}",
                    gaps.join(", "),
                    excerpt(body, SHOW)
                )
            });
        }
        (wanted, Some(seen)) if wanted == seen => checks.pass(Rule::ErrorBody, subject),
        _ => checks.fail(Rule::ErrorBody, subject, expected, excerpt(body, SHOW)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openai::sse::SseEvent;
    use rstest::rstest;
    use std::time::Duration;

    const MODEL: &str = "Qwen/Qwen3-0.6B";

    fn http(status: u16, content_type: &str, body: &str) -> HttpCapture {
        HttpCapture {
            request_line: "POST /v1/completions".into(),
            status,
            content_type: Some(content_type.into()),
            body: body.into(),
        }
    }

    fn judged(f: impl FnOnce(&mut Checks)) -> Vec<&'static str> {
        let mut checks = Checks::default();
        f(&mut checks);
        checks.violated_rules().into_iter().map(Rule::id).collect()
    }

    const GOOD_COMPLETION: &str = r#"{"id":"cmpl-1","object":"text_completion","created":1755169608,"model":"Qwen/Qwen3-0.6B",
        "choices":[{"index":0,"text":"hello","finish_reason":"stop","logprobs":null}],
        "usage":{"prompt_tokens":5,"completion_tokens":3,"total_tokens":8}}"#;

    #[rstest]
    #[case::conforming(200, "application/json", GOOD_COMPLETION, &[])]
    #[case::charset_is_fine(200, "application/json; charset=utf-8", GOOD_COMPLETION, &[])]
    #[case::server_error(500, "application/json", r#"{"error":"boom"}"#, &["response.status"])]
    #[case::plain_text(200, "text/plain", GOOD_COMPLETION, &["response.content_type"])]
    #[case::not_json(200, "application/json", "<html>", &["response.json"])]
    #[case::no_id(200, "application/json", &GOOD_COMPLETION.replace(r#""id":"cmpl-1","#, ""), &["response.id"])]
    #[case::wrong_object(200, "application/json", &GOOD_COMPLETION.replace("text_completion", "chat.completion"), &["response.object"])]
    #[case::other_model(200, "application/json", &GOOD_COMPLETION.replace(r#""model":"Qwen/Qwen3-0.6B""#, r#""model":"x""#), &["response.model"])]
    #[case::no_created(200, "application/json", &GOOD_COMPLETION.replace("1755169608", "null"), &["response.created"])]
    #[case::no_choices(200, "application/json", &GOOD_COMPLETION.replace(r#""choices":[{"index":0,"text":"hello","finish_reason":"stop","logprobs":null}]"#, r#""choices":[]"#), &["response.choices"])]
    #[case::odd_finish(200, "application/json", &GOOD_COMPLETION.replace(r#""stop""#, r#""done""#), &["response.finish_reason"])]
    #[case::null_finish(200, "application/json", &GOOD_COMPLETION.replace(r#""stop""#, "null"), &["response.finish_reason"])]
    #[case::empty_text(200, "application/json", &GOOD_COMPLETION.replace(r#""hello""#, r#""""#), &["response.text"])]
    #[case::no_usage(200, "application/json", &GOOD_COMPLETION.replace(r#""prompt_tokens":5,"#, ""), &["usage.present"])]
    #[case::bad_sum(200, "application/json", &GOOD_COMPLETION.replace(r#""total_tokens":8"#, r#""total_tokens":9"#), &["usage.arithmetic"])]
    #[case::over_max(200, "application/json", &GOOD_COMPLETION.replace(r#""completion_tokens":3,"total_tokens":8"#, r#""completion_tokens":11,"total_tokens":16"#), &["usage.max_tokens"])]
    #[case::short_length(200, "application/json", &GOOD_COMPLETION.replace(r#""stop""#, r#""length""#), &["usage.length_finish"])]
    fn non_streamed_completions(
        #[case] status: u16,
        #[case] content_type: &str,
        #[case] body: &str,
        #[case] violated: &[&str],
    ) {
        let request = GenerationRequest::new(ApiKind::Completions, MODEL, 10);
        let capture = http(status, content_type, body);
        assert_eq!(
            judged(|c| response(&capture, &request, &Profile::V1, c)),
            violated
        );
    }

    #[rstest]
    #[case::exact_under_1x(&Profile::V1, 10, &[])]
    #[case::one_short_under_1x(&Profile::V1, 9, &["usage.length_finish"])]
    #[case::one_short_under_0_4(&Profile::V0_4, 9, &[])]
    #[case::two_short_under_0_4(&Profile::V0_4, 8, &["usage.length_finish"])]
    fn the_length_shortfall_is_per_profile(
        #[case] profile: &Profile,
        #[case] produced: u64,
        #[case] violated: &[&str],
    ) {
        let body = GOOD_COMPLETION.replace(r#""stop""#, r#""length""#).replace(
            r#""completion_tokens":3,"total_tokens":8"#,
            &format!(
                r#""completion_tokens":{produced},"total_tokens":{}"#,
                produced + 5
            ),
        );
        let request = GenerationRequest::new(ApiKind::Completions, MODEL, 10);
        assert_eq!(
            judged(|c| response(&http(200, "application/json", &body), &request, profile, c)),
            violated
        );
    }

    #[rstest]
    #[case::conforming(r#"{"role":"assistant","content":"hi"}"#, &[])]
    #[case::wrong_role(r#"{"role":"user","content":"hi"}"#, &["response.text"])]
    #[case::null_content(r#"{"role":"assistant","content":null}"#, &["response.text"])]
    fn non_streamed_chat(#[case] message: &str, #[case] violated: &[&str]) {
        let body = format!(
            r#"{{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"{MODEL}","choices":[{{"index":0,"message":{message},"finish_reason":"stop"}}],"usage":{{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}}}"#
        );
        let request = GenerationRequest::new(ApiKind::Chat, MODEL, 10);
        assert_eq!(
            judged(|c| response(
                &http(200, "application/json", &body),
                &request,
                &Profile::V1,
                c
            )),
            violated
        );
    }

    fn chunk(id: &str, text: &str, finish: Option<&str>, usage: Option<(u64, u64)>) -> String {
        let usage = usage.map_or("null".to_string(), |(p, c)| {
            format!(
                r#"{{"prompt_tokens":{p},"completion_tokens":{c},"total_tokens":{}}}"#,
                p + c
            )
        });
        let finish = finish.map_or("null".to_string(), |f| format!("{f:?}"));
        format!(
            r#"{{"id":"{id}","object":"text_completion","created":1,"model":"{MODEL}","choices":[{{"index":0,"text":"{text}","finish_reason":{finish}}}],"usage":{usage}}}"#
        )
    }

    fn usage_chunk(p: u64, c: u64) -> String {
        format!(
            r#"{{"id":"a","object":"text_completion","created":1,"model":"{MODEL}","choices":[],"usage":{{"prompt_tokens":{p},"completion_tokens":{c},"total_tokens":{}}}}}"#,
            p + c
        )
    }

    fn stream_of(data: &[String], end: StreamEnd) -> StreamCapture {
        StreamCapture {
            request_line: "POST /v1/completions (stream)".into(),
            status: 200,
            content_type: Some("text/event-stream".into()),
            events: data
                .iter()
                .enumerate()
                .map(|(i, d)| SseEvent {
                    event: "message".into(),
                    data: d.clone(),
                    at: Duration::from_millis(i as u64),
                })
                .collect(),
            end,
            error_body: None,
            raw: data.iter().map(|d| format!("data: {d}\n\n")).collect(),
            invalid_utf8_at: None,
        }
    }

    fn v1_stream() -> Vec<String> {
        vec![
            chunk("a", "he", None, None),
            chunk("a", "llo", Some("stop"), None),
            "[DONE]".into(),
        ]
    }

    #[rstest]
    #[case::conforming(v1_stream(), StreamEnd::Closed, &[])]
    #[case::open_after_done_is_fine(v1_stream(), StreamEnd::OpenAfterDone, &[])]
    #[case::no_done(v1_stream()[..2].to_vec(), StreamEnd::Closed, &["stream.done"])]
    #[case::two_done({ let mut s = v1_stream(); s.push("[DONE]".into()); s }, StreamEnd::Closed, &["stream.done", "stream.framing"])]
    #[case::data_after_done({ let mut s = v1_stream(); s.push(chunk("a", "x", None, None)); s }, StreamEnd::Closed, &["stream.done", "stream.finish_reason", "stream.framing"])]
    #[case::bad_json(vec![chunk("a", "he", None, None), "{oops".into(), chunk("a", "llo", Some("stop"), None), "[DONE]".into()], StreamEnd::Closed, &["stream.event_json"])]
    #[case::id_changes(vec![chunk("a", "he", None, None), chunk("b", "llo", Some("stop"), None), "[DONE]".into()], StreamEnd::Closed, &["stream.id"])]
    #[case::early_finish(vec![chunk("a", "he", Some("stop"), None), chunk("a", "llo", Some("stop"), None), "[DONE]".into()], StreamEnd::Closed, &["stream.finish_reason"])]
    #[case::no_finish(vec![chunk("a", "he", None, None), chunk("a", "llo", None, None), "[DONE]".into()], StreamEnd::Closed, &["stream.finish_reason"])]
    #[case::empty_text(vec![chunk("a", "", None, None), chunk("a", "", Some("stop"), None), "[DONE]".into()], StreamEnd::Closed, &["stream.text"])]
    #[case::usage_unasked(vec![chunk("a", "he", None, Some((3, 1))), chunk("a", "llo", Some("stop"), Some((3, 2))), "[DONE]".into()], StreamEnd::Closed, &["stream.usage"])]
    #[case::stalled(v1_stream()[..1].to_vec(), StreamEnd::Idle(Duration::from_secs(30)), &["stream.done", "stream.finish_reason", "stream.terminated"])]
    #[case::deadline(v1_stream()[..1].to_vec(), StreamEnd::Deadline(Duration::from_secs(180)), &["stream.done", "stream.finish_reason", "stream.terminated"])]
    #[case::broken(v1_stream()[..1].to_vec(), StreamEnd::Broken("connection reset".into()), &["stream.done", "stream.finish_reason", "stream.terminated"])]
    fn streamed_completions_under_1x(
        #[case] data: Vec<String>,
        #[case] end: StreamEnd,
        #[case] violated: &[&str],
    ) {
        let request = GenerationRequest::new(ApiKind::Completions, MODEL, 10).streamed();
        let mut expected: Vec<&str> = violated.to_vec();
        expected.sort();
        let mut got = judged(|c| stream(&stream_of(&data, end), &request, &Profile::V1, c));
        got.sort();
        assert_eq!(got, expected);
    }

    #[rstest]
    #[case::final_usage_chunk(vec![chunk("a", "he", None, None), chunk("a", "llo", Some("length"), None), usage_chunk(3, 2), "[DONE]".into()], &[])]
    #[case::missing_usage_chunk(v1_stream(), &["stream.usage"])]
    #[case::usage_in_every_chunk(vec![chunk("a", "he", None, Some((3, 1))), chunk("a", "llo", Some("length"), Some((3, 2))), usage_chunk(3, 2), "[DONE]".into()], &["stream.usage"])]
    #[case::over_max(vec![chunk("a", "he", None, None), chunk("a", "llo", Some("length"), None), usage_chunk(3, 3), "[DONE]".into()], &["stream.max_tokens"])]
    fn usage_chunk_when_asked_under_1x(#[case] data: Vec<String>, #[case] violated: &[&str]) {
        let request = GenerationRequest::new(ApiKind::Completions, MODEL, 2).with_usage();
        assert_eq!(
            judged(|c| stream(
                &stream_of(&data, StreamEnd::Closed),
                &request,
                &Profile::V1,
                c
            )),
            violated
        );
    }

    #[rstest]
    #[case::running(vec![chunk("a", "he", None, Some((3, 1))), chunk("a", "llo", Some("stop"), Some((3, 2))), "[DONE]".into()], &[])]
    #[case::missing(v1_stream(), &["stream.usage"])]
    #[case::falling(vec![chunk("a", "he", None, Some((3, 2))), chunk("a", "llo", Some("stop"), Some((3, 1))), "[DONE]".into()], &["stream.usage"])]
    fn running_usage_under_0_4(#[case] data: Vec<String>, #[case] violated: &[&str]) {
        let request = GenerationRequest::new(ApiKind::Completions, MODEL, 10).streamed();
        assert_eq!(
            judged(|c| stream(
                &stream_of(&data, StreamEnd::Closed),
                &request,
                &Profile::V0_4,
                c
            )),
            violated
        );
    }

    #[test]
    fn a_stall_names_what_came_last() {
        let request = GenerationRequest::new(ApiKind::Completions, MODEL, 10).streamed();
        let capture = stream_of(&v1_stream()[..1], StreamEnd::Idle(Duration::from_secs(30)));
        let mut checks = Checks::default();
        stream(&capture, &request, &Profile::V1, &mut checks);
        let stalled = checks
            .violations()
            .find(|c| c.rule == Rule::StreamTerminated)
            .unwrap();
        let observed = &stalled.violation.as_ref().unwrap().observed;
        assert!(
            observed.contains("silence for 30s after 1 events"),
            "{observed}"
        );
        assert!(observed.contains(r#""text":"he""#), "{observed}");
    }

    #[rstest]
    #[case::not_found_0_4(&Profile::V0_4, 404, r#"{"error":"Model not found"}"#, &[])]
    #[case::flat_1x(&Profile::V1, 404, r#"{"message":"Model not found","type":"NotFound","code":404}"#, &[])]
    #[case::flat_under_0_4(&Profile::V0_4, 404, r#"{"message":"Model not found"}"#, &["error.body"])]
    #[case::accepted(&Profile::V1, 200, GOOD_COMPLETION, &["error.status"])]
    #[case::server_error(&Profile::V1, 500, r#"{"message":"boom"}"#, &["error.status"])]
    #[case::plain_text(&Profile::V1, 404, "bad request", &["error.body"])]
    fn rejections(
        #[case] profile: &Profile,
        #[case] status: u16,
        #[case] body: &str,
        #[case] violated: &[&str],
    ) {
        let capture = http(status, "application/json", body);
        assert_eq!(
            judged(|c| rejected(&capture, profile.unknown_model_error, profile, c)),
            violated
        );
    }

    #[rstest]
    #[case::plain_text_under_0_4(&Profile::V0_4, 422, "Failed to deserialize the JSON body", &[])]
    #[case::json_under_0_4(&Profile::V0_4, 400, r#"{"error":"bad"}"#, &["error.body"])]
    #[case::empty_under_0_4(&Profile::V0_4, 400, "", &["error.body"])]
    #[case::flat_under_1x(&Profile::V1, 400, r#"{"message":"missing field `prompt`","type":"Bad Request","code":400}"#, &[])]
    #[case::plain_under_1x(&Profile::V1, 400, "missing field", &["error.body"])]
    fn malformed_rejections(
        #[case] profile: &Profile,
        #[case] status: u16,
        #[case] body: &str,
        #[case] violated: &[&str],
    ) {
        let capture = http(status, "text/plain", body);
        assert_eq!(
            judged(|c| rejected(&capture, profile.malformed_error, profile, c)),
            violated
        );
    }

    const MODELS_0_4: &str = r#"{"object":"list","data":[{"id":"Qwen/Qwen3-0.6B","object":"object","created":1756908946,"owned_by":"nvidia"}]}"#;

    #[rstest]
    #[case::guide_output(&Profile::V0_4, MODELS_0_4, &[])]
    #[case::object_differs_in_1x(&Profile::V1, MODELS_0_4, &["models.entry"])]
    #[case::not_a_list(&Profile::V0_4, &MODELS_0_4.replace(r#""object":"list""#, r#""object":"catalog""#), &["models.list"])]
    #[case::model_absent(&Profile::V0_4, &MODELS_0_4.replace("Qwen/Qwen3-0.6B", "other"), &["models.lists_model"])]
    #[case::no_owner(&Profile::V0_4, &MODELS_0_4.replace(r#","owned_by":"nvidia""#, ""), &["models.entry"])]
    fn model_lists(#[case] profile: &Profile, #[case] body: &str, #[case] violated: &[&str]) {
        let capture = HttpCapture {
            request_line: "GET /v1/models".into(),
            ..http(200, "application/json", body)
        };
        assert_eq!(judged(|c| models(&capture, MODEL, profile, c)), violated);
    }

    #[rstest]
    #[case::healthy(200, r#"{"status":"healthy","endpoints":[]}"#, &[])]
    #[case::unhealthy(503, r#"{"status":"unhealthy"}"#, &["health.status"])]
    #[case::wrong_body(200, "OK", &["health.body"])]
    fn frontend_health_answers(#[case] status: u16, #[case] body: &str, #[case] violated: &[&str]) {
        assert_eq!(
            judged(|c| frontend_health(&http(status, "application/json", body), &Profile::V0_4, c)),
            violated
        );
    }

    #[rstest]
    #[case::ready(Rule::WorkerHealth, 200, r#"{"status":"ready","endpoints":{}}"#, &[])]
    #[case::notready(Rule::WorkerHealth, 503, r#"{"status":"notready"}"#, &["worker.health"])]
    #[case::live(Rule::WorkerLive, 200, r#"{"status":"live"}"#, &[])]
    #[case::dead(Rule::WorkerLive, 503, "", &["worker.live"])]
    fn worker_ports(
        #[case] rule: Rule,
        #[case] status: u16,
        #[case] body: &str,
        #[case] violated: &[&str],
    ) {
        assert_eq!(
            judged(|c| worker_probe(&http(status, "application/json", body), rule, c)),
            violated
        );
    }
}
