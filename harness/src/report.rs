//! The report of a run: a summary table on the terminal and `report.json` on disk.

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
        }
    }
    tally
}

/// The summary table, one line a case, then the closing count line.
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
        };
        out.push_str(&format!(
            "{word}  {:<44} {:>6.2}s  {note}\n",
            result.name,
            result.duration.as_secs_f64()
        ));
    }
    if let Some(provenance) = provenance {
        out.push_str(&format!("{provenance}\n"));
    }
    let t = tally(results);
    out.push_str(&format!(
        "conformance: {} passed, {} failed, {} skipped{}\n",
        t.passed,
        t.failed,
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
            let (outcome, detail) = match &r.outcome {
                Outcome::Passed(d) => ("passed", d),
                Outcome::Failed(d) => ("failed", d),
                Outcome::KnownFailure(d) => ("known_failure", d),
                Outcome::Skipped(d) => ("skipped", d),
            };
            let bundle = crate::evidence::dir_of(dir, &r.name);
            let evidence = (outcome == "failed" && bundle.is_dir()).then(|| bundle.display().to_string());
            json!({"name": r.name, "outcome": outcome, "detail": detail, "seconds": r.duration.as_secs_f64(), "evidence": evidence})
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
        "passed": t.passed, "failed": t.failed, "skipped": t.skipped, "known_failures": t.known,
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
                skipped
            }
        );
        let table = table(&results, Some("real: x; simulated: y"));
        assert!(
            table.contains("SKIP  guide::workers::disaggregation"),
            "{table}"
        );
        assert!(table.contains("aggregated only"), "{table}");
        assert!(
            table.ends_with(&format!(
                "conformance: 0 passed, 1 failed, {skipped} skipped\n"
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
}
