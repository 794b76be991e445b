//! Real Dynamo from PyPI, installed and run on this machine as the guide's disaggregated graph.
//!
//! A deployment is owned by a supervisor process (`dynamo-conformance dynamo supervise`), so that
//! the many processes of a `cargo nextest` run share one graph: each takes a shared lease while it
//! runs; the supervisor stops the graph once nobody has held a lease for a short grace.

pub mod deployment;
pub mod hub;
pub mod install;
pub mod lock;
pub mod model;
pub mod state;
pub mod supervisor;
pub mod tools;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::config::Config;
use lock::FileLock;
pub use state::{DeploymentState, Phase, WorkerRole, WorkerState};

/// Errors bringing up or tearing down a local deployment.
#[derive(Debug, thiserror::Error)]
pub enum DynamoError {
    /// A file or directory could not be used.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A program the deployment needs is not installed.
    #[error("{what} not found; {hint}")]
    Missing {
        /// What is missing.
        what: String,
        /// How to install it.
        hint: String,
    },
    /// A setup command failed.
    #[error("could not {what}: {detail}")]
    Command {
        /// What was attempted.
        what: String,
        /// Its exit status and last output lines.
        detail: String,
    },
    /// The graph did not become ready.
    #[error("the local Dynamo graph did not become ready: {detail}")]
    NotReady {
        /// What was last observed.
        detail: String,
    },
    /// Another suite process held a lock for too long.
    #[error(
        "{path} stayed locked for {waited:?} by another suite process (a stuck install or start?)"
    )]
    LockTimeout {
        /// The lock file.
        path: PathBuf,
        /// How long we waited.
        waited: Duration,
    },
    /// The release is not on the package index pip uses.
    #[error("Dynamo {version} is not on PyPI (ai-dynamo releases there: {published})")]
    NotPublished {
        /// The version asked for.
        version: String,
        /// The newest releases pip lists, newest first.
        published: String,
    },
    /// The releases cannot run together ([`crate::release::DynamoVersion::same_planes`]).
    #[error(transparent)]
    Release(#[from] crate::release::ReleaseError),
    /// The supervisor did not stop, on SIGTERM within `waited` nor on SIGKILL.
    #[error("the supervisor (pid {pid}) did not stop within {waited:?} of SIGTERM, nor on SIGKILL")]
    StopTimeout {
        /// Its pid.
        pid: u32,
        /// How long we waited.
        waited: Duration,
    },
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_exited_child_not_yet_reaped_is_not_alive() {
        assert!(super::alive(std::process::id()));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while super::alive(pid) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        // Still a zombie: signal 0 reaches it, yet it runs no more.
        assert_eq!(unsafe { libc::kill(pid as libc::pid_t, 0) }, 0);
        assert!(!super::alive(pid));
        child.wait().unwrap();
    }

    #[test]
    fn colours_are_stripped_from_log_tails() {
        assert_eq!(
            super::strip_ansi("\u{1b}[2m12:00\u{1b}[0m \u{1b}[31mERROR\u{1b}[0m boom"),
            "12:00 ERROR boom"
        );
    }
}

impl DynamoError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        DynamoError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// The last `lines` non-empty lines of a log file, joined with ` | `.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = strip_ansi(&std::fs::read_to_string(path).unwrap_or_default());
    let tail: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .rev()
        .take(lines)
        .collect();
    if tail.is_empty() {
        return "<empty>".into();
    }
    tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
}

/// `text` without ANSI colour sequences (`ESC [ ... m`), as Dynamo's logs colour their levels.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The directory of the deployment of the configured release: `run/<version>`, or
/// `run/<version>+workers-<version>` under version skew.
pub fn deployment_dir(config: &Config) -> PathBuf {
    let name = match config.workers_version {
        Some(workers) => format!("{}+workers-{workers}", config.dynamo_version),
        None => config.dynamo_version.to_string(),
    };
    config.cache_dir.join("run").join(name)
}

/// Whether `pid` runs: it exists and is no zombie (an exited child not yet reaped).
fn alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    let exists = unsafe { libc::kill(pid as libc::pid_t, 0) == 0 };
    exists
        && procfs::process::Process::new(pid as i32)
            .and_then(|p| p.stat())
            .map_or(true, |stat| stat.state != 'Z')
}

/// A running local deployment this process holds a lease on.
#[derive(Debug)]
pub struct LocalDynamo {
    /// Its published state.
    pub state: DeploymentState,
    /// Its directory.
    pub dir: PathBuf,
    /// Whether this process started it.
    pub started_here: bool,
    _lease: FileLock,
}

impl LocalDynamo {
    /// Uses the running deployment of the configured release, starting one if none is
    /// healthy. `supervisor_exe` is the `dynamo-conformance` binary.
    pub fn attach(
        config: &Config,
        supervisor_exe: &Path,
        linger: bool,
    ) -> Result<LocalDynamo, DynamoError> {
        let dir = deployment_dir(config);
        std::fs::create_dir_all(&dir).map_err(|e| DynamoError::io(&dir, e))?;
        let lease = FileLock::shared(&dir.join("lease.lock"), Duration::from_secs(60))?;
        let _start = FileLock::exclusive(&dir.join("start.lock"), lock::SETUP_WAIT)?;
        if let Some(state) = DeploymentState::read(&dir)? {
            let usable = state.phase == Phase::Ready
                && state.detail.is_none()
                && state.model == config.model
                && alive(state.supervisor_pid);
            if usable {
                return Ok(LocalDynamo {
                    state,
                    dir,
                    started_here: false,
                    _lease: lease,
                });
            }
            stop_supervisor(&dir, &state)?;
        }
        let env = install::ensure_env(&config.cache_dir, config.dynamo_version)?;
        if let Some(workers) = config.workers_version {
            install::ensure_env(&config.cache_dir, workers)?;
        }
        model::ensure_model(&config.cache_dir, &env)?;
        // The planes' programs are built before the ready clock starts: a first build (nats-server
        // from the Go module proxy) takes minutes, which are not the graph's.
        if config.dynamo_version.release().planes == crate::release::Planes::EtcdAndNats {
            tools::ensure(&config.cache_dir)?;
        }
        let _ = std::fs::remove_dir_all(dir.join("logs"));
        let mut child = spawn_supervisor(config, supervisor_exe, &dir, linger)?;
        let state = wait_ready(
            &dir,
            &mut child,
            local_ready_timeout(config) + Duration::from_secs(30),
        )?;
        Ok(LocalDynamo {
            state,
            dir,
            started_here: true,
            _lease: lease,
        })
    }
}

fn spawn_supervisor(
    config: &Config,
    exe: &Path,
    dir: &Path,
    linger: bool,
) -> Result<Child, DynamoError> {
    let log = dir.join("supervisor.log");
    let out = std::fs::File::create(&log).map_err(|e| DynamoError::io(&log, e))?;
    let err = out.try_clone().map_err(|e| DynamoError::io(&log, e))?;
    let mut command = Command::new(exe);
    command
        .args([
            "dynamo",
            "supervise",
            "--dynamo-version",
            &config.dynamo_version.to_string(),
            "--model",
            &config.model,
        ])
        .arg("--cache-dir")
        .arg(&config.cache_dir)
        .args([
            "--ready-timeout-secs",
            &config.ready_timeout.as_secs().to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    if linger {
        command.arg("--linger");
    }
    if let Some(workers) = config.workers_version {
        command.args(["--workers-version", &workers.to_string()]);
    }
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    DeploymentState::remove(dir);
    command.spawn().map_err(|e| DynamoError::Command {
        what: "start the deployment supervisor".into(),
        detail: format!("{}: {e}", exe.display()),
    })
}

/// Local processes are ready in seconds; a cluster's ready timeout (image pulls) is far too long here.
pub fn local_ready_timeout(config: &Config) -> Duration {
    config.ready_timeout.min(Duration::from_secs(120))
}

fn wait_ready(
    dir: &Path,
    supervisor: &mut Child,
    bound: Duration,
) -> Result<DeploymentState, DynamoError> {
    let started = Instant::now();
    let log = dir.join("supervisor.log");
    let mut reported = Instant::now();
    loop {
        let state = DeploymentState::read(dir)?;
        if reported.elapsed() > Duration::from_secs(15) {
            eprintln!(
                "dynamo-conformance: still waiting for the local Dynamo graph ({:.0?} so far); logs in {}",
                started.elapsed(),
                dir.join("logs").display()
            );
            reported = Instant::now();
        }
        match &state {
            Some(s) if s.phase == Phase::Ready => return Ok(state.expect("matched")),
            Some(s) if s.phase == Phase::Failed => {
                return Err(DynamoError::NotReady {
                    detail: s.detail.clone().unwrap_or_else(|| log_tail(&log, 3)),
                });
            }
            _ => {}
        }
        if let Ok(Some(status)) = supervisor.try_wait() {
            return Err(DynamoError::NotReady {
                detail: format!("the supervisor exited ({status}): {}", log_tail(&log, 3)),
            });
        }
        if started.elapsed() > bound {
            let _ = supervisor.kill();
            let phase = state.map_or("no state published".to_string(), |s| {
                format!("{:?}", s.phase)
            });
            return Err(DynamoError::NotReady {
                detail: format!("no verdict within {bound:?} (phase: {phase})"),
            });
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn stop_supervisor(dir: &Path, state: &DeploymentState) -> Result<(), DynamoError> {
    let pid = state.supervisor_pid;
    if alive(pid) {
        // SAFETY: signalling the supervisor this deployment's state names.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
        let waited = Duration::from_secs(30);
        let deadline = Instant::now() + waited;
        while alive(pid) && Instant::now() < deadline {
            if DeploymentState::read(dir)?.is_none() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if alive(pid) && DeploymentState::read(dir)?.is_some() {
            // It did not stop on its own: its process group is killed, and it must be gone.
            // SAFETY: signalling the process group the supervisor led.
            unsafe { libc::kill(-(pid as libc::pid_t), libc::SIGKILL) };
            let killed = Instant::now() + Duration::from_secs(5);
            while alive(pid) && Instant::now() < killed {
                std::thread::sleep(Duration::from_millis(100));
            }
            if alive(pid) {
                return Err(DynamoError::StopTimeout { pid, waited });
            }
        }
    }
    // Whatever the supervisor left behind shares its process group.
    // SAFETY: signalling the process group the supervisor led.
    unsafe { libc::kill(-(pid as libc::pid_t), libc::SIGKILL) };
    for process in &state.processes {
        if alive(process.pid) {
            // SAFETY: a process this deployment started.
            unsafe { libc::kill(process.pid as libc::pid_t, libc::SIGKILL) };
        }
    }
    DeploymentState::remove(dir);
    Ok(())
}

/// Stops the deployment of the configured release, if one runs. Returns whether one did.
pub fn stop(config: &Config) -> Result<bool, DynamoError> {
    let dir = deployment_dir(config);
    match DeploymentState::read(&dir)? {
        None => Ok(false),
        Some(state) => {
            stop_supervisor(&dir, &state)?;
            Ok(true)
        }
    }
}

/// The published state of the configured release's deployment, if any.
pub fn status(config: &Config) -> Result<Option<DeploymentState>, DynamoError> {
    let state = DeploymentState::read(&deployment_dir(config))?;
    Ok(state.filter(|s| alive(s.supervisor_pid)))
}

/// The supervisor's entry point: installs what is missing, plans and runs the graph.
pub fn run_supervisor(config: &Config, linger: bool) -> Result<(), DynamoError> {
    let dir = deployment_dir(config);
    let env = install::ensure_env(&config.cache_dir, config.dynamo_version)?;
    let workers_env = match config.workers_version {
        Some(workers) => install::ensure_env(&config.cache_dir, workers)?,
        None => env.clone(),
    };
    let model = model::ensure_model(&config.cache_dir, &env)?;
    let plan = deployment::plan(
        config.dynamo_version,
        &env,
        (config.workers_release(), &workers_env),
        &model,
        &config.model,
        &dir,
        &config.cache_dir,
    )?;
    for leftover in ["etcd", "nats", "discovery"] {
        let _ = std::fs::remove_dir_all(dir.join(leftover));
    }
    let template = DeploymentState {
        version: config.dynamo_version.to_string(),
        model: config.model.clone(),
        supervisor_pid: std::process::id(),
        phase: Phase::Starting,
        detail: None,
        frontend_url: plan.frontend_url.clone(),
        workers: plan.workers.clone(),
        processes: Vec::new(),
        tokenizer_sha256: model.tokenizer_sha256.clone(),
        linger,
    };
    let ready_timeout = local_ready_timeout(config);
    supervisor::supervise(supervisor::Assignment {
        dir,
        plan,
        template,
        ready_timeout,
    })
}
