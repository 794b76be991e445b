//! What real releases were seen to break, kept as data so a run tells a recorded finding from a new failure.
//!
//! A case that breaks exactly the rules its release's finding names reports `KNOWN` (the
//! release's fault, on record) instead of `FAIL`; one that breaks any other rule fails; one
//! that no longer breaks them fails too, so the table cannot go stale. Each entry was seen
//! running the release here through `dynamo up` and `api`, and through `run` (2026-11-30).

use crate::openai::Rule;
use crate::openai::probe::{Malformed, Withheld};
use crate::release::DynamoVersion;

/// Releases' recorded break of one case's rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finding {
    /// The releases seen breaking them, as PyPI spells them.
    pub releases: &'static [&'static str],
    /// The cases seen breaking them, e.g. `guide::api::n_choices`; a release-wide break (0.5.1's
    /// missing usage) names every case it was seen in.
    pub cases: &'static [&'static str],
    /// The rules it breaks there.
    pub rules: &'static [Rule],
    /// What was seen, one line.
    pub seen: &'static str,
    /// Requests not sent to this release under `run`, because they break the graph the later
    /// cases share; each is reported as a failed check naming this finding.
    pub withheld: &'static [Withheld],
}

/// What a stop sequence that breaks the graph breaks: the unstreamed answer (500), and the
/// streamed one in whichever of three shapes the frontend gives the failure, by when it arrives:
/// a 500 before the stream (1.3.1), a stream cut with no finish_reason and no `[DONE]`, at times
/// before its first event (0.4.1, 0.6.1, 1.0.2), or 200 and then a data event carrying the 500
/// (1.4.2, seen 2026-12-02 in `matrix --releases all`: `{"error": {"message": "Internal server
/// error", "code": 500}}`, then `[DONE]`).
const STOP_SEQUENCE_BREAK: &[Rule] = &[
    Rule::ResponseStatus,
    Rule::StreamStatus,
    Rule::StreamErrorEvent,
    Rule::StreamTerminated,
    Rule::StreamDone,
    Rule::StreamEventJson,
    Rule::StreamFinishReason,
    Rule::StopSequence,
];

/// Dynamo 0.5.1 to 0.9.1, each run by `matrix --tier api` (2026-12-01; 0.8.1 and 0.9.1 on
/// 2026-12-02 with the Hub simulated) and 0.8.1 by `run` on the local provider.
const LINE_0_5: &[&str] = &["0.5.1", "0.6.1", "0.7.1", "0.8.1", "0.9.1"];

/// Every recorded finding. The 1.x entries beyond 1.0.2 and 1.6.1 come from
/// `matrix --releases all --tier api` (2026-12-01), whose graph is restarted after a probe
/// breaks it: the release's faults, or the mocker's seen through its frontend.
pub const FINDINGS: &[Finding] = &[
    Finding {
        releases: &["0.4.1"],
        cases: &["guide::api::max_tokens_one"],
        rules: &[Rule::ResponseText, Rule::StreamText],
        seen: "max_tokens 1 answers an empty text, finish_reason \"length\" (0.4.1 stops one token short)",
        withheld: &[],
    },
    Finding {
        releases: &[
            "0.4.1", "0.5.1", "0.6.1", "0.7.1", "0.8.1", "0.9.1", "1.0.2", "1.1.1", "1.2.1",
            "1.3.1", "1.4.2", "1.5.1", "1.6.1",
        ],
        cases: &["guide::api::n_choices"],
        rules: &[Rule::ChoicesN],
        seen: "n 3 answers one choice (n is ignored; the mocker generates one)",
        withheld: &[],
    },
    Finding {
        releases: &["0.4.1"],
        cases: &["guide::api::stop_sequence"],
        rules: STOP_SEQUENCE_BREAK,
        seen: "once the stop string is generated, an unstreamed chat answers 500 (\"Failed to fold \
               chat completions stream: Stream ended before generation completed\"), a streamed \
               one is cut (no finish_reason, no [DONE], at times before its first event), and on \
               Kubernetes the frontend then answers every request 500 \"instance_id=… not \
               found\"; the stopped requests are withheld under run",
        withheld: &[Withheld::StopSequence],
    },
    Finding {
        releases: LINE_0_5,
        cases: &["guide::api::stop_sequence"],
        rules: STOP_SEQUENCE_BREAK,
        seen: "once the stop string is generated, an unstreamed chat answers 500 (\"Failed to fold \
               chat completions stream: Stream ended before generation completed\", from 0.7.1 \
               \"Unlinked request; initiating request task was dropped or cancelled\"), a \
               streamed one is cut before or after its first event (no finish_reason, no \
               [DONE]), and on Kubernetes 0.8.1's frontend then answers 500 \"instance_id=… not \
               found\"; the stopped requests are withheld under run",
        withheld: &[Withheld::StopSequence],
    },
    Finding {
        releases: &["1.1.1", "1.2.1", "1.3.1", "1.4.2", "1.5.1"],
        cases: &["guide::api::stop_sequence"],
        rules: STOP_SEQUENCE_BREAK,
        seen: "once the stop string is generated, a chat answers 500 (1.1.1 \"Prefill execution \
               failed: … Stream ended before generation completed\", 1.2.1 and 1.5.1 \"Failed to \
               parse chat completion response\", 1.3.1 and 1.4.2 \"Failed to generate \
               completions\"), streamed too (1.5.1 then 503 \"not ready to serve requests yet\"); \
               1.1.1's, 1.2.1's and 1.5.1's graph then stops serving until restarted; withheld \
               under run",
        withheld: &[Withheld::StopSequence],
    },
    Finding {
        releases: &["0.4.1"],
        cases: &["guide::api::no_max_tokens"],
        rules: &[Rule::MaxTokensOptional],
        seen: "a chat without max_tokens answers 500",
        withheld: &[],
    },
    Finding {
        releases: LINE_0_5,
        cases: &["guide::api::no_max_tokens"],
        rules: &[Rule::MaxTokensOptional],
        seen: "a chat without max_tokens answers 500 (\"Failed to generate completions: Unlinked \
               request; initiating request task was dropped or cancelled\")",
        withheld: &[],
    },
    Finding {
        releases: &["0.4.1"],
        cases: &["guide::api::invalid_parameters_rejected"],
        rules: &[Rule::ErrorStatus, Rule::ErrorBody],
        seen: "max_tokens 0 panics the mocker (\"reached max_output_tokens limit\") and wedges \
               the graph; max_tokens 10^9 gets no answer within 30 s; both withheld under run",
        withheld: &[
            Withheld::Rejection(Malformed::ZeroMaxTokens),
            Withheld::Rejection(Malformed::AboveContextMaxTokens),
        ],
    },
    Finding {
        releases: LINE_0_5,
        cases: &["guide::api::invalid_parameters_rejected"],
        rules: &[Rule::ErrorStatus],
        seen: "max_tokens 10^9 gets no answer within 30 s and the graph stops serving; it and \
               max_tokens 0 (which wedges 0.4.1's) are withheld under run",
        withheld: &[
            Withheld::Rejection(Malformed::ZeroMaxTokens),
            Withheld::Rejection(Malformed::AboveContextMaxTokens),
        ],
    },
    Finding {
        releases: &["0.5.1"],
        cases: &[
            "guide::api::completion",
            "guide::api::chat",
            "guide::api::max_tokens_bound",
            "guide::api::max_tokens_one",
            "guide::api::n_choices",
            "guide::api::stop_sequence",
            "guide::api::non_ascii_text",
        ],
        rules: &[Rule::UsagePresent],
        seen: "an unstreamed completion or chat carries no usage (\"usage\": null), in every case \
               that asks for one (run, 2026-12-02); 0.6.1 sends it again",
        withheld: &[],
    },
    Finding {
        releases: &["1.6.1"],
        cases: &["guide::api::no_max_tokens"],
        rules: &[Rule::StreamErrorEvent, Rule::StreamEventJson],
        seen: "a streamed chat without max_tokens is answered 200, then a data event carrying the \
               engine's 400 (\"max_tokens is required by the mocker worker\"); unstreamed it is \
               a 400 before any answer",
        withheld: &[],
    },
    Finding {
        releases: &["1.0.2"],
        cases: &["guide::api::stop_sequence"],
        rules: STOP_SEQUENCE_BREAK,
        seen: "once the stop string is generated, an unstreamed chat answers 500 (\"Failed to parse \
               chat completion response: Disconnected: Stream ended before generation \
               completed\") and the frontend then answers every request 500 \"instance_id=… not \
               found\" until restarted; withheld under run",
        withheld: &[Withheld::StopSequence],
    },
    Finding {
        releases: &["1.0.2", "1.1.1", "1.2.1", "1.3.1"],
        cases: &["guide::api::invalid_parameters_rejected"],
        rules: &[Rule::ErrorStatus],
        seen: "max_tokens 10^9 (under dynamo up) and max_tokens 0 (1.0.2 on Kubernetes) get no \
               answer within 30 s and the graph stops serving; both withheld under run; 1.4.2 \
               answers 400",
        withheld: &[
            Withheld::Rejection(Malformed::ZeroMaxTokens),
            Withheld::Rejection(Malformed::AboveContextMaxTokens),
        ],
    },
    Finding {
        releases: &["1.0.2", "1.1.1", "1.2.1"],
        cases: &["guide::api::malformed_request_rejected"],
        rules: &[Rule::ErrorBody],
        seen: "invalid JSON is answered in plain text (\"Failed to parse the request body as \
               JSON: …\"), other bad requests in JSON; 1.3.1 answers JSON",
        withheld: &[],
    },
    Finding {
        releases: &["1.0.2", "1.1.1", "1.4.2"],
        cases: &["guide::api::no_max_tokens"],
        rules: &[Rule::MaxTokensOptional],
        seen: "a chat without max_tokens answers 500 (\"max_output_tokens must be specified for \
               mocker\", from 1.3.1 only \"Failed to generate completions\"): the mocker's need, \
               surfaced as a server error",
        withheld: &[],
    },
    Finding {
        releases: &["1.2.1", "1.3.1", "1.5.1"],
        cases: &["guide::api::no_max_tokens"],
        rules: &[Rule::MaxTokensOptional],
        seen: "a chat without max_tokens answers 500 (\"max_output_tokens must be specified for \
               mocker\", from 1.3.1 only \"Failed to generate completions\") and the graph then \
               stops serving until restarted; withheld under run",
        withheld: &[Withheld::Unbounded],
    },
];

impl Finding {
    /// Whether it was seen on `release` (as PyPI spells it).
    pub fn records(&self, release: &str) -> bool {
        self.releases.contains(&release)
    }
}

/// The findings recorded for `case` on `release`: several when the case breaks more than one
/// recorded fault of the release (0.5.1's `n_choices`: `n` ignored, and no usage).
pub fn for_case(release: DynamoVersion, case: &str) -> Vec<&'static Finding> {
    let release = release.to_string();
    FINDINGS
        .iter()
        .filter(|f| f.records(&release) && f.cases.contains(&case))
        .collect()
}

/// Whether releases `a` and `b` (as PyPI spells them) both record a break of the rule `rule_id`
/// (`stream.status`) for one case: a verdict that flips between passing and that break from one
/// to the other is no change of the release (the stop sequence's break comes in another shape,
/// or not at all, as the mocker's random text meets the stop string at another moment).
pub fn recorded_by_both(a: &str, b: &str, rule_id: &str) -> bool {
    let records = |release: &str, case: &str| {
        FINDINGS.iter().any(|f| {
            f.records(release)
                && f.cases.contains(&case)
                && f.rules.iter().any(|r| r.id() == rule_id)
        })
    };
    FINDINGS
        .iter()
        .filter(|f| f.records(a))
        .flat_map(|f| f.cases.iter())
        .any(|case| records(a, case) && records(b, case))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_finding_names_listed_cases_and_no_rule_is_recorded_twice_for_a_case() {
        for finding in FINDINGS {
            assert!(!finding.releases.is_empty() && !finding.rules.is_empty());
            assert!(!finding.cases.is_empty(), "{finding:?}");
            for release in finding.releases {
                let config = crate::config::Config::resolve(crate::config::ConfigLayer {
                    dynamo_version: Some(release.to_string()),
                    ..Default::default()
                })
                .unwrap();
                assert_eq!(
                    config.dynamo_version.to_string(),
                    *release,
                    "a row of its own"
                );
                let names: Vec<String> = crate::suite::cases(&config)
                    .into_iter()
                    .map(|c| c.name)
                    .collect();
                for case in finding.cases {
                    assert!(names.contains(&case.to_string()), "{case}: {finding:?}");
                    for rule in finding.rules {
                        let recorders = for_case(config.dynamo_version, case)
                            .into_iter()
                            .filter(|f| f.rules.contains(rule))
                            .count();
                        assert_eq!(recorders, 1, "{release} {case} {rule:?}: {finding:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_break_is_recorded_by_both_only_when_both_record_it_for_one_case() {
        // The stop sequence's streamed break, on 0.9.1 and on 1.0.2.
        assert!(recorded_by_both("0.9.1", "1.0.2", "stream.status"));
        // 0.5.1's missing usage is its own.
        assert!(!recorded_by_both("0.4.1", "0.5.1", "usage.present"));
        assert!(!recorded_by_both("1.6.1", "9.9.9", "choices.n"));
    }

    #[test]
    fn a_case_finds_every_finding_of_its_release_that_names_it() {
        let release: DynamoVersion = "0.5.1".parse().unwrap();
        let rules: Vec<Rule> = for_case(release, "guide::api::n_choices")
            .into_iter()
            .flat_map(|f| f.rules.iter().copied())
            .collect();
        assert_eq!(rules, [Rule::ChoicesN, Rule::UsagePresent]);
        assert!(for_case(release, "guide::api::frontend_health").is_empty());
    }
}
