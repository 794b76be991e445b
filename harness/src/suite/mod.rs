//! The ordered conformance cases, as libtest-mimic trials shared by `cargo nextest` and `run`.

pub mod cluster;

use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use libtest_mimic::{Failed, Trial};

use crate::config::{Config, ProviderKind};
use crate::dynamo::WorkerRole;
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
    for role in [WorkerRole::Decode, WorkerRole::Prefill] {
        cases.push(Case {
            name: format!("guide::workers::{}_health", role.as_str()),
            check: CaseCheck::WorkerHealth(role),
            skip: None,
        });
    }
    for api in ApiProbe::ALL {
        cases.push(Case {
            name: format!("guide::api::{}", api.name()),
            check: CaseCheck::Api(api),
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
    /// Not run, for the stated reason.
    Skipped(String),
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
    /// Which pod and port the frontend endpoint reaches, for messages.
    pub frontend_route: String,
    /// Each worker's system port, through a port-forward to its pod, with the route for messages.
    pub workers: Vec<(WorkerRole, Endpoint, String)>,
    /// The served model.
    pub model: String,
    /// The profile the answers are judged against.
    pub profile: &'static Profile,
    /// What is real and what is simulated, one line.
    pub provenance: String,
    /// Where the processes' logs are.
    pub logs: String,
    forwards: Vec<crate::k8s::forward::PortForward>,
}

impl Target {
    /// The routes as they stand now, with the last port-forward errors.
    fn routes(&self) -> String {
        self.forwards
            .iter()
            .map(|f| f.describe())
            .collect::<Vec<_>>()
            .join("; ")
    }
}

fn acquire(config: &Config, supervisor_exe: &Path) -> Result<Target, String> {
    if config.provider == ProviderKind::Kind {
        return Err("provider 'kind' is not available yet".into());
    }
    let runtime = runtime()?;
    let graph = runtime.block_on(cluster::graph_target(config, supervisor_exe))?;
    let endpoint = |url: &str| Endpoint::new(url, config.api_timeouts).map_err(|e| e.to_string());
    let frontend = endpoint(&graph.frontend.url())?;
    let frontend_route = graph.frontend.describe();
    let mut workers = Vec::new();
    for (role, forward) in &graph.workers {
        workers.push((*role, endpoint(&forward.url())?, forward.describe()));
    }
    let mut forwards = vec![graph.frontend];
    forwards.extend(graph.workers.into_iter().map(|(_, f)| f));
    Ok(Target {
        frontend,
        frontend_route,
        workers,
        model: config.model.clone(),
        profile: config.dynamo_version.profile(),
        provenance: graph.provenance,
        logs: graph.logs,
        forwards,
    })
}

static TARGET: OnceLock<Result<Target, String>> = OnceLock::new();

/// The process-wide target, acquired once and shared by every case in this process.
fn target(config: &Config, supervisor_exe: &Path) -> Result<&'static Target, String> {
    TARGET
        .get_or_init(|| acquire(config, supervisor_exe))
        .as_ref()
        .map_err(Clone::clone)
}

/// The target this process acquired, if any case acquired one.
pub fn acquired_target() -> Option<&'static Target> {
    TARGET.get().and_then(|t| t.as_ref().ok())
}

fn failed(target: &Target, lines: Vec<String>) -> Outcome {
    Outcome::Failed(format!(
        "{}\nvia: {}\nlogs: {}\n{}",
        lines.join("\n"),
        target.routes(),
        target.logs,
        target.provenance
    ))
}

fn verdict(target: &Target, checks: crate::openai::Checks) -> Outcome {
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
            checks.violations().map(ToString::to_string).collect(),
        )
    }
}

async fn run_check(check: CaseCheck, target: &Target) -> Outcome {
    match check {
        CaseCheck::Api(api) => {
            let observation = api.observe(&target.frontend, &target.model).await;
            verdict(target, observation.judge(&target.model, target.profile))
        }
        CaseCheck::WorkerHealth(role) => match target.workers.iter().find(|(r, _, _)| *r == role) {
            None => failed(
                target,
                vec![format!(
                    "the graph has no ready {} worker pod",
                    role.as_str()
                )],
            ),
            Some((_, system, _)) => {
                let exchanges: Vec<Exchange> = probe::observe_worker(system).await;
                verdict(
                    target,
                    probe::judge_exchanges(&exchanges, &target.model, target.profile),
                )
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
    let Some((_, prefill, _)) = target
        .workers
        .iter()
        .find(|(r, _, _)| *r == WorkerRole::Prefill)
    else {
        return failed(
            target,
            vec!["the graph has no ready prefill worker pod".into()],
        );
    };
    let before = match prefill_served(prefill).await {
        Ok(v) => v,
        Err(e) => return failed(target, vec![e]),
    };
    const REQUESTS: u32 = 3;
    let mut exchanges = Vec::new();
    for _ in 0..REQUESTS {
        let request = GenerationRequest::new(ApiKind::Completions, &target.model, 8);
        let captured = probe::Captured::Http(
            target
                .frontend
                .post_json(request.kind.path(), &request.body())
                .await,
        );
        exchanges.push(Exchange {
            expectation: Expectation::Generation(request),
            captured,
        });
    }
    let mut checks = probe::judge_exchanges(&exchanges, &target.model, target.profile);
    let after = match prefill_served(prefill).await {
        Ok(v) => v,
        Err(e) => return failed(target, vec![e]),
    };
    checks.expect(
        Rule::DisaggPrefillServed,
        "prefill worker /metrics",
        after - before >= f64::from(REQUESTS),
        format!(
            "{PREFILL_COUNTER}{{dynamo_component=\"prefill\",dynamo_endpoint=\"generate\"}} up by at least {REQUESTS}"
        ),
        || format!("{before} before, {after} after"),
    );
    verdict(target, checks)
}

/// Runs one case to its outcome, acquiring the target first.
pub fn run_case(case: &Case, config: &Config, supervisor_exe: &Path) -> Outcome {
    if let Some(reason) = &case.skip {
        return Outcome::Skipped(reason.clone());
    }
    let runtime = match runtime() {
        Ok(r) => r,
        Err(e) => return Outcome::Failed(format!("cannot start a runtime: {e}")),
    };
    if let CaseCheck::Cluster(check) = case.check {
        return runtime.block_on(cluster::run(check, config, supervisor_exe));
    }
    let target = match target(config, supervisor_exe) {
        Ok(t) => t,
        Err(e) => return Outcome::Failed(format!("target unavailable: {e}")),
    };
    runtime.block_on(run_check(case.check, target))
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

/// The cases as libtest-mimic trials. Skipped cases are marked ignored, with the reason as their kind.
pub fn trials(config: &Config, supervisor_exe: &Path, recorder: Option<Recorder>) -> Vec<Trial> {
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
                    Outcome::Failed(message) => Err(Failed::from(message)),
                    Outcome::Skipped(reason) => {
                        Err(Failed::from(format!("cannot run here: {reason}")))
                    }
                }
            });
            match skip {
                Some(_) => trial.with_ignored_flag(true).with_kind("skipped"),
                None => trial,
            }
        })
        .collect()
}
