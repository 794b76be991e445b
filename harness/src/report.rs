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
        "conformance: {} passed, {} failed, {} skipped\n",
        t.passed, t.failed, t.skipped
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
                Outcome::Skipped(d) => ("skipped", d),
            };
            json!({"name": r.name, "outcome": outcome, "detail": detail, "seconds": r.duration.as_secs_f64()})
        })
        .collect();
    let t = tally(results);
    let report = json!({
        "provider": config.provider.as_str(),
        "dynamo_version": config.dynamo_version.as_str(),
        "profile": config.dynamo_version.profile().name,
        "model": config.model,
        "provenance": provenance,
        "cases": cases,
        "passed": t.passed, "failed": t.failed, "skipped": t.skipped,
    });
    let path = dir.join("report.json");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&report).expect("the report serializes"),
    )?;
    Ok(path)
}
