//! Faults injected mid-run on the local provider: the cases that meet them fail, naming the pod, without hanging.
//!
//! Each test runs the whole suite (`dynamo-conformance run`), waits for the first API case to pass
//! (the port-forwards are open by then), breaks the graph underneath the rest, and reads the report. They share the local cluster, so `harness/test.sh`
//! runs this binary on its own, after the conformance runs.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use harness::config::{Config, ConfigLayer};
use harness::profile::OperatorRules;

const BIN: &str = env!("CARGO_BIN_EXE_dynamo-conformance");
/// A whole run, first graph start included, stays well inside this.
const RUN_BOUND: Duration = Duration::from_secs(900);

/// A child run that is killed if the test panics before it ends, so no orphan run outlives it.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn config() -> Config {
    Config::load(ConfigLayer::default(), None).expect("the test's configuration loads")
}

/// Runs the suite, calls `fault` once a line containing `marker` is printed, and returns the
/// run's exit code, its output and what `fault` said it did.
fn run_breaking_at(marker: &str, fault: impl FnOnce() -> String) -> (i32, String, String) {
    let mut child = Reaped(
        Command::new(BIN)
            .arg("run")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the binary runs"),
    );
    let (lines, received) = mpsc::channel();
    let stdout = child.0.stdout.take().expect("piped");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let started = Instant::now();
    let mut output = String::new();
    let mut fault = Some(fault);
    let mut done = String::new();
    loop {
        match received.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                if line.contains(marker)
                    && line.ends_with(" ok")
                    && let Some(fault) = fault.take()
                {
                    done = fault();
                }
                output.push_str(&line);
                output.push('\n');
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        assert!(
            started.elapsed() < RUN_BOUND,
            "the run did not end within {RUN_BOUND:?}; so far:\n{output}"
        );
    }
    let status = child.0.wait().expect("the run ends");
    assert!(fault.is_none(), "{marker} never passed:\n{output}");
    (status.code().unwrap_or(-1), output, done)
}

/// The log directory of the live pod of a graph service (`Frontend`, `VllmDecodeWorker`: its
/// pods' `nvidia.com/dynamo-component` label), and the pid of its newest process (the bridge's
/// `started pid` line), or why there is none yet.
fn process_of(
    config: &Config,
    agent_dir: &Path,
    component: &str,
) -> Result<(PathBuf, u32), String> {
    let uids = kubectl_unchecked(
        config,
        &[
            "-n",
            "dynamo-cloud",
            "get",
            "pods",
            "-l",
            &format!("nvidia.com/dynamo-component={component}"),
            "-o",
            "jsonpath={range .items[*]}{.metadata.uid} {.metadata.deletionTimestamp}{\"\\n\"}{end}",
        ],
    )
    .ok_or("kubectl failed")?;
    // A pod being deleted prints its deletion time after its uid.
    let uid = uids
        .lines()
        .map(str::split_whitespace)
        .find_map(|mut words| match (words.next(), words.next()) {
            (Some(uid), None) => Some(uid),
            _ => None,
        })
        .ok_or_else(|| format!("no live pod of {component}"))?;
    let dir = std::fs::read_dir(agent_dir.join("pods"))
        .map_err(|e| e.to_string())?
        .flatten()
        .find(|e| {
            e.file_name()
                .to_string_lossy()
                .ends_with(&format!("_{uid}"))
        })
        .ok_or_else(|| format!("no log directory of pod {uid}"))?
        .path();
    let log = std::fs::read_to_string(dir.join("main.log")).map_err(|e| e.to_string())?;
    let pid = log
        .lines()
        .filter_map(|l| l.split("started pid ").nth(1))
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .next_back()
        .ok_or_else(|| format!("pod {uid} started no process yet"))?;
    Ok((dir, pid))
}

fn kubectl(config: &Config, args: &[&str]) -> String {
    let cluster = harness::cluster::local::status(&config.cache_dir)
        .expect("the local cluster answers")
        .expect("a local cluster is up");
    let binaries = harness::cluster::local::build(&config.cache_dir).expect("the built tools");
    let out = Command::new(binaries.kubectl)
        .arg(format!("--kubeconfig={}", cluster.kubeconfig.display()))
        .args(args)
        .output()
        .expect("kubectl runs");
    assert!(out.status.success(), "kubectl {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Whether a line of the summary table is `word` for `case` (its first two words).
fn row(line: &str, word: &str, case: &str) -> bool {
    line.split_whitespace().take(2).eq([word, case])
}

/// The failure blocks of a run's output: each `---- case ----` section.
fn failure_blocks(output: &str) -> Vec<&str> {
    output.split("---- ").skip(1).collect()
}

#[test]
fn a_killed_frontend_process_fails_the_api_cases_naming_its_pod() {
    let config = config();
    let agent_dir = harness::cluster::agent::dir(&config.cache_dir);
    let (code, output, killed) = run_breaking_at("guide::api::frontend_health", || {
        let (dir, pid) =
            process_of(&config, &agent_dir, "Frontend").expect("the frontend's process");
        // SIGKILL, as an out-of-memory kill would end it.
        // SAFETY: a plain signal to the frontend process the bridge started.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        format!("{} (pid {pid})", dir.display())
    });
    assert_eq!(
        code, 1,
        "the run should fail after killing {killed}:\n{output}"
    );
    let named: Vec<&str> = failure_blocks(&output)
        .into_iter()
        .filter(|b| b.starts_with("guide::api::"))
        .filter(|b| b.contains("via pod dynamo-cloud/vllm-v1-disagg-router-frontend-"))
        .collect();
    assert!(
        !named.is_empty(),
        "no API case failed naming the frontend pod after killing {killed}:\n{output}"
    );
}

#[test]
fn a_deleted_worker_pod_fails_the_cases_naming_it() {
    let config = config();
    let selector = "nvidia.com/dynamo-component=VllmDecodeWorker";
    let mut deleted = String::new();
    let (code, output, _) = run_breaking_at("guide::api::frontend_health", || {
        let ns = config.namespace.as_str();
        deleted = kubectl(
            &config,
            &["-n", ns, "get", "pods", "-l", selector, "-o", "name"],
        );
        kubectl(&config, &["-n", ns, "delete", &deleted, "--wait=false"])
    });
    let pod = deleted.trim_start_matches("pod/");
    assert_eq!(
        code, 1,
        "the run should fail after deleting {pod}:\n{output}"
    );
    assert!(
        failure_blocks(&output)
            .iter()
            .any(|b| b.contains(&format!("pod dynamo-cloud/{pod} no longer exists"))),
        "no case failed naming the deleted pod {pod}:\n{output}"
    );
}

/// Removes what a test injected, however the test ends.
struct Injected<'a> {
    config: &'a Config,
    delete: Vec<&'a str>,
}

impl Drop for Injected<'_> {
    fn drop(&mut self) {
        let mut args = vec!["delete", "--ignore-not-found"];
        args.extend(&self.delete);
        kubectl(self.config, &args);
    }
}

/// Runs the cases matching `filter` with a known token, reporting into `report_dir`.
fn run_filtered(filter: &str, report_dir: &Path, token: &str) -> (i32, String) {
    let out = Command::new(BIN)
        .args(["run", filter, "--report-dir"])
        .arg(report_dir)
        .env("HF_TOKEN", token)
        .stderr(Stdio::null())
        .output()
        .expect("the binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Every file under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("a readable bundle").flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if String::from_utf8_lossy(&std::fs::read(&path).expect("a readable file"))
                .contains(needle)
            {
                found.push(path);
            }
        }
    }
    found
}

#[test]
fn a_second_default_storage_class_is_diagnosed_by_name_with_a_bundle_free_of_the_token() {
    let config = config();
    let reports = tempfile::tempdir().expect("a report directory");
    let case = "guide::storage::default_storage_class";
    let token = "hf_injectedTOKENvalue0123456789";
    let (code, output) = run_filtered(case, reports.path(), token);
    assert_eq!(
        code, 0,
        "the case should pass before the injection:\n{output}"
    );
    let manifest = reports.path().join("second-default.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata:\n  name: injected-second-default\n  \
         labels: {app.kubernetes.io/managed-by: dynamo-conformance}\n  \
         annotations: {storageclass.kubernetes.io/is-default-class: \"true\"}\n\
         provisioner: rancher.io/local-path\nvolumeBindingMode: WaitForFirstConsumer\n",
    )
    .expect("the manifest is written");
    kubectl(&config, &["apply", "-f", &manifest.display().to_string()]);
    let injected = Injected {
        config: &config,
        delete: vec!["storageclass", "injected-second-default"],
    };
    let (code, output) = run_filtered(case, reports.path(), token);
    drop(injected);
    assert_eq!(code, 1, "the case should fail:\n{output}");
    assert!(
        output.contains("diagnosis: two-default-storage-classes: "),
        "the failure should name its diagnosis:\n{output}"
    );
    let bundle = harness::evidence::dir_of(reports.path(), case);
    for file in [
        "failure.txt",
        "transcript.txt",
        "repro.sh",
        "events.txt",
        "versions.txt",
        "objects/pods.yaml",
        "objects/graphs.yaml",
        "objects/components.yaml",
        "objects/storageclasses.yaml",
        "helm/releases.txt",
    ] {
        assert!(bundle.join(file).is_file(), "the bundle lacks {file}");
    }
    assert!(
        std::fs::read_to_string(bundle.join("objects/storageclasses.yaml"))
            .expect("the classes")
            .contains("injected-second-default")
    );
    let report = std::fs::read_to_string(reports.path().join("report.json")).expect("the report");
    assert!(
        report.contains(&format!("\"evidence\": \"{}\"", bundle.display())),
        "the report should link the bundle:\n{report}"
    );
    assert_eq!(
        files_containing(reports.path(), token),
        Vec::<PathBuf>::new(),
        "the token leaked"
    );
}

#[test]
fn a_chart_that_cannot_install_fails_once_and_blocks_every_case_that_needs_it() {
    let reports = tempfile::tempdir().expect("a report directory");
    let broken = reports.path().join("dynamo-crds-0.4.1.tgz");
    std::fs::write(&broken, "not a chart archive").expect("the file is written");
    let out = Command::new(BIN)
        .args(["run", "--crds-chart"])
        .arg(&broken)
        .arg("--report-dir")
        .arg(reports.path())
        .stderr(Stdio::null())
        .output()
        .expect("the binary runs");
    let output = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{output}");
    let table: Vec<&str> = output
        .lines()
        .skip_while(|l| !row(l, "PASS", "guide::gpus::advertised"))
        .collect();
    let fails: Vec<&&str> = table.iter().filter(|l| l.starts_with("FAIL ")).collect();
    assert_eq!(fails.len(), 1, "one FAIL, the stage's own case:\n{output}");
    assert!(
        row(fails[0], "FAIL", "guide::crds::established") && fails[0].contains("helm"),
        "{output}"
    );
    let blocked: Vec<&&str> = table.iter().filter(|l| l.starts_with("BLOCKED ")).collect();
    for case in [
        "guide::platform::operator_available",
        "guide::graph::ready",
        "guide::api::completion_stream",
        "guide::workers::decode_health",
    ] {
        assert!(
            blocked.iter().any(|l| l.contains(case)
                && l.ends_with("blocked by guide::crds::established (stage crds failed)")),
            "{case} should be blocked by the crds case:\n{output}"
        );
    }
    for case in [
        "guide::storage::provisioner_available",
        "guide::secret::hf_token_secret",
    ] {
        assert!(
            table.iter().any(|l| row(l, "PASS", case)),
            "{case} does not need the CRDs and should pass:\n{output}"
        );
    }
    let summary = table
        .iter()
        .find(|l| l.starts_with("conformance: "))
        .expect("the summary line");
    assert!(
        summary.contains(&format!(" 1 failed, {} blocked, ", blocked.len())),
        "{summary}"
    );
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(reports.path().join("report.json")).expect("the report"),
    )
    .expect("JSON");
    assert_eq!(report["failed"], 1);
    assert_eq!(report["blocked"], blocked.len());
    let junit = std::fs::read_to_string(reports.path().join("junit.xml")).expect("JUnit");
    assert_eq!(
        junit
            .matches("<skipped message=\"blocked by guide::crds::established (stage crds failed)\"")
            .count(),
        blocked.len(),
        "{junit}"
    );
    assert_eq!(junit.matches("<failure ").count(), 1, "{junit}");
}

#[test]
fn the_preflight_of_an_existing_cluster_lists_the_images_of_charts_given_as_files() {
    let config = config();
    // The local provider's preflight brings its cluster up (nothing of the guide is applied).
    let up = Command::new(BIN)
        .args(["run", "--preflight"])
        .stderr(Stdio::null())
        .output()
        .expect("the binary runs");
    assert_eq!(up.status.code(), Some(0), "{up:?}");
    let cluster = harness::cluster::local::status(&config.cache_dir)
        .expect("the local cluster answers")
        .expect("a local cluster is up");
    let charts = tempfile::tempdir().expect("a charts directory");
    for chart in [
        harness::stages::chart::Chart::Crds,
        harness::stages::chart::Chart::Platform,
    ] {
        let dir = chart
            .stand_in()
            .materialize(charts.path(), "test")
            .expect("the chart is written");
        std::fs::rename(&dir, charts.path().join(chart.name())).expect("moved");
    }
    let manifest = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/local/cluster/local-path-storage.yaml"
    );
    let preflight = |extra: &[&str]| {
        Command::new(BIN)
            .args([
                "run",
                "--provider",
                "existing",
                "--preflight",
                "--kubeconfig",
            ])
            .arg(&cluster.kubeconfig)
            .args(["--provisioner-manifest", manifest, "--charts-dir"])
            .arg(charts.path())
            .args(extra)
            .output()
            .expect("the binary runs")
    };
    let out = preflight(&[]);
    let listed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{listed}\n{out:?}");
    // The release under test (harness/test.sh runs this file for several) names the operator's
    // and the graph's images; 0.4.1's guide adds its 0.4.0 prefill image.
    let release = &config.dynamo_version;
    let mut expected = vec![
        (
            "rancher/local-path-provisioner:v0.0.32".to_owned(),
            "the provisioner manifest",
        ),
        ("busybox".to_owned(), "the provisioner manifest"),
        (
            format!("nvcr.io/nvidia/ai-dynamo/kubernetes-operator:{release}"),
            "chart dynamo-platform",
        ),
        (
            "bitnami/etcd:3.5.18-debian-12-r5".to_owned(),
            "chart dynamo-platform",
        ),
        ("nats:2.10.21-alpine".to_owned(), "chart dynamo-platform"),
        (
            format!("nvcr.io/nvidia/ai-dynamo/vllm-runtime:{release}"),
            "the graph",
        ),
    ];
    if let Some(prefill) = release.guide_prefill() {
        expected.push((
            format!("nvcr.io/nvidia/ai-dynamo/vllm-runtime:{prefill}"),
            "the graph",
        ));
    }
    for (image, asked_by) in expected {
        assert!(
            listed
                .lines()
                .any(|l| l.trim_start().starts_with(&format!("{image} "))
                    && l.contains("on no node")
                    && l.contains(asked_by)),
            "{image} (asked by {asked_by}, on no kwok node) not listed:\n{listed}"
        );
    }
    // A chart that cannot be rendered leaves the list incomplete, and says so.
    let broken = charts.path().join("broken.tgz");
    std::fs::write(&broken, "not a chart").expect("written");
    let out = preflight(&["--platform-chart", broken.to_str().expect("UTF-8")]);
    let listed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(3), "{listed}\n{out:?}");
    assert!(
        listed.contains("not listed: chart dynamo-platform: helm template"),
        "{listed}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("the preflight is incomplete"),
        "{out:?}"
    );
}

#[test]
fn a_run_killed_mid_graph_is_cleaned_up_and_a_concurrent_runs_objects_survive() {
    let config = config();
    // The graph is the environment's between runs: removed here, the killed run creates it anew.
    let (code, output) = run_filtered("guide::secret", &config.report_dir, "hf_unused_here");
    assert_eq!(
        code, 0,
        "the stages before the graph should pass:\n{output}"
    );
    kubectl(
        &config,
        &[
            "-n",
            "dynamo-cloud",
            "delete",
            "dynamographdeployment",
            "vllm-v1-disagg-router",
            "--ignore-not-found",
            "--wait=true",
        ],
    );
    // A concurrent run under way: its lock held by this process, a ConfigMap it created.
    let concurrent =
        harness::ledger::Run::start(&config.cache_dir, "fault-concurrent").expect("a run");
    let manifest = config.report_dir.join("concurrent.yaml");
    std::fs::create_dir_all(&config.report_dir).expect("the report directory");
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: fault-concurrent\n  namespace: dynamo-cloud\n  \
         labels: {app.kubernetes.io/managed-by: dynamo-conformance, dynamo-conformance/run: fault-concurrent}\n",
    )
    .expect("the manifest");
    kubectl(&config, &["apply", "-f", &manifest.display().to_string()]);
    concurrent
        .record(&harness::ledger::Entry::now(
            harness::ledger::Action::Created,
            "test",
            "v1",
            "ConfigMap",
            Some("dynamo-cloud"),
            "fault-concurrent",
        ))
        .expect("the ledger");
    // An earlier finished run, its id sorting first, created the graph and handed it over:
    // the killed run's newer graph is still the killed run's own (CI at stop 16).
    let earlier_id = "0-fault-earlier";
    {
        let earlier = harness::ledger::Run::start(&config.cache_dir, earlier_id).expect("a run");
        for (action, kind, name) in [
            (
                harness::ledger::Action::Created,
                "DynamoGraphDeployment",
                "vllm-v1-disagg-router",
            ),
            (harness::ledger::Action::HandedOver, "", ""),
        ] {
            let mut entry = harness::ledger::Entry::now(
                action,
                "graph",
                "nvidia.com/v1alpha1",
                kind,
                Some("dynamo-cloud"),
                name,
            );
            entry.at -= 60;
            earlier.record(&entry).expect("the ledger");
        }
    }
    let killed_id = format!("fault-killed-{}", std::process::id());
    let child_log = config.report_dir.join("killed-run.log");
    let log = std::fs::File::create(&child_log).expect("the killed run's log");
    let mut child = Reaped(
        Command::new(BIN)
            .args(["run", "guide::graph::ready"])
            .env("DYNAMO_CONFORMANCE_RUN_ID", &killed_id)
            .stdout(log.try_clone().expect("the log"))
            .stderr(log)
            .spawn()
            .expect("the binary runs"),
    );
    let selector = format!("dynamo-conformance/run={killed_id}");
    let started = Instant::now();
    while kubectl(
        &config,
        &[
            "get",
            "dynamographdeployments",
            "-A",
            "-l",
            &selector,
            "-o",
            "name",
        ],
    )
    .is_empty()
    {
        if started.elapsed() > RUN_BOUND || child.0.try_wait().ok().flatten().is_some() {
            panic!(
                "the run never applied its graph; it printed:\n{}",
                std::fs::read_to_string(&child_log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    // Mid-graph: applied, not ready (the guide's frontend probe waits 60 s).
    child.0.kill().expect("SIGKILL");
    let _ = child.0.wait();
    let out = Command::new(BIN)
        .args(["cleanup", "--all"])
        .output()
        .expect("cleanup runs");
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "cleanup failed:\n{printed}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        printed.contains(
            "cleanup: removed: deleted DynamoGraphDeployment dynamo-cloud/vllm-v1-disagg-router"
        ),
        "{printed}"
    );
    assert!(
        printed.contains("cleanup: run fault-concurrent is under way: left alone"),
        "{printed}"
    );
    let left = kubectl(
        &config,
        &[
            "get",
            "all,dynamographdeployments,dynamocomponentdeployments",
            "-A",
            "-l",
            &selector,
            "-o",
            "name",
        ],
    );
    assert_eq!(left, "", "objects of the killed run are left");
    assert_eq!(
        kubectl(
            &config,
            &[
                "-n",
                "dynamo-cloud",
                "get",
                "configmap",
                "fault-concurrent",
                "-o",
                "name"
            ]
        ),
        "configmap/fault-concurrent",
        "the concurrent run's object was removed"
    );
    kubectl(
        &config,
        &[
            "-n",
            "dynamo-cloud",
            "delete",
            "configmap",
            "fault-concurrent",
        ],
    );
    drop(concurrent);
    harness::ledger::forget(&config.cache_dir, "fault-concurrent");
    harness::ledger::forget(&config.cache_dir, earlier_id);
}

/// Restores a withdrawn image when dropped, so a failing test leaves the registry whole.
struct Withdrawn {
    dir: PathBuf,
    image: String,
}

impl Withdrawn {
    fn new(config: &Config, image: &str) -> Withdrawn {
        let dir = harness::cluster::agent::dir(&config.cache_dir);
        harness::bridge::kubelet::withdraw(&dir, image).expect("the image is withdrawn");
        Withdrawn {
            dir,
            image: image.to_string(),
        }
    }
}

impl Drop for Withdrawn {
    fn drop(&mut self) {
        let _ = harness::bridge::kubelet::restore(&self.dir, &self.image);
    }
}

/// Deletes the pods of `selector` in the graph's namespace; their controller makes new ones.
fn delete_pods(config: &Config, selector: &str) {
    kubectl(
        config,
        &[
            "-n",
            "dynamo-cloud",
            "delete",
            "pod",
            "-l",
            selector,
            "--wait=false",
        ],
    );
}

/// Runs `kubectl -n dynamo-cloud get ARGS` every half second until `done` holds of what it
/// prints, at most `within`; on timeout, fails saying `what` and what it printed last.
fn poll_get(
    config: &Config,
    args: &[&str],
    within: Duration,
    what: &str,
    done: impl Fn(&str) -> bool,
) {
    let started = Instant::now();
    loop {
        let mut all = vec!["-n", "dynamo-cloud", "get"];
        all.extend(args);
        let seen = kubectl(config, &all);
        if done(&seen) {
            return;
        }
        assert!(
            started.elapsed() < within,
            "{what} not seen within {within:?}; last seen:\n{seen}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Polls (bounded) until a pod matching `selector` has a container waiting for one of `reasons`.
fn await_waiting(config: &Config, selector: &str, reasons: &[&str]) {
    poll_get(
        config,
        &[
            "pods",
            "-l",
            selector,
            "-o",
            "jsonpath={.items[*].status.containerStatuses[*].state.waiting.reason}",
        ],
        Duration::from_secs(120),
        &format!("a pod of {selector} waiting for {reasons:?}"),
        |seen| {
            reasons
                .iter()
                .any(|r| seen.split_whitespace().any(|s| s == *r))
        },
    );
}

/// Runs `case` against the cluster as it is (`--check-only`), expecting it to fail naming
/// `diagnosis` and `also`.
fn fails_naming(case: &str, diagnosis: &str, also: &[&str]) -> String {
    let output = fails_carrying(case, also);
    assert!(
        output.contains(&format!("diagnosis: {diagnosis}: ")),
        "the failure should name {diagnosis}:\n{output}"
    );
    output
}

/// Runs `case` against the cluster as it is (`--check-only`), expecting it to fail carrying
/// `also`, whatever it is diagnosed as.
fn fails_carrying(case: &str, also: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(["run", "--check-only", "--exact", case])
        .output()
        .expect("the binary runs");
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{case} should fail:\n{output}");
    for part in also {
        assert!(
            output.contains(part),
            "the failure should carry {part:?}:\n{output}"
        );
    }
    // Evidence, shown with `--no-capture`: the case's message and its diagnoses.
    let block = output
        .split(&format!("---- {case} ----"))
        .nth(1)
        .unwrap_or_default();
    for line in block
        .lines()
        .take_while(|l| !l.trim_end().ends_with("ailures:"))
        .filter(|l| !l.trim().is_empty() && !l.starts_with("real:") && !l.starts_with("simulated:"))
    {
        println!("{case}: {}", line.trim());
    }
    output
}

/// Runs `case` normally (applying what it needs): the shared cluster is whole again.
fn healed(case: &str) {
    let out = Command::new(BIN)
        .args(["run", "--exact", case])
        .output()
        .expect("the binary runs");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{case} did not pass on a healed cluster:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Whether the release under test has what a fault needs; says why not (the test is then skipped).
fn release_has(config: &Config, what: &str, has: bool) -> bool {
    if !has {
        let other = if config.dynamo_version == harness::release::DynamoVersion::guide() {
            "1.6.1"
        } else {
            "0.4.1"
        };
        println!(
            "SKIP: Dynamo {} has no {what} (run with DYNAMO_CONFORMANCE_DYNAMO_VERSION={other})",
            config.dynamo_version
        );
    }
    has
}

#[test]
fn an_etcd_image_withdrawn_from_the_registry_fails_the_platform_naming_etcd_image_pull() {
    let config = config();
    let profile = config.dynamo_version.profile();
    if !release_has(&config, "etcd in its platform chart", profile.platform_etcd) {
        return;
    }
    healed("guide::platform::etcd_and_nats_running");
    let image = "bitnami/etcd:3.5.18-debian-12-r5";
    let withdrawn = Withdrawn::new(&config, image);
    kubectl(
        &config,
        &[
            "-n",
            "dynamo-cloud",
            "delete",
            "pod",
            "dynamo-platform-etcd-0",
            "--wait=false",
        ],
    );
    await_waiting(
        &config,
        "app.kubernetes.io/name=etcd",
        &["ErrImagePull", "ImagePullBackOff"],
    );
    fails_naming(
        "guide::platform::etcd_and_nats_running",
        "etcd-image-pull",
        &[image],
    );
    drop(withdrawn);
    healed("guide::platform::etcd_and_nats_running");
}

#[test]
fn a_kube_rbac_proxy_image_withdrawn_leaves_the_operator_one_of_two_naming_its_diagnosis() {
    let config = config();
    let containers = config.dynamo_version.profile().operator_containers;
    if !release_has(
        &config,
        "kube-rbac-proxy in its operator pod",
        containers.contains(&"kube-rbac-proxy"),
    ) {
        return;
    }
    healed("guide::platform::operator_available");
    let image = "gcr.io/kubebuilder/kube-rbac-proxy:v0.15.0";
    let withdrawn = Withdrawn::new(&config, image);
    let selector = "control-plane=controller-manager";
    delete_pods(&config, selector);
    await_waiting(&config, selector, &["ErrImagePull", "ImagePullBackOff"]);
    fails_naming(
        "guide::platform::operator_available",
        "kube-rbac-proxy-image-pull",
        &[image],
    );
    drop(withdrawn);
    healed("guide::platform::operator_available");
}

#[test]
fn a_missing_hf_token_secret_fails_the_graph_naming_its_diagnosis() {
    let config = config();
    healed("guide::graph::ready");
    kubectl(
        &config,
        &["-n", "dynamo-cloud", "delete", "secret", "hf-token-secret"],
    );
    let selector = "nvidia.com/dynamo-component=VllmDecodeWorker";
    delete_pods(&config, selector);
    await_waiting(&config, selector, &["CreateContainerConfigError"]);
    fails_naming(
        "guide::graph::component_pods",
        "missing-hf-token-secret",
        &["secret \"hf-token-secret\" not found"],
    );
    healed("guide::graph::ready");
}

/// Scales a platform StatefulSet back to one replica when dropped.
struct ScaledDown<'a> {
    config: &'a Config,
    name: &'static str,
}

impl Drop for ScaledDown<'_> {
    fn drop(&mut self) {
        let set = format!("statefulset/{}", self.name);
        kubectl(
            self.config,
            &["-n", "dynamo-cloud", "scale", &set, "--replicas=1"],
        );
    }
}

#[test]
fn workers_that_cannot_reach_nats_crash_loop_naming_nats_or_etcd_unreachable() {
    let config = config();
    let discovery = config.dynamo_version.profile().discovery;
    if !release_has(
        &config,
        "NATS (its workers find each other otherwise)",
        discovery == harness::profile::Discovery::EtcdAndNats,
    ) {
        return;
    }
    healed("guide::graph::ready");
    let scaled = ScaledDown {
        config: &config,
        name: "dynamo-platform-nats",
    };
    kubectl(
        &config,
        &[
            "-n",
            "dynamo-cloud",
            "scale",
            "statefulset/dynamo-platform-nats",
            "--replicas=0",
        ],
    );
    // The Service keeps no ready endpoint once the NATS pod is gone.
    let started = Instant::now();
    while !kubectl(
        &config,
        &[
            "-n",
            "dynamo-cloud",
            "get",
            "pods",
            "-l",
            "app.kubernetes.io/name=nats",
            "-o",
            "name",
        ],
    )
    .is_empty()
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the NATS pod did not go"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let selector = "nvidia.com/dynamo-component=VllmDecodeWorker";
    delete_pods(&config, selector);
    await_waiting(&config, selector, &["CrashLoopBackOff"]);
    fails_naming(
        "guide::graph::component_pods",
        "nats-or-etcd-unreachable",
        &["CrashLoopBackOff", "Failed to connect to NATS"],
    );
    drop(scaled);
    // The bridge judges the platform's reach when it starts a pod: a new pod reaches NATS again.
    rollout_status(&config, "statefulset/dynamo-platform-nats");
    delete_pods(&config, selector);
    healed("guide::graph::ready");
}

#[test]
fn a_cluster_without_a_default_storage_class_is_diagnosed_by_name() {
    let config = config();
    healed("guide::storage::default_storage_class");
    kubectl(
        &config,
        &[
            "annotate",
            "storageclass",
            "local-path",
            "storageclass.kubernetes.io/is-default-class=false",
            "--overwrite",
        ],
    );
    fails_naming(
        "guide::storage::default_storage_class",
        "no-default-storage-class",
        &["no default StorageClass (classes: local-path)"],
    );
    // The storage stage applies the guide's class again, its default annotation with it.
    healed("guide::storage::default_storage_class");
}

const GRAPH: &str = "dynamographdeployment/vllm-v1-disagg-router";

/// The graph's spec as it stands, in the version the release stores.
fn graph_spec(config: &Config) -> serde_json::Value {
    let json = kubectl(config, &["-n", "dynamo-cloud", "get", GRAPH, "-o", "json"]);
    let graph: serde_json::Value = serde_json::from_str(&json).expect("kubectl prints JSON");
    graph["spec"].clone()
}

/// The main image of `service` in the graph as it stands (v1alpha1 or v1beta1).
fn service_image(config: &Config, service: &str) -> String {
    let services = harness::operator::graph::services_of(&graph_spec(config)).expect("a graph");
    let image = services[service]["extraPodSpec"]["mainContainer"]["image"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(!image.is_empty(), "the graph names no image for {service}");
    image
}

/// Merges `main` into the main container of `services` in the graph, in the graph's own version,
/// as a user's edit would.
fn merge_into_main_containers(config: &Config, services: &[&str], main: &serde_json::Value) {
    let patch = harness::operator::graph::main_container_patch(&graph_spec(config), services, main)
        .expect("the graph has the services");
    merge_into_graph(config, &patch);
}

/// Changes `service`'s main image in the graph, as an upgrade of one component does.
fn set_service_image(config: &Config, service: &str, image: &str) {
    merge_into_main_containers(config, &[service], &serde_json::json!({ "image": image }));
}

/// Waits (`kubectl rollout status`, at most 180 s) until `workload` of the graph's namespace has rolled out.
fn rollout_status(config: &Config, workload: &str) {
    kubectl(
        config,
        &[
            "-n",
            "dynamo-cloud",
            "rollout",
            "status",
            workload,
            "--timeout=180s",
        ],
    );
}

/// Waits for the rollout of a graph service's Deployment, found by its `nvidia.com/dynamo-component`
/// label: once one is left (under 1.x's rules a changed worker spec renames the worker, and the
/// old Deployment goes), then `kubectl rollout status` on it.
fn rollout_status_of(config: &Config, service: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    let mut seen = String::new();
    while std::time::Instant::now() < deadline {
        seen = kubectl_unchecked(
            config,
            &[
                "-n",
                "dynamo-cloud",
                "get",
                "deployments",
                "-l",
                &format!("nvidia.com/dynamo-component={service}"),
                "-o",
                "jsonpath={range .items[*]}{.metadata.name} {.metadata.deletionTimestamp}{\"\\n\"}{end}",
            ],
        )
        .unwrap_or_default();
        let names: Vec<&str> = seen.lines().filter(|l| !l.trim().is_empty()).collect();
        if let [one] = names.as_slice()
            && one.split_whitespace().count() == 1
        {
            rollout_status(config, &format!("deployment/{}", one.trim()));
            return;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    panic!("{service}: not one Deployment within 180 s; last seen: {seen:?}");
}

/// Merges `patch` into the graph (`kubectl patch --type=merge`), as a user's edit would.
fn merge_into_graph(config: &Config, patch: &serde_json::Value) {
    kubectl(
        config,
        &[
            "-n",
            "dynamo-cloud",
            "patch",
            GRAPH,
            "--type=merge",
            "-p",
            &patch.to_string(),
        ],
    );
}

/// Now, to the second, as the API server stamps objects (`2026-12-01T11:10:51Z`).
fn now_stamp() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Polls (bounded by `within`) until an event of the graph's namespace with `reason`, created or
/// seen again at or after `since` ([`now_stamp`]), says `part`.
fn await_event(config: &Config, reason: &str, part: &str, since: &str, within: Duration) {
    let selector = format!("reason={reason}");
    poll_get(
        config,
        &[
            "events",
            "--field-selector",
            &selector,
            "-o",
            "jsonpath={range .items[*]}{.metadata.creationTimestamp}|{.series.lastObservedTime}|{.message}{\"\\n\"}{end}",
        ],
        within,
        &format!("a {reason} event since {since} saying {part:?}"),
        |seen| {
            seen.lines().any(|line| {
                let mut fields = line.splitn(3, '|');
                let (created, again, message) = (
                    fields.next().unwrap_or_default(),
                    fields.next().unwrap_or_default(),
                    fields.next().unwrap_or_default(),
                );
                (created >= since || again >= since) && message.contains(part)
            })
        },
    );
}

/// Holds the runs' activity lock for the test: a kept graph is parked after 60 s without a run,
/// and a test that waits between its runs must not find it parked.
fn active(config: &Config) -> harness::ledger::Activity {
    harness::ledger::Activity::hold(&config.cache_dir).expect("the runs' activity lock")
}

#[test]
fn a_frontend_image_without_jq_fails_its_readiness_probe_naming_frontend_probe_needs_jq() {
    let config = config();
    let _active = active(&config);
    healed("guide::graph::ready");
    let image = service_image(&config, "Frontend");
    let since = now_stamp();
    set_service_image(&config, "Frontend", &format!("{image}-nojq"));
    // The guide's probe starts after its initial delay of 60 s.
    await_event(
        &config,
        "Unhealthy",
        "jq: not found",
        &since,
        Duration::from_secs(180),
    );
    fails_naming(
        "guide::graph::ready",
        "frontend-probe-needs-jq",
        &["Readiness probe failed: /bin/sh: 1: jq: not found"],
    );
    healed("guide::graph::ready");
}

#[test]
fn a_rollout_stuck_behind_a_ready_old_pod_is_not_ready_naming_ready_while_rolling_out() {
    let config = config();
    let _active = active(&config);
    healed("guide::graph::ready");
    let image = format!("{}-unpublished", service_image(&config, "VllmDecodeWorker"));
    let withdrawn = Withdrawn::new(&config, &image);
    set_service_image(&config, "VllmDecodeWorker", &image);
    let selector = "nvidia.com/dynamo-component=VllmDecodeWorker";
    await_waiting(&config, selector, &["ErrImagePull", "ImagePullBackOff"]);
    // The old pod still serves. By 0.4.1's rule the Deployment rolls in place and the operator
    // (stand-in) calls the graph ready; by 1.x's the renamed workers start beside the old.
    let state = kubectl(
        &config,
        &[
            "-n",
            "dynamo-cloud",
            "get",
            GRAPH,
            "-o",
            "jsonpath={.status.state}",
        ],
    );
    println!("the graph's state mid-rollout: {state}");
    if config.dynamo_version.profile().operator_rules == OperatorRules::V1 {
        // 1.x's rule (ai-dynamo/dynamo#6110): the new image renames the workers; the old keep
        // serving beside the new, which the graph waits for, naming their image.
        let old = kubectl(
            &config,
            &[
                "-n",
                "dynamo-cloud",
                "get",
                "pods",
                "-l",
                selector,
                "-o",
                "jsonpath={range .items[*]}{.metadata.labels.nvidia\\.com/selector} {.status.conditions[?(@.type==\"Ready\")].status}{\"\\n\"}{end}",
            ],
        );
        println!("decode pods mid-rollout:\n{old}");
        assert!(
            old.lines().any(|l| l.ends_with(" True")),
            "an old worker serves while the renamed one cannot start:\n{old}"
        );
        fails_carrying(
            "guide::graph::ready",
            &["not ready", "ErrImagePull", &image],
        );
    } else {
        fails_naming(
            "guide::graph::ready",
            "ready-while-rolling-out",
            &[
                "while a rollout is under way",
                "pods of an old revision left",
                &image,
            ],
        );
    }
    // Healed while the tag is still withdrawn: the graph goes back to its own image and the stuck
    // pod never runs (restored first, it could start, replace the old worker and leave 0.4.1's
    // frontend holding the removed instance).
    healed("guide::graph::ready");
    drop(withdrawn);
}

/// Stops (SIGSTOP) every process the bridge starts for a component, for as long as it lives: the
/// worker hangs, as one does under a load it cannot serve.
struct Hung {
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<Option<u32>>>,
}

impl Hung {
    fn new(config: Config, agent_dir: PathBuf, component: &'static str) -> Hung {
        use std::sync::atomic::Ordering;
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop = done.clone();
        let thread = std::thread::spawn(move || {
            let mut stopped = None;
            while !stop.load(Ordering::Relaxed) {
                let Ok((_, pid)) = process_of(&config, &agent_dir, component) else {
                    // Between two pods or two processes.
                    std::thread::sleep(Duration::from_millis(500));
                    continue;
                };
                if stopped != Some(pid) {
                    // SAFETY: a plain signal to the worker process the bridge started.
                    unsafe { libc::kill(pid as libc::pid_t, libc::SIGSTOP) };
                    println!("hung {component}: pid {pid} stopped");
                    stopped = Some(pid);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            stopped
        });
        Hung {
            done,
            thread: Some(thread),
        }
    }
}

impl Drop for Hung {
    fn drop(&mut self) {
        self.done.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(Some(pid)) = self.thread.take().and_then(|t| t.join().ok()) {
            // SAFETY: a plain signal to the process this guard stopped.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGCONT) };
        }
    }
}

#[test]
fn a_hung_worker_restarted_by_its_liveness_probe_is_named_liveness_fails_under_load() {
    let config = config();
    let _active = active(&config);
    healed("guide::graph::ready");
    let agent_dir = harness::cluster::agent::dir(&config.cache_dir);
    let since = now_stamp();
    let hung = Hung::new(config.clone(), agent_dir, "VllmDecodeWorker");
    // The guide's worker probe: /live every 5 s, 30 s to answer, one failure restarts.
    await_event(
        &config,
        "Killing",
        "failed liveness probe, will be restarted",
        &since,
        Duration::from_secs(180),
    );
    let selector = "nvidia.com/dynamo-component=VllmDecodeWorker";
    await_waiting(&config, selector, &["CrashLoopBackOff"]);
    fails_naming(
        "guide::graph::component_pods",
        "liveness-fails-under-load",
        &["VllmDecodeWorker: 0/1 pods Ready", "last exit 137"],
    );
    drop(hung);
    healed("guide::graph::ready");
}

/// Rolls the operator Deployment back to its previous revision when dropped.
struct RolledBack<'a> {
    config: &'a Config,
}

impl Drop for RolledBack<'_> {
    fn drop(&mut self) {
        kubectl(
            self.config,
            &[
                "-n",
                "dynamo-cloud",
                "rollout",
                "undo",
                "deployment/dynamo-platform-dynamo-operator-controller-manager",
            ],
        );
    }
}

#[test]
fn an_operator_given_a_newer_charts_flag_crash_loops_naming_operator_chart_skew() {
    let config = config();
    let profile = config.dynamo_version.profile();
    if !release_has(
        &config,
        "operator flags read from its source at its tag",
        profile.operator_flags.is_some(),
    ) {
        return;
    }
    let _active = active(&config);
    healed("guide::platform::operator_available");
    let manager = profile
        .operator_containers
        .iter()
        .position(|c| *c == "manager")
        .expect("the operator pod has a manager container");
    // The 1.x chart's flag, given to this release's operator image.
    let patch = serde_json::json!([{
        "op": "add",
        "path": format!("/spec/template/spec/containers/{manager}/args/-"),
        "value": "--config=/etc/dynamo-operator/config.yaml",
    }]);
    let rolled_back = RolledBack { config: &config };
    kubectl(
        &config,
        &[
            "-n",
            "dynamo-cloud",
            "patch",
            "deployment/dynamo-platform-dynamo-operator-controller-manager",
            "--type=json",
            "-p",
            &patch.to_string(),
        ],
    );
    await_waiting(
        &config,
        "control-plane=controller-manager",
        &["CrashLoopBackOff"],
    );
    fails_naming(
        "guide::platform::operator_available",
        "operator-chart-skew",
        &[
            "has not finished rolling out",
            "flag provided but not defined: -config",
        ],
    );
    drop(rolled_back);
    healed("guide::platform::operator_available");
}

#[test]
fn workers_registered_in_another_dynamo_namespace_are_named_discovery_mismatch() {
    let config = config();
    let _active = active(&config);
    // 0.4.1's frontend has no --namespace: it serves every Dynamo namespace's models.
    let scoped =
        config.dynamo_version.profile().discovery != harness::profile::Discovery::EtcdAndNats;
    if !release_has(&config, "frontend scoped to its Dynamo namespace", scoped) {
        return;
    }
    // v1alpha1's extraPodSpec.mainContainer.env beats the operator's DYN_NAMESPACE; v1beta1 has
    // one env, the container's, and where the 1.4+ operator ranks it against its own defaults is
    // not established here (the stand-in reads it as v1alpha1's envs, which the defaults beat).
    if config.dynamo_version.release().graph_crd.stored() != "v1alpha1" {
        println!(
            "SKIP: Dynamo {}'s graph is v1beta1, which has no env known to override the operator's DYN_NAMESPACE \
             (run with DYNAMO_CONFORMANCE_DYNAMO_VERSION=1.3.1, whose CRDs store v1alpha1)",
            config.dynamo_version
        );
        return;
    }
    healed("guide::graph::ready");
    // The guide's graph sets no container env: applying it again would leave this one.
    let undo = Undo(&config, &|config: &Config| {
        for service in ["VllmDecodeWorker", "VllmPrefillWorker"] {
            let path = format!("/spec/services/{service}/extraPodSpec/mainContainer/env");
            let remove = serde_json::json!([{"op": "remove", "path": path}]);
            kubectl_unchecked(
                config,
                &[
                    "-n",
                    "dynamo-cloud",
                    "patch",
                    GRAPH,
                    "--type=json",
                    "-p",
                    &remove.to_string(),
                ],
            );
        }
    });
    merge_into_main_containers(
        &config,
        &["VllmDecodeWorker", "VllmPrefillWorker"],
        &serde_json::json!({"env": [{"name": "DYN_NAMESPACE", "value": "elsewhere"}]}),
    );
    for service in ["VllmDecodeWorker", "VllmPrefillWorker"] {
        rollout_status_of(&config, service);
    }
    fails_naming(
        "guide::graph::ready",
        "discovery-mismatch",
        &["/v1/models does not list", "observed []"],
    );
    drop(undo);
    healed("guide::graph::ready");
}

/// Runs its function when dropped: the test's fault undone however the test ends.
struct Undo<'a>(&'a Config, &'a dyn Fn(&Config));

impl Drop for Undo<'_> {
    fn drop(&mut self) {
        (self.1)(self.0);
    }
}

/// kubectl's output, or `None` when it fails (undoing what may not have been done, polling).
fn kubectl_unchecked(config: &Config, args: &[&str]) -> Option<String> {
    let cluster = harness::cluster::local::status(&config.cache_dir)
        .ok()
        .flatten()?;
    let binaries = harness::cluster::local::build(&config.cache_dir).ok()?;
    let out = Command::new(binaries.kubectl)
        .arg(format!("--kubeconfig={}", cluster.kubeconfig.display()))
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}
