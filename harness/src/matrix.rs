//! The release matrix: every rule or case of a tier, one column per release, and what changed between neighbours.
//!
//! The `api` tier starts each release's graph on this machine (`dynamo up`'s processes: the
//! release's own frontend and mocker workers), sends it everything `api` sends, and judges the
//! answers twice: against the release's profile (its row in [`crate::release`], or the row that
//! judges it) and against OpenAI's strict contract (rows `openai <rule>`), so that what a release
//! changed shows even where each release keeps its own promises. The `graph` tier runs the suite's
//! cases on the local provider for each release (`run`'s report). Releases run one after another;
//! each release's processes are stopped before the next starts.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::config::Config;
use crate::openai::Endpoint;
use crate::openai::check::{Check, Checks, Rule, Violation, excerpt};
use crate::openai::client::Answer;
use crate::openai::probe::{ApiProbe, judge, judge_exchanges, observe_workers};
use crate::profile::{Profile, ProfileChoice};
use crate::release::{DynamoVersion, ReleaseError};

/// What each release is put through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// The OpenAI API and the workers' health, against the release's processes on this machine.
    Api,
    /// The guide's cases on the local provider's cluster.
    Graph,
}

impl FromStr for Tier {
    type Err = MatrixError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "api" => Ok(Tier::Api),
            "graph" => Ok(Tier::Graph),
            other => Err(MatrixError::UnknownTier(other.to_string())),
        }
    }
}

impl Tier {
    fn name(self) -> &'static str {
        match self {
            Tier::Api => "api",
            Tier::Graph => "graph",
        }
    }
}

/// The releases `--releases` names: `all` (every release with a row a run may name), or a
/// comma-separated list, oldest first once parsed.
///
/// # Errors
/// The first entry that is no release the suite can judge ([`MatrixError::Release`]), or an empty
/// list.
pub fn releases(list: &str) -> Result<Vec<DynamoVersion>, MatrixError> {
    if list.trim() == "all" {
        return Ok(DynamoVersion::all().collect());
    }
    let mut versions = list
        .split(',')
        .filter(|v| !v.trim().is_empty())
        .map(str::parse)
        .collect::<Result<Vec<DynamoVersion>, _>>()?;
    if versions.is_empty() {
        return Err(MatrixError::NoReleases);
    }
    versions.sort();
    versions.dedup();
    Ok(versions)
}

/// One cell's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// The rule held, or the case passed.
    Pass,
    /// The rule was broken, or the case failed.
    Fail,
    /// The case was skipped (its reason is the cell's observation).
    Skip,
    /// The case broke exactly what its release's recorded finding names.
    Known,
    /// The case did not run: what it needs failed in another case (the observation names it).
    Blocked,
    /// A fact of the release table about the release (its observation is the value), shown so
    /// that a change between releases is located where it happened.
    Fact,
}

impl Mark {
    fn as_str(self) -> &'static str {
        match self {
            Mark::Pass => "PASS",
            Mark::Fail => "FAIL",
            Mark::Skip => "SKIP",
            Mark::Known => "KNOWN",
            Mark::Blocked => "BLOCKED",
            Mark::Fact => "FACT",
        }
    }
}

/// How `matrix.md` and `matrix.html` introduce the changes [`Change::recorded_by_both`] marks.
const RECORDED_BY_BOTH: &str = "Not changes of the release: breaks both releases record for the \
same case, seen this time in one and not the other (the stop string meets the mocker's random \
text at another moment each run)";

/// One rule or case on one release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cell {
    /// The verdict.
    pub mark: Mark,
    /// What was observed (a violation's observation, a note, a case's message); may be empty.
    pub observed: String,
}

/// One release's column, or one version skew's (a release's frontend with another's workers).
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    /// The release (the frontend's under skew), as PyPI spells it.
    pub version: String,
    /// Under version skew, the workers' release.
    pub workers: Option<String>,
    /// What judged it (`profile 0.4`, or the row it borrowed).
    pub judged_by: String,
    /// How long its turn took, install and start included.
    pub took: Duration,
    /// Why it has no verdicts, if it could not be run.
    pub failure: Option<String>,
    /// Whether it could not run by the release table's own facts (a skew across planes):
    /// reported, no environment fault.
    pub unservable: bool,
    /// What this column simulated beyond the tier's usual (the Hugging Face Hub, for a release
    /// whose frontend asks it: [`crate::dynamo::hub`]).
    pub simulated: Option<String>,
}

impl Column {
    /// The column of `version`'s frontend with `workers`' workers (its own without), before it
    /// runs: `unservable`, with the reason as its failure, when the two cannot run together.
    pub fn of(version: DynamoVersion, workers: Option<DynamoVersion>) -> Column {
        let planes = version.same_planes(workers.unwrap_or(version));
        Column {
            version: version.to_string(),
            workers: workers.map(|w| w.to_string()),
            judged_by: version.judged_by(),
            took: Duration::ZERO,
            unservable: planes.is_err(),
            failure: planes.as_ref().err().map(ToString::to_string),
            simulated: (planes.is_ok() && version.asks_the_hub(workers)).then(|| {
                format!(
                    "the Hugging Face Hub simulated by {}",
                    crate::dynamo::hub::SERVER
                )
            }),
        }
    }

    /// Its heading: `1.6.1`, or under skew `1.6.1 + workers 1.5.1`.
    pub fn label(&self) -> String {
        match &self.workers {
            Some(workers) => format!("{} + workers {workers}", self.version),
            None => self.version.clone(),
        }
    }
}

/// The matrix: columns in release order, rows in the order first seen.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    /// The tier every column went through.
    pub tier: Tier,
    /// One per release.
    pub columns: Vec<Column>,
    /// Each row's id (a rule id, `openai <rule id>`, or a case name) and its cells, one per
    /// column (`None`: the release did not report it).
    pub rows: Vec<(String, Vec<Option<Cell>>)>,
}

/// A row whose verdict differs between two neighbouring releases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The row.
    pub row: String,
    /// The older release's cell (`None`: not reported).
    pub before: Option<Cell>,
    /// The newer release's cell.
    pub after: Option<Cell>,
    /// The verdicts differ only in whether a break both releases record for one case showed
    /// this time ([`crate::findings::recorded_by_both`]): shown apart, as no change of the release.
    pub recorded_by_both: bool,
}

impl Matrix {
    /// An empty matrix of `tier`.
    pub fn new(tier: Tier) -> Matrix {
        Matrix {
            tier,
            columns: Vec::new(),
            rows: Vec::new(),
        }
    }

    /// Adds a column and its cells (rows it does not name stay empty in it).
    pub fn push(&mut self, column: Column, cells: Vec<(String, Cell)>) {
        let n = self.columns.len();
        self.columns.push(column);
        for (_, row) in &mut self.rows {
            row.push(None);
        }
        for (id, cell) in cells {
            match self.rows.iter_mut().find(|(r, _)| *r == id) {
                Some((_, row)) => row[n] = Some(cell),
                None => {
                    let mut row = vec![None; n + 1];
                    row[n] = Some(cell);
                    self.rows.push((id, row));
                }
            }
        }
    }

    /// What changed from each release that ran to the next that ran (a release that could not
    /// be run is stepped over, so the change shows at the next one that did): rows whose verdict
    /// differs, or whose failure has another shape (the observation with its strings and numbers
    /// blanked: an error body `{"error": "…"}` becoming `{"message": "…", "type": "…", "code":
    /// 404}`).
    ///
    /// A skew column is compared with its frontend's own release column: what the other
    /// release's workers change. A change between passing and a break both releases record is
    /// kept, marked [`Change::recorded_by_both`].
    pub fn changes(&self) -> Vec<((String, String), Vec<Change>)> {
        let ran = |i: &usize| self.columns[*i].failure.is_none();
        let releases: Vec<usize> = (0..self.columns.len())
            .filter(|i| ran(i) && self.columns[*i].workers.is_none())
            .collect();
        let skews = (0..self.columns.len())
            .filter(|j| ran(j) && self.columns[*j].workers.is_some())
            .filter_map(|j| {
                let own = releases
                    .iter()
                    .find(|&&i| self.columns[i].version == self.columns[j].version)?;
                Some((*own, j))
            });
        releases
            .windows(2)
            .map(|pair| (pair[0], pair[1]))
            .chain(skews)
            .map(|(i, j)| {
                let changed = self
                    .rows
                    .iter()
                    .filter_map(|(id, cells)| {
                        let (before, after) = (&cells[i], &cells[j]);
                        let differs = match (before, after) {
                            (Some(a), Some(b)) => {
                                a.mark != b.mark
                                    || (a.mark == Mark::Fail
                                        && shape(&a.observed) != shape(&b.observed))
                                    || (a.mark == Mark::Fact && a.observed != b.observed)
                            }
                            (None, None) => false,
                            _ => true,
                        };
                        let (rule, broken) = match id.strip_prefix("openai ") {
                            Some(rule) => (rule, Mark::Fail),
                            None => (id.as_str(), Mark::Known),
                        };
                        let flips = |a: &Cell, b: &Cell| {
                            a.mark != b.mark
                                && [a.mark, b.mark]
                                    .iter()
                                    .all(|m| *m == Mark::Pass || *m == broken)
                        };
                        let recorded_by_both = matches!((before, after),
                            (Some(a), Some(b)) if flips(a, b))
                            && crate::findings::recorded_by_both(
                                &self.columns[i].version,
                                &self.columns[j].version,
                                rule,
                            );
                        differs.then(|| Change {
                            row: id.clone(),
                            before: before.clone(),
                            after: after.clone(),
                            recorded_by_both,
                        })
                    })
                    .collect();
                ((self.columns[i].label(), self.columns[j].label()), changed)
            })
            .collect()
    }

    /// The rows a release fails, for its own verdict (`openai` rows aside).
    pub fn failures_of(&self, column: usize) -> Vec<&str> {
        self.rows
            .iter()
            .filter(|(id, cells)| {
                !id.starts_with("openai ")
                    && cells[column]
                        .as_ref()
                        .is_some_and(|c| matches!(c.mark, Mark::Fail | Mark::Blocked))
            })
            .map(|(id, _)| id.as_str())
            .collect()
    }

    /// `matrix.md`: the table (observations as numbered footnotes), then what changed.
    pub fn markdown(&self) -> String {
        let mut notes: Vec<String> = Vec::new();
        let mut out = format!("# Dynamo release matrix, {} tier\n\n", self.tier.name());
        out.push_str("| release | judged by | took | |\n|---|---|---|---|\n");
        for c in &self.columns {
            let _ = writeln!(
                out,
                "| {} | {} | {:.0} s | {} |",
                c.label(),
                c.judged_by,
                c.took.as_secs_f64(),
                [c.failure.as_deref(), c.simulated.as_deref()]
                    .into_iter()
                    .flatten()
                    .map(escape_md)
                    .collect::<Vec<_>>()
                    .join("; ")
            );
        }
        out.push_str("\n| rule or case |");
        for c in &self.columns {
            let _ = write!(out, " {} |", c.label());
        }
        out.push_str("\n|---|");
        out.push_str(&"---|".repeat(self.columns.len()));
        out.push('\n');
        for (id, cells) in &self.rows {
            let _ = write!(out, "| `{id}` |");
            for cell in cells {
                match cell {
                    None => out.push_str(" – |"),
                    Some(c) if c.mark == Mark::Fact => {
                        let _ = write!(out, " {} |", escape_md(&c.observed));
                    }
                    Some(c) if c.observed.is_empty() => {
                        let _ = write!(out, " {} |", c.mark.as_str());
                    }
                    Some(c) => {
                        notes.push(c.observed.clone());
                        let _ = write!(out, " {} [{}] |", c.mark.as_str(), notes.len());
                    }
                }
            }
            out.push('\n');
        }
        out.push_str("\n## What changed\n");
        for ((from, to), changes) in self.changes() {
            let _ = writeln!(out, "\n### {from} → {to}\n");
            let (recorded, changed): (Vec<Change>, Vec<Change>) =
                changes.into_iter().partition(|c| c.recorded_by_both);
            if changed.is_empty() {
                out.push_str("No verdict changed.\n");
            }
            for change in changed {
                let _ = writeln!(
                    out,
                    "- `{}`: {} → {}",
                    change.row,
                    describe(change.before.as_ref()),
                    describe(change.after.as_ref())
                );
            }
            if !recorded.is_empty() {
                let rows: Vec<String> = recorded.iter().map(|c| format!("`{}`", c.row)).collect();
                let _ = writeln!(out, "\n{RECORDED_BY_BOTH}: {}", rows.join(", "));
            }
        }
        if !notes.is_empty() {
            out.push_str("\n## Observations\n\n");
            for (n, note) in notes.iter().enumerate() {
                let _ = writeln!(out, "{}. {}", n + 1, escape_md(note));
            }
        }
        out
    }

    /// `matrix.json`: columns, rows with every cell, and the changes.
    pub fn json(&self) -> Value {
        let cell = |c: &Option<Cell>| {
            c.as_ref()
                .map(|c| json!({"mark": c.mark.as_str(), "observed": c.observed}))
                .unwrap_or(Value::Null)
        };
        json!({
            "tier": self.tier.name(),
            "releases": self.columns.iter().map(|c| json!({
                "version": c.version,
                "workers": c.workers,
                "judged_by": c.judged_by,
                "seconds": c.took.as_secs_f64(),
                "failure": c.failure,
                "simulated": c.simulated,
            })).collect::<Vec<_>>(),
            "rows": self.rows.iter().map(|(id, cells)| json!({
                "id": id,
                "cells": cells.iter().map(cell).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "changes": self.changes().iter().map(|((from, to), changes)| json!({
                "from": from,
                "to": to,
                "rows": changes.iter().map(|c| json!({
                    "id": c.row, "before": cell(&c.before), "after": cell(&c.after),
                    "recorded_by_both": c.recorded_by_both,
                })).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        })
    }

    /// `matrix.html`: the same table, self-contained (inline style, no script); a cell's
    /// observation shows on hover.
    pub fn html(&self) -> String {
        let mut out = String::from(
            "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Dynamo release matrix</title>\n<style>\
             body{font:14px sans-serif;margin:2em}table{border-collapse:collapse}\
             td,th{border:1px solid #ccc;padding:2px 8px}td.PASS{background:#dfd}td.FAIL{background:#fdd}td.BLOCKED{background:#fed}\
             td.SKIP,td.KNOWN{background:#ffd}code{font-size:13px}</style></head><body>\n",
        );
        let _ = writeln!(
            out,
            "<h1>Dynamo release matrix, {} tier</h1>\n<table><tr><th>rule or case</th>",
            self.tier.name()
        );
        for c in &self.columns {
            let _ = write!(
                out,
                "<th title=\"{}\">{}<br><small>{}, {:.0} s</small></th>",
                escape_html(
                    c.failure
                        .as_deref()
                        .or(c.simulated.as_deref())
                        .unwrap_or("")
                ),
                escape_html(&c.label()),
                escape_html(&c.judged_by),
                c.took.as_secs_f64()
            );
        }
        out.push_str("</tr>\n");
        for (id, cells) in &self.rows {
            let _ = write!(out, "<tr><td><code>{}</code></td>", escape_html(id));
            for cell in cells {
                match cell {
                    None => out.push_str("<td>–</td>"),
                    Some(c) if c.mark == Mark::Fact => {
                        let _ = write!(out, "<td>{}</td>", escape_html(&c.observed));
                    }
                    Some(c) => {
                        let _ = write!(
                            out,
                            "<td class=\"{0}\" title=\"{1}\">{0}</td>",
                            c.mark.as_str(),
                            escape_html(&c.observed)
                        );
                    }
                }
            }
            out.push_str("</tr>\n");
        }
        out.push_str("</table>\n<h2>What changed</h2>\n");
        for ((from, to), changes) in self.changes() {
            let _ = writeln!(
                out,
                "<h3>{} → {}</h3>\n<ul>",
                escape_html(&from),
                escape_html(&to)
            );
            let (recorded, changed): (Vec<Change>, Vec<Change>) =
                changes.into_iter().partition(|c| c.recorded_by_both);
            if changed.is_empty() {
                out.push_str("<li>No verdict changed.</li>\n");
            }
            for change in changed {
                let _ = writeln!(
                    out,
                    "<li><code>{}</code>: {} → {}</li>",
                    escape_html(&change.row),
                    escape_html(&describe(change.before.as_ref())),
                    escape_html(&describe(change.after.as_ref()))
                );
            }
            out.push_str("</ul>\n");
            if !recorded.is_empty() {
                let rows: Vec<String> = recorded
                    .iter()
                    .map(|c| format!("<code>{}</code>", escape_html(&c.row)))
                    .collect();
                let _ = writeln!(out, "<p>{RECORDED_BY_BOTH}: {}</p>", rows.join(", "));
            }
        }
        out.push_str("</body></html>\n");
        out
    }

    /// Writes `matrix.md`, `matrix.json` and `matrix.html` into `dir`; returns their paths.
    ///
    /// # Errors
    /// The first file that cannot be written.
    pub fn write(&self, dir: &Path) -> Result<Vec<PathBuf>, MatrixError> {
        std::fs::create_dir_all(dir).map_err(|e| MatrixError::Io(dir.to_path_buf(), e))?;
        let json = serde_json::to_string_pretty(&self.json()).unwrap_or_default();
        [
            ("matrix.md", self.markdown()),
            ("matrix.json", json),
            ("matrix.html", self.html()),
        ]
        .into_iter()
        .map(|(name, text)| {
            let path = dir.join(name);
            std::fs::write(&path, text)
                .map(|()| path.clone())
                .map_err(|e| MatrixError::Io(path, e))
        })
        .collect()
    }
}

fn describe(cell: Option<&Cell>) -> String {
    match cell {
        None => "not reported".into(),
        Some(c) if c.mark == Mark::Fact => c.observed.clone(),
        Some(c) if c.observed.is_empty() => c.mark.as_str().into(),
        Some(c) => format!("{} ({})", c.mark.as_str(), excerpt(&c.observed, 160)),
    }
}

/// An observation with its strings' contents and its numbers blanked: what a failure looks like,
/// not what it said this time.
fn shape(observed: &str) -> String {
    let mut out = String::new();
    let mut in_string = false;
    let mut escaped = false;
    for ch in observed.chars() {
        if in_string {
            match (escaped, ch) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => {
                    in_string = false;
                    out.push('"');
                }
                _ => {}
            }
        } else if ch == '"' {
            in_string = true;
            out.push('"');
        } else if ch.is_ascii_digit() {
            if !out.ends_with('0') {
                out.push('0');
            }
        } else {
            out.push(ch);
        }
    }
    out
}

fn escape_md(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The cells of one release's `api` verdicts: a row per rule for its own profile, then
/// `openai <rule>` rows for OpenAI's strict contract. `own` holds each probe's checks with the
/// case it serves (`guide::api::<probe>`; the workers' checks under no case). A rule fails when
/// any of its checks does; the cell then carries the first violation's observation, else the
/// first note. A violation is `KNOWN` when the recorded finding of `release` for that probe's
/// case names its rule ([`crate::findings::FINDINGS`]), as `run` judges a case: a finding of
/// one probe never excuses another probe's break of the same rule.
pub fn api_cells(
    own: &[(Option<String>, Checks)],
    strict: &Checks,
    release: &str,
) -> Vec<(String, Cell)> {
    let known = |case: &Option<String>, rule: Rule| {
        case.as_deref().is_some_and(|case| {
            crate::findings::FINDINGS
                .iter()
                .any(|f| f.records(release) && f.cases.contains(&case) && f.rules.contains(&rule))
        })
    };
    let known = &known;
    let mut cells = rule_cells(
        own.iter().flat_map(|(case, checks)| {
            checks
                .iter()
                .map(move |check| (check, known(case, check.rule)))
        }),
        "",
    );
    cells.extend(rule_cells(strict.iter().map(|c| (c, false)), "openai "));
    cells
}

/// Rows from checks, each with whether a recorded finding excuses its violation.
fn rule_cells<'a>(
    checks: impl Iterator<Item = (&'a Check, bool)>,
    prefix: &str,
) -> Vec<(String, Cell)> {
    let mut order: Vec<String> = Vec::new();
    let mut by_rule: BTreeMap<String, Cell> = BTreeMap::new();
    for (check, known) in checks {
        let id = format!("{prefix}{}", check.rule.id());
        let cell = by_rule.entry(id.clone()).or_insert_with(|| {
            order.push(id.clone());
            Cell {
                mark: Mark::Pass,
                observed: String::new(),
            }
        });
        let seen = |v: &Violation| format!("{}: {}", check.subject, v.observed);
        match &check.violation {
            Some(v) if !known && cell.mark != Mark::Fail => {
                cell.mark = Mark::Fail;
                cell.observed = seen(v);
            }
            Some(v) if known && cell.mark == Mark::Pass => {
                cell.mark = Mark::Known;
                cell.observed = seen(v);
            }
            None if cell.mark == Mark::Pass && cell.observed.is_empty() => {
                if let Some(note) = &check.note {
                    cell.observed = note.clone();
                }
            }
            _ => {}
        }
    }
    order
        .into_iter()
        .filter_map(|id| by_rule.remove(&id).map(|c| (id, c)))
        .collect()
}

/// The cells of one release's `run` report (`report.json`): a row per case.
pub fn graph_cells(report: &Value) -> Vec<(String, Cell)> {
    report["cases"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|case| {
            let mark = match case["outcome"].as_str() {
                Some("passed") => Mark::Pass,
                Some("skipped") => Mark::Skip,
                Some("known_failure") => Mark::Known,
                Some("blocked") => Mark::Blocked,
                _ => Mark::Fail,
            };
            (
                case["name"].as_str().unwrap_or_default().to_string(),
                Cell {
                    mark,
                    observed: case["detail"].as_str().unwrap_or_default().to_string(),
                },
            )
        })
        .collect()
}

/// Runs the `api` tier on one release: starts its processes (installing it first if need be),
/// observes them as `api` does, judges the answers, stops what it started.
///
/// Before each edge probe and after the last, the frontend must answer a plain chat of 4 tokens
/// (bounded by the configured request timeout); when it does not, the probe before broke the
/// graph (0.4.1's and 1.0.2's stop sequence and `max_tokens` 10^9, 1.2.1 to 1.5.1's chat without
/// `max_tokens`, seen here) and the release's processes are restarted before the next probe when
/// this call started them, so one break is reported by the probe that caused it, not by every
/// probe after it; the `graph.survives_probes` row names those probes. A failed restart ends the
/// probing: what was observed is still judged, and that row says so.
///
/// # Errors
/// Why the release could not be started or stopped (its install, its processes), as one line.
pub fn api_release(config: &Config, exe: &Path) -> Result<Vec<(String, Cell)>, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let model = config.model.clone();
    let mut graph = ApiGraph::start(config, exe)?;
    let mut observations = Vec::new();
    for probe in ApiProbe::ALL {
        observations.push(rt.block_on(probe.observe(&graph.frontend, &model)));
    }
    let worker_exchanges = rt.block_on(observe_workers(&graph.workers, &graph.frontend, &model));
    // Before each edge probe and after the last: a graph that stopped serving is charged to the
    // probe before (the guide's probes and the workers' checks before the first edge probe).
    let mut breaks = Breaks::default();
    let mut previous = "the probes before the edge probes";
    for probe in ApiProbe::EDGES.into_iter().map(Some).chain([None]) {
        if !rt.block_on(serves_chat(&graph.frontend, &model)) {
            breaks.by.push(previous);
            match probe {
                Some(_) if graph.started_here => match graph.restart(config, exe) {
                    Ok(restarted) => graph = restarted,
                    Err(e) => {
                        breaks.unrestartable = Some(e);
                        return finish(config, &observations, &worker_exchanges, &breaks);
                    }
                },
                Some(_) => breaks.kept = true,
                None => {}
            }
        }
        if let Some(probe) = probe {
            observations.push(rt.block_on(probe.observe(&graph.frontend, &model)));
            previous = probe.name();
        }
    }
    graph.stop(config)?;
    finish(config, &observations, &worker_exchanges, &breaks)
}

/// The probes after which the graph no longer served, and what was done about it.
#[derive(Debug, Default)]
struct Breaks {
    /// The probes (`ApiProbe::name`), in order.
    by: Vec<&'static str>,
    /// A graph this run did not start: left as it was, not restarted.
    kept: bool,
    /// Why a restart failed; the probes after it were not sent.
    unrestartable: Option<String>,
}

/// Judges what was observed: the rows of both profiles, then `graph.survives_probes`.
fn finish(
    config: &Config,
    observations: &[crate::openai::probe::Observation],
    worker_exchanges: &[crate::openai::probe::Exchange],
    breaks: &Breaks,
) -> Result<Vec<(String, Cell)>, String> {
    let model = &config.model;
    let profile = config.dynamo_version.profile();
    let own: Vec<(Option<String>, Checks)> = observations
        .iter()
        .map(|o| (Some(o.probe.case()), o.judge(model, profile)))
        .chain([(None, judge_exchanges(worker_exchanges, model, profile))])
        .collect();
    let strict = judge(
        observations,
        worker_exchanges,
        model,
        ProfileChoice::Exactly(&Profile::OPENAI),
    );
    let release = config.dynamo_version.to_string();
    let mut cells = api_cells(&own, &strict.checks, &release);
    let (name, mut cell) = survival_cell(&breaks.by, &release);
    if breaks.kept {
        cell.observed
            .push_str(" (a graph this run did not start: not restarted, the probes after went on)");
    }
    if let Some(e) = &breaks.unrestartable {
        cell.mark = Mark::Fail;
        let _ = write!(
            cell.observed,
            "; the restart failed ({e}), so the probes after were not sent"
        );
    }
    cells.push((name, cell));
    Ok(cells)
}

/// The `graph.survives_probes` row. `broken_by` holds the probes ([`ApiProbe::name`]) after which
/// the frontend no longer answered a plain chat; `release` is the version as PyPI spells it. PASS
/// when none; KNOWN when the release's findings record each of them as breaking the graph (a
/// finding of `guide::api::<probe>` whose requests are withheld under `run`); FAIL otherwise.
pub fn survival_cell(broken_by: &[&str], release: &str) -> (String, Cell) {
    let recorded = |probe: &&str| {
        crate::findings::FINDINGS.iter().any(|f| {
            f.records(release)
                && f.cases.contains(&format!("guide::api::{probe}").as_str())
                && !f.withheld.is_empty()
        })
    };
    let mark = if broken_by.is_empty() {
        Mark::Pass
    } else if broken_by.iter().all(recorded) {
        Mark::Known
    } else {
        Mark::Fail
    };
    let observed = if broken_by.is_empty() {
        "no probe broke the graph".to_string()
    } else {
        format!(
            "the frontend no longer answered a plain chat after {}; the release's processes were restarted before any probe that followed",
            broken_by.join(", ")
        )
    };
    ("graph.survives_probes".into(), Cell { mark, observed })
}

/// Whether the frontend answers a plain chat of 4 tokens with 200.
async fn serves_chat(frontend: &Endpoint, model: &str) -> bool {
    let body = json!({
        "model": model,
        "messages": [{"role": "user", "content": "hello"}],
        "max_tokens": 4,
    });
    matches!(
        frontend.post_json("/v1/chat/completions", &body).await,
        Answer::Answered(c) if c.status == 200
    )
}

/// One release's running processes, as the `api` tier reaches them.
struct ApiGraph {
    frontend: Endpoint,
    workers: Vec<Endpoint>,
    started_here: bool,
    /// Held while probing: a graph started without `linger` stops once no one holds it.
    local: crate::dynamo::LocalDynamo,
}

impl ApiGraph {
    fn start(config: &Config, exe: &Path) -> Result<ApiGraph, String> {
        let local =
            crate::dynamo::LocalDynamo::attach(config, exe, false).map_err(|e| e.to_string())?;
        let timeouts = config.api_timeouts;
        let endpoint = |url: &str| Endpoint::new(url, timeouts).map_err(|e| e.to_string());
        Ok(ApiGraph {
            frontend: endpoint(&local.state.frontend_url)?,
            workers: local
                .state
                .workers
                .iter()
                .map(|w| endpoint(&w.system_url))
                .collect::<Result<_, _>>()?,
            started_here: local.started_here,
            local,
        })
    }

    fn stop(self, config: &Config) -> Result<(), String> {
        drop(self.local);
        if self.started_here {
            crate::dynamo::stop(config).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    fn restart(self, config: &Config, exe: &Path) -> Result<ApiGraph, String> {
        self.stop(config)?;
        ApiGraph::start(config, exe)
    }
}

/// Runs `tier` on each of `versions` in turn, printing progress (column n of N, elapsed);
/// `graph` runs `exe run` per release, its report under `out/graph-<label>`. With `skew`, then
/// each pair of neighbouring releases `(a, b)` twice more: `b`'s frontend with `a`'s workers
/// (N-1) and the reverse, as Dynamo's own cross-version tests pair them.
pub fn run(
    base: &Config,
    exe: &Path,
    tier: Tier,
    versions: &[DynamoVersion],
    skew: bool,
    out: &Path,
) -> Matrix {
    let turns = turns(versions, skew);
    let mut matrix = Matrix::new(tier);
    let started = Instant::now();
    let total = turns.len();
    for (n, (version, workers)) in turns.into_iter().enumerate() {
        let config = Config {
            dynamo_version: version,
            workers_version: workers,
            ..base.clone()
        };
        let mut column = Column::of(version, workers);
        let label = column.label();
        eprintln!(
            "matrix: column {}/{total} Dynamo {label} ({}), {} tier, {:.0} s elapsed",
            n + 1,
            version.judged_by(),
            tier.name(),
            started.elapsed().as_secs_f64()
        );
        let began = Instant::now();
        let cells = match (column.unservable, tier) {
            (true, _) => Err(column.failure.take().unwrap_or_default()),
            (false, Tier::Api) => api_release(&config, exe),
            (false, Tier::Graph) => graph_release(
                &config,
                exe,
                &out.join(format!(
                    "graph-{}",
                    label.replace(" + workers ", "+workers-")
                )),
            ),
        };
        column.took = began.elapsed();
        let cells = match cells {
            Ok(cells) => cells,
            Err(e) => {
                column.failure = Some(e);
                Vec::new()
            }
        };
        let failed = cells
            .iter()
            .filter(|(id, c)| {
                matches!(c.mark, Mark::Fail | Mark::Blocked) && !id.starts_with("openai ")
            })
            .count();
        eprintln!(
            "matrix: column {}/{total} Dynamo {label}: {} in {:.0} s",
            n + 1,
            match &column.failure {
                Some(e) => format!("not run: {e}"),
                None => format!("{} rows, {failed} failed", cells.len()),
            },
            column.took.as_secs_f64()
        );
        let mut all = facts(version);
        all.extend(cells);
        matrix.push(column, all);
    }
    matrix
}

/// The release table's facts about `version` as `release.*` rows ([`Mark::Fact`]): its planes
/// (seen running it here), its graph CRD versions and its operator's naming rules (read from the
/// operator's source), and whether its frontend asks the Hugging Face Hub (seen here).
pub fn facts(version: DynamoVersion) -> Vec<(String, Cell)> {
    let release = version.release();
    let crd = release.graph_crd;
    let fact = |id: &str, value: String| {
        (
            id.to_string(),
            Cell {
                mark: Mark::Fact,
                observed: value,
            },
        )
    };
    vec![
        fact("release.planes", release.planes.describe().to_string()),
        fact(
            "release.graph_crd",
            format!(
                "{} served, {} stored",
                if crd.serves_v1beta1() {
                    "v1alpha1 and v1beta1"
                } else {
                    "v1alpha1"
                },
                crd.stored()
            ),
        ),
        fact(
            "release.operator_rules",
            match version.profile().operator_rules {
                crate::profile::OperatorRules::V0_4 => "components <graph>-<service>".into(),
                crate::profile::OperatorRules::V1 => "workers <graph>-<service>-<hash>, \
                                                      labelled with the graph and the hash; \
                                                      per-service status"
                    .into(),
            },
        ),
        fact(
            "release.model_lookup",
            if release.asks_the_hub {
                "asks the Hugging Face Hub's API".into()
            } else {
                "offline (HF_HUB_OFFLINE=1 honoured)".into()
            },
        ),
    ]
}

/// The columns to run, in order: each release, then under `skew` for each pair of neighbours
/// the newer's frontend with the older's workers and the reverse (frontend, workers).
fn turns(versions: &[DynamoVersion], skew: bool) -> Vec<(DynamoVersion, Option<DynamoVersion>)> {
    let mut turns: Vec<_> = versions.iter().map(|v| (*v, None)).collect();
    if skew {
        for pair in versions.windows(2) {
            turns.push((pair[1], Some(pair[0])));
            turns.push((pair[0], Some(pair[1])));
        }
    }
    turns
}

/// Runs the guide's cases on the local provider for one release (a child `run`, its output
/// passed through), then reads its report.
fn graph_release(
    config: &Config,
    exe: &Path,
    report_dir: &Path,
) -> Result<Vec<(String, Cell)>, String> {
    let status = std::process::Command::new(exe)
        .args(["run", "--provider", "local", "--dynamo-version"])
        .arg(config.dynamo_version.to_string())
        .args(
            config
                .workers_version
                .map(|w| vec!["--workers-version".to_string(), w.to_string()])
                .unwrap_or_default(),
        )
        .arg("--model")
        .arg(&config.model)
        .arg("--cache-dir")
        .arg(&config.cache_dir)
        .arg("--report-dir")
        .arg(report_dir)
        .status()
        .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
    let path = report_dir.join("report.json");
    let text = std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "the run exited with {status} and left no report ({}: {e})",
            path.display()
        )
    })?;
    let report: Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(graph_cells(&report))
}

/// Errors of the matrix command.
#[derive(Debug, thiserror::Error)]
pub enum MatrixError {
    /// `--tier` other than `api` or `graph`.
    #[error("unknown tier '{0}' (expected api or graph)")]
    UnknownTier(String),
    /// `--releases` named a release the suite cannot judge.
    #[error("--releases: {0}")]
    Release(#[from] ReleaseError),
    /// `--releases` named none.
    #[error("--releases names no release (give e.g. 0.4.1,1.6.1 or all)")]
    NoReleases,
    /// A report file could not be written.
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(mark: Mark, observed: &str) -> Cell {
        Cell {
            mark,
            observed: observed.into(),
        }
    }

    fn column(version: &str) -> Column {
        Column {
            version: version.into(),
            workers: None,
            judged_by: "profile x".into(),
            took: Duration::from_secs(1),
            failure: None,
            unservable: false,
            simulated: None,
        }
    }

    #[test]
    fn a_graph_broken_by_a_probe_fails_unless_the_releases_findings_record_that_probe() {
        assert_eq!(survival_cell(&[], "1.0.2").1.mark, Mark::Pass);
        let known = survival_cell(&["stop_sequence", "invalid_parameters_rejected"], "1.0.2").1;
        assert_eq!(known.mark, Mark::Known);
        assert!(
            known
                .observed
                .contains("after stop_sequence, invalid_parameters_rejected")
        );
        assert_eq!(
            survival_cell(&["non_ascii_text"], "1.0.2").1.mark,
            Mark::Fail
        );
        // Recorded, but not as breaking the graph (nothing withheld under run).
        assert_eq!(survival_cell(&["n_choices"], "1.0.2").1.mark, Mark::Fail);
        assert_eq!(
            survival_cell(&["stop_sequence"], "1.6.1").1.mark,
            Mark::Fail
        );
    }

    #[test]
    fn the_release_tables_facts_show_where_each_changed() {
        let v = |s: &str| s.parse::<DynamoVersion>().unwrap();
        let mut m = Matrix::new(Tier::Api);
        for version in ["0.9.1", "1.0.2", "1.1.1", "1.2.1"] {
            m.push(column(version), facts(v(version)));
        }
        let changed: Vec<(String, Vec<String>)> = m
            .changes()
            .into_iter()
            .map(|((_, to), changes)| (to, changes.into_iter().map(|c| c.row).collect()))
            .collect();
        assert_eq!(
            changed,
            [
                (
                    "1.0.2".to_string(),
                    vec![
                        "release.operator_rules".to_string(),
                        "release.model_lookup".to_string()
                    ]
                ),
                ("1.1.1".to_string(), vec!["release.planes".to_string()]),
                ("1.2.1".to_string(), vec!["release.graph_crd".to_string()]),
            ]
        );
        let md = m.markdown();
        assert!(
            md.contains("| `release.graph_crd` | v1alpha1 served, v1alpha1 stored |"),
            "{md}"
        );
        assert!(
            md.contains("- `release.planes`: etcd and NATS → file discovery"),
            "{md}"
        );
        assert!(m.failures_of(3).is_empty());
    }

    #[test]
    fn a_skew_across_planes_is_a_column_not_run_that_says_why() {
        let v = |s: &str| s.parse::<DynamoVersion>().unwrap();
        let columns: Vec<Column> = turns(&[v("1.0.2"), v("1.1.1")], true)
            .into_iter()
            .map(|(version, workers)| Column::of(version, workers))
            .collect();
        let labels: Vec<String> = columns.iter().map(Column::label).collect();
        assert_eq!(
            labels,
            [
                "1.0.2",
                "1.1.1",
                "1.1.1 + workers 1.0.2",
                "1.0.2 + workers 1.1.1"
            ]
        );
        let unservable: Vec<bool> = columns.iter().map(|c| c.unservable).collect();
        assert_eq!(unservable, [false, false, true, true]);
        let why = columns[2].failure.as_deref().unwrap();
        assert!(
            why.starts_with("Dynamo 1.0.2's workers cannot serve beside Dynamo 1.1.1's frontend"),
            "{why}"
        );
        assert!(columns[0].failure.is_none());
        assert_eq!(turns(&[v("1.0.2"), v("1.1.1")], false).len(), 2);
    }

    #[test]
    fn a_release_whose_frontend_asks_the_hub_says_the_hub_was_simulated() {
        let v = |s: &str| s.parse::<DynamoVersion>().unwrap();
        let asks = Column::of(v("0.8.1"), None);
        assert!(!asks.unservable);
        let said = asks.simulated.clone().unwrap();
        assert!(
            said.contains("Hugging Face Hub simulated by olah"),
            "{said}"
        );
        assert!(Column::of(v("0.9.1"), Some(v("0.8.1"))).simulated.is_some());
        assert!(Column::of(v("0.7.1"), Some(v("0.8.1"))).simulated.is_some());
        assert!(Column::of(v("0.7.1"), None).simulated.is_none());
        let mut m = Matrix::new(Tier::Api);
        m.push(asks, vec![("a".into(), cell(Mark::Pass, ""))]);
        assert!(m.markdown().contains("Hugging Face Hub simulated by olah"));
        assert!(
            m.json()["releases"][0]["simulated"]
                .as_str()
                .unwrap()
                .contains("olah")
        );
        assert!(m.html().contains("Hugging Face Hub simulated by olah"));
    }

    #[test]
    fn releases_parse_sorted_and_all_means_every_runnable_row() {
        let v: Vec<String> = releases("1.6.1,0.4.1,1.6.1")
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(v, ["0.4.1", "1.6.1"]);
        assert_eq!(releases("all").unwrap().len(), DynamoVersion::all().count());
        assert!(matches!(releases(" , "), Err(MatrixError::NoReleases)));
        assert!(
            releases("0.4.1,latest")
                .unwrap_err()
                .to_string()
                .contains("'latest' is not a Dynamo release number")
        );
        assert!(matches!(
            "web".parse::<Tier>(),
            Err(MatrixError::UnknownTier(_))
        ));
    }

    #[test]
    fn a_rule_fails_on_its_first_violation_and_keeps_a_passing_note() {
        let mut own = Checks::default();
        own.pass(Rule::ModelsEntry, "GET /v1/models");
        own.fail(
            Rule::StreamUsage,
            "POST /v1/completions (stream)",
            "usage at the end",
            "usage in chunk 1",
        );
        own.fail(
            Rule::StreamUsage,
            "POST /v1/chat/completions (stream)",
            "usage at the end",
            "usage in chunk 2",
        );
        own.pass_noting(
            Rule::ErrorBody,
            "POST /v1/completions",
            "saw {\"error\": \"<message>\"}",
        );
        let mut strict = Checks::default();
        strict.fail(
            Rule::ErrorBody,
            "POST /v1/completions",
            "an OpenAI envelope",
            "{\"error\": \"Model not found\"}",
        );
        let cells = api_cells(&[(None, own)], &strict, "9.9.9");
        let ids: Vec<&str> = cells.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(
            ids,
            [
                Rule::ModelsEntry.id(),
                Rule::StreamUsage.id(),
                Rule::ErrorBody.id(),
                &format!("openai {}", Rule::ErrorBody.id())
            ]
        );
        assert_eq!(
            cells[1].1,
            cell(
                Mark::Fail,
                "POST /v1/completions (stream): usage in chunk 1"
            )
        );
        assert_eq!(
            cells[2].1,
            cell(Mark::Pass, "saw {\"error\": \"<message>\"}")
        );
        assert_eq!(cells[3].1.mark, Mark::Fail);
    }

    #[test]
    fn a_broken_rule_is_known_only_under_the_probe_whose_finding_names_it() {
        let finding = &crate::findings::FINDINGS[0];
        let rule = finding.rules[0];
        let mut broken = Checks::default();
        broken.fail(rule, "POST /v1/completions", "x", "y");
        let under = |case: &str| vec![(Some(case.to_string()), broken.clone())];
        let cells = api_cells(
            &under(finding.cases[0]),
            &Checks::default(),
            finding.releases[0],
        );
        assert_eq!(cells[0].1.mark, Mark::Known);
        // Another release, another probe, or the workers' checks: the finding does not excuse it.
        let cells = api_cells(&under(finding.cases[0]), &Checks::default(), "9.9.9");
        assert_eq!(cells[0].1.mark, Mark::Fail);
        let cells = api_cells(
            &under("guide::api::chat_stream"),
            &Checks::default(),
            finding.releases[0],
        );
        assert_eq!(cells[0].1.mark, Mark::Fail);
        let cells = api_cells(
            &[(None, broken.clone())],
            &Checks::default(),
            finding.releases[0],
        );
        assert_eq!(cells[0].1.mark, Mark::Fail);
        // A known break and an unknown one of the same rule: the row fails, naming the unknown.
        let mut other = Checks::default();
        other.fail(rule, "POST /v1/chat/completions (stream)", "x", "z");
        let mut both = under(finding.cases[0]);
        both.push((Some("guide::api::chat_stream".into()), other));
        let cells = api_cells(&both, &Checks::default(), finding.releases[0]);
        assert_eq!(
            cells[0].1,
            cell(Mark::Fail, "POST /v1/chat/completions (stream): z")
        );
    }

    #[test]
    fn a_stop_sequence_that_breaks_a_stream_is_known_in_each_of_the_three_shapes_a_frontend_gives_it()
     {
        // Seen on 1.4.2 (2026-12-02): 200, a chunk, then `data: {"error": {"code": 500, …}}` and
        // [DONE]; on 1.3.1 a 500 before the stream; on 0.6.1 a stream cut after one event.
        for release in ["0.6.1", "1.3.1", "1.4.2"] {
            for rule in [
                Rule::StreamStatus,
                Rule::StreamErrorEvent,
                Rule::StreamTerminated,
            ] {
                let mut broken = Checks::default();
                broken.fail(rule, "POST /v1/chat/completions (stream)", "x", "y");
                let cells = api_cells(
                    &[(Some("guide::api::stop_sequence".into()), broken)],
                    &Checks::default(),
                    release,
                );
                assert_eq!(cells[0].1.mark, Mark::Known, "{release} {rule:?}");
            }
        }
    }

    #[test]
    fn changes_are_verdicts_or_failure_shapes_that_differ_between_neighbours() {
        let mut m = Matrix::new(Tier::Api);
        m.push(
            column("0.4.1"),
            vec![
                (
                    "models.object".into(),
                    cell(Mark::Fail, "\"object\": \"object\""),
                ),
                (
                    "openai error.body".into(),
                    cell(Mark::Fail, "{\"error\": \"Model not found\"}"),
                ),
                (
                    "response.text".into(),
                    cell(Mark::Fail, "text \"abc\" of 12 tokens"),
                ),
                ("only.old".into(), cell(Mark::Pass, "")),
            ],
        );
        m.push(column("1.6.1"), vec![
            ("models.object".into(), cell(Mark::Pass, "")),
            ("openai error.body".into(), cell(Mark::Fail, "{\"message\": \"Model x not found\", \"type\": \"NotFound\", \"code\": 404}")),
            ("response.text".into(), cell(Mark::Fail, "text \"xyz\" of 7 tokens")),
            ("only.new".into(), cell(Mark::Pass, "")),
        ]);
        let changes = m.changes();
        assert_eq!(changes.len(), 1);
        let rows: Vec<&str> = changes[0].1.iter().map(|c| c.row.as_str()).collect();
        assert_eq!(
            rows,
            ["models.object", "openai error.body", "only.old", "only.new"]
        );
        assert_eq!(m.failures_of(1), ["response.text"]);
        let md = m.markdown();
        assert!(md.contains("| `models.object` | FAIL [1] | PASS |"), "{md}");
        assert!(md.contains("### 0.4.1 → 1.6.1"), "{md}");
        let html = m.html();
        assert!(
            html.contains("title=\"&quot;object&quot;: &quot;object&quot;\""),
            "{html}"
        );
        assert_eq!(m.json()["rows"][4]["cells"][0], Value::Null);
    }

    #[test]
    fn a_flip_between_passing_and_a_break_both_releases_record_is_set_apart() {
        // 0.9.1 and 1.0.2 both record the stop sequence's streamed break; 1.0.2 alone records
        // plain-text errors for invalid JSON.
        let mut m = Matrix::new(Tier::Api);
        m.push(
            column("0.9.1"),
            vec![
                ("stream.status".into(), cell(Mark::Pass, "")),
                ("openai stream.status".into(), cell(Mark::Pass, "")),
                ("error.body".into(), cell(Mark::Pass, "")),
            ],
        );
        m.push(
            column("1.0.2"),
            vec![
                ("stream.status".into(), cell(Mark::Known, "500")),
                ("openai stream.status".into(), cell(Mark::Fail, "500")),
                ("error.body".into(), cell(Mark::Known, "plain text")),
            ],
        );
        let changes = &m.changes()[0].1;
        let set_apart: Vec<(&str, bool)> = changes
            .iter()
            .map(|c| (c.row.as_str(), c.recorded_by_both))
            .collect();
        assert_eq!(
            set_apart,
            [
                ("stream.status", true),
                ("openai stream.status", true),
                ("error.body", false)
            ]
        );
        let md = m.markdown();
        assert!(md.contains("- `error.body`: PASS → KNOWN"), "{md}");
        assert!(!md.contains("- `stream.status`"), "{md}");
        assert!(
            md.contains(&format!(
                "{RECORDED_BY_BOTH}: `stream.status`, `openai stream.status`"
            )),
            "{md}"
        );
        assert_eq!(
            m.json()["changes"][0]["rows"][0]["recorded_by_both"],
            Value::Bool(true)
        );
    }

    #[test]
    fn a_skew_column_is_compared_with_its_frontends_own_release() {
        let mut m = Matrix::new(Tier::Api);
        m.push(column("1.5.1"), vec![("a".into(), cell(Mark::Pass, ""))]);
        m.push(column("1.6.1"), vec![("a".into(), cell(Mark::Pass, ""))]);
        let skew = |frontend: &str, workers: &str| Column {
            workers: Some(workers.into()),
            ..column(frontend)
        };
        m.push(
            skew("1.6.1", "1.5.1"),
            vec![("a".into(), cell(Mark::Fail, "no model"))],
        );
        m.push(
            skew("1.5.1", "1.6.1"),
            vec![("a".into(), cell(Mark::Pass, ""))],
        );
        let pairs: Vec<(String, String)> = m.changes().into_iter().map(|(p, _)| p).collect();
        assert_eq!(
            pairs,
            [
                ("1.5.1".to_string(), "1.6.1".to_string()),
                ("1.6.1".to_string(), "1.6.1 + workers 1.5.1".to_string()),
                ("1.5.1".to_string(), "1.5.1 + workers 1.6.1".to_string()),
            ]
        );
        let changes = m.changes();
        assert!(changes[0].1.is_empty() && changes[2].1.is_empty());
        assert_eq!(changes[1].1[0].row, "a");
        assert!(m.markdown().contains("| 1.6.1 + workers 1.5.1 |"));
        assert_eq!(m.json()["releases"][2]["workers"], "1.5.1");
        assert!(m.html().contains("1.6.1 + workers 1.5.1"));
    }

    #[test]
    fn a_release_that_could_not_run_is_stepped_over() {
        let mut m = Matrix::new(Tier::Api);
        m.push(column("0.4.1"), vec![("a".into(), cell(Mark::Pass, ""))]);
        m.push(
            Column {
                failure: Some("cannot install".into()),
                ..column("1.6.1")
            },
            Vec::new(),
        );
        assert!(m.changes().is_empty());
        m.push(column("1.7.0"), vec![("a".into(), cell(Mark::Fail, "x"))]);
        let changes = m.changes();
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].0, ("0.4.1".to_string(), "1.7.0".to_string()));
    }

    #[test]
    fn graph_cells_follow_the_reports_outcomes() {
        let report = json!({"cases": [
            {"name": "guide::a", "outcome": "passed", "detail": ""},
            {"name": "guide::b", "outcome": "known_failure", "detail": "recorded"},
            {"name": "guide::c", "outcome": "skipped", "detail": "why"},
            {"name": "guide::d", "outcome": "failed", "detail": "what"},
            {"name": "guide::e", "outcome": "blocked", "detail": "blocked by guide::d"},
        ]});
        let marks: Vec<Mark> = graph_cells(&report)
            .into_iter()
            .map(|(_, c)| c.mark)
            .collect();
        assert_eq!(
            marks,
            [
                Mark::Pass,
                Mark::Known,
                Mark::Skip,
                Mark::Fail,
                Mark::Blocked
            ]
        );
    }
}
