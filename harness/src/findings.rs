//! What real releases were seen to break, kept as data so a run tells a recorded finding from a new failure.
//!
//! A case that breaks exactly the rules its release's finding names reports `KNOWN` (the
//! release's fault, on record) instead of `FAIL`; one that breaks any other rule fails; one
//! that no longer breaks them fails too, so the table cannot go stale. Each entry was seen
//! running the release here through `dynamo up` and `api`, and through `run` (2026-11-30).

use crate::openai::Rule;
use crate::openai::probe::{Malformed, Withheld};
use crate::release::DynamoVersion;

/// One release's recorded break of one case's rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finding {
    /// The release, as PyPI spells it.
    pub release: &'static str,
    /// The case, e.g. `guide::api::n_choices`.
    pub case: &'static str,
    /// The rules it breaks there.
    pub rules: &'static [Rule],
    /// What was seen, one line.
    pub seen: &'static str,
    /// Requests not sent to this release under `run`, because they break the graph the later
    /// cases share; each is reported as a failed check naming this finding.
    pub withheld: &'static [Withheld],
}

/// What a stop sequence that breaks the graph breaks: the unstreamed answer (500), and the
/// streamed one (a 500, or a stream cut with no finish_reason and no `[DONE]`, at times before
/// its first event); seen on 0.4.1 and 1.0.2.
const STOP_SEQUENCE_BREAK: &[Rule] = &[
    Rule::ResponseStatus,
    Rule::StreamStatus,
    Rule::StreamTerminated,
    Rule::StreamDone,
    Rule::StreamEventJson,
    Rule::StreamFinishReason,
    Rule::StopSequence,
];

/// Every recorded finding.
pub const FINDINGS: &[Finding] = &[
    Finding {
        release: "0.4.1",
        case: "guide::api::max_tokens_one",
        rules: &[Rule::ResponseText, Rule::StreamText],
        seen: "max_tokens 1 answers an empty text, finish_reason \"length\" (0.4.1 stops one token short)",
        withheld: &[],
    },
    Finding {
        release: "0.4.1",
        case: "guide::api::n_choices",
        rules: &[Rule::ChoicesN],
        seen: "n 3 answers one choice (n is ignored)",
        withheld: &[],
    },
    Finding {
        release: "0.4.1",
        case: "guide::api::stop_sequence",
        rules: STOP_SEQUENCE_BREAK,
        seen: "once the stop string is generated, an unstreamed chat answers 500 (\"Failed to fold \
               chat completions stream: Stream ended before generation completed\"), a streamed \
               one is cut (no finish_reason, no [DONE], at times before its first event), and on \
               Kubernetes the frontend then answers every request 500 \"instance_id=… not \
               found\"; the stopped requests are withheld under run",
        withheld: &[Withheld::StopSequence],
    },
    Finding {
        release: "0.4.1",
        case: "guide::api::no_max_tokens",
        rules: &[Rule::MaxTokensOptional],
        seen: "a chat without max_tokens answers 500",
        withheld: &[],
    },
    Finding {
        release: "0.4.1",
        case: "guide::api::invalid_parameters_rejected",
        rules: &[Rule::ErrorStatus, Rule::ErrorBody],
        seen: "max_tokens 0 panics the mocker (\"reached max_output_tokens limit\") and wedges \
               the graph; max_tokens 10^9 gets no answer within 30 s; both withheld under run",
        withheld: &[
            Withheld::Rejection(Malformed::ZeroMaxTokens),
            Withheld::Rejection(Malformed::AboveContextMaxTokens),
        ],
    },
    Finding {
        release: "1.6.1",
        case: "guide::api::no_max_tokens",
        rules: &[Rule::StreamErrorEvent, Rule::StreamEventJson],
        seen: "a streamed chat without max_tokens is answered 200, then a data event carrying the \
               engine's 400 (\"max_tokens is required by the mocker worker\"); unstreamed it is \
               a 400 before any answer",
        withheld: &[],
    },
    Finding {
        release: "1.6.1",
        case: "guide::api::n_choices",
        rules: &[Rule::ChoicesN],
        seen: "n 3 answers one choice (n is ignored)",
        withheld: &[],
    },
    // 1.0.2's, from `matrix --releases 1.0.2 --tier api` (2026-12-01), whose graph is restarted
    // after a probe breaks it: the release's faults, or the mocker's seen through its frontend.
    Finding {
        release: "1.0.2",
        case: "guide::api::stop_sequence",
        rules: STOP_SEQUENCE_BREAK,
        seen: "once the stop string is generated, an unstreamed chat answers 500 (\"Failed to parse \
               chat completion response: Disconnected: Stream ended before generation \
               completed\") and the frontend then answers every request 500 \"instance_id=… not \
               found\" until restarted; withheld under run",
        withheld: &[Withheld::StopSequence],
    },
    Finding {
        release: "1.0.2",
        case: "guide::api::invalid_parameters_rejected",
        rules: &[Rule::ErrorStatus],
        seen: "max_tokens 10^9 (under dynamo up) and max_tokens 0 (on Kubernetes) get no answer \
               within 30 s and the graph stops serving; both withheld under run",
        withheld: &[
            Withheld::Rejection(Malformed::ZeroMaxTokens),
            Withheld::Rejection(Malformed::AboveContextMaxTokens),
        ],
    },
    Finding {
        release: "1.0.2",
        case: "guide::api::malformed_request_rejected",
        rules: &[Rule::ErrorBody],
        seen: "invalid JSON is answered in plain text (\"Failed to parse the request body as \
               JSON: …\"), other bad requests in JSON; 1.3.1 answers JSON",
        withheld: &[],
    },
    Finding {
        release: "1.0.2",
        case: "guide::api::n_choices",
        rules: &[Rule::ChoicesN],
        seen: "n 3 answers one choice (the mocker ignores n)",
        withheld: &[],
    },
    Finding {
        release: "1.0.2",
        case: "guide::api::no_max_tokens",
        rules: &[Rule::MaxTokensOptional],
        seen: "a chat without max_tokens answers 500 (\"max_output_tokens must be specified for \
               mocker\"): the mocker's need, surfaced as a server error",
        withheld: &[],
    },
];

/// The finding recorded for `case` on `release`, if any.
pub fn for_case(release: DynamoVersion, case: &str) -> Option<&'static Finding> {
    FINDINGS
        .iter()
        .find(|f| f.release == release.to_string() && f.case == case)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_finding_names_a_listed_case_once() {
        for finding in FINDINGS {
            let config = crate::config::Config::resolve(crate::config::ConfigLayer {
                dynamo_version: Some(finding.release.into()),
                ..Default::default()
            })
            .unwrap();
            let names: Vec<String> = crate::suite::cases(&config)
                .into_iter()
                .map(|c| c.name)
                .collect();
            assert!(names.contains(&finding.case.to_string()), "{finding:?}");
            let twins = FINDINGS
                .iter()
                .filter(|f| f.release == finding.release && f.case == finding.case)
                .count();
            assert_eq!(twins, 1, "{finding:?}");
            assert!(!finding.rules.is_empty());
        }
    }
}
