//! The `dynamo-conformance` command line: run the suite, check any endpoint, manage local Dynamo.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use clap::{Args, Parser, Subcommand};
use harness::config::{Config, ConfigLayer, ProviderKind};
use harness::openai::probe::observe_endpoint;
use harness::openai::{ApiTimeouts, Endpoint, OpenAiError, judge};
use harness::profile::{Profile, ProfileChoice};
use harness::{dynamo, report, suite};

/// Exit codes, as documented in the README.
mod exit {
    /// Everything conformed.
    pub const OK: u8 = 0;
    /// A case failed, or the endpoint broke a rule.
    pub const NONCONFORMANT: u8 = 1;
    /// The input was bad: flags, configuration, URL, model.
    pub const BAD_INPUT: u8 = 2;
    /// The environment could not be set up (install, start, stop).
    pub const ENVIRONMENT: u8 = 3;
}

/// Proves an NVIDIA Dynamo deployment works, step by step as the guide installs it.
#[derive(Debug, Parser)]
#[command(name = "dynamo-conformance", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the conformance suite (by default against real Dynamo started on this machine).
    Run(RunArgs),
    /// Check any OpenAI-compatible endpoint against a Dynamo release's API promises.
    Api(ApiArgs),
    /// Manage the local real Dynamo graph (frontend, decode and prefill workers on the mocker).
    #[command(subcommand)]
    Dynamo(DynamoCommand),
    /// Manage the local Kubernetes control plane (built from the Go module proxy, kwok nodes).
    #[command(subcommand)]
    Local(LocalCommand),
    /// Manage the kind cluster (real kubelets in Docker; GPUs real on a GPU runner, else simulated).
    #[command(subcommand)]
    Kind(KindCommand),
    /// Remove what runs no longer under way created (after a crash or `kill -9`), by their ledgers
    /// under <cache>/runs, or by the run label when a ledger is gone.
    Cleanup(CleanupArgs),
    /// Put several Dynamo releases through one tier, side by side: matrix.md, matrix.json and
    /// matrix.html, with what changed between neighbouring releases.
    Matrix(MatrixArgs),
}

#[derive(Debug, Args)]
struct MatrixArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// The releases: a comma-separated list (e.g. 0.4.1,1.6.1) or `all` (every release with a row).
    #[arg(long, default_value = "all")]
    releases: String,
    /// `api` (each release's own processes on this machine, checked as `api` checks) or `graph`
    /// (the guide's cases on the local provider).
    #[arg(long, default_value = "api")]
    tier: String,
    /// Version skew columns too: for each pair of neighbouring releases, the newer's frontend
    /// with the older's workers and the reverse (a pair on different planes is reported not run).
    #[arg(long)]
    skew: bool,
    /// Where the matrix files go (default: <report dir>/matrix).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct CleanupArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Only this run's objects (its id as `run` printed it).
    #[arg(long, value_name = "ID", conflicts_with = "all")]
    run: Option<String>,
    /// Every run no longer under way, and objects labelled with a run whose ledger is gone.
    #[arg(long)]
    all: bool,
    /// List the runs on record and what each created, and remove nothing.
    #[arg(long)]
    list: bool,
}

/// When a run removes what it created as it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Keep {
    /// Never remove.
    Always,
    /// Remove after a run that passed; keep after a failure, for inspection.
    OnFailure,
    /// Always remove, failed or not.
    Never,
}

#[derive(Debug, Subcommand)]
enum KindCommand {
    /// Build what the cluster needs (first time only), create it or reuse the running one, load the images.
    Up(ConfigArgs),
    /// Delete the kind cluster and stop a Docker engine the suite started.
    Down(ConfigArgs),
    /// Show the kind cluster.
    Status(ConfigArgs),
}

#[derive(Debug, Subcommand)]
enum LocalCommand {
    /// Build (first time only) and start the local control plane, or reuse the running one.
    Up(ConfigArgs),
    /// Stop and delete the local control plane.
    Down(ConfigArgs),
    /// Show the local control plane.
    Status(ConfigArgs),
    /// Withdraw an image from the local registry, as images disappear upstream: pods that need it
    /// and have not started wait in ErrImagePull/ImagePullBackOff.
    Withdraw(ImageArgs),
    /// Publish a withdrawn image again (waiting pods start at their next try, within 10 s).
    Restore(ImageArgs),
    /// Run the operator stand-in and the bridge for the local cluster (started by `up`).
    #[command(hide = true)]
    Agent(AgentArgs),
}

#[derive(Debug, Args)]
struct ImageArgs {
    /// The image reference as pods name it (`bitnami/etcd:3.5.18-debian-12-r5`).
    image: String,
    #[command(flatten)]
    config: ConfigArgs,
}

#[derive(Debug, Args)]
struct AgentArgs {
    /// The suite's cache directory.
    #[arg(long, value_name = "DIR")]
    cache_dir: PathBuf,
    /// The local cluster's kubeconfig.
    #[arg(long, value_name = "FILE")]
    kubeconfig: PathBuf,
}

#[derive(Debug, Args, Clone, Default)]
struct ConfigArgs {
    /// A YAML configuration file (default: $DYNAMO_CONFORMANCE_CONFIG).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Where the cluster comes from: local, existing or kind.
    #[arg(long)]
    provider: Option<String>,
    /// The Dynamo release under test (default 0.4.1, the guide's): any release from 0.4.1, judged
    /// by its row in the release table or the newest older one.
    #[arg(long, value_name = "VERSION")]
    dynamo_version: Option<String>,
    /// Version skew: the workers of another release beside the frontend of --dynamo-version
    /// (the frontend's N with workers N-1, or the reverse); both on the same planes.
    #[arg(long, value_name = "VERSION")]
    workers_version: Option<String>,
    /// The model the graph serves.
    #[arg(long)]
    model: Option<String>,
    /// Where installs and generated models are cached.
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Where reports are written.
    #[arg(long, value_name = "DIR")]
    report_dir: Option<PathBuf>,
    /// Seconds a deployment may take to become ready.
    #[arg(long, value_name = "SECS")]
    ready_timeout_secs: Option<u64>,
    /// The kubeconfig of an existing cluster (provider `existing`).
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long)]
    context: Option<String>,
    /// A file holding the Hugging Face token (default: $HF_TOKEN).
    #[arg(long, value_name = "FILE")]
    hf_token_file: Option<PathBuf>,
    /// A local copy of the local-path-provisioner v0.0.32 manifest (air-gapped clusters).
    #[arg(long, value_name = "FILE")]
    provisioner_manifest: Option<PathBuf>,
    /// The version of the guide's Helm charts (default: the Dynamo version, 0.4.1).
    #[arg(long, value_name = "VERSION")]
    chart_version: Option<String>,
    /// A Helm 3.8+ binary to install the charts with (default: the suite builds Helm v3.19.0
    /// from the Go module proxy once per machine; no `helm` on the PATH is needed).
    #[arg(long, value_name = "PATH")]
    helm: Option<PathBuf>,
    /// The dynamo-crds chart instead of NGC's URL: a .tgz, a chart directory, or an oci://
    /// reference (air-gapped clusters).
    #[arg(long, value_name = "CHART")]
    crds_chart: Option<String>,
    /// The dynamo-platform chart instead of NGC's URL: a .tgz, a chart directory, or an oci://
    /// reference (air-gapped clusters).
    #[arg(long, value_name = "CHART")]
    platform_chart: Option<String>,
    /// A directory holding both charts as `helm pull` names them (dynamo-crds-<version>.tgz,
    /// dynamo-platform-<version>.tgz) or as chart directories (dynamo-crds/, dynamo-platform/).
    #[arg(long, value_name = "DIR")]
    charts_dir: Option<PathBuf>,
    /// A Helm values file for the dynamo-platform chart (helm --values): an image mirror, or what
    /// a chart given as a file needs; the keys it sets win over the suite's own --set values.
    #[arg(long, value_name = "FILE")]
    platform_values: Option<PathBuf>,
    /// Fit the graph's CPU and memory requests to the smallest GPU node (a deviation from the
    /// guide, recorded in the report; for clusters smaller than the guide's nodes).
    #[arg(long)]
    fit_requests: bool,
    /// GPUs: the host's (`real`), simulated ones (`simulated`), or `auto` (kind: real when
    /// nvidia-smi lists any; existing: `simulated` declares the cluster's GPUs advertised
    /// capacity, and the GPU operator's cases are skipped).
    #[arg(long, value_name = "MODE")]
    gpus: Option<String>,
    /// Provider kind, real GPUs: the NVIDIA GPU operator chart version.
    #[arg(long, value_name = "VERSION")]
    gpu_operator_version: Option<String>,
    /// Apply no stage and wait for nothing: judge the cluster as it stands.
    #[arg(long)]
    check_only: bool,
}

impl ConfigArgs {
    fn load(&self) -> Result<Config, String> {
        let flags = ConfigLayer {
            provider: self.provider.clone(),
            dynamo_version: self.dynamo_version.clone(),
            workers_version: self.workers_version.clone(),
            model: self.model.clone(),
            cache_dir: self.cache_dir.clone(),
            report_dir: self.report_dir.clone(),
            ready_timeout_secs: self.ready_timeout_secs,
            kubeconfig: self.kubeconfig.clone(),
            context: self.context.clone(),
            hf_token_file: self.hf_token_file.clone(),
            provisioner_manifest: self.provisioner_manifest.clone(),
            chart_version: self.chart_version.clone(),
            helm: self.helm.clone(),
            crds_chart: self.crds_chart.clone(),
            platform_chart: self.platform_chart.clone(),
            charts_dir: self.charts_dir.clone(),
            platform_values: self.platform_values.clone(),
            fit_requests: self.fit_requests.then_some(true),
            gpus: self.gpus.clone(),
            gpu_operator_version: self.gpu_operator_version.clone(),
            apply: self.check_only.then_some(false),
            ..ConfigLayer::default()
        };
        Config::load(flags, self.config.as_deref()).map_err(|e| e.to_string())
    }
}

#[derive(Debug, Args)]
struct RunArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Run only the cases whose names contain this text.
    filter: Option<String>,
    /// With a filter: run only the case of exactly that name.
    #[arg(long)]
    exact: bool,
    /// List the cases instead of running them.
    #[arg(long)]
    list: bool,
    /// List every image the guide's manifests and charts will ask for (provisioner, its helper,
    /// operator, etcd, NATS, the graph's runtime images) and which nodes hold each, then exit:
    /// nothing is applied. Exit 0 when every source was read, 3 when one could not be.
    #[arg(long, conflicts_with = "list")]
    preflight: bool,
    /// Exit 1 when a case fails as its release's recorded finding says (`KNOWN`), as for any
    /// failure: for release validation, where a release's known breaks must stop the line too.
    #[arg(long)]
    fail_on_known: bool,
    /// When to keep what this run created (stages on the local and kind providers are handed
    /// over to the reused environment as they complete, and kept). An interrupted run (Ctrl-C,
    /// SIGTERM) removes what it created unless `always`.
    #[arg(long, value_enum, default_value = "on-failure")]
    keep: Keep,
}

#[derive(Debug, Args)]
struct ApiArgs {
    /// The frontend's base URL, e.g. http://127.0.0.1:9000 (a port-forward).
    #[arg(long)]
    url: String,
    /// The model the frontend serves.
    #[arg(long)]
    model: String,
    /// The profile to hold the endpoint to: 0.4, 0.5, 0.6 (0.6 to 0.8), 0.9, 1.x, openai (strict) or auto. Beside it, every
    /// run also reports the strict openai verdict (informational: the exit code follows this one).
    #[arg(long, default_value = "auto")]
    profile: ProfileChoice,
    /// Seconds of silence tolerated inside a stream.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    stream_idle_secs: u64,
    /// Seconds a whole stream or request may take.
    #[arg(long, value_name = "SECS", default_value_t = 180)]
    deadline_secs: u64,
    /// A worker's system port base URL (`DYN_SYSTEM_PORT`), e.g. http://127.0.0.1:9090; its
    /// `/health` and `/live` are checked idle and while a generation streams. Repeatable.
    #[arg(long, value_name = "URL")]
    worker_url: Vec<String>,
}

#[derive(Debug, Subcommand)]
enum DynamoCommand {
    /// Start the local graph (or reuse a running one) and keep it up until `down`.
    Up(ConfigArgs),
    /// Stop the local graph.
    Down(ConfigArgs),
    /// Show the local graph's state.
    Status(ConfigArgs),
    /// Own a deployment (started by the suite; not for direct use).
    #[command(hide = true)]
    Supervise {
        #[command(flatten)]
        config: ConfigArgs,
        /// Stay up when no suite process uses the graph.
        #[arg(long)]
        linger: bool,
    },
}

fn fail(code: u8, message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(code)
}

/// This binary's path: the supervisor of local deployments is this same program.
fn this_program() -> Result<PathBuf, ExitCode> {
    std::env::current_exe().map_err(|e| {
        fail(
            exit::ENVIRONMENT,
            format!("cannot locate this program: {e}"),
        )
    })
}

fn main() -> ExitCode {
    // Output piped into `head` and closed early ends the process quietly, as other CLIs do,
    // rather than panicking on the broken pipe.
    // SAFETY: restoring a signal's default disposition at start-up, before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    if harness::operator::manager::invoked_as_manager() {
        return manager();
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let rendered = e.render().to_string();
            let line = rendered.lines().next().unwrap_or("invalid arguments");
            eprintln!("{} (see --help)", line.trim_end());
            return ExitCode::from(exit::BAD_INPUT);
        }
    };
    match cli.command {
        Command::Run(args) => run(args),
        Command::Api(args) => api(args),
        Command::Dynamo(command) => dynamo_command(command),
        Command::Local(command) => local_command(command),
        Command::Kind(command) => kind_command(command),
        Command::Cleanup(args) => cleanup(args),
        Command::Matrix(args) => matrix(args),
    }
}

/// Removes what the plan says on the configured cluster and prints each line; whether all went.
async fn clean(
    config: &Config,
    mut plan: harness::cleanup::Plan,
    labelled: bool,
) -> Result<bool, String> {
    use harness::cleanup;
    let Some((client, helm)) = cleanup::reach(config).await.map_err(|e| e.to_string())? else {
        println!(
            "cleanup: no {} cluster is up; nothing to remove there",
            config.provider.as_str()
        );
        return Ok(true);
    };
    if labelled {
        let runs = harness::ledger::recorded(&config.cache_dir).map_err(|e| e.to_string())?;
        cleanup::add_labelled(&client, &runs, &mut plan)
            .await
            .map_err(|e| e.to_string())?;
    }
    let done = cleanup::execute(&client, &helm, &plan, &config.cache_dir)
        .await
        .map_err(|e| e.to_string())?;
    for line in cleanup::describe(&plan, &done) {
        println!("cleanup: {line}");
    }
    Ok(done.failed.is_empty())
}

/// Exit: 0 every release ran and kept its profile's promises; 1 one broke a rule or failed a
/// case; 2 bad flags; 3 a release could not be installed or started.
fn matrix(args: MatrixArgs) -> ExitCode {
    use harness::matrix;
    let config = match args.config.load() {
        Ok(c) => c,
        Err(e) => return fail(exit::BAD_INPUT, e),
    };
    let (tier, versions) = match (
        args.tier.parse::<matrix::Tier>(),
        matrix::releases(&args.releases),
    ) {
        (Ok(tier), Ok(versions)) => (tier, versions),
        (Err(e), _) | (_, Err(e)) => return fail(exit::BAD_INPUT, e),
    };
    for version in versions.iter().filter(|v| v.borrows_profile()) {
        if let Err(code) = published(*version) {
            return code;
        }
    }
    let exe = match this_program() {
        Ok(exe) => exe,
        Err(code) => return code,
    };
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| config.report_dir.join("matrix"));
    let started = std::time::Instant::now();
    let result = matrix::run(&config, &exe, tier, &versions, args.skew, &out);
    let paths = match result.write(&out) {
        Ok(paths) => paths,
        Err(e) => return fail(exit::ENVIRONMENT, e),
    };
    print!("{}", result.markdown());
    println!(
        "matrix: {} columns in {:.0} s; {}",
        result.columns.len(),
        started.elapsed().as_secs_f64(),
        paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let failing = (0..result.columns.len()).any(|i| !result.failures_of(i).is_empty());
    // A skew across planes is reported not run, with why; it is no environment fault.
    let not_started = result
        .columns
        .iter()
        .any(|c| c.failure.is_some() && !c.unservable);
    if not_started {
        ExitCode::from(exit::ENVIRONMENT)
    } else if failing {
        ExitCode::from(exit::NONCONFORMANT)
    } else {
        ExitCode::from(exit::OK)
    }
}

/// A release without a row of its own must at least exist on PyPI: one line before any work
/// (bad input when it does not, an environment error when pip cannot ask).
fn published(version: harness::release::DynamoVersion) -> Result<(), ExitCode> {
    match harness::dynamo::install::published(version) {
        Ok(()) => Ok(()),
        Err(e @ harness::dynamo::DynamoError::NotPublished { .. }) => Err(fail(exit::BAD_INPUT, e)),
        Err(e) => Err(fail(exit::ENVIRONMENT, e)),
    }
}

fn cleanup(args: CleanupArgs) -> ExitCode {
    use harness::{cleanup, ledger};
    let config = match args.config.load() {
        Ok(c) => c,
        Err(e) => return fail(exit::BAD_INPUT, e),
    };
    let runs = match ledger::recorded(&config.cache_dir) {
        Ok(runs) => runs,
        Err(e) => return fail(exit::ENVIRONMENT, e),
    };
    if args.list || (args.run.is_none() && !args.all) {
        if runs.is_empty() {
            println!(
                "no runs on record in {}",
                ledger::runs_dir(&config.cache_dir).display()
            );
        }
        for run in &runs {
            let created = run
                .entries
                .iter()
                .filter(|e| e.action == ledger::Action::Created)
                .count();
            println!(
                "run {}: {}, {created} created, {} entries",
                run.id,
                if run.active { "under way" } else { "ended" },
                run.entries.len()
            );
        }
        if !args.list {
            println!("(name one with --run ID, or --all)");
        }
        return ExitCode::SUCCESS;
    }
    let plan = match cleanup::plan(&runs, args.run.as_deref()) {
        Ok(plan) => plan,
        Err(cleanup::CleanupError::UnknownRun(_)) if args.run.is_some() => {
            // The ledger is gone: the run label still says what was its.
            cleanup::Plan::default()
        }
        Err(e) => return fail(exit::BAD_INPUT, e),
    };
    for run in runs.iter().filter(|r| r.active) {
        println!("cleanup: run {} is under way: left alone", run.id);
    }
    let runtime = match multi_thread_runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    let ids = plan.runs.clone();
    match runtime.block_on(clean(&config, plan, args.all || args.run.is_some())) {
        Ok(true) => {
            for id in ids {
                ledger::forget(&config.cache_dir, &id);
            }
            ExitCode::SUCCESS
        }
        Ok(false) => ExitCode::from(exit::ENVIRONMENT),
        Err(e) => fail(exit::ENVIRONMENT, e),
    }
}

/// On Ctrl-C or SIGTERM: removes what this run created (unless `keep` is `always`), then exits 130.
fn on_interrupt(config: Config, keep: Keep) {
    std::thread::spawn(move || {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        runtime.block_on(async {
            let Ok(mut term) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            else {
                return;
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            let id = harness::ledger::current().map(|r| r.id.clone()).unwrap_or_default();
            let evidence_config = config.clone();
            let evidence = tokio::task::spawn_blocking(move || {
                harness::suite::run_evidence(&evidence_config, "interrupted (Ctrl-C or SIGTERM)")
            });
            if let Ok(Ok(Some(line))) =
                tokio::time::timeout(std::time::Duration::from_secs(60), evidence).await
            {
                eprintln!("dynamo-conformance: {line}");
            }
            if keep == Keep::Always {
                eprintln!("dynamo-conformance: interrupted; run {id} keeps what it created (--keep always)");
            } else {
                eprintln!("dynamo-conformance: interrupted; removing what run {id} created");
                match harness::cleanup::plan_own(&config) {
                    Ok(plan) => {
                        if let Err(e) = clean(&config, plan, false).await {
                            eprintln!("dynamo-conformance: cleanup: {e}");
                        }
                    }
                    Err(e) => eprintln!("dynamo-conformance: cleanup: {e}"),
                }
            }
        });
        std::process::exit(130);
    });
}

/// A runtime for work that blocks some threads (builds, kind) while others watch the cluster.
fn multi_thread_runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| fail(exit::ENVIRONMENT, format!("cannot start a runtime: {e}")))
}

/// The operator image's `/manager`: the stand-in operator in its pod.
fn manager() -> ExitCode {
    use harness::operator::manager;
    let release = harness::operator::release_of(None);
    if let Some(flags) = release.profile().operator_flags {
        let given: Vec<String> = std::env::args().skip(1).collect();
        if let Some(name) = manager::undefined_flag(&flags, &given) {
            // Go's flag package's words and exit code (it prints the usage after them).
            eprintln!("flag provided but not defined: -{name}");
            return ExitCode::from(2);
        }
    }
    let args = match <manager::ManagerArgs as clap::Parser>::try_parse() {
        Ok(args) => args,
        Err(e) => return fail(exit::BAD_INPUT, e.to_string().lines().next().unwrap_or("")),
    };
    if std::env::var_os(manager::FLAGS_ONLY_ENV).is_some() {
        eprintln!(
            "manager: the flags of the Dynamo {release} operator hold (the controllers run in the local provider's agent)"
        );
        return ExitCode::SUCCESS;
    }
    let runtime = match multi_thread_runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    match runtime.block_on(manager::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(exit::ENVIRONMENT, e),
    }
}

fn run(args: RunArgs) -> ExitCode {
    let config = match args.config.load() {
        Ok(c) => c,
        Err(e) => return fail(exit::BAD_INPUT, e),
    };
    let exe = match this_program() {
        Ok(exe) => exe,
        Err(code) => return code,
    };
    if config.provider == ProviderKind::Existing && !args.list {
        // A broken kubeconfig or an unreachable server is bad input: one line, before any case.
        let checked = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
            .and_then(|rt| {
                let path = harness::cluster::existing::kubeconfig_path(&config);
                rt.block_on(harness::cluster::existing::connect(
                    &path,
                    config.context.as_deref(),
                ))
                .map(drop)
                .map_err(|e| e.to_string())
            });
        if let Err(e) = checked {
            return fail(exit::BAD_INPUT, e);
        }
    }
    if !args.list {
        // A Helm or a chart the user named that cannot serve is bad input: one line, before any case.
        if let Some(helm) = &config.helm
            && let Err(e) = harness::helm::check(helm)
        {
            return fail(exit::BAD_INPUT, e);
        }
        if let Err(e) = harness::stages::chart::check(&config, false) {
            return fail(exit::BAD_INPUT, e);
        }
    }
    for version in [Some(config.dynamo_version), config.workers_version]
        .into_iter()
        .flatten()
    {
        if version.borrows_profile()
            && !args.list
            && let Err(code) = published(version)
        {
            return code;
        }
    }
    if args.preflight {
        return match suite::preflight(&config, &exe) {
            Ok(preflight) => {
                print!("{}", preflight.render());
                if preflight.gaps.is_empty() {
                    ExitCode::from(exit::OK)
                } else {
                    fail(
                        exit::ENVIRONMENT,
                        format!(
                            "the preflight is incomplete: {} sources could not be read (above)",
                            preflight.gaps.len()
                        ),
                    )
                }
            }
            Err(e) => fail(exit::ENVIRONMENT, format!("cluster unavailable: {e}")),
        };
    }
    if !args.list {
        match harness::ledger::begin(&config.cache_dir) {
            Ok(run) => println!(
                "dynamo-conformance: run {} (ledger {})",
                run.id,
                harness::ledger::runs_dir(&config.cache_dir)
                    .join(&run.id)
                    .display()
            ),
            Err(e) => return fail(exit::ENVIRONMENT, e),
        }
        on_interrupt(config.clone(), args.keep);
    }
    let recorder: suite::Recorder = Arc::new(Mutex::new(Vec::new()));
    let trials = suite::trials(&config, &exe, Some(recorder.clone()));
    let (filter, exact, fail_on_known, keep) = (
        args.filter.clone(),
        args.exact,
        args.fail_on_known,
        args.keep,
    );
    let arguments = libtest_mimic::Arguments {
        filter: args.filter,
        exact: args.exact,
        list: args.list,
        test_threads: Some(1),
        ..libtest_mimic::Arguments::default()
    };
    println!(
        "dynamo-conformance: provider {}, Dynamo {} ({}){}, model {}",
        config.provider.as_str(),
        config.dynamo_version,
        config.dynamo_version.judged_by(),
        config
            .workers_version
            .map(|w| format!(", version skew: workers of Dynamo {w}"))
            .unwrap_or_default(),
        config.model
    );
    if !args.list {
        match suite::prepare(&config, &exe) {
            Ok(took) => {
                println!(
                    "dynamo-conformance: {} cluster ready in {:.1} s",
                    config.provider.as_str(),
                    took.as_secs_f64()
                );
                // Real kubelets pull images: say which the guide will ask for before applying it.
                if config.provider != ProviderKind::Local && config.apply {
                    match suite::preflight(&config, &exe) {
                        Ok(preflight) => print!("{}", preflight.render()),
                        // The cases still run: each says what it meets.
                        Err(e) => println!("preflight: not listed: {e}"),
                    }
                }
            }
            Err(e) => return fail(exit::ENVIRONMENT, format!("cluster unavailable: {e}")),
        }
    }
    let conclusion = libtest_mimic::run(&arguments, trials);
    if args.list {
        return ExitCode::SUCCESS;
    }
    let target = suite::acquired_target();
    let provenance: Vec<String> = [
        suite::cluster::provenance(),
        target.map(|t| t.provenance.clone()),
    ]
    .into_iter()
    .flatten()
    .collect();
    let provenance = (!provenance.is_empty()).then(|| provenance.join("\n"));
    let recorded = recorder.lock().expect("recorder lock").clone();
    let listed: Vec<suite::Case> = suite::cases(&config)
        .into_iter()
        .filter(|c| match &filter {
            None => true,
            Some(f) if exact => &c.name == f,
            Some(f) => c.name.contains(f.as_str()),
        })
        .collect();
    let results = report::complete(&listed, &recorded);
    let tally = report::tally(&results);
    if let Some(line) = suite::run_evidence(
        &config,
        &format!(
            "the run ended: {} passed, {} failed, {} blocked, {} skipped, {} known failures",
            tally.passed, tally.failed, tally.blocked, tally.skipped, tally.known
        ),
    ) {
        println!("{line}");
    }
    harness::ledger::end_forwards_of_this_process();
    print!("\n{}", report::table(&results, provenance.as_deref()));
    match report::write_json(&config, &results, provenance.as_deref()) {
        Ok(path) => println!("report: {}", path.display()),
        Err(e) => eprintln!("warning: could not write the report: {e}"),
    }
    match report::write_junit(&config, &results) {
        Ok(path) => println!("junit: {}", path.display()),
        Err(e) => eprintln!("warning: could not write the JUnit report: {e}"),
    }
    let failed = conclusion.has_failed()
        || tally.failed + tally.blocked > 0
        || (fail_on_known && tally.known > 0);
    if keep == Keep::Never || (keep == Keep::OnFailure && !failed) {
        let cleaned = harness::cleanup::plan_own(&config)
            .map_err(|e| e.to_string())
            .and_then(|plan| {
                if plan.remove.is_empty() {
                    return Ok(true);
                }
                multi_thread_runtime()
                    .map_err(|_| "cannot start a runtime".to_string())
                    .and_then(|rt| rt.block_on(clean(&config, plan, false)))
            });
        match cleaned {
            // Nothing of the run is left outside the environment: its ledger has served.
            Ok(true) => {
                if let Some(run) = harness::ledger::current() {
                    harness::ledger::forget(&config.cache_dir, &run.id);
                }
            }
            Ok(false) => eprintln!("warning: some of what the run created is left (above)"),
            Err(e) => eprintln!("warning: could not remove what the run created: {e}"),
        }
    }
    if failed {
        ExitCode::from(exit::NONCONFORMANT)
    } else {
        ExitCode::from(exit::OK)
    }
}

fn api(args: ApiArgs) -> ExitCode {
    if args.stream_idle_secs == 0 || args.deadline_secs == 0 {
        return fail(
            exit::BAD_INPUT,
            "--stream-idle-secs and --deadline-secs must be at least 1",
        );
    }
    let timeouts = ApiTimeouts {
        request: std::time::Duration::from_secs(args.deadline_secs),
        stream_idle: std::time::Duration::from_secs(args.stream_idle_secs),
        stream_deadline: std::time::Duration::from_secs(args.deadline_secs),
        ..ApiTimeouts::default()
    };
    let endpoint = match Endpoint::new(&args.url, timeouts) {
        Ok(e) => e,
        Err(e) => return fail(exit::BAD_INPUT, e),
    };
    let mut workers = Vec::new();
    for url in &args.worker_url {
        match Endpoint::new(url, timeouts) {
            Ok(e) => workers.push(e),
            Err(e) => return fail(exit::BAD_INPUT, format!("--worker-url: {e}")),
        }
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(exit::ENVIRONMENT, format!("cannot start a runtime: {e}")),
    };
    runtime.block_on(async {
        match endpoint.served_models().await {
            Err(e) => return fail(exit::BAD_INPUT, e),
            Ok(Some(served)) if !served.contains(&args.model) => {
                let e = OpenAiError::ModelNotServed {
                    model: args.model.clone(),
                    url: endpoint.base().to_string(),
                    served,
                };
                return fail(exit::BAD_INPUT, e);
            }
            Ok(_) => {}
        }
        let (observations, worker_exchanges) =
            observe_endpoint(&endpoint, &workers, &args.model).await;
        let verdict = judge(&observations, &worker_exchanges, &args.model, args.profile);
        for check in verdict.checks.iter() {
            println!("{check}");
        }
        let violated = verdict.checks.violated_rules();
        let failed = verdict.checks.violations().count();
        let passed = verdict.checks.len() - failed;
        match (args.profile, verdict.matched) {
            (ProfileChoice::Auto, true) if verdict.also_matched.is_empty() => {
                println!("profile: auto matched {}", verdict.profile)
            }
            (ProfileChoice::Auto, true) => {
                let also: Vec<&str> = verdict.also_matched.iter().map(|p| p.name).collect();
                println!(
                    "profile: auto matched {} (the answers are also consistent with {})",
                    verdict.profile,
                    also.join(", ")
                )
            }
            (ProfileChoice::Auto, false) => {
                println!(
                    "profile: auto matched no release; closest is {}",
                    verdict.profile
                )
            }
            (_, _) => println!("profile: {}", verdict.profile),
        }
        if !violated.is_empty() {
            let ids: Vec<&str> = violated.iter().map(|r| r.id()).collect();
            println!("violated rules: {}", ids.join(", "));
        }
        println!("api: {passed} passed, {failed} failed");
        // The second verdict: OpenAI's published contract, which the official SDKs rely on.
        if verdict.profile.name != Profile::OPENAI.name {
            let strict = judge(
                &observations,
                &worker_exchanges,
                &args.model,
                ProfileChoice::Exactly(&Profile::OPENAI),
            );
            for check in strict.checks.violations() {
                println!("openai: {check}");
            }
            let failed = strict.checks.violations().count();
            let rules: Vec<&str> = strict
                .checks
                .violated_rules()
                .iter()
                .map(|r| r.id())
                .collect();
            println!(
                "openai (strict, informational): {} passed, {failed} failed{}",
                strict.checks.len() - failed,
                if rules.is_empty() {
                    String::new()
                } else {
                    format!("; breaks {}", rules.join(", "))
                }
            );
        }
        if verdict.matched {
            ExitCode::from(exit::OK)
        } else {
            ExitCode::from(exit::NONCONFORMANT)
        }
    })
}

fn dynamo_command(command: DynamoCommand) -> ExitCode {
    let (config_args, linger) = match &command {
        DynamoCommand::Up(c) | DynamoCommand::Down(c) | DynamoCommand::Status(c) => (c, false),
        DynamoCommand::Supervise { config, linger } => (config, *linger),
    };
    let config = match config_args.load() {
        Ok(c) => c,
        Err(e) => return fail(exit::BAD_INPUT, e),
    };
    match command {
        DynamoCommand::Supervise { .. } => match dynamo::run_supervisor(&config, linger) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(exit::ENVIRONMENT, e),
        },
        DynamoCommand::Up(_) => {
            let exe = match this_program() {
                Ok(exe) => exe,
                Err(code) => return code,
            };
            if let Ok(Some(state)) = dynamo::status(&config)
                && !state.linger
            {
                let _ = dynamo::stop(&config);
            }
            match dynamo::LocalDynamo::attach(&config, &exe, true) {
                Ok(local) => {
                    print_state(&local.state);
                    ExitCode::SUCCESS
                }
                Err(e) => fail(exit::ENVIRONMENT, e),
            }
        }
        DynamoCommand::Down(_) => match dynamo::stop(&config) {
            Ok(true) => {
                println!("stopped the local Dynamo {} graph", config.dynamo_version);
                ExitCode::SUCCESS
            }
            Ok(false) => {
                println!("no local Dynamo {} graph is running", config.dynamo_version);
                ExitCode::SUCCESS
            }
            Err(e) => fail(exit::ENVIRONMENT, e),
        },
        DynamoCommand::Status(_) => match dynamo::status(&config) {
            Ok(Some(state)) => {
                print_state(&state);
                ExitCode::SUCCESS
            }
            Ok(None) => {
                println!("no local Dynamo {} graph is running", config.dynamo_version);
                ExitCode::SUCCESS
            }
            Err(e) => fail(exit::ENVIRONMENT, e),
        },
    }
}

fn local_command(command: LocalCommand) -> ExitCode {
    use harness::cluster::{agent, local};
    let args = match &command {
        LocalCommand::Up(args) | LocalCommand::Down(args) | LocalCommand::Status(args) => args,
        LocalCommand::Withdraw(ImageArgs { config, .. })
        | LocalCommand::Restore(ImageArgs { config, .. }) => config,
        LocalCommand::Agent(args) => {
            return match agent::serve(&args.cache_dir, &args.kubeconfig) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(exit::ENVIRONMENT, e),
            };
        }
    };
    let config = match args.load() {
        Ok(c) => c,
        Err(e) => return fail(exit::BAD_INPUT, e),
    };
    let print = |cluster: &local::LocalCluster| {
        println!(
            "local cluster {} (Kubernetes {})",
            cluster.name, cluster.kubernetes_version
        );
        println!("kubeconfig {}", cluster.kubeconfig.display());
        match agent::status(&config.cache_dir) {
            Some(state) => println!(
                "agent pid {} (operator stand-in and bridge); pod logs in {}",
                state.pid,
                state.dir.join("pods").display()
            ),
            None => println!("agent not running"),
        }
    };
    match command {
        LocalCommand::Up(_) => {
            let exe = match this_program() {
                Ok(exe) => exe,
                Err(code) => return code,
            };
            let up = local::up(&config.cache_dir)
                .map_err(|e| e.to_string())
                .and_then(|cluster| {
                    agent::ensure(&config.cache_dir, &cluster.kubeconfig, &exe)
                        .map(|_| cluster)
                        .map_err(|e| e.to_string())
                });
            match up {
                Ok(cluster) => {
                    print(&cluster);
                    ExitCode::SUCCESS
                }
                Err(e) => fail(exit::ENVIRONMENT, e),
            }
        }
        LocalCommand::Down(_) => {
            if let Err(e) = agent::stop(&config.cache_dir) {
                return fail(exit::ENVIRONMENT, e);
            }
            match local::down(&config.cache_dir) {
                Ok(true) => {
                    println!("deleted the local cluster");
                    ExitCode::SUCCESS
                }
                Ok(false) => {
                    println!("no local cluster is running");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(exit::ENVIRONMENT, e),
            }
        }
        LocalCommand::Status(_) => match local::status(&config.cache_dir) {
            Ok(Some(cluster)) => {
                print(&cluster);
                print_costs(&config.cache_dir, &cluster.kubeconfig);
                ExitCode::SUCCESS
            }
            Ok(None) => {
                println!("no local cluster is running");
                ExitCode::SUCCESS
            }
            Err(e) => fail(exit::ENVIRONMENT, e),
        },
        LocalCommand::Withdraw(ImageArgs { ref image, .. })
        | LocalCommand::Restore(ImageArgs { ref image, .. }) => {
            use harness::bridge::kubelet;
            let dir = agent::dir(&config.cache_dir);
            let withdrawing = matches!(command, LocalCommand::Withdraw(_));
            let done = if withdrawing {
                kubelet::withdraw(&dir, image)
            } else {
                kubelet::restore(&dir, image)
            };
            match done {
                Ok(()) => {
                    let left = kubelet::withdrawn(&dir);
                    println!(
                        "{} {image}; withdrawn from the local registry: {}",
                        if withdrawing { "withdrew" } else { "restored" },
                        if left.is_empty() {
                            "none".to_string()
                        } else {
                            left.into_iter().collect::<Vec<_>>().join(", ")
                        }
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => fail(
                    exit::ENVIRONMENT,
                    format!("{}: {e}", kubelet::withdrawn_path(&dir).display()),
                ),
            }
        }
        LocalCommand::Agent(_) => unreachable!("handled above"),
    }
}

/// What the kept local environment runs and costs: its graphs (parked or not) and each process's
/// CPU over one second and memory.
fn print_costs(cache_dir: &std::path::Path, kubeconfig: &std::path::Path) {
    use harness::cluster::{cost, existing, park};
    if let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        let lines = runtime.block_on(async {
            match existing::connect(kubeconfig, None).await {
                Ok((client, _)) => park::describe(&client).await,
                Err(e) => vec![format!("graphs: {e}")],
            }
        });
        for line in lines {
            println!("{line}");
        }
    }
    let costs = cost::local(cache_dir, std::time::Duration::from_secs(1));
    println!("processes (CPU over 1 s in % of one core, resident memory):");
    for c in &costs {
        println!(
            "  {:>6.1}%  {:>5} MB  pid {:<7} {}",
            c.cpu_percent,
            c.rss_bytes / 1_000_000,
            c.pid,
            c.name
        );
    }
    println!(
        "  {:>6.1}%  {:>5} MB  total",
        costs.iter().map(|c| c.cpu_percent).sum::<f64>(),
        costs.iter().map(|c| c.rss_bytes).sum::<u64>() / 1_000_000
    );
}

fn kind_command(command: KindCommand) -> ExitCode {
    use harness::cluster::kind;
    let (KindCommand::Up(args) | KindCommand::Down(args) | KindCommand::Status(args)) = &command;
    let config = match args.load() {
        Ok(c) => c,
        Err(e) => return fail(exit::BAD_INPUT, e),
    };
    let exe = match this_program() {
        Ok(exe) => exe,
        Err(code) => return code,
    };
    let runtime = match multi_thread_runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    let print = |cluster: &kind::KindCluster| {
        println!(
            "kind cluster {} ({} GPUs, node image {})",
            cluster.name,
            cluster.gpus.as_str(),
            cluster.node_image
        );
        println!("kubeconfig {}", cluster.kubeconfig.display());
    };
    runtime.block_on(async {
        match command {
            KindCommand::Up(_) => {
                let up = async {
                    let cluster = kind::up(&config).await?;
                    kind::load_images(&cluster, &config, &exe).await?;
                    Ok::<_, kind::KindError>(cluster)
                };
                match up.await {
                    Ok(cluster) => {
                        print(&cluster);
                        ExitCode::SUCCESS
                    }
                    Err(e) => fail(exit::ENVIRONMENT, e),
                }
            }
            KindCommand::Down(_) => match kind::down(&config).await {
                Ok(done) if done.is_empty() => {
                    println!("no kind cluster of the suite's is running");
                    ExitCode::SUCCESS
                }
                Ok(done) => {
                    for line in done {
                        println!("{line}");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => fail(exit::ENVIRONMENT, e),
            },
            KindCommand::Status(_) => match kind::status(&config).await {
                Ok(Some(cluster)) => {
                    print(&cluster);
                    ExitCode::SUCCESS
                }
                Ok(None) => {
                    println!("no kind cluster of the suite's is running");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(exit::ENVIRONMENT, e),
            },
        }
    })
}

fn print_state(state: &dynamo::DeploymentState) {
    println!(
        "Dynamo {} ({:?}), model {}",
        state.version, state.phase, state.model
    );
    println!("frontend  {}", state.frontend_url);
    for worker in &state.workers {
        println!(
            "{:<9} {}  ({})",
            worker.role.as_str(),
            worker.system_url,
            worker.engine
        );
    }
    for process in &state.processes {
        println!(
            "process   {:<8} pid {:<7} log {}",
            process.name,
            process.pid,
            process.log.display()
        );
    }
    if let Some(detail) = &state.detail {
        println!("note      {detail}");
    }
}
