//! The report of a run: a summary table on the terminal, `report.json` and `junit.xml` on disk.

use std::path::{Path, PathBuf};

use serde_json::json;

use crate::config::Config;
use crate::suite::{Case, CaseResult, Outcome};

/// Counts of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Cases that passed.
    pub passed: usize,
    /// Cases that failed.
    pub failed: usize,
    /// Cases that failed as their release's recorded finding says.
    pub known: usize,
    /// Cases skipped, each with a reason.
    pub skipped: usize,
    /// Cases not run because what they need failed in another case.
    pub blocked: usize,
}

/// Every listed case's result: the recorded ones, the skipped ones, and those filtered out.
pub fn complete(cases: &[Case], recorded: &[CaseResult]) -> Vec<CaseResult> {
    cases
        .iter()
        .filter_map(|case| {
            recorded
                .iter()
                .find(|r| r.name == case.name)
                .cloned()
                .or_else(|| {
                    case.skip.as_ref().map(|reason| CaseResult {
                        name: case.name.clone(),
                        outcome: Outcome::Skipped(reason.clone()),
                        duration: Default::default(),
                    })
                })
        })
        .collect()
}

/// Tallies results.
pub fn tally(results: &[CaseResult]) -> Tally {
    let mut tally = Tally::default();
    for result in results {
        match result.outcome {
            Outcome::Passed(_) => tally.passed += 1,
            Outcome::Failed(_) => tally.failed += 1,
            Outcome::KnownFailure(_) => tally.known += 1,
            Outcome::Skipped(_) => tally.skipped += 1,
            Outcome::Blocked(_) => tally.blocked += 1,
        }
    }
    tally
}

/// The summary table, one line a case (outcome word, name, seconds, first line of the note, in
/// aligned columns), then the provenance and the closing count line.
pub fn table(results: &[CaseResult], provenance: Option<&str>) -> String {
    let mut out = String::new();
    for result in results {
        let (word, note) = match &result.outcome {
            Outcome::Passed(_) => ("PASS", String::new()),
            Outcome::Failed(message) => (
                "FAIL",
                message.lines().next().unwrap_or_default().to_string(),
            ),
            Outcome::KnownFailure(message) => (
                "KNOWN",
                message.lines().next().unwrap_or_default().to_string(),
            ),
            Outcome::Skipped(reason) => ("SKIP", reason.clone()),
            Outcome::Blocked(by) => ("BLOCKED", by.to_string()),
        };
        out.push_str(&format!(
            "{word:<7}  {:<44} {:>6.2}s  {note}\n",
            result.name,
            result.duration.as_secs_f64()
        ));
    }
    if let Some(provenance) = provenance {
        out.push_str(&format!("{provenance}\n"));
    }
    let t = tally(results);
    out.push_str(&format!(
        "conformance: {} passed, {} failed, {} blocked, {} skipped{}\n",
        t.passed,
        t.failed,
        t.blocked,
        t.skipped,
        if t.known > 0 {
            format!(
                ", {} known failures of the release (recorded findings)",
                t.known
            )
        } else {
            String::new()
        }
    ));
    out
}

/// Writes `report.json` into the configured report directory and returns its path.
pub fn write_json(
    config: &Config,
    results: &[CaseResult],
    provenance: Option<&str>,
) -> std::io::Result<PathBuf> {
    let dir: &Path = &config.report_dir;
    std::fs::create_dir_all(dir)?;
    let cases: Vec<_> = results
        .iter()
        .map(|r| {
            let blocked_by = match &r.outcome {
                Outcome::Blocked(by) => Some(by.case.clone()),
                _ => None,
            };
            let (outcome, detail) = match &r.outcome {
                Outcome::Passed(d) => ("passed", d.clone()),
                Outcome::Failed(d) => ("failed", d.clone()),
                Outcome::KnownFailure(d) => ("known_failure", d.clone()),
                Outcome::Skipped(d) => ("skipped", d.clone()),
                Outcome::Blocked(by) => ("blocked", by.to_string()),
            };
            let bundle = crate::evidence::dir_of(dir, &r.name);
            let evidence = (outcome == "failed" && bundle.is_dir()).then(|| bundle.display().to_string());
            json!({"name": r.name, "outcome": outcome, "detail": detail, "blocked_by": blocked_by, "seconds": r.duration.as_secs_f64(), "evidence": evidence})
        })
        .collect();
    let t = tally(results);
    let run = crate::evidence::dir_of(dir, crate::evidence::RUN);
    let run_bundle = run.is_dir().then(|| run.display().to_string());
    let report = json!({
        "provider": config.provider.as_str(),
        "dynamo_version": config.dynamo_version.to_string(),
        "workers_version": config.workers_version.map(|w| w.to_string()),
        "profile": config.dynamo_version.profile().name,
        "judged_by": config.dynamo_version.judged_by(),
        "model": config.model,
        "provenance": provenance,
        "cases": cases,
        "passed": t.passed, "failed": t.failed, "skipped": t.skipped, "blocked": t.blocked, "known_failures": t.known,
        "evidence": run_bundle,
    });
    let path = dir.join("report.json");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&report).expect("the report serializes"),
    )?;
    crate::ledger::record_file(&path);
    Ok(path)
}

/// Writes `junit.xml` beside `report.json` and returns its path: one test suite named for the
/// provider and release, a test case per result. A failure is a `<failure>` with its first line
/// as the message; a known failure of the release passes (it does not fail the run) with its
/// record in `system-out`; a skipped case and a blocked one are `<skipped>` with the reason or
/// the blocker ([`crate::suite::blocker::Blocker`]) as the message.
pub fn write_junit(config: &Config, results: &[CaseResult]) -> std::io::Result<PathBuf> {
    use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
    let mut suite = TestSuite::new(format!(
        "dynamo-conformance {} Dynamo {}",
        config.provider.as_str(),
        config.dynamo_version
    ));
    for result in results {
        let (mut status, detail) = match &result.outcome {
            Outcome::Passed(d) => (TestCaseStatus::success(), d.clone()),
            Outcome::KnownFailure(d) => (TestCaseStatus::success(), d.clone()),
            Outcome::Failed(d) => {
                let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
                status.set_message(d.lines().next().unwrap_or_default());
                (status, d.clone())
            }
            Outcome::Skipped(reason) => {
                let mut status = TestCaseStatus::skipped();
                status.set_message(reason.as_str());
                (status, reason.clone())
            }
            Outcome::Blocked(by) => {
                let mut status = TestCaseStatus::skipped();
                status.set_message(by.to_string()).set_type("blocked");
                (status, by.to_string())
            }
        };
        if matches!(result.outcome, Outcome::Failed(_)) {
            status.set_description(detail.as_str());
        }
        let mut case = TestCase::new(result.name.as_str(), status);
        case.set_classname("dynamo-conformance")
            .set_time(result.duration);
        if !matches!(result.outcome, Outcome::Failed(_)) {
            case.set_system_out(detail.as_str());
        }
        suite.add_test_case(case);
    }
    let mut report = Report::new("dynamo-conformance");
    report.add_test_suite(suite);
    let dir: &Path = &config.report_dir;
    std::fs::create_dir_all(dir)?;
    let path = dir.join("junit.xml");
    let text = report.to_string().map_err(std::io::Error::other)?;
    std::fs::write(&path, text)?;
    crate::ledger::record_file(&path);
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConfigLayer;
    use crate::suite::cases;

    fn config(version: &str) -> Config {
        Config::resolve(ConfigLayer {
            dynamo_version: Some(version.into()),
            ..ConfigLayer::default()
        })
        .unwrap()
    }

    #[test]
    fn skipped_cases_are_reported_with_their_reason_and_filtered_ones_left_out() {
        let cases = cases(&config("0.4.1"));
        let recorded = vec![CaseResult {
            name: "guide::api::completion".into(),
            outcome: Outcome::Failed("FAIL  usage.arithmetic ...".into()),
            duration: Default::default(),
        }];
        let results = complete(&cases, &recorded);
        let skipped = cases.iter().filter(|c| c.skip.is_some()).count();
        assert_eq!(results.len(), 1 + skipped);
        assert_eq!(
            tally(&results),
            Tally {
                passed: 0,
                failed: 1,
                known: 0,
                skipped,
                blocked: 0,
            }
        );
        let table = table(&results, Some("real: x; simulated: y"));
        assert!(
            table.contains("SKIP     guide::workers::disaggregation"),
            "{table}"
        );
        assert!(table.contains("aggregated only"), "{table}");
        assert!(
            table.ends_with(&format!(
                "conformance: 0 passed, 1 failed, 0 blocked, {skipped} skipped\n"
            )),
            "{table}"
        );
    }

    #[test]
    fn disaggregation_runs_only_where_the_release_can_show_it() {
        let skip = |version| {
            cases(&config(version))
                .into_iter()
                .find(|c| c.name == "guide::workers::disaggregation")
                .unwrap()
                .skip
        };
        assert!(skip("0.4.1").is_some());
        assert!(skip("1.6.1").is_none());
    }

    #[test]
    fn the_json_report_names_the_release_and_the_provenance() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config("1.6.1");
        config.report_dir = dir.path().to_path_buf();
        let path = write_json(&config, &[], Some("real: everything")).unwrap();
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        assert_eq!(json["dynamo_version"], "1.6.1");
        assert_eq!(json["profile"], "1.x");
        assert_eq!(json["provenance"], "real: everything");
    }

    #[test]
    fn a_stage_failure_is_one_fail_and_its_dependents_blocked_in_table_json_and_junit() {
        use crate::suite::blocker::Blocker;
        let dir = tempfile::tempdir().unwrap();
        let mut config = config("0.4.1");
        config.report_dir = dir.path().to_path_buf();
        let cause = "stage crds: cannot run helm (helm): No such file or directory";
        let by = Blocker {
            case: "guide::crds::established".into(),
            need: "stage crds".into(),
            cause: format!("{cause}\nsecond line"),
        };
        let result = |name: &str, outcome| CaseResult {
            name: name.into(),
            outcome,
            duration: Default::default(),
        };
        let results = vec![
            result("guide::crds::established", Outcome::Failed(cause.into())),
            result(
                "guide::platform::operator_available",
                Outcome::Blocked(by.clone()),
            ),
            result("guide::api::completion", Outcome::Blocked(by)),
            result(
                "guide::secret::hf_token_secret",
                Outcome::Passed("ok".into()),
            ),
        ];
        let table = table(&results, None);
        assert_eq!(table.matches("FAIL ").count(), 1, "{table}");
        // The cause is printed once, by the case that met it.
        assert_eq!(table.matches(cause).count(), 1, "{table}");
        assert!(
            table.contains("BLOCKED  guide::api::completion")
                && table.contains("blocked by guide::crds::established (stage crds failed)"),
            "{table}"
        );
        assert!(
            table.ends_with("conformance: 1 passed, 1 failed, 2 blocked, 0 skipped\n"),
            "{table}"
        );
        let json: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(write_json(&config, &results, None).unwrap()).unwrap(),
        )
        .unwrap();
        assert_eq!(json["blocked"], 2);
        assert_eq!(json["failed"], 1);
        assert_eq!(json["cases"][1]["outcome"], "blocked");
        assert_eq!(json["cases"][1]["blocked_by"], "guide::crds::established");
        assert_eq!(json["cases"][0]["blocked_by"], serde_json::Value::Null);
        let xml = std::fs::read_to_string(write_junit(&config, &results).unwrap()).unwrap();
        let report = quick_junit::Report::deserialize_from_str(&xml).unwrap();
        let suite = &report.test_suites[0];
        assert_eq!((suite.tests, suite.failures, suite.skipped), (4, 1, 2));
        let blocked = &suite.test_cases[2];
        assert!(
            matches!(&blocked.status, quick_junit::TestCaseStatus::Skipped { message: Some(m), .. }
                if m.as_str().starts_with("blocked by guide::crds::established")),
            "{xml}"
        );
    }
}
