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

const BIN: &str = env!("CARGO_BIN_EXE_dynamo-conformance");
/// A whole run, first graph start included, stays well inside this.
const RUN_BOUND: Duration = Duration::from_secs(900);

fn config() -> Config {
    Config::load(ConfigLayer::default(), None).expect("the test's configuration loads")
}

/// Runs the suite, calls `fault` once a line containing `marker` is printed, and returns the
/// run's exit code, its output and what `fault` said it did.
fn run_breaking_at(marker: &str, fault: impl FnOnce() -> String) -> (i32, String, String) {
    let mut child = Command::new(BIN)
        .arg("run")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the binary runs");
    let (lines, received) = mpsc::channel();
    let stdout = child.stdout.take().expect("piped");
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
    let status = child.wait().expect("the run ends");
    assert!(fault.is_none(), "{marker} never passed:\n{output}");
    (status.code().unwrap_or(-1), output, done)
}

/// The newest pod log directory of a component, and the pid of its process.
fn process_of(agent_dir: &Path, component: &str) -> (PathBuf, u32) {
    let pods = agent_dir.join("pods");
    let newest = std::fs::read_dir(&pods)
        .expect("the bridge's pod logs")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(component))
        .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())
        .expect("a pod of the component")
        .path();
    let log = std::fs::read_to_string(newest.join("main.log")).expect("its log");
    let pid = log
        .lines()
        .filter_map(|l| l.split("started pid ").nth(1))
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .next_back()
        .expect("a started process");
    (newest, pid)
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

/// The failure blocks of a run's output: each `---- case ----` section.
fn failure_blocks(output: &str) -> Vec<&str> {
    output.split("---- ").skip(1).collect()
}

#[test]
fn a_killed_frontend_process_fails_the_api_cases_naming_its_pod() {
    let config = config();
    let agent_dir = harness::cluster::agent::dir(&config.cache_dir);
    let (code, output, killed) = run_breaking_at("guide::api::frontend_health", || {
        let (dir, pid) = process_of(&agent_dir, "frontend");
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
    let selector = "nvidia.com/selector=vllm-v1-disagg-router-vllmdecodeworker";
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
