//! The local cluster's agent: one background process running the operator stand-in and the bridge.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::dynamo::lock::{self, FileLock};

/// How long the agent may take to connect and report.
const START_WAIT: Duration = Duration::from_secs(30);
/// How long it may take to stop its processes.
const STOP_WAIT: Duration = Duration::from_secs(30);

/// Errors starting, running or stopping the agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// A file could not be used.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The agent did not come up.
    #[error(
        "the local cluster's agent (operator stand-in and bridge) did not start: {detail}; its log: {log}"
    )]
    NotStarted {
        /// What was seen.
        detail: String,
        /// Its log file.
        log: PathBuf,
    },
    /// The agent could not reach the cluster.
    #[error("the agent cannot use the local cluster: {0}")]
    Cluster(String),
    /// Another process held the agent's lock too long.
    #[error(transparent)]
    Lock(#[from] crate::dynamo::DynamoError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> AgentError + '_ {
    move |source| AgentError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What a running agent publishes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AgentState {
    /// Its pid.
    pub pid: u32,
    /// A digest of the kubeconfig it uses: a recreated cluster needs a new agent.
    pub kubeconfig_sha256: String,
    /// The binary it runs, with its modification time: a rebuilt binary needs a new agent.
    pub program: String,
    /// Where it keeps pod logs and the platform's data.
    pub dir: PathBuf,
}

impl Default for AgentState {
    fn default() -> Self {
        AgentState {
            pid: 0,
            kubeconfig_sha256: String::new(),
            program: String::new(),
            dir: PathBuf::new(),
        }
    }
}

/// The agent's directory.
pub fn dir(cache_dir: &Path) -> PathBuf {
    cache_dir.join("agent")
}

fn state_path(cache_dir: &Path) -> PathBuf {
    dir(cache_dir).join("agent.json")
}

/// Held by the running agent for its whole life, with its pid inside: there is never a second one,
/// whatever became of the state file.
fn running_lock(cache_dir: &Path) -> PathBuf {
    dir(cache_dir).join("running.lock")
}

/// The pid of the agent holding the running lock, if one holds it.
fn holder(cache_dir: &Path) -> Option<u32> {
    let path = running_lock(cache_dir);
    match FileLock::try_exclusive(&path) {
        Ok(Some(_free)) => None,
        _ => std::fs::read_to_string(&path).ok()?.trim().parse().ok(),
    }
}

fn digest(kubeconfig: &Path) -> String {
    use sha2::Digest;
    let bytes = std::fs::read(kubeconfig).unwrap_or_default();
    format!("{:x}", sha2::Sha256::digest(&bytes))
}

/// `exe` and its modification time, one line.
fn program_id(exe: &Path) -> String {
    let modified = std::fs::metadata(exe)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{} {modified}", exe.display())
}

fn alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    pid != 0 && unsafe { libc::kill(pid as libc::pid_t, 0) == 0 }
}

/// The running agent, if any.
pub fn status(cache_dir: &Path) -> Option<AgentState> {
    let text = std::fs::read_to_string(state_path(cache_dir)).ok()?;
    let state: AgentState = serde_json::from_str(&text).ok()?;
    alive(state.pid).then_some(state)
}

/// Starts the agent for the cluster of `kubeconfig` unless one already serves it. `exe` is the
/// `dynamo-conformance` binary.
pub fn ensure(cache_dir: &Path, kubeconfig: &Path, exe: &Path) -> Result<AgentState, AgentError> {
    let dir = dir(cache_dir);
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let _lock = FileLock::exclusive(&dir.join("agent.lock"), lock::SETUP_WAIT)?;
    let want = digest(kubeconfig);
    if let Some(state) = status(cache_dir)
        && state.kubeconfig_sha256 == want
        && state.program == program_id(exe)
    {
        return Ok(state);
    }
    if let Some(pid) = status(cache_dir)
        .map(|s| s.pid)
        .or_else(|| holder(cache_dir))
    {
        stop_pid(pid)?;
    }
    let _ = std::fs::remove_file(state_path(cache_dir));
    let log = dir.join("agent.log");
    let out = std::fs::File::create(&log).map_err(io(&log))?;
    let err = out.try_clone().map_err(io(&log))?;
    let mut command = Command::new(exe);
    command
        .args(["local", "agent", "--cache-dir"])
        .arg(cache_dir)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let mut child = command.spawn().map_err(|e| AgentError::NotStarted {
        detail: format!("{}: {e}", exe.display()),
        log: log.clone(),
    })?;
    let started = Instant::now();
    loop {
        if let Some(state) = status(cache_dir)
            && state.pid == child.id()
        {
            return Ok(state);
        }
        if let Ok(Some(exit)) = child.try_wait() {
            return Err(AgentError::NotStarted {
                detail: format!("it exited ({exit}): {}", crate::dynamo::log_tail(&log, 2)),
                log,
            });
        }
        if started.elapsed() > START_WAIT {
            let _ = child.kill();
            return Err(AgentError::NotStarted {
                detail: format!("no report within {START_WAIT:?}"),
                log,
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether `pid` runs `dynamo-conformance local agent` (a recorded pid may have been reused).
fn is_agent(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| {
            let args: Vec<&[u8]> = c.split(|b| *b == 0).collect();
            args.windows(2)
                .any(|w| w == [b"local".as_slice(), b"agent".as_slice()])
        })
        .unwrap_or(false)
}

fn stop_pid(pid: u32) -> Result<(), AgentError> {
    if !is_agent(pid) {
        return Ok(());
    }
    // SAFETY: signalling the agent its own state file names.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    let deadline = Instant::now() + STOP_WAIT;
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    // Whatever it left behind shares its process group.
    // SAFETY: the process group the agent leads.
    unsafe { libc::kill(-(pid as libc::pid_t), libc::SIGKILL) };
    Ok(())
}

/// Stops the agent and its processes; whether one ran.
pub fn stop(cache_dir: &Path) -> Result<bool, AgentError> {
    let Some(pid) = status(cache_dir)
        .map(|s| s.pid)
        .or_else(|| holder(cache_dir))
    else {
        return Ok(false);
    };
    stop_pid(pid)?;
    let _ = std::fs::remove_file(state_path(cache_dir));
    Ok(true)
}

/// The agent's own entry point: runs the operator stand-in and the bridge until SIGTERM or SIGINT.
pub fn serve(cache_dir: &Path, kubeconfig: &Path) -> Result<(), AgentError> {
    let dir = dir(cache_dir);
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    // An agent that is still stopping gets the time it needs; a second live one is refused.
    let lock_path = running_lock(cache_dir);
    let _running = FileLock::exclusive(&lock_path, STOP_WAIT)?;
    std::fs::write(&lock_path, std::process::id().to_string()).map_err(io(&lock_path))?;
    // One thread: the bridge's processes are spawned from it and end with it (PR_SET_PDEATHSIG).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(io(&dir))?;
    runtime.block_on(async {
        let (client, _) = super::existing::connect(kubeconfig, None)
            .await
            .map_err(|e| AgentError::Cluster(e.to_string()))?;
        // Processes of an earlier agent are gone: no pod may look Ready until its new one passes.
        crate::bridge::mark_all_unready(&client, "the bridge restarted; its process starts again")
            .await;
        let state = AgentState {
            pid: std::process::id(),
            kubeconfig_sha256: digest(kubeconfig),
            program: std::env::current_exe()
                .map(|e| program_id(&e))
                .unwrap_or_default(),
            dir: dir.clone(),
        };
        let path = state_path(cache_dir);
        std::fs::write(&path, serde_json::to_string(&state).expect("plain data"))
            .map_err(io(&path))?;
        eprintln!("agent: serving the local cluster (pid {})", state.pid);
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).map_err(io(&path))?;
        let mut int = signal(SignalKind::interrupt()).map_err(io(&path))?;
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let bridge = crate::bridge::run(
            client.clone(),
            cache_dir.to_path_buf(),
            dir.clone(),
            stopped,
        );
        tokio::pin!(bridge);
        let mut bridge_done = false;
        tokio::select! {
            _ = crate::operator::run(client.clone()) => eprintln!("agent: the operator stand-in stopped"),
            _ = super::park::watch(client.clone(), cache_dir.to_path_buf()) => {}
            _ = crate::bridge::kubelet::run(client, dir.clone()) => eprintln!("agent: the kubelet stand-in stopped"),
            _ = &mut bridge => {
                bridge_done = true;
                eprintln!("agent: the bridge stopped");
            }
            _ = term.recv() => eprintln!("agent: stopping (SIGTERM)"),
            _ = int.recv() => eprintln!("agent: stopping (SIGINT)"),
        }
        // Stops every process with SIGTERM first (Dynamo deregisters), then returns.
        let _ = stop.send(true);
        if !bridge_done {
            bridge.await;
        }
        let _ = std::fs::remove_file(&path);
        Ok(())
    })
}
