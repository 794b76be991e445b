//! The ordered conformance cases, as libtest-mimic trials shared by `cargo nextest` and `run`.

pub mod blocker;
pub mod cluster;
pub mod graph;

use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use libtest_mimic::{Failed, Trial};

use self::blocker::{Need, Unmet};
use crate::config::Config;
use crate::dynamo::WorkerRole;
use crate::k8s::forward::PortForward;
use crate::metrics;
use crate::openai::probe::{self, Exchange, Expectation};
use crate::openai::{ApiKind, ApiProbe, Endpoint, GenerationRequest, Rule};
use crate::profile::Profile;

/// What a case checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaseCheck {
    /// A worker's system port answers `/health` ready and `/live`.
    WorkerHealth(WorkerRole),
    /// One API probe against the frontend.
    Api(ApiProbe),
    /// The prefill worker served the requests.
    Disaggregation,
    /// A check of the cluster tier.
    Cluster(cluster::ClusterCheck),
}

/// A named, ordered case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Case {
    /// Hierarchical name, e.g. `guide::api::completion_stream`.
    pub name: String,
    /// What it checks.
    pub check: CaseCheck,
    /// Why it cannot run with this configuration, if it cannot.
    pub skip: Option<String>,
}

/// Every case for `config`, in the guide's order. Listing makes no network call.
pub fn cases(config: &Config) -> Vec<Case> {
    let profile = config.dynamo_version.profile();
    let mut cases = cluster::cases(config);
    // The guide's queries first, then what each worker's own system port says.
    for api in ApiProbe::ALL.into_iter().chain(ApiProbe::EDGES) {
        cases.push(Case {
            name: api.case(),
            check: CaseCheck::Api(api),
            skip: None,
        });
    }
    for role in [WorkerRole::Decode, WorkerRole::Prefill] {
        cases.push(Case {
            name: format!("guide::workers::{}_health", role.as_str()),
            check: CaseCheck::WorkerHealth(role),
            skip: None,
        });
    }
    cases.push(Case {
        name: "guide::workers::disaggregation".into(),
        check: CaseCheck::Disaggregation,
        skip: (!profile.disaggregation_observable).then(|| {
            format!(
                "Dynamo {}'s mocker is aggregated only, so no prefill worker can show it served a request",
                config.dynamo_version
            )
        }),
    });
    cases
}

/// What a case run found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every check held.
    Passed(String),
    /// At least one check failed, or the target could not be reached.
    Failed(String),
    /// Failed exactly as the release's recorded finding says ([`crate::findings`]): the
    /// release's fault, on record; it does not fail the run.
    KnownFailure(String),
    /// Not run, for the stated reason.
    Skipped(String),
    /// Not run: what it needs failed first in another case, which reports the cause.
    Blocked(blocker::Blocker),
}

impl From<blocker::Unmet> for Outcome {
    fn from(unmet: blocker::Unmet) -> Outcome {
        match unmet {
            blocker::Unmet::Failed(cause) => Outcome::Failed(cause),
            blocker::Unmet::Blocked(by) => Outcome::Blocked(by),
        }
    }
}

/// One case's result, for reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseResult {
    /// The case name.
    pub name: String,
    /// What it found.
    pub outcome: Outcome,
    /// How long it took.
    pub duration: Duration,
}

/// The endpoints the cases run against, and what is real or simulated behind them.
#[derive(Debug)]
pub struct Target {
    /// The frontend, through a port-forward to the pod its Service resolves to.
    pub frontend: Endpoint,
    /// Each worker's system port, through a port-forward to its pod.
    pub workers: Vec<(WorkerRole, Endpoint)>,
    /// The served model.
    pub model: String,
    /// The profile the answers are judged against.
    pub profile: &'static Profile,
    /// What is real and what is simulated, one line.
    pub provenance: String,
    /// Where the processes' logs are.
    pub logs: String,
    frontend_forward: PortForward,
    worker_forwards: Vec<(WorkerRole, PortForward)>,
    pods: kube::Api<k8s_openapi::api::core::v1::Pod>,
}

/// Which port-forward a case went through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Frontend,
    Worker(WorkerRole),
}

impl Target {
    fn forward(&self, route: Route) -> Option<&PortForward> {
        match route {
            Route::Frontend => Some(&self.frontend_forward),
            Route::Worker(role) => self
                .worker_forwards
                .iter()
                .find(|(r, _)| *r == role)
                .map(|(_, f)| f),
        }
    }

    /// The route and the pod behind it as they stand now: gone, not Ready, or its process's state.
    async fn describe_route(&self, route: Route) -> String {
        let Some(forward) = self.forward(route) else {
            return String::new();
        };
        let name = forward.pod.rsplit('/').next().unwrap_or_default();
        let pod = match self.pods.get_opt(name).await {
            Ok(Some(pod)) => crate::stages::graph::pod_summary(&pod),
            Ok(None) => format!("pod {} no longer exists", forward.pod),
            Err(e) => format!("cannot read pod {}: {e}", forward.pod),
        };
        format!("via {}; now: {pod}", forward.describe())
    }
}

fn acquire(config: &Config, supervisor_exe: &Path, case: &str) -> Result<Target, Unmet> {
    let runtime = runtime().map_err(Unmet::Failed)?;
    let graph = runtime.block_on(graph::graph_target(config, supervisor_exe, case))?;
    let endpoint = |url: &str| {
        Endpoint::new(url, config.api_timeouts)
            .map_err(|e| blocker::blockers().fail(case, Need::Target, e.to_string()))
    };
    let frontend = endpoint(&graph.frontend.url())?;
    let mut workers = Vec::new();
    for (role, forward) in &graph.workers {
        workers.push((*role, endpoint(&forward.url())?));
    }
    Ok(Target {
        frontend,
        workers,
        model: config.model.clone(),
        profile: config.dynamo_version.profile(),
        provenance: graph.provenance,
        logs: graph.logs,
        frontend_forward: graph.frontend,
        worker_forwards: graph.workers,
        pods: graph.pods,
    })
}

/// Brings up (or reaches) the configured provider's cluster for this process, before any case,
/// so that builds and cluster creation are not counted in a case's time; how long it took.
pub fn prepare(config: &Config, exe: &Path) -> Result<Duration, String> {
    let started = Instant::now();
    let runtime = runtime()?;
    runtime.block_on(cluster::session(config, exe))?;
    Ok(started.elapsed())
}

/// The preflight of the configured provider's cluster ([`crate::preflight`]), reaching (or, for
/// `local` and `kind`, bringing up) the cluster first. Nothing of the guide is applied.
pub fn preflight(config: &Config, exe: &Path) -> Result<crate::preflight::Preflight, String> {
    let runtime = runtime()?;
    runtime.block_on(async {
        let session = cluster::session(config, exe).await?;
        Ok(crate::preflight::run(&session.cluster, config).await)
    })
}

static TARGET: OnceLock<Result<Target, Unmet>> = OnceLock::new();

/// The process-wide target, acquired once (by `case`, the first to ask) and shared by every case
/// in this process; a later case finds a failure to acquire it recorded as its blocker.
fn target(config: &Config, supervisor_exe: &Path, case: &str) -> Result<&'static Target, Unmet> {
    if let Some(blocker) = blocker::blockers().find(Need::Target) {
        return Err(Unmet::Blocked(blocker));
    }
    TARGET
        .get_or_init(|| acquire(config, supervisor_exe, case))
        .as_ref()
        .map_err(Clone::clone)
}

/// The target this process acquired, if any case acquired one.
pub fn acquired_target() -> Option<&'static Target> {
    TARGET.get().and_then(|t| t.as_ref().ok())
}

async fn failed(target: &Target, routes: &[Route], lines: Vec<String>) -> Outcome {
    let mut via = Vec::new();
    for route in routes {
        via.push(target.describe_route(*route).await);
    }
    Outcome::Failed(format!(
        "{}\n{}\nlogs: {}\n{}",
        lines.join("\n"),
        via.join("\n"),
        target.logs,
        target.provenance
    ))
}

async fn verdict(target: &Target, routes: &[Route], checks: crate::openai::Checks) -> Outcome {
    if checks.all_passed() {
        Outcome::Passed(format!(
            "{} checks held (profile {}); {}",
            checks.len(),
            target.profile,
            target.provenance
        ))
    } else {
        failed(
            target,
            routes,
            checks.violations().map(ToString::to_string).collect(),
        )
        .await
    }
}

/// A case's outcome held against its release's recorded findings for it: rules broken that the
/// findings name, and no other, is a known failure; none broken means the record is stale.
fn against_finding(
    outcome: Outcome,
    violated: &[Rule],
    findings: &[&crate::findings::Finding],
) -> Outcome {
    if findings.is_empty() {
        return outcome;
    }
    let record = findings
        .iter()
        .map(|finding| {
            format!(
                "recorded finding of Dynamo {}: {} (breaks {})",
                match finding.releases {
                    [first, .., last] if finding.releases.len() > 3 => {
                        format!("{first}, …, {last} ({} releases)", finding.releases.len())
                    }
                    releases => releases.join(", "),
                },
                finding.seen,
                finding
                    .rules
                    .iter()
                    .map(|r| r.id())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    let recorded = |rule: &Rule| findings.iter().any(|f| f.rules.contains(rule));
    match outcome {
        Outcome::Passed(_) => Outcome::Failed(format!(
            "the release no longer breaks what its finding records; update harness/src/findings.rs\n{record}"
        )),
        Outcome::Failed(message) if violated.iter().all(recorded) => {
            Outcome::KnownFailure(format!("{record}\n{message}"))
        }
        Outcome::Failed(message) => Outcome::Failed(format!("{message}\nbeyond the {record}")),
        other => other,
    }
}

async fn run_check(
    check: CaseCheck,
    name: &str,
    target: &Target,
    config: &Config,
    transcript: &mut Vec<Exchange>,
) -> Outcome {
    match check {
        CaseCheck::Api(api) => {
            let findings = crate::findings::for_case(config.dynamo_version, name);
            let withheld: Vec<_> = findings.iter().flat_map(|f| f.withheld).copied().collect();
            let why = findings
                .iter()
                .filter(|f| !f.withheld.is_empty())
                .map(|f| f.seen)
                .collect::<Vec<_>>()
                .join("; ");
            let observation = api
                .observe_withholding(&target.frontend, &target.model, &withheld, &why)
                .await;
            // Generations go through the frontend to the workers: a failure names them all.
            let routes = [
                Route::Frontend,
                Route::Worker(WorkerRole::Decode),
                Route::Worker(WorkerRole::Prefill),
            ];
            let checks = observation.judge(&target.model, target.profile);
            transcript.extend(observation.exchanges);
            let violated = checks.violated_rules();
            let outcome = verdict(target, &routes, checks).await;
            against_finding(outcome, &violated, &findings)
        }
        CaseCheck::WorkerHealth(role) => match target.workers.iter().find(|(r, _)| *r == role) {
            None => {
                failed(
                    target,
                    &[],
                    vec![format!(
                        "the graph has no ready {} worker pod",
                        role.as_str()
                    )],
                )
                .await
            }
            Some((_, system)) => {
                let exchanges: Vec<Exchange> =
                    probe::observe_worker(system, &target.frontend, &target.model).await;
                let checks = probe::judge_exchanges(&exchanges, &target.model, target.profile);
                transcript.extend(exchanges);
                verdict(target, &[Route::Worker(role)], checks).await
            }
        },
        CaseCheck::Disaggregation => disaggregation(target).await,
        CaseCheck::Cluster(_) => unreachable!("cluster checks run without a Dynamo target"),
    }
}

const PREFILL_COUNTER: &str = "dynamo_component_requests_total";

async fn prefill_served(system: &Endpoint) -> Result<f64, String> {
    let capture = match system.get("/metrics").await {
        crate::openai::Answer::Answered(c) if c.status == 200 => c,
        crate::openai::Answer::Answered(c) => {
            return Err(format!("prefill /metrics answered {}", c.status));
        }
        crate::openai::Answer::Unanswered(reason) => {
            return Err(format!("prefill /metrics: {reason}"));
        }
    };
    let labels = [
        ("dynamo_component", "prefill"),
        ("dynamo_endpoint", "generate"),
    ];
    metrics::counter_sum(&capture.body, PREFILL_COUNTER, &labels)
        .map(|v| v.unwrap_or(0.0))
        .map_err(|e| e.to_string())
}

/// Sends requests through the frontend and proves the prefill worker counted each of them.
async fn disaggregation(target: &Target) -> Outcome {
    let routes = [Route::Frontend, Route::Worker(WorkerRole::Prefill)];
    let Some((_, prefill)) = target
        .workers
        .iter()
        .find(|(r, _)| *r == WorkerRole::Prefill)
    else {
        return failed(
            target,
            &[],
            vec!["the graph has no ready prefill worker pod".into()],
        )
        .await;
    };
    let before = match prefill_served(prefill).await {
        Ok(v) => v,
        Err(e) => return failed(target, &routes, vec![e]).await,
    };
    const REQUESTS: u32 = 3;
    let mut exchanges = Vec::new();
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    for i in 0..REQUESTS {
        let request = GenerationRequest::new(ApiKind::Completions, &target.model, 8);
        // A prompt no other case sent: a cached prefix on the decode worker would let the router
        // skip the remote prefill.
        let mut body = request.body();
        body["prompt"] = format!(
            "Request {i} of {run}: {}",
            body["prompt"].as_str().unwrap_or_default()
        )
        .into();
        let captured =
            probe::Captured::Http(target.frontend.post_json(request.kind.path(), &body).await);
        exchanges.push(Exchange {
            expectation: Expectation::Generation(request),
            captured,
        });
    }
    let mut checks = probe::judge_exchanges(&exchanges, &target.model, target.profile);
    let after = match prefill_served(prefill).await {
        Ok(v) => v,
        Err(e) => return failed(target, &routes, vec![e]).await,
    };
    // 1.x's router prefills locally when the prefill worker is busy (other cases run beside this
    // one under nextest), so one remote prefill proves the path; all of them is not promised.
    let served = after - before;
    checks.expect(
        Rule::DisaggPrefillServed,
        "prefill worker /metrics",
        served >= 1.0,
        format!(
            "{PREFILL_COUNTER}{{dynamo_component=\"prefill\",dynamo_endpoint=\"generate\"}} up by at least 1 for {REQUESTS} requests"
        ),
        || format!("{before} before, {after} after"),
    );
    match verdict(target, &routes, checks).await {
        Outcome::Passed(message) => Outcome::Passed(format!(
            "the prefill worker served {served} of {REQUESTS} requests; {message}"
        )),
        other => other,
    }
}

/// Runs one case to its outcome, acquiring the target first. A failure's message ends with
/// where its evidence bundle is and the diagnoses the bundle supports ([`crate::evidence`]).
pub fn run_case(case: &Case, config: &Config, supervisor_exe: &Path) -> Outcome {
    if let Some(reason) = &case.skip {
        return Outcome::Skipped(reason.clone());
    }
    let runtime = match runtime() {
        Ok(r) => r,
        Err(e) => return Outcome::Failed(format!("cannot start a runtime: {e}")),
    };
    let mut transcript = Vec::new();
    let outcome = if let CaseCheck::Cluster(check) = case.check {
        runtime.block_on(cluster::run(check, &case.name, config, supervisor_exe))
    } else {
        match target(config, supervisor_exe, &case.name) {
            Ok(target) => runtime.block_on(run_check(
                case.check,
                &case.name,
                target,
                config,
                &mut transcript,
            )),
            Err(Unmet::Failed(cause)) => Outcome::Failed(format!("target unavailable: {cause}")),
            Err(Unmet::Blocked(by)) => Outcome::Blocked(by),
        }
    };
    match outcome {
        Outcome::Failed(message) => Outcome::Failed(runtime.block_on(with_evidence(
            &case.name,
            config,
            message,
            &transcript,
        ))),
        other => other,
    }
}

/// Writes the run's own bundle (`evidence/run`: the namespace's objects, events, logs, Helm
/// values and versions as the run leaves them, `why` as its message) once a cluster was reached;
/// returns the line that says where it is, or why it could not be written.
pub fn run_evidence(config: &Config, why: &str) -> Option<String> {
    cluster::current()?;
    let runtime = runtime().ok()?;
    let line = runtime.block_on(with_evidence(
        crate::evidence::RUN,
        config,
        why.to_string(),
        &[],
    ));
    line.lines()
        .find(|l| l.starts_with("evidence: "))
        .map(|l| l.replacen("evidence: ", "evidence of the run: ", 1))
}

/// The failure message followed by its bundle's place and the catalog's verdict.
async fn with_evidence(
    name: &str,
    config: &Config,
    message: String,
    exchanges: &[Exchange],
) -> String {
    let metrics = acquired_target()
        .map(|t| {
            std::iter::once(("frontend".to_string(), t.frontend.clone()))
                .chain(
                    t.workers
                        .iter()
                        .map(|(role, e)| (role.as_str().to_string(), e.clone())),
                )
                .collect()
        })
        .unwrap_or_default();
    let sources = crate::evidence::Sources {
        case: name,
        message: &message,
        exchanges,
        cluster: cluster::current().map(|c| (c, config.namespace.as_str())),
        metrics,
        release: format!(
            "{} ({})",
            config.dynamo_version,
            config.dynamo_version.judged_by()
        ),
        model: config.model.clone(),
        frontend_service: format!("{}-frontend", crate::stages::graph::GRAPH),
        secrets: crate::stages::secret::token(config, true)
            .map(|(token, _)| vec![token])
            .unwrap_or_default(),
    };
    let dir = crate::evidence::dir_of(&config.report_dir, name);
    match crate::evidence::gather(&dir, sources).await {
        Ok(bundle) => format!(
            "{message}\nevidence: {} ({} files; {})\n{}",
            bundle.dir.display(),
            bundle.files.len(),
            bundle.archive.display(),
            crate::diagnosis::verdict(&crate::diagnosis::diagnose(&bundle.evidence))
        ),
        Err(e) => format!(
            "{message}\nevidence: {e}\n{}",
            crate::diagnosis::verdict(&crate::diagnosis::diagnose(&crate::diagnosis::Evidence {
                message: message.clone(),
                ..Default::default()
            }))
        ),
    }
}

/// The process-wide runtime: clients made in it (kube's, reqwest's) and port-forwards stay usable across cases.
fn runtime() -> Result<&'static tokio::runtime::Runtime, String> {
    static RUNTIME: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// Collects case results as trials finish.
pub type Recorder = Arc<Mutex<Vec<CaseResult>>>;

/// The cases as libtest-mimic trials. Skipped cases are marked ignored, with the reason as their
/// kind. Without a `recorder` the trials are nextest's, one process each: failures are then
/// recorded for the processes of the same nextest run (`NEXTEST_RUN_ID`, [`blocker::init`]).
/// A blocked case fails its trial with one line naming its blocker (libtest has no outcome for
/// it); the report's table, JSON and JUnit count it apart.
pub fn trials(config: &Config, supervisor_exe: &Path, recorder: Option<Recorder>) -> Vec<Trial> {
    let run_id = std::env::var("NEXTEST_RUN_ID").ok();
    blocker::init(
        &config.cache_dir,
        run_id.as_deref().filter(|_| recorder.is_none()),
    );
    cases(config)
        .into_iter()
        .map(|case| {
            let skip = case.skip.clone();
            let name = case.name.clone();
            let config = config.clone();
            let exe = supervisor_exe.to_path_buf();
            let recorder = recorder.clone();
            let trial = Trial::test(name, move || {
                let started = Instant::now();
                let outcome = run_case(&case, &config, &exe);
                if let Some(recorder) = &recorder {
                    recorder.lock().expect("recorder lock").push(CaseResult {
                        name: case.name.clone(),
                        outcome: outcome.clone(),
                        duration: started.elapsed(),
                    });
                }
                match outcome {
                    Outcome::Passed(_) => Ok(()),
                    Outcome::KnownFailure(message) => {
                        println!("KNOWN FAILURE (does not fail the run): {message}");
                        Ok(())
                    }
                    Outcome::Failed(message) => Err(Failed::from(message)),
                    Outcome::Skipped(reason) => {
                        Err(Failed::from(format!("cannot run here: {reason}")))
                    }
                    Outcome::Blocked(by) => Err(Failed::from(by.to_string())),
                }
            });
            match skip {
                Some(_) => trial.with_ignored_flag(true).with_kind("skipped"),
                None => trial,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::findings::Finding;

    const N_IGNORED: Finding = Finding {
        releases: &["1.6.1"],
        cases: &["guide::api::n_choices"],
        rules: &[Rule::ChoicesN],
        seen: "n 3 answers one choice",
        withheld: &[],
    };

    #[test]
    fn exactly_the_recorded_rules_broken_is_a_known_failure() {
        let outcome = Outcome::Failed("FAIL  choices.n ...".into());
        let judged = against_finding(outcome, &[Rule::ChoicesN], &[&N_IGNORED]);
        assert!(
            matches!(&judged, Outcome::KnownFailure(m) if m.contains("recorded finding of Dynamo 1.6.1")),
            "{judged:?}"
        );
    }

    #[test]
    fn a_case_two_findings_name_is_known_when_it_breaks_rules_of_both() {
        const NO_USAGE: Finding = Finding {
            releases: &["1.6.1"],
            cases: &["guide::api::n_choices", "guide::api::chat"],
            rules: &[Rule::UsagePresent],
            seen: "no usage",
            withheld: &[],
        };
        let outcome = || Outcome::Failed("FAIL  choices.n ...".into());
        let both = [Rule::ChoicesN, Rule::UsagePresent];
        let judged = against_finding(outcome(), &both, &[&N_IGNORED, &NO_USAGE]);
        assert!(
            matches!(&judged, Outcome::KnownFailure(m) if m.contains("one choice (breaks choices.n); recorded finding") && m.contains("no usage")),
            "{judged:?}"
        );
        let judged = against_finding(outcome(), &both, &[&N_IGNORED]);
        assert!(matches!(judged, Outcome::Failed(_)), "{judged:?}");
    }

    #[test]
    fn a_rule_beyond_the_record_fails_the_case() {
        let outcome = Outcome::Failed("FAIL  response.status ...".into());
        let judged = against_finding(
            outcome,
            &[Rule::ChoicesN, Rule::ResponseStatus],
            &[&N_IGNORED],
        );
        assert!(
            matches!(&judged, Outcome::Failed(m) if m.contains("beyond the recorded finding")),
            "{judged:?}"
        );
    }

    #[test]
    fn a_finding_the_release_no_longer_shows_fails_as_stale() {
        let judged = against_finding(Outcome::Passed("ok".into()), &[], &[&N_IGNORED]);
        assert!(
            matches!(&judged, Outcome::Failed(m) if m.contains("no longer breaks")),
            "{judged:?}"
        );
        let unrecorded = against_finding(Outcome::Passed("ok".into()), &[], &[]);
        assert_eq!(unrecorded, Outcome::Passed("ok".into()));
    }
}
